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
- :func:`lodo` -- leave-one-dataset-out: choose the candidate without dataset j, predict j with
  that candidate's NTPS, and correlate the n held-out predictions with the metric.
- :func:`permutation_test` -- repeats the *whole* argmax selection on metrics shuffled across
  datasets (one permutation shared by all candidates); ``p = (1 + #{null >= obs}) / (1 + n_perm)``.

Long tables (from ``collect.py`` or :func:`paper_table`) have columns ``model, dataset, layer,
fraction[, k], score, value, chance`` plus metric columns; :func:`build_grid` turns the rows of one
model and one score into a :class:`Grid`, :func:`analyze_grid` runs every procedure on it. The
metric must be constant within a (model, dataset) -- a per-dataset quantity such as
``probe_train_acc`` or ``lora_gain``.
"""

from __future__ import annotations

import json
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
# Selection, leave-one-dataset-out, permutation test
# --------------------------------------------------------------------------------------------

def select_argmax(X, y, sign: int = 1) -> tuple[int, float, np.ndarray]:
    """The paper's protocol: the candidate maximising spearman(X[c], sign * y).

    Returns (index, r at index, r of every candidate). Ties go to the first candidate.
    """
    r = spearman_rows(X, sign * np.asarray(y, dtype=float))
    c = _argmax(r)
    return c, float(r[c]), r


def lodo(X, y, sign: int = 1) -> dict:
    """Leave-one-dataset-out selection.

    For each dataset j: choose the candidate maximising the correlation over the other
    n - 1 datasets, and predict j by that candidate's NTPS ``X[c_j, j]``. The returned ``r`` is
    spearman(predictions, sign * y) over the n held-out predictions (NaN if n < 4).

    Returns ``{"r", "chosen" (n,) candidate indices, "pred" (n,) NTPS predictions}``.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    y = sign * np.asarray(y, dtype=float)
    n = X.shape[1]
    chosen = np.zeros(n, dtype=int)
    pred = np.full(n, np.nan)
    if n < 4:
        return {"r": float("nan"), "chosen": chosen, "pred": pred}
    for j in range(n):
        keep = np.arange(n) != j
        r = spearman_rows(X[:, keep], y[keep])
        if np.all(np.isnan(r)):
            continue
        chosen[j] = _argmax(r)
        pred[j] = X[chosen[j], j]
    ok = ~np.isnan(pred)
    r_lodo = spearman(pred[ok], y[ok]) if ok.sum() >= 3 else float("nan")
    return {"r": r_lodo, "chosen": chosen, "pred": pred}


def permutation_test(X, y, sign: int = 1, n_perm: int = 1000, seed: int = 0) -> dict:
    """Permutation p-value of the *selected* (argmax) correlation.

    Each permutation shuffles the metric across datasets (the same shuffle for every
    candidate) and repeats the full argmax over all candidates; ranks are computed once, so
    one permutation costs one (n_candidates x n) @ (n,) product (all permutations: one matrix
    product). With a single candidate this is the ordinary permutation test of spearman.

    Returns ``{"observed", "p", "null_max" (n_perm,), "null_q95", "n_perm", "seed"}``.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    y = sign * np.asarray(y, dtype=float)
    if n_perm < 1:
        raise ValueError("n_perm must be >= 1")
    zx, zy = _rank_z(X), _rank_z(y)
    zx = zx[~np.isnan(zx).any(axis=1)]
    if zx.shape[0] == 0 or np.isnan(zy).any():
        raise ValueError("permutation_test: no candidate (or the metric) varies across datasets")
    observed = float(np.max(zx @ zy))
    rng = np.random.default_rng(seed)
    perms = rng.permuted(np.broadcast_to(np.arange(y.size), (n_perm, y.size)), axis=1)
    null_max = np.max(zx @ zy[perms].T, axis=0)  # (n_cand, n_perm) -> (n_perm,)
    p = (1 + int(np.sum(null_max >= observed - _TOL))) / (1 + n_perm)
    return {"observed": observed, "p": p, "null_max": null_max,
            "null_q95": float(np.quantile(null_max, 0.95)), "n_perm": n_perm, "seed": seed}


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
    t = table.copy()
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

    LODO and the selection-aware permutation test are skipped (``None``) with a single candidate,
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
    out.update({**_cand_dict(grid, c), "r_argmax": r, "r_all": r_all})
    if grid.n_candidates > 1:
        perm = permutation_test(grid.X, grid.y, sign, n_perm=n_perm, seed=seed)
        lo = lodo(grid.X, grid.y, sign)
        out.update({"perm_p": perm["p"], "null_q95": perm["null_q95"], "n_perm": n_perm, "seed": seed,
                    "lodo_r": lo["r"],
                    "lodo_chosen": [_cand_dict(grid, i) for i in lo["chosen"]],
                    "lodo_pred": lo["pred"]})
    else:
        out.update({"perm_p": None, "null_q95": None, "lodo_r": None})
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
