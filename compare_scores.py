"""How well does each training-free score rank the datasets of a model? NTPS against the baselines.

Inputs, globbed under ``--runs_dir`` (default ``outputs/``), one directory per (model, dataset):

``{runs}/{model}/{dataset}/{split}/scores.csv``            scores.py, one row per layer (required)
``{runs}/{model}/{dataset}/{split}/meta.json``             model name (else the directory name)
``{runs}/{model}/{dataset}/{split}/probes_sklearn.csv``    linear_sklearn.py: layer,split,acc,log_loss,mse
``{runs}/{model}/{dataset}/{linear,lora}/results.json``    ``test_accuracy`` of the linear probe / LoRA

(``{model}``/``{dataset}`` are the slug directories; ``{split}`` is ``--split``, default train.)

Metrics (one value per dataset; ``--metrics``): ``probe_{train,test}_{acc,mse}`` = the sklearn probe at
``--probe_layer`` (default: the largest probed layer, i.e. the final representation, as collect.py),
``lora_gain`` = LoRA − linear test accuracy. Orientation as :func:`ntps.analysis.metric_sign` (SPEC §3):
r = spearman(score, sign · metric), sign = −1 for MSE and LoRA gain, so for ``lora_gain`` a positive r
means a higher score goes with a *smaller* gain (the paper's Fig. 3 convention).

Scores (columns of scores.csv; every score oriented so that higher = predicted better, losses negated):
``logme``, ``h_score``, ``-ls_mse``, ``-ridge_mse``, ``ntps_raw_best``, ``ntps_margin_best`` (candidates:
layers) and ``ntps_raw``, ``ntps_minus_chance``, ``ntps_whitened``, ``-excess`` (candidates: layers ×
the fixed fractions of the ``*_f{F}`` columns). Missing columns are skipped.

For every model × metric × score, with the functions of :mod:`ntps.analysis` (SPEC §5):

- ``r_argmax``: the paper's protocol, the candidate maximising r over all datasets, chosen on the same
  data (optimistic); ``sel_layer``/``sel_fraction`` the chosen candidate;
- ``lodo_r``: leave-one-dataset-out — the candidate chosen without dataset j predicts j; r of the
  held-out predictions (needs >= 4 datasets);
- ``perm_p``: permutation p-value repeating the *whole* selection on shuffled metrics, ``null_q95`` the
  95th percentile of that null maximum;
- ``r_fixed``/``p_fixed``: the candidate fixed in advance — the last layer common to all datasets and,
  for fraction scores, the median fixed fraction — with its ordinary permutation p-value.

Writes ``--out`` (default ``{runs}/compare_scores.csv``) plus ``.md`` and ``.json`` beside it, sorted by
model, metric, then ``lodo_r`` (best first), and prints the markdown tables. Pieces that are missing or
malformed are reported and skipped; with fewer than 4 datasets a model's correlations are flagged as
meaningless.

    python compare_scores.py --runs_dir outputs
    python compare_scores.py --metrics probe_train_acc,probe_test_acc,lora_gain --n_perm 10000
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ntps import analysis
from ntps.cli import DEFAULT_OUTPUT_DIR, HelpFormatter
from ntps.io import atomic_path, environment_info, write_json

#: (displayed name, scores.csv column, orientation): candidates = layers.
LAYER_SCORES = [("logme", "logme", 1), ("h_score", "h_score", 1), ("-ls_mse", "ls_mse", -1),
                ("-ridge_mse", "ridge_mse", -1), ("ntps_raw_best", "ntps_raw_best", 1),
                ("ntps_margin_best", "ntps_margin_best", 1)]
#: (displayed name, column prefix before ``_f{F}``, orientation): candidates = layers x fractions.
FRACTION_SCORES = [("ntps_raw", "ntps_raw", 1), ("ntps_minus_chance", "ntps_minus_chance", 1),
                   ("ntps_whitened", "ntps_whitened", 1), ("-excess", "excess", -1)]
METRICS = ["probe_train_acc", "probe_test_acc", "probe_train_mse", "probe_test_mse", "linear_test_acc", "lora_gain"]
DEFAULT_METRICS = ["probe_train_acc", "lora_gain"]
MIN_DATASETS = 4  # below this a rank correlation (and LODO) is meaningless
COLUMNS = ["model", "metric", "score", "n_datasets", "n_candidates", "lodo_r", "r_argmax", "perm_p",
           "null_q95", "sel_layer", "sel_fraction", "r_fixed", "p_fixed", "fixed_layer", "fixed_fraction",
           "note"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--runs_dir", default=DEFAULT_OUTPUT_DIR, help="root of the run outputs")
    p.add_argument("--split", default="train", help="split directory holding scores.csv and the probes")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                   help=f"comma-separated metrics among {METRICS}; those without data are skipped")
    p.add_argument("--probe_layer", default="last",
                   help="layer of probes_sklearn.csv used as the probe metric: 'last' (largest probed) "
                        "or an int")
    p.add_argument("--models", default=None, help="comma-separated model names or slugs; None = all")
    p.add_argument("--n_perm", type=int, default=1000, help="permutations of the selection-aware test")
    p.add_argument("--seed", type=int, default=0, help="seed of the permutations")
    p.add_argument("--out", default=None, help="output CSV; None = {runs_dir}/compare_scores.csv")
    return p.parse_args(argv)


# --------------------------------------------------------------------------------------------
# Reading the runs
# --------------------------------------------------------------------------------------------

def _frac_re(prefix: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(prefix)}_f(?P<f>\d+(?:\.\d*)?(?:e-?\d+)?)$")


def score_long(df: pd.DataFrame) -> pd.DataFrame:
    """scores.csv rows -> long table ``layer, fraction, score, value`` (values oriented, higher = better)."""
    parts = []
    layer = pd.to_numeric(df["layer"], errors="coerce")
    for name, col, sign in LAYER_SCORES:
        if col in df:
            parts.append(pd.DataFrame({"layer": layer, "fraction": np.nan, "score": name,
                                       "value": sign * pd.to_numeric(df[col], errors="coerce")}))
    for name, prefix, sign in FRACTION_SCORES:
        pat = _frac_re(prefix)
        for col in df.columns:
            m = pat.match(col)
            if m:
                parts.append(pd.DataFrame({"layer": layer, "fraction": float(m["f"]), "score": name,
                                           "value": sign * pd.to_numeric(df[col], errors="coerce")}))
    if not parts:
        return pd.DataFrame(columns=["layer", "fraction", "score", "value"])
    return pd.concat(parts, ignore_index=True)


def _read_json(path: Path, say) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        say(f"{path}: unreadable JSON ({e}); skipped")
        return {}
    if not isinstance(obj, dict):
        say(f"{path}: not a JSON object; skipped")
        return {}
    return obj


def probe_metrics(path: Path, probe_layer: str, say) -> dict:
    """``probe_{split}_{acc,mse}`` at the chosen layer of probes_sklearn.csv ({} when unusable)."""
    if not path.is_file():
        say(f"{path}: missing (run linear_sklearn.py); no probe metrics for this dataset")
        return {}
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        say(f"{path}: unreadable CSV ({e}); skipped")
        return {}
    if not {"layer", "split"} <= set(df.columns) or df.empty:
        say(f"{path}: needs columns layer, split and at least one row; skipped")
        return {}
    layer = df["layer"].max() if probe_layer == "last" else int(probe_layer)
    at = df[df["layer"] == layer]
    if at.empty:
        say(f"{path}: layer {layer} not probed (probed: {sorted(df['layer'].unique().tolist())}); skipped")
        return {}
    out = {"probe_layer": int(layer)}
    for split in ("train", "test"):
        row = at[at["split"] == split]
        for m in ("acc", "mse"):
            if len(row) and m in row:
                out[f"probe_{split}_{m}"] = float(pd.to_numeric(row[m], errors="coerce").iloc[-1])
    return out


def lora_metrics(ds_dir: Path, say) -> dict:
    """``linear_test_acc``, ``lora_test_acc`` and ``lora_gain`` when both results.json exist."""
    out = {}
    for name in ("linear", "lora"):
        path = ds_dir / name / "results.json"
        if path.is_file():
            acc = _read_json(path, say).get("test_accuracy")
            try:
                out[f"{name}_test_acc"] = float(acc)
            except (TypeError, ValueError):
                say(f"{path}: test_accuracy is not a number ({acc!r}); skipped")
    if len(out) == 2:
        out["lora_gain"] = out["lora_test_acc"] - out["linear_test_acc"]
    return out


def load_runs(runs_dir: str | Path, split: str = "train", probe_layer: str = "last",
              say=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores, metrics): the long score table with ``model, dataset`` and one metrics row per pair.

    ``model`` is the model name of meta.json (else the directory name), ``dataset`` the dataset
    directory name (unique within a model by construction).
    """
    runs_dir = Path(runs_dir)
    say = say or (lambda msg: print(f"[compare_scores] {msg}", file=sys.stderr))
    scores, metrics = [], []
    for path in sorted(runs_dir.glob(f"*/*/{split}/scores.csv")):
        split_dir = path.parent
        ds_dir = split_dir.parent
        try:
            df = pd.read_csv(path)
        except (OSError, ValueError) as e:
            say(f"{path}: unreadable CSV ({e}); skipped")
            continue
        if "layer" not in df or df.empty:
            say(f"{path}: no 'layer' column or no rows; skipped")
            continue
        meta = _read_json(split_dir / "meta.json", say) if (split_dir / "meta.json").is_file() else {}
        model, dataset = str(meta.get("model") or ds_dir.parent.name), ds_dir.name
        long = score_long(df)
        if long.empty:
            say(f"{path}: no known score columns; skipped")
            continue
        long["model"], long["dataset"] = model, dataset
        scores.append(long)
        metrics.append({"model": model, "model_slug": ds_dir.parent.name, "dataset": dataset,
                        **probe_metrics(split_dir / "probes_sklearn.csv", probe_layer, say),
                        **lora_metrics(ds_dir, say)})
    if not scores:
        return (pd.DataFrame(columns=["model", "dataset", "layer", "fraction", "score", "value"]),
                pd.DataFrame(columns=["model", "model_slug", "dataset"]))
    return pd.concat(scores, ignore_index=True), pd.DataFrame(metrics)


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------

def _num(v):
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) else (int(v) if v.is_integer() and abs(v) < 2**53 else v)


def evaluate(rows: pd.DataFrame, metric: str, n_perm: int = 1000, seed: int = 0) -> dict:
    """Argmax protocol, LODO, selection-aware permutation test and the fixed candidate for one score.

    ``rows``: the long rows of one model and one score with the metric as a column.
    """
    tidy = rows.rename(columns={"value": "ntps"}).assign(chance=np.nan)
    grid = analysis.build_grid(tidy, metric)
    sign = analysis.metric_sign(metric)
    n, n_cand = len(grid.datasets), grid.n_candidates
    out = {"n_datasets": n, "n_candidates": n_cand}
    notes = []
    if grid.dropped.get("candidates_incomplete"):
        notes.append(f"{grid.dropped['candidates_incomplete']} candidate(s) missing for some dataset")
    if n_cand == 0 or n < 3:
        notes.append(f"too little data ({n} datasets, {n_cand} complete candidates)")
        return {**out, "note": "; ".join(notes)}
    if n < MIN_DATASETS:
        notes.append(f"only {n} datasets: correlations meaningless")
    X, y = grid.ntps, grid.y
    try:
        c, r, _ = analysis.select_argmax(X, y, sign)
    except ValueError as e:
        return {**out, "note": "; ".join([*notes, str(e)])}
    cand = grid.candidates.iloc[c]
    out.update({"r_argmax": r, "sel_layer": _num(cand["layer"]), "sel_fraction": _num(cand[grid.param])})
    out["lodo_r"] = analysis.lodo(X, y, sign)["r"]
    try:
        perm = analysis.permutation_test(X, y, sign, n_perm=n_perm, seed=seed)
        out.update({"perm_p": perm["p"], "null_q95": perm["null_q95"]})
    except ValueError as e:
        notes.append(str(e))
    # Fixed in advance: the last layer (the probes' layer) and the median fixed fraction.
    layers = grid.candidates["layer"].to_numpy(float)
    fracs = grid.candidates[grid.param].to_numpy(float)
    at_last = layers == np.nanmax(layers)
    f_avail = np.unique(fracs[at_last & ~np.isnan(fracs)])
    f_fixed = f_avail[(len(f_avail) - 1) // 2] if len(f_avail) else np.nan
    pick = np.flatnonzero(at_last & ((fracs == f_fixed) | (np.isnan(fracs) & np.isnan(f_fixed))))
    if pick.size:
        i = int(pick[0])
        out.update({"fixed_layer": _num(layers[i]), "fixed_fraction": _num(f_fixed),
                    "r_fixed": analysis.spearman(X[i], sign * y)})
        try:
            out["p_fixed"] = analysis.permutation_test(X[i:i + 1], y, sign, n_perm=n_perm, seed=seed)["p"]
        except ValueError:
            pass
    out["note"] = "; ".join(notes)
    return out


def compare(scores: pd.DataFrame, metrics: pd.DataFrame, metric_names, n_perm: int = 1000, seed: int = 0,
            say=None) -> pd.DataFrame:
    """The result table (COLUMNS), one row per model x metric x score, sorted by model, metric, -lodo_r."""
    say = say or (lambda msg: print(f"[compare_scores] {msg}", file=sys.stderr))
    rows = []
    for model in sorted(scores["model"].unique()):
        mrows = metrics[metrics["model"] == model]
        for metric in metric_names:
            have = mrows.dropna(subset=[metric]) if metric in mrows else mrows.iloc[:0]
            if len(have) < 3:
                say(f"{model}: {metric} available for {len(have)}/{len(mrows)} dataset(s); "
                    "need >= 3, skipped")
                continue
            if len(have) < MIN_DATASETS:
                say(f"WARNING {model}: {metric} for only {len(have)} datasets: rank correlations over fewer "
                    f"than {MIN_DATASETS} points are meaningless (LODO undefined)")
            sub = scores[(scores["model"] == model) & scores["dataset"].isin(have["dataset"])]
            sub = sub.merge(have[["dataset", metric]], on="dataset")
            for score in sub["score"].unique():
                part = sub[sub["score"] == score].drop(columns="score")
                try:
                    res = evaluate(part, metric, n_perm=n_perm, seed=seed)
                except ValueError as e:
                    res = {"note": str(e)}
                    say(f"{model}/{metric}/{score}: skipped: {e}")
                rows.append({"model": model, "metric": metric, "score": score, **res})
    table = pd.DataFrame(rows, columns=COLUMNS)
    if table.empty:
        return table
    table["_lodo"] = table["lodo_r"].astype(float).fillna(-np.inf)
    table["_arg"] = table["r_argmax"].astype(float).fillna(-np.inf)
    table = table.sort_values(["model", "metric", "_lodo", "_arg"], ascending=[True, True, False, False],
                              kind="stable")
    return table.drop(columns=["_lodo", "_arg"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------------------------

def _cell(v, spec):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, spec) if isinstance(v, (int, float, np.number)) else str(v)


def markdown(table: pd.DataFrame, n_perm: int) -> str:
    """One markdown table per model x metric."""
    show = [("score", "s"), ("n_datasets", "d"), ("n_candidates", "d"), ("lodo_r", ".2f"),
            ("r_argmax", ".2f"), ("perm_p", ".3f"), ("null_q95", ".2f"), ("sel_layer", "g"),
            ("sel_fraction", "g"),
            ("r_fixed", ".2f"), ("p_fixed", ".3f"), ("note", "s")]
    blocks = []
    for (model, metric), part in table.groupby(["model", "metric"], sort=False):
        sign = analysis.metric_sign(metric)
        lines = [f"### {model} — r = spearman(score, {'−' if sign < 0 else ''}{metric})", "",
                 "| " + " | ".join(c for c, _ in show) + " |", "|" + "|".join("---" for _ in show) + "|"]
        for _, r in part.iterrows():
            lines.append("| " + " | ".join(_cell(r[c], s) for c, s in show) + " |")
        blocks.append("\n".join(lines))
    legend = ("lodo_r: leave-one-dataset-out (honest); r_argmax: the paper's protocol, best candidate "
              f"chosen on the same data (optimistic); perm_p: {n_perm} permutations repeating the whole "
              "selection, null_q95 its 95th percentile; r_fixed/p_fixed: last layer (and median fixed "
              "fraction) fixed in advance.")
    return "\n\n".join(blocks + [legend])


def main(args) -> pd.DataFrame:
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise SystemExit(f"compare_scores.py: runs directory {runs_dir} does not exist")
    metric_names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown or not metric_names:
        raise SystemExit(f"compare_scores.py: unknown metric(s) {unknown}; choose among {METRICS}")
    if args.probe_layer != "last":
        try:
            int(args.probe_layer)
        except ValueError as e:
            raise SystemExit("compare_scores.py: --probe_layer must be 'last' or an int, "
                             f"got {args.probe_layer!r}") from e
    messages = []

    def say(msg):
        messages.append(msg)
        print(f"[compare_scores] {msg}", file=sys.stderr)

    scores, metrics = load_runs(runs_dir, args.split, args.probe_layer, say)
    if args.models:
        keep = {m.strip() for m in args.models.split(",")}
        sel = metrics["model"].isin(keep) | metrics["model_slug"].isin(keep)
        metrics = metrics[sel]
        scores = scores[scores["model"].isin(metrics["model"])]
    if scores.empty:
        raise SystemExit(f"compare_scores.py: no */*/{args.split}/scores.csv under {runs_dir} "
                         f"(run scores.py on each statistics artifact first)")
    n_pairs = metrics.groupby("model")["dataset"].nunique()
    for model, n in n_pairs.items():
        print(f"[compare_scores] {model}: {n} dataset(s)", file=sys.stderr)
    table = compare(scores, metrics, metric_names, n_perm=args.n_perm, seed=args.seed, say=say)
    out = Path(args.out) if args.out else runs_dir / "compare_scores.csv"
    md = markdown(table, args.n_perm) if len(table) else "no model had enough datasets with a metric"
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    with atomic_path(out.with_suffix(".md")) as tmp:
        tmp.write_text(md + "\n")
    write_json(out.with_suffix(".json"), {
        "settings": {"runs_dir": str(runs_dir), "split": args.split, "metrics": metric_names,
                     "probe_layer": args.probe_layer, "n_perm": args.n_perm, "seed": args.seed},
        "metrics_per_dataset": metrics.replace({np.nan: None}).to_dict("records"),
        "rows": table.replace({np.nan: None}).to_dict("records"), "messages": messages,
        "environment": environment_info()})
    print(md)
    print(f"\n[compare_scores] wrote {out} (+ .md, .json): {len(table)} rows")
    return table


if __name__ == "__main__":
    main(parse_args())
