"""Does a training-free score rank the datasets of a model like a downstream metric? (SPEC §3, §5)

Every score of collect.py's long table -- the NTPS variants and the baselines alike -- goes through
the same functions of :mod:`ntps.analysis`. Scores where lower is better (``ls_mse``, ``ridge_mse``,
``*_excess``) are negated first and shown as ``-name``. For each model × metric × score:

(a) the paper's protocol -- the candidate (layer, f) maximising r = spearman(score, sign * metric)
    over the datasets, chosen on the same data (sign = -1 for MSE/log-loss/LoRA gain);
(b) leave-one-dataset-out -- the candidate chosen without the held-out dataset predicts it; r of
    the held-out predictions (needs >= 4 datasets);
(c) a permutation test that repeats the whole argmax selection on metrics shuffled across
    datasets: p = (1 + #{null >= observed}) / (1 + n_perm), and the 95th percentile of that null;
(d) for the NTPS sweeps (the scores with a chance level): the layer x f heat map of r;
(e) the score at the selected candidate next to its chance level k_V / d, per dataset;
and r / ordinary permutation p at the candidate fixed in advance (last layer, lower-median fraction);
(f) ``p_family``: each score's r_argmax against the null of the maximum over *every* score × layer × f of
the model for that metric (Westfall-Young; the p to quote when scores are compared).
Datasets: those with the metric, one per source (``dataset_source``; ``--all_datasets`` keeps all).
Permutation tests enumerate all n! orders when n! <= 10^5, else draw ``--n_perm``.

On a long table (not the authors' data) it also tests the paper's claims (:mod:`ntps.claims`): one family per
claim (every NTPS variant × layer × f; every baseline × layer), one family-wise p with its floor, LODO r with
its own null, the test-retest reliability of the metric's ranking, and a verdict; ``--tolerance LABEL=CSV`` adds
the same on tables computed with other rank tolerances (does a verdict change?).

``--from DIR`` regenerates a committed report directory (``runs/report.py`` wrote it): from
``DIR/collected.csv.gz``, ``DIR/collected_*.csv.gz`` (other tolerances), ``DIR/run.json`` (the run's command,
environment and these settings), ``DIR/lora.csv`` and ``DIR/timings.csv`` it rewrites ``DIR/analysis.json``,
``DIR/REPORT.md`` and the tables beside it -- byte for byte the committed ones.

Writes into ``{output_dir}/analysis/``: ``analysis.json`` (every result, the settings and the
messages), ``ranking.csv`` and ``ranking.md`` (one row per model × metric × score, sorted by LODO r:
which score tracks the metric best), ``selected_{metric}.csv`` ((e) for every score) and
``heatmap_{metric}_{model}_{score}.pdf/png``; prints the markdown ranking. A metric known for fewer
than 3 datasets of a model is skipped; with fewer than 4 the correlations are flagged meaningless.

On the authors' figure data (``--input fig_plot/data/fig2_1.json`` etc.) there is a single
candidate per model -- they published only the selected values -- so only (a) and (e) apply
(without chance: not published); the script says so.

    python analyze.py                                       # outputs/collected.csv -> outputs/analysis/
    python analyze.py --output_dir outputs/offline --metric probe_test_acc lora_gain --n_perm 10000
    python analyze.py --score ntps_raw_descending logme --metric probe_train_acc
    python analyze.py --input fig_plot/data/fig3.json
    python analyze.py --from results/offline/2026-12           # regenerate a committed report
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ntps import analysis, claims, cli
from ntps.io import atomic_path, environment_info, slugify, write_json
from ntps.report import fmt, json_ready, markdown_table

log = logging.getLogger(__name__)

DEFAULT_METRICS = list(analysis.FIGURE_METRICS.values())
RANKING_COLUMNS = ["model", "metric", "score", "n_datasets", "n_candidates", "lodo_r", "r_argmax", "perm_p",
                   "perm_floor", "p_family", "null_q95", "sel_layer", "sel_fraction", "n_tied_argmax", "r_fixed",
                   "p_fixed", "fixed_layer", "fixed_fraction", "note"]
#: Ranking columns shown in the markdown tables, with their number format.
SHOWN = [("score", "s"), ("n_datasets", "d"), ("n_candidates", "d"), ("lodo_r", ".2f"), ("r_argmax", ".2f"),
         ("perm_p", ".3f"), ("perm_floor", ".3f"), ("p_family", ".3f"), ("null_q95", ".2f"), ("sel_layer", "d"),
         ("sel_fraction", "g"), ("r_fixed", ".2f"), ("p_fixed", ".3f"), ("note", "s")]


def parse_args(argv=None):
    p = cli.parser("analyze.py", __doc__)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--csv", type=Path, default=None,
                     help="long table from collect.py (default: {output_dir}/collected.csv)")
    src.add_argument("--input", type=Path, default=None, help="the authors' figure JSON (fig2_1/fig2_2/fig3)")
    src.add_argument("--from", dest="from_dir", type=Path, default=None,
                     help="regenerate the committed report directory DIR (REPORT.md, analysis.json) from its files, "
                          "with the settings recorded in DIR/run.json (the other options are ignored)")
    cli.add_output_args(p, help="output root; results go to {output_dir}/analysis/", overwrite=None)
    p.add_argument("--metric", nargs="+", default=None,
                   help=f"metric column(s); default: those of {DEFAULT_METRICS} present with data")
    p.add_argument("--score", nargs="+", default=None, help="only these scores (names of collect.py); default all")
    p.add_argument("--sign", type=int, choices=[-1, 1], default=None,
                   help="orientation of the metric (default: -1 for mse/loss/gain names, else +1)")
    p.add_argument("--models", nargs="+", default=None, help="only these models")
    p.add_argument("--unique_only", action="store_true",
                   help="only candidates whose subspaces are uniquely defined (SPEC §2.0)")
    p.add_argument("--n_perm", type=int, default=analysis.N_PERM,
                   help="permutation draws of the selection-aware tests (all n! when n! <= 10^5)")
    p.add_argument("--n_perm_lodo", type=int, default=claims.Settings.n_perm_lodo,
                   help="permutation draws of the LODO null of each claim")
    p.add_argument("--n_boot", type=int, default=claims.Settings.n_boot, help="draws of the reliability bootstrap")
    p.add_argument("--perm_seed", type=int, default=0, help="seed of the permutations")
    p.add_argument("--all_datasets", action="store_true",
                   help="per-score ranking on every dataset (default: one per source)")
    p.add_argument("--tolerance", nargs="+", default=[], metavar="LABEL=CSV",
                   help="long tables from K_sweep runs with other rank tolerances, e.g. rcond_x10=outputs/x10.csv")
    p.add_argument("--no_plots", action="store_true", help="skip the heat maps")
    return cli.parse(p, argv)


def load(args) -> tuple[pd.DataFrame, str]:
    """The long table (filtered by --models/--score/--unique_only) and its source kind."""
    if args.input is not None:
        table, source = analysis.paper_table(args.input), "paper"
    else:
        table, source = pd.read_csv(args.csv or Path(args.output_dir) / "collected.csv", low_memory=False), "csv"
    return prepare(table, args), source


def prepare(table: pd.DataFrame, args) -> pd.DataFrame:
    """Filter a long table by --models/--score/--unique_only and orient its scores (higher = better)."""
    if args.models:
        table = table[table["model"].isin(args.models)]
    if args.score:
        table = table[table["score"].isin(args.score)]
    if args.unique_only:
        table = analysis.unique_only(table)
    if table.empty:
        raise ValueError("no rows to analyse: run K_sweep.py / scores.py on the statistics artifacts, then "
                         "collect.py (and check --models/--score)")
    return analysis.orient_scores(table)


def metrics_of(args, table: pd.DataFrame) -> list[str]:
    metrics = args.metric or [m for m in DEFAULT_METRICS if m in table and table[m].notna().any()]
    missing = [m for m in metrics if m not in table]
    if missing or not metrics:
        cols = [c for c in table.columns if c not in ("model", "dataset", "layer", "fraction", "k", "score", "value")]
        raise ValueError(f"metric column(s) {missing or DEFAULT_METRICS} not in the table; columns: {cols}")
    return metrics


def evaluate(table: pd.DataFrame, metric: str, sign: int, args, say, plot_dir: Path | None = None,
             plot_scores=None) -> list[dict]:
    """:func:`ntps.analysis.analyze_grid` for every model × score with the metric on >= 3 datasets (one per
    source unless ``args.all_datasets``), each with ``p_family`` (module docstring, (f)); heat maps of the
    sweeps (``plot_scores``: only these) into ``plot_dir`` unless it is None."""
    results = []
    for model, rows in table.groupby("model", sort=True):
        per_ds = rows.groupby("dataset")[metric].first()
        n = int(per_ds.notna().sum())
        if n < 3:
            say(f"{model}: {metric} available for {n}/{len(per_ds)} dataset(s); need >= 3, skipped")
            continue
        datasets = _datasets(rows, metric, args, say)
        if len(datasets) < analysis.MIN_DATASETS:
            say(f"{model}: {metric} for only {len(datasets)} datasets: rank correlations over fewer than "
                f"{analysis.MIN_DATASETS} points are meaningless (LODO undefined)", logging.WARNING)
        cache = {}
        family = _family_null(rows, model, metric, sign, args, datasets, cache)
        for score in sorted(rows["score"].unique()):
            try:
                grid = claims.grid_of(rows, model, metric, score, datasets, cache)
                res = analysis.analyze_grid(grid, sign=sign, n_perm=args.n_perm, seed=args.perm_seed)
            except ValueError as e:
                grid, res = None, {"model": model, "score": score, "metric": metric, "error": str(e)}
            if "error" in res:
                say(f"{model}/{metric}/{score}: {res['error']}")
            else:
                res["p_family"] = (float(analysis.p_values(family[0], res["r_argmax"], family[1]))
                                   if family else None)
                if (plot_dir is not None and grid.n_candidates > 1 and np.isfinite(grid.chance).any()
                        and (plot_scores is None or score in plot_scores)):
                    plot_heatmap(grid, res, plot_dir)
            results.append(res)
    return results


def _datasets(rows: pd.DataFrame, metric: str, args, say) -> list[str]:
    """The datasets of one model with the metric (:func:`ntps.claims.metric_datasets`): one per source unless
    ``--all_datasets``; for an in-sample metric only those with N >= 2(d + 1)."""
    model = rows["model"].iloc[0]
    keep, left = claims.metric_datasets(claims.per_dataset(rows), metric, model,
                                        one_per_source=not getattr(args, "all_datasets", False))
    if left.get("uninformative_in_sample"):
        say(f"{model}/{metric}: in-sample metric, left out the datasets with N < 2(d + 1) "
            f"{left['uninformative_in_sample']}")
    if left["same_source"]:
        say(f"{model}/{metric}: one dataset per source, left out {left['same_source']} (--all_datasets keeps them)")
    return keep


def _family_null(rows: pd.DataFrame, model: str, metric: str, sign: int, args, datasets, cache: dict):
    """(null maxima, exact) of every score × cell of the model together, or None (fewer than 2 scores)."""
    scores = claims.family_scores(rows["score"].unique(), "all")
    if len(scores) < 2 or len(datasets) < 3:
        return None
    try:
        fam = claims.build_family(rows, model, metric, scores, datasets, cache)
        res = analysis.familywise_test([fam.X], [sign * fam.y], args.n_perm, args.perm_seed)
    except ValueError:
        return None
    return res["null_max"], res["exact"]


def ranking(results: list[dict]) -> pd.DataFrame:
    """One row per result (RANKING_COLUMNS), sorted by model, metric, then LODO r and r_argmax (best first)."""
    rows = []
    for r in results:
        note = "; ".join(x for x in (r.get("note"), r.get("error")) if x)
        rows.append({**{c: r.get(c) for c in RANKING_COLUMNS}, "sel_layer": r.get("layer"),
                     "sel_fraction": r.get("fraction"), "note": note})
    table = pd.DataFrame(rows, columns=RANKING_COLUMNS)
    if table.empty:
        return table
    keys = table.assign(_lodo=table["lodo_r"].astype(float).fillna(-np.inf),
                        _arg=table["r_argmax"].astype(float).fillna(-np.inf))
    keys = keys.sort_values(["model", "metric", "_lodo", "_arg"], ascending=[True, True, False, False], kind="stable")
    return keys.drop(columns=["_lodo", "_arg"]).reset_index(drop=True)


def markdown(table: pd.DataFrame, n_perm: int) -> str:
    """One markdown table per model × metric, and the legend."""
    blocks = []
    for (model, metric), part in table.groupby(["model", "metric"], sort=False):
        sign = analysis.metric_sign(metric)
        rows = [[fmt(r[c], s) for c, s in SHOWN] for _, r in part.iterrows()]
        blocks.append(f"### {model} — r = spearman(score, {'−' if sign < 0 else ''}{metric})\n\n"
                      + markdown_table(rows, [c for c, _ in SHOWN]))
    legend = ("lodo_r: leave-one-dataset-out (honest; predictions on the rank scale of each cell, tied cells "
              "averaged); r_argmax: the paper's protocol, best candidate chosen on the same data (optimistic); "
              f"perm_p: the score's own selection repeated on permuted metrics (all n! orders when n! <= 10^5, "
              f"else {n_perm} draws), perm_floor the smallest p it could give, null_q95 the 95th percentile of its "
              "null; p_family: r_argmax against the maximum over every score of the model (the p to quote when "
              "scores are compared); r_fixed/p_fixed: last layer (and lower-median fraction) fixed in advance.")
    return "\n\n".join(blocks + [legend])


def per_dataset_text(results: list[dict], metric: str) -> str:
    """(e): the value at the selected candidate next to chance, for the scores with a chance level."""
    lines = []
    for r in results:
        rows = r.get("per_dataset", [])
        if not any(row["chance"] is not None for row in rows):
            continue
        lines.append(f"\n(e) {r['model']} {r['score']} at layer {fmt(r['layer'], 'g')}, "
                     f"{r['param']} {fmt(r.get(r['param']), 'g')}:")
        lines.append(markdown_table([[row["dataset"], fmt(row["value"], ".4f"), fmt(row["chance"], ".4f"),
                                      fmt(row["minus_chance"], "+.4f"), fmt(row[metric], ".4f")] for row in rows],
                                    ["dataset", "value", "chance", "minus chance", metric]))
    return "\n".join(lines)


def single_candidate_note(results: list[dict], source: str) -> str | None:
    single = [r for r in results if r.get("n_candidates") == 1]
    if not single:
        return None
    why = ("the authors published only the selected NTPS per (model, dataset), and no chance level"
           if source == "paper" else "only one (layer, f) in the table")
    return (f"NOTE: {len(single)}/{len(results)} group(s) have a single (layer, f) candidate ({why}): (a) is the "
            f"correlation at that candidate and (e) the per-dataset table; (b) LODO, (c) the selection-aware "
            f"permutation test and (d) the heat map need the full layer x f sweep and are not applicable.")


def analyze_table(table: pd.DataFrame, metrics: list[str], args, say, source: str = "csv", tolerance=None,
                  plot_dir: Path | None = None, plot_scores=None) -> dict:
    """Every statistic of an oriented long table: per metric the per-score results (:func:`evaluate`) and their
    ranking; for a long table (``source`` "csv", not the authors' data) also the claims
    (:func:`ntps.claims.analyze_claims`), the directions the rank tolerance dropped and, with ``tolerance``
    (label -> oriented table), the same claims at other tolerances. Deterministic for fixed settings."""
    results = {}
    for metric in metrics:
        sign = args.sign if args.sign is not None else analysis.metric_sign(metric)
        results[metric] = evaluate(table, metric, sign, args, say, plot_dir, plot_scores)
    out = {"results": results, "ranking": ranking([r for rs in results.values() for r in rs])}
    if source == "csv":
        settings = settings_of(args)
        out["claims"] = claims.analyze_claims(table, settings)
        out["tolerance"] = claims.tolerance_sensitivity(out["claims"], tolerance, settings) if tolerance else None
        out["dropped_directions"] = claims.dropped_directions({"headline": table, **(tolerance or {})})
    return out


def settings_of(args) -> claims.Settings:
    return claims.Settings(n_perm=args.n_perm, n_perm_lodo=args.n_perm_lodo, perm_seed=args.perm_seed,
                           n_boot=args.n_boot)


def tolerance_tables(pairs: list[str], args) -> dict:
    """``LABEL=CSV`` pairs -> {label: oriented long table}."""
    out = {}
    for pair in pairs:
        label, sep, path = pair.partition("=")
        if not sep or not label or not path:
            raise ValueError(f"--tolerance takes LABEL=CSV pairs, got {pair!r}")
        out[label] = prepare(pd.read_csv(path, low_memory=False), args)
    return out


def claims_text(res: dict) -> str:
    """One line per claim × model: r_sel, family-wise p (floor), LODO r (p), verdict."""
    lines = []
    for r in res["claims"]["claims"] + res["claims"]["joint"]:
        lodo = r.get("lodo") or {}
        lines.append(f"{r['label']} — {r['model']}: n={r['n_datasets']}, r_sel {fmt(r.get('r_sel'), '.2f')}, "
                     f"family-wise p {fmt(r.get('p'))} (floor {fmt(r.get('floor'))}), LODO r "
                     f"{fmt(lodo.get('r'), '.2f')} (p {fmt(lodo.get('p'))}): {r['verdict']}")
    return "\n".join(lines)


def main(args) -> dict:
    if args.from_dir is not None:
        from runs import report

        return report.regenerate(args.from_dir, plots=not args.no_plots)
    t0 = time.perf_counter()
    table, source = load(args)
    metrics = metrics_of(args, table)
    out_dir = Path(args.output_dir) / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    messages = []

    def say(msg, level=logging.INFO):
        messages.append(msg)
        log.log(level, msg)

    res = analyze_table(table, metrics, args, say, source, tolerance_tables(args.tolerance, args),
                        plot_dir=None if args.no_plots else out_dir)
    all_results, table_r, text = res["results"], res["ranking"], []
    for metric, results in all_results.items():
        sign = args.sign if args.sign is not None else analysis.metric_sign(metric)
        note = single_candidate_note(results, source)
        text += [f"\n=== {metric}: r = spearman(score, {'-' if sign < 0 else ''}{metric}) ===", note]
        selected = [{"model": r["model"], "score": r["score"], "layer": r.get("layer"), r["param"]: r.get(r["param"]),
                     **row} for r in results for row in r.get("per_dataset", [])]
        if selected:
            with atomic_path(out_dir / f"selected_{metric}.csv") as tmp:
                pd.DataFrame(selected).to_csv(tmp, index=False)
        text.append(per_dataset_text(results, metric))
    md = markdown(table_r, args.n_perm) if len(table_r) else "no model had enough datasets with a metric"
    with atomic_path(out_dir / "ranking.csv") as tmp:
        table_r.to_csv(tmp, index=False)
    with atomic_path(out_dir / "ranking.md") as tmp:
        tmp.write_text(md + "\n")
    write_json(out_dir / "analysis.json", json_ready({
        "source": str(args.input or args.csv or Path(args.output_dir) / "collected.csv"),
        "settings": {"metrics": metrics, "scores": args.score, "models": args.models, "unique_only": args.unique_only,
                     "sign": args.sign, "all_datasets": args.all_datasets, **vars(settings_of(args))},
        "n_perm": args.n_perm, "perm_seed": args.perm_seed, "messages": messages, "environment": environment_info(),
        "results": {m: [{k: v for k, v in r.items() if k != "r_all"} for r in rs] for m, rs in all_results.items()},
        **{k: res[k] for k in ("claims", "tolerance", "dropped_directions") if k in res}}))
    print("\n".join(t for t in text if t) + "\n\n" + md + ("\n\n" + claims_text(res) if "claims" in res else ""))
    log.info("wrote %s/analysis.json, ranking.csv/.md, selected_*.csv%s (%.1f s)", out_dir,
             "" if args.no_plots else ", heatmap_*.pdf/png", time.perf_counter() - t0)
    return {"results": all_results, "ranking": table_r, "messages": messages, "claims": res.get("claims")}


def plot_heatmap(grid: analysis.Grid, res: dict, out_dir: Path) -> list[Path]:
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
                     mark=(li, pi),
                     colorbar_label=f"spearman({grid.score}, {'-' if res['sign'] < 0 else ''}metric)")
    ax.set_xlabel(grid.param)
    ax.set_ylabel("layer (0 = embeddings, last = after the final norm)")
    ax.set_title(f"{grid.model.split('/')[-1]} · {grid.score} · {grid.metric}\n★ r={res['r_argmax']:.2f}, "
                 f"perm p={fmt(res['perm_p'])}, LODO r={fmt(res['lodo_r'], '.2f')}", fontsize=8)
    return plotting.save(fig, out_dir, f"heatmap_{grid.metric}_{slugify(grid.model)}_{grid.score}")


def run(argv=None) -> None:
    """``python analyze.py`` and the console command ``ntps-analyze``: :func:`main` behind
    :func:`ntps.cli.run` (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "analyze.py", argv)


if __name__ == "__main__":
    run()
