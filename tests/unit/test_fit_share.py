"""fit_share_dropped (issue 15): the share of the least-squares fit tr(Aᵀ B⁺ A) in the directions a rank
tolerance dropped, against numpy's pseudo-inverse with the same relative cut on the Jacobi-scaled matrix."""

import numpy as np
import pytest

from ntps.score import fit_share_dropped


def _naive(B, A, rcond):
    s = 1 / np.sqrt(np.diag(B))
    Bs, As = B * s[:, None] * s[None, :], A * s[:, None]
    full = np.trace(As.T @ np.linalg.solve(Bs, As))
    kept = np.trace(As.T @ np.linalg.pinv(Bs, rtol=rcond, hermitian=True) @ As)
    rank = int((np.linalg.eigvalsh(Bs) > rcond * np.linalg.eigvalsh(Bs).max()).sum())
    return 1 - kept / full, rank


@pytest.mark.parametrize("seed", [0, 1])
def test_share_matches_pseudo_inverse_of_a_nearly_singular_matrix(seed):
    rng = np.random.default_rng(seed)
    d, c = 12, 3
    Q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    scales = rng.uniform(0.1, 10, d)
    B = (Q * np.r_[np.ones(d - 2), 1e-6, 1e-7]) @ Q.T  # two small eigenvalues
    B = B * scales[:, None] * scales[None, :]
    A = rng.normal(size=(d, c)) * scales[:, None]
    rcond = 3e-6  # drops the two small directions of the scaled matrix
    want, rank = _naive(B, A, rcond)
    assert rank == d - 2 and 0.5 < want < 1  # the dropped directions carry most of the fit: 1/λ weighting
    assert fit_share_dropped(B, A, rank) == pytest.approx(want, rel=1e-6)


def test_nothing_dropped_gives_zero_and_everything_dropped_gives_one():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(50, 6))
    B, A = X.T @ X, X.T @ rng.normal(size=(50, 2))
    assert fit_share_dropped(B, A, 6) == 0.0
    assert fit_share_dropped(B, A, 0) == pytest.approx(1.0)
    assert fit_share_dropped(B, np.zeros((6, 2)), 3) != fit_share_dropped(B, np.zeros((6, 2)), 3)  # NaN: no fit
