"""Shared code of the correlation figures (Figs. 2 and 3): inputs, per-model points, r tables.

Two inputs, one code path:

- ``--input`` the authors' JSON (``fig_plot/data``): one published NTPS per (model, dataset),
  i.e. a single candidate -- the r is recomputed, nothing is selected, and no selection-aware
  statistics can be given (the candidates the authors chose from were not published);
- ``--csv`` our long table from ``collect.py`` (one ``--score``, e.g. ``ntps_raw_descending``): per
  model, the (layer, f) maximising the oriented Spearman r over the datasets (the paper's protocol),
  reported with the permutation p-value of the whole selection and the leave-one-dataset-out r
  (SPEC §5).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from ntps import analysis, plotting  # noqa: E402
from ntps.report import fmt  # noqa: E402

log = logging.getLogger("fig_plot")
DATA_DIR = REPO_ROOT / "fig_plot" / "data"
DEFAULT_OUT = REPO_ROOT / "fig_plot" / "out"
#: Panel order of the paper (SPEC §3); other models follow alphabetically.
MODEL_ORDER = ["Qwen2-0.5B", "Qwen2-1.5B", "Qwen2-7B", "OpenELM-270M", "OpenELM-450M", "OpenELM-1_1B",
               "OpenELM-3B", "Meta-Llama-3-8B"]
#: Canonical dataset order (SPEC §3) for colours and legends; short names.
DATASET_ORDER = ["rotten_tomatoes", "sst2", "imdb", "emotion", "medical", "clickbait",
                 "climate_sentiment", "Bias_identification", "banking77", "sms_spam",
                 "intent_classification", "common_sense"]
_DATASET_ALIASES = {"medical_questions_pairs": "medical", "commonsense_qa": "common_sense",
                    "clickbait_title_classification": "clickbait"}


def short_model(name: str) -> str:
    return str(name).rstrip("/").split("/")[-1].split("__")[-1]


def short_dataset(name: str) -> str:
    short = str(name).rstrip("/").split("/")[-1].split("__")[-1]
    return _DATASET_ALIASES.get(short, short)


def sort_models(models) -> list:
    rank = {m: i for i, m in enumerate(MODEL_ORDER)}
    return sorted(models, key=lambda m: (rank.get(short_model(m), len(rank)), str(m)))


def sort_datasets(datasets) -> list:
    rank = {d: i for i, d in enumerate(DATASET_ORDER)}
    return sorted(datasets, key=lambda d: (rank.get(short_dataset(d), len(rank)), str(d)))


def add_common_args(p: argparse.ArgumentParser, default_input: Path | None) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", type=Path, default=None,
                     help=f"the authors' figure JSON (default: {default_input and default_input.name} "
                          "in fig_plot/data)")
    src.add_argument("--csv", type=Path, default=None, help="our long table from collect.py")
    p.add_argument("--out_dir", type=Path, default=DEFAULT_OUT, help="PDF/PNG folder (default fig_plot/out)")
    p.add_argument("--dpi", type=int, default=200, help="PNG resolution")
    p.add_argument("--formats", nargs="+", default=["pdf", "png"])
    g = p.add_argument_group("--csv options")
    g.add_argument("--score", default=None,
                   help="score of the table to plot (e.g. ntps_raw_descending); needed when it holds several")
    g.add_argument("--unique_only", action="store_true",
                   help="only candidates whose subspaces are uniquely defined (SPEC §2.0)")
    g.add_argument("--n_perm", type=int, default=1000, help="permutations of the selection test")
    g.add_argument("--perm_seed", type=int, default=0, help="seed of the permutation test")


def select_score(table: pd.DataFrame, score=None, unique_only=False) -> pd.DataFrame:
    """Keep one score of a collected table, oriented (higher = better); error if the choice is ambiguous."""
    if score is not None:
        table = table[table["score"].astype(str) == str(score)]
        if table.empty:
            raise SystemExit(f"no rows with score = {score!r}")
    elif table["score"].nunique() > 1:
        raise SystemExit(f"the table holds several scores {sorted(table['score'].unique())}; pick one with --score")
    if unique_only:
        table = analysis.unique_only(table)
    return analysis.orient_scores(table)


def load_table(args, default_input: Path, metric: str) -> tuple[pd.DataFrame, str]:
    """The tidy table for one figure and its source kind (``paper`` or ``csv``)."""
    if args.csv is not None:
        table = pd.read_csv(args.csv)
        if metric not in table:
            raise SystemExit(f"{args.csv} has no column {metric!r} (run collect.py on complete runs?)")
        return select_score(table, args.score, args.unique_only), "csv"
    path = args.input or default_input
    table = analysis.paper_table(path, metric=None if metric == "lora_gain" else metric)
    if metric not in table:
        raise SystemExit(f"{path} holds no {metric!r} data (wrong figure file?)")
    return table, "paper"


def model_points(table: pd.DataFrame, metric: str, sign: int, source: str, n_perm: int = 1000,
                 seed: int = 0) -> list[dict]:
    """One dict per model: the selected NTPS per dataset, the metric, r and its honest companions."""
    rows = []
    for model in sort_models(table["model"].unique()):
        grid = analysis.build_grid(table, metric, model=model)
        res = analysis.analyze_grid(grid, sign=sign, n_perm=n_perm, seed=seed)
        if "error" in res:
            log.warning("%s skipped: %s", short_model(model), res["error"])
            continue
        order = sort_datasets(grid.datasets)
        idx = [grid.datasets.index(d) for d in order]
        c = int(np.nanargmax(res["r_all"]))
        rows.append({"model": model, "datasets": order, "ntps": grid.X[c, idx], "metric": grid.y[idx],
                     "r": res["r_argmax"], "layer": res["layer"], "param": grid.param,
                     "param_value": res.get(grid.param), "n_candidates": grid.n_candidates,
                     "perm_p": res["perm_p"], "null_q95": res["null_q95"], "lodo_r": res["lodo_r"],
                     "source": source})
    return rows


def r_table(points: list[dict], title: str) -> str:
    """Plain-text per-model table of r (and, for our runs, the selection-aware statistics)."""
    lines = [title]
    if points and points[0]["source"] == "paper":
        lines.append(f"{'model':<18} {'r':>6}  (authors' selected NTPS; selection candidates unpublished)")
        lines += [f"{short_model(p['model']):<18} {p['r']:>6.2f}" for p in points]
        return "\n".join(lines)
    lines.append(f"{'model':<18} {'r':>6} {'layer':>5} {'f/k':>6} {'cands':>5} {'perm_p':>7} "
                 f"{'null95':>6} {'LODO_r':>6}")
    for p in points:
        lines.append(f"{short_model(p['model']):<18} {p['r']:>6.2f} {fmt(p['layer'], 'd'):>5} "
                     f"{fmt(p['param_value'], 'g'):>6} {p['n_candidates']:>5} {fmt(p['perm_p'], '.3f'):>7} "
                     f"{fmt(p['null_q95'], '.2f'):>6} {fmt(p['lodo_r'], '.2f'):>6}")
    lines.append("perm_p: permutation p of the argmax selection; null95: 95th percentile of the best r "
                 "on shuffled metrics; LODO_r: leave-one-dataset-out r")
    return "\n".join(lines)


def correlation_figure(points: list[dict], *, sign: int, ylabel: str, ylabel_ranks: str, ranks: bool,
                       suptitle: str | None = None):
    """A grid of NTPS-vs-metric panels, Spearman r in each title.

    For ``sign = -1`` the value axis is inverted so that a positive r looks like a rising
    cloud; ``ylabel`` must say so. With ``ranks`` the panels show ranks (of NTPS and of
    ``sign * metric``), as Spearman's r sees them.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    plotting.setup()
    all_ds = sort_datasets({d for p in points for d in p["datasets"]})
    ncols = min(4, len(points))
    legend_ncol = max(1, min(6, int((2.6 * ncols + 1.15) // 1.9)))  # ~1.9 in per legend entry
    legend_rows = int(np.ceil(len(all_ds) / legend_ncol))
    two_line = any(p["source"] == "csv" for p in points)
    fig, axes = plotting.grid(len(points), ncols=ncols, margins=(1.0, 0.15, 0.7 + 0.2 * legend_rows,
                                                             0.45 if two_line else 0.3),
                              hspace=0.75 if two_line else 0.45)
    styles = plotting.style_for([short_dataset(d) for d in all_ds])
    for ax, p in zip(axes, points):
        x, y = np.asarray(p["ntps"]), np.asarray(p["metric"])
        if ranks:
            x, y = rankdata(x), rankdata(sign * y)
        for xi, yi, ds in zip(x, y, p["datasets"]):
            st = styles[short_dataset(ds)]
            ax.plot(xi, yi, linestyle="", marker=st["marker"], markersize=5.5, color=st["color"],
                    markeredgecolor="black", markeredgewidth=0.4, zorder=3)
        if not ranks and sign < 0:
            ax.invert_yaxis()
        where = ""
        if p["source"] == "csv":
            where = f"\nlayer {fmt(p['layer'], 'd')}, {p['param'][0]}={fmt(p['param_value'], 'g')}"
            if p["perm_p"] is not None:
                where += f", p={p['perm_p']:.3f}"
        ax.set_title(f"{short_model(p['model'])}  (r = {p['r']:.2f}){where}")
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5))
    fig.supxlabel("rank of NTPS" if ranks else "NTPS", y=(0.12 + 0.2 * legend_rows) / fig.get_figheight(),
                  va="bottom")
    fig.supylabel(ylabel_ranks if ranks else ylabel, x=0.1 / fig.get_figwidth(), ha="left")
    if suptitle:
        fig.suptitle(suptitle)
    handles = [Line2D([], [], linestyle="", marker=styles[short_dataset(d)]["marker"],
                      color=styles[short_dataset(d)]["color"], markeredgecolor="black",
                      markeredgewidth=0.4, label=short_dataset(d)) for d in all_ds]
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.0), ncol=legend_ncol,
               frameon=False)
    return fig


def write_r_json(out_dir: Path, stem: str, points: list[dict], extra: dict) -> None:
    from ntps.io import write_json

    rows = [{k: v for k, v in p.items() if k not in ("ntps", "metric", "datasets")} for p in points]
    for p, row in zip(points, rows):
        row["per_dataset"] = [{"dataset": d, "ntps": float(x), "metric": float(y)}
                              for d, x, y in zip(p["datasets"], p["ntps"], p["metric"])]
    write_json(Path(out_dir) / f"{stem}_r.json", {**extra, "models": rows})
