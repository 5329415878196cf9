"""Figure scripts: the paper's r values (SPEC §4) and headless rendering from JSON and CSV."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from fig_plot import common, fig1, fig2, fig3, make_all
from ntps import plotting

# SPEC §4, typed in: Spearman r printed in the paper (Fig. 2 ACC, Fig. 2 MSE, Fig. 3 LoRA gain).
SPEC_R = {
    "Qwen/Qwen2-0.5B": (0.69, 0.70, 0.77),
    "Qwen/Qwen2-1.5B": (0.64, 0.68, 0.67),
    "Qwen/Qwen2-7B": (0.82, 0.68, 0.59),
    "apple/OpenELM-270M": (0.57, 0.42, 0.87),
    "apple/OpenELM-450M": (0.52, 0.46, 0.87),
    "apple/OpenELM-1_1B": (0.73, 0.43, 0.90),
    "apple/OpenELM-3B": (0.66, 0.73, 0.52),
    "meta-llama/Meta-Llama-3-8B": (0.72, 0.52, 0.40),
}
FAST = ["--dpi", "40"]


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


def test_make_all_on_paper_data_renders_every_figure_quietly(tmp_path, capsys, caplog):
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # PNG only here: PDFs (TrueType subsetting, ~1 s each) are written by the tests below
        ok = make_all.main(make_all.parse_args(["--out_dir", str(tmp_path), "--formats", "png", *FAST]))
    assert ok
    for stem in ("fig1", "fig2_acc", "fig2_mse", "fig3"):
        f = tmp_path / f"{stem}.png"
        assert f.is_file() and f.stat().st_size > 1000 and f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
    out = capsys.readouterr().out
    assert "all panels equal SPEC §4 to two decimals" in out
    # the printed per-figure tables and the saved r tables carry the SPEC values
    saved = json.loads((tmp_path / "r_table.json").read_text())["r"]
    for model, (acc, mse, gain) in SPEC_R.items():
        short = model.split("/")[-1]
        assert [round(saved[p][short], 2) for p in ("fig2_acc", "fig2_mse", "fig3")] == [acc, mse, gain]
    assert not [r for r in caplog.records if "findfont" in r.getMessage()]
    assert not [w for w in caught if "matplotlib" in str(w.filename) or "font" in str(w.message).lower()]


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


def _tidy_csv(path: Path) -> Path:
    """Two models x 10 datasets x 3 layers x 4 fractions; (2, 0.5) tracks -MSE, (1, 0.25) -gain."""
    rng = np.random.default_rng(0)
    rows = []
    names = ["rotten_tomatoes", "sst2", "imdb", "dair-ai/emotion", "x/sms_spam", "medical",
             "legacy-datasets/banking77", "common_sense", "new_a", "new_b"]
    for model in ("org/Qwen2-0.5B", "org/Other"):
        acc, mse, gain = rng.uniform(0.5, 1, 10), rng.uniform(0, 0.2, 10), rng.normal(0, 0.1, 10)
        for j, ds in enumerate(names):
            for layer in range(3):
                for f in (0.25, 0.5, 0.75, 1.0):
                    signal = {(2, 0.5): -mse[j], (1, 0.25): -gain[j]}.get((layer, f), 0.0)
                    rows.append({"model": model, "dataset": ds, "layer": layer, "fraction": f,
                                 "score": "ntps_raw_desc", "chance": f / 8,
                                 "value": signal + 0.01 * rng.normal(),
                                 "probe_train_acc": acc[j], "probe_train_mse": mse[j], "lora_gain": gain[j]})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_fig2_and_fig3_from_our_csv(tmp_path, capsys):
    csv = _tidy_csv(tmp_path / "collected.csv")
    pts = fig2.main(fig2.parse_args(["--metric", "mse", "--csv", str(csv), "--out_dir", str(tmp_path),
                                     "--n_perm", "99", *FAST]))
    assert [common.short_model(p["model"]) for p in pts] == ["Qwen2-0.5B", "Other"]  # paper order first
    assert all(p["layer"] == 2 and p["param_value"] == 0.5 and p["n_candidates"] == 12 for p in pts)
    assert all(p["perm_p"] is not None and p["lodo_r"] is not None for p in pts)
    pts3 = fig3.main(fig3.parse_args(["--csv", str(csv), "--out_dir", str(tmp_path), "--ranks",
                                      "--n_perm", "99", *FAST]))
    assert all(p["layer"] == 1 and p["param_value"] == 0.25 and p["perm_p"] < 0.05 for p in pts3)
    for stem in ("fig2_mse", "fig3"):
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:4] == b"%PDF" and (tmp_path / f"{stem}.png").is_file()
    out = capsys.readouterr().out
    assert "perm_p" in out and "LODO_r" in out
    two = pd.concat([pd.read_csv(csv), pd.read_csv(csv).assign(score="ntps_raw_asc")])
    two.to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(SystemExit, match="--score"):
        fig3.main(fig3.parse_args(["--csv", str(tmp_path / "two.csv"), "--out_dir", str(tmp_path)]))
    chosen = fig3.main(fig3.parse_args(["--csv", str(tmp_path / "two.csv"), "--score", "ntps_raw_desc",
                                        "--out_dir", str(tmp_path), "--n_perm", "99", *FAST]))
    assert [p["r"] for p in chosen] == [p["r"] for p in pts3]


def test_fig1_on_shipped_data_and_csv_input(tmp_path, paper_data):
    summary = fig1.main(fig1.parse_args(["--out_dir", str(tmp_path), *FAST]))
    assert summary["U"]["joy_vs_sad_train_acc"] == 1.0  # U separates Joy from Sad
    assert summary["V"]["joy_vs_sad_train_acc"] < 1.0   # V does not
    for f in ("fig1.pdf", "fig1.png", "fig1_boundaries.json"):
        assert (tmp_path / f).is_file()
    assert (tmp_path / "fig1.pdf").read_bytes()[:4] == b"%PDF"
    data = json.loads((paper_data / "fig1.json").read_text())
    rows = [{"space": s, "category": c, "word": w, "x": p[0][0], "y": p[0][1]}
            for s in data for c in data[s] for w, p in zip(fig1.WORDS[c], data[s][c])]
    pd.DataFrame(rows).to_csv(tmp_path / "proj.csv", index=False)
    from_csv = fig1.load_points(fig1.parse_args(["--csv", str(tmp_path / "proj.csv")]))
    assert from_csv == fig1.load_points(fig1.parse_args([]))
    assert [w for w, _, _ in from_csv["U"]["Be"]] == ["am", "is", "are", "was", "were"]
