"""Fig. 3: NTPS vs the LoRA gain (= LoRA test accuracy - linear-probe test accuracy).

As in the paper, r = spearman(NTPS, -gain) (ranks of the gain reversed): a positive r means
that higher NTPS goes with a *smaller* LoRA gain. The gain axis is drawn inverted (up = smaller
gain) and labelled so. Writes ``{out_dir}/fig3.pdf/.png`` and ``fig3_r.json``; prints the r table.

    python fig_plot/fig3.py                                      # authors' data (fig3.json)
    python fig_plot/fig3.py --csv outputs/collected.csv --score ntps_raw_descending
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fig_plot import common  # noqa: E402
from ntps import analysis, plotting  # noqa: E402

DEFAULT_INPUT = common.DATA_DIR / "fig3.json"
YLABEL = "LoRA gain (LoRA − linear test acc.)\naxis inverted: up = smaller gain"
YLABEL_RANKS = "rank of −gain (high = smaller LoRA gain)"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ranks", action="store_true", help="plot ranks instead of values")
    common.add_common_args(p, default_input=DEFAULT_INPUT)
    return p.parse_args(argv)


def main(args):
    metric = analysis.FIGURE_METRICS["lora_gain"]
    sign = analysis.metric_sign(metric)  # -1
    table, source = common.load_table(args, DEFAULT_INPUT, metric)
    points = common.model_points(table, metric, sign, source, n_perm=args.n_perm, seed=args.perm_seed)
    if not points:
        raise SystemExit("no model with enough data to plot")
    fig = common.correlation_figure(points, sign=sign, ylabel=YLABEL, ylabel_ranks=YLABEL_RANKS,
                                    ranks=args.ranks)
    paths = plotting.save(fig, args.out_dir, "fig3", formats=args.formats, dpi=args.dpi)
    how = "spearman(NTPS, -(lora_acc - linear_acc)); r > 0: higher NTPS, smaller LoRA gain"
    common.write_r_json(args.out_dir, "fig3", points, {"figure": "fig3", "metric": metric, "sign": sign,
                                                        "r_definition": how, "source": source})
    print(common.r_table(points, f"Fig. 3 LoRA gain: r = {how}"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return points


if __name__ == "__main__":
    main(parse_args())
