"""The absolute tolerance (``atol``, K_sweep.py ``--atol``) is the authors' rule (SPEC §2, issue 12.16):
eigenvalues of the N-normalised right-hand matrices Σ/N and C0/N at or below atol are dropped. Checked
against an independent re-implementation of that cutoff (numpy: divide by N, eigh, count > atol)."""

import numpy as np
import pytest

import K_sweep
from ntps.score import ntps_sweep, solve_layer


def authors_rank(B, n_texts, atol):
    """The authors' cutoff: their sums are divided by N; eigenvalues of B/N > atol are kept."""
    return int((np.linalg.eigvalsh((B + B.T) / 2 / n_texts) > atol).sum())


def decaying_stats(rng, d, N, C=3, T=6, decades=7.0):
    """Sums of SPEC §1 from hidden states whose feature scales span ``decades`` orders of magnitude (so the
    spectra of Σ/N and C0/N straddle 1e-8, as in real models' massive-activation layers)."""
    Q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    H = (rng.standard_normal((N, T, d)) * np.logspace(0, -decades, d)) @ Q.T
    X = H.mean(1)
    y = rng.integers(0, C, N)
    y[:C] = np.arange(C)
    S = H.cumsum(1)[:, :-1].reshape(-1, d)
    return X.T @ X, X.T @ np.eye(C)[y], S.T @ S, S.T @ H[:, 1:].reshape(-1, d)


@pytest.mark.parametrize("d,N", [(40, 300), (64, 30), (300, 120), (300, 2000)])  # N > d and N < d
@pytest.mark.parametrize("order", ["descending", "ascending"])
def test_atol_keeps_the_authors_rank_of_sigma_and_c0(d, N, order):
    rng = np.random.default_rng(d * N)
    XX, XY, C0, C1 = decaying_stats(rng, d, N)
    atol = 1e-8
    sol = solve_layer(XX, XY, C0, C1, atol=atol, n_texts=N, order=order)
    rows = ntps_sweep(sol)
    want_U, want_V = authors_rank(XX, N, atol), authors_rank(C0, N, atol)
    assert sol.U.rank == sol.U.whitener.rank == want_U and set(rows["r_U"]) == {want_U}
    assert sol.V.rank == sol.V.whitener.rank == want_V and set(rows["r_V"]) == {want_V}
    # the case discriminates: the threshold on the raw sums (the old behaviour) keeps more directions
    assert authors_rank(XX, 1, atol) >= want_U and authors_rank(C0, 1, atol) > want_V
    if N < d:
        assert want_U <= N


def test_atol_on_normalised_sums_is_invariant_to_dividing_by_n():
    rng = np.random.default_rng(1)
    N = 500
    stats = decaying_stats(rng, 48, N)
    raw = solve_layer(*stats, atol=1e-8, n_texts=N)
    normalised = solve_layer(*(s / N for s in stats), atol=1e-8, n_texts=1)
    assert (raw.U.rank, raw.V.rank) == (normalised.U.rank, normalised.V.rank)
    np.testing.assert_allclose(ntps_sweep(raw)["ntps"], ntps_sweep(normalised)["ntps"], atol=1e-8)


def test_cholesky_path_with_atol_keeps_every_direction_above_it():
    """d >= 256 and a well-conditioned Σ: the certified Cholesky path, whose rank must still be the authors'."""
    rng = np.random.default_rng(2)
    N = 1500
    XX, XY, C0, C1 = decaying_stats(rng, 300, N, decades=1.0)
    sol = solve_layer(XX, XY, C0, C1, atol=1e-8, n_texts=N)
    assert sol.U.whitener.method == "cholesky" and sol.U.rank == authors_rank(XX, N, 1e-8) == 300
    # atol just below the smallest eigenvalue of Σ/N: kept; just above it: dropped (eigh path)
    lo = np.linalg.eigvalsh(XX / N)[0]
    assert solve_layer(XX, XY, C0, C1, atol=0.99 * lo, n_texts=N).U.rank == 300
    assert solve_layer(XX, XY, C0, C1, atol=1.01 * lo, n_texts=N).U.rank == 299


def test_atol_needs_the_number_of_texts():
    XX, XY, C0, C1 = decaying_stats(np.random.default_rng(3), 12, 40)
    for n in (None, 0):
        with pytest.raises(ValueError, match="n_texts"):
            solve_layer(XX, XY, C0, C1, atol=1e-8, n_texts=n)


def test_k_sweep_atol_ranks_match_the_authors_cutoff(tmp_path, make_artifact):
    raw = make_artifact(tmp_path, d=16, N=300)
    N = 300
    # a threshold inside the toy spectra of Σ/N (which the fixture's sums do not reach at 1e-8)
    atol = float(np.sqrt(np.prod(np.linalg.eigvalsh(raw[0][0] / N)[5:7])))
    res = K_sweep.main(K_sweep.parse_args(["--stats_dir", str(tmp_path), "--atol", f"{atol!r}",
                                           "--fractions", "0.5"]))
    assert res["settings"]["atol"] == atol and res["settings"]["atol_on"] == "sums / n_texts"
    for layer, (XX, _, C0, _) in raw.items():
        row = next(r for r in res["rows"] if r["layer"] == layer)
        assert row["r_U"] == authors_rank(XX, N, atol) and row["r_V"] == authors_rank(C0, N, atol)
    assert res["rows"][0]["r_U"] == 16 - 6 < authors_rank(raw[0][0], 1, atol)  # the raw-sum rule keeps more
