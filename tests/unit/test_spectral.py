"""ntps.spectral: the label-free effective rank / matrix entropy of the pooled features' covariance."""

from __future__ import annotations

import numpy as np
import pytest

from ntps import spectral


def test_effective_rank_from_sums_equals_the_features_spectrum():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(200, 6)) * np.array([3, 2, 1, 1, 0.5, 0.1]) + 5.0  # a large mean: centring matters
    lam = np.linalg.eigvalsh(np.cov(F.T, bias=True))
    p = lam / lam.sum()
    expect = np.exp(-(p * np.log(p)).sum())
    XX, sx = F.T @ F, F.sum(0)
    assert spectral.effective_rank(XX, sx, 200) == pytest.approx(expect, rel=1e-9)
    assert spectral.matrix_entropy(XX, sx, 200) == pytest.approx(np.log(expect), rel=1e-9)
    assert spectral.effective_rank(XX, None, 200) < 2  # uncentred: the mean direction dominates


def test_effective_rank_limits_and_errors():
    assert spectral.effective_rank(np.eye(5) * 7, np.zeros(5), 10) == pytest.approx(5.0)
    v = np.arange(1.0, 5.0)
    assert spectral.effective_rank(np.outer(v, v), None, 3) == pytest.approx(1.0)
    assert np.isnan(spectral.effective_rank(np.zeros((3, 3)), None, 3))
    with pytest.raises(ValueError, match="square"):
        spectral.effective_rank(np.zeros((3, 2)), None, 3)
    with pytest.raises(ValueError, match="sum_x"):
        spectral.effective_rank(np.eye(3), np.zeros(2), 3)


def test_spectral_scores_accepts_tensors():
    torch = pytest.importorskip("torch")

    class Sums:
        XX, sum_x = torch.eye(4, dtype=torch.float64) * 2, torch.zeros(4, dtype=torch.float64)

    assert spectral.spectral_scores(Sums, 2) == {"effective_rank": pytest.approx(4.0)}
