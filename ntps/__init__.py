"""NTPS — Next Token Perception Score (Cheng, Hu, Huang, Balestriero, arXiv 2505.17169).

The shared package behind the top-level scripts, and a small Python API (:mod:`ntps.api`)::

    stats = ntps.compute_statistics(model, tokenizer, texts, labels)   # SPEC §1 sums, in memory
    ntps.score(stats)                  # NTPS per layer × fraction with the chance level (pandas.DataFrame)
    ntps.baselines(stats)              # LogME, H-score, LS / ridge MSE per layer (pandas.DataFrame)
    ntps.save_stats(stats, path); ntps.load_stats(path)                # the artifact of cache.py

``ntps.score`` and ``ntps.baselines`` are at once the API functions (:func:`ntps.api.score`,
:func:`ntps.api.baselines`) and the modules of the same names (``from ntps.score import solve_layer``).
Section numbers (``SPEC §2.0``) refer to ``SPEC.md`` in the project's shared folder, summarised in the README.
"""

__version__ = "0.1.0"

from . import api, baselines, score  # noqa: E402
from .api import Stats, compute_statistics, load_stats, save_stats  # noqa: E402

api._callable_module(score, api.score)
api._callable_module(baselines, api.baselines)

__all__ = ["Stats", "api", "baselines", "compute_statistics", "load_stats", "save_stats", "score"]
