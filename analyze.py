"""Per-model correlation analysis of NTPS against downstream metrics (SPEC §3, §5).

For each model (and each order/variant present, unless filtered) and each metric:

(a) the paper's protocol -- the (layer, f) maximising spearman(NTPS, sign * metric) over the
    datasets, chosen on the same data (sign = -1 for MSE/log-loss/LoRA gain, see ntps.analysis);
(b) leave-one-dataset-out -- (layer, f) chosen without the held-out dataset, its NTPS used as
    the prediction, Spearman of the held-out predictions with the metric;
(c) a permutation test that repeats the whole argmax selection on metrics shuffled across
    datasets: p = (1 + #{null >= observed}) / (1 + n_perm);
(d) the layer x f heat map of the correlation (PDF/PNG per model and metric);
(e) the NTPS at the selected (layer, f) next to its chance level k_V / d, per dataset.

On the authors' figure data (``--input fig_plot/data/fig2_1.json`` etc.) there is a single
candidate per model -- they published only the selected values -- so only (a) and (e) apply
(without chance: not published); the script says so.

    python analyze.py --csv outputs/collected.csv --order desc --variant raw --out_dir outputs/analysis
    python analyze.py --csv outputs/collected.csv --metric probe_train_acc lora_gain --n_perm 10000
    python analyze.py --input fig_plot/data/fig3.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ntps import analysis
from ntps.io import atomic_path, slugify, write_json

DEFAULT_METRICS = list(analysis.FIGURE_METRICS.values())


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="tidy table from collect.py")
    src.add_argument("--input", type=Path, help="the authors' figure JSON (fig2_1/fig2_2/fig3)")
    p.add_argument("--metric", nargs="+", default=None,
                   help=f"metric column(s); default: those of {DEFAULT_METRICS} present with data")
    p.add_argument("--sign", type=int, choices=[-1, 1], default=None,
                   help="orientation of the metric (default: -1 for mse/loss/gain names, else +1)")
    p.add_argument("--models", nargs="+", default=None, help="only these models")
    p.add_argument("--order", default=None, help="only this eigenvector order (desc/asc)")
    p.add_argument("--variant", default=None, help="only this NTPS variant")
    p.add_argument("--unique_only", action="store_true",
                   help="only candidates whose subspaces are uniquely defined (SPEC §2.0)")
    p.add_argument("--n_perm", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out_dir", type=Path, default=Path("outputs/analysis"))
    p.add_argument("--no_plots", action="store_true", help="skip the heat maps")
    return p.parse_args(argv)


def load(args) -> tuple[pd.DataFrame, str]:
    if args.input is not None:
        return analysis.paper_table(args.input), "paper"
    table = pd.read_csv(args.csv)
    for col, want in (("order", args.order), ("variant", args.variant)):
        if want is not None and col in table:
            table = table[table[col].astype(str) == str(want)]
    if args.unique_only and "unique" in table:
        table = table[table["unique"].astype(str).str.lower().isin(["true", "1"])]
    return table, "csv"


def groups(table: pd.DataFrame):
    """(label, rows) per model x order x variant present."""
    keys = [c for c in ("model", "order", "variant") if c in table and table[c].notna().any()]
    for key, rows in table.groupby(keys, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        yield dict(zip(keys, key)), rows


def main(args):
    t0 = time.perf_counter()
    table, source = load(args)
    if args.models:
        table = table[table["model"].isin(args.models)]
    if table.empty:
        raise SystemExit("no rows to analyse (check --models/--order/--variant)")
    metrics = args.metric or [m for m in DEFAULT_METRICS if m in table and table[m].notna().any()]
    missing = [m for m in metrics if m not in table]
    if missing or not metrics:
        cols = [c for c in table.columns if c not in ("model", "dataset", "layer", "fraction", "k")]
        raise SystemExit(f"metric column(s) {missing or DEFAULT_METRICS} not in the table; columns: {cols}")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    all_results = {}
    for metric in metrics:
        sign = args.sign if args.sign is not None else analysis.metric_sign(metric)
        results, selected_rows = [], []
        for key, rows in groups(table):
            try:
                grid = analysis.build_grid(rows, metric)
                if len(grid.datasets) < 3:
                    raise ValueError(f"{len(grid.datasets)} dataset(s) with {metric}: no rank correlation")
            except ValueError as e:
                print(f"[{key}] {metric}: skipped: {e}", file=sys.stderr)
                continue
            try:
                res = analysis.analyze_grid(grid, sign=sign, n_perm=args.n_perm, seed=args.seed)
            except ValueError as e:  # e.g. a metric equal on every dataset (saturated in-sample accuracy)
                print(f"[{key}] {metric}: skipped: {e}", file=sys.stderr)
                continue
            res.update({k: v for k, v in key.items() if k != "model"})
            results.append(res)
            for row in res.get("per_dataset", []):
                selected_rows.append({**key, "layer": res.get("layer"), grid.param: res.get(grid.param),
                                      **row})
            if not args.no_plots and grid.n_candidates > 1 and "error" not in res:
                plot_heatmap(grid, res, key, args.out_dir)
        all_results[metric] = results
        print(report(metric, sign, results, source))
        if selected_rows:
            with atomic_path(args.out_dir / f"selected_{metric}.csv") as tmp:
                pd.DataFrame(selected_rows).to_csv(tmp, index=False)
    write_json(args.out_dir / "analysis.json", {
        "source": str(args.csv or args.input), "n_perm": args.n_perm, "seed": args.seed,
        "results": {m: [{k: v for k, v in r.items() if k != "r_all"} for r in rs]
                    for m, rs in all_results.items()}})
    print(f"\nwrote {args.out_dir}/analysis.json, selected_*.csv"
          f"{'' if args.no_plots else ', heatmap_*.pdf/png'} ({time.perf_counter() - t0:.1f} s)")
    return all_results


def _f(v, spec):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return format(v, spec)


def report(metric: str, sign: int, results: list[dict], source: str) -> str:
    how = f"spearman(NTPS, {'-' if sign < 0 else ''}{metric})"
    lines = ["", f"=== {metric}: r = {how} ==="]
    single = [r for r in results if r.get("n_candidates") == 1]
    if single:
        why = ("the authors published only the selected NTPS per (model, dataset), and no chance level"
               if source == "paper"
               else "only one (layer, f) in the table")
        lines.append(f"NOTE: {len(single)}/{len(results)} group(s) have a single (layer, f) candidate "
                     f"({why}): (a) is the correlation at that candidate and (e) the per-dataset table; "
                     f"(b) LODO, (c) the selection-aware permutation test and (d) the heat map need the "
                     f"full layer x f sweep and are not applicable.")
    lines.append(f"{'group':<34} {'n_ds':>4} {'cands':>5} {'layer':>5} {'f/k':>6} {'r_sel':>6} "
                 f"{'perm_p':>7} {'null95':>6} {'LODO_r':>6}")
    for r in results:
        name = " ".join(str(r.get(k)) for k in ("model", "order", "variant") if r.get(k) is not None)
        if "error" in r:
            lines.append(f"{name:<34} {r['error']}")
            continue
        lines.append(f"{name:<34} {r['n_datasets']:>4} {r['n_candidates']:>5} {_f(r['layer'], 'g'):>5} "
                     f"{_f(r.get(r['param']), 'g'):>6} {r['r_argmax']:>6.2f} {_f(r['perm_p'], '.3f'):>7} "
                     f"{_f(r['null_q95'], '.2f'):>6} {_f(r['lodo_r'], '.2f'):>6}")
    lines.append("r_sel: argmax protocol (optimistic); perm_p: the whole selection repeated on shuffled "
                 "metrics; null95: 95th percentile of that null; LODO_r: leave-one-dataset-out")
    for r in results:
        if "per_dataset" not in r:
            continue
        name = " ".join(str(r.get(k)) for k in ("model", "order", "variant") if r.get(k) is not None)
        where = f"layer {_f(r['layer'], 'g')}, {r['param']} {_f(r.get(r['param']), 'g')}"
        lines.append(f"\n(e) {name} at {where}:")
        lines.append(f"  {'dataset':<44} {'NTPS':>7} {'chance':>7} {'excess':>7} {metric:>16}")
        for row in r["per_dataset"]:
            lines.append(f"  {row['dataset']:<44} {row['ntps']:>7.4f} {_f(row['chance'], '.4f'):>7} "
                         f"{_f(row['ntps_minus_chance'], '+.4f'):>7} {row[metric]:>16.4f}")
    return "\n".join(lines)


def plot_heatmap(grid: analysis.Grid, res: dict, key: dict, out_dir: Path) -> list[Path]:
    """(d): the correlation of every (layer, f) candidate, the argmax starred."""
    from ntps import plotting

    plotting.setup()
    import matplotlib.pyplot as plt

    mat, layers, params = analysis.correlation_map(grid, res["r_all"])
    li = int(np.searchsorted(layers, res["layer"])) if res["layer"] is not None else 0
    pv = res.get(grid.param)
    pi = int(np.searchsorted(params, pv)) if pv is not None else 0
    fig, ax = plt.subplots(figsize=(1.2 + 0.28 * len(params), 1.2 + 0.16 * len(layers)),
                           constrained_layout=True)
    plotting.heatmap(ax, mat, [int(v) if float(v).is_integer() else v for v in layers], list(params),
                     mark=(li, pi), colorbar_label=f"spearman(NTPS, {'-' if res['sign'] < 0 else ''}metric)")
    ax.set_xlabel(grid.param)
    ax.set_ylabel("layer (0 = embeddings)")
    ax.set_title(f"{grid.model.split('/')[-1]} · {grid.metric}\n★ r={res['r_argmax']:.2f}, "
                 f"perm p={_f(res['perm_p'], '.3f')}, LODO r={_f(res['lodo_r'], '.2f')}", fontsize=8)
    stem = "heatmap_" + "_".join([grid.metric, slugify(grid.model)] +
                                 [str(v) for k, v in key.items() if k != "model"])
    return plotting.save(fig, out_dir, stem)


if __name__ == "__main__":
    main(parse_args())
