"""The shipped figure data (fig_plot/data): the paper's r values recomputed with scipy equal SPEC §4, the files
are the authors' release; the plotting font (the figure scripts themselves: scripts/test_figures.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from ntps import plotting
from tests.paper_values import SPEC_R


def _raw_r(data: Path, model: str) -> tuple[float, float, float]:
    """The three r straight from the JSON with scipy: acc; ranks of MSE reversed; ranks of gain reversed."""
    f21, f22, f3 = (json.loads((data / f).read_text()) for f in ("fig2_1.json", "fig2_2.json", "fig3.json"))
    acc = spearmanr([v["align_score"] for v in f21[model].values()],
                    [v["metric_data"] for v in f21[model].values()])[0]
    mse = spearmanr([v["align_score"] for v in f22[model].values()],
                    [-v["metric_data"] for v in f22[model].values()])[0]
    gain = spearmanr([v["align_score"] for v in f3[model].values()],
                     [-(v["lora_acc"] - v["linear_acc"]) for v in f3[model].values()])[0]
    return acc, mse, gain


@pytest.mark.parametrize("model", list(SPEC_R))
def test_paper_r_recomputed_from_json_equals_spec(model, paper_data):
    assert [f"{r:.2f}" for r in _raw_r(paper_data, model)] == [f"{r:.2f}" for r in SPEC_R[model]]


def test_shipped_data_is_the_authors(paper_data, repo_root):
    shared = repo_root.parent / "shared" / "paper_data"
    names = ("fig1.json", "fig2_1.json", "fig2_2.json", "fig3.json")
    for name in names:
        assert json.loads((paper_data / name).read_text())  # parses
    assert "Yu-Ang Cheng" in (paper_data / "README.md").read_text()
    if not shared.is_dir():
        pytest.skip(f"{shared} (the authors' release) is not here to compare the bytes with")
    for name in names:
        assert (paper_data / name).read_bytes() == (shared / name).read_bytes(), name


def test_font_fallback_is_silent(caplog):
    assert plotting.available_font(("No Such Font", "DejaVu Sans")) == "DejaVu Sans"
    import io

    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    family = plotting.setup()
    assert family in {f.name for f in font_manager.fontManager.ttflist}  # an installed font, not a wish
    assert matplotlib.rcParams["font.sans-serif"] == [family]
    caplog.set_level(logging.WARNING, logger="matplotlib.font_manager")
    fig, ax = plt.subplots()
    ax.set_title("NTPS")
    fig.savefig(io.BytesIO(), format="png")
    plt.close(fig)
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]
