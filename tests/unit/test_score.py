"""The NTPS math on toy covariances with analytic answers (SPEC §2, §2.0, §2.2)."""

import numpy as np
import pytest
import torch

from ntps.linalg import generalized_eigh, whiten
from ntps.score import DEFAULT_FRACTIONS, excess_loss_bound, ntps_sweep, solve_layer, validate_stats, whitened_sweep
from tests.naive import naive_ntps


def planted(d=20, label_axes=(0, 1), v_order=None):
    """Σ = C0 = I, label directions on ``label_axes``, V ordered along ``v_order`` axes."""
    XX = np.eye(d)
    XY = np.zeros((d, 2))
    XY[label_axes[0], 0], XY[label_axes[1], 1] = 3.0, 2.0
    v_order = list(range(d)) if v_order is None else list(v_order)
    C1 = np.zeros((d, d))
    for rank, axis in enumerate(v_order):
        C1[axis, axis] = d - rank  # descending strength along v_order
    return XX, XY, np.eye(d), C1


def test_planted_inside_gives_one_and_orthogonal_gives_zero():
    fr = [0.1, 0.2, 0.5]
    inside = ntps_sweep(solve_layer(*planted()), fractions=fr)
    assert np.allclose(inside["ntps"], 1.0, atol=1e-12)
    assert list(inside["k_V"]) == [2, 4, 10] and list(inside["k_U"]) == [2, 2, 2]
    away = planted(v_order=list(range(2, 20)) + [0, 1])
    out = ntps_sweep(solve_layer(*away), fractions=fr)
    assert np.allclose(out["ntps"], 0.0, atol=1e-12)
    assert out["unique"].all() and inside["unique"].all()


def test_half_overlap_is_weighted_by_column_norms():
    # U = {e0 (λ=9), e1 (λ=4)}, Σ = I so columns are unit vectors; V_1 = e0 -> k_V = 1 captures half
    XX, XY, C0, C1 = planted(v_order=[0, 5, 1] + [i for i in range(20) if i not in (0, 1, 5)])
    res = ntps_sweep(solve_layer(XX, XY, C0, C1), ks=[1, 2, 3])
    assert np.allclose(res["ntps"], [1.0, 0.5, 1.0])  # k=1: U_1 = e0 ⊂ V_1; k=2: e0 in, e1 out


def test_random_V_averages_chance_level():
    rng = np.random.default_rng(1)
    d, reps = 20, 150
    XX, XY, _, _ = planted(d=d)
    scores = []
    for _ in range(reps):
        Qr, _ = np.linalg.qr(rng.standard_normal((d, d)))
        C1 = Qr @ np.diag(np.linspace(d, 1, d)) @ Qr.T
        scores.append(ntps_sweep(solve_layer(XX, XY, np.eye(d), C1), fractions=[0.2, 0.5])["ntps"])
    scores = np.array(scores)
    chance = np.array([4, 10]) / d
    se = scores.std(0) / np.sqrt(reps)
    assert np.all(np.abs(scores.mean(0) - chance) < 4 * se + 1e-3)


def test_descending_puts_label_directions_first_and_ascending_last(random_stats):
    rng = np.random.default_rng(2)
    XX, XY, C0, C1 = random_stats(rng)
    desc = generalized_eigh(XX, A_factor=XY)
    asc = generalized_eigh(XX, A_factor=XY, order="ascending")
    c = desc.n_nonzero
    assert c == 3 and np.all(np.diff(desc.values.numpy()) <= 0) and np.all(np.diff(asc.values.numpy()) >= 0)
    Mt = torch.from_numpy(XY)
    # the label directions are those with Uᵀ M ≠ 0: first c in descending, last c in ascending
    assert torch.linalg.norm(desc.vectors[:, c:].T @ Mt) < 1e-8 * torch.linalg.norm(Mt)
    assert torch.linalg.norm(asc.vectors[:, :-c].T @ Mt) < 1e-8 * torch.linalg.norm(Mt)
    assert torch.allclose(asc.vectors.flip(1), desc.vectors) and torch.allclose(asc.values.flip(0), desc.values)
    # columns are B-orthonormal
    G = desc.vectors.T @ torch.from_numpy(XX) @ desc.vectors
    assert torch.allclose(G, torch.eye(G.shape[0], dtype=G.dtype), atol=1e-9)


@pytest.mark.parametrize("d,N", [(24, 400), (40, 30), (300, 200)])  # regular and singular Σ (N < d)
# d = 300: Σ is singular; C0 admits a Cholesky factor but has an eigenvalue below tol, so both take eigh
def test_equals_naive_implementation_where_unique(d, N, random_stats):
    rng = np.random.default_rng(d + N)
    stats = random_stats(rng, d=d, N=N, C=4)
    ours = ntps_sweep(solve_layer(*stats), fractions=DEFAULT_FRACTIONS)
    ref = naive_ntps(*stats, DEFAULT_FRACTIONS)
    assert ours["unique"].any()
    m = ours["unique"] & np.isfinite(ref)
    np.testing.assert_allclose(ours["ntps"][m], ref[m], rtol=0, atol=1e-8)
    if N < d:
        assert ours["r_U"][0] == N and ours["r_U"][0] < d


def test_cholesky_and_eigh_whitening_agree(random_stats):
    rng = np.random.default_rng(3)
    XX, XY, C0, C1 = random_stats(rng)
    B = torch.from_numpy(C0)
    chol, eig = whiten(B, method="cholesky"), whiten(B, method="eigh")
    assert chol.method == "cholesky" and eig.method == "eigh" and whiten(B).method == "eigh"  # small d
    for wh in (chol, eig):  # both whiten: Wᵀ B W = I
        np.testing.assert_allclose((wh.W.T @ B @ wh.W).numpy(), np.eye(24), atol=1e-9)
    singular = torch.from_numpy(XX[:, :3] @ XX[:3, :])  # rank 3: Cholesky must fall back to eigh
    assert whiten(singular, method="cholesky").method == "eigh"
    big = random_stats(rng, d=300, N=1200, C=3)
    sol = solve_layer(*big)
    assert sol.U.whitener.method == sol.V.whitener.method == "cholesky"
    ref = naive_ntps(*big, DEFAULT_FRACTIONS)
    m = ntps_sweep(sol)["unique"]
    np.testing.assert_allclose(ntps_sweep(sol)["ntps"][m], ref[m], atol=1e-8)


def test_invariant_to_scaling_by_N(random_stats):
    rng = np.random.default_rng(4)
    stats = random_stats(rng)
    a = ntps_sweep(solve_layer(*stats))
    b = ntps_sweep(solve_layer(*(s / 400.0 for s in stats)))
    np.testing.assert_allclose(a["ntps"], b["ntps"], atol=1e-10)
    assert (a["r_U"] == b["r_U"]).all() and (a["label_rank"] == b["label_rank"]).all()


def test_absolute_tolerance_reproduces_reference_threshold():
    XX, XY, C0, C1 = planted()
    XX = 0.01 * XX
    XX[19, 19] = 5e-9  # below the authors' absolute 1e-8, above the relative default (5e-7 relative)
    assert solve_layer(XX, XY, C0, C1, atol=1e-8, n_texts=1).U.rank == 19  # sums already / N
    assert solve_layer(XX, XY, C0, C1).U.rank == 20


def test_same_inputs_same_scores_including_degenerate_blocks(random_stats):
    rng = np.random.default_rng(5)
    stats = random_stats(rng, d=20, N=15, C=2)  # singular Σ and a 13-dim null block
    for order in ("descending", "ascending"):
        runs = [ntps_sweep(solve_layer(*stats, order=order))["ntps"] for _ in range(3)]
        assert all(np.array_equal(runs[0], r, equal_nan=True) for r in runs[1:])
    asc = ntps_sweep(solve_layer(*stats, order="ascending"))
    inner = (asc["k_U"] > 0) & (asc["k_U"] < 13)  # strictly inside the null block
    assert inner.any() and not asc["unique"][inner].any()


def test_null_block_is_ordered_by_variance():
    # Σ = diag(5, 4, 3, 2, 1): label on axis 2; null block must come in variance order 0, 1, 3, 4
    d = 5
    XX = np.diag([5.0, 4, 3, 2, 1])
    XY = np.zeros((d, 2))
    XY[2, 0] = XY[2, 1] = 1.0
    sol = generalized_eigh(XX, A_factor=XY)
    assert sol.n_nonzero == 1
    axes = sol.vectors.abs().argmax(0).tolist()
    assert axes == [2, 0, 1, 3, 4]


def test_whitened_bound_holds_on_random_instances(random_stats):
    rng = np.random.default_rng(6)
    for _ in range(5):
        XX, XY, C0, C1 = random_stats(rng, C=3)
        w = whitened_sweep(solve_layer(XX, XY, C0, C1), n_texts=400.0)
        assert np.all(w["lower"] <= w["excess"] * (1 + 1e-9) + 1e-12)
        assert np.all(w["excess"] <= w["upper"] * (1 + 1e-9) + 1e-12)
        assert np.all(np.diff(w["excess"]) <= 1e-12)  # a larger encoder never loses more


def test_whitened_sweep_with_fewer_texts_than_dimensions():
    """N < d: Σ has rank N - ... < k_V for large fractions; those cells are NaN, the others finite."""
    rng = np.random.default_rng(11)
    N, T, d, C = 8, 6, 20, 2
    X = rng.normal(size=(N, d))
    Y = np.eye(C)[np.arange(N) % C]
    H = rng.normal(size=(N * T, d))
    S, Hn = np.cumsum(H.reshape(N, T, d), 1)[:, :-1].reshape(-1, d), H.reshape(N, T, d)[:, 1:].reshape(-1, d)
    sol = solve_layer(X.T @ X, X.T @ Y, S.T @ S, S.T @ Hn)
    assert sol.U.rank <= N < sol.V.rank
    w = whitened_sweep(sol, n_texts=N)
    big = w["k_V"] > sol.U.rank
    assert big.any() and np.isnan(w["ntps"][big]).all()
    assert np.isfinite(w["ntps"][(w["k_V"] > 0) & ~big]).all()


def test_excess_loss_is_the_least_squares_gap_and_bound_tight_when_eigenvalues_equal():
    rng = np.random.default_rng(7)
    N, d, C = 600, 12, 2
    X = rng.standard_normal((N, d))
    y = (X[:, 0] + 0.5 * rng.standard_normal(N) > 0).astype(int)
    Y = np.eye(C)[y]
    V = rng.standard_normal((d, 4))
    lower, excess, upper = excess_loss_bound(X.T @ X / N, X.T @ Y / N, V)
    # independent: optimal squared loss of y on x vs on Vᵀx, by explicit least squares
    full = np.linalg.lstsq(X, Y, rcond=None)[0]
    enc = np.linalg.lstsq(X @ V, Y, rcond=None)[0]
    gap = (np.sum((Y - X @ V @ enc) ** 2) - np.sum((Y - X @ full) ** 2)) / N
    assert excess == pytest.approx(gap, rel=1e-9)
    assert lower <= excess <= upper
    # Σ = I and orthogonal label columns of equal norm: λ_1 = λ_r, so lower = excess = upper
    M = np.zeros((d, 2))
    M[0, 0] = M[1, 1] = 0.7
    lo, ex, up = excess_loss_bound(np.eye(d), M, rng.standard_normal((d, 5)))
    assert lo == pytest.approx(ex, rel=1e-10) and up == pytest.approx(ex, rel=1e-10)


def test_whitened_equals_raw_when_sigma_is_identity():
    XX, XY, C0, C1 = planted(v_order=[0, 5, 1] + [i for i in range(20) if i not in (0, 1, 5)])
    XY = XY / np.linalg.norm(XY, axis=0)  # equal eigenvalues: raw U columns have equal norms
    sol = solve_layer(XX, XY, C0, C1)
    np.testing.assert_allclose(ntps_sweep(sol, ks=[1, 2, 3, 4])["ntps"][1:],
                               whitened_sweep(sol, ks=[1, 2, 3, 4])["ntps"][1:], atol=1e-12)


@pytest.mark.parametrize("mutate,message", [
    (lambda s: (s[0] + np.triu(np.ones_like(s[0]), 1), *s[1:]), "not symmetric"),
    (lambda s: (s[0], s[1], np.where(np.eye(len(s[2])) > 0, np.nan, s[2]), s[3]), "non-finite"),
    (lambda s: (s[0], s[1][:-1], *s[2:]), "must have shape"),
    (lambda s: (s[0], s[1][:, :1], *s[2:]), "at least 2 classes"),
    (lambda s: (s[0][:, :-1], *s[1:]), "square"),
    (lambda s: (np.zeros_like(s[0]), *s[1:]), "all zeros"),
    (lambda s: (*s[:3], s[3][:-1]), "must have shape"),
])
def test_bad_inputs_raise_value_errors_naming_the_problem(mutate, message, random_stats):
    stats = random_stats(np.random.default_rng(8), d=10, N=50)
    with pytest.raises(ValueError, match=message):
        validate_stats(*mutate(stats))


def test_bad_options_raise(random_stats):
    stats = random_stats(np.random.default_rng(9), d=10, N=50)
    with pytest.raises(ValueError, match="order"):
        solve_layer(*stats, order="up")
    sol = solve_layer(*stats)
    with pytest.raises(ValueError, match="fractions"):
        ntps_sweep(sol, fractions=[0.0, 0.5])
    with pytest.raises(ValueError, match="positive"):
        ntps_sweep(sol, ks=[0])


def test_rank_decision_ignores_feature_units_but_atol_does_not(random_stats):
    # a "massive activation": one feature 1e5 times larger than the others (variance 1e10 times)
    rng = np.random.default_rng(10)
    XX, XY, C0, C1 = random_stats(rng, d=30, N=400)
    D = np.ones(30)
    D[0] = 1e5
    scaled = [D[:, None] * XX * D[None, :], D[:, None] * XY, D[:, None] * C0 * D[None, :], D[:, None] * C1 * D[None, :]]
    b = np.linalg.eigvalsh(scaled[0])
    assert (b > 1e-7 * b.max()).sum() < 30  # an unscaled relative tolerance would drop real directions
    sol = solve_layer(*scaled)
    assert sol.U.rank == sol.V.rank == 30
    # the subspaces map exactly: U_scaled = D⁻¹ U, so the label directions' Σ-geometry is unchanged
    ref = solve_layer(XX, XY, C0, C1)
    np.testing.assert_allclose(sol.U.values.numpy(), ref.U.values.numpy(), rtol=1e-6)


@pytest.mark.parametrize("shape", ["decaying", "flat", "one_small"])
def test_cholesky_path_rank_equals_eigh_rank_near_the_tolerance(shape):
    """The Cholesky path is taken only when eigh would drop nothing (rank decisions unchanged); the deflated
    Cholesky path, which drops what eigh drops, must keep the same rank too."""
    d = 120
    Q, _ = np.linalg.qr(np.random.default_rng(12).standard_normal((d, d)))
    taken = []
    for ratio in [1e-9, 5e-8, 0.9e-7, 1.1e-7, 3e-7, 1e-6, 1e-2]:
        ev = {"decaying": np.logspace(0, np.log10(ratio), d), "flat": np.r_[np.ones(d - 1), ratio],
              "one_small": np.r_[1.0, np.full(d - 4, 0.5), np.full(3, ratio)]}[shape]
        B = torch.from_numpy((Q * ev) @ Q.T)
        chol, eig = whiten(B, method="cholesky"), whiten(B, method="eigh")
        assert chol.rank == eig.rank
        taken.append(chol.method == "cholesky")
        if chol.method == "cholesky":
            np.testing.assert_allclose((chol.W.T @ B @ chol.W).numpy(), np.eye(d), atol=1e-6)
    assert not taken[0] and taken[-1]  # rank-deficient: eigh; well conditioned: Cholesky


@pytest.mark.parametrize("order", ["descending", "ascending"])
def test_complement_sweep_equals_the_projection_on_the_first_columns(order, random_stats):
    """On the Cholesky path large k_V are scored through the complement span(L Y_{>k}) of span(V_k)."""
    sol = solve_layer(*random_stats(np.random.default_rng(13), d=260, N=1500, C=3), order=order)
    assert sol.V.whitener.method == "cholesky"
    res = ntps_sweep(sol, fractions=[0.05, 0.3, 0.5, 0.7, 0.95, 1.0])
    V, U = sol.V.vectors.numpy(), sol.U.vectors.numpy()
    assert res["k_V"][-1] == 260 and res["ntps"][-1] == pytest.approx(1.0, abs=1e-12)
    for kV, kU, got in zip(res["k_V"], res["k_U"], res["ntps"]):
        Q, Uk = np.linalg.qr(V[:, :kV])[0], U[:, :kU]
        assert got == pytest.approx(np.linalg.norm(Q.T @ Uk) ** 2 / np.linalg.norm(Uk) ** 2, abs=1e-10)


def near_singular(B, small):
    """B with the smallest eigenvalues of its Jacobi-scaled form replaced by ``small`` (× the largest)."""
    s = 1 / np.sqrt(np.diag(B))
    b, Q = np.linalg.eigh(s[:, None] * B * s[None, :])
    b[: len(small)] = np.asarray(small) * b[-1]
    return (Q * b) @ Q.T / s[:, None] / s[None, :]


@pytest.mark.parametrize("small", [[1e-9], [3e-10, 2e-8], [1e-9, 1e-9, 5e-8]])
def test_deflated_cholesky_whitening_keeps_the_eigh_range(small):
    """A few eigenvalues of Bs below tol: the Cholesky path projects them out instead of taking eigh."""
    d = 260
    Q, _ = np.linalg.qr(np.random.default_rng(14).standard_normal((d, d)))
    B = torch.from_numpy(near_singular((Q * np.logspace(0, -3, d)) @ Q.T, small))
    defl, eig = whiten(B, method="cholesky"), whiten(B, method="eigh")
    assert defl.method == "deflated" and defl.rank == eig.rank == d - len(small)
    np.testing.assert_allclose((defl.W.T @ B @ defl.W).numpy(), np.eye(defl.rank), atol=1e-8)
    P = [np.linalg.qr(wh.W.numpy())[0] for wh in (defl, eig)]  # orthonormal bases of the two ranges
    assert np.linalg.norm(P[0] @ P[0].T - P[1] @ P[1].T, 2) < 1e-8


@pytest.mark.parametrize("order", ["descending", "ascending"])
def test_deflated_c0_equals_naive_and_its_complement_sweep(order, random_stats):
    XX, XY, C0, C1 = random_stats(np.random.default_rng(15), d=280, N=1500, C=3)
    C0 = near_singular(C0, [1e-9, 3e-8])
    sol = solve_layer(XX, XY, C0, C1, order=order)
    assert sol.V.whitener.method == "deflated" and sol.V.rank == 278
    fr = [0.05, 0.3, 0.5, 0.7, 0.95, 1.0]
    res = ntps_sweep(sol, fractions=fr)
    if order == "descending":
        ref = naive_ntps(XX, XY, C0, C1, fr)
        m = res["unique"]
        assert m.sum() >= 5
        np.testing.assert_allclose(res["ntps"][m], ref[m], rtol=0, atol=1e-8)
    V, U = sol.V.vectors.numpy(), sol.U.vectors.numpy()
    for kV, kU, got in zip(res["k_V"], res["k_U"], res["ntps"]):
        Qv, Uk = np.linalg.qr(V[:, :kV])[0], U[:, :kU]
        assert got == pytest.approx(np.linalg.norm(Qv.T @ Uk) ** 2 / np.linalg.norm(Uk) ** 2, abs=1e-10)


def conditioned(d, m, cond, seed):
    """Z (d, m) with singular values from 1 down to 1/cond, and X (d, 3)."""
    g = torch.Generator().manual_seed(seed)
    Q1 = torch.linalg.qr(torch.randn(d, m, generator=g, dtype=torch.float64))[0]
    Q2 = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))[0]
    return (Q1 * torch.logspace(0, -np.log10(cond), m, dtype=torch.float64)) @ Q2.T, torch.randn(d, 3, generator=g,
                                                                                               dtype=torch.float64)


@pytest.mark.parametrize("cond,steps", [(1e2, 1), (3e5, 2), (1e8, None)])
def test_normal_equation_projections_are_certified_or_refused(cond, steps, monkeypatch):
    """The nested projections by normal equations equal those of Householder QR wherever their certificate
    passes (at 3e5 only after a refinement step), and are refused where the Gram matrix's conditioning (1e16)
    leaves no digit to certify; the sweep then takes Householder QR."""
    import ntps.score
    from ntps.score import _nested_captured, _nested_coordinates, _nested_residuals, _prefix_sums

    Z, X = conditioned(300, 200, cond, seed=16)
    lam_min = float(torch.linalg.svdvals(Z)[-1]) ** 2
    js, cols = np.array([1, 40, 120, 200, 40]), np.array([1, 2, 3, 3, 3])
    ref = _prefix_sums(_nested_coordinates(Z, X)[0] ** 2, js, cols)
    solves = []
    counted = lambda *a, **k: solves.append(1) or torch.linalg.solve_triangular(*a, **k)  # noqa: E731
    monkeypatch.setattr(ntps.score, "solve_triangular", counted)
    assert (_nested_residuals(Z, X, np.unique(js), lam_min) is not None) == (steps is not None)
    if steps is not None:
        assert len(solves) == 2 * steps  # two triangular solves per step
    assert _nested_residuals(Z, X, np.unique(js), 0.0) is None  # no bound on λ_min: nothing certified
    np.testing.assert_allclose(_nested_captured(Z, X, js, cols, lam_min), ref, rtol=0,
                               atol=1e-11 * float((X**2).sum()))


def test_whitener_gram_bounds_hold_on_every_path():
    """``Whitener.gram_bounds`` are lower bounds on λ_min of the Gram matrices of ``W Y`` and of the complement
    basis, for badly scaled B on the Cholesky, deflated and eigh paths."""
    d, rng = 260, np.random.default_rng(17)
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    units = np.logspace(-2, 2, d)  # feature units spanning 10⁴: B's diagonal spans 10⁸
    B = units[:, None] * ((Q * np.logspace(0, -3, d)) @ Q.T) * units[None, :]
    Y = torch.linalg.qr(torch.from_numpy(rng.standard_normal((d, d))))[0]
    for mat, method, path in ((B, "cholesky", "cholesky"), (near_singular(B, [1e-9]), "cholesky", "deflated"),
                              (B, "eigh", "eigh")):
        wh = whiten(torch.from_numpy(mat), method=method)
        fwd, comp = wh.gram_bounds()
        assert wh.method == path
        Yr = torch.linalg.qr(Y[: wh.rank, : wh.rank - 5])[0]  # orthonormal columns in R^rank
        lam = lambda Z: float(torch.linalg.eigvalsh(Z.T @ Z)[0])  # noqa: E731
        assert 0 < fwd <= lam(wh.apply(Yr))
        if wh.method == "cholesky":
            assert 0 < comp <= lam(wh.complement(Yr))
        else:  # deflated: the complement holds directions of B below tol; eigh: no complement basis
            assert comp == 0.0


def test_default_sweep_takes_the_certified_normal_equations(monkeypatch, random_stats):
    """On a well-conditioned layer the default (descending) sweep needs no Householder QR, and still equals the
    naive algorithm."""
    import ntps.score

    stats = random_stats(np.random.default_rng(18), d=300, N=1500, C=4)
    sol = solve_layer(*stats)
    assert sol.V.whitener.method == "cholesky"
    monkeypatch.setattr(ntps.score, "_nested_coordinates", lambda *a: pytest.fail("Householder QR was taken"))
    res = ntps_sweep(sol)
    ref = naive_ntps(*stats, DEFAULT_FRACTIONS)
    m = res["unique"]
    assert m.sum() >= 15
    np.testing.assert_allclose(res["ntps"][m], ref[m], rtol=0, atol=1e-8)
