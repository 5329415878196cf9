"""ntps.analysis (rank correlations, selection, LODO, permutation test), collect.py and analyze.py."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import analyze  # noqa: E402
import collect  # noqa: E402
from ntps import analysis  # noqa: E402


def _candidates(rng, n_cand=48, n=12, noise=0.5):
    """Correlated candidate NTPS rows, as neighbouring (layer, f) give (3 latent factors + noise)."""
    return rng.normal(size=(n_cand, 3)) @ rng.normal(size=(3, n)) + noise * rng.normal(size=(n_cand, n))


# ---------------------------------------------------------------------------------- ranks


@pytest.mark.parametrize("shape", [(1, 30), (6, 9), (9, 6), (12, 7)])
def test_spearman_rows_equal_scipy_with_ties(shape):
    rng = np.random.default_rng(0)
    X, y = rng.integers(0, 4, shape).astype(float), rng.integers(0, 3, shape[1]).astype(float)
    expect = [spearmanr(row, y)[0] if np.ptp(row) else np.nan for row in X]
    np.testing.assert_allclose(analysis.spearman_rows(X, y), expect, atol=1e-12)


def test_spearman_equals_scipy_incl_ties():
    rng = np.random.default_rng(1)
    for n in (5, 12, 40):
        x, y = rng.normal(size=n), rng.normal(size=n)
        assert analysis.spearman(x, y) == pytest.approx(spearmanr(x, y)[0], abs=1e-12)
        xt, yt = rng.integers(0, 3, n).astype(float), rng.integers(0, 4, n).astype(float)
        assert analysis.spearman(xt, yt) == pytest.approx(spearmanr(xt, yt)[0], abs=1e-12)
    X, y = rng.integers(0, 5, (20, 12)).astype(float), rng.normal(size=12)
    expect = [spearmanr(row, y)[0] for row in X]
    np.testing.assert_allclose(analysis.spearman_rows(X, y), expect, atol=1e-12)


def test_spearman_degenerate_inputs():
    assert np.isnan(analysis.spearman([1, 1, 1], [1, 2, 3]))
    r = analysis.spearman_rows([[1, 1, 1], [1, 2, 3]], [3, 2, 1])
    assert np.isnan(r[0]) and r[1] == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="NaN"):
        analysis.spearman([1, np.nan, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="equal length"):
        analysis.spearman([1, 2, 3], [1, 2])
    assert analysis.metric_sign("probe_train_mse") == -1 and analysis.metric_sign("lora_gain") == -1
    assert analysis.metric_sign("probe_train_acc") == 1


# ---------------------------------------------------------------- selection and its null


def test_select_argmax_orientation():
    X = np.array([[1, 2, 3, 4, 5.0], [5, 4, 3, 2, 1.0], [1, 3, 2, 5, 4.0]])
    mse = np.array([5, 4, 3, 2, 1.0])
    c, r, _ = analysis.select_argmax(X, mse, sign=-1)  # ranks of MSE reversed
    assert c == 0 and r == pytest.approx(1.0)
    c, r, _ = analysis.select_argmax(X, mse, sign=1)
    assert c == 1 and r == pytest.approx(1.0)


def test_permutation_p_is_calibrated_under_the_null():
    rng = np.random.default_rng(123)
    trials, n_perm = 200, 199
    ps = np.array([analysis.permutation_test(_candidates(rng), rng.normal(size=12), 1, n_perm, seed=t)["p"]
                   for t in range(trials)])
    assert ps.min() >= 1 / (1 + n_perm) and ps.max() <= 1.0
    rate = np.mean(ps < 0.05)
    assert 0.02 <= rate <= 0.11, rate  # binomial band around 5 %


def test_permutation_p_small_for_a_planted_correlation():
    rng = np.random.default_rng(7)
    X = _candidates(rng)
    y = -(X[11] + 0.1 * rng.normal(size=12))  # an MSE-like metric: lower is better
    res = analysis.permutation_test(X, y, sign=-1, n_perm=199, seed=0)
    assert res["p"] < 0.01 and res["observed"] > 0.9
    # the selected r is inflated under the null: the 95th percentile of the best-of-48 r is large
    assert res["null_q95"] > 0.6


def test_permutation_is_vectorised_and_fast():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(500, 12)), rng.normal(size=12)
    t0 = time.perf_counter()
    res = analysis.permutation_test(X, y, n_perm=1000, seed=0)
    assert time.perf_counter() - t0 < 1.0
    assert res["null_max"].shape == (1000,)
    again = analysis.permutation_test(X, y, n_perm=1000, seed=0)
    assert again["p"] == res["p"]  # seeded


def test_single_candidate_permutation_is_the_ordinary_test():
    x = np.arange(12.0)
    res = analysis.permutation_test(x[None], x, n_perm=499, seed=1)
    assert res["observed"] == pytest.approx(1.0) and res["p"] == pytest.approx(1 / 500)


def test_lodo_planted_high_and_noise_near_zero():
    rng = np.random.default_rng(3)
    planted = []
    for _ in range(20):
        X = _candidates(rng)
        planted.append(analysis.lodo(X, X[5] + 0.3 * rng.normal(size=12))["r"])
    assert np.mean(planted) > 0.7
    noise = [analysis.lodo(_candidates(rng), rng.normal(size=12))["r"] for _ in range(100)]
    assert abs(np.nanmean(noise)) < 0.15
    out = analysis.lodo(np.arange(24.0).reshape(2, 12), np.arange(12.0))
    assert out["chosen"].shape == (12,) and np.all(~np.isnan(out["pred"]))


# ------------------------------------------------------------------------------- grids


def _tidy(rng, models=("m/A",), n_ds=8, layers=(0, 1, 2), fractions=(0.1, 0.5, 0.9)):
    rows = []
    for model in models:
        acc, gain = rng.uniform(0.5, 1.0, n_ds), rng.normal(size=n_ds)
        for j in range(n_ds):
            for layer in layers:
                for f in fractions:
                    ntps = acc[j] * (layer == 1) * (f == 0.5) + 0.02 * rng.normal()
                    rows.append({"model": model, "dataset": f"ds{j}", "layer": layer, "fraction": f,
                                 "value": ntps, "chance": f * 0.1, "probe_train_acc": acc[j],
                                 "lora_gain": gain[j], "score": "ntps_raw_desc"})
    return pd.DataFrame(rows)


def test_build_grid_and_analyze_grid():
    t = _tidy(np.random.default_rng(0))
    t.loc[(t.dataset == "ds0") & (t.layer == 2) & (t.fraction == 0.9), "value"] = np.nan
    t.loc[t.dataset == "ds7", "probe_train_acc"] = np.nan
    grid = analysis.build_grid(t, "probe_train_acc")
    assert grid.X.shape == (8, 7) and grid.param == "fraction" and grid.score == "ntps_raw_desc"
    assert grid.dropped == {"datasets_without_metric": ["ds7"], "candidates_incomplete": 1}
    res = analysis.analyze_grid(grid, n_perm=99)
    assert (res["layer"], res["fraction"]) == (1, 0.5) and res["r_argmax"] > 0.9
    assert res["perm_p"] <= 0.05 and len(res["per_dataset"]) == 7
    assert res["per_dataset"][0]["chance"] == pytest.approx(0.05)
    mat, layers, params = analysis.correlation_map(grid, res["r_all"])
    assert mat.shape == (3, 3) and np.isnan(mat[2, 2]) and mat[1, 1] == pytest.approx(res["r_argmax"])


def test_build_grid_rejects_ambiguous_tables():
    t = _tidy(np.random.default_rng(0))
    with pytest.raises(ValueError, match="duplicate.*score"):
        analysis.build_grid(pd.concat([t, t.assign(score="ntps_raw_asc")]), "probe_train_acc")
    with pytest.raises(ValueError, match="varies within"):
        analysis.build_grid(t.assign(probe_train_acc=np.arange(len(t))), "probe_train_acc")
    with pytest.raises(ValueError, match="exactly one model"):
        analysis.build_grid(_tidy(np.random.default_rng(0), models=("a", "b")), "probe_train_acc")
    with pytest.raises(ValueError, match="no dataset .* has a value of 'lora_gain'"):  # e.g. LoRA not run
        analysis.build_grid(t.assign(lora_gain=np.nan), "lora_gain")


def test_paper_table_single_candidate():
    t = analysis.paper_table(ROOT / "fig_plot" / "data" / "fig3.json")
    assert {"lora_gain", "lora_test_acc", "linear_test_acc"} <= set(t.columns) and len(t) == 96
    grid = analysis.build_grid(t, "lora_gain", model="Qwen/Qwen2-0.5B")
    res = analysis.analyze_grid(grid)
    assert grid.n_candidates == 1 and res["perm_p"] is None and res["lodo_r"] is None
    assert round(res["r_argmax"], 2) == 0.77


# ------------------------------------------------------------------------------ collect


def _write_sweep(path: Path, rng, layers=(0, 1), fractions=(0.25, 0.5), with_chance=True):
    rows = []
    for layer in layers:
        for f in fractions:
            k_v = int(f * 16)
            rows.append({"layer": layer, "fraction": f, "k": k_v, "k_U": 1, "k_V": k_v, "r_U": 2, "r_V": 16,
                         "label_rank": 1, "ntps": rng.uniform(), "unique": "True",
                         **({"chance": k_v / 32} if with_chance else {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def make_runs(root: Path) -> Path:
    """1 model x 3 datasets; pieces deliberately missing or malformed."""
    rng = np.random.default_rng(0)
    m = root / "org__tiny"
    for ds in ("d__a", "b", "c"):
        tr = m / ds / "train"
        _write_sweep(tr / "ntps_raw_desc.csv", rng)
        (tr / "meta.json").write_text(json.dumps({"model": "org/tiny", "dataset": ds.replace("__", "/"),
                                                  "split": "train", "n_texts": 10, "d": 32}))
    _write_sweep(m / "d__a" / "train" / "ntps_whitened_x_asc.csv", rng, with_chance=False)
    pd.DataFrame({"layer": [0, 0, 1, 1], "split": ["train", "test"] * 2, "acc": [0.6, 0.5, 0.9, 0.8],
                  "log_loss": [0.7, 0.8, 0.3, 0.4], "mse": [0.2, 0.3, 0.1, 0.15]}).to_csv(
        m / "d__a" / "train" / "probes_sklearn.csv", index=False)
    for name, acc in (("linear", 0.7), ("lora", 0.9)):
        (m / "d__a" / name).mkdir()
        (m / "d__a" / name / "results.json").write_text(json.dumps({"test_accuracy": acc}))
    (m / "b" / "lora").mkdir()
    (m / "b" / "lora" / "results.json").write_text(json.dumps({"test_accuracy": 0.8}))
    (m / "c" / "train" / "ntps_raw_asc.csv").write_text("foo,bar\n1,2\n")  # malformed: no layer/ntps
    return root


def test_collect_long_table(tmp_path, caplog):
    runs = make_runs(tmp_path / "runs")
    t = collect.collect(runs)
    assert "missing required column" in caplog.text
    sweeps = t[t.score.isin(["ntps_raw_desc", "ntps_whitened_x_asc"])]
    assert len(sweeps) == 3 * 4 + 4  # 3 datasets x (2 layers x 2 fractions) + the whitened_x sweep
    # derived from each raw sweep: minus_chance (4 cells), best and margin_best (2 layers each)
    assert len(t) == len(sweeps) + 3 * (4 + 2 + 2)
    assert list(t.columns[:10]) == collect.KEY_COLS
    a = t[(t.dataset == "d/a") & (t.score == "ntps_raw_desc")]
    assert a.model.unique().tolist() == ["org/tiny"] and len(a) == 4
    assert (a.probe_layer == 1).all() and (a.probe_train_acc == 0.9).all()
    assert (a.probe_test_mse == 0.15).all()
    assert a.set_index("fraction").groupby("layer").layer_probe_train_acc.first().to_dict() == {0: 0.6, 1: 0.9}
    assert a.lora_gain.iloc[0] == pytest.approx(0.2)
    margin = t[(t.dataset == "d/a") & (t.score == "ntps_raw_desc_minus_chance")].set_index(["layer", "fraction"])
    np.testing.assert_allclose(margin.value, (a.set_index(["layer", "fraction"]).value - a.set_index(
        ["layer", "fraction"]).chance).loc[margin.index])
    assert margin.chance.isna().all()
    best = t[(t.dataset == "d/a") & (t.score == "ntps_raw_desc_best")]
    assert best.set_index("layer").value.to_dict() == a.groupby("layer").value.max().to_dict()
    assert best.fraction.isna().all() and best.chance.isna().all()
    w = t[t.score == "ntps_whitened_x_asc"]
    assert np.allclose(w.chance, w.k_V / 32)  # filled from k_V / d
    b = t[t.dataset == "b"]
    assert b.probe_train_acc.isna().all() and b.linear_test_acc.isna().all() and b.lora_gain.isna().all()
    assert (b.lora_test_acc == 0.8).all() and b[b.score == "ntps_raw_desc"].unique.all()
    with pytest.raises(collect.CollectError):
        collect.collect(runs, strict=True)


def test_collect_cli_and_analyze_cli(tmp_path, capsys):
    runs = make_runs(tmp_path / "runs")
    collect.main(collect.parse_args(["--output_dir", str(runs)]))
    t = pd.read_csv(runs / "collected.csv")
    assert len(t) == 16 + 3 * 8 and collect.collect(tmp_path / "empty").empty
    # analyze: a synthetic table with a real sweep (heat map) and the authors' data (single candidate)
    csv = tmp_path / "tidy.csv"
    _tidy(np.random.default_rng(1)).to_csv(csv, index=False)
    out = tmp_path / "an"
    res = analyze.main(analyze.parse_args(["--csv", str(csv), "--metric", "probe_train_acc", "--n_perm", "99",
                                           "--output_dir", str(out)]))
    r = res["results"]["probe_train_acc"][0]
    assert (r["layer"], r["fraction"]) == (1, 0.5) and r["perm_p"] < 0.05 and r["lodo_r"] is not None
    assert (out / "analysis" / "heatmap_probe_train_acc_m__A_ntps_raw_desc.png").is_file()
    assert (out / "analysis" / "analysis.json").is_file()
    assert len(pd.read_csv(out / "analysis" / "selected_probe_train_acc.csv")) == 8
    analyze.main(analyze.parse_args(["--input", str(ROOT / "fig_plot/data/fig2_2.json"), "--output_dir",
                                     str(out), "--no_plots"]))
    text = capsys.readouterr().out
    assert "single (layer, f) candidate" in text and "authors published only the selected" in text
    assert "Qwen/Qwen2-0.5B" in text and " 0.70 " in text


def test_collect_reads_the_lora_outputs(tmp_path):
    """runs/ntps_lora.py's sweep after LoRA becomes a score; its summary rows and budget come with lora_runs."""
    rng = np.random.default_rng(0)
    ds = tmp_path / "m" / "d"
    meta = {"model": "m", "dataset": "d", "split": "train", "n_texts": 10, "d": 32}
    for split_dir in (ds / "train", ds / "lora" / "stats_after" / "m" / "d" / "train"):
        _write_sweep(split_dir / "ntps_raw_descending.csv", rng)
        (split_dir / "meta.json").write_text(json.dumps(meta))
    (ds / "lora" / "results.json").write_text(json.dumps({"test_accuracy": 0.9, "steps": 300, "n_train": 10,
                                                          "config": {"lr": 5e-4, "batch_size": 8}}))
    pd.DataFrame([{"model": "m", "dataset": "d", "layer": 1, "fraction": 0.25, "ntps_before": 0.5,
                   "ntps_after": 0.6, "gain": 0.1}]).to_csv(ds / "ntps_lora.csv", index=False)
    (ds / "ntps_lora.json").write_text(json.dumps({"lora_results": str(ds / "lora" / "results.json")}))
    t = collect.collect(tmp_path)
    after = t[t.score == "ntps_raw_descending_after_lora"]
    assert len(after) == 4 and (after.model == "m").all() and (after.lora_test_acc == 0.9).all()
    assert after.source.str.startswith("m/d/lora/stats_after/").all()
    lora = collect.lora_runs(tmp_path)
    assert lora.loc[0, "ntps_after"] == 0.6 and (lora.loc[0, "steps"], lora.loc[0, "lr"]) == (300, 5e-4)
    assert collect.stage_times(tmp_path)["key"].tolist() == ["cache/m/d/train"]  # not the LoRA-merged artifact
    assert collect.stage_record(tmp_path) == {"stages": {}, "invocations": []}
