"""LogME's two conventions (issue 16, item 5) against independent per-sample implementations on explicit features.

``paper``: the evidence of the paper (log|A| over all d eigenvalues of A = αI + βFᵀF), maximised by the
fixed-point iteration run to convergence. ``reference``: what thuml/LogME's ``LogME().fit(F, y)`` returns —
log|A| over min(N, d) singular values of F when N ≤ d (those > 1e-10 otherwise) with d/2 log α kept, at most
11 steps from α = β = 1 stopping at a 1e-3 relative change of α/β, 1e-5 added to the two update denominators.
Both are written here with dense d×d matrices (solve, slogdet) on the features, not on the sums.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import scores
from ntps.artifacts import LayerSums, Stats, save_stats
from ntps.baselines import all_baselines, logme

LOG_2PI = math.log(2 * math.pi)


def dense_step(F, y, alpha, beta):
    """γ, ‖m‖², ‖F m − y‖² at (α, β), with m = β A⁻¹ Fᵀ y and A = αI + βFᵀF (d × d)."""
    d = F.shape[1]
    A = alpha * np.eye(d) + beta * F.T @ F
    m = beta * np.linalg.solve(A, F.T @ y)
    sigma = np.clip(np.linalg.eigvalsh(F.T @ F), 0, None)
    gamma = float(np.sum(beta * sigma / (alpha + beta * sigma)))
    return gamma, float(m @ m), float(np.sum((F @ m - y) ** 2)), A


def evidence(F, y, alpha, beta, m2, res2, logdet):
    N, d = F.shape
    return (d / 2 * math.log(alpha) + N / 2 * math.log(beta) - N / 2 * LOG_2PI - beta / 2 * res2
            - alpha / 2 * m2 - logdet / 2)


def paper_logme(F, labels):
    """Mean over classes with texts of L_k(α*, β*)/N, the iteration run until α/β changes by < 1e-13."""
    N = F.shape[0]
    out = []
    for k in np.unique(labels):
        y = (labels == k).astype(float)
        alpha = beta = 1.0
        for _ in range(200_000):
            gamma, m2, res2, _ = dense_step(F, y, alpha, beta)
            new_alpha, new_beta = gamma / m2, (N - gamma) / res2
            done = abs(new_alpha / new_beta - alpha / beta) <= 1e-13 * alpha / beta
            alpha, beta = new_alpha, new_beta
            if done:
                break
        gamma, m2, res2, A = dense_step(F, y, alpha, beta)
        out.append(evidence(F, y, alpha, beta, m2, res2, np.linalg.slogdet(A)[1]) / N)
    return float(np.mean(out))


def reference_logme(F, labels):
    """thuml/LogME's recipe, per sample: the evidence at the last step, with its log-determinant."""
    N, d = F.shape
    sv = np.linalg.svd(F, compute_uv=False)
    n_sv = N if N <= d else int(np.sum(sv > 1e-10))  # singular values the released code keeps
    out = []
    for k in range(int(labels.max()) + 1):
        y = (labels == k).astype(float)
        alpha = beta = 1.0
        for _ in range(11):
            t = alpha / beta
            gamma, m2, res2, _ = dense_step(F, y, alpha, beta)
            alpha, beta = gamma / (m2 + 1e-5), (N - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        # log|A| over the kept singular values only: log|αI + βFᵀF| − (d − n_sv) log α
        logdet = np.linalg.slogdet(alpha * np.eye(d) + beta * F.T @ F)[1] - (d - n_sv) * math.log(alpha)
        out.append(evidence(F, y, alpha, beta, m2, res2, logdet) / N)
    return float(np.mean(out))


def features(N, d, C, seed, signal=1.5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N)
    labels[:C] = np.arange(C)
    F = rng.standard_normal((N, d)) + 0.3
    F[:, :C] += signal * np.eye(C)[labels]
    return F, labels


def sums(F, labels, C):
    Y = np.eye(C)[labels]
    return F.T @ F, F.T @ Y, F.sum(0), np.bincount(labels, minlength=C), F.shape[0]


CASES = [(200, 12, 3), (90, 30, 2), (24, 40, 3), (30, 30, 2), (20, 48, 4)]  # N > d, and N ≤ d


@pytest.mark.parametrize("N,d,C", CASES)
def test_each_convention_equals_its_independent_per_sample_implementation(N, d, C):
    F, labels = features(N, d, C, seed=N + d)
    args = sums(F, labels, C)
    assert logme(*args, convention="paper") == pytest.approx(paper_logme(F, labels), rel=1e-8, abs=1e-10)
    assert logme(*args, convention="reference") == pytest.approx(reference_logme(F, labels), rel=1e-9, abs=1e-10)
    assert logme(*args) == logme(*args, convention="paper")  # the default


def test_the_conventions_agree_for_full_rank_n_gt_d_and_differ_for_n_le_d():
    F, labels = features(400, 16, 3, seed=1)
    big_n = sums(F, labels, 3)
    assert logme(*big_n, convention="reference") == pytest.approx(logme(*big_n), abs=2e-3)
    F, labels = features(20, 80, 3, seed=2)
    small_n = sums(F, labels, 3)
    # the extra (d − N)/2 log α of the reference, per sample: several nats here
    assert logme(*small_n, convention="reference") - logme(*small_n) > 0.5


def test_reference_keeps_an_empty_class_below_the_largest_label():
    """thuml/LogME averages over classes 0 .. max label; an empty one gets the value its 1e-5 allows."""
    F, labels = features(60, 8, 3, seed=3, signal=2.0)
    labels[labels == 1] = 0
    args = sums(F, labels, 3)
    assert logme(*args, convention="reference") == pytest.approx(reference_logme(F, labels), rel=1e-9)
    assert logme(*args) == pytest.approx(paper_logme(F, labels), rel=1e-8)  # paper: classes with texts


def test_convention_errors_and_all_baselines():
    F, labels = features(50, 6, 2, seed=4)
    args = sums(F, labels, 2)
    with pytest.raises(ValueError, match="convention must be one of"):
        logme(*args, convention="thuml")
    with pytest.raises(ValueError, match="no center"):
        logme(*args, center=True, convention="reference")
    with pytest.raises(ValueError, match="reference_logdet"):
        logme(*args, reference_logdet=True, convention="reference")
    XX, XY, sx, counts, N = args
    layer = {"XX": XX, "XY": XY, "sum_x": sx}
    assert all_baselines(layer, counts, N, logme_convention="reference")["logme"] == \
        logme(*args, convention="reference")


def test_scores_script_flag(tmp_path):
    F, labels = features(20, 40, 3, seed=5)
    XX, XY, sx, counts, N = sums(F, labels, 3)
    t = torch.from_numpy
    zero = torch.zeros(40, 40, dtype=torch.float64)  # C0, C1: not read by scores.py
    stats = Stats(layers={0: LayerSums(t(XX), t(XY), zero, zero.clone(), t(sx))}, class_counts=t(counts), n_texts=N)
    save_stats(tmp_path, stats, {"model": "toy", "dataset": "toy", "split": "train"})
    paper = scores.main(scores.parse_args(["--stats_dir", str(tmp_path)]))
    assert "logme_convention" not in paper["settings"]  # earlier results stay up to date
    assert paper["rows"][0]["logme"] == pytest.approx(paper_logme(F, labels), rel=1e-8)
    ref = scores.main(scores.parse_args(["--stats_dir", str(tmp_path), "--logme_convention", "reference",
                                         "--overwrite"]))
    assert ref["settings"]["logme_convention"] == "reference"
    assert ref["rows"][0]["logme"] == pytest.approx(reference_logme(F, labels), rel=1e-9)
    saved = json.loads((tmp_path / "scores.json").read_text())
    assert saved["rows"][0]["logme"] == ref["rows"][0]["logme"]
