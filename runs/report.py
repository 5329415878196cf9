"""REPORT.md of the offline reproduction, from the outputs of ``runs/reproduce_offline.py``.

Reads, under the output root ``--output_dir`` (default ``outputs/offline``): ``collected.csv``
(collect.py's long table), ``analysis/analysis.json`` (analyze.py), and through collect.py's readers the
LoRA runs (``*/*/ntps_lora.csv``), the runner's ``stages.json`` and the artifacts' own records of their
compute time. Writes into ``--report_dir`` (default ``results/offline``): ``REPORT.md``, ``summary.json``
(every number of the report), ``correlations.csv`` (every score), ``ntps_table.csv``, ``probes.csv``,
``baselines.csv`` (the ranking of every score), ``lora.csv``, ``timings.csv`` and ``figures/*.png``.

    python -m runs.report --output_dir outputs/offline --report_dir results/offline

Nothing here computes a statistic: every number comes from the scripts' outputs, so the report is
regenerated exactly from the same files.
"""

from __future__ import annotations

import logging
import math
import platform
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

import collect
from ntps import cli
from ntps.io import atomic_path, environment_info, read_json, write_json
from ntps.report import fmt, markdown_table

log = logging.getLogger(__name__)

#: Metrics of the report: (column, label, what it measures).
METRICS = [
    ("probe_train_acc", "train acc (in-sample, Fig. 2 ACC)",
     "sklearn logistic probe, last layer, fit and scored on train"),
    ("probe_train_mse", "train MSE (in-sample, Fig. 2 MSE)", "sklearn linear regression on one-hot labels, train"),
    ("probe_test_acc", "test acc (held out)", "the same logistic probe scored on the test split"),
    ("probe_test_mse", "test MSE (held out)", "the same regression scored on the test split"),
    ("linear_test_acc", "linear-probe test acc", "head trained on frozen features (AdamW, 50 epochs)"),
    ("lora_gain", "LoRA gain (Fig. 3)", "LoRA test acc − linear-probe test acc"),
]
PAPER_METRICS = ("probe_train_acc", "probe_train_mse")
MAIN = "ntps_raw_descending"  # the paper's definition (SPEC §2.1)
#: The NTPS sweeps of the correlation section: the paper's, the authors' released order, the whitened variant.
SWEEPS = (MAIN, "ntps_raw_ascending", "ntps_whitened_descending")
ALPHA = 0.05


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def correlations(analysis: dict) -> pd.DataFrame:
    """One row per (model, score, metric) from analyze.py's analysis.json (results with an error left out)."""
    rows = []
    for metric, results in analysis["results"].items():
        for r in results:
            if "error" in r:
                continue
            rows.append({"model": r["model"], "score": r["score"], "metric": metric, "n_datasets": r["n_datasets"],
                         "n_candidates": r["n_candidates"], "layer": r.get("layer"), "fraction": r.get("fraction"),
                         "r_argmax": r.get("r_argmax"), "perm_p": r.get("perm_p"), "null_q95": r.get("null_q95"),
                         "lodo_r": r.get("lodo_r"), "r_fixed": r.get("r_fixed"), "p_fixed": r.get("p_fixed"),
                         "n_perm": r.get("n_perm")})
    return pd.DataFrame(rows)


def selected_ntps(analysis: dict, metric: str, score: str) -> pd.DataFrame:
    """Per (model, dataset): the score and chance at the cell the paper's protocol selects for ``metric``."""
    rows = []
    for r in analysis["results"].get(metric, []):
        if r.get("score") != score or "per_dataset" not in r:
            continue
        for d in r["per_dataset"]:
            rows.append({"model": r["model"], "dataset": d["dataset"], "layer": r.get("layer"),
                         "fraction": r.get("fraction"), "ntps": d["value"], "chance": d["chance"],
                         "margin": d["minus_chance"], metric: d.get(metric)})
    return pd.DataFrame(rows)


def per_dataset(collected: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset) quantities of collect.py (constant within a dataset)."""
    cols = ["model", "dataset", "n_texts", "d", "label_rank", "probe_layer", "probe_train_acc", "probe_test_acc",
            "probe_train_mse", "probe_test_mse", "linear_test_acc", "lora_test_acc", "lora_gain"]
    cols = [c for c in cols if c in collected.columns]
    return collected[cols].groupby(["model", "dataset"], as_index=False).first()


def fixed_cell_ntps(collected: pd.DataFrame, fraction: float = 0.25) -> pd.DataFrame:
    """NTPS (descending, raw) at the last layer and a fraction fixed in advance, with chance: a cell
    nobody chose by looking at the metrics."""
    t = collected[collected["score"] == MAIN]
    t = t[np.isclose(t["fraction"].astype(float), fraction)]
    last = t.groupby("model")["layer"].transform("max")
    t = t[t["layer"] == last].rename(columns={"value": "ntps"})
    return t[["model", "dataset", "layer", "fraction", "k_V", "ntps", "chance"]].assign(
        margin=lambda x: x["ntps"] - x["chance"]).reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# Verdict
# ------------------------------------------------------------------------------------------------


def verdict(corr: pd.DataFrame, metric: str, score: str = MAIN) -> list[dict]:
    """Per model: does the score track ``metric``? Supported = LODO r > 0 and permutation p < ALPHA."""
    out = []
    part = corr[(corr["metric"] == metric) & (corr["score"] == score)]
    for _, r in part.sort_values("model").iterrows():
        lodo, p = r["lodo_r"], r["perm_p"]
        if not (isinstance(lodo, float) and math.isfinite(lodo)):
            word = "not testable"
        elif p < ALPHA and lodo > 0:
            word = "supported"
        elif lodo > 0:
            word = "not significant"
        else:
            word = "not supported"
        out.append({"model": r["model"], "metric": metric, "r_argmax": r["r_argmax"], "perm_p": p,
                    "lodo_r": lodo, "n_datasets": int(r["n_datasets"]), "verdict": word})
    return out


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------


def scatter_figure(sel: pd.DataFrame, corr: pd.DataFrame, metric: str, label: str, path: Path) -> Path | None:
    """One panel per model: NTPS at the selected cell vs ``metric`` (the analogue of Figs. 2/3)."""
    if sel.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted(sel["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = sel[sel["model"] == model]
        ax.scatter(part["ntps"], part[metric], color="tab:blue")
        ax.scatter(part["chance"], part[metric], marker="|", color="grey", s=80, label="chance k_V/d")
        for _, row in part.iterrows():
            ax.annotate(row["dataset"], (row["ntps"], row[metric]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        c = corr[(corr["model"] == model) & (corr["metric"] == metric) & (corr["score"] == MAIN)]
        title = model
        if not c.empty:
            c = c.iloc[0]
            title += (f"\nr_sel={fmt(c['r_argmax'], '.2f')}  p={fmt(c['perm_p'], '.3f')}  "
                      f"LODO r={fmt(c['lodo_r'], '.2f')}\n"
                      f"layer {int(part['layer'].iloc[0])}, f={part['fraction'].iloc[0]:g}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("NTPS (descending, raw)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------


def build(root: Path, report_dir: Path, command: str) -> dict:
    """Write the report of the output root ``root`` into ``report_dir``; returns summary.json's content."""
    collected = pd.read_csv(root / "collected.csv")
    analysis = read_json(root / "analysis" / "analysis.json")
    ranking = pd.read_csv(root / "analysis" / "ranking.csv") if (root / "analysis" / "ranking.csv").is_file() \
        else pd.DataFrame()
    corr = correlations(analysis)
    per_ds = per_dataset(collected)
    fixed = fixed_cell_ntps(collected)
    lora = collect.lora_runs(root)
    times = collect.stage_times(root)
    record = collect.stage_record(root)
    report_dir.mkdir(parents=True, exist_ok=True)
    figs = report_dir / "figures"
    if figs.exists():
        shutil.rmtree(figs)
    figs.mkdir()

    verdicts = {m: verdict(corr, m) for m, *_ in METRICS}
    sel = {m: selected_ntps(analysis, m, MAIN) for m, *_ in METRICS}
    fig_files = []
    for m, label, _ in METRICS:
        f = scatter_figure(sel[m], corr, m, label, figs / f"ntps_vs_{m}.png")
        if f:
            fig_files.append(f.name)
    for png in sorted((root / "analysis").glob("*.png")):  # analyze.py's heat maps
        if png.name.endswith(f"_{MAIN}.png"):
            shutil.copy2(png, figs / png.name)
            fig_files.append(png.name)

    # tables written beside the report
    def csv(df: pd.DataFrame, name: str) -> None:
        with atomic_path(report_dir / name) as tmp:
            df.to_csv(tmp, index=False, float_format="%.6g")

    csv(corr, "correlations.csv")
    csv(fixed, "ntps_table.csv")
    csv(per_ds, "probes.csv")
    csv(times, "timings.csv")
    if not lora.empty:
        csv(lora, "lora.csv")
    if not ranking.empty:
        csv(ranking, "baselines.csv")

    env = environment_info()
    total = float(times["seconds"].sum()) if not times.empty else float("nan")
    summary = {"command": command, "environment": env,
               "machine": {"cpus": _cpus(), "platform": platform.platform()},
               "verdicts": verdicts, "correlations": corr.to_dict("records"),
               "ntps_fixed_cell": fixed.to_dict("records"), "per_dataset": per_ds.to_dict("records"),
               "lora": lora.to_dict("records"), "timings_total_s": total,
               "timings_by_stage": times.groupby("stage")["seconds"].sum().to_dict() if not times.empty else {},
               "invocations": record.get("invocations", []), "figures": fig_files,
               "baselines": ranking.to_dict("records") if not ranking.empty else None}
    write_json(report_dir / "summary.json", _clean(summary))
    text = render(summary, corr, per_ds, fixed, sel, lora, times, ranking, collected)
    with atomic_path(report_dir / "REPORT.md") as tmp:
        Path(tmp).write_text(text)
    return summary


def _cpus() -> int | None:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _clean(obj):
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def render(summary, corr, per_ds, fixed, sel, lora, times, ranking, collected) -> str:
    env = summary["environment"]
    v = env.get("versions", {})
    models = sorted(per_ds["model"].unique())
    L = ["# NTPS offline reproduction — report", "",
         "Generated by `python -m runs.report` from the outputs of", "", f"    {summary['command']}", "",
         f"git commit `{env.get('git_commit')}`; python {v.get('python')}, torch {v.get('torch')}, "
         f"transformers {v.get('transformers')}, scikit-learn {v.get('scikit-learn')}, numpy {v.get('numpy')}; "
         f"{summary['machine']['cpus']} CPU cores ({summary['machine']['platform']}).", ""]

    # --- verdict
    L += ["## Do the paper's claims hold here?", ""]
    L += _verdict_text(summary["verdicts"], lora)
    # --- setup
    L += ["", "## Set-up", ""]
    n = per_ds.pivot_table(index="dataset", columns="model", values="n_texts", aggfunc="first")
    dims = collected.groupby("model")[["d"]].first()
    L += ["Models (offline GGUF, de-quantised to float32): " + ", ".join(
        f"`{m}` (d = {int(dims.loc[m, 'd'])}, {int(collected[collected['model'] == m]['layer'].max()) + 1} hidden "
        "states)" for m in models) + ".", "",
          "Train texts used for the statistics and the in-sample probes (class-stratified, seed 42; the test "
          "split is capped the same way, see `timings.csv`):", "",
          markdown_table([[ds] + [fmt(n.loc[ds, m] if m in n.columns else None, "d") for m in models]
                          for ds in n.index], ["dataset"] + models), ""]

    # --- correlations
    L += ["## Spearman r of NTPS against each metric", "",
          "Per model, over the datasets. `r_sel`: the paper's protocol — the (layer, f) maximising r, chosen "
          "on the same data (optimistic, SPEC §5); `p`: permutation p-value repeating the whole selection on "
          "shuffled metrics; `null95`: 95th percentile of that null; `LODO r`: the (layer, f) chosen without "
          "the held-out dataset (honest). NTPS in the paper's definition (descending eigenvalues, raw "
          "coordinates); the authors' released order (ascending) and the whitened variant follow.", ""]
    for score in SWEEPS:
        part = corr[corr["score"] == score]
        if part.empty:
            continue
        rows = []
        for _, r in part.sort_values(["metric", "model"], key=lambda s: s.map(_metric_rank) if s.name == "metric"
                                     else s).iterrows():
            rows.append([r["metric"], r["model"], int(r["n_datasets"]), fmt(r["r_argmax"], ".2f"),
                         fmt(r["perm_p"], ".3f"), fmt(r["null_q95"], ".2f"), fmt(r["lodo_r"], ".2f"),
                         f"{int(r['layer'])}, {r['fraction']:g}" if pd.notna(r["layer"]) else "–"])
        L += [f"### {score}", "", markdown_table(rows, ["metric", "model", "datasets", "r_sel", "p", "null95",
                                                           "LODO r", "layer, f"]), ""]
    for m, label, _ in METRICS:
        if f"ntps_vs_{m}.png" in summary["figures"]:
            L += [f"![NTPS vs {label}](figures/ntps_vs_{m}.png)", ""]

    # --- NTPS table
    L += ["## NTPS with chance levels", "",
          "At a cell fixed in advance (last hidden state, f = 0.25; descending, raw) — NTPS / chance k_V/d:", ""]
    piv = fixed.pivot_table(index="dataset", columns="model", values=["ntps", "chance"], aggfunc="first")
    L += [markdown_table([[ds] + [f"{piv.loc[ds, ('ntps', m)]:.3f} / {piv.loc[ds, ('chance', m)]:.3f}"
                          if ("ntps", m) in piv.columns and pd.notna(piv.loc[ds, ("ntps", m)]) else "–"
                          for m in models] for ds in piv.index], ["dataset"] + models), ""]
    s = sel["probe_train_acc"]
    if not s.empty:
        L += ["At the cell the paper's protocol selects for train accuracy (per model, shown in the header):", ""]
        piv = s.pivot_table(index="dataset", columns="model", values=["ntps", "chance"], aggfunc="first")
        cells = s.groupby("model")[["layer", "fraction"]].first()
        L += [markdown_table([[ds] + [f"{piv.loc[ds, ('ntps', m)]:.3f} / {piv.loc[ds, ('chance', m)]:.3f}"
                              if ("ntps", m) in piv.columns and pd.notna(piv.loc[ds, ("ntps", m)]) else "–"
                              for m in models] for ds in piv.index],
                     ["dataset"] + [f"{m} (layer {int(cells.loc[m, 'layer'])}, f={cells.loc[m, 'fraction']:g})"
                                    for m in models if m in cells.index]), ""]

    # --- probes
    L += ["## Probe accuracies (last hidden state, mean pooling)", ""]
    rows = []
    for _, r in per_ds.sort_values(["model", "dataset"]).iterrows():
        rows.append([r["model"], r["dataset"], int(r["n_texts"]), fmt(r.get("probe_train_acc")),
                     fmt(r.get("probe_test_acc")), fmt(r.get("probe_train_mse"), ".4f"),
                     fmt(r.get("probe_test_mse"), ".4f"), fmt(r.get("linear_test_acc"))])
    L += [markdown_table(rows, ["model", "dataset", "N train", "train acc", "test acc", "train MSE", "test MSE",
                        "linear probe test acc"]), ""]

    # --- baselines
    if not ranking.empty:
        L += ["## Which training-free score tracks the metrics best? (issue 6)", "",
              "analyze.py on every score of the same statistics: LogME, H-score, least-squares / ridge probe MSE "
              "(negated: `-ls_mse`), the NTPS sweeps and the scores derived from them. Sorted by "
              "leave-one-dataset-out r; `p` repeats each score's own selection on shuffled metrics.", ""]
        for (model, metric), part in ranking.groupby(["model", "metric"], sort=True):
            part = part.sort_values("lodo_r", ascending=False, na_position="last")
            rows = [[r["score"], fmt(r["lodo_r"], ".2f"), fmt(r["r_argmax"], ".2f"), fmt(r["perm_p"], ".3f"),
                     fmt(r["r_fixed"], ".2f"), fmt(r["p_fixed"], ".3f")] for _, r in part.iterrows()]
            header = ["score", "LODO r", "r_sel", "p", "r_fixed (last layer)", "p_fixed"]
            L += [f"**{model} — {metric}**", "", markdown_table(rows, header), ""]

    # --- LoRA
    L += ["## LoRA: gains and NTPS before/after", ""]
    if lora.empty:
        L += ["No LoRA runs in this report.", ""]
    else:
        rows = [[r["model"], r["dataset"], fmt(r["linear_acc"]), fmt(r["lora_acc"]), fmt(r["gain"], "+.3f"),
                 f"{int(r['layer'])}, {r['fraction']:g}", fmt(r["ntps_before"]), fmt(r["ntps_after"]),
                 fmt(r["chance"])]
                for _, r in lora.iterrows()]
        L += [markdown_table(rows, ["model", "dataset", "linear acc", "LoRA acc", "gain", "layer, f", "NTPS before",
                            "NTPS after", "chance"]), "",
              "LoRA budget: " + "; ".join(
                  f"{r['dataset']}: {r['steps']} steps × batch {r['batch_size']}, lr {r['lr']:g}, {r['max_length']} "
                  f"tokens, {r['n_train']} train / {r['n_test']} test texts, training {r['lora_train_s'] / 60:.1f} min"
                  for _, r in lora.iterrows() if pd.notna(r.get("steps"))) + " (r 32, α 32, q/k/v of every block, "
              "Adafactor + cosine as in the paper).", "",
              "The reported cell is the largest NTPS-before margin over chance (runs/ntps_lora.py); the full layer × "
              "fraction sweeps before and after are in `outputs/offline/{model}/{dataset}/ntps_lora_sweep.csv`.", ""]

    # --- timings
    L += ["## Wall time per stage", ""]
    if not times.empty:
        g = times.groupby(["stage", "model"], dropna=False)["seconds"].sum().unstack("model").fillna(0)
        cols = [c for c in g.columns if isinstance(c, str)]
        rows = [[st] + [f"{g.loc[st, m] / 60:.1f}" for m in cols] + [f"{g.loc[st].sum() / 60:.1f}"]
                for st in g.index]
        L += [markdown_table(rows, ["stage (minutes)"] + cols + ["all"]), "",
              f"Total: **{summary['timings_total_s'] / 60:.0f} min** of stage time (each stage's own record: "
              "cache.py's `meta.json`, the runner's `stages.json`). Runner invocations: "
              + "; ".join(f"{i.get('started')} ({i.get('ran')} run, {i.get('skipped')} up to date, "
                          f"{(i.get('seconds') or 0) / 60:.1f} min)" for i in summary["invocations"]) + ".", ""]
    L += ["## Caveats", "", *[f"- {c}" for c in CAVEATS], ""]
    return "\n".join(L)


CAVEATS = [
    "Seven datasets per model: a Spearman r over 7 points has a wide null (see `null95`), and the paper's argmax "
    "over ~600 (layer, f) cells inflates it further. Read `LODO r` and `p`, not `r_sel`.",
    "Small N: to fit 2 CPU hours the train splits are capped at a few hundred texts, close to or below the "
    "hidden size d. In-sample probe accuracy then saturates near 1 and the in-sample MSE is that of a nearly "
    "interpolating fit, so the paper's in-sample metrics (Fig. 2) carry little signal here; the held-out "
    "metrics are the informative ones. Σ (text-level) is rank-deficient when N < d; NTPS is computed on its range "
    "(SPEC §2).",
    "Texts are cut to 64 tokens (the VADER snippets are shorter; bbc-news and 20newsgroups documents are cut).",
    "LoRA is a short CPU budget (see the runner's flags) on one model and three short-text datasets, far from the "
    "paper's 5000 steps: the gains are indicative only and three points cannot test Fig. 3's correlation.",
]


def _metric_rank(m: str) -> int:
    names = [x for x, *_ in METRICS]
    return names.index(m) if m in names else len(names)


def _verdict_text(verdicts: dict, lora: pd.DataFrame) -> list[str]:
    out = []
    label = {m: lab for m, lab, _ in METRICS}
    for m in ("probe_train_acc", "probe_train_mse", "probe_test_acc", "probe_test_mse", "linear_test_acc"):
        vs = verdicts.get(m, [])
        if not vs:
            continue
        parts = [f"{v['model']}: {v['verdict']} (LODO r {fmt(v['lodo_r'], '.2f')}, p {fmt(v['perm_p'], '.3f')}, "
                 f"r_sel {fmt(v['r_argmax'], '.2f')})" for v in vs]
        n_sup = sum(v["verdict"] == "supported" for v in vs)
        out.append(f"- **NTPS vs {label[m]}** — {n_sup} of {len(vs)} models support the claim: "
                   + "; ".join(parts) + ".")
    vs = verdicts.get("lora_gain", [])
    if lora.empty:
        out.append("- **NTPS vs LoRA gain (Fig. 3)** — not run.")
    else:
        out.append(f"- **NTPS vs LoRA gain (Fig. 3)** — not testable here: LoRA ran on {len(lora)} (model, dataset) "
                   "pairs only (see the LoRA section for the gains and NTPS before/after).")
    out += ["", "\"Supported\" means: the (layer, f) chosen without the held-out dataset still predicts it "
            f"(LODO r > 0) *and* the whole selection beats shuffled metrics (permutation p < {ALPHA}). "
            "The paper's own protocol (`r_sel`) is shown for comparison with SPEC §4; it is high by construction."]
    return out


def parse_args(argv=None):
    p = cli.parser("runs/report.py", __doc__)
    cli.add_output_args(p, default="outputs/offline", overwrite=None,
                        help="output root of the runs (holds collected.csv and analysis/)")
    p.add_argument("--report_dir", type=Path, default=Path("results/offline"), help="where REPORT.md goes")
    p.add_argument("--command", default="python -m runs.reproduce_offline", help="the command shown in the report")
    return cli.parse(p, argv)


def main(args) -> dict:
    root = Path(args.output_dir)
    for need in ("collected.csv", "analysis/analysis.json"):
        if not (root / need).is_file():
            raise ValueError(f"{root / need} is missing; run runs/reproduce_offline.py (collect.py and "
                             "analyze.py) first")
    summary = build(root, args.report_dir, args.command)
    log.info("wrote %s (%d figures)", args.report_dir / "REPORT.md", len(summary["figures"]))
    return summary


if __name__ == "__main__":
    cli.run(main, parse_args, "runs/report.py")
