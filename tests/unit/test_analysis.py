"""ntps.analysis: rank correlations, selection, LODO, the permutation test, grids (collect.py and analyze.py:
scripts/test_collect.py)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from ntps import analysis


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


def test_build_grid_and_analyze_grid(tidy_table):
    t = tidy_table(np.random.default_rng(0))
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


def test_build_grid_rejects_ambiguous_tables(tidy_table):
    t = tidy_table(np.random.default_rng(0))
    with pytest.raises(ValueError, match="duplicate.*score"):
        analysis.build_grid(pd.concat([t, t.assign(score="ntps_raw_asc")]), "probe_train_acc")
    with pytest.raises(ValueError, match="varies within"):
        analysis.build_grid(t.assign(probe_train_acc=np.arange(len(t))), "probe_train_acc")
    with pytest.raises(ValueError, match="exactly one model"):
        analysis.build_grid(tidy_table(np.random.default_rng(0), models=("a", "b")), "probe_train_acc")
    with pytest.raises(ValueError, match="no dataset .* has a value of 'lora_gain'"):  # e.g. LoRA not run
        analysis.build_grid(t.assign(lora_gain=np.nan), "lora_gain")


def test_paper_table_single_candidate(paper_data):
    t = analysis.paper_table(paper_data / "fig3.json")
    assert {"lora_gain", "lora_test_acc", "linear_test_acc"} <= set(t.columns) and len(t) == 96
    grid = analysis.build_grid(t, "lora_gain", model="Qwen/Qwen2-0.5B")
    res = analysis.analyze_grid(grid)
    assert grid.n_candidates == 1 and res["perm_p"] is None and res["lodo_r"] is None
    assert round(res["r_argmax"], 2) == 0.77
