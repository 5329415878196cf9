"""Fig. 1: emotion words projected on the top-2 perception (U) and autoregressive (V) directions.

Layer 0 (SPEC §3): each word of Joy {lovely, enjoyable, amazing, delighted},
Sad {horrible, disappointing, unhappy, lonely} and Be {am, is, are, was, were} is tokenised
alone, its layer-0 states averaged and projected. Each panel gets a logistic-regression
Joy-vs-Sad boundary (sklearn ``LogisticRegression``, default C = 1, fit on the 8 emotion points
of that panel after standardising each coordinate, so the boundary does not depend on the panel's
scale -- the V coordinates are ~100x smaller than the U ones; Be words are not used in the fit).
Writes ``{out_dir}/fig1.pdf/.png`` and ``fig1_boundaries.json``, and prints each boundary's
Joy-vs-Sad training accuracy.

Inputs: ``--input`` JSON ``{"U"|"V": {category: [[[x, y]], ...]}}`` (the authors' format,
default ``fig_plot/data/fig1.json``; words in the order above), or ``--csv`` with columns
``space, category, word, x, y`` (space in U/V) for projections from our runs.

    python fig_plot/fig1.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from fig_plot import common  # noqa: E402
from ntps import plotting  # noqa: E402
from ntps.io import write_json  # noqa: E402

DEFAULT_INPUT = common.DATA_DIR / "fig1.json"
WORDS = {
    "Joy": ["lovely", "enjoyable", "amazing", "delighted"],
    "Sad": ["horrible", "disappointing", "unhappy", "lonely"],
    "Be": ["am", "is", "are", "was", "were"],
}
COLORS = {"Joy": "#e6862a", "Sad": "#3b6fb6", "Be": "#7f7f7f"}
MARKERS = {"Joy": "o", "Sad": "s", "Be": "^"}
TITLES = {"U": "perception subspace U (top-2)", "V": "autoregressive subspace V (top-2)"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", type=Path, default=None, help="projections JSON (default: the authors')")
    src.add_argument("--csv", type=Path, default=None, help="projections CSV: space,category,word,x,y")
    p.add_argument("--out_dir", type=Path, default=common.DEFAULT_OUT)
    p.add_argument("--dpi", type=int, default=200)
    p.add_argument("--formats", nargs="+", default=["pdf", "png"])
    p.add_argument("--no_labels", action="store_true", help="do not write the words beside the points")
    return p.parse_args(argv)


def load_points(args) -> dict:
    """``{space: {category: [(word, x, y), ...]}}``."""
    if args.csv is not None:
        import pandas as pd

        df = pd.read_csv(args.csv)
        missing = {"space", "category", "word", "x", "y"} - set(df.columns)
        if missing:
            raise SystemExit(f"{args.csv}: missing column(s) {sorted(missing)}")
        out: dict = {}
        for row in df.itertuples(index=False):
            out.setdefault(str(row.space), {}).setdefault(str(row.category), []).append(
                (str(row.word), float(row.x), float(row.y)))
        return out
    data = json.loads(Path(args.input or DEFAULT_INPUT).read_text())
    out = {}
    for space, cats in data.items():
        for cat, pts in cats.items():
            xy = np.asarray(pts, dtype=float).reshape(len(pts), -1)
            if xy.shape[1] != 2:
                raise SystemExit(f"{space}/{cat}: expected 2-D points, got shape {xy.shape}")
            words = WORDS.get(cat, [])
            words = words if len(words) == len(xy) else [f"{cat}{i}" for i in range(len(xy))]
            out.setdefault(space, {})[cat] = [(w, x, y) for w, (x, y) in zip(words, xy)]
    return out


def fit_boundary(points: dict):
    """Logistic Joy (1) vs Sad (0) on one panel's points; returns (model, training accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xy = np.array([[x, y] for c in ("Joy", "Sad") for _, x, y in points[c]])
    lab = np.array([1] * len(points["Joy"]) + [0] * len(points["Sad"]))
    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(xy, lab)
    return clf, float(clf.score(xy, lab))


def boundary_in_data_coords(clf) -> tuple[np.ndarray, float]:
    """(w, b) of the boundary w . [x, y] + b = 0 in the panel's own coordinates."""
    scaler, lr = clf[0], clf[-1]
    w = lr.coef_[0] / scaler.scale_
    return w, float(lr.intercept_[0] - w @ scaler.mean_)


def place_labels(ax, items, fontsize: float = 7.0) -> None:
    """Write each (word, x, y, colour) beside its point, greedily avoiding overlaps.

    Tries a few offsets around the point (in points) and keeps the first whose estimated
    text box hits neither an earlier label nor a marker; else the least-overlapping one.
    """
    fig = ax.figure
    to_pt = 72.0 / fig.dpi
    xy_pt = ax.transData.transform([(x, y) for _, x, y, _ in items]) * to_pt
    markers = [(px - 4, py - 4, px + 4, py + 4) for px, py in xy_pt]
    placed: list[tuple[float, float, float, float]] = []
    offsets = [(5, 2, "left"), (5, -9, "left"), (-5, 2, "right"), (-5, -9, "right"), (0, 6, "center"),
               (0, -14, "center"), (5, 10, "left"), (-5, 10, "right"), (5, -17, "left"), (-5, -17, "right")]

    def overlap(a, b):
        return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))

    for (word, x, y, color), (px, py) in zip(items, xy_pt):
        w, h = 0.56 * fontsize * len(word), fontsize
        best, best_cost = None, None
        for dx, dy, ha in offsets:
            x0 = px + dx - (w if ha == "right" else w / 2 if ha == "center" else 0)
            box = (x0, py + dy, x0 + w, py + dy + h)
            cost = sum(overlap(box, b) for b in placed) + sum(overlap(box, m) for m in markers)
            if best_cost is None or cost < best_cost:
                best, best_cost = (dx, dy, ha, box), cost
            if cost == 0:
                break
        dx, dy, ha, box = best
        placed.append(box)
        ax.annotate(word, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va="bottom",
                    fontsize=fontsize, color=color)


def main(args):
    points = load_points(args)
    spaces = [s for s in ("U", "V") if s in points] + [s for s in points if s not in ("U", "V")]
    plotting.setup()
    fig, axes = plotting.grid(len(spaces), ncols=2, panel_size=(3.3, 3.0), margins=(0.55, 0.15, 0.75, 0.35),
                              wspace=0.3)
    summary = {}
    for ax, space in zip(axes, spaces):
        cats = points[space]
        for cat, pts in cats.items():
            xy = np.array([[x, y] for _, x, y in pts])
            ax.plot(xy[:, 0], xy[:, 1], linestyle="", marker=MARKERS.get(cat, "o"), markersize=7,
                    color=COLORS.get(cat, "black"), markeredgecolor="black", markeredgewidth=0.5,
                    label=cat, zorder=3)
        ax.margins(0.15)
        if {"Joy", "Sad"} <= set(cats):
            clf, acc = fit_boundary(cats)
            x0, x1 = ax.get_xlim()
            y0, y1 = ax.get_ylim()
            gx, gy = np.meshgrid(np.linspace(x0, x1, 200), np.linspace(y0, y1, 200))
            dec = clf.decision_function(np.c_[gx.ravel(), gy.ravel()]).reshape(gx.shape)
            if dec.min() < 0 < dec.max():
                ax.contour(gx, gy, dec, levels=[0.0], colors="black", linestyles="--", linewidths=1.0)
            ax.set_xlim(x0, x1)
            ax.set_ylim(y0, y1)
            w, b = boundary_in_data_coords(clf)
            summary[space] = {"coef": w, "intercept": b, "joy_vs_sad_train_acc": acc}
        if not args.no_labels:
            items = [(w, x, y, COLORS.get(c, "black")) for c, pts in cats.items() for w, x, y in pts]
            place_labels(ax, items)
        ax.set_title(TITLES.get(space, space))
        ax.set_xlabel(f"{space} direction 1")
        ax.set_ylabel(f"{space} direction 2")
        ax.grid(alpha=0.25, linewidth=0.5)
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], color="black", linestyle="--", linewidth=1.0))
    labels.append("logistic Joy/Sad boundary")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), frameon=False)
    paths = plotting.save(fig, args.out_dir, "fig1", formats=args.formats, dpi=args.dpi)
    write_json(Path(args.out_dir) / "fig1_boundaries.json", {"figure": "fig1", "boundaries": summary})
    print("Fig. 1: logistic Joy-vs-Sad boundary per panel")
    print(f"{'panel':<6} {'train acc':>9}  boundary w . (x, y) + b = 0 in panel coordinates")
    for space, s in summary.items():
        w = s["coef"]
        print(f"{space:<6} {s['joy_vs_sad_train_acc']:>9.2f}  w = ({w[0]:+.4g}, {w[1]:+.4g}), "
              f"b = {s['intercept']:+.4g}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return summary


if __name__ == "__main__":
    main(parse_args())
