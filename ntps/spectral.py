"""A label-free baseline from the text-level second moment XX of one layer: how spread the pooled features are.

``Σ_c = XX / N − μ μᵀ`` (μ = sum_x / N; without sum_x the uncentred ``XX / N``) is the covariance of the
mean-pooled features (SPEC §1). With its eigenvalues λ ≥ 0 normalised to p_i = λ_i / Σ_j λ_j:

- ``matrix_entropy`` = −Σ p_i log p_i (nats; the von Neumann entropy of Σ_c / tr Σ_c),
- ``effective_rank`` = exp(matrix_entropy) (Roy & Vetterli, 2007), between 1 (one direction) and d.

Neither uses the labels, so a correlation of the effective rank with a probe metric is a "more spread, easier
to probe" effect that NTPS has to beat. The two are monotone in each other: one of them is enough as a score.
"""

from __future__ import annotations

import numpy as np

#: The column scores.py writes (higher = more spread).
SPECTRAL = ["effective_rank"]


def matrix_entropy(XX, sum_x, n_texts: int) -> float:
    """Shannon entropy (nats) of the normalised eigenvalues of the feature covariance.

    ``XX`` (d, d) = Σ_n x_n x_nᵀ, ``sum_x`` (d,) = Σ_n x_n or None (uncentred), ``n_texts`` = N >= 1; arrays or CPU
    tensors. Eigenvalues below zero (round-off) count as zero. NaN when the covariance is zero; ValueError for
    mismatched shapes or N < 1.
    """
    XX = np.asarray(XX, dtype=np.float64)
    if XX.ndim != 2 or XX.shape[0] != XX.shape[1] or n_texts < 1:
        raise ValueError(f"matrix_entropy: need a square XX and N >= 1, got {XX.shape} and N = {n_texts}")
    S = XX / n_texts
    if sum_x is not None:
        mu = np.asarray(sum_x, dtype=np.float64) / n_texts
        if mu.shape != (XX.shape[0],):
            raise ValueError(f"matrix_entropy: sum_x must have shape ({XX.shape[0]},), got {mu.shape}")
        S = S - np.outer(mu, mu)
    lam = np.clip(np.linalg.eigvalsh((S + S.T) / 2), 0.0, None)
    total = lam.sum()
    if not total > 0:
        return float("nan")
    p = lam[lam > 0] / total
    return float(-(p * np.log(p)).sum())


def effective_rank(XX, sum_x, n_texts: int) -> float:
    """exp(:func:`matrix_entropy`): the number of equally strong directions with the same entropy."""
    return float(np.exp(matrix_entropy(XX, sum_x, n_texts)))


def spectral_scores(sums, n_texts: int) -> dict:
    """``{"effective_rank": ...}`` of one layer's sums (an object with ``XX`` and ``sum_x``, numpy arrays or
    torch tensors; SPEC §1)."""
    sum_x = getattr(sums, "sum_x", None)
    return {"effective_rank": effective_rank(_numpy(sums.XX), None if sum_x is None else _numpy(sum_x), n_texts)}


def _numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)
