"""The public Python API: statistics from a model in memory, NTPS and the baselines as tables.

For a notebook that holds a model, a tokenizer and labelled texts (the way thuml/LogME is used)::

    import ntps
    stats = ntps.compute_statistics(model, tokenizer, texts, labels, max_length=256)
    table = ntps.score(stats)               # one row per layer × fraction, with the chance level
    ntps.baselines(stats)                   # LogME, H-score, LS / ridge MSE per layer
    ntps.save_stats(stats, "outputs/run")   # the artifact cache.py writes; ntps.load_stats reads it

Everything here drives the same package functions as the scripts — :class:`ntps.accumulate.StatsAccumulator`
and :mod:`ntps.text` (cache.py), :func:`ntps.score.sweep_layer`
(K_sweep.py), :func:`ntps.baselines.all_baselines` (scores.py) — so an in-memory result equals the files
the scripts write for the same inputs. Section numbers refer to SPEC.md (summarised in the README).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from .accumulate import StatsAccumulator
from .artifacts import Stats
from .artifacts import load_stats as _load_artifact
from .artifacts import save_stats as _save_artifact
from .baselines import all_baselines
from .linalg import DEFAULT_RCOND, ORDERS
from .score import DEFAULT_FRACTIONS, SHARE_COLUMNS, VARIANTS, sweep_layer
from .spectral import spectral_scores
from .text import decoder_of, length_sorted_shards, pad_batch, tokenize

__all__ = ["Stats", "compute_statistics", "score", "baselines", "load_stats", "save_stats", "forward_batches",
           "SCORE_COLUMNS", "BOUND_COLUMNS", "BASELINE_COLUMNS", "SHARD_SIZE"]

#: Columns of :func:`score` (and of K_sweep.py's CSV); the whitened variant adds :data:`BOUND_COLUMNS`.
SCORE_COLUMNS = ["layer", "fraction", "k", "k_U_nominal", "k_U", "k_V", "r_U", "r_V", "label_rank", "ntps",
                 "chance", "unique"]
BOUND_COLUMNS = ["excess", "lower", "upper"]
#: Columns of :func:`baselines` (and of scores.py's CSV).
BASELINE_COLUMNS = ["layer", "d", "n_texts", "logme", "h_score", "ls_mse", "ridge_mse", "effective_rank"]
#: Texts per shard: the float32 partial sums are flushed into the float64 totals at shard ends (and every
#: ``StatsAccumulator.flush_every`` batches), as cache.py does with its default ``--shard_size``.
SHARD_SIZE = 1024


# ------------------------------------------------------------------------------------------------
# statistics (SPEC §1)
# ------------------------------------------------------------------------------------------------


def forward_batches(net: torch.nn.Module, ids: list[list[int]], labels: torch.Tensor, batches: Sequence[np.ndarray],
                    acc: StatsAccumulator, *, pad_id: int, n_states: int,
                    return_features: bool = False) -> Iterator[tuple[np.ndarray, tuple | None, int]]:
    """One forward pass per batch of texts, each added to ``acc`` (SPEC §1): the loop of cache.py.

    Parameters
    ----------
    net : torch.nn.Module
        The decoder (:func:`ntps.text.decoder_of` of a causal LM), on ``acc.device``.
    ids : list of list of int
        Token ids of every text (:func:`ntps.text.tokenize`), each non-empty.
    labels : torch.Tensor, shape (N,)
        int64 labels ``0..C-1`` of every text.
    batches : sequence of int arrays
        Text indices of each batch, e.g. one shard of :func:`ntps.text.length_sorted_shards`.
    acc : StatsAccumulator
        Receives every batch's hidden states (right-padded; padding is masked). The caller flushes it
        (:meth:`~ntps.accumulate.StatsAccumulator.flush`) where its float64 totals must be exact, e.g. at shard ends.
    pad_id : int
        Token id at padded positions (any id of the vocabulary: it is masked).
    n_states : int
        Hidden states the model returns (layers + 1, state 0 = embedding output).
    return_features : bool
        Also yield the mean-pooled and last-token features of the batch.

    Yields
    ------
    idx : int array (B,)
        The batch's text indices.
    features : (mean, last) float32 tensors of shape (layers, B, d), or None
    computed_tokens : int
        B × T, the tokens of the padded batch.

    Raises
    ------
    RuntimeError
        The model returned another number of hidden states than ``n_states``.
    ntps.accumulate.NonFiniteHiddenStates
        NaN/inf hidden states (e.g. float16 overflow); ``acc`` is then unusable.
    """
    for idx in batches:
        with torch.inference_mode():
            input_ids, mask = pad_batch([ids[i] for i in idx], pad_id, "cpu")  # the host mask: no device sync
            hs = net(input_ids=input_ids.to(acc.device), attention_mask=mask.to(acc.device), output_hidden_states=True,
                     use_cache=False).hidden_states
            if len(hs) != n_states:
                raise RuntimeError(f"model returned {len(hs)} hidden states, config says {n_states}")
            feats = acc.add_batch(hs, mask, labels[idx], return_features=return_features)
        yield idx, feats, input_ids.numel()


def _encode_labels(labels, num_classes: int | None, label_names) -> tuple[np.ndarray, list[str]]:
    """int64 labels 0..C-1 and the C label names (string labels: sorted, or in ``label_names`` order)."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise ValueError(f"labels must be one per text (a 1-D sequence), got shape {arr.shape}")
    if arr.dtype.kind in "iub" or (arr.dtype.kind == "f" and np.all(np.mod(arr, 1) == 0)):
        y = arr.astype(np.int64)
        if y.size and y.min() < 0:
            raise ValueError(f"integer labels must be 0..C-1, got {int(y.min())}")
        C = num_classes or (len(label_names) if label_names is not None else int(y.max(initial=-1)) + 1)
        if y.size and y.max() >= C:
            raise ValueError(f"label {int(y.max())} outside 0..{C - 1} (num_classes = {C})")
        names = [str(n) for n in label_names] if label_names is not None else [str(i) for i in range(C)]
    else:
        arr = arr.astype(str)
        names = [str(n) for n in label_names] if label_names is not None else sorted(set(arr.tolist()))
        index = {n: i for i, n in enumerate(names)}
        unknown = sorted(set(arr.tolist()) - set(index))
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not in label_names {names}")
        y = np.array([index[v] for v in arr.tolist()], dtype=np.int64)
        C = num_classes or len(names)
    if len(names) != C:
        raise ValueError(f"{len(names)} label names for {C} classes")
    return y, names


def _layer_list(spec, available: Sequence[int], n_states: int) -> list[int]:
    """Hidden-state indices from 'all'/None, '0,6,-1', '10-20' or a sequence of ints (negative: from the end)."""
    from .cli import parse_int_list

    if spec is not None and not isinstance(spec, str):
        spec = ",".join(str(int(v)) for v in spec)
    layers = parse_int_list(spec, n_states) or sorted(available)
    missing = [layer for layer in layers if layer not in available]
    if missing:
        raise ValueError(f"layers {missing} are not in the statistics (available: {sorted(available)})")
    return layers


def compute_statistics(model, tokenizer, texts: Sequence[str], labels, *, layers="all", max_length: int = 512,
                       batch_size: int = 32, device=None, num_classes: int | None = None,
                       label_names: Sequence[str] | None = None, meta: dict | None = None) -> Stats:
    """The per-layer sums of SPEC §1 of labelled texts, from one forward pass of ``model``, in memory.

    The same tokenisation (special tokens as the tokenizer adds them, truncation to ``max_length``),
    length-sorted batches and accumulator as cache.py: the result equals the artifact cache.py writes for the
    same texts, model and batch size (to float round-off; exactly, on the same device). Nothing is written.

    Parameters
    ----------
    model : transformers.PreTrainedModel
        A causal LM (or its decoder), e.g. from :func:`ntps.models.load_model_and_tokenizer`. Run in eval
        mode (its previous mode is restored); only the decoder is used (no LM head).
    tokenizer : transformers tokenizer
        Its pad token (else eos, else id 0) fills padded positions, which are masked.
    texts : sequence of str, length N
        Non-empty texts (a text with zero tokens is a ``ValueError``).
    labels : sequence of int or str, length N
        Integer labels ``0..C-1``, or strings (encoded in sorted order, or in ``label_names`` order).
    layers : "all", str or sequence of int
        Hidden-state indices, 0 = embedding output, negative = from the end ('0,6,-1', '10-20').
    max_length : int
        Tokens kept per text (cache.py's ``--max_length``).
    batch_size : int
        Texts per forward pass (the float32 partial sums, hence the last digits, depend on it).
    device : str or torch.device, optional
        Where the forward pass and the sums run; the model is moved there (``model.to``). Default: the
        model's device.
    num_classes : int, optional
        C; default ``len(label_names)``, else the largest integer label + 1, else the distinct strings.
    label_names : sequence of str, optional
        Names of the C classes, recorded in ``meta``.
    meta : dict, optional
        Extra metadata (e.g. ``{"dataset": ..., "split": ...}``) recorded in ``Stats.meta``.

    Returns
    -------
    Stats
        Float64 sums per layer on the CPU — ``XX`` (d, d), ``XY`` (d, C), ``C0`` (d, d), ``C1`` (d, d),
        ``sum_x`` (d,) — the class counts (C,), N, the real tokens and the (s_t, h_{t+1}) pairs; ``meta``
        holds model, dtype, layers, d, num_classes, n_states, label_names, max_length, batch_size and
        truncated_texts. :func:`score`, :func:`baselines` and :func:`save_stats` take it.

    Raises
    ------
    ValueError
        Texts and labels of different lengths, no texts, labels outside ``0..C-1``, layers out of range, a
        text with zero tokens, a CUDA device on a machine without one.
    ntps.accumulate.NonFiniteHiddenStates
        NaN/inf hidden states (float16 overflow: use float32 or bfloat16 weights).
    """
    from .cli import resolve_device
    from .models import model_dims

    texts = list(texts)
    y, names = _encode_labels(labels, num_classes, label_names)
    if len(texts) != len(y) or not texts:
        raise ValueError(f"need as many labels as texts, at least one: got {len(texts)} texts, {len(y)} labels")
    param = next(model.parameters(), None)
    if device is None:
        dev = param.device if param is not None else torch.device("cpu")
    else:
        dev = resolve_device(device)
        model.to(dev)
    n_states, d = model_dims(model)
    chosen = _layer_list(layers, range(n_states), n_states)
    ids, truncated = tokenize(tokenizer, texts, max_length)
    pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
    shards = length_sorted_shards(np.array([len(x) for x in ids]), batch_size, SHARD_SIZE)
    acc = StatsAccumulator(chosen, d, len(names), device=dev)
    was_training = model.training
    model.eval()
    try:
        for shard in shards:
            for _ in forward_batches(decoder_of(model), ids, torch.as_tensor(y), shard, acc, pad_id=pad_id,
                                     n_states=n_states):
                pass
            acc.flush()  # float64 totals at shard ends, as cache.py
    finally:
        model.train(was_training)
    info = {"model": getattr(model.config, "_name_or_path", None) or type(model).__name__,
            "dtype": str(param.dtype if param is not None else torch.float32).removeprefix("torch."),
            "layers": chosen, "d": d, "num_classes": len(names), "n_states": n_states, "label_names": names,
            "max_length": max_length, "batch_size": batch_size, "truncated_texts": truncated}
    return acc.to_stats({**info, **(meta or {})})


# ------------------------------------------------------------------------------------------------
# scores (SPEC §2) and baselines
# ------------------------------------------------------------------------------------------------

def score(stats: Stats, *, order: str = "descending", variant: str = "raw", fractions: Sequence[float] | None = None,
          k: Sequence[int] | None = None, layers=None, rcond: float = DEFAULT_RCOND, atol: float | None = None,
          device=None):
    """NTPS for every layer × fraction (or absolute k), with its chance level: what K_sweep.py writes.

    Parameters
    ----------
    stats : Stats
        From :func:`compute_statistics` or :func:`load_stats`.
    order : {"descending", "ascending"}
        descending = the paper's top eigenvectors; ascending = the authors' released K_sweep (SPEC §2.1).
    variant : {"raw", "whitened"}
        raw = ‖P_V U_k‖²/‖U_k‖² in raw coordinates (SPEC §2); whitened = NTPS̃ in Σ-whitened coordinates with
        the excess-loss bound of SPEC §2.2 (columns excess, lower, upper, per text; descending only).
    fractions : sequence of float in (0, 1], optional
        f with k_U = floor(f · r_U), k_V = floor(f · r_V); default 0.05, 0.10, …, 0.95.
    k : sequence of int, optional
        Absolute k (clamped to the ranks) instead of ``fractions``.
    layers : "all", str or sequence of int, optional
        Layers of ``stats`` to score (default all).
    rcond, atol : float
        Relative tolerance on the Jacobi-scaled Σ and C0 (default 1e-7), or an absolute one on the
        N-normalised Σ/N and C0/N (1e-8 = the authors' code) — K_sweep.py's ``--rcond`` / ``--atol``.
    device : str or torch.device, optional
        Where the float64 eigenproblems run (default: where the sums are, the CPU).

    Returns
    -------
    pandas.DataFrame
        One row per layer × fraction (or k), columns :data:`SCORE_COLUMNS`: layer, fraction (NaN with ``k``),
        k (−1 with fractions), k_U_nominal, k_U (clamped to the label rank in descending order, SPEC §2.0),
        k_V, r_U, r_V, label_rank, ntps in [0, 1] (NaN where undefined: k = 0), chance = k_V/d, and unique
        (both subspaces uniquely defined); the whitened variant adds excess, lower, upper and, per layer,
        fit_share_dropped and c0_fit_share_dropped (:func:`ntps.score.fit_share_dropped`).

    Raises
    ------
    ValueError
        Unknown order/variant, both or bad fractions and k, layers not in ``stats``, fewer than 2 classes,
        malformed sums.
    """
    import pandas as pd

    from .cli import resolve_device

    if order not in ORDERS or variant not in VARIANTS:
        raise ValueError(f"order must be one of {ORDERS} and variant one of {VARIANTS}, got {order!r}, {variant!r}")
    if fractions is not None and k is not None:
        raise ValueError("pass fractions or k, not both")
    kw = {"fractions": None, "ks": list(k)} if k is not None else \
        {"fractions": list(DEFAULT_FRACTIONS if fractions is None else fractions), "ks": None}
    dev = None if device is None else resolve_device(device)
    frames = []
    for layer in _layer_list(layers, list(stats.layers), max(stats.layers) + 1):
        res = sweep_layer(stats.layers[layer], variant=variant, order=order, rcond=rcond, atol=atol,
                          n_texts=stats.n_texts, device=dev, **kw)
        frames.append(pd.DataFrame({"layer": layer, **res}))
    extra = BOUND_COLUMNS + SHARE_COLUMNS if variant == "whitened" else []
    return pd.concat(frames, ignore_index=True)[SCORE_COLUMNS + extra]


def baselines(stats: Stats, *, layers=None, ridge_alpha: float = 1.0, logme_convention: str = "paper"):
    """The training-free baselines per layer from the same sums: what scores.py writes.

    Parameters
    ----------
    stats : Stats
        From :func:`compute_statistics` or :func:`load_stats`.
    layers : "all", str or sequence of int, optional
        Layers of ``stats`` (default all).
    ridge_alpha : float
        Penalty of the ridge probe (``ridge_mse``).
    logme_convention : {"paper", "reference"}
        LogME as the paper defines its evidence, or as thuml/LogME's code computes it
        (:func:`ntps.baselines.logme`; they differ when N ≤ d).

    Returns
    -------
    pandas.DataFrame
        One row per layer, columns :data:`BASELINE_COLUMNS`: layer, d, n_texts, logme (mean per-sample log
        evidence, nats), h_score, ls_mse and ridge_mse (in-sample MSE on one-hot targets), effective_rank
        (label-free: exp of the entropy of the pooled features' covariance spectrum, :mod:`ntps.spectral`).

    Raises
    ------
    ValueError
        Layers not in ``stats``, fewer than 2 classes with texts, sums inconsistent with the counts.
    """
    import pandas as pd

    rows = []
    for layer in _layer_list(layers, list(stats.layers), max(stats.layers) + 1):
        sums = stats.layers[layer]
        rows.append({"layer": layer, "d": int(sums.XX.shape[0]), "n_texts": int(stats.n_texts),
                     **spectral_scores(sums, stats.n_texts),
                     **all_baselines(sums, stats.class_counts, stats.n_texts, ridge_alpha=ridge_alpha,
                                     logme_convention=logme_convention)})
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


# ------------------------------------------------------------------------------------------------
# the artifact
# ------------------------------------------------------------------------------------------------

def save_stats(stats: Stats, directory: str | Path, *, meta: dict | None = None) -> Path:
    """Write ``stats`` as the artifact cache.py writes: ``stats.safetensors`` (float64 sums) + ``meta.json``.

    ``meta`` is added to ``stats.meta``. K_sweep.py, scores.py and alignment_vis.py read the directory
    (``--stats_dir``). Returns the directory. Raises ``OSError`` when it cannot be written.
    """
    return _save_artifact(directory, stats, {**stats.meta, **(meta or {})})


def load_stats(directory: str | Path, *, layers: Sequence[int] | None = None, device="cpu") -> Stats:
    """Read an artifact written by cache.py or :func:`save_stats` (optionally some layers), checked against
    its meta.json. Raises :class:`ntps.artifacts.ArtifactError` (a ``ValueError``) when it is missing,
    truncated, of another format, or its stats file does not belong to its meta.json."""
    return _load_artifact(directory, layers=None if layers is None else list(layers), device=device)


def _callable_module(module, func) -> None:
    """Make ``module(...)`` call ``func``: ``ntps.score`` and ``ntps.baselines`` stay importable modules
    (``from ntps.score import solve_layer``) and are also the API functions (``ntps.score(stats)``)."""
    if not callable(module):
        module.__class__ = type("CallableModule", (type(module),),
                                {"__call__": lambda self, *args, **kwargs: func(*args, **kwargs)})
