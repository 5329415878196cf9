"""Correlating a training-free score with downstream metrics across datasets: the paper's protocol and
honest checks, the same for NTPS (every variant) and the baselines.

The unit of analysis is one model and one score: a grid of candidate values ``X`` of shape
``(n_candidates, n_datasets)`` -- one row per candidate ``(layer, f)`` (or ``(layer, k)`` when
absolute k were used, or ``layer`` alone for a per-layer score) -- and one metric value per dataset
``y`` of shape ``(n_datasets,)``. Every correlation is Spearman's rho on average ranks
(``scipy.stats.rankdata``, ties allowed; equals ``scipy.stats.spearmanr``), computed on *oriented*
metrics ``sign * y`` (SPEC §3); a score where lower is better (``*mse``, ``*excess``) is negated
the same way before it enters a grid:

==========================  =====  ==========================================================
metric                      sign   meaning of a positive r
==========================  =====  ==========================================================
accuracy (``*acc*``)         +1    higher NTPS goes with higher accuracy
MSE / log-loss / excess      -1    higher NTPS goes with *lower* loss (ranks of MSE reversed)
LoRA gain (``*gain*``)       -1    higher NTPS goes with a *smaller* LoRA gain
==========================  =====  ==========================================================

Procedures (SPEC §3, §5), all vectorised (ranks computed once, correlations as one matrix
product):

- :func:`select_argmax` -- the paper's protocol: the candidate with the largest r over all
  datasets, chosen on the same data (optimistically biased).
- :func:`familywise_test` -- the Westfall-Young max-statistic test of a selected r over a whole family
  (every variant/score × layer × f examined for a claim, optionally several models): each permutation
  reorders the datasets once for the whole family and recomputes the maximum; all n! permutations when
  n! <= :data:`EXACT_MAX` (p = #{null >= obs} / n!), else seeded draws (p = (1 + #{null >= obs}) /
  (1 + n_perm)); with the p's ``floor`` (the smallest p any metric could give) and each candidate's
  single-step adjusted p. :func:`permutation_test` is the same on one grid.
- :func:`lodo_test` / :func:`lodo` -- leave-one-dataset-out: the candidate chosen without dataset j
  predicts j by j's rank within that candidate's row (a common scale for every f and score; tied
  candidates averaged and counted); with its own permutation null.
- :func:`ranking_reliability` -- the test-retest reliability of a metric's dataset ranking (binomial
  redraws of held-out accuracies, :func:`binomial_replicates`).

The claims of the paper (one family per claim, verdicts) are assembled from these in :mod:`ntps.claims`.

Long tables (from ``collect.py`` or :func:`paper_table`) have columns ``model, dataset, layer,
fraction[, k], score, value, chance`` plus metric columns; :func:`build_grid` turns the rows of one
model and one score into a :class:`Grid`, :func:`analyze_grid` runs every procedure on it. The
metric must be constant within a (model, dataset) -- a per-dataset quantity such as
``probe_train_acc`` or ``lora_gain``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import ConstantInputWarning, rankdata, spearmanr

#: Column names used for the figures' metrics, in collect.py tables and in :func:`paper_table`.
FIGURE_METRICS = {
    "acc": "probe_train_acc",   # Fig. 2 left: sklearn logistic probe, train accuracy
    "mse": "probe_train_mse",   # Fig. 2 right: sklearn linear regression on one-hot, train MSE
    "lora_gain": "lora_gain",   # Fig. 3: lora_test_acc - linear_test_acc
}

_TOL = 1e-12  # ties between a null maximum and the observed maximum count as ">="
MIN_DATASETS = 4  # below this a rank correlation (and LODO) is meaningless
EXACT_MAX = 100_000  # n! up to which a permutation test enumerates every permutation (n <= 8)
N_PERM = 10_000  # seeded draws above that
ALPHA = 0.05  # a test whose floor (smallest attainable p) is >= ALPHA is untestable
_BLOCK = 1000  # permutations per matrix product (memory: n_candidates × _BLOCK floats)


# --------------------------------------------------------------------------------------------
# Rank correlations
# --------------------------------------------------------------------------------------------

def metric_sign(metric: str) -> int:
    """Orientation of a metric or score name (table in the module docstring): -1 for losses and gains."""
    name = metric.lower()
    if any(s in name for s in ("mse", "loss", "gain", "error", "excess")):
        return -1
    return 1


def _rank_z(a: np.ndarray) -> np.ndarray:
    """Average ranks along the last axis (``scipy.stats.rankdata``), centred and scaled to unit norm.

    The Pearson correlation of two such rows is their dot product, i.e. Spearman's rho; rows that are
    constant (all ranks equal) become NaN.
    """
    if np.isnan(a).any():
        raise ValueError("spearman: input contains NaN; drop missing values first")
    r = rankdata(a, axis=-1)
    z = r - r.mean(axis=-1, keepdims=True)
    norm = np.linalg.norm(z, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, z / norm, np.nan)


def spearman(x, y) -> float:
    """Spearman's rho of two 1-D arrays (``scipy.stats.spearmanr``; NaN if either is constant).

    Raises ``ValueError`` for NaN inputs, arrays of different shapes and fewer than 2 points.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman: need two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise ValueError("spearman: need at least 2 points")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("spearman: input contains NaN; drop missing values first")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConstantInputWarning)
        return float(spearmanr(x, y).statistic)


def spearman_rows(X, y) -> np.ndarray:
    """Spearman's rho of every row of ``X`` (n_candidates, n) with ``y`` (n,), as one matrix product.

    Returns (n_candidates,); rows that are constant across datasets give NaN (all NaN if ``y`` is).
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    y = np.asarray(y, dtype=float)
    if X.shape[1] != y.shape[0]:
        raise ValueError(f"spearman_rows: X has {X.shape[1]} columns but y has {y.shape[0]} values")
    return np.clip(_rank_z(X) @ _rank_z(y), -1.0, 1.0)


def _argmax(r: np.ndarray) -> int:
    """The first candidate with the largest r; r equal to within _TOL (round-off of the matrix product,
    which depends on the memory layout) count as ties."""
    if np.all(np.isnan(r)):
        raise ValueError("no candidate has a defined correlation (all NTPS rows constant?)")
    return int(np.flatnonzero(r >= np.nanmax(r) - _TOL)[0])


# --------------------------------------------------------------------------------------------
# Permutations: exact enumeration or seeded draws
# --------------------------------------------------------------------------------------------

def permutation_set(n: int, n_perm: int = N_PERM, seed: int = 0) -> tuple[np.ndarray, bool]:
    """The permutations of ``range(n)`` a test evaluates, and whether they are all of them.

    Every one of the n! permutations (the identity first) when n! <= :data:`EXACT_MAX`, else ``n_perm``
    seeded uniform draws (with replacement; the identity may recur). Returns ``(P (n_perm_used, n) int, exact)``.
    """
    if n < 2:
        raise ValueError(f"a permutation test needs at least 2 datasets, got {n}")
    if math.factorial(n) <= EXACT_MAX:
        return np.array(list(itertools.permutations(range(n))), dtype=np.intp), True
    if n_perm < 1:
        raise ValueError("n_perm must be >= 1")
    rng = np.random.default_rng(seed)
    return rng.permuted(np.broadcast_to(np.arange(n), (n_perm, n)), axis=1), False


def p_values(null: np.ndarray, observed, exact: bool) -> np.ndarray:
    """Permutation p of each ``observed`` value against the null statistics ``null`` (B,).

    Exact enumeration (the identity is one of the B): ``#{null >= obs} / B``; draws:
    ``(1 + #{null >= obs}) / (1 + B)``. ``>=`` within :data:`_TOL` (round-off of the matrix products);
    NaN observations give NaN.
    """
    obs = np.asarray(observed, dtype=float)
    srt = np.sort(np.where(np.isnan(null), -np.inf, null))
    count = srt.size - np.searchsorted(srt, np.where(np.isnan(obs), np.inf, obs) - _TOL, side="left")
    p = count / srt.size if exact else (1 + count) / (1 + srt.size)
    return np.where(np.isnan(obs), np.nan, p)


def _p(null: np.ndarray, observed: float, exact: bool) -> float:
    return float(p_values(null, observed, exact))


def _unique_rows(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rank rows of ``Z`` (candidates with the same ranking give the same r everywhere), their
    multiplicities and, for each row of ``Z``, the index of its distinct row."""
    Zu, inverse, counts = np.unique(Z, axis=0, return_inverse=True, return_counts=True)
    return Zu, counts.astype(float), inverse.reshape(-1)


def _ranked_family(X, y) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rank rows of the non-constant candidates, their indices in ``X``, rank-z of ``y``); ValueError when
    nothing varies."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    y = np.asarray(y, dtype=float)
    if X.shape[1] != y.shape[0]:
        raise ValueError(f"X has {X.shape[1]} columns but y has {y.shape[0]} values")
    Z, zy = _rank_z(X), _rank_z(y)
    valid = np.flatnonzero(~np.isnan(Z).any(axis=1))
    if valid.size == 0 or np.isnan(zy).any():
        raise ValueError("no candidate (or the metric) varies across datasets")
    return Z[valid], valid, zy


# --------------------------------------------------------------------------------------------
# Selection and its family-wise (Westfall-Young max-statistic) null
# --------------------------------------------------------------------------------------------

def select_argmax(X, y, sign: int = 1) -> tuple[int, float, np.ndarray]:
    """The paper's protocol: the candidate maximising spearman(X[c], sign * y).

    Returns (index, r at index, r of every candidate). Ties go to the first candidate.
    """
    r = spearman_rows(X, sign * np.asarray(y, dtype=float))
    c = _argmax(r)
    return c, float(r[c]), r


def familywise_test(Xs, ys, n_perm: int = N_PERM, seed: int = 0) -> dict:
    """Westfall-Young max-statistic permutation test of a selected Spearman r (SPEC §5.1).

    The family is every candidate examined for one claim: ``Xs`` is a list of blocks (e.g. one per
    model), block k of shape (m_k, n) -- one row per score × layer × f, the same n datasets in the same
    column order in every block -- and ``ys[k]`` (n,) the block's metric, already oriented (higher =
    better predicted). The statistic is ``T = max over blocks and candidates of spearman(X_k[c], y_k)``.
    Each permutation reorders the datasets once, the same way in every block (so the dependence between
    candidates, and between models, is kept), and T is recomputed over the whole family: ranks are taken
    once and every permutation costs one matrix product per block (candidates with identical rankings are
    evaluated once). All n! permutations when n! <= :data:`EXACT_MAX`, else ``n_perm`` seeded draws.

    Returns a dict: ``observed`` (T), ``p`` (:func:`p_values`), ``floor`` -- the smallest p this test can
    give whatever the metric: the p of the largest T any reassignment of the metric values to the
    datasets reaches (``t_max``: the best alignment of y's ranks with a candidate's ranks), computed with
    the same permutations --, ``exact``, ``n_perm`` (permutations evaluated), ``null_max`` (B,),
    ``null_q95``, ``r`` (one (m_k,) array per block, NaN for a candidate constant across datasets) and
    ``adjusted`` (the single-step max-T adjusted p of every candidate, same shapes). ValueError when the
    blocks disagree on n or nothing varies.
    """
    if len(Xs) != len(ys) or not len(Xs):
        raise ValueError("familywise_test: need as many metrics as blocks, and at least one block")
    n = np.asarray(ys[0]).shape[0]
    blocks, r_all = [], []
    for X, y in zip(Xs, ys):
        if np.asarray(y).shape[0] != n:
            raise ValueError("familywise_test: every block must hold the same datasets")
        Z, valid, zy = _ranked_family(X, y)
        r = np.full(np.atleast_2d(X).shape[0], np.nan)
        r[valid] = np.clip(Z @ zy, -1.0, 1.0)
        r_all.append(r)
        blocks.append((_unique_rows(Z)[0], zy))
    observed = float(max(np.nanmax(r) for r in r_all))
    P, exact = permutation_set(n, n_perm, seed)
    null = np.full(len(P), -np.inf)
    for start in range(0, len(P), _BLOCK):
        idx = P[start:start + _BLOCK]
        for Zu, zy in blocks:
            np.maximum(null[start:start + _BLOCK], (Zu @ zy[idx].T).max(axis=0),
                       out=null[start:start + _BLOCK])
    t_max = float(max(np.max(np.sort(Zu, axis=1) @ np.sort(zy)) for Zu, zy in blocks))
    return {"observed": observed, "p": _p(null, observed, exact), "floor": _p(null, t_max, exact),
            "t_max": t_max, "exact": exact, "n_perm": int(len(P)), "seed": seed, "null_max": null,
            "null_q95": float(np.quantile(null, 0.95)), "r": r_all,
            "adjusted": [p_values(null, r, exact) for r in r_all]}


def permutation_test(X, y, sign: int = 1, n_perm: int = 1000, seed: int = 0) -> dict:
    """Permutation p-value of the *selected* (argmax) correlation of one grid: :func:`familywise_test`
    with a single block (exact enumeration when n! <= :data:`EXACT_MAX`). With a single candidate this is
    the ordinary permutation test of spearman.

    Returns ``{"observed", "p", "floor", "exact", "null_max" (n_perm,), "null_q95", "n_perm", "seed"}``.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    try:
        res = familywise_test([X], [sign * np.asarray(y, dtype=float)], n_perm=n_perm, seed=seed)
    except ValueError as e:
        raise ValueError(f"permutation_test: {e}") from None
    return {k: res[k] for k in ("observed", "p", "floor", "exact", "null_max", "null_q95", "n_perm", "seed")}


# --------------------------------------------------------------------------------------------
# Leave-one-dataset-out with its own null
# --------------------------------------------------------------------------------------------

def _folds(Zu: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per held-out dataset j: (indices of the rows not constant over the other n - 1 datasets, their rank
    rows there); a row constant there cannot be selected in that fold."""
    n = Zu.shape[1]
    out = []
    for j in range(n):
        Zj = _rank_z(Zu[:, np.arange(n) != j])
        ok = np.flatnonzero(~np.isnan(Zj).any(axis=1))
        out.append((ok, Zj[ok]))
    return out


def _lodo_core(Zu, w, folds, Y, keep_ties: bool = False):
    """LODO for each row of ``Y`` (B, n) (oriented metrics, e.g. permuted): in fold j, the candidates
    maximising r over the other datasets (ties within _TOL, counted with multiplicity ``w``) predict j
    by the mean of their within-row rank ``Zu[c, j]``; r = spearman(predictions, Y[b])."""
    B, n = Y.shape
    pred, n_tied, ties = np.empty((B, n)), np.empty((B, n)), []
    for j, (ok, Zj) in enumerate(folds):
        if ok.size == 0:  # every candidate constant without j: all tie
            ok, Zj = np.arange(Zu.shape[0]), np.zeros((Zu.shape[0], n - 1))
        zy = np.nan_to_num(_rank_z(Y[:, np.arange(n) != j]))
        R = Zj @ zy.T  # (m_ok, B)
        tie = R >= R.max(axis=0) - _TOL
        sums = np.stack([w[ok], w[ok] * Zu[ok, j]]) @ tie
        n_tied[:, j], pred[:, j] = sums[0], sums[1] / sums[0]
        if keep_ties:
            full = np.zeros(Zu.shape[0], dtype=bool)
            full[ok] = tie[:, 0]
            ties.append(full)
    r = np.einsum("bn,bn->b", _rank_z(pred), _rank_z(Y))
    return r, pred, n_tied, ties


def lodo_test(X, y, n_perm: int = N_PERM, seed: int = 0, null: bool = True) -> dict:
    """Leave-one-dataset-out r of a family, with its own permutation null (SPEC §5.1).

    ``X`` (m, n): the candidates (any scores, layers, f); ``y`` (n,): the metric, oriented. For each
    dataset j the candidate maximising r over the other n - 1 datasets predicts j. Predictions are put on
    a common scale: the rank of dataset j within that candidate's row (centred, unit norm), so cells with
    different f (chance ≈ f) or different scores are comparable. Candidates tied at the maximum (r within
    :data:`_TOL`) are averaged, not broken by position, and counted (``n_tied``). The LODO r =
    spearman(predictions, y). Its null repeats everything on the metric permuted across datasets (the same
    permutations as :func:`familywise_test` with the same ``n_perm``/``seed``); ``floor`` is the p of the
    largest LODO r seen (observed or null).

    Returns ``{"r", "pred" (n,), "chosen" (n,) the first tied candidate (index into X), "n_tied" (n,)}`` and,
    with ``null``: ``"p", "floor", "exact", "n_perm", "null_q95"``. ValueError for fewer than
    :data:`MIN_DATASETS` datasets or nothing varying.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    y = np.asarray(y, dtype=float)
    n = y.shape[0]
    if n < MIN_DATASETS:
        raise ValueError(f"LODO needs at least {MIN_DATASETS} datasets, got {n}")
    Z, valid, _ = _ranked_family(X, y)
    Zu, w, inverse = _unique_rows(Z)
    folds = _folds(Zu)
    r, pred, n_tied, ties = _lodo_core(Zu, w, folds, y[None], keep_ties=True)
    chosen = np.array([valid[np.flatnonzero(t[inverse])[0]] for t in ties])
    out = {"r": float(r[0]), "pred": pred[0], "chosen": chosen, "n_tied": n_tied[0].astype(int)}
    if null:
        P, exact = permutation_set(n, n_perm, seed)
        r_null = np.concatenate([_lodo_core(Zu, w, folds, y[P[s:s + _BLOCK]])[0]
                                 for s in range(0, len(P), _BLOCK)])
        top = float(np.nanmax(np.append(r_null, out["r"])))
        out.update({"p": _p(r_null, out["r"], exact), "floor": _p(r_null, top, exact), "exact": exact,
                    "n_perm": int(len(P)), "null_q95": float(np.nanquantile(r_null, 0.95))})
    return out


def lodo(X, y, sign: int = 1) -> dict:
    """Leave-one-dataset-out selection without the null (:func:`lodo_test`): ``{"r", "chosen", "pred",
    "n_tied"}``; r NaN (and the predictions NaN) when n < :data:`MIN_DATASETS` or nothing varies."""
    X = np.atleast_2d(np.asarray(X, dtype=float))
    n = X.shape[1]
    try:
        return lodo_test(X, sign * np.asarray(y, dtype=float), null=False)
    except ValueError:
        return {"r": float("nan"), "chosen": np.zeros(n, dtype=int), "pred": np.full(n, np.nan),
                "n_tied": np.zeros(n, dtype=int)}


# --------------------------------------------------------------------------------------------
# Test-retest reliability of a metric's dataset ranking
# --------------------------------------------------------------------------------------------

def binomial_replicates(acc, n_trials, minus=None):
    """A replicate generator for :func:`ranking_reliability`: each dataset's accuracy redrawn as
    Binomial(N, acc) / N with its own test size N; with ``minus`` = (acc2, n2) the difference of two such
    draws (a LoRA gain = LoRA accuracy − linear-probe accuracy, the two drawn independently, which
    overstates the noise of a difference measured on the same texts). Arrays of shape (n,)."""
    acc, n_trials = np.asarray(acc, dtype=float), np.asarray(n_trials, dtype=float)
    if np.isnan(acc).any() or np.isnan(n_trials).any() or (n_trials < 1).any():
        raise ValueError("binomial replicates need an accuracy and a test size >= 1 for every dataset")
    k = np.rint(n_trials).astype(np.int64)

    def draw(rng, size):
        out = rng.binomial(k, np.clip(acc, 0, 1), size=(size, acc.size)) / k
        if minus is not None:
            acc2, n2 = (np.asarray(a, dtype=float) for a in minus)
            k2 = np.rint(n2).astype(np.int64)
            out = out - rng.binomial(k2, np.clip(acc2, 0, 1), size=(size, acc.size)) / k2
        return out

    return draw


def ranking_reliability(replicate, n_boot: int = 2000, seed: int = 0) -> dict:
    """Test-retest reliability of a metric's ranking of the datasets (SPEC §5.1).

    The long table holds one number per dataset, no per-text results, so a bootstrap over texts is not
    possible; what it does allow is a parametric bootstrap of each dataset's metric from its sampling
    distribution (``replicate(rng, size) -> (size, n)``, e.g. :func:`binomial_replicates`: a held-out
    accuracy is a proportion over its N test texts). Two independent replicates of the whole metric vector
    are drawn ``n_boot`` times; the reliability is the median Spearman r between them (with its 5 % and
    95 % quantiles). It ignores the noise of fitting the probe, so it is an upper bound: a correlation of
    any score with the metric cannot meaningfully exceed it. Returns ``{"median", "q05", "q95", "n_boot",
    "seed"}``; NaN when every replicate is constant.
    """
    rng = np.random.default_rng(seed)
    a, b = replicate(rng, n_boot), replicate(rng, n_boot)
    r = np.einsum("bn,bn->b", _rank_z(a), _rank_z(b))
    if np.all(np.isnan(r)):
        return {"median": float("nan"), "q05": float("nan"), "q95": float("nan"), "n_boot": n_boot, "seed": seed}
    q05, med, q95 = np.nanquantile(r, [0.05, 0.5, 0.95])
    return {"median": float(med), "q05": float(q05), "q95": float(q95), "n_boot": n_boot, "seed": seed}


# --------------------------------------------------------------------------------------------
# Tidy tables -> grids
# --------------------------------------------------------------------------------------------

@dataclass
class Grid:
    """Candidate values of one score for one model against one metric."""

    model: str
    metric: str
    datasets: list[str]
    candidates: pd.DataFrame          # (n_cand, 2) columns: layer, <param> (fraction or k)
    param: str                        # "fraction" or "k"
    X: np.ndarray                     # (n_cand, n_data) score values
    chance: np.ndarray                # (n_cand, n_data), NaN where unknown
    y: np.ndarray                     # (n_data,)
    score: str = "ntps"
    dropped: dict = field(default_factory=dict)  # what was left out and why

    @property
    def n_candidates(self) -> int:
        return self.X.shape[0]


def candidate_param(table: pd.DataFrame) -> str:
    """``fraction`` when the rows carry fractions, else ``k`` (absolute sizes)."""
    if "fraction" in table and table["fraction"].notna().any():
        return "fraction"
    if "k" in table and table["k"].notna().any():
        return "k"
    return "fraction"


def build_grid(table: pd.DataFrame, metric: str, model: str | None = None) -> Grid:
    """Pivot the long-table rows of one model and one score into a :class:`Grid`.

    ``table`` has columns ``model, dataset, value`` and ``metric`` (optionally ``layer``, ``fraction``
    or ``k``, ``chance``, ``score``). Datasets whose metric is missing are dropped; then candidates
    lacking a value for any remaining dataset are dropped (both recorded in ``Grid.dropped``).
    Raises ``ValueError`` if the table holds several rows per (candidate, dataset) (filter ``score``
    first) or the metric is not constant within a dataset.
    """
    if model is not None:
        table = table[table["model"] == model]
    models = table["model"].unique()
    if len(models) != 1:
        raise ValueError(f"build_grid needs the rows of exactly one model, got {list(models)}")
    for col in ("dataset", "value", metric):
        if col not in table:
            raise ValueError(f"table has no column {col!r}; columns: {list(table.columns)}")
    param = candidate_param(table)
    t = table[[c for c in dict.fromkeys(("model", "dataset", "value", metric, "layer", param, "chance", "score",
                                         "split")) if c in table]].copy()
    for col in ("layer", param, "chance"):
        if col not in t:
            t[col] = np.nan
    t["layer"] = pd.to_numeric(t["layer"], errors="coerce")
    t[param] = pd.to_numeric(t[param], errors="coerce")
    # Sentinel for missing candidate keys (the authors' data have one unnamed candidate).
    t["_l"] = t["layer"].fillna(-1.0)
    t["_p"] = t[param].fillna(-1.0)
    dup = t.duplicated(["_l", "_p", "dataset"])
    if dup.any():
        extra = [c for c in ("score", "split") if c in t and t[c].nunique() > 1]
        raise ValueError(f"{int(dup.sum())} duplicate (layer, {param}, dataset) rows for model "
                         f"{models[0]!r}; filter by {extra or 'score'} first")
    metric_by_ds = t.groupby("dataset")[metric].agg(["min", "max"])
    varying = metric_by_ds.index[(metric_by_ds["max"] - metric_by_ds["min"]).abs() > 1e-12]
    if len(varying):
        raise ValueError(f"metric {metric!r} varies within dataset(s) {list(varying)[:3]} of "
                         f"{models[0]!r}; use a per-dataset metric (e.g. probe_train_acc, not a "
                         f"same-layer probe column)")
    y_all = metric_by_ds["min"]
    dropped = {"datasets_without_metric": sorted(y_all.index[y_all.isna()].tolist())}
    datasets = sorted(y_all.index[y_all.notna()].tolist())
    if not datasets:
        raise ValueError(f"no dataset of {models[0]!r} has a value of {metric!r}")
    t = t[t["dataset"].isin(datasets)]
    wide = t.set_index(["_l", "_p", "dataset"])[["value", "chance"]].unstack("dataset")
    values = wide["value"].reindex(columns=datasets)
    chance = wide["chance"].reindex(columns=datasets)
    complete = values.notna().all(axis=1).to_numpy()
    dropped["candidates_incomplete"] = int((~complete).sum())
    values, chance = values[complete], chance[complete]
    keys = values.index.to_frame(index=False).rename(columns={"_l": "layer", "_p": param})
    keys = keys.replace(-1.0, np.nan)
    scores = t["score"].dropna().unique() if "score" in t else []
    return Grid(model=str(models[0]), metric=metric, datasets=datasets, candidates=keys, param=param,
                X=values.to_numpy(float), chance=chance.to_numpy(float),
                y=y_all.loc[datasets].to_numpy(float), score=str(scores[0]) if len(scores) == 1 else "ntps",
                dropped=dropped)


def fixed_candidate(grid: Grid) -> int | None:
    """The candidate fixed in advance: the last layer and, among its ``param`` values, the lower median.

    Nobody chose it by looking at the metric, so its ordinary permutation p-value is valid.
    None when the grid has no candidate.
    """
    if grid.n_candidates == 0:
        return None
    layers = grid.candidates["layer"].to_numpy(float)
    params = grid.candidates[grid.param].to_numpy(float)
    last = layers == np.nanmax(layers) if not np.all(np.isnan(layers)) else np.ones(layers.size, bool)
    avail = np.unique(params[last & ~np.isnan(params)])
    p_fixed = avail[(len(avail) - 1) // 2] if len(avail) else np.nan
    pick = np.flatnonzero(last & ((params == p_fixed) | (np.isnan(params) & np.isnan(p_fixed))))
    return int(pick[0]) if pick.size else None


def analyze_grid(grid: Grid, sign: int | None = None, n_perm: int = 1000, seed: int = 0) -> dict:
    """(a) argmax selection, (b) LODO, (c) permutation test, (e) score vs chance and the fixed candidate.

    ``n_tied_argmax``: candidates whose r ties the maximum; ``perm_floor``: the smallest p the permutation
    test could give (:func:`familywise_test`); ``lodo_n_tied``: tied candidates per held-out dataset
    (:func:`lodo_test`). LODO and the selection-aware permutation test are skipped (``None``) with a single candidate,
    where the selection protocol cannot be repeated (the authors' published data). ``r_fixed`` /
    ``p_fixed``: r and ordinary permutation p at :func:`fixed_candidate`. ``note`` says what limits
    the result (incomplete candidates, fewer than :data:`MIN_DATASETS` datasets); ``error`` is set
    instead of the statistics when nothing can be computed. Returns a JSON-able dict;
    ``per_dataset`` is the (e) table at the selected candidate.
    """
    sign = metric_sign(grid.metric) if sign is None else sign
    n = len(grid.datasets)
    out = {"model": grid.model, "score": grid.score, "metric": grid.metric, "sign": sign, "n_datasets": n,
           "n_candidates": grid.n_candidates, "param": grid.param, "dropped": grid.dropped}
    notes = []
    if grid.dropped.get("candidates_incomplete"):
        notes.append(f"{grid.dropped['candidates_incomplete']} candidate(s) missing for some dataset")
    if 3 <= n < MIN_DATASETS:
        notes.append(f"only {n} datasets: correlations meaningless")
    out["note"] = "; ".join(notes)
    if grid.n_candidates == 0 or n < 3:
        out["error"] = f"too little data: {grid.n_candidates} complete candidates, {n} datasets"
        return out
    try:
        c, r, r_all = select_argmax(grid.X, grid.y, sign)
    except ValueError as e:  # e.g. a metric equal on every dataset (saturated in-sample accuracy)
        out["error"] = str(e)
        return out
    out.update({**_cand_dict(grid, c), "r_argmax": r, "r_all": r_all,
                "n_tied_argmax": int(np.sum(r_all >= r - _TOL))})
    if grid.n_candidates > 1:
        perm = permutation_test(grid.X, grid.y, sign, n_perm=n_perm, seed=seed)
        lo = lodo(grid.X, grid.y, sign)
        out.update({"perm_p": perm["p"], "perm_floor": perm["floor"], "null_q95": perm["null_q95"],
                    "n_perm": perm["n_perm"], "exact": perm["exact"], "seed": seed, "lodo_r": lo["r"],
                    "lodo_chosen": [_cand_dict(grid, i) for i in lo["chosen"]],
                    "lodo_n_tied": lo["n_tied"], "lodo_pred": lo["pred"]})
    else:
        out.update({"perm_p": None, "perm_floor": None, "null_q95": None, "lodo_r": None})
    i = fixed_candidate(grid)
    out.update({f"fixed_{k}": v for k, v in _cand_dict(grid, i).items()})
    out["r_fixed"] = float(r_all[i])
    try:
        out["p_fixed"] = permutation_test(grid.X[i:i + 1], grid.y, sign, n_perm=n_perm, seed=seed)["p"]
    except ValueError:  # that candidate is constant across datasets
        out["p_fixed"] = None
    out["per_dataset"] = [
        {"dataset": ds, "value": float(grid.X[c, j]), "chance": _num(grid.chance[c, j]),
         "minus_chance": _num(grid.X[c, j] - grid.chance[c, j]), grid.metric: float(grid.y[j])}
        for j, ds in enumerate(grid.datasets)]
    return out


def correlation_map(grid: Grid, r_all: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrange per-candidate r as a (layers x params) matrix for a heat map.

    Returns (matrix, layers, params); cells without a candidate are NaN.
    """
    layers = np.unique(grid.candidates["layer"].to_numpy(float))
    params = np.unique(grid.candidates[grid.param].to_numpy(float))
    mat = np.full((len(layers), len(params)), np.nan)
    li = np.searchsorted(layers, grid.candidates["layer"].to_numpy(float))
    pi = np.searchsorted(params, grid.candidates[grid.param].to_numpy(float))
    mat[li, pi] = r_all
    return mat, layers, params


def _cand_dict(grid: Grid, i: int) -> dict:
    row = grid.candidates.iloc[int(i)]
    return {"layer": _num(row["layer"]), grid.param: _num(row[grid.param])}


def _num(v):
    v = float(v)
    if np.isnan(v):
        return None
    return int(v) if v.is_integer() else v


def orient_scores(table: pd.DataFrame) -> pd.DataFrame:
    """Long-table rows with every score oriented so that higher = predicted better.

    Scores where lower is better (:func:`metric_sign` = -1: ``ls_mse``, ``ridge_mse``, ``*_excess``)
    get their value negated and a ``-`` before their name (``-ls_mse``); the others are unchanged.
    """
    sign = table["score"].map(metric_sign)
    return table.assign(value=table["value"] * sign,
                        score=table["score"].where(sign > 0, "-" + table["score"].astype(str)))


def unique_only(table: pd.DataFrame) -> pd.DataFrame:
    """Drop the rows whose subspaces are not uniquely defined (SPEC §2.0); rows without the flag stay."""
    if "unique" not in table:
        return table
    flag = table["unique"].astype(str).str.lower()
    return table[~flag.isin(["false", "0"])]


# --------------------------------------------------------------------------------------------
# The authors' figure data (SPEC §4)
# --------------------------------------------------------------------------------------------

def paper_table(path: str | os.PathLike, metric: str | None = None) -> pd.DataFrame:
    """The authors' ``fig2_1.json``/``fig2_2.json``/``fig3.json`` as a tidy table.

    One row per (model, dataset) in the long-table layout of collect.py: ``model, dataset, layer (NaN),
    fraction (NaN), score ("ntps"), value, chance (NaN: not published)`` plus metric columns --
    ``fig3``: ``linear_test_acc, lora_test_acc, lora_gain``; ``fig2``: ``metric_data`` renamed to ``metric`` (default
    ``probe_train_acc`` for a file named ``*fig2_1*``, ``probe_train_mse`` for ``*fig2_2*``).
    """
    path = Path(path)
    data = json.loads(path.read_text())
    if metric is None:
        metric = ("probe_train_acc" if "fig2_1" in path.name else
                  "probe_train_mse" if "fig2_2" in path.name else "metric_data")
    rows = []
    for model, by_ds in data.items():
        for ds, v in by_ds.items():
            row = {"model": model, "dataset": ds, "layer": np.nan, "fraction": np.nan,
                   "score": "ntps", "value": float(v["align_score"]), "chance": np.nan}
            if "metric_data" in v:
                row[metric] = float(v["metric_data"])
            if "lora_acc" in v:
                row["linear_test_acc"] = float(v["linear_acc"])
                row["lora_test_acc"] = float(v["lora_acc"])
                row["lora_gain"] = row["lora_test_acc"] - row["linear_test_acc"]
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no (model, dataset) entries")
    return pd.DataFrame(rows)
