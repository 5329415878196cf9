"""The implementations of the root scripts (``cache.py``, ``K_sweep.py``, ...), importable once the package is
installed, so that the console commands (``ntps-cache``, ``ntps-sweep``, ...) run the same ``main`` as the
scripts. Each module has ``parse_args(argv=None)``, ``main(args)`` and ``run(argv=None)``."""
