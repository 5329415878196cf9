"""ntps.analysis: the family-wise (Westfall-Young max-statistic) permutation test, LODO with its own null,
the floors and the test-retest reliability -- against brute-force loops on tiny inputs, under the null and
with a planted predictor."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from ntps import analysis

NAIVE_TOL = 1e-9


def _family(rng, n_cand=48, n=12, noise=0.5):
    """Correlated candidate rows, as neighbouring (layer, f) give (3 latent factors + noise)."""
    return rng.normal(size=(n_cand, 3)) @ rng.normal(size=(3, n)) + noise * rng.normal(size=(n_cand, n))


def _tiny(rng, m, n):
    """Small integer-valued candidates and metric: ties in X and in y, some constant rows."""
    X = rng.integers(0, 4, size=(m, n)).astype(float)
    X[0] = 1.0  # a constant candidate: never selected
    return X, rng.integers(0, 5, size=n).astype(float)


# ------------------------------------------------------------------------- naive references


def _naive_r(x, y) -> float:
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return -np.inf
    return float(spearmanr(x, y).statistic)


def _naive_T(Xs, ys, perm) -> float:
    return max(_naive_r(x, y[list(perm)]) for X, y in zip(Xs, ys) for x in X)


def _naive_familywise_p(Xs, ys):
    n = len(ys[0])
    perms = list(itertools.permutations(range(n)))
    null = np.array([_naive_T(Xs, ys, p) for p in perms])
    return np.mean(null >= null[0] - NAIVE_TOL), null


def _naive_lodo_r(X, y) -> float:
    n = len(y)
    rz = lambda a: (rankdata(a) - rankdata(a).mean()) / np.linalg.norm(rankdata(a) - rankdata(a).mean())  # noqa: E731
    rows = [x for x in X if np.ptp(x) > 0]
    pred = []
    for j in range(n):
        keep = [i for i in range(n) if i != j]
        r = np.array([_naive_r(x[keep], y[keep]) for x in rows])
        best = r.max()
        tied = [x for x, ri in zip(rows, r) if ri >= best - NAIVE_TOL]
        pred.append(np.mean([rz(x)[j] for x in tied]))
    pred = np.array(pred)
    return float(spearmanr(pred, y).statistic) if np.ptp(pred) > 0 else np.nan


# --------------------------------------------------------------------------- exact = naive


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_familywise_p_equals_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    n = 5
    Xs, ys = zip(*(_tiny(rng, 4, n) for _ in range(2)))  # two blocks (two "models") on the same datasets
    res = analysis.familywise_test(list(Xs), list(ys))
    p_naive, null_naive = _naive_familywise_p(Xs, ys)
    assert res["exact"] and res["n_perm"] == math.factorial(n)
    assert res["p"] == pytest.approx(p_naive, abs=1e-12)
    np.testing.assert_allclose(res["null_max"], null_naive, atol=1e-9)  # same enumeration order
    assert res["observed"] == pytest.approx(null_naive[0])
    # per-candidate single-step adjusted p: P(max over the family >= r_c)
    r0 = np.array([_naive_r(x, ys[0]) for x in Xs[0]])
    expect = np.where(np.isinf(r0), np.nan, [np.mean(null_naive >= v - NAIVE_TOL) for v in r0])
    np.testing.assert_allclose(res["adjusted"][0], expect, atol=1e-12)


@pytest.mark.parametrize("seed", [3, 4])
def test_floor_is_the_smallest_p_over_every_arrangement_of_the_metric(seed):
    rng = np.random.default_rng(seed)
    n = 4
    X, y = _tiny(rng, 5, n)
    ps = []
    for sigma in itertools.permutations(range(n)):  # every assignment of the metric values to datasets
        ps.append(_naive_familywise_p([X], [y[list(sigma)]])[0])
    res = analysis.familywise_test([X], [y])
    assert res["floor"] == pytest.approx(min(ps), abs=1e-12)
    assert res["p"] >= res["floor"]


@pytest.mark.parametrize("seed", [5, 6])
def test_exact_lodo_and_its_null_equal_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    n = 5
    X, y = _tiny(rng, 6, n)
    res = analysis.lodo_test(X, y)
    naive = np.array([_naive_lodo_r(X, y[list(p)]) for p in itertools.permutations(range(n))])
    assert res["r"] == pytest.approx(naive[0], abs=1e-12, nan_ok=True)
    obs = naive[0]
    p_naive = np.mean(np.where(np.isnan(naive), -np.inf, naive) >= obs - NAIVE_TOL)
    assert res["exact"] and res["p"] == pytest.approx(p_naive, abs=1e-12)
    top = np.nanmax(naive)
    assert res["floor"] == pytest.approx(np.mean(naive >= top - NAIVE_TOL), abs=1e-12)


def test_lodo_ties_are_averaged_and_counted():
    """Two candidates tie on every fold; the prediction is their mean rank, not the first one's."""
    y = np.arange(6.0)
    a = np.array([0, 1, 2, 3, 4, 5.0])
    b = np.array([0, 1, 2, 3, 5, 4.0])  # ties with a whenever dataset 4 or 5 is held out
    out = analysis.lodo_test(np.stack([b, a, b + 10]), y, null=False)
    assert out["n_tied"].tolist() == [1, 1, 1, 1, 3, 3]  # b and b + 10 have one ranking: counted twice
    za, zb = ((rankdata(v) - 3.5) / np.linalg.norm(rankdata(v) - 3.5) for v in (a, b))
    assert out["pred"][4] == pytest.approx((za[4] + 2 * zb[4]) / 3)
    assert out["chosen"][4] == 0 and out["chosen"][0] == 1  # the first tied candidate, for display


def test_lodo_predictions_are_on_a_common_scale():
    """Cells whose values live on different scales (chance ≈ f) are compared by their within-cell rank."""
    rng = np.random.default_rng(0)
    y = rng.normal(size=10)
    X = np.stack([np.argsort(np.argsort(y)) * 1e-3, 100 + rng.normal(size=10)])  # the signal cell has tiny values
    assert analysis.lodo_test(X, y, null=False)["r"] == pytest.approx(1.0)


# -------------------------------------------------------------- calibration and planted signal


def test_familywise_p_is_uniform_under_the_null():
    """Random metrics: P(p < 0.05) ≈ 5 % (±3 binomial SD over 200 trials), while the best candidate's
    uncorrected p (its own null) rejects far more often -- so the band can fail."""
    rng = np.random.default_rng(11)
    ps, naive = [], []
    for t in range(200):
        Xs = [_family(rng), _family(rng)]
        ys = [rng.normal(size=12), rng.normal(size=12)]
        res = analysis.familywise_test(Xs, ys, n_perm=199, seed=t)
        ps.append(res["p"])
        single = analysis.familywise_test([Xs[0][:1]], ys[:1], n_perm=199, seed=t)["null_max"]
        naive.append(analysis.p_values(single, res["observed"], exact=False))
    ps, naive = np.array(ps), np.array(naive)
    assert ps.min() >= 1 / 200 and ps.max() <= 1.0
    assert 0.05 - 3 * 0.0154 <= np.mean(ps < 0.05) <= 0.05 + 3 * 0.0154, np.mean(ps < 0.05)
    assert np.mean(naive < 0.05) > 0.3  # an implementation without the family-wise max would fail the band
    assert 0.35 <= np.median(ps) <= 0.65


def test_exact_familywise_p_is_valid_over_every_arrangement():
    """Exact enumeration: over all n! assignments of the metric, P(p <= α) <= α for every α, with equality
    at every value p takes (an exact permutation p is uniform on its support)."""
    rng = np.random.default_rng(2)
    X, y = _family(rng, n_cand=20, n=6), rng.normal(size=6)
    ps = np.array([analysis.familywise_test([X], [y[list(s)]])["p"] for s in itertools.permutations(range(6))])
    for alpha in (0.01, 0.05, 0.1, 0.5):
        assert np.mean(ps <= alpha + 1e-12) <= alpha + 1e-12
    for u in np.unique(ps):
        assert np.mean(ps <= u + 1e-12) == pytest.approx(u, abs=1e-12)
    assert len(np.unique(ps)) > 5


def test_lodo_null_is_calibrated():
    rng = np.random.default_rng(12)
    ps = np.array([analysis.lodo_test(_family(rng, 20, 10), rng.normal(size=10), n_perm=99, seed=t)["p"]
                   for t in range(200)])
    assert 0.05 - 3 * 0.0154 <= np.mean(ps < 0.05) <= 0.05 + 3 * 0.0154, np.mean(ps < 0.05)


@pytest.mark.parametrize("n", [7, 10])
def test_planted_perfect_predictor_gets_p_at_its_floor(n):
    rng = np.random.default_rng(n)
    X = _family(rng, n_cand=30, n=n)
    y = X[7].copy()  # the metric ranks the datasets exactly like candidate 7
    res = analysis.familywise_test([X], [y], n_perm=999, seed=0)
    assert res["observed"] == pytest.approx(1.0) and res["t_max"] == pytest.approx(1.0)
    assert res["p"] == pytest.approx(res["floor"])
    assert res["floor"] >= (1 / math.factorial(n) if n <= 8 else 1 / 1000)
    lo = analysis.lodo_test(X, y, n_perm=999, seed=0)
    assert lo["r"] > 0.9 and lo["p"] < 0.01


def test_untestable_when_the_family_is_large_and_n_small():
    """n = 5 and 200 random candidates: many permutations reach r = 1, so no metric could give p < 0.05."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    res = analysis.familywise_test([X], [X[0]])  # even a perfect predictor
    assert res["exact"] and res["floor"] >= analysis.ALPHA and res["p"] == pytest.approx(res["floor"])


def test_permutation_set_switches_to_draws_above_the_bound():
    P, exact = analysis.permutation_set(8)
    assert exact and P.shape == (40320, 8) and (P[0] == np.arange(8)).all()
    P, exact = analysis.permutation_set(9, n_perm=10_000, seed=1)
    assert not exact and P.shape == (10_000, 9) and (np.sort(P, axis=1) == np.arange(9)).all()
    assert (analysis.permutation_set(9, 50, seed=1)[0] == analysis.permutation_set(9, 50, seed=1)[0]).all()


def test_familywise_test_is_fast_at_the_experiment_size():
    """n = 18 datasets × 3600 candidates × 10^4 draws: well under a minute (one matrix product per block)."""
    rng = np.random.default_rng(0)
    X, y = _family(rng, n_cand=3600, n=18), rng.normal(size=18)
    t0 = time.perf_counter()
    res = analysis.familywise_test([X], [y], n_perm=10_000, seed=0)
    assert time.perf_counter() - t0 < 20
    assert res["n_perm"] == 10_000 and not res["exact"] and res["floor"] == pytest.approx(1 / 10_001)


# ------------------------------------------------------------------------------- reliability


def test_binomial_reliability_grows_with_the_test_size():
    acc = np.linspace(0.55, 0.95, 12)
    big = analysis.ranking_reliability(analysis.binomial_replicates(acc, np.full(12, 1e6)), n_boot=500)
    small = analysis.ranking_reliability(analysis.binomial_replicates(acc, np.full(12, 20)), n_boot=500)
    assert big["median"] > 0.99 and small["median"] < 0.9 and small["q05"] < small["median"] < small["q95"]
    gain = analysis.binomial_replicates(acc, np.full(12, 200), minus=(acc[::-1] * 0.9, np.full(12, 200)))
    assert gain(np.random.default_rng(0), 3).shape == (3, 12)
    with pytest.raises(ValueError, match="test size"):
        analysis.binomial_replicates(acc, np.full(12, np.nan))
