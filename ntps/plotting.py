"""Shared matplotlib helpers for the figure scripts: headless backend, fonts, atomic saving.

Call :func:`setup` before creating a figure. It selects the Agg backend (no display needed),
picks the first installed font of :data:`PREFERRED_FONTS` (Arial as in the paper, else a
metric-compatible or default sans-serif) by looking at the font list -- so matplotlib never
logs ``findfont: Font family 'Arial' not found`` -- and embeds TrueType fonts in PDFs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot is imported anywhere through this module

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from .io import atomic_path  # noqa: E402

#: Fonts tried in order; the first one installed is used.
PREFERRED_FONTS = ("Arial", "Helvetica", "Liberation Sans", "Nimbus Sans", "DejaVu Sans")

#: One colour per dataset, stable across panels (tab20 has 20 entries; markers cycle too).
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "p", "h", "*")


def available_font(preferred: Sequence[str] = PREFERRED_FONTS) -> str:
    """The first font family of ``preferred`` that is installed (silently; no findfont warnings)."""
    installed = {f.name for f in font_manager.fontManager.ttflist}
    for name in preferred:
        if name in installed:
            return name
    return matplotlib.rcParams["font.sans-serif"][0]


def setup(font_size: float = 9.0) -> str:
    """Headless, quiet, publication defaults. Returns the font family in use."""
    family = available_font()
    matplotlib.rcParams.update({
        "font.family": "sans-serif",
        "font.sans-serif": [family],
        "font.size": font_size,
        "axes.titlesize": font_size + 1,
        "axes.labelsize": font_size,
        "legend.fontsize": font_size - 1,
        "xtick.labelsize": font_size - 1,
        "ytick.labelsize": font_size - 1,
        "pdf.fonttype": 42,  # TrueType: text stays editable/searchable in the PDF
        "ps.fonttype": 42,
        "axes.spines.top": False,
        "axes.spines.right": False,
    })
    return family


def save(fig, out_dir: str | os.PathLike, stem: str, formats: Sequence[str] = ("pdf", "png"),
         dpi: int = 200) -> list[Path]:
    """Write ``fig`` as ``{out_dir}/{stem}.{fmt}`` for each format, atomically; close it.

    PDF metadata omits the creation date so reruns give identical files.
    """
    out_dir = Path(out_dir)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        meta = {"CreationDate": None} if fmt == "pdf" else None
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=meta)
        paths.append(path)
    plt.close(fig)
    return paths


def grid(n_panels: int, ncols: int = 4, panel_size: tuple[float, float] = (2.6, 2.2),
         margins: tuple[float, float, float, float] = (0.9, 0.3, 0.7, 0.4), wspace: float = 0.35,
         hspace: float = 0.55):
    """A ``ceil(n/ncols) x ncols`` grid of axes; unused axes are hidden. Returns (fig, flat axes).

    ``margins`` = (left, right, bottom, top) in inches, fixed rather than computed by a layout
    engine: a layout engine measures every tick label several times per save, which makes
    multi-panel figures several times slower to render.
    """
    ncols = max(1, min(ncols, n_panels))
    nrows = int(np.ceil(n_panels / ncols))
    left, right, bottom, top = margins
    width = panel_size[0] * ncols + left + right
    height = panel_size[1] * nrows + bottom + top
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - top / height, wspace=wspace, hspace=hspace)
    axes = axes.ravel()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def style_for(names: Sequence[str]) -> dict[str, dict]:
    """Stable ``{name: {"color", "marker"}}`` for a list of category names (e.g. datasets)."""
    cmap = plt.get_cmap("tab20")
    return {name: {"color": cmap(i % 20), "marker": MARKERS[i % len(MARKERS)]}
            for i, name in enumerate(names)}


def heatmap(ax, values: np.ndarray, row_labels: Sequence, col_labels: Sequence, *,
            mark: tuple[int, int] | None = None, vmin: float = -1.0, vmax: float = 1.0,
            cmap: str = "RdBu_r", colorbar_label: str = "Spearman r"):
    """Draw ``values`` (rows x cols, NaN = missing) with a colour bar; star the cell ``mark``."""
    values = np.asarray(values, dtype=float)
    im = ax.imshow(np.ma.masked_invalid(values), aspect="auto", origin="lower", cmap=cmap,
                   vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(_tick_positions(len(col_labels)))
    ax.set_xticklabels([_fmt(col_labels[i]) for i in _tick_positions(len(col_labels))], rotation=90)
    ax.set_yticks(_tick_positions(len(row_labels)))
    ax.set_yticklabels([_fmt(row_labels[i]) for i in _tick_positions(len(row_labels))])
    if mark is not None:
        ax.plot(mark[1], mark[0], marker="*", color="gold", markeredgecolor="black", markersize=12)
    cb = ax.figure.colorbar(im, ax=ax)
    cb.set_label(colorbar_label)
    return im


def _tick_positions(n: int, max_ticks: int = 20) -> list[int]:
    step = max(1, int(np.ceil(n / max_ticks)))
    return list(range(0, n, step))


def _fmt(v) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{v:g}"
    return str(v)
