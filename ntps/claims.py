"""The paper's claims tested on collect.py's long table (SPEC §5.1): one family and one family-wise p per claim.

A claim is a metric and a family of scores (:data:`CLAIMS`): "NTPS predicts held-out probe accuracy" examines
every NTPS variant and derived score × layer × f, "the best baseline" every baseline × layer. Per model:

- datasets: those with the metric, one per source (:func:`headline_datasets`; datasets of one source are not
  independent) and, for an in-sample metric, only those with N >= 2(d + 1) (below, Cover's theorem makes the
  in-sample accuracy ≈ 1 and MSE ≈ 0 whatever the representation);
- the selected r (the paper's argmax over the whole family) with its Westfall-Young family-wise p and the
  p's floor (:func:`ntps.analysis.familywise_test`); LODO r on the common rank scale with its own null
  (:func:`ntps.analysis.lodo_test`); the test-retest reliability of the metric's ranking
  (:func:`metric_reliability`); a verdict word (:data:`VERDICTS`);
- across models, one joint family-wise p (every model's family, the datasets permuted together).

:func:`analyze_claims` runs all of it on an oriented table (:func:`ntps.analysis.orient_scores`) and adds two
sensitivity checks that do not change the headline: the other member of each shared source (and all datasets),
and -- :func:`tolerance_sensitivity` -- long tables computed with other rank tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ntps import analysis
from ntps.analysis import ALPHA, MIN_DATASETS

AFTER_LORA = "_after_lora"


@dataclass(frozen=True)
class Claim:
    """A metric and the family of scores examined for it."""

    key: str
    label: str
    metric: str
    family: str  # "ntps": the NTPS sweeps and the scores derived from them (not after LoRA); "baselines": the rest
    in_sample: bool = False


CLAIMS = (
    Claim("ntps_test_acc", "NTPS vs held-out probe accuracy", "probe_test_acc", "ntps"),
    Claim("ntps_test_nmse", "NTPS vs held-out normalised MSE", "probe_test_nmse", "ntps"),
    Claim("ntps_lora_gain", "NTPS vs LoRA gain (Fig. 3)", "lora_gain", "ntps"),
    Claim("baseline_test_acc", "the best baseline vs held-out probe accuracy", "probe_test_acc", "baselines"),
    Claim("ntps_train_acc", "NTPS vs in-sample probe accuracy (Fig. 2 ACC)", "probe_train_acc", "ntps", True),
    Claim("ntps_train_nmse", "NTPS vs in-sample normalised MSE (Fig. 2 MSE)", "probe_train_nmse", "ntps", True),
)

#: The verdict words, what each means.
VERDICTS = {
    "supported": f"family-wise p < {ALPHA} and LODO p < {ALPHA}: the selection beats the whole family's null and "
                 "carries to held-out datasets",
    "argmax only": f"family-wise p < {ALPHA} but LODO p >= {ALPHA} (or LODO untestable): the selected cell does "
                   "not carry to held-out datasets",
    "not supported": f"family-wise p >= {ALPHA} while p < {ALPHA} was attainable (floor < {ALPHA})",
    "untestable": f"floor >= {ALPHA}: no metric could have given p < {ALPHA} with this family and these datasets",
    "not run": f"fewer than {MIN_DATASETS} datasets with the metric",
}

#: Per metric: (accuracy column, its test size column, the subtracted accuracy column or None) for the binomial
#: reliability; metrics not listed have no sampling model in the long table.
RELIABILITY = {
    "probe_test_acc": ("probe_test_acc", "n_test", None),
    "probe_train_acc": ("probe_train_acc", "n_texts", None),
    "linear_test_acc": ("linear_test_acc", "n_test", None),
    "lora_test_acc": ("lora_test_acc", "n_test", None),
    "lora_gain": ("lora_test_acc", "n_test", "linear_test_acc"),
}
NO_RELIABILITY = ("the long table has no per-text errors: an MSE's sampling noise needs the per-text squared "
                  "errors (or their standard deviation) from linear_sklearn.py")
PER_DATASET = ["dataset_source", "n_texts", "d", "n_test", "num_classes", "label_rank", "in_sample_informative",
               "probe_train_acc", "probe_test_acc", "probe_train_mse", "probe_test_mse", "probe_train_nmse",
               "probe_test_nmse", "linear_test_acc", "lora_test_acc", "lora_gain"]


@dataclass
class Settings:
    """Permutations and bootstrap draws of every test (recorded with the results)."""

    n_perm: int = analysis.N_PERM
    n_perm_lodo: int = 2000
    perm_seed: int = 0
    n_boot: int = 2000


# ------------------------------------------------------------------------------------------------
# Datasets
# ------------------------------------------------------------------------------------------------

def per_dataset(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, dataset) with the per-dataset columns (:data:`PER_DATASET` present); a missing
    ``dataset_source`` is the dataset itself, a missing ``in_sample_informative`` is N >= 2(d + 1)."""
    cols = [c for c in PER_DATASET if c in table]
    out = table.groupby(["model", "dataset"], as_index=False)[cols].first()
    if "dataset_source" not in out:
        out["dataset_source"] = out["dataset"]
    out["dataset_source"] = out["dataset_source"].fillna(out["dataset"])
    if "in_sample_informative" not in out and {"n_texts", "d"} <= set(out.columns):
        out["in_sample_informative"] = out["n_texts"] >= 2 * (out["d"] + 1)
    return out


def _registry_order(names) -> list[str]:
    """Names in the order of the dataset registry (its first dataset of a source is its representative),
    unknown names after them, alphabetically."""
    from ntps.data import list_datasets

    known = {k: i for i, k in enumerate(list_datasets())}
    return sorted(names, key=lambda x: (known.get(x, len(known)), x))


def headline_datasets(datasets, sources: dict) -> list[str]:
    """One dataset per source (``sources``: dataset -> source): the first in registry order; sorted by name."""
    seen, out = set(), []
    for ds in _registry_order(datasets):
        src = sources.get(ds, ds)
        if src not in seen:
            seen.add(src)
            out.append(ds)
    return sorted(out)


def is_in_sample(metric: str) -> bool:
    """An in-sample metric (the probe's fit on its own training texts): uninformative when N < 2(d + 1)."""
    return metric.startswith("probe_train_") or any(c.in_sample and c.metric == metric for c in CLAIMS)


def metric_datasets(info: pd.DataFrame, metric: str, model: str, one_per_source: bool = True
                    ) -> tuple[list[str], dict]:
    """The datasets of ``model`` a metric is tested on -- those with the metric, for an in-sample metric only those
    with N >= 2(d + 1), one per source unless ``one_per_source`` is False -- and those left out (why -> names)."""
    rows = info[info["model"] == model]
    have = rows[rows[metric].notna()] if metric in rows else rows.iloc[:0]
    left = {"without_metric": sorted(set(rows["dataset"]) - set(have["dataset"]))}
    if is_in_sample(metric) and "in_sample_informative" in have:
        ok = ~have["in_sample_informative"].astype(str).str.lower().isin(["false", "0", "0.0"])  # unknown: kept
        left["uninformative_in_sample"] = sorted(have.loc[~ok, "dataset"])
        have = have[ok]
    sources = dict(zip(have["dataset"], have["dataset_source"]))
    chosen = headline_datasets(sources, sources) if one_per_source else sorted(sources)
    left["same_source"] = sorted(set(sources) - set(chosen))
    return chosen, left


# ------------------------------------------------------------------------------------------------
# Families
# ------------------------------------------------------------------------------------------------

def family_scores(scores, family: str) -> list[str]:
    """The score names of a family (names as in an oriented table: ``-ls_mse`` for lower-is-better)."""
    ntps = [s for s in scores if s.lstrip("-").startswith("ntps_") and not s.endswith(AFTER_LORA)]
    if family == "ntps":
        return sorted(ntps)
    if family == "baselines":
        return sorted(s for s in scores if not s.lstrip("-").startswith("ntps_"))
    if family == "all":
        return sorted(s for s in scores if not s.endswith(AFTER_LORA))
    raise ValueError(f"unknown family {family!r}: ntps, baselines or all")


@dataclass
class Family:
    """Every candidate of one model examined for one metric: X (m, n) over ``datasets``."""

    model: str
    metric: str
    datasets: list[str]
    X: np.ndarray
    chance: np.ndarray
    y: np.ndarray
    cells: pd.DataFrame  # (m, 3): score, layer, param value ("fraction" or "k" in column "param")
    skipped: dict


def _pivot(table: pd.DataFrame, model: str, metric: str, cache: dict | None) -> dict:
    """Every score's candidates of one model over the datasets with the metric, pivoted once (and cached):
    ``values``/``chance`` indexed by (score, layer, param value; -1 when missing) × dataset, ``y``, ``param`` per
    score (fraction, else k), the scores with duplicate rows and the datasets whose metric varies."""
    key = (model, metric)
    if cache is not None and key in cache:
        return cache[key]
    t = table.loc[table["model"] == model, [c for c in ("dataset", "score", "value", metric, "layer", "fraction", "k",
                                                        "chance") if c in table]]
    t = t.assign(**{c: np.nan for c in ("layer", "fraction", "k", "chance") if c not in t})
    by_ds = t.groupby("dataset")[metric].agg(["min", "max"])
    param = pd.Series("fraction", index=sorted(t["score"].unique()))
    k_only = t["k"].notna().groupby(t["score"]).any() & ~t["fraction"].notna().groupby(t["score"]).any()
    param[k_only[k_only].index] = "k"
    pv = t["fraction"].where(t["score"].map(param) == "fraction", t["k"])
    t = t.assign(_l=pd.to_numeric(t["layer"]).fillna(-1.0), _p=pd.to_numeric(pv).fillna(-1.0))
    dup = set(t.loc[t.duplicated(["score", "_l", "_p", "dataset"]), "score"])
    wide = t[~t["score"].isin(dup)].set_index(["score", "_l", "_p", "dataset"])[["value", "chance"]].unstack("dataset")
    out = {"values": wide["value"], "chance": wide["chance"], "y": by_ds["min"].dropna(), "param": param,
           "all_datasets": sorted(by_ds.index),
           "duplicates": dup, "varying": sorted(by_ds.index[(by_ds["max"] - by_ds["min"]).abs() > 1e-12])}
    if cache is not None:
        cache[key] = out
    return out


def grid_of(table: pd.DataFrame, model: str, metric: str, score: str, datasets=None, cache: dict | None = None
            ) -> analysis.Grid:
    """The :class:`ntps.analysis.Grid` of one score (what :func:`ntps.analysis.build_grid` gives for its rows),
    restricted to ``datasets`` (default: every dataset with the metric), from a pivot shared by every score
    (``cache``: a dict kept across calls on the same table; it also keeps the grids, which are read only).
    ValueError as build_grid."""
    key = ("grid", model, metric, score, None if datasets is None else tuple(sorted(datasets)))
    if cache is not None and key in cache:
        return cache[key]
    P = _pivot(table, model, metric, cache)
    if P["varying"]:
        raise ValueError(f"metric {metric!r} varies within dataset(s) {P['varying'][:3]} of {model!r}; use a "
                         "per-dataset metric (e.g. probe_train_acc, not a same-layer probe column)")
    if score in P["duplicates"]:
        raise ValueError(f"duplicate (layer, {P['param'][score]}, dataset) rows for model {model!r}, score {score!r}")
    have = list(P["y"].index)
    if not have:
        raise ValueError(f"no dataset of {model!r} has a value of {metric!r}")
    datasets = sorted(have if datasets is None else set(datasets) & set(have))
    if score not in P["values"].index.get_level_values(0):
        raise ValueError(f"no rows of score {score!r} for {model!r}")
    values, chance = (P[k].loc[score].reindex(columns=datasets) for k in ("values", "chance"))
    complete = values.notna().all(axis=1).to_numpy()
    keys = values.index[complete].to_frame(index=False).rename(columns={"_l": "layer", "_p": P["param"][score]})
    grid = analysis.Grid(model=model, metric=metric, datasets=datasets, candidates=keys.replace(-1.0, np.nan),
                         param=P["param"][score], X=values[complete].to_numpy(float),
                         chance=chance[complete].to_numpy(float), y=P["y"].loc[datasets].to_numpy(float), score=score,
                         dropped={"datasets_without_metric": sorted(set(P["all_datasets"]) - set(have)),
                                  "candidates_incomplete": int((~complete).sum())})
    if cache is not None:
        cache[key] = grid
    return grid


def build_family(table: pd.DataFrame, model: str, metric: str, scores, datasets, cache: dict | None = None
                 ) -> Family:
    """Stack the grids (:func:`grid_of`) of ``scores`` on exactly ``datasets``; a score without a complete
    candidate there is skipped (recorded). ValueError when nothing is left."""
    Xs, chances, cells, skipped, y = [], [], [], {}, None
    for score in sorted(scores):
        try:
            grid = grid_of(table, model, metric, score, datasets, cache)
        except ValueError as e:
            skipped[score] = str(e)
            continue
        if grid.datasets != sorted(datasets) or grid.n_candidates == 0:
            skipped[score] = "no candidate with a value on every dataset"
            continue
        Xs.append(grid.X)
        chances.append(grid.chance)
        y = grid.y
        cells.append(grid.candidates.rename(columns={grid.param: "value"}).assign(score=score, param=grid.param))
    if not Xs:
        raise ValueError(f"{model}: no score of the family has values on the {len(datasets)} datasets of {metric}")
    return Family(model=model, metric=metric, datasets=sorted(datasets), X=np.vstack(Xs), chance=np.vstack(chances),
                  y=y, cells=pd.concat(cells, ignore_index=True)[["score", "layer", "param", "value"]],
                  skipped=skipped)


def _cell(fam: Family, i: int) -> dict:
    c = fam.cells.iloc[int(i)]
    return {"score": c["score"], "layer": analysis._num(c["layer"]), c["param"]: analysis._num(c["value"])}


# ------------------------------------------------------------------------------------------------
# One claim
# ------------------------------------------------------------------------------------------------

def verdict_word(p, floor, lodo_p=None, lodo_floor=None, n: int | None = None) -> str:
    """The verdict of :data:`VERDICTS` from a family-wise p, its floor and the LODO null p and floor."""
    if n is not None and n < MIN_DATASETS or p is None or floor is None:
        return "not run"
    if floor >= ALPHA:
        return "untestable"
    if p >= ALPHA:
        return "not supported"
    if lodo_p is None or lodo_floor is None or lodo_floor >= ALPHA or lodo_p >= ALPHA:
        return "argmax only"
    return "supported"


def metric_reliability(info: pd.DataFrame, model: str, metric: str, datasets, settings: Settings) -> dict:
    """Test-retest reliability of ``metric``'s ranking of ``datasets`` (:func:`ntps.analysis.ranking_reliability`
    with a binomial model of each held-out accuracy, :data:`RELIABILITY`); ``{"why": ...}`` when the long
    table has no sampling model for the metric."""
    spec = RELIABILITY.get(metric)
    if spec is None:
        return {"method": None, "why": NO_RELIABILITY}
    acc, n_col, minus = spec
    rows = info[info["model"] == model].set_index("dataset").loc[list(datasets)]
    try:
        draw = analysis.binomial_replicates(rows[acc], rows[n_col],
                                            None if minus is None else (rows[minus], rows[n_col]))
    except (KeyError, ValueError) as e:
        return {"method": None, "why": f"no binomial model ({e})"}
    method = (f"binomial: {acc}" + (f" − {minus}" if minus else "") + f" redrawn with N = {n_col}; median "
              "Spearman r between two independent redraws")
    return {"method": method, **analysis.ranking_reliability(draw, settings.n_boot, settings.perm_seed)}


def evaluate_claim(table: pd.DataFrame, info: pd.DataFrame, claim: Claim, model: str, settings: Settings,
                   datasets=None, lodo_null: bool = True, cache: dict | None = None) -> dict:
    """Every statistic of one claim for one model (the module docstring); JSON-able.

    ``datasets`` overrides :func:`metric_datasets` (the sensitivity checks); without ``lodo_null`` the LODO
    null (the slow part) is skipped.
    """
    chosen, left = metric_datasets(info, claim.metric, model)
    datasets = chosen if datasets is None else sorted(datasets)
    out = {"claim": claim.key, "label": claim.label, "metric": claim.metric, "family": claim.family,
           "in_sample": claim.in_sample, "model": model, "n_datasets": len(datasets), "datasets": datasets,
           "left_out": left, "verdict": "not run"}
    if len(datasets) < MIN_DATASETS:
        out["why"] = f"{len(datasets)} dataset(s) with {claim.metric}; need {MIN_DATASETS}"
        return out
    try:
        fam = build_family(table, model, claim.metric, family_scores(table["score"].unique(), claim.family),
                           datasets, cache)
        y = analysis.metric_sign(claim.metric) * fam.y
        fw = analysis.familywise_test([fam.X], [y], settings.n_perm, settings.perm_seed)
    except ValueError as e:
        out["why"] = str(e)
        return out
    r = fw["r"][0]
    best = analysis._argmax(r)
    out.update({"n_candidates": int(fam.X.shape[0]), "scores": sorted(fam.cells["score"].unique()),
                "skipped_scores": fam.skipped, "r_sel": fw["observed"], "winner": _cell(fam, best),
                "n_tied_argmax": int(np.sum(r >= fw["observed"] - analysis._TOL)), "p": fw["p"],
                "floor": fw["floor"], "exact": fw["exact"], "n_perm": fw["n_perm"], "null_q95": fw["null_q95"],
                "per_score": _per_score(fam, r, fw["adjusted"][0]),
                "selected": [{"dataset": ds, "value": float(fam.X[best, j]),
                              "chance": analysis._num(fam.chance[best, j]), claim.metric: float(fam.y[j])}
                             for j, ds in enumerate(fam.datasets)],
                "reliability": metric_reliability(info, model, claim.metric, fam.datasets, settings)})
    lo = analysis.lodo_test(fam.X, y, settings.n_perm_lodo, settings.perm_seed, null=lodo_null)
    out["lodo"] = {"r": lo["r"], "n_tied": lo["n_tied"].tolist(), "folds_with_ties": int(np.sum(lo["n_tied"] > 1)),
                   "chosen": [_cell(fam, i) for i in lo["chosen"]],
                   **{k: lo.get(k) for k in ("p", "floor", "exact", "n_perm", "null_q95")}}
    out["testable"] = bool(fw["floor"] < ALPHA)
    out["verdict"] = verdict_word(fw["p"], fw["floor"], lo.get("p"), lo.get("floor"), len(datasets))
    return out


def _per_score(fam: Family, r: np.ndarray, adjusted: np.ndarray) -> list[dict]:
    """Each score's own best cell, its r and its family-adjusted p (single-step max-T)."""
    out = []
    for idx in fam.cells.groupby("score", sort=True).indices.values():
        if np.all(np.isnan(r[idx])):
            continue
        i = idx[analysis._argmax(r[idx])]
        out.append({**_cell(fam, i), "r_sel": float(r[i]), "p_family": float(adjusted[i])})
    return sorted(out, key=lambda d: (-d["r_sel"], d["score"]))


def evaluate_claim_joint(table: pd.DataFrame, info: pd.DataFrame, claim: Claim, models, settings: Settings,
                         cache: dict | None = None) -> dict:
    """One family-wise p over every model's family (the datasets every model has, permuted together). Models with
    fewer than MIN_DATASETS datasets for the claim are left out (e.g. a model whose caps leave no dataset with
    N >= 2(d + 1) for an in-sample claim). No LODO: the verdict is "argmax only" at best."""
    per_model = {m: metric_datasets(info, claim.metric, m)[0] for m in models}
    per_model = {m: v for m, v in per_model.items() if len(v) >= MIN_DATASETS}
    models = list(per_model)
    common = sorted(set.intersection(*(set(v) for v in per_model.values()))) if per_model else []
    out = {"claim": claim.key, "label": claim.label, "metric": claim.metric, "model": "all models",
           "models": list(models), "n_datasets": len(common), "datasets": common, "verdict": "not run"}
    if len(models) < 2 or len(common) < MIN_DATASETS:
        out["why"] = f"{len(models)} model(s), {len(common)} common dataset(s)"
        return out
    fams = []
    for m in models:
        try:
            fams.append(build_family(table, m, claim.metric, family_scores(table["score"].unique(), claim.family),
                                     common, cache))
        except ValueError:
            continue
    if len(fams) < 2:
        out["why"] = "fewer than two models have the family on the common datasets"
        return out
    sign = analysis.metric_sign(claim.metric)
    fw = analysis.familywise_test([f.X for f in fams], [sign * f.y for f in fams], settings.n_perm, settings.perm_seed)
    k = int(np.argmax([np.nanmax(r) for r in fw["r"]]))
    out.update({"models": [f.model for f in fams], "n_candidates": int(sum(f.X.shape[0] for f in fams)),
                "r_sel": fw["observed"], "winner": {"model": fams[k].model,
                                                    **_cell(fams[k], analysis._argmax(fw["r"][k]))},
                "p": fw["p"], "floor": fw["floor"], "exact": fw["exact"], "n_perm": fw["n_perm"],
                "null_q95": fw["null_q95"], "testable": bool(fw["floor"] < ALPHA)})
    out["verdict"] = ("untestable" if fw["floor"] >= ALPHA else "argmax only" if fw["p"] < ALPHA
                      else "not supported")
    out["why"] = "joint test: family-wise p only (no LODO across models)"
    return out


# ------------------------------------------------------------------------------------------------
# All claims, and the sensitivity checks
# ------------------------------------------------------------------------------------------------

def analyze_claims(table: pd.DataFrame, settings: Settings, claims=CLAIMS, sources: bool = True) -> dict:
    """Every claim × model, the joint test per claim, the source sensitivity (``sources``). ``table``: an
    oriented long table. Returns ``{"claims": [...], "joint": [...], "sources": [...]}`` (JSON-able)."""
    info, cache = per_dataset(table), {}
    models = sorted(table["model"].unique())
    out = {"claims": [], "joint": [], "sources": []}
    for claim in claims:
        if claim.metric not in table or table[claim.metric].isna().all():
            continue
        for model in models:
            out["claims"].append(evaluate_claim(table, info, claim, model, settings, cache=cache))
        out["joint"].append(evaluate_claim_joint(table, info, claim, models, settings, cache))
        if sources and not claim.in_sample:
            out["sources"] += source_sensitivity(table, info, claim, models, settings, cache)
    return out


def source_sensitivity(table, info, claim: Claim, models, settings: Settings, cache: dict | None = None
                       ) -> list[dict]:
    """The family-wise p with every dataset (both members of a shared source) and with each other member of a
    shared source swapped in for the headline one (no LODO null)."""
    out = []
    for model in models:
        chosen, left = metric_datasets(info, claim.metric, model)
        if not left["same_source"] or len(chosen) < MIN_DATASETS:
            continue
        src = info[info["model"] == model].set_index("dataset")["dataset_source"]
        variants = [("all datasets", chosen + left["same_source"])]
        for alt in left["same_source"]:
            old = next(d for d in chosen if src[d] == src[alt])
            variants.append((f"{alt} for {old}", [alt if d == old else d for d in chosen]))
        for what, datasets in variants:
            res = evaluate_claim(table, info, claim, model, settings, datasets=datasets, lodo_null=False, cache=cache)
            out.append({"claim": claim.key, "model": model, "variant": what, "n_datasets": len(datasets),
                        **{k: res.get(k) for k in ("r_sel", "p", "floor")},
                        "lodo_r": (res.get("lodo") or {}).get("r")})
    return out


def tolerance_sensitivity(main: dict, tables: dict, settings: Settings, claims=CLAIMS) -> dict:
    """The NTPS claims recomputed on long tables made with other rank tolerances (``tables``: label ->
    oriented table); per claim × model the verdict there and whether it differs from ``main``'s."""
    ntps_claims = [c for c in claims if c.family == "ntps"]
    base = {(r["claim"], r["model"]): r for r in main["claims"]}
    rows = []
    for label, t in tables.items():
        for res in analyze_claims(t, settings, ntps_claims, sources=False)["claims"]:
            ref = base.get((res["claim"], res["model"]), {})
            rows.append({"tolerance": label, "claim": res["claim"], "model": res["model"],
                         "n_datasets": res.get("n_datasets"), "headline_n_datasets": ref.get("n_datasets"),
                         "r_sel": res.get("r_sel"),
                         "p": res.get("p"), "floor": res.get("floor"),
                         "lodo_r": (res.get("lodo") or {}).get("r"), "lodo_p": (res.get("lodo") or {}).get("p"),
                         "verdict": res["verdict"], "headline_verdict": ref.get("verdict"),
                         "changed": res["verdict"] != ref.get("verdict")})
    return {"rows": rows, "any_change": any(r["changed"] for r in rows)}


def dropped_directions(tables: dict) -> list[dict]:
    """Per tolerance × model × layer: how many directions of Σ (d − r_U) and of C0 (d − r_V) the rank tolerance
    left out, min and max over the datasets (from the K_sweep rows), and the share of the least-squares fit they
    carried (max over datasets of K_sweep's whitened ``fit_share_dropped`` and ``c0_fit_share_dropped``, where the
    table has them; :func:`ntps.score.fit_share_dropped`)."""
    rows = []
    for label, t in tables.items():
        s = t[t["score"].str.lstrip("-").str.startswith("ntps_") & t["r_U"].notna() & t["r_V"].notna()
              & ~t["score"].str.endswith(AFTER_LORA)] if {"r_U", "r_V", "d"} <= set(t.columns) else t.iloc[:0]
        if s.empty:
            continue
        s = s.assign(sigma=s["d"] - s["r_U"], c0=s["d"] - s["r_V"])
        agg = {"sigma_min": ("sigma", "min"), "sigma_max": ("sigma", "max"), "c0_min": ("c0", "min"),
               "c0_max": ("c0", "max"), "n_datasets": ("dataset", "nunique")}
        for col, name in (("fit_share_dropped", "fit_share_max"), ("c0_fit_share_dropped", "c0_fit_share_max")):
            if col in s and s[col].notna().any():
                agg[name] = (col, "max")
        g = s.groupby(["model", "layer"], as_index=False).agg(**agg)
        rows += g.assign(tolerance=label).to_dict("records")
    return rows
