"""Tests of ntps.baselines against independent per-sample implementations on explicit features.

Every score is computed twice: from the sums (as cache.py stores them: XX = FᵀF, XY = FᵀY,
sum_x = Fᵀ1, class counts, N) and directly from an explicit feature matrix F (N×d) with
code written from the papers (LogME Algorithm 1 with an SVD of F; H-score with np.cov and
explicit class means; sklearn StandardScaler + LinearRegression / Ridge for the probes).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.metrics import mean_squared_error
from sklearn.preprocessing import StandardScaler

from ntps.baselines import all_baselines, h_score, logme, ls_probe_mse

RTOL = 1e-6


def make_data(N, d, C, *, signal=1.5, offset=0.3, seed=0):
    """Features with a class-dependent shift in the first C coordinates, every class present."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(C), rng.integers(0, C, N - C)])
    rng.shuffle(y)
    F = rng.normal(size=(N, d)) + signal * np.eye(C, d)[y] + offset
    return F, y


def sums(F, y, C):
    """The statistics exactly as cache.py accumulates them (SPEC §1)."""
    Y = np.eye(C)[y]
    return F.T @ F, F.T @ Y, F.sum(axis=0), np.bincount(y, minlength=C), len(y)


# ----------------------------------------------------------------------------- independent references


def logme_paper(F, Y, *, tol=1e-10, max_iter=100_000):
    """LogME as in Algorithm 1 of You et al. (ICML 2021), directly on F: per-sample evidence per column.

    SVD of F (full), σ = squared singular values padded with zeros to D; for each column the
    paper's fixed point α ← γ/mᵀm, β ← (N − γ)/‖Fm − y‖² with explicit m and residual, and
    L = N/2 log β + D/2 log α − N/2 log 2π − β/2‖Fm − y‖² − α/2 mᵀm − ½ Σ_{i≤D} log(α + βσ_i).
    Returns (evidences / N, alphas, betas).
    """
    N, D = F.shape
    _, s, Vt = np.linalg.svd(F, full_matrices=True)
    sigma = np.zeros(D)
    sigma[: s.size] = s**2
    V = Vt.T
    out, alphas, betas = [], [], []
    for k in range(Y.shape[1]):
        y = Y[:, k]
        Fty_v = V.T @ (F.T @ y)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            t_old = alpha / beta
            gamma = np.sum(beta * sigma / (alpha + beta * sigma))
            m = V @ (beta * Fty_v / (alpha + beta * sigma))
            alpha, beta = gamma / (m @ m), (N - gamma) / np.sum((F @ m - y) ** 2)
            if abs(alpha / beta - t_old) <= tol * t_old:
                break
        else:
            raise AssertionError("reference LogME iteration did not converge")
        m = V @ (beta * Fty_v / (alpha + beta * sigma))
        L = (N / 2 * np.log(beta) + D / 2 * np.log(alpha) - N / 2 * np.log(2 * np.pi)
             - beta / 2 * np.sum((F @ m - y) ** 2) - alpha / 2 * (m @ m)
             - 0.5 * np.sum(np.log(alpha + beta * sigma)))
        out.append(L / N)
        alphas.append(alpha)
        betas.append(beta)
    return np.array(out), np.array(alphas), np.array(betas)


def max_gaussian_evidence(F, y):
    """max over α, β of log N(y; 0, β⁻¹ I + α⁻¹ F Fᵀ), with dense N×N matrices (no eigen tricks).

    For fixed t = α/β the maximising β is N / yᵀ K⁻¹ y with K = I + F Fᵀ / t; t is searched on a
    log grid, refined with a bounded scalar search, and the α → ∞ limit is a candidate too.
    """
    from scipy.optimize import minimize_scalar

    N = F.shape[0]
    G = F @ F.T

    def prof(u):
        K = np.eye(N) + G / np.exp(u)
        E = y @ np.linalg.solve(K, y)
        return -N / 2 * np.log(2 * np.pi) + N / 2 * np.log(N / E) - 0.5 * np.linalg.slogdet(K)[1] - N / 2

    grid = np.linspace(-30, 30, 121)
    vals = [prof(u) for u in grid]
    i = int(np.argmax(vals))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    best = -minimize_scalar(lambda u: -prof(u), bounds=(lo, hi), method="bounded",
                            options={"xatol": 1e-9}).fun
    limit_inf = N / 2 * (np.log(N / (y @ y)) - np.log(2 * np.pi) - 1)
    return max(best, vals[i], limit_inf)


def h_score_explicit(F, y):
    """Bao et al.: tr(pinv(cov f) cov(E[f|y])) with np.cov and explicit class means."""
    g = np.zeros_like(F)
    for k in np.unique(y):
        g[y == k] = F[y == k].mean(axis=0)
    return float(np.trace(np.linalg.pinv(np.cov(F, rowvar=False), rcond=1e-10, hermitian=True)
                          @ np.cov(g, rowvar=False)))


def probe_mse_sklearn(F, y, C, alpha=None):
    Xs = StandardScaler().fit_transform(F)
    Y = np.eye(C)[y]
    model = LinearRegression() if alpha is None else Ridge(alpha=alpha)
    return mean_squared_error(Y, model.fit(Xs, Y).predict(Xs))


# ----------------------------------------------------------------------------- LogME


@pytest.mark.parametrize("N,d", [(120, 8), (30, 50), (41, 40)])
def test_logme_matches_paper_algorithm_on_explicit_features(N, d):
    C = 3
    F, y = make_data(N, d, C, signal=2.0, seed=N)
    ref, _, _ = logme_paper(F, np.eye(C)[y])
    assert logme(*sums(F, y, C)) == pytest.approx(ref.mean(), rel=RTOL)


@pytest.mark.parametrize("N,d,signal", [(25, 40, 1.0), (25, 40, 0.0), (60, 5, 0.3), (60, 5, 0.0)])
def test_logme_is_the_maximum_gaussian_evidence(N, d, signal):
    # Independent of the eigen-algebra (dense log-density, grid search), covering N < d
    # (null space of XX) and weak/no signal, where the maximum sits at α → ∞ or α → 0.
    C = 2
    F, y = make_data(N, d, C, signal=signal, seed=7)
    Y = np.eye(C)[y]
    dense = np.mean([max_gaussian_evidence(F, Y[:, k]) for k in range(C)]) / N
    assert logme(*sums(F, y, C)) == pytest.approx(dense, rel=RTOL)


@pytest.mark.parametrize("N,d", [(100, 6), (20, 40), (21, 20)])
def test_logme_centered_is_intercept_model_evidence(N, d):
    # Centred LogME = evidence of y = b1 + Fw + ε with a flat prior on b, i.e. the paper's
    # evidence of the data rotated into the (N − 1)-dim complement of 1 (plus −½ log N, omitted).
    C = 3
    F, y = make_data(N, d, C, signal=2.0, offset=2.0, seed=3)
    rng = np.random.default_rng(0)
    Qfull, _ = np.linalg.qr(np.column_stack([np.ones(N), rng.normal(size=(N, N - 1))]))
    H = Qfull[:, 1:]  # orthonormal basis of 1⊥
    ref, _, _ = logme_paper(H.T @ F, H.T @ np.eye(C)[y])
    expected = ref.mean() * (N - 1) / N  # the score divides by N, the reference by N − 1 rows
    assert logme(*sums(F, y, C), center=True) == pytest.approx(expected, rel=RTOL)


def test_logme_reference_logdet_reproduces_released_code_expression():
    # thuml/LogME sums log(α + βσ) over min(N, D) singular values only; at the same fixed point.
    N, d, C = 30, 50, 3
    F, y = make_data(N, d, C, signal=2.0, seed=30)
    Y = np.eye(C)[y]
    paper, alphas, betas = logme_paper(F, Y)
    s = np.linalg.svd(F, compute_uv=False) ** 2  # min(N, D) values
    U, sv, Vt = np.linalg.svd(F, full_matrices=False)
    released = []
    for k in range(C):
        a, b = alphas[k], betas[k]
        m = Vt.T @ (b * sv * (U.T @ Y[:, k]) / (a + b * s))
        L = (d / 2 * np.log(a) + N / 2 * np.log(b) - 0.5 * np.sum(np.log(a + b * s))
             - b / 2 * np.sum((F @ m - Y[:, k]) ** 2) - a / 2 * (m @ m) - N / 2 * np.log(2 * np.pi))
        released.append(L / N)
    got = logme(*sums(F, y, C), reference_logdet=True)
    assert got == pytest.approx(np.mean(released), rel=RTOL)
    assert got - logme(*sums(F, y, C)) == pytest.approx(np.mean((d - N) / (2 * N) * np.log(alphas)), rel=RTOL)


def test_logme_slow_columns_finish_at_the_plain_iteration_limit():
    # Weak signal in many dimensions: the plain iteration needs thousands of steps; the
    # bracketed finish (after max_iter plain steps) must land on the same limit.
    # (signal 0, seed 6, centred: every column runs to the α → ∞ boundary.)
    N, d, C = 200, 40, 3
    for signal, seed in ((0.15, 5), (0.0, 6)):
        F, y = make_data(N, d, C, signal=signal, offset=2.0, seed=seed)
        args = sums(F, y, C)
        for center in (False, True):
            plain = logme(*args, center=center, max_iter=200_000)
            for k in (0, 5):
                assert logme(*args, center=center, max_iter=k) == pytest.approx(plain, rel=1e-10, abs=1e-12)


def test_logme_known_answer_without_signal():
    # Fᵀ y_k = 0 for every class: the maximum is the pure-noise model (α = ∞),
    # L_k/N = ½ (log(N/n_k) − log 2π − 1).
    counts = np.array([6, 10, 4])
    y = np.repeat(np.arange(3), counts)
    F = np.zeros((20, 2))
    for k in range(3):  # ±1 pattern summing to 0 within every class
        idx = np.flatnonzero(y == k)
        F[idx, 0] = np.where(np.arange(idx.size) % 2 == 0, 1.0, -1.0)
        F[idx[: 2 * (idx.size // 2)], 1] = np.tile([2.0, -2.0], idx.size // 2)
    expected = np.mean(0.5 * (np.log(20 / counts) - np.log(2 * np.pi) - 1))
    assert logme(*sums(F, y, 3)) == pytest.approx(expected, rel=1e-12)


def test_logme_prefers_informative_feature():
    rng = np.random.default_rng(1)
    N, C = 200, 2
    y = rng.integers(0, C, N)
    informative = (2.0 * y - 1.0 + 0.5 * rng.normal(size=N))[:, None]
    noise = rng.normal(size=(N, 1))
    assert logme(*sums(informative, y, C)) > logme(*sums(noise, y, C)) + 0.1
    # and more signal -> more evidence
    stronger = (2.0 * y - 1.0 + 0.2 * rng.normal(size=N))[:, None]
    assert logme(*sums(stronger, y, C)) > logme(*sums(informative, y, C))


# ----------------------------------------------------------------------------- H-score


@pytest.mark.parametrize("N,d", [(150, 6), (20, 40), (30, 30)])
def test_h_score_matches_explicit(N, d):
    C = 3
    F, y = make_data(N, d, C, seed=11)
    assert h_score(*sums(F, y, C)) == pytest.approx(h_score_explicit(F, y), rel=RTOL)


def test_h_score_shrinkage_matches_explicit():
    N, d, C, lam = 80, 10, 3, 0.3
    F, y = make_data(N, d, C, seed=12)
    cov = np.cov(F, rowvar=False, bias=True)
    g = np.zeros_like(F)
    for k in range(C):
        g[y == k] = F[y == k].mean(axis=0)
    cov_s = (1 - lam) * cov + lam * np.trace(cov) / d * np.eye(d)
    expected = np.trace(np.linalg.inv(cov_s) @ ((1 - lam) * np.cov(g, rowvar=False, bias=True)))
    assert h_score(*sums(F, y, C), shrinkage=lam) == pytest.approx(expected, rel=RTOL)
    assert h_score(*sums(F, y, C), shrinkage=1.0) == 0.0


def test_h_score_known_answers():
    # perfectly separable 1-D data: within-class variance 0, so H = 1
    y = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    F = np.array([-1.0, 3.0, 5.5])[y][:, None]
    assert h_score(*sums(F, y, 3)) == pytest.approx(1.0, rel=1e-12)
    # one-hot features: H = C − 1 (pseudo-inverse on the (C − 1)-dim range)
    C = 4
    y = np.repeat(np.arange(C), [3, 5, 2, 6])
    assert h_score(*sums(np.eye(C)[y], y, C)) == pytest.approx(C - 1, rel=1e-12)
    # invariant to rescaling and shifting the features
    F, y = make_data(60, 5, 3, seed=4)
    A = np.diag([1e-3, 1.0, 50.0, 2.0, 1e3])
    assert h_score(*sums(F @ A + 7.0, y, 3)) == pytest.approx(h_score(*sums(F, y, 3)), rel=1e-9)


# ----------------------------------------------------------------------------- probes


@pytest.mark.parametrize("N,d", [(150, 8), (25, 40)])
def test_ls_and_ridge_mse_match_sklearn(N, d):
    C = 3
    F, y = make_data(N, d, C, seed=21)
    F[:, -1] = 3.7  # a constant feature (StandardScaler: scale 1, contributes nothing)
    args = sums(F, y, C)
    ls_ref = probe_mse_sklearn(F, y, C)
    if N > d:
        assert ls_probe_mse(*args) == pytest.approx(ls_ref, rel=RTOL)
    else:  # in-sample perfect fit: exactly 0 from the sums, round-off in sklearn
        assert ls_ref < 1e-20 and ls_probe_mse(*args) == 0.0
    for alpha in (0.5, 10.0):
        assert ls_probe_mse(*args, alpha=alpha) == pytest.approx(probe_mse_sklearn(F, y, C, alpha), rel=RTOL)


def test_ls_mse_with_collinear_features_uses_projection():
    # rank-deficient covariance with N > d: min-norm least squares, same in-sample fit
    N, C = 100, 3
    F, y = make_data(N, 4, C, seed=22)
    F = np.column_stack([F, F[:, 0] - 2 * F[:, 1]])
    assert ls_probe_mse(*sums(F, y, C)) == pytest.approx(probe_mse_sklearn(F, y, C), rel=RTOL)


def test_ls_mse_known_answers():
    C = 3
    y = np.repeat(np.arange(C), [4, 6, 10])
    N = y.size
    p = np.bincount(y) / N
    const = np.full((N, 2), 1.5)  # no information: MSE = mean_k p_k (1 − p_k)
    assert ls_probe_mse(*sums(const, y, C)) == pytest.approx(np.mean(p * (1 - p)), rel=1e-12)
    assert h_score(*sums(const, y, C)) == 0.0
    assert ls_probe_mse(*sums(np.eye(C)[y], y, C)) == pytest.approx(0.0, abs=1e-14)


# ----------------------------------------------------------------------------- invariances, API


def test_scores_invariant_to_text_order():
    C = 3
    F, y = make_data(90, 7, C, seed=31)
    perm = np.random.default_rng(0).permutation(len(y))
    a = all_baselines(dict(zip(("XX", "XY", "sum_x"), sums(F, y, C)[:3])), np.bincount(y), len(y))
    b = all_baselines(dict(zip(("XX", "XY", "sum_x"), sums(F[perm], y[perm], C)[:3])), np.bincount(y), len(y))
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-9)


def test_all_baselines_accepts_layer_sums_of_torch_tensors():
    torch = pytest.importorskip("torch")
    from ntps.artifacts import LayerSums

    C = 3
    F, y = make_data(70, 6, C, seed=41)
    XX, XY, sx, counts, N = sums(F, y, C)
    t = lambda a: torch.as_tensor(a, dtype=torch.float64)  # noqa: E731
    ls = LayerSums(XX=t(XX), XY=t(XY), C0=t(XX), C1=t(XX), sum_x=t(sx))
    out = all_baselines(ls, torch.as_tensor(counts), N, ridge_alpha=2.0, h_shrinkage=0.1,
                        logme_center=True)
    assert set(out) == {"logme", "h_score", "ls_mse", "ridge_mse"}
    assert all(isinstance(v, float) for v in out.values())
    assert out["logme"] == pytest.approx(logme(XX, XY, sx, counts, N, center=True), rel=1e-12)
    assert out["h_score"] == pytest.approx(h_score(XX, XY, sx, counts, N, shrinkage=0.1), rel=1e-12)
    assert out["ls_mse"] == pytest.approx(ls_probe_mse(XX, XY, sx, counts, N), rel=1e-12)
    assert out["ridge_mse"] == pytest.approx(ls_probe_mse(XX, XY, sx, counts, N, alpha=2.0), rel=1e-12)
    assert logme(t(XX).float(), t(XY), None, torch.as_tensor(counts), torch.tensor(N)) == pytest.approx(
        logme(XX.astype(np.float32), XY, None, counts, N), rel=1e-12)


def test_empty_class_is_documented_behaviour():
    # a class with no texts: LogME and H-score ignore it; the probe MSE counts its (exactly
    # fitted) all-zero column among the C outputs, as sklearn on np.eye(C)[y] does.
    F, y = make_data(80, 5, 2, seed=51)
    with_empty = sums(F, y, 3)
    without = sums(F, y, 2)
    assert with_empty[3].tolist()[2] == 0
    assert logme(*with_empty) == pytest.approx(logme(*without), rel=1e-12)
    assert logme(*with_empty, center=True) == pytest.approx(logme(*without, center=True), rel=1e-12)
    assert h_score(*with_empty) == pytest.approx(h_score(*without), rel=1e-12)
    assert ls_probe_mse(*with_empty) == pytest.approx(ls_probe_mse(*without) * 2 / 3, rel=1e-12)
    assert ls_probe_mse(*with_empty) == pytest.approx(probe_mse_sklearn(F, y, 3), rel=RTOL)


def test_degenerate_and_corrupt_inputs_raise():
    F, y = make_data(40, 4, 2, seed=61)
    XX, XY, sx, counts, N = sums(F, y, 2)
    one_class = sums(F, np.zeros(40, dtype=int), 1)
    for fn in (logme, h_score, ls_probe_mse):
        with pytest.raises(ValueError, match="at least 2 classes"):
            fn(*one_class)
        with pytest.raises(ValueError, match="at least 2 classes"):
            fn(*sums(F, np.zeros(40, dtype=int), 2))  # C = 2, one of them empty
        bad = XX.copy()
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match="XX has 1 non-finite entry"):
            fn(bad, XY, sx, counts, N)
        bad_xy = XY.copy()
        bad_xy[0, 0], bad_xy[1, 1] = np.inf, -np.inf
        with pytest.raises(ValueError, match="XY has 2 non-finite entries"):
            fn(XX, bad_xy, sx, counts, N)
        with pytest.raises(ValueError, match="sum to 39 but n_texts = 40"):
            fn(XX, XY, sx, counts - np.array([1, 0]), N)
        with pytest.raises(ValueError, match=r"XY must have shape \(d, C\)"):
            fn(XX, XY[:, :1], sx, counts, N)
        with pytest.raises(ValueError, match="not symmetric"):
            fn(XX + np.triu(np.ones_like(XX), 1) * XX.max(), XY, sx, counts, N)
        with pytest.raises(ValueError, match="rows of XY do not sum to sum_x"):
            fn(XX, XY, sx + 1.0, counts, N)
    with pytest.raises(ValueError, match="sum_x has 1 non-finite entry"):
        h_score(XX, XY, np.where(np.arange(4) == 0, np.nan, sx), counts, N)
    with pytest.raises(ValueError, match="center=True needs sum_x"):
        logme(XX, XY, None, counts, N, center=True)
    with pytest.raises(ValueError, match="shrinkage"):
        h_score(XX, XY, sx, counts, N, shrinkage=1.5)
    with pytest.raises(ValueError, match="alpha"):
        ls_probe_mse(XX, XY, sx, counts, N, alpha=-1.0)
