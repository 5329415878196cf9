"""Regenerate Figs. 1-3 and print the combined per-model Spearman r table.

On the authors' data (default) the table is checked against the r printed in the paper
(SPEC §4); the exit status is 1 if any differs at two decimals. With ``--csv`` (our runs,
from collect.py) Figs. 2-3 are drawn from our table instead and the table adds, per panel, the
permutation p-value of the (layer, f) selection and the leave-one-dataset-out r.

    python fig_plot/make_all.py                       # -> fig_plot/out/
    python fig_plot/make_all.py --csv outputs/collected.csv --score ntps_raw_descending --out_dir outputs/figs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fig_plot import common, fig1, fig2, fig3  # noqa: E402
from ntps.io import write_json  # noqa: E402
from ntps.report import fmt  # noqa: E402

#: Spearman r printed in the paper's figures (SPEC §4), keyed by short model name.
PAPER_R = {
    "Qwen2-0.5B": (0.69, 0.70, 0.77),
    "Qwen2-1.5B": (0.64, 0.68, 0.67),
    "Qwen2-7B": (0.82, 0.68, 0.59),
    "OpenELM-270M": (0.57, 0.42, 0.87),
    "OpenELM-450M": (0.52, 0.46, 0.87),
    "OpenELM-1_1B": (0.73, 0.43, 0.90),
    "OpenELM-3B": (0.66, 0.73, 0.52),
    "Meta-Llama-3-8B": (0.72, 0.52, 0.40),
}
PANELS = ("fig2_acc", "fig2_mse", "fig3")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out_dir", type=Path, default=common.DEFAULT_OUT)
    p.add_argument("--csv", type=Path, default=None, help="draw Figs. 2-3 from our collected table")
    p.add_argument("--fig1_input", type=Path, default=None, help="Fig. 1 JSON (default: authors')")
    p.add_argument("--score", default=None, help="score of the collected table (e.g. ntps_raw_descending)")
    p.add_argument("--unique_only", action="store_true")
    p.add_argument("--n_perm", type=int, default=1000)
    p.add_argument("--perm_seed", type=int, default=0, help="seed of the permutation test")
    p.add_argument("--dpi", type=int, default=200)
    p.add_argument("--formats", nargs="+", default=["pdf", "png"])
    return p.parse_args(argv)


def main(args):
    t0 = time.perf_counter()
    out = ["--out_dir", str(args.out_dir), "--dpi", str(args.dpi), "--formats", *args.formats]
    src = []
    if args.csv is not None:
        src = ["--csv", str(args.csv), "--n_perm", str(args.n_perm), "--perm_seed", str(args.perm_seed)]
        src += ["--score", args.score] if args.score else []
        src += ["--unique_only"] if args.unique_only else []
    f1 = ["--input", str(args.fig1_input)] if args.fig1_input else []
    fig1.main(fig1.parse_args(out + f1))
    print()
    results = {
        "fig2_acc": fig2.main(fig2.parse_args(["--metric", "acc", *out, *src])),
        "fig2_mse": fig2.main(fig2.parse_args(["--metric", "mse", *out, *src])),
        "fig3": fig3.main(fig3.parse_args([*out, *src])),
    }
    table, ok = combined_table(results, check_paper=args.csv is None)
    print()
    print(table)
    write_json(Path(args.out_dir) / "r_table.json", {
        "source": "csv" if args.csv else "paper",
        "r": {panel: {common.short_model(p["model"]): p["r"] for p in pts} for panel, pts in results.items()},
        "matches_paper": ok if args.csv is None else None})
    print(f"\nfigures in {args.out_dir} ({time.perf_counter() - t0:.1f} s)")
    return ok


def combined_table(results: dict, check_paper: bool) -> tuple[str, bool]:
    """Per-model r of the three panels; with ``check_paper`` also the paper's values."""
    by_model: dict[str, dict] = {}
    for panel, points in results.items():
        for p in points:
            by_model.setdefault(common.short_model(p["model"]), {})[panel] = p
    models = common.sort_models(by_model)
    ok = True
    head = "Spearman r per model (Fig. 2 MSE: spearman(NTPS, -MSE); Fig. 3: spearman(NTPS, -LoRA gain))"
    lines = [head]
    if check_paper:
        lines.append(f"{'model':<18} {'F2 ACC':>7} {'paper':>6} {'F2 MSE':>7} {'paper':>6} "
                     f"{'F3 gain':>7} {'paper':>6}  match")
        for m in models:
            cells, match = [], True
            for i, panel in enumerate(PANELS):
                r = by_model[m].get(panel, {}).get("r", float("nan"))
                ref = PAPER_R.get(m, (None,) * 3)[i]
                match &= ref is not None and f"{r:.2f}" == f"{ref:.2f}"
                cells.append(f"{r:>7.2f} {ref if ref is not None else float('nan'):>6.2f}")
            ok &= match
            lines.append(f"{m:<18} " + " ".join(cells) + f"  {'yes' if match else 'NO'}")
        lines.append("all panels equal SPEC §4 to two decimals" if ok else "MISMATCH with SPEC §4")
    else:
        lines.append(f"{'model':<18} " + " ".join(f"{p:>22}" for p in PANELS))
        lines.append(f"{'':<18} " + " ".join(f"{'r / perm_p / LODO_r':>22}" for _ in PANELS))
        for m in models:
            cells = []
            for panel in PANELS:
                p = by_model[m].get(panel)
                cells.append(f"{'-':>22}" if p is None else
                             f"{p['r']:>6.2f} / {fmt(p['perm_p'], '.3f'):>5} / "
                             f"{fmt(p['lodo_r'], '.2f'):>5}")
            lines.append(f"{m:<18} " + " ".join(cells))
    return "\n".join(lines), ok


if __name__ == "__main__":
    sys.exit(0 if main(parse_args()) else 1)
