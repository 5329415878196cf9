"""NTPS — Next Token Perception Score (Cheng, Hu, Huang, Balestriero, arXiv 2505.17169).

The shared package behind the top-level scripts. Section numbers (``SPEC §2.0``) refer to
``SPEC.md`` in the project's shared folder, summarised in the README.
"""

__version__ = "0.1.0"
