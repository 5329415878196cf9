"""REPORT.md of the offline reproduction (issue 7), from the files of ``reproduce_offline.py``.

Reads, under ``--runs_dir`` (default ``outputs/offline``): ``collected.csv`` (collect.py),
``analysis/analysis.json`` (analyze.py), ``compare_scores.json`` (compare_scores.py),
``*/*/ntps_lora.csv`` (ntps_lora.py), ``stages.json`` (the runner) and the artifacts' own records of
their compute time. Writes into ``--report_dir`` (default ``results/offline``): ``REPORT.md``,
``summary.json`` (every number of the report), ``correlations.csv``, ``ntps_table.csv``,
``probes.csv``, ``baselines.csv``, ``lora.csv``, ``timings.csv`` and ``figures/*.png``.

    python -m ntps.report --runs_dir outputs/offline --report_dir results/offline

Nothing here computes a statistic: every number comes from the scripts' outputs, so the report is
regenerated exactly from the same files.
"""

from __future__ import annotations

import argparse
import math
import platform
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path, environment_info, read_json, write_json

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
MAIN = ("descending", "raw")  # the paper's definition (SPEC §2.1)
ALPHA = 0.05


def _fmt(x, nd: int = 3, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.{nd}f}" if signed else f"{x:.{nd}f}"


def _table(rows: list[list], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _nan_to_none(x):
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def correlations(analysis: dict) -> pd.DataFrame:
    """One row per (model, order, variant, metric) from analyze.py's analysis.json."""
    rows = []
    for metric, results in analysis["results"].items():
        for r in results:
            rows.append({"model": r["model"], "order": r.get("order"), "variant": r.get("variant"),
                         "metric": metric, "n_datasets": r["n_datasets"], "n_candidates": r["n_candidates"],
                         "layer": r.get("layer"), "fraction": r.get("fraction"), "r_argmax": r.get("r_argmax"),
                         "perm_p": r.get("perm_p"), "null_q95": r.get("null_q95"), "lodo_r": r.get("lodo_r"),
                         "n_perm": r.get("n_perm")})
    return pd.DataFrame(rows)


def selected_ntps(analysis: dict, metric: str, order: str, variant: str) -> pd.DataFrame:
    """Per (model, dataset): NTPS and chance at the cell the paper's protocol selects for ``metric``."""
    rows = []
    for r in analysis["results"].get(metric, []):
        if (r.get("order"), r.get("variant")) != (order, variant):
            continue
        for d in r["per_dataset"]:
            rows.append({"model": r["model"], "dataset": d["dataset"], "layer": r.get("layer"),
                         "fraction": r.get("fraction"), "ntps": d["ntps"], "chance": d["chance"],
                         "margin": d["ntps_minus_chance"], metric: d.get(metric)})
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
    t = collected[(collected["order"] == MAIN[0]) & (collected["variant"] == MAIN[1])]
    t = t[np.isclose(t["fraction"].astype(float), fraction)]
    last = t.groupby("model")["layer"].transform("max")
    t = t[t["layer"] == last]
    return t[["model", "dataset", "layer", "fraction", "k_V", "ntps", "chance"]].assign(
        margin=lambda x: x["ntps"] - x["chance"]).reset_index(drop=True)


def lora_rows(runs_dir: Path) -> pd.DataFrame:
    """ntps_lora.csv rows with the LoRA run's budget (steps, lr, batch, texts, training seconds)."""
    rows = []
    for path in sorted(runs_dir.glob("*/*/ntps_lora.csv")):
        for row in pd.read_csv(path).to_dict("records"):
            res_path = Path(read_json(path.with_suffix(".json"))["lora_results"])
            res = read_json(res_path) if res_path.is_file() else {}
            cfg = res.get("config", {})
            rows.append({**row, "steps": res.get("steps"), "lr": cfg.get("lr"), "batch_size": cfg.get("batch_size"),
                         "max_length": cfg.get("max_length"), "n_train": res.get("n_train"),
                         "n_test": res.get("n_test"), "lora_train_s": res.get("train_time_s")})
    return pd.DataFrame(rows)


def timings(runs_dir: Path) -> pd.DataFrame:
    """Compute seconds per stage: the runner's wall time of the stage (stages.json) or, for a stage that
    the runner found already done, the time recorded in its artifact."""
    record = read_json(runs_dir / "stages.json") if (runs_dir / "stages.json").is_file() else {"stages": {}}
    rows = []
    # {model}/{dataset}/{split}/meta.json; LoRA's stats_after lie deeper and are part of the lora stage
    for meta_path in sorted(runs_dir.glob("*/*/train/meta.json")) + sorted(runs_dir.glob("*/*/test/meta.json")):
        meta = read_json(meta_path)
        split = meta_path.parent.name
        key = f"cache/{meta['model']}/{meta['dataset']}/{split}"
        rows.append({"stage": "cache", "key": key, "model": meta["model"], "dataset": meta["dataset"],
                     "seconds": float(meta.get("seconds", {}).get("total", np.nan)),
                     "n_texts": meta.get("n_texts"), "n_tokens": meta.get("n_tokens")})
    seen = {r["key"] for r in rows}
    for key, s in record["stages"].items():
        if key in seen or s.get("rc") != 0:
            continue
        group = key.split("/")[0]
        rows.append({"stage": group, "key": key, "model": s.get("model"), "dataset": s.get("dataset"),
                     "seconds": float(s["seconds"]), "n_texts": None, "n_tokens": None})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------
# Verdict
# ------------------------------------------------------------------------------------------------


def verdict(corr: pd.DataFrame, metric: str, order: str = MAIN[0], variant: str = MAIN[1]) -> list[dict]:
    """Per model: does NTPS track ``metric``? Supported = LODO r > 0 and permutation p < ALPHA."""
    out = []
    part = corr[(corr["metric"] == metric) & (corr["order"] == order) & (corr["variant"] == variant)]
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
        c = corr[(corr["model"] == model) & (corr["metric"] == metric) & (corr["order"] == MAIN[0])
                 & (corr["variant"] == MAIN[1])]
        title = model
        if not c.empty:
            c = c.iloc[0]
            title += (f"\nr_sel={_fmt(c['r_argmax'], 2)}  p={_fmt(c['perm_p'], 3)}  LODO r={_fmt(c['lodo_r'], 2)}"
                      f"\nlayer {int(part['layer'].iloc[0])}, f={part['fraction'].iloc[0]:g}")
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


def build(runs_dir: Path, report_dir: Path, command: str) -> dict:
    collected = pd.read_csv(runs_dir / "collected.csv")
    analysis = read_json(runs_dir / "analysis" / "analysis.json")
    baselines = read_json(runs_dir / "compare_scores.json") if (runs_dir / "compare_scores.json").is_file() else None
    corr = correlations(analysis)
    per_ds = per_dataset(collected)
    fixed = fixed_cell_ntps(collected)
    lora = lora_rows(runs_dir)
    times = timings(runs_dir)
    record = read_json(runs_dir / "stages.json") if (runs_dir / "stages.json").is_file() else {}
    report_dir.mkdir(parents=True, exist_ok=True)
    figs = report_dir / "figures"
    if figs.exists():
        shutil.rmtree(figs)
    figs.mkdir()

    verdicts = {m: verdict(corr, m) for m, *_ in METRICS}
    sel = {m: selected_ntps(analysis, m, *MAIN) for m, *_ in METRICS}
    fig_files = []
    for m, label, _ in METRICS:
        f = scatter_figure(sel[m], corr, m, label, figs / f"ntps_vs_{m}.png")
        if f:
            fig_files.append(f.name)
    for png in sorted((runs_dir / "analysis").glob("*.png")):  # analyze.py's heat maps
        if png.name.endswith("_descending_raw.png"):
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
    if baselines:
        csv(pd.DataFrame(baselines["rows"]), "baselines.csv")

    env = environment_info()
    total = float(times["seconds"].sum()) if not times.empty else float("nan")
    summary = {"command": command, "environment": env,
               "machine": {"cpus": _cpus(), "platform": platform.platform()},
               "verdicts": verdicts, "correlations": corr.to_dict("records"),
               "ntps_fixed_cell": fixed.to_dict("records"), "per_dataset": per_ds.to_dict("records"),
               "lora": lora.to_dict("records"), "timings_total_s": total,
               "timings_by_stage": times.groupby("stage")["seconds"].sum().to_dict() if not times.empty else {},
               "invocations": record.get("invocations", []), "figures": fig_files,
               "baselines": baselines["rows"] if baselines else None}
    write_json(report_dir / "summary.json", _clean(summary))
    text = render(summary, corr, per_ds, fixed, sel, lora, times, baselines, collected)
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
        return _nan_to_none(float(obj))
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def render(summary, corr, per_ds, fixed, sel, lora, times, baselines, collected) -> str:
    env = summary["environment"]
    v = env.get("versions", {})
    models = sorted(per_ds["model"].unique())
    L = ["# NTPS offline reproduction — report", "",
         "Generated by `python -m ntps.report` from the outputs of", "", f"    {summary['command']}", "",
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
          _table([[ds] + [int(n.loc[ds, m]) if m in n.columns and pd.notna(n.loc[ds, m]) else "–" for m in models]
                  for ds in n.index], ["dataset"] + models), ""]

    # --- correlations
    L += ["## Spearman r of NTPS against each metric", "",
          "Per model, over the datasets. `r_sel`: the paper's protocol — the (layer, f) maximising r, chosen "
          "on the same data (optimistic, SPEC §5); `p`: permutation p-value repeating the whole selection on "
          "shuffled metrics; `null95`: 95th percentile of that null; `LODO r`: the (layer, f) chosen without "
          "the held-out dataset (honest). NTPS in the paper's definition (descending eigenvalues, raw "
          "coordinates); the authors' released order (ascending) and the whitened variant follow.", ""]
    for order, variant in (MAIN, ("ascending", "raw"), ("descending", "whitened")):
        part = corr[(corr["order"] == order) & (corr["variant"] == variant)]
        if part.empty:
            continue
        rows = []
        for _, r in part.sort_values(["metric", "model"], key=lambda s: s.map(_metric_rank) if s.name == "metric"
                                     else s).iterrows():
            rows.append([r["metric"], r["model"], int(r["n_datasets"]), _fmt(r["r_argmax"], 2), _fmt(r["perm_p"], 3),
                         _fmt(r["null_q95"], 2), _fmt(r["lodo_r"], 2),
                         f"{int(r['layer'])}, {r['fraction']:g}" if pd.notna(r["layer"]) else "–"])
        L += [f"### {order}, {variant}", "", _table(rows, ["metric", "model", "datasets", "r_sel", "p", "null95",
                                                           "LODO r", "layer, f"]), ""]
    for m, label, _ in METRICS:
        if f"ntps_vs_{m}.png" in summary["figures"]:
            L += [f"![NTPS vs {label}](figures/ntps_vs_{m}.png)", ""]

    # --- NTPS table
    L += ["## NTPS with chance levels", "",
          "At a cell fixed in advance (last hidden state, f = 0.25; descending, raw) — NTPS / chance k_V/d:", ""]
    piv = fixed.pivot_table(index="dataset", columns="model", values=["ntps", "chance"], aggfunc="first")
    L += [_table([[ds] + [f"{piv.loc[ds, ('ntps', m)]:.3f} / {piv.loc[ds, ('chance', m)]:.3f}"
                          if ("ntps", m) in piv.columns and pd.notna(piv.loc[ds, ("ntps", m)]) else "–"
                          for m in models] for ds in piv.index], ["dataset"] + models), ""]
    s = sel["probe_train_acc"]
    if not s.empty:
        L += ["At the cell the paper's protocol selects for train accuracy (per model, shown in the header):", ""]
        piv = s.pivot_table(index="dataset", columns="model", values=["ntps", "chance"], aggfunc="first")
        cells = s.groupby("model")[["layer", "fraction"]].first()
        L += [_table([[ds] + [f"{piv.loc[ds, ('ntps', m)]:.3f} / {piv.loc[ds, ('chance', m)]:.3f}"
                              if ("ntps", m) in piv.columns and pd.notna(piv.loc[ds, ("ntps", m)]) else "–"
                              for m in models] for ds in piv.index],
                     ["dataset"] + [f"{m} (layer {int(cells.loc[m, 'layer'])}, f={cells.loc[m, 'fraction']:g})"
                                    for m in models if m in cells.index]), ""]

    # --- probes
    L += ["## Probe accuracies (last hidden state, mean pooling)", ""]
    rows = []
    for _, r in per_ds.sort_values(["model", "dataset"]).iterrows():
        rows.append([r["model"], r["dataset"], int(r["n_texts"]), _fmt(r.get("probe_train_acc")),
                     _fmt(r.get("probe_test_acc")), _fmt(r.get("probe_train_mse"), 4),
                     _fmt(r.get("probe_test_mse"), 4), _fmt(r.get("linear_test_acc"))])
    L += [_table(rows, ["model", "dataset", "N train", "train acc", "test acc", "train MSE", "test MSE",
                        "linear probe test acc"]), ""]

    # --- baselines
    if baselines:
        L += ["## Which training-free score tracks the metrics best? (issue 6)", "",
              "compare_scores.py on the same statistics: LogME, H-score, least-squares / ridge probe MSE, NTPS "
              "variants. Sorted by leave-one-dataset-out r; `p` repeats each score's own selection on shuffled "
              "metrics.", ""]
        b = pd.DataFrame(baselines["rows"])
        for (model, metric), part in b.groupby(["model", "metric"], sort=True):
            part = part.sort_values("lodo_r", ascending=False, na_position="last")
            rows = [[r["score"], _fmt(r["lodo_r"], 2), _fmt(r["r_argmax"], 2), _fmt(r["perm_p"], 3),
                     _fmt(r["r_fixed"], 2), _fmt(r["p_fixed"], 3)] for _, r in part.iterrows()]
            header = ["score", "LODO r", "r_sel", "p", "r_fixed (last layer)", "p_fixed"]
            L += [f"**{model} — {metric}**", "", _table(rows, header), ""]

    # --- LoRA
    L += ["## LoRA: gains and NTPS before/after", ""]
    if lora.empty:
        L += ["No LoRA runs in this report.", ""]
    else:
        rows = [[r["model"], r["dataset"], _fmt(r["linear_acc"]), _fmt(r["lora_acc"]), _fmt(r["gain"], 3, True),
                 f"{int(r['layer'])}, {r['fraction']:g}", _fmt(r["ntps_before"]), _fmt(r["ntps_after"]),
                 _fmt(r["chance"])]
                for _, r in lora.iterrows()]
        L += [_table(rows, ["model", "dataset", "linear acc", "LoRA acc", "gain", "layer, f", "NTPS before",
                            "NTPS after", "chance"]), "",
              "LoRA budget: " + "; ".join(
                  f"{r['dataset']}: {r['steps']} steps × batch {r['batch_size']}, lr {r['lr']:g}, {r['max_length']} "
                  f"tokens, {r['n_train']} train / {r['n_test']} test texts, training {r['lora_train_s'] / 60:.1f} min"
                  for _, r in lora.iterrows() if pd.notna(r.get("steps"))) + " (r 32, α 32, q/k/v of every block, "
              "Adafactor + cosine as in the paper).", "",
              "The reported cell is the largest NTPS-before margin over chance (ntps_lora.py); the full layer × "
              "fraction sweeps before and after are in `outputs/offline/{model}/{dataset}/ntps_lora_sweep.csv`.", ""]

    # --- timings
    L += ["## Wall time per stage", ""]
    if not times.empty:
        g = times.groupby(["stage", "model"], dropna=False)["seconds"].sum().unstack("model").fillna(0)
        cols = [c for c in g.columns if isinstance(c, str)]
        rows = [[st] + [f"{g.loc[st, m] / 60:.1f}" for m in cols] + [f"{g.loc[st].sum() / 60:.1f}"]
                for st in g.index]
        L += [_table(rows, ["stage (minutes)"] + cols + ["all"]), "",
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
        parts = [f"{v['model']}: {v['verdict']} (LODO r {_fmt(v['lodo_r'], 2)}, p {_fmt(v['perm_p'], 3)}, "
                 f"r_sel {_fmt(v['r_argmax'], 2)})" for v in vs]
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
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs_dir", type=Path, default=Path("outputs/offline"))
    p.add_argument("--report_dir", type=Path, default=Path("results/offline"))
    p.add_argument("--command", default="python reproduce_offline.py", help="the command shown in the report")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    for need in ("collected.csv", "analysis/analysis.json"):
        if not (args.runs_dir / need).is_file():
            raise SystemExit(f"ntps.report: {args.runs_dir / need} is missing; run reproduce_offline.py (collect.py "
                             "and analyze.py) first")
    summary = build(args.runs_dir, args.report_dir, args.command)
    print(f"[report] wrote {args.report_dir / 'REPORT.md'} ({len(summary['figures'])} figures)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
