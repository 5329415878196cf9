"""Fig. 2: NTPS vs the sklearn probes' train accuracy (``--metric acc``) or train MSE (``--metric mse``).

One panel per model (2 x 4 for the paper's eight), Spearman r in each title, as the paper
computes it: r = spearman(NTPS, acc) and, for MSE, r = spearman(NTPS, -MSE) (ranks of MSE
reversed; the MSE axis is drawn inverted so that up = lower MSE). Writes
``{out_dir}/fig2_{metric}.pdf/.png`` and ``fig2_{metric}_r.json`` (the r table), and prints the r table.

    python fig_plot/fig2.py --metric acc                        # authors' data (fig2_1.json)
    python fig_plot/fig2.py --metric mse                        # authors' data (fig2_2.json)
    python fig_plot/fig2.py --metric acc --csv outputs/collected.csv --score ntps_raw_descending
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fig_plot import common  # noqa: E402
from ntps import analysis, plotting  # noqa: E402

INPUTS = {"acc": common.DATA_DIR / "fig2_1.json", "mse": common.DATA_DIR / "fig2_2.json"}
LABELS = {
    "acc": ("train accuracy (logistic probe)", "rank of train accuracy"),
    "mse": ("train MSE (linear probe)\naxis inverted: up = lower MSE",
            "rank of −MSE (high = lower MSE)"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--metric", choices=["acc", "mse"], default="acc")
    p.add_argument("--ranks", action="store_true", help="plot ranks instead of values")
    common.add_common_args(p, default_input=None)
    return p.parse_args(argv)


def main(args):
    metric = analysis.FIGURE_METRICS[args.metric]
    sign = analysis.metric_sign(metric)
    table, source = common.load_table(args, INPUTS[args.metric], metric)
    points = common.model_points(table, metric, sign, source, n_perm=args.n_perm, seed=args.perm_seed)
    if not points:
        raise SystemExit("no model with enough data to plot")
    ylabel, ylabel_ranks = LABELS[args.metric]
    fig = common.correlation_figure(points, sign=sign, ylabel=ylabel, ylabel_ranks=ylabel_ranks,
                                    ranks=args.ranks)
    stem = f"fig2_{args.metric}"
    paths = plotting.save(fig, args.out_dir, stem, formats=args.formats, dpi=args.dpi)
    how = "spearman(NTPS, acc)" if args.metric == "acc" else "spearman(NTPS, -MSE)"
    common.write_r_json(args.out_dir, stem, points, {"figure": stem, "metric": metric, "sign": sign,
                                                      "r_definition": how, "source": source})
    print(common.r_table(points, f"Fig. 2 {args.metric.upper()}: r = {how}"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return points


if __name__ == "__main__":
    main(parse_args())
