"""REPORT.md of the offline reproduction, regenerated from committed files only.

Two steps. :func:`export` copies what a run tree (``--output_dir``, default ``outputs/offline``) holds into the
report directory ``--report_dir``: ``collected.csv.gz`` (collect.py's long table; ``collected_{label}.csv.gz``
for the tables of other rank tolerances, ``--tolerance LABEL=CSV``), ``lora.csv`` (the LoRA runs and their
budget), ``timings.csv`` (compute seconds per stage) and ``run.json`` (the run's command, environment, machine,
runner invocations and the analysis settings). :func:`regenerate` then computes every statistic from those files
alone (``analyze.analyze_table``: per-score results, the claims of :mod:`ntps.claims`, the tolerance and source
checks) and writes ``analysis.json``, ``REPORT.md``, ``summary.json``, ``claims.csv``, ``correlations.csv``,
``baselines.csv``, ``ntps_table.csv``, ``probes.csv`` and ``figures/*.png``. Both outputs are deterministic:
``python analyze.py --from DIR`` (= :func:`regenerate`) rewrites them byte for byte (:func:`check_regenerates`
says which files differ; the figures are not compared).

    python -m runs.report --output_dir outputs/offline --report_dir results/offline/2026-12
    python analyze.py --from results/offline/2026-12
"""

from __future__ import annotations

import gzip
import logging
import os
import platform
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

import analyze
import collect
from ntps import analysis, claims, cli
from ntps.io import atomic_path, environment_info, git_commit, read_json, write_json
from ntps.report import files_differ, fmt, json_ready, markdown_table
from runs import reproduce_offline

log = logging.getLogger(__name__)

TABLE, RUN, ANALYSIS = "collected.csv.gz", "run.json", "analysis.json"
#: The committed inputs of :func:`regenerate` and the text outputs it writes (compared by :func:`check_regenerates`).
INPUTS = (TABLE, RUN, "lora.csv", "timings.csv")
OUTPUTS = ("analysis.json", "REPORT.md", "summary.json", "claims.csv", "correlations.csv", "baselines.csv",
           "ntps_table.csv", "probes.csv")
#: Metrics of the per-score analysis: (column, label).
METRICS = [
    ("probe_test_acc", "held-out probe accuracy"),
    ("probe_test_nmse", "held-out normalised MSE"),
    ("lora_gain", "LoRA gain (Fig. 3)"),
    ("probe_train_acc", "in-sample probe accuracy (Fig. 2 ACC)"),
    ("probe_train_nmse", "in-sample normalised MSE (Fig. 2 MSE)"),
    ("probe_test_mse", "held-out MSE (not normalised)"),
    ("probe_train_mse", "in-sample MSE (not normalised)"),
    ("linear_test_acc", "linear-probe test accuracy"),
]
MAIN = "ntps_raw_descending"  # the paper's definition (SPEC §2.1)
#: The NTPS sweeps of the per-score section: the paper's, the authors' released order, the whitened variant.
SWEEPS = (MAIN, "ntps_raw_ascending", "ntps_whitened_descending")
ALPHA = analysis.ALPHA


# ------------------------------------------------------------------------------------------------
# Export: the run tree -> the committed inputs
# ------------------------------------------------------------------------------------------------

def write_table(table: pd.DataFrame, path: Path) -> None:
    """A long table as gzip-compressed CSV with no file name and a fixed time in the gzip header (the same table
    gives the same bytes, whatever the temporary file it is written through)."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(gzip.compress(table.to_csv(index=False).encode(), mtime=0))


def export(root: Path, report_dir: Path, command: str, settings: claims.Settings, tolerance: dict | None = None
           ) -> None:
    """Copy the inputs of :func:`regenerate` from the run tree ``root`` into ``report_dir`` (module docstring)."""
    # the checkout's state before anything is written: re-exporting into a committed report_dir must not read
    # its own half-written files as uncommitted changes (+dirty)
    here = {"environment": environment_info(), "report_code": {"code": reproduce_offline.code_digest(),
                                                               "git_commit": git_commit()}}
    report_dir.mkdir(parents=True, exist_ok=True)
    for old in report_dir.glob("collected_*.csv.gz"):
        old.unlink()
    write_table(pd.read_csv(root / "collected.csv", low_memory=False), report_dir / TABLE)
    for label, path in (tolerance or {}).items():
        write_table(pd.read_csv(path, low_memory=False), report_dir / f"collected_{label}.csv.gz")
    _csv(collect.lora_runs(root), report_dir / "lora.csv")
    _csv(collect.stage_times(root), report_dir / "timings.csv")
    record = collect.stage_record(root)
    write_json(report_dir / RUN, {"command": command, "report_dir": report_dir.as_posix(),
                                  "environment": here["environment"],
                                  "machine": {"cpus": _cpus(), "platform": platform.platform()},
                                  "invocations": record.get("invocations", []),
                                  "stage_code": stage_code(record),
                                  "report_code": here["report_code"],
                                  "analysis": vars(settings)})


def stage_code(record: dict) -> list[dict]:
    """The code versions the finished stages ran with: per (code digest, git commit), stages and seconds."""
    groups: dict = {}
    for st in record.get("stages", {}).values():
        if st.get("rc") == 0:
            g = groups.setdefault((st.get("code"), st.get("git_commit")), {"stages": 0, "seconds": 0.0})
            g["stages"] += 1
            g["seconds"] += float(st.get("seconds") or 0)
    return [{"code": c, "git_commit": gc, "stages": g["stages"], "seconds": round(g["seconds"], 1)}
            for (c, gc), g in sorted(groups.items(), key=lambda kv: -kv[1]["stages"])]


def _csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")


def _cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ------------------------------------------------------------------------------------------------
# Regenerate: the committed inputs -> every number of the report
# ------------------------------------------------------------------------------------------------

def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return pd.DataFrame()


def regenerate(report_dir: str | os.PathLike, plots: bool = True) -> dict:
    """Compute the analysis from the committed inputs of ``report_dir`` and write the report (module docstring).

    Returns summary.json's content. ValueError when an input is missing.
    """
    report_dir = Path(report_dir)
    for need in (TABLE, RUN):
        if not (report_dir / need).is_file():
            raise ValueError(f"{report_dir / need} is missing: not a report directory of runs/report.py")
    run = read_json(report_dir / RUN)
    settings = claims.Settings(**run.get("analysis", {}))
    args = SimpleNamespace(sign=None, all_datasets=False, **vars(settings))
    table = analysis.orient_scores(pd.read_csv(report_dir / TABLE, low_memory=False))
    tolerance = {p.name[len("collected_"):-len(".csv.gz")]: analysis.orient_scores(pd.read_csv(p, low_memory=False))
                 for p in sorted(report_dir.glob("collected_*.csv.gz"))}
    messages = []
    figs = report_dir / "figures"
    if plots:
        figs.mkdir(exist_ok=True)
    metrics = [m for m, _ in METRICS if m in table and table[m].notna().any()]
    res = analyze.analyze_table(table, metrics, args, lambda msg, level=logging.INFO: messages.append(msg),
                                tolerance=tolerance, plot_dir=figs if plots else None, plot_scores={MAIN})
    results = {m: [{k: v for k, v in r.items() if k != "r_all"} for r in rs] for m, rs in res["results"].items()}
    write_json(report_dir / ANALYSIS, json_ready({
        "inputs": sorted([TABLE, *(f"collected_{k}.csv.gz" for k in tolerance)]), "settings": vars(settings),
        "verdict_words": claims.VERDICTS, "claims": res["claims"], "tolerance": res["tolerance"],
        "dropped_directions": res["dropped_directions"], "results": results, "messages": messages}))
    analysis_json = read_json(report_dir / ANALYSIS)  # what is committed: the numbers the report shows
    return write_report(report_dir, run, analysis_json, table, plots)


def check_regenerates(report_dir: str | os.PathLike) -> list[str]:
    """Regenerate a copy of ``report_dir``'s inputs in a temporary directory and list the text outputs
    (:data:`OUTPUTS`) whose bytes differ from the committed ones (empty: the report is reproduced)."""
    report_dir = Path(report_dir)
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / report_dir.name
        copy.mkdir()
        for p in [*(report_dir / n for n in INPUTS), *sorted(report_dir.glob("collected_*.csv.gz"))]:
            if p.is_file():
                shutil.copy2(p, copy / p.name)
        regenerate(copy, plots=False)
        return files_differ(report_dir, copy, OUTPUTS)


# ------------------------------------------------------------------------------------------------
# Tables from the analysis
# ------------------------------------------------------------------------------------------------

def correlations(results: dict) -> pd.DataFrame:
    """One row per (model, score, metric) of the per-score analysis (results with an error left out)."""
    keys = ["n_datasets", "n_candidates", "layer", "fraction", "r_argmax", "n_tied_argmax", "perm_p", "perm_floor",
            "p_family", "null_q95", "lodo_r", "r_fixed", "p_fixed", "n_perm"]
    rows = [{"model": r["model"], "score": r["score"], "metric": metric, **{k: r.get(k) for k in keys}}
            for metric, rs in results.items() for r in rs if "error" not in r]
    return pd.DataFrame(rows, columns=["model", "score", "metric", *keys])


def claims_table(an: dict) -> pd.DataFrame:
    """One row per claim × model (and the joint rows): the numbers of the verdict section."""
    rows = []
    for r in an["claims"]["claims"] + an["claims"]["joint"]:
        lodo, rel, win = r.get("lodo") or {}, r.get("reliability") or {}, r.get("winner") or {}
        rows.append({"claim": r["claim"], "model": r["model"], "metric": r["metric"], "n_datasets": r["n_datasets"],
                     "n_candidates": r.get("n_candidates"), "r_sel": r.get("r_sel"), "null_q95": r.get("null_q95"),
                     "cell": _cell_text(win), "n_tied_argmax": r.get("n_tied_argmax"), "p": r.get("p"),
                     "floor": r.get("floor"), "exact": r.get("exact"), "n_perm": r.get("n_perm"),
                     "lodo_r": lodo.get("r"), "lodo_p": lodo.get("p"), "lodo_floor": lodo.get("floor"),
                     "lodo_folds_with_ties": lodo.get("folds_with_ties"), "reliability": rel.get("median"),
                     "verdict": r["verdict"]})
    return pd.DataFrame(rows)


def verdicts(an: dict) -> dict:
    """Per metric of an NTPS claim: one entry per model (the summary's ``verdicts``)."""
    out = {}
    for r in an["claims"]["claims"]:
        if r["family"] != "ntps":
            continue
        out.setdefault(r["metric"], []).append({
            "model": r["model"], "metric": r["metric"], "claim": r["claim"], "r_argmax": r.get("r_sel"),
            "perm_p": r.get("p"), "floor": r.get("floor"), "lodo_r": (r.get("lodo") or {}).get("r"),
            "lodo_p": (r.get("lodo") or {}).get("p"), "n_datasets": r["n_datasets"], "verdict": r["verdict"]})
    return out


def fixed_cell_ntps(collected: pd.DataFrame, fraction: float = 0.25) -> pd.DataFrame:
    """NTPS (descending, raw) at the last layer and a fraction fixed in advance, with chance: a cell
    nobody chose by looking at the metrics."""
    t = collected[collected["score"] == MAIN]
    t = t[np.isclose(t["fraction"].astype(float), fraction)]
    last = t.groupby("model")["layer"].transform("max")
    t = t[t["layer"] == last].rename(columns={"value": "ntps"})
    return t[["model", "dataset", "layer", "fraction", "k_V", "ntps", "chance"]].assign(
        margin=lambda x: x["ntps"] - x["chance"]).reset_index(drop=True)


def selected(an: dict, metric: str) -> pd.DataFrame:
    """Per (model, dataset): the NTPS claim's selected cell for ``metric`` (score, layer, f), its value and chance."""
    rows = []
    for r in an["claims"]["claims"]:
        if r["metric"] == metric and r["family"] == "ntps" and r.get("selected"):
            for d in r["selected"]:
                rows.append({"model": r["model"], "cell": _cell_text(r["winner"]), **d})
    return pd.DataFrame(rows)


def below_chance(an: dict) -> list[dict]:
    """Selected cells (each claim's winner, each sweep's own argmax per metric) with NTPS < chance somewhere."""
    out = []
    for r in an["claims"]["claims"]:
        below = [d for d in r.get("selected", []) if d["chance"] is not None and d["value"] < d["chance"]]
        if below:
            out.append({"model": r["model"], "where": f"{r['label']}: {_cell_text(r['winner'])}", "datasets": below})
    for metric, rs in an["results"].items():
        for r in rs:
            below = [d for d in r.get("per_dataset", []) if d.get("minus_chance") is not None and d["minus_chance"] < 0]
            if below:
                cell = _cell_text({"score": r["score"], "layer": r.get("layer"), "fraction": r.get("fraction")})
                out.append({"model": r["model"], "where": f"{metric}, {cell}", "datasets": below})
    return out


def fmt_p(p) -> str:
    """A p-value: three decimals, or two significant digits below 0.001 (the floors of exact tests)."""
    return fmt(p, ".1e") if p is not None and 0 < p < 0.001 else fmt(p, ".3f")


def _cell_text(c: dict) -> str:
    if not c:
        return "–"
    param = "fraction" if "fraction" in c else "k" if "k" in c else None
    parts = [f"{c['model']} " if "model" in c else "", c.get("score", ""),
             f" L{fmt(c.get('layer'), 'd')}" if c.get("layer") is not None else "",
             f" {'f' if param == 'fraction' else 'k'}={fmt(c[param], 'g')}" if param and c[param] is not None else ""]
    return "".join(parts)


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------

def scatter_figure(sel: pd.DataFrame, claim_rows: pd.DataFrame, metric: str, label: str, path: Path) -> Path | None:
    """One panel per model: the NTPS claim's selected cell vs ``metric`` (the analogue of Figs. 2/3)."""
    if sel.empty:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted(sel["model"].unique())
    fig, axes = plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.6), squeeze=False)
    for ax, model in zip(axes[0], models):
        part = sel[sel["model"] == model]
        ax.scatter(part["value"], part[metric], color="tab:blue")
        if part["chance"].notna().any():
            ax.scatter(part["chance"], part[metric], marker="|", color="grey", s=80, label="chance k_V/d")
            ax.legend(fontsize=7, loc="best")
        for _, row in part.iterrows():
            ax.annotate(row["dataset"], (row["value"], row[metric]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        c = claim_rows[(claim_rows["model"] == model) & (claim_rows["metric"] == metric)]
        title = model
        if not c.empty:
            c = c.iloc[0]
            title += (f"\nr_sel={fmt(c['r_sel'], '.2f')}  family-wise p={fmt(c['p'])}  LODO r={fmt(c['lodo_r'], '.2f')}"
                      f"\n{c['cell']}")
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("score at the selected cell")
        ax.set_ylabel(label)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------------

def write_report(report_dir: Path, run: dict, an: dict, table: pd.DataFrame, plots: bool) -> dict:
    """summary.json, the CSV tables, the figures and REPORT.md from the analysis ``an``; returns the summary."""
    info = claims.per_dataset(table)
    lora, times = _read_csv(report_dir / "lora.csv"), _read_csv(report_dir / "timings.csv")
    corr, ctab = correlations(an["results"]), claims_table(an)
    fixed = fixed_cell_ntps(table)
    ranking = analyze.ranking([r for rs in an["results"].values() for r in rs])
    label = dict(METRICS)
    figures = [f"ntps_vs_{m}.png" for m in label if not selected(an, m).empty]
    if plots:
        for name in figures:
            m = name[len("ntps_vs_"):-len(".png")]
            scatter_figure(selected(an, m), ctab, m, label[m], report_dir / "figures" / name)
    _csv(ctab, report_dir / "claims.csv")
    _csv(corr, report_dir / "correlations.csv")
    _csv(fixed, report_dir / "ntps_table.csv")
    _csv(info, report_dir / "probes.csv")
    _csv(ranking, report_dir / "baselines.csv")
    total = float(times["seconds"].sum()) if not times.empty else float("nan")
    summary = json_ready({
        "command": run.get("command"), "report_dir": run.get("report_dir", report_dir.name),
        "environment": run.get("environment", {}), "machine": run.get("machine", {}),
        "settings": an["settings"], "verdicts": verdicts(an), "claims": ctab.to_dict("records"),
        "tolerance_changes_a_verdict": (an.get("tolerance") or {}).get("any_change"),
        "correlations": corr.to_dict("records"), "ntps_fixed_cell": fixed.to_dict("records"),
        "per_dataset": info.to_dict("records"), "lora": lora.to_dict("records"), "timings_total_s": total,
        "timings_by_stage": times.groupby("stage")["seconds"].sum().to_dict() if not times.empty else {},
        "invocations": run.get("invocations", []), "stage_code": run.get("stage_code", []),
        "report_code": run.get("report_code", {}), "figures": figures})
    write_json(report_dir / "summary.json", summary)
    text = render(report_dir, summary, an, info, fixed, lora, times, ranking, corr, table)
    with atomic_path(report_dir / "REPORT.md") as tmp:
        Path(tmp).write_text(text)
    return summary


def render(report_dir, summary, an, info, fixed, lora, times, ranking, corr, table) -> str:
    env = summary["environment"]
    v = env.get("versions", {})
    s = an["settings"]
    L = ["# NTPS offline reproduction — report", "",
         f"Every number below is recomputed from the committed files of this directory by "
         f"`python analyze.py --from {summary['report_dir']}` ({s['n_perm']} permutation draws per family-wise test "
         f"or all n! orders when n! <= {analysis.EXACT_MAX}, {s['n_perm_lodo']} for each LODO null, "
         f"{s['n_boot']} bootstrap draws, seed {s['perm_seed']}). The run:", "", f"    {summary['command']}", "",
         f"git commit `{env.get('git_commit')}`; python {v.get('python')}, torch {v.get('torch')}, "
         f"transformers {v.get('transformers')}, scikit-learn {v.get('scikit-learn')}, numpy {v.get('numpy')}; "
         f"{summary['machine'].get('cpus')} CPU cores ({summary['machine'].get('platform')}).", "",
         *code_lines(summary), ""]
    L += verdict_section(an, info, fixed, table)
    L += setup_section(info)
    rel = reliabilities(info, [*zip(corr.get("model", []), corr.get("metric", [])),
                               *zip(ranking.get("model", []), ranking.get("metric", []))], s)
    L += per_score_section(corr, summary["figures"], rel)
    L += ranking_section(ranking, rel)
    L += sensitivity_section(an)
    L += chance_section(fixed, an)
    L += probe_section(info)
    L += lora_section(lora)
    L += timing_section(times, summary)
    L += ["## Caveats", "", *[f"- {c}" for c in CAVEATS], ""]
    return "\n".join(L)


def code_lines(summary: dict) -> list[str]:
    """Which code the stages ran (runs/reproduce_offline.py keys every stage on this digest), under which commits,
    and whether it is the stage code of the commit the report was exported from."""
    used, here = summary.get("stage_code") or [], summary.get("report_code") or {}
    if not used:
        return ["No runner stage record (stages.json)."]
    short = lambda c: str(c)[:12] + (" (+dirty: uncommitted changes)" if str(c).endswith("+dirty") else "")  # noqa: E731
    codes = sorted({str(u.get("code")) for u in used})
    commits = [f"`{short(u.get('git_commit'))}` ({u['stages']} stages, {u['seconds'] / 60:.0f} min)" for u in used]
    same = codes == [str(here.get("code"))]
    return ["Stage code (sha256 of the code the stages run, `runs/reproduce_offline.py` `code_digest`): "
            + ", ".join(f"`{c[:12]}`" for c in codes) + "; stages run at commit " + "; ".join(commits)
            + " (the runner's wall time per stage, process start-up included; the stage-time table below uses each "
            f"stage's own record). The report was exported at commit `{short(here.get('git_commit'))}`, whose stage "
            f"code is `{str(here.get('code'))[:12]}`: "
            + ("**the same** — every stage ran the stage code this commit has (the same digest; the analysis and "
               "report code are not part of it)." if same else "**not the same** for every stage.")]


CLAIM_HEADER = ["model", "datasets", "r_sel (null 95 %)", "selected cell (ties)", "family-wise p", "floor",
                "LODO r", "LODO p (floor)", "LODO folds with ties", "reliability", "verdict"]


def _claim_row(r: dict) -> list:
    if "p" not in r:
        return [r["model"], r["n_datasets"]] + ["–"] * 8 + [f"{r['verdict']} ({r.get('why', '')})"]
    lodo, rel = r.get("lodo") or {}, r.get("reliability") or {}
    reliability = (f"{fmt(rel.get('median'), '.2f')} ({fmt(rel.get('q05'), '.2f')}–{fmt(rel.get('q95'), '.2f')})"
                   if rel.get("median") is not None else "n/a")
    ties = f" ({r['n_tied_argmax']})" if r.get("n_tied_argmax", 1) > 1 else ""
    return [r["model"], r["n_datasets"], f"{fmt(r['r_sel'], '.2f')} ({fmt(r.get('null_q95'), '.2f')})",
            _cell_text(r.get("winner")) + ties, fmt_p(r["p"]), fmt_p(r["floor"]), fmt(lodo.get("r"), ".2f"),
            f"{fmt_p(lodo.get('p'))} ({fmt_p(lodo.get('floor'))})" if lodo else "–",
            f"{lodo['folds_with_ties']}/{r['n_datasets']}" if lodo else "–", reliability,
            r["verdict"] + (" (joint: no LODO)" if r["model"] == "all models" else "")]


def claim_block(an: dict, key: str) -> list[str]:
    rows = [r for r in an["claims"]["claims"] if r["claim"] == key]
    joint = [r for r in an["claims"]["joint"] if r["claim"] == key]
    if not rows:
        return []
    r0 = next((r for r in rows if "n_candidates" in r), rows[0])
    n_sup = sum(r["verdict"] == "supported" for r in rows)
    family = (f"{len(r0.get('scores', []))} score(s) × layers × f = {r0['n_candidates']} candidates"
              if "n_candidates" in r0 else "no candidates")
    tested = any("p" in r for r in rows)
    L = [f"**{r0['label']}** (`{r0['metric']}`; family: {family} for {r0['model']}) — "
         + (f"{n_sup} of {len(rows)} models support the claim." if tested else "not run."), "",
         markdown_table([_claim_row(r) for r in rows + joint], CLAIM_HEADER), ""]
    rel = next((r["reliability"] for r in rows if (r.get("reliability") or {}).get("why")), None)
    if rel:
        L += [f"Reliability n/a: {rel['why']}.", ""]
    return L


def verdict_section(an: dict, info: pd.DataFrame, fixed: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    L = ["## Do the paper's claims hold here?", "",
         "One family per claim: every score variant × layer × f examined for it, per model; `r_sel` is the paper's "
         "protocol (the best candidate, chosen on the same data) with the 95th percentile of its null; the "
         "family-wise p repeats the whole selection on the metric permuted across datasets (Westfall–Young max "
         "statistic); `floor` is the smallest p the test could give whatever the metric; LODO r picks the cell without "
         "the held-out dataset and predicts it by the dataset's rank within that cell (tied cells averaged), with its "
         "own permutation null; reliability is the test–retest Spearman of the metric's ranking (a correlation cannot "
         "meaningfully exceed it). The row `all models` is one family-wise p over the families of every model with "
         f"at least {analysis.MIN_DATASETS} datasets (the datasets they share, permuted together); it has no LODO, so "
         "its verdict is at best *argmax only*. Datasets: one per source.", ""]
    for c in claims.CLAIMS:
        if not c.in_sample:
            L += claim_block(an, c.key)
    L += ["Verdicts: " + "; ".join(f"**{k}** — {v}" for k, v in claims.VERDICTS.items()) + ".", ""]
    L += in_sample_section(an, info)
    L += below_chance_section(an, fixed, grid_below_chance(table))
    return L


def in_sample_section(an: dict, info: pd.DataFrame) -> list[str]:
    L = ["### What the in-sample metrics can and cannot say", ""]
    if {"n_texts", "d"} <= set(info.columns):
        for model, rows in info.groupby("model", sort=True):
            bad = rows[rows["n_texts"] < 2 * (rows["d"] + 1)]
            sat = ""
            if len(bad) and "probe_train_acc" in bad and bad["probe_train_acc"].notna().any():
                sat = (f"; their in-sample accuracy: median {fmt(bad['probe_train_acc'].median())} "
                       f"(min {fmt(bad['probe_train_acc'].min())})")
            L.append(f"- {model}: d = {fmt(rows['d'].iloc[0], 'd')}, so N >= 2(d + 1) = "
                     f"{fmt(2 * (rows['d'].iloc[0] + 1), 'd')} is needed; {len(bad)} of {len(rows)} datasets have "
                     f"fewer train texts{sat}.")
        L.append("")
    L += ["Below N = 2(d + 1) random labels are linearly separable with probability ≈ 1 (Cover's theorem): an "
          "in-sample accuracy ≈ 1 and a least-squares MSE ≈ 0 there say nothing about the representation. The "
          "in-sample claims are therefore tested on the datasets with N >= 2(d + 1) only; with too few of them they "
          "are not run.", ""]
    for c in claims.CLAIMS:
        if c.in_sample:
            L += claim_block(an, c.key)
    return L


def grid_below_chance(table: pd.DataFrame) -> pd.DataFrame:
    """Per model: cells of the paper's sweep (descending, raw; every dataset × layer × f) and how many lie below
    chance, with the datasets that have any."""
    t = table[(table["score"] == MAIN) & table["chance"].notna() & table["value"].notna()]
    rows = []
    for model, g in t.groupby("model", sort=True):
        below = g[g["value"] < g["chance"]]
        rows.append({"model": model, "cells": len(g), "below": len(below),
                     "datasets": sorted(below["dataset"].unique()), "n_datasets": g["dataset"].nunique()})
    return pd.DataFrame(rows)


def below_chance_section(an: dict, fixed: pd.DataFrame, grid: pd.DataFrame) -> list[str]:
    L = ["### NTPS below chance", "",
         "NTPS below its chance level k_V/d (the expected overlap with a random subspace of the same size) means "
         "span(U_k) lies *less* in span(V_k) than a random subspace would: no evidence of alignment for that dataset, "
         "whatever its rank among the datasets.", ""]
    if not grid.empty:
        L += ["Over the whole grid of the paper's sweep (descending, raw; every dataset × layer × f):", "",
              markdown_table([[r["model"], f"{r['below']}/{r['cells']}", f"{r['below'] / r['cells']:.1%}",
                               f"{len(r['datasets'])}/{r['n_datasets']}", ", ".join(r["datasets"]) or "–"]
                              for r in grid.to_dict("records")],
                             ["model", "cells below chance", "share", "datasets with any", "which"]), ""]
    low = fixed[fixed["margin"] < 0] if not fixed.empty else fixed
    if not fixed.empty:
        per = [f"{m}: {', '.join(f'{r.dataset} {r.ntps:.3f} < {r.chance:.3f}' for r in g.itertuples())}"
               for m, g in low.groupby("model", sort=True)]
        L += ["At the cell fixed in advance (last hidden state, f = 0.25): "
              + ("; ".join(per) if per else "no dataset of any model is below chance") + ".", ""]
    cases = below_chance(an)
    if not cases:
        return L + ["At no selected cell is a dataset's NTPS below its chance level.", ""]
    L += [f"At {len(cases)} selected cell(s) (a claim's selected cell, or a sweep's own best cell for a metric) "
          "some datasets have NTPS below its chance level k_V/d (the expected overlap with a random subspace of the "
          "same size). There span(U_k) lies *less* in span(V_k) than a random subspace would: the score is no "
          "evidence of alignment for those datasets, whatever its rank among them.", ""]
    rows = [[c["model"], c["where"], "; ".join(f"{d['dataset']} {fmt(d['value'], '.3f')} < {fmt(d['chance'], '.3f')}"
                                                for d in c["datasets"])] for c in cases]
    return L + [markdown_table(rows, ["model", "selected cell", "datasets: NTPS < chance"]), ""]


def setup_section(info: pd.DataFrame) -> list[str]:
    L = ["## Set-up", ""]
    cols = [("dataset_source", "source", "s"), ("num_classes", "C", "d"), ("n_texts", "N train", "d"),
            ("n_test", "N test", "d")]
    cols = [c for c in cols if c[0] in info]
    for model, rows in info.groupby("model", sort=True):
        d = fmt(rows["d"].iloc[0], "d") if "d" in rows else "–"
        L += [f"**{model}** (d = {d})", "",
              markdown_table([[r["dataset"]] + [fmt(r[c], f) for c, _, f in cols] for _, r in rows.iterrows()],
                             ["dataset"] + [h for _, h, _ in cols]), ""]
    return L


def reliabilities(info: pd.DataFrame, pairs, settings: dict) -> dict:
    """(model, metric) -> the test-retest reliability text of the metric's ranking over the datasets the
    per-score analysis uses (one per source; N >= 2(d + 1) for in-sample metrics): "median (5–95 %)" or "n/a"."""
    out = {}
    for model, metric in sorted(set(pairs)):
        if metric not in info:
            out[(model, metric)] = "n/a"
            continue
        datasets, _ = claims.metric_datasets(info, metric, model)
        rel = claims.metric_reliability(info, model, metric, datasets, claims.Settings(**settings))
        out[(model, metric)] = (f"{fmt(rel['median'], '.2f')} ({fmt(rel['q05'], '.2f')}–{fmt(rel['q95'], '.2f')})"
                                if rel.get("median") is not None else "n/a")
    return out


def per_score_section(corr: pd.DataFrame, figures: list[str], rel: dict) -> list[str]:
    L = ["## Spearman r of NTPS against each metric", "",
         "Each NTPS sweep on its own (its layer × f grid, one dataset per source): `r_sel` the paper's protocol, `p` "
         "its own selection repeated on permuted metrics (floor beside it), `p_family` the same r against the maximum "
         "over every score of the model (the p to quote when scores are compared), `LODO r` the cell chosen without "
         "the held-out dataset, `reliability` the test–retest Spearman of the metric's ranking (n/a: no sampling model "
         "for the metric in the long table). In-sample metrics use only the datasets with N >= 2(d + 1).", ""]
    header = ["metric", "model", "datasets", "r_sel", "p", "floor", "p_family", "null95", "LODO r", "layer, f",
              "reliability"]
    for score in SWEEPS:
        part = corr[corr["score"] == score]
        if part.empty:
            continue
        order = {m: i for i, (m, _) in enumerate(METRICS)}
        part = part.assign(_o=part["metric"].map(order)).sort_values(["_o", "model"], kind="stable")
        rows = [[r["metric"], r["model"], fmt(r["n_datasets"], "d"), fmt(r["r_argmax"], ".2f"), fmt_p(r["perm_p"]),
                 fmt_p(r["perm_floor"]), fmt_p(r["p_family"]), fmt(r["null_q95"], ".2f"),
                 fmt(r["lodo_r"], ".2f"),
                 f"{fmt(r['layer'], 'd')}, {fmt(r['fraction'], 'g')}" if pd.notna(r["layer"]) else "–",
                 rel.get((r["model"], r["metric"]), "n/a")] for _, r in part.iterrows()]
        L += [f"### {score}", "", markdown_table(rows, header), ""]
    label = dict(METRICS)
    for name in figures:
        m = name[len("ntps_vs_"):-len(".png")]
        L += [f"![NTPS vs {label[m]}](figures/{name})", ""]
    return L


def ranking_section(ranking: pd.DataFrame, rel: dict) -> list[str]:
    if ranking.empty:
        return []
    L = ["## Which training-free score tracks the metrics best?", "",
         "Every score of the same statistics (LogME, H-score, least-squares / ridge probe MSE negated as `-ls_mse`, "
         "the label rank, the label-free effective rank of the features, the NTPS sweeps and the scores derived from "
         "them), sorted by LODO r. `p` repeats each score's own selection; `p_family` compares its r_sel with the "
         "maximum over all scores of the model.", ""]
    header = ["score", "LODO r", "r_sel", "p", "p_family", "r_fixed (last layer)", "p_fixed"]
    for (model, metric), part in ranking.groupby(["model", "metric"], sort=True):
        rows = [[r["score"], fmt(r["lodo_r"], ".2f"), fmt(r["r_argmax"], ".2f"), fmt_p(r["perm_p"]),
                 fmt_p(r["p_family"]), fmt(r["r_fixed"], ".2f"), fmt_p(r["p_fixed"])]
                for _, r in part.iterrows()]
        L += [f"**{model} — {metric}** (reliability of the metric's ranking: {rel.get((model, metric), 'n/a')})", "",
              markdown_table(rows, header), ""]
    return L


def sensitivity_section(an: dict) -> list[str]:
    L = ["## Sensitivity", "", "### The other dataset of a shared source", ""]
    src = an["claims"].get("sources") or []
    if not src:
        L += ["No two datasets of one model share a source.", ""]
    else:
        rows = [[r["claim"], r["model"], r["variant"], r["n_datasets"], fmt(r["r_sel"], ".2f"), fmt_p(r["p"]),
                 fmt_p(r["floor"]), fmt(r["lodo_r"], ".2f")] for r in src]
        header = ["claim", "model", "datasets", "n", "r_sel", "family-wise p", "floor", "LODO r"]
        L += ["Family-wise p with every dataset (both members of a shared source), and with each other member "
              "swapped in for the headline one (no LODO null):", "", markdown_table(rows, header), ""]
    L += ["### Rank tolerance", ""]
    tol = an.get("tolerance")
    if not tol:
        L += ["Not run: no long table of K_sweep runs with other `--rcond` (pass them to runs/report.py as "
              "`--tolerance rcond_x10=CSV rcond_div10=CSV`).", ""]
    else:
        rows = [[r["tolerance"], r["claim"], r["model"], f"{r.get('n_datasets')} ({r.get('headline_n_datasets')})",
                 fmt(r["r_sel"], ".2f"), fmt_p(r["p"]), fmt_p(r["lodo_p"]), r["verdict"], r["headline_verdict"],
                 "yes" if r["changed"] else "no"] for r in tol["rows"]]
        changed = [r for r in tol["rows"] if r["changed"]]
        L += [("**A verdict changes** with the tolerance: " + "; ".join(
            f"{r['claim']} / {r['model']} at {r['tolerance']}: {r['headline_verdict']} → {r['verdict']}"
            for r in changed) + ".") if changed else "No verdict changes with the other tolerances.", "",
              markdown_table(rows, ["tolerance", "claim", "model", "datasets (headline)", "r_sel", "family-wise p",
                                    "LODO p", "verdict", "headline verdict", "changed"]), ""]
    L += dropped_text(an.get("dropped_directions") or [])
    return L


def dropped_text(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    df = pd.DataFrame(rows)
    out = []
    for (tol, model), part in df.groupby(["tolerance", "model"], sort=True):
        out.append([tol, model, f"{int((part['sigma_max'] > 0).sum())}/{len(part)}", fmt(part["sigma_max"].max(), "d"),
                    f"{int((part['c0_max'] > 0).sum())}/{len(part)}", fmt(part["c0_max"].max(), "d"),
                    *(fmt(part[c].max(), ".2e") if c in part else "n/a"
                      for c in ("fit_share_max", "c0_fit_share_max"))])
    header = ["tolerance", "model", "layers dropping Σ directions", "max Σ dropped", "layers dropping C0 directions",
              "max C0 dropped", "max share of the Σ LS fit dropped", "max share of the C0 LS fit dropped"]
    return ["Directions left out by the rank tolerance (d − rank, over layers; per layer and dataset in "
            "analysis.json). The share of the least-squares fit is tr(Aᵀ Q_d diag(1/b_d) Q_dᵀ A) / tr(Aᵀ B⁺ A) over "
            "the dropped eigenpairs (Q_d, b_d) of B = Σ (A = M) or C0 (A = C1), from the whitened sweeps (n/a: no "
            "whitened sweep in the table):", "", markdown_table(out, header), ""]


def chance_section(fixed: pd.DataFrame, an: dict) -> list[str]:
    L = ["## NTPS with chance levels", "",
         "At a cell fixed in advance (last hidden state, f = 0.25; descending, raw) — NTPS / chance k_V/d:", ""]
    models = sorted(fixed["model"].unique())
    piv = fixed.pivot_table(index="dataset", columns="model", values=["ntps", "chance"], aggfunc="first")
    L += [markdown_table([[ds] + [f"{piv.loc[ds, ('ntps', m)]:.3f} / {piv.loc[ds, ('chance', m)]:.3f}"
                                  if ("ntps", m) in piv.columns and pd.notna(piv.loc[ds, ("ntps", m)]) else "–"
                                  for m in models] for ds in piv.index], ["dataset"] + models), ""]
    s = selected(an, "probe_test_acc")
    if not s.empty and s["chance"].notna().any():
        cells = s.groupby("model")["cell"].first()
        piv = s.pivot_table(index="dataset", columns="model", values=["value", "chance"], aggfunc="first")
        shown = [m for m in sorted(cells.index) if ("value", m) in piv.columns]
        L += ["At the cell selected for held-out accuracy (per model, in the header):", "",
              markdown_table([[ds] + [f"{piv.loc[ds, ('value', m)]:.3f} / {piv.loc[ds, ('chance', m)]:.3f}"
                                      if pd.notna(piv.loc[ds, ("value", m)]) and pd.notna(piv.loc[ds, ("chance", m)])
                                      else "–" for m in shown] for ds in piv.index],
                             ["dataset"] + [f"{m} ({cells[m]})" for m in shown]), ""]
    return L


def probe_section(info: pd.DataFrame) -> list[str]:
    cols = [("n_texts", "N train", "d"), ("in_sample_informative", "N >= 2(d+1)", "s"),
            ("probe_train_acc", "train acc", ".3f"), ("probe_test_acc", "test acc", ".3f"),
            ("probe_train_nmse", "train nMSE", ".3f"), ("probe_test_nmse", "test nMSE", ".3f"),
            ("probe_test_mse", "test MSE", ".4f"), ("linear_test_acc", "linear probe test acc", ".3f")]
    cols = [c for c in cols if c[0] in info]
    rows = [[r["model"], r["dataset"]] + [fmt(r[c], f) if f != "s" else str(r[c]) for c, _, f in cols]
            for _, r in info.sort_values(["model", "dataset"]).iterrows()]
    return ["## Probe accuracies (last hidden state, mean pooling)", "",
            "nMSE = MSE / the MSE of predicting the train class proportions (1 = no better than that; the raw MSE "
            "scales with 1/C).", "", markdown_table(rows, ["model", "dataset"] + [h for _, h, _ in cols]), ""]


def lora_section(lora: pd.DataFrame) -> list[str]:
    L = ["## LoRA: gains and NTPS before/after", ""]
    if lora.empty:
        return L + ["No LoRA runs in this report.", ""]
    rows = [[r["model"], r["dataset"], fmt(r.get("linear_acc")), fmt(r.get("lora_acc")), fmt(r.get("gain"), "+.3f"),
             f"{fmt(r.get('layer'), 'd')}, {fmt(r.get('fraction'), 'g')}", fmt(r.get("ntps_before")),
             fmt(r.get("ntps_after")), fmt(r.get("chance"))] for _, r in lora.iterrows()]
    budget = lora_budget(lora)
    return L + [markdown_table(rows, ["model", "dataset", "linear acc", "LoRA acc", "gain", "layer, f", "NTPS before",
                                      "NTPS after", "chance"]), "",
                f"LoRA budget: {budget or '–'} (r 32, α 32, q/k/v of every block, Adafactor + cosine as in the paper). "
                "The cell shown is the largest NTPS-before margin over chance (runs/ntps_lora.py).", ""]


def lora_budget(lora: pd.DataFrame) -> str:
    """One line per distinct LoRA budget (steps × batch, lr, tokens) with its runs' texts and training minutes."""
    keys = ["steps", "batch_size", "lr", "max_length"]
    if not set(keys + ["n_train", "n_test", "lora_train_s"]) <= set(lora):
        return ""
    parts = []
    for key, g in lora.dropna(subset=["steps"]).groupby(keys, dropna=False):
        b = dict(zip(keys, key))
        mins = g["lora_train_s"] / 60
        parts.append(f"{fmt(b['steps'], 'd')} steps × batch {fmt(b['batch_size'], 'd')}, lr {fmt(b['lr'], 'g')}, "
                     f"{fmt(b['max_length'], 'd')} tokens on {len(g)} dataset(s) "
                     f"({fmt(g['n_train'].min(), 'd')}–{fmt(g['n_train'].max(), 'd')} train / "
                     f"{fmt(g['n_test'].min(), 'd')}–{fmt(g['n_test'].max(), 'd')} test texts; training "
                     f"{fmt(mins.min(), '.1f')}–{fmt(mins.max(), '.1f')} min per run)")
    return "; ".join(parts)


def timing_section(times: pd.DataFrame, summary: dict) -> list[str]:
    L = ["## Wall time per stage", ""]
    if times.empty:
        return L + ["No stage records.", ""]
    g = times.groupby(["stage", "model"], dropna=False)["seconds"].sum().unstack("model").fillna(0)
    cols = [c for c in g.columns if isinstance(c, str)]
    rows = [[st] + [f"{g.loc[st, m] / 60:.1f}" for m in cols] + [f"{g.loc[st].sum() / 60:.1f}"] for st in g.index]
    return L + [markdown_table(rows, ["stage (minutes)"] + cols + ["all"]), "",
                f"Total: **{summary['timings_total_s'] / 60:.0f} min** of stage time: the last finished run of each "
                "stage (each stage's own record: cache.py's `meta.json`, the runner's `stages.json`); runs a later "
                "invocation replaced are not counted. Light stages (K_sweep, scores, probes, tolerance sweeps) may run "
                "two at a time (the runner's `--jobs`), so their times overlap and the elapsed time of the invocations "
                "is shorter. Runner invocations (start, stages run, stages up to date, elapsed): "
                + ("; ".join(f"{i.get('started')} ({i.get('ran')} run, {i.get('skipped')} up to date, "
                             f"{(i.get('seconds') or 0) / 60:.1f} min)" for i in summary["invocations"]) or "–") + ".",
                ""]


CAVEATS = [
    "`r_sel` (the paper's protocol) is high by construction; read the family-wise p with its floor and the LODO r "
    "with its null p. A test whose floor is >= 0.05 is untestable, not negative.",
    "The reliability bootstrap redraws each accuracy from a binomial with its test size: it ignores the noise of "
    "fitting the probe (an upper bound); for the LoRA gain it draws the two accuracies independently although they "
    "are measured on the same texts. MSE metrics have no sampling model in the long table.",
    "Datasets of one source are counted once; the sensitivity section shows the other choice and all datasets.",
    "The models' metric rankings are similar, so the models are not independent replications; the `all models` row "
    "tests the claim once over all of them.",
]


def parse_args(argv=None):
    p = cli.parser("runs/report.py", __doc__)
    cli.add_output_args(p, default="outputs/offline", overwrite=None,
                        help="output root of the runs (holds collected.csv)")
    p.add_argument("--report_dir", type=Path, default=Path("results/offline"), help="where REPORT.md goes")
    p.add_argument("--command", default="python -m runs.reproduce_offline", help="the command shown in the report")
    p.add_argument("--tolerance", nargs="+", default=[], metavar="LABEL=CSV",
                   help="long tables (collect.py) of K_sweep runs with other rank tolerances, e.g. rcond_x10=x10.csv")
    p.add_argument("--n_perm", type=int, default=claims.Settings.n_perm, help="draws per family-wise test")
    p.add_argument("--n_perm_lodo", type=int, default=claims.Settings.n_perm_lodo, help="draws per LODO null")
    p.add_argument("--n_boot", type=int, default=claims.Settings.n_boot, help="draws of the reliability bootstrap")
    p.add_argument("--perm_seed", type=int, default=0, help="seed of every permutation and bootstrap")
    p.add_argument("--no_plots", action="store_true", help="skip the figures")
    return cli.parse(p, argv)


def build(root: Path, report_dir: Path, command: str, settings: claims.Settings | None = None,
          tolerance: dict | None = None, plots: bool = True) -> dict:
    """:func:`export` the run tree ``root`` into ``report_dir``, then :func:`regenerate`; returns the summary."""
    export(Path(root), Path(report_dir), command, settings or claims.Settings(), tolerance)
    return regenerate(report_dir, plots=plots)


def main(args) -> dict:
    root = Path(args.output_dir)
    if not (root / "collected.csv").is_file():
        raise ValueError(f"{root / 'collected.csv'} is missing; run runs/reproduce_offline.py (collect.py) first")
    tolerance = {}
    for pair in args.tolerance:
        label, sep, path = pair.partition("=")
        if not sep or not label or not Path(path).is_file():
            raise ValueError(f"--tolerance takes LABEL=CSV with an existing CSV, got {pair!r}")
        tolerance[label] = Path(path)
    settings = claims.Settings(n_perm=args.n_perm, n_perm_lodo=args.n_perm_lodo, perm_seed=args.perm_seed,
                               n_boot=args.n_boot)
    summary = build(root, args.report_dir, args.command, settings, tolerance, plots=not args.no_plots)
    log.info("wrote %s (%d figures); regenerate with: python analyze.py --from %s", args.report_dir / "REPORT.md",
             len(summary["figures"]), args.report_dir)
    return summary


if __name__ == "__main__":
    cli.run(main, parse_args, "runs/report.py")
