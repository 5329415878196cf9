"""Figure scripts of the paper (Figs. 1-3) over the authors' data or our collected runs.

Run as ``python fig_plot/figN.py`` from the repository root (each script puts the root on
``sys.path``); ``python fig_plot/make_all.py`` regenerates everything.
"""
