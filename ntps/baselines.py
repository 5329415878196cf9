"""Training-free transferability baselines computed exactly from the sums of SPEC §1.

Every score here is a function of the per-layer sufficient statistics of a labelled split
(``ntps.artifacts.LayerSums`` plus the class counts and N); none needs a second pass over the
texts. With F (N×d) the mean-pooled features (row n = x_nᵀ) and Y (N×C) the one-hot labels:

====================  =====================================  =========
statistic             identity                                shape
====================  =====================================  =========
``XX``                FᵀF                                     (d, d)
``XY``                FᵀY                                     (d, C)
``sum_x``             Fᵀ1                                     (d,)
``class_counts``      YᵀY diagonal = ‖y_k‖² = n_k             (C,)
``n_texts``           N = Σ_k n_k                             scalar
====================  =====================================  =========

Centred quantities follow without data: F̃ᵀF̃ = XX − s sᵀ/N, F̃ᵀỹ_k = XY_k − s n_k/N and
‖ỹ_k‖² = n_k − n_k²/N, with s = ``sum_x`` and F̃, ỹ the column-centred features and targets.

Public functions (numpy float64 or torch tensors in, Python float out):

- :func:`logme` — LogME (You et al., ICML 2021), mean over classes of the per-sample log
  maximum evidence of a Bayesian linear model on each one-hot column.
- :func:`h_score` — H-score (Bao et al., ICIP 2019), tr(cov(f)⁺ cov(E[f|y])), optional
  shrinkage (Ibrahim et al., ICLR 2022).
- :func:`ls_probe_mse` — in-sample MSE of StandardScaler + LinearRegression (``alpha=0``) or
  StandardScaler + Ridge(alpha) on one-hot targets, the Fig. 2 MSE probe of SPEC §3.
- :func:`all_baselines` — all of them for one layer, sharing the eigendecompositions.

Tolerances (float64, ε = 2.22e-16)
----------------------------------
* **Numerical rank.** An eigenvalue of a Gram matrix is treated as exactly zero when it is
  ``<= rcond * T`` where T is the trace of the *uncentred* Gram matrix in the coordinates used
  (raw for LogME, standardised for the probes and the H-score); the default
  ``rcond = max(N, d) * ε``. T, not the largest eigenvalue, is the reference because the
  round-off of a centred Gram matrix computed from sums (XX − s sᵀ/N) scales with the uncentred
  second moments: features whose mean is large compared to their spread lose about
  log10(mean²/variance) digits, and a larger ``rcond`` (e.g. 1e-10) is then appropriate.
  The rank is also capped structurally at min(d, N) (raw) or min(d, N − 1) (centred), so with
  N ≤ d the null space is discarded exactly, whatever the round-off.
* **Constant features** (StandardScaler's zero-variance case): feature j is treated as constant
  when its variance from the sums, XX_jj/N − (s_j/N)², is ``<= 4 N ε`` times its second moment
  XX_jj/N, the worst-case round-off of those two summed quantities. Like StandardScaler
  (scale 1 for a constant feature) it then contributes nothing after centring.
* **Residuals.** Quantities of the form ‖y‖² − ‖projection‖² are clipped at 0; they are exact
  to about ε·‖y‖²·cond, so an almost perfect in-sample fit is resolved only to that absolute
  level. When the kept rank equals the number of (effective) samples the features span every
  target and the residual is set to exactly 0.
* **Input checks.** ``XX`` must be symmetric to 1e-6 relative (it is then symmetrised), have a
  non-negative diagonal, and the rows of ``XY`` must sum to ``sum_x`` to 1e-6 relative (one-hot
  labels), else :class:`ValueError` names the problem.

All functions need at least two classes with texts (a one-class split has no transfer
problem); classes with zero texts are allowed and handled as each docstring states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["logme", "h_score", "ls_probe_mse", "all_baselines", "LOGME_CONVENTIONS"]

#: LogME conventions: the paper's evidence (the project's default) and thuml/LogME's released code.
LOGME_CONVENTIONS = ("paper", "reference")
#: thuml/LogME (LogME.py, ``_fit_fixed_point``): at most 11 fixed-point steps, stop at a relative change of
#: t = α/β <= 1e-3, 1e-5 added to the denominators of the α and β updates, singular values > 1e-10 kept
#: when N > d.
_REF_STEPS, _REF_RTOL, _REF_EPS, _REF_SV_TOL = 11, 1e-3, 1e-5, 1e-10

_EPS = float(np.finfo(np.float64).eps)
_LOG_2PI = math.log(2.0 * math.pi)


# ----------------------------------------------------------------------------- input handling


def _to_numpy(name: str, a: Any) -> np.ndarray:
    """float64 numpy copy of an array-like or a (possibly bf16 / GPU) torch tensor."""
    if a is None:
        raise ValueError(f"{name} is required")
    if hasattr(a, "detach"):  # torch.Tensor, without importing torch here
        a = a.detach().to("cpu").double().numpy()
    try:
        return np.array(a, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} is not a numeric array ({e})") from e


@dataclass(frozen=True)
class _Sums:
    """Validated float64 statistics (private)."""

    XX: np.ndarray  # (d, d), symmetrised
    XY: np.ndarray  # (d, C)
    sum_x: np.ndarray | None  # (d,)
    counts: np.ndarray  # (C,) float64 holding integers
    N: int

    @property
    def d(self) -> int:
        return self.XX.shape[0]

    @property
    def C(self) -> int:
        return self.counts.shape[0]

    def centred(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """F̃ᵀF̃ (d, d), F̃ᵀỸ (d, C), ‖ỹ_k‖² (C,) from the sums."""
        s, N = self.sum_x, self.N
        XXc = self.XX - np.outer(s, s) / N
        XXc = 0.5 * (XXc + XXc.T)
        XYc = self.XY - np.outer(s, self.counts) / N
        yyc = self.counts - self.counts**2 / N
        return XXc, XYc, yyc


def _validate(XX, XY, sum_x, class_counts, n_texts, *, need_sum_x: bool = True) -> _Sums:
    XX = _to_numpy("XX", XX)
    XY = _to_numpy("XY", XY)
    counts = _to_numpy("class_counts", class_counts)
    sx = None if sum_x is None and not need_sum_x else _to_numpy("sum_x", sum_x)
    if XX.ndim != 2 or XX.shape[0] != XX.shape[1] or XX.shape[0] == 0:
        raise ValueError(f"XX must be a non-empty square (d, d) matrix, got shape {XX.shape}")
    d = XX.shape[0]
    if counts.ndim != 1 or counts.shape[0] == 0:
        raise ValueError(f"class_counts must be a non-empty (C,) vector, got shape {counts.shape}")
    C = counts.shape[0]
    if XY.shape != (d, C):
        raise ValueError(f"XY must have shape (d, C) = {(d, C)} (d from XX, C from class_counts), "
                         f"got {XY.shape}")
    if sx is not None and sx.shape != (d,):
        raise ValueError(f"sum_x must have shape (d,) = {(d,)}, got {sx.shape}")
    for name, a in (("XX", XX), ("XY", XY), ("sum_x", sx), ("class_counts", counts)):
        if a is not None and not np.all(np.isfinite(a)):
            bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
            raise ValueError(f"{name} has {bad} non-finite entr{'y' if bad == 1 else 'ies'} (NaN or inf): "
                             "the statistics are corrupt (overflow or NaN hidden states?)")
    try:
        N = int(n_texts.item() if hasattr(n_texts, "item") else n_texts)
    except (TypeError, ValueError) as e:
        raise ValueError(f"n_texts must be an integer, got {n_texts!r}") from e
    if N != float(n_texts.item() if hasattr(n_texts, "item") else n_texts):
        raise ValueError(f"n_texts must be an integer, got {n_texts!r}")
    if np.any(counts < 0) or np.any(counts != np.round(counts)):
        raise ValueError(f"class_counts must be non-negative integers, got {counts.tolist()}")
    if int(counts.sum()) != N:
        raise ValueError(f"class_counts sum to {int(counts.sum())} but n_texts = {N}: the counts and "
                         "the sums do not describe the same texts")
    if int(np.count_nonzero(counts)) < 2:
        raise ValueError(f"need at least 2 classes with texts, got class_counts = "
                         f"{counts.astype(int).tolist()}:"
                         " with a single class every score is trivial (nothing to transfer to)")
    scale = float(np.max(np.abs(XX)))
    asym = float(np.max(np.abs(XX - XX.T)))
    if asym > 1e-6 * scale:
        raise ValueError(f"XX is not symmetric (max |XX - XXᵀ| = {asym:.3g}, max |XX| = {scale:.3g}): "
                         "expected the Gram matrix sum_n x_n x_nᵀ")
    XX = 0.5 * (XX + XX.T)
    diag = np.diag(XX)
    if np.any(diag < -1e-6 * max(scale, np.finfo(np.float64).tiny)):
        raise ValueError(f"XX has a negative diagonal entry ({float(diag.min()):.3g}): not a Gram matrix")
    if sx is not None:
        # One-hot rows sum to 1, so sum_k XY[:, k] = sum_x; |sum_n x_nj| <= sqrt(N XX_jj).
        gap = np.abs(XY.sum(axis=1) - sx)
        bound = 1e-6 * (np.sqrt(N * np.maximum(diag, 0.0)) + np.abs(sx)) + np.finfo(np.float64).tiny
        if np.any(gap > bound):
            j = int(np.argmax(gap / bound))
            raise ValueError(f"the rows of XY do not sum to sum_x (feature {j}: {XY[j].sum():.6g} vs "
                             f"{sx[j]:.6g}): labels not one-hot, or XY and sum_x come from different texts")
    return _Sums(XX=XX, XY=XY, sum_x=sx, counts=counts, N=N)


def _rcond(rcond: float | None, N: int, d: int) -> float:
    if rcond is None:
        return max(N, d) * _EPS
    rcond = float(rcond)
    if not (0.0 <= rcond < 1.0):
        raise ValueError(f"rcond must be in [0, 1), got {rcond}")
    return rcond


def _range(A: np.ndarray, tol: float, max_rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of the symmetric PSD matrix ``A`` on its numerical range, descending.

    Returns ``w`` (r,) with w > tol and ``Q`` (d, r) orthonormal; r <= max_rank.
    """
    w, Q = np.linalg.eigh(A)
    w, Q = w[::-1], Q[:, ::-1]
    r = min(int(np.count_nonzero(w > tol)), max_rank)
    return w[:r], Q[:, :r]


@dataclass(frozen=True)
class _Standardised:
    """Centred Gram matrix in StandardScaler coordinates, on its numerical range (private).

    Xs = (F − 1μᵀ) S⁻¹ with S = diag(std_j) (ddof 0; 1 for a constant feature, as
    StandardScaler). G = XsᵀXs = S⁻¹ (XX − s sᵀ/N) S⁻¹ = Q diag(w) Qᵀ restricted to w > tol.
    """

    w: np.ndarray  # (r,)
    P: np.ndarray  # (r, C) = Qᵀ XsᵀỸ   (projections of the centred targets)
    yyc: np.ndarray  # (C,)  ‖ỹ_k‖²
    full_span: bool  # r == N − 1: the features span every centred target


def _standardise(S: _Sums, rcond: float | None) -> _Standardised:
    XXc, XYc, yyc = S.centred()
    N = S.N
    m2 = np.diag(S.XX) / N
    var = np.diag(XXc) / N
    keep = var > 4.0 * N * _EPS * m2
    if not np.any(keep):
        r0 = np.zeros((0, S.C))
        return _Standardised(w=np.zeros(0), P=r0, yyc=yyc, full_span=False)
    inv_std = 1.0 / np.sqrt(var[keep])
    G = XXc[np.ix_(keep, keep)] * np.outer(inv_std, inv_std)
    B = XYc[keep] * inv_std[:, None]
    d_kept = int(keep.sum())
    tol = _rcond(rcond, N, S.d) * float(np.sum(np.diag(S.XX)[keep] * inv_std**2))
    max_rank = min(d_kept, N - 1)
    w, Q = _range(G, tol, max_rank)
    return _Standardised(w=w, P=Q.T @ B, yyc=yyc, full_span=(w.shape[0] == N - 1))


# ----------------------------------------------------------------------------- LogME


def _fixed_point_terms(sig, x2, res_perp, n_minus_r, t):
    """Terms of one fixed-point step at t = α/β, for K columns at once.

    ``sig`` (r,), ``x2`` (r, K), ``res_perp`` (K,), ``t`` (K,) (or a scalar). Written with
    s_i = σ_i/t so that nothing cancels at either end of t ∈ (0, ∞):
    γ = Σ s/(1+s), N − γ = (N − r) + Σ 1/(1+s), t‖m‖² = Σ x² s/(1+s)²,
    ‖y − Fm‖² = Σ x²/(1+s)² + res_perp.
    """
    s = sig[:, None] / t
    inv = 1.0 / (1.0 + s)
    gamma = np.sum(s * inv, axis=0)
    n_gamma = n_minus_r + np.sum(inv, axis=0)
    t_m2 = np.sum(x2 * s * inv**2, axis=0)
    res2 = np.sum(x2 * inv**2, axis=0) + res_perp
    return gamma, n_gamma, t_m2, res2


def _fixed_point_map(sig, x2, res_perp, n_minus_r, t):
    """t ↦ α_new/β_new = (γ/‖m‖²)·(‖y − Fm‖²/(N − γ)) of the paper's update."""
    gamma, n_gamma, t_m2, res2 = _fixed_point_terms(sig, x2, res_perp, n_minus_r, t)
    return t * gamma * res2 / (t_m2 * n_gamma)


def _profile_evidence(sig, x2, res_perp, n_eff, t):
    """max_β L(α = tβ, β) and the maximiser β for K columns; t may be +inf.

    L(tβ, β) = n/2 log β − n/2 log 2π − ½ Σ log1p(σ/t) − β/2 E(t), E(t) = ‖y − Fm‖² + t‖m‖²
    = Σ x² t/(t+σ) + res_perp, so β* = n/E and L* = n/2 (log(n/E) − log 2π − 1) − ½ Σ log1p(σ/t).
    At a fixed point of the iteration α‖m‖² = γ and β‖y − Fm‖² = n − γ, hence β = n/E and
    L* equals the paper's L(α, β) there.
    """
    s = sig[:, None] / t
    E = np.sum(x2 / (1.0 + s), axis=0) + res_perp
    beta = n_eff / E
    ev = 0.5 * n_eff * (np.log(beta) - _LOG_2PI - 1.0) - 0.5 * np.sum(np.log1p(s), axis=0)
    return ev, beta


def _bracketed_limit(sig, x2j, res_j, n_minus_r, t0, t_lo, t_hi, tol):
    """Limit of the fixed-point iteration for one column, from its iterate ``t0``.

    The iteration moves in the direction of ψ(u) = log T(e^u) − u (u = log t). Scan u on a grid
    of step 1/4 in that direction for the first sign change of ψ and solve ψ = 0 there by
    Brent's method; with none before the end of [t_lo, t_hi], the iteration runs to that
    boundary. This is the point a monotone (slow, T' ≈ 1) or damped-oscillating iteration
    converges to, found in a few hundred evaluations instead of up to ~10⁵ iterations.
    """
    from scipy.optimize import brentq

    x2c = x2j[:, None]

    def psi(u):
        u = np.atleast_1d(np.asarray(u, dtype=np.float64))
        t = np.exp(u)
        return np.log(_fixed_point_map(sig, x2c, res_j, n_minus_r, t)) - u

    u0, u_lo, u_hi = math.log(t0), math.log(t_lo), math.log(t_hi)
    p0 = float(psi(u0)[0])
    if p0 == 0.0 or not math.isfinite(p0):
        return t0
    direction = 1.0 if p0 > 0 else -1.0
    end = u_hi if direction > 0 else u_lo
    n = max(int(math.ceil(abs(end - u0) / 0.25)), 1)
    grid = np.minimum(u0 + direction * 0.25 * np.arange(1, n + 1), u_hi) if direction > 0 else \
        np.maximum(u0 + direction * 0.25 * np.arange(1, n + 1), u_lo)
    vals = np.empty_like(grid)
    for lo in range(0, n, 64):  # blocks of 64 grid points: (r, 64) temporaries
        vals[lo:lo + 64] = psi(grid[lo:lo + 64])
    crossed = np.flatnonzero(np.sign(vals) != direction)
    if crossed.size == 0:
        return t_hi if direction > 0 else t_lo
    i = int(crossed[0])
    a = u0 if i == 0 else float(grid[i - 1])
    b = float(grid[i])
    if vals[i] == 0.0:
        return math.exp(b)
    u_star = brentq(lambda u: float(psi(u)[0]), min(a, b), max(a, b), xtol=tol, rtol=4 * _EPS)
    return math.exp(u_star)


def _logme_columns(sig, x2, res_perp, n_eff, d, *, tol, max_iter, reference_logdet):
    """Per-column maximum log evidence (not divided by N). Shapes: sig (r,), x2 (r, K), res_perp (K,)."""
    r, K = x2.shape
    n_minus_r = float(n_eff - r)
    t = np.full(K, np.inf)  # no signal on the range (x² ≡ 0): the maximum is at α = ∞
    signal = np.flatnonzero(x2.sum(axis=0) > 0)
    if signal.size:
        # Beyond [t_lo, t_hi] every σ_i/t (t/σ_i) is below ε: the evidence is at its α → ∞
        # (α → 0) limit to within ≈ ε per sample, and the iteration stops there.
        t_lo, t_hi = sig[-1] * _EPS, sig[0] / _EPS
        x2s, rps = x2[:, signal], res_perp[signal]
        ts = np.ones(signal.size)  # paper: α = β = 1
        active = np.ones(signal.size, dtype=bool)
        for _ in range(max_iter):
            idx = np.flatnonzero(active)
            t_old = ts[idx]
            t_new = np.clip(_fixed_point_map(sig, x2s[:, idx], rps[idx], n_minus_r, t_old), t_lo, t_hi)
            ts[idx] = t_new
            done = (np.abs(t_new - t_old) <= tol * t_old) | (t_new == t_lo) | (t_new == t_hi)
            active[idx[done]] = False
            if not active.any():
                break
        for i in np.flatnonzero(active):  # slow columns: finish by bracketing the limit
            ts[i] = _bracketed_limit(sig, x2s[:, i], rps[i:i + 1], n_minus_r, ts[i], t_lo, t_hi, tol)
        t[signal] = ts
    ev, beta = _profile_evidence(sig, x2, res_perp, n_eff, t)
    if reference_logdet and d > r:
        alpha = t * beta
        ev = ev + np.where(np.isfinite(alpha), 0.5 * (d - r) * np.log(alpha), 0.0)
    return ev


def _logme_reference_column(sigma, x2, res_x2, N, d) -> float:
    """thuml/LogME's per-sample evidence of one target (not divided by N here): ``sigma`` (k,) the kept
    eigenvalues of FᵀF, ``x2`` (k,) the squared coordinates of y on their left singular vectors, ``res_x2``
    the rest of ‖y‖²."""
    alpha = beta = 1.0
    for _ in range(_REF_STEPS):
        t = alpha / beta
        gamma = float(np.sum(sigma / (sigma + t)))
        m2 = float(np.sum(sigma * x2 / (sigma + t) ** 2))
        res2 = float(np.sum(x2 / (1.0 + sigma / t) ** 2)) + res_x2
        alpha = gamma / (m2 + _REF_EPS)
        beta = (N - gamma) / (res2 + _REF_EPS)
        if abs(alpha / beta - t) / t <= _REF_RTOL:
            break
    # evaluated at the new α, β with ‖m‖² and the residual of the last step, as the released code does
    return (0.5 * d * math.log(alpha) + 0.5 * N * math.log(beta) - 0.5 * float(np.sum(np.log(alpha + beta * sigma)))
            - 0.5 * beta * res2 - 0.5 * alpha * m2 - 0.5 * N * _LOG_2PI)


def _logme_reference(S: _Sums, rcond) -> float:
    """LogME as thuml/LogME computes it (see :func:`logme`, ``convention="reference"``)."""
    N, d = S.N, S.d
    w, Q = np.linalg.eigh(S.XX)
    w, Q = np.maximum(w[::-1], 0.0), Q[:, ::-1]
    # the singular values the released code keeps: all min(N, d) of F when N <= d, those > 1e-10 otherwise
    k = N if N <= d else int(np.count_nonzero(np.sqrt(w) > _REF_SV_TOL))
    # coordinates on the numerical range; the others are 0 up to round-off, their share of y is in the residual
    r = min(int(np.count_nonzero(w > _rcond(rcond, N, d) * float(np.trace(S.XX)))), k)
    C = int(np.flatnonzero(S.counts)[-1]) + 1  # the released code's classes: 0 .. the largest label present
    x2 = np.zeros((k, C))
    x2[:r] = (Q[:, :r].T @ S.XY[:, :C]) ** 2 / w[:r, None]
    # ‖y‖² − Σ x² is ≥ 0 exactly, and 0 when the features span R^N; from the sums it is clipped (as for the paper)
    res_x2 = np.zeros(C) if r == N else np.maximum(S.counts[:C] - x2.sum(axis=0), 0.0)
    ev = [_logme_reference_column(w[:k], x2[:, j], float(res_x2[j]), N, d) for j in range(C)]
    return float(np.mean(ev) / N)


def _logme_from(S: _Sums, *, center, rcond, tol, max_iter, reference_logdet, convention="paper") -> float:
    if convention not in LOGME_CONVENTIONS:
        raise ValueError(f"LogME convention must be one of {LOGME_CONVENTIONS}, got {convention!r}")
    if convention == "reference":
        if center or reference_logdet:
            raise ValueError("convention='reference' is thuml/LogME's code as released: raw features (no "
                             "center) and its own log-determinant (reference_logdet is for the paper convention)")
        return _logme_reference(S, rcond)
    N, d = S.N, S.d
    if center:
        A, B, yy = S.centred()
        n_eff = N - 1
        valid = (S.counts > 0) & (S.counts < N)
    else:
        A, B, yy = S.XX, S.XY, S.counts.copy()
        n_eff = N
        valid = S.counts > 0
    tol_abs = _rcond(rcond, N, d) * float(np.trace(S.XX))
    sig, Q = _range(A, tol_abs, min(d, n_eff))
    r = sig.shape[0]
    x2 = (Q.T @ B[:, valid]) ** 2 / sig[:, None] if r else np.zeros((0, int(valid.sum())))
    if r == n_eff:  # the features span R^{n_eff}: every target lies in the range
        res_perp = np.zeros(x2.shape[1])
    else:
        res_perp = np.maximum(yy[valid] - x2.sum(axis=0), 0.0)
    if r == 0:
        sig = np.zeros(0)
    ev = _logme_columns(sig, x2, res_perp, n_eff, d, tol=tol, max_iter=max_iter,
                        reference_logdet=reference_logdet)
    return float(np.mean(ev) / N)


def logme(XX, XY, sum_x, class_counts, n_texts, *, center: bool = False, rcond: float | None = None,
          tol: float = 1e-10, max_iter: int = 100, reference_logdet: bool = False,
          convention: str = "paper") -> float:
    """LogME: mean per-sample log maximum evidence of one-hot targets, from the sums.

    For each class k with texts, a Bayesian linear model y_k = F w + ε with prior
    w ~ N(0, α⁻¹ I_d) and noise ε ~ N(0, β⁻¹ I_N) is fitted by maximising its log evidence

        L_k(α, β) = N/2 log β + d/2 log α − N/2 log 2π − β/2 ‖F m − y_k‖² − α/2 ‖m‖² − ½ log|A|,
        A = α I + β FᵀF,  m = β A⁻¹ Fᵀ y_k,

    with the fixed-point iteration of the paper (Algorithm 1): start α = β = 1, then repeat
    γ = Σ_i βσ_i/(α + βσ_i), α ← γ/‖m‖², β ← (N − γ)/‖F m − y_k‖², until the relative change of
    t = α/β is ``<= tol``. The score is mean_k L_k(α*, β*) / N.

    Everything is computed from FᵀF = ``XX`` = V diag(σ) Vᵀ, Fᵀy_k = ``XY[:, k]`` and ‖y_k‖² = n_k.
    On the numerical range (r eigenvalues σ_i > 0, see the module notes), with
    u_i = F v_i / √σ_i the left singular vectors of F and x_i = u_iᵀ y_k = v_iᵀ Fᵀ y_k / √σ_i:

        ‖m‖²          = Σ_{i≤r} σ_i x_i² / (σ_i + t)²
        ‖F m − y_k‖²  = Σ_{i≤r} x_i² t² / (σ_i + t)²  +  (‖y_k‖² − Σ_{i≤r} x_i²)
        log|A|        = Σ_{i≤r} log(α + β σ_i) + (d − r) log α

    The term in brackets is the squared residual of y_k off range(F), which is all the
    N-dimensional information the left singular vectors would add: this is why no SVD of F
    (N×d) is needed even when N < d. Null-space eigenvalues of XX (d − r of them, at least
    d − N when N < d) are exactly 0 in FᵀF, so they contribute γ-terms 0, nothing to m and the
    exact log α to log|A|; the d/2 log α − (d − r)/2 log α cancellation leaves
    L_k = N/2 log β − N/2 log 2π − ½ Σ_{i≤r} log1p(σ_i/t) − β/2 ‖F m − y_k‖² − α/2 ‖m‖², the
    form evaluated here (d no longer appears: the evidence depends on F only through FFᵀ).

    Parameters
    ----------
    XX : array-like or torch.Tensor, shape (d, d)
        Σ_n x_n x_nᵀ.
    XY : array-like or torch.Tensor, shape (d, C)
        Σ_n x_n y_nᵀ with one-hot y_n.
    sum_x : array-like or torch.Tensor of shape (d,), or None
        Σ_n x_n; needed for ``center=True`` (and checked against ``XY`` when given).
    class_counts : array-like or torch.Tensor, shape (C,)
        Texts per class n_k (non-negative integers summing to ``n_texts``).
    n_texts : int
        N, the number of texts.
    center : bool, default False
        False: raw features, as the paper and the reference code. True: the model gets an
        intercept b with a flat (improper) prior, y_k = b 1 + F w + ε. Integrating b out gives
        the evidence of the centred data ỹ_k, F̃ in the (N − 1)-dimensional complement of 1, i.e.
        the formulas above with N → N − 1 degrees of freedom, XX → XX − s sᵀ/N,
        XY_k → XY_k − s n_k/N and ‖y_k‖² → n_k − n_k²/N (the additive constant −½ log N of the
        improper prior, equal for every feature set on a split, is omitted; the result is
        still divided by N). Substituting centred data into the N-sample formula instead would
        give the noise a direction in which the data are identically 0, and an unbounded
        evidence whenever N ≤ d + 1.
    rcond : float, optional
        Eigenvalues of ``XX`` (centred when ``center``) ``<= rcond * trace(XX)`` are treated as
        0; default ``max(N, d) * eps``. The rank is also capped at min(d, N) (min(d, N − 1)
        centred), so for N < d exactly N (N − 1) eigenvalues are kept at most.
    tol : float, default 1e-10
        Relative change of t = α/β that ends the iteration (also Brent's tolerance on log t,
        below). The score is evaluated where the iteration converges, as the evidence
        maximised over β at that t (equal to the paper's L(α, β) at a fixed point). L is
        stationary there, so its error is second order in the error of t.
    max_iter : int, default 100
        Plain fixed-point iterations per column. A column still moving after them (the
        iteration converges linearly, and very slowly — 10⁴ to 10⁵ steps — when the evidence is
        flat in t, typical of weak label signal in high dimension) is finished by locating the
        point the iteration converges to directly: the first root of log T(t) − log t in its
        direction of motion (T = the update map; grid of step e^{1/4} in t, then Brent). An
        iteration heading out of [σ_min·ε, σ_max/ε] stops at that end: beyond it every
        σ_i/t (or t/σ_i) is below ε, so L/N is at its α → ∞ (α → 0) limit to about ε.
    reference_logdet : bool, default False
        Reproduce the log-determinant of the authors' released code (thuml/LogME), which sums
        log(α + βσ_i) over the kept singular values only (min(N, d) of them when N ≤ d, those
        > 1e-10 otherwise) while keeping d/2 log α, i.e. adds (d − r)/2 log α to each L_k.
        It agrees with the paper whenever rank F = d. The fixed point itself is unchanged.
        (The released code also adds 1e-5 to both denominators and stops after 11 iterations
        or a 1e-3 relative change; ``convention="reference"`` reproduces those too.)
    convention : {"paper", "reference"}, default "paper"
        ``"paper"``: the evidence as the paper defines it, maximised to ``tol`` (everything above).
        ``"reference"``: what thuml/LogME's ``LogME().fit(F, y)`` returns (its ``_fit_fixed_point``),
        reimplemented on the sums: log|A| sums log(α + βσ_i) over min(N, d) singular values of F when
        N ≤ d (those > 1e-10 when N > d) while d/2 log α is kept; at most 11 fixed-point steps from
        α = β = 1, stopping at a relative change of t ≤ 1e-3; 1e-5 added to the denominators ‖m‖² and
        ‖F m − y‖² of the α and β updates; the evidence evaluated at the last α, β with the ‖m‖² and
        residual of the step before; classes 0 … the largest label present (an empty class in between
        counts, with the finite value the 1e-5 gives it). With N > d and F of full rank the two agree to
        about the 1e-3 stopping rule; with N ≤ d they differ by about (d − N)/(2N) log α per class
        (0.6 to 37 measured on real sums). The reference's 1e-5 is absolute, so its value depends on the
        scale of the features. ``center``, ``tol``, ``max_iter`` and ``reference_logdet`` belong to the
        paper convention (``ValueError`` with ``center`` or ``reference_logdet``).

    Returns
    -------
    float
        mean over classes of L_k / N (higher = more transferable).

    Raises
    ------
    ValueError
        Inconsistent shapes or counts, non-finite sums, fewer than 2 classes with texts,
        ``center=True`` without ``sum_x``.

    Notes
    -----
    * Classes with no texts have y_k ≡ 0, whose evidence is unbounded (β → ∞); they are left
      out of the mean (and, with ``center=True``, so is a class holding all N texts).
    * Where the maximum is at α → ∞ (no usable signal: very common for a weak feature, and
      exact when Fᵀy_k = 0), L_k = N/2 (log(N/‖y_k‖²) − log 2π − 1), the evidence of a
      pure-noise model. With ``reference_logdet`` the released code's expression has no
      finite maximum there (its extra (d − r)/2 log α grows with α): it is evaluated at the
      stopping point t = σ_max/ε, or omitted when Fᵀy_k = 0 exactly (α = ∞).
    * A target with zero residual off range(F) while rank F < N (perfectly fitted by
      rank-deficient features) has unbounded evidence as α/β → 0; the value reported is the
      evidence at t = σ_min·ε, a large number set by the float64 resolution. With rank F = N
      (e.g. N ≤ d) the α → 0 limit is finite and is what is reported when it is the maximum.
    * The default ``tol`` is much tighter than the reference code's 1e-3 (and 11 iterations);
      results differ from that code by the approximations listed under ``reference_logdet``.

    References
    ----------
    K. You, Y. Liu, J. Wang, M. Long. "LogME: Practical Assessment of Pre-trained Models for
    Transfer Learning." ICML 2021 (Algorithm 1); fixed-point form: K. You et al., "Ranking and
    Tuning Pre-trained Models: A New Paradigm for Exploiting Model Hubs", JMLR 2022.
    """
    if center and sum_x is None:
        raise ValueError("center=True needs sum_x (Σ_n x_n) to centre the features")
    if not (tol > 0) or max_iter < 0:
        raise ValueError(f"need tol > 0 and max_iter >= 0, got tol={tol}, max_iter={max_iter}")
    S = _validate(XX, XY, sum_x, class_counts, n_texts, need_sum_x=center)
    return _logme_from(S, center=center, rcond=rcond, tol=tol, max_iter=max_iter,
                       reference_logdet=reference_logdet, convention=convention)


# ----------------------------------------------------------------------------- H-score


def _h_plain(S: _Sums, Z: _Standardised) -> float:
    present = S.counts > 0
    if Z.w.shape[0] == 0:
        return 0.0
    return float(np.sum(Z.P[:, present] ** 2 / Z.w[:, None] / S.counts[present][None, :]))


def _h_shrunk(S: _Sums, shrinkage: float) -> float:
    XXc, XYc, _ = S.centred()
    N, d = S.N, S.d
    cov = XXc / N
    mu = float(np.trace(cov)) / d
    if mu <= 0.0:
        return 0.0
    cov_s = (1.0 - shrinkage) * cov + shrinkage * mu * np.eye(d)
    present = S.counts > 0
    D = XYc[:, present]  # columns n_k (μ_k − μ)
    sol = np.linalg.solve(cov_s, D)
    # cov(E[f|y]) = Σ_k n_k (μ_k − μ)(μ_k − μ)ᵀ / N = Σ_k D_k D_kᵀ / (N n_k)
    return float((1.0 - shrinkage) * np.sum(D * sol, axis=0) @ (1.0 / (N * S.counts[present])))


def h_score(XX, XY, sum_x, class_counts, n_texts, *, shrinkage: float = 0.0,
            rcond: float | None = None) -> float:
    """H-score tr(cov(f)⁺ cov(E[f|y])) from the sums.

    With μ = s/N and μ_k = XY_k/n_k, the total scatter is S_T = XX − s sᵀ/N and the
    between-class scatter S_B = Σ_k n_k (μ_k − μ)(μ_k − μ)ᵀ = Σ_k D_k D_kᵀ / n_k with
    D_k = XY_k − s n_k/N. Both covariances of the estimator carry the same normaliser (1/N or
    the 1/(N − 1) of ``np.cov``), which cancels: H = tr(S_T⁺ S_B) = Σ_k D_kᵀ S_T⁺ D_k / n_k.

    The plain estimator (``shrinkage=0``) uses the pseudo-inverse of S_T. It is evaluated in
    StandardScaler coordinates (for accuracy); H is invariant to that rescaling because every
    D_k lies in the range of S_T. Eigenvalues below the tolerance of the module notes are
    treated as 0 (rank at most min(d, N − 1)). Since S_T = S_W + S_B, 0 ≤ H ≤ min(d, C − 1),
    with H = rank S_B when the within-class scatter vanishes on the range (e.g. N ≤ d).

    Parameters
    ----------
    XX : array-like or torch.Tensor, shape (d, d)
        Σ_n x_n x_nᵀ.
    XY : array-like or torch.Tensor, shape (d, C)
        Σ_n x_n y_nᵀ with one-hot y_n.
    sum_x : array-like or torch.Tensor, shape (d,)
        Σ_n x_n.
    class_counts : array-like or torch.Tensor, shape (C,)
        Texts per class (classes with 0 texts contribute nothing, as in the per-sample formula).
    n_texts : int
        N.
    shrinkage : float in [0, 1], default 0
        λ > 0 gives the shrinkage-based H-score of Ibrahim et al.:
        H_λ = tr(((1 − λ) Σ_f + λ σ̄ I)⁻¹ (1 − λ) cov(E[f|y])) with σ̄ = tr(Σ_f)/d, in raw
        (not standardised) coordinates, Σ_f and cov(E[f|y]) both normalised by N. Ibrahim
        et al. take λ from the Ledoit–Wolf estimator, which needs per-sample fourth moments
        that the sums do not hold; pass a fixed λ (e.g. the one sklearn's ``LedoitWolf`` gives
        on a sample of the features).
    rcond : float, optional
        Rank tolerance of the plain estimator (module notes); default ``max(N, d) * eps``.

    Returns
    -------
    float
        H-score (0 when every feature is constant).

    Raises
    ------
    ValueError
        Inconsistent or non-finite inputs, fewer than 2 classes with texts, λ outside [0, 1].

    References
    ----------
    Y. Bao, Y. Li, S.-L. Huang, L. Zhang, L. Zheng, A. Zamir, L. Guibas. "An
    Information-Theoretic Approach to Transferability in Task Transfer Learning." ICIP 2019.
    S. Ibrahim, N. Ponomareva, R. Mazumder. "Newer is not always better: Rethinking
    transferability metrics, their peculiarities, stability and performance." ECML-PKDD 2022
    (shrinkage-based H-score).
    """
    shrinkage = float(shrinkage)
    if not (0.0 <= shrinkage <= 1.0):
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    S = _validate(XX, XY, sum_x, class_counts, n_texts)
    if shrinkage > 0.0:
        return _h_shrunk(S, shrinkage)
    return _h_plain(S, _standardise(S, rcond))


# ----------------------------------------------------------------------------- LS / ridge probe


def _probe_mse(S: _Sums, Z: _Standardised, alpha: float) -> float:
    if Z.full_span:
        res_perp = np.zeros(S.C)
    else:
        a2 = Z.P**2 / Z.w[:, None] if Z.w.shape[0] else np.zeros((0, S.C))
        res_perp = np.maximum(Z.yyc - a2.sum(axis=0), 0.0)
    rss = res_perp
    if alpha > 0.0 and Z.w.shape[0]:
        a2 = Z.P**2 / Z.w[:, None]
        rss = rss + np.sum(a2 * (alpha / (Z.w[:, None] + alpha)) ** 2, axis=0)
    return float(rss.sum() / (S.N * S.C))


def ls_probe_mse(XX, XY, sum_x, class_counts, n_texts, *, alpha: float = 0.0,
                 rcond: float | None = None) -> float:
    """In-sample MSE of a linear probe on one-hot targets (StandardScaler + LinearRegression / Ridge).

    Reproduces, from the sums, ``mean_squared_error(Y, model.predict(Xs))`` with
    ``Xs = StandardScaler().fit_transform(F)`` (mean μ = s/N, standard deviation with ddof 0,
    scale 1 for constant features), ``Y`` the (N, C) one-hot matrix, and
    ``model = LinearRegression()`` (``alpha=0``) or ``Ridge(alpha=alpha)`` (both with
    intercept) fitted on (Xs, Y): the mean over the N samples and the C outputs of the squared
    residuals.

    Derivation: with intercept, both models fit the centred targets ỹ_k with the centred,
    scaled features Xs. Let G = XsᵀXs = S⁻¹(XX − s sᵀ/N)S⁻¹ = Σ_i g_i q_i q_iᵀ (kept range) and
    c_ik = q_iᵀ Xsᵀ ỹ_k = q_iᵀ S⁻¹(XY_k − s n_k/N), a_ik² = c_ik²/g_i (the squared coordinates of
    ỹ_k on the left singular vectors of Xs). Then

        RSS_k = (‖ỹ_k‖² − Σ_i a_ik²) + Σ_i a_ik² (α / (g_i + α))²,   ‖ỹ_k‖² = n_k − n_k²/N,

    and MSE = Σ_k RSS_k / (N C). For α = 0 only the first term remains: the residual of the
    orthogonal projection onto the column space, which is also what the minimum-norm
    least-squares solution gives when G is singular (N ≤ d or collinear features). The
    projection does not depend on the scaling, so the LS MSE equals that of LinearRegression
    on raw features; the ridge MSE depends on it.

    Parameters
    ----------
    XX : array-like or torch.Tensor, shape (d, d)
        Σ_n x_n x_nᵀ.
    XY : array-like or torch.Tensor, shape (d, C)
        Σ_n x_n y_nᵀ with one-hot y_n.
    sum_x : array-like or torch.Tensor, shape (d,)
        Σ_n x_n.
    class_counts : array-like or torch.Tensor, shape (C,)
        Texts per class. A class with 0 texts is an all-zero target column, fitted exactly
        (RSS 0) but still counted among the C outputs, as sklearn does for ``np.eye(C)[y]``.
    n_texts : int
        N.
    alpha : float, default 0
        Ridge penalty on the standardised coefficients (sklearn's ``Ridge(alpha)`` objective
        ‖Y − Xs W − 1bᵀ‖² + α‖W‖², not divided by N). 0 = ordinary least squares.
    rcond : float, optional
        Rank tolerance (module notes); default ``max(N, d) * eps``.

    Returns
    -------
    float
        In-sample MSE (0 up to round-off when N − 1 ≤ rank, e.g. N ≤ d with α = 0).

    Raises
    ------
    ValueError
        Inconsistent or non-finite inputs, fewer than 2 classes with texts, ``alpha < 0``.

    Notes
    -----
    In-sample only: a held-out MSE needs the test split's sums and the training solution,
    which is not a function of the training sums alone in this API.

    References
    ----------
    SPEC §3 (Fig. 2 MSE probe); scikit-learn ``StandardScaler``, ``LinearRegression``,
    ``Ridge``.
    """
    alpha = float(alpha)
    if not (alpha >= 0.0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    S = _validate(XX, XY, sum_x, class_counts, n_texts)
    return _probe_mse(S, _standardise(S, rcond), alpha)


# ----------------------------------------------------------------------------- all at once


def all_baselines(layer_sums, class_counts, n_texts, *, ridge_alpha: float = 1.0,
                  h_shrinkage: float = 0.0, logme_center: bool = False, rcond: float | None = None,
                  logme_tol: float = 1e-10, logme_max_iter: int = 100,
                  logme_reference_logdet: bool = False, logme_convention: str = "paper") -> dict[str, float]:
    """Every baseline of this module for one layer, sharing the eigendecompositions.

    Parameters
    ----------
    layer_sums : ntps.artifacts.LayerSums or mapping
        Needs ``XX`` (d, d), ``XY`` (d, C) and ``sum_x`` (d,) as attributes or keys (torch
        tensors or arrays); ``C0``/``C1`` are ignored.
    class_counts : array-like or torch.Tensor, shape (C,)
        ``Stats.class_counts``.
    n_texts : int
        ``Stats.n_texts``.
    ridge_alpha : float, default 1.0
        Penalty of the ridge probe (:func:`ls_probe_mse`).
    h_shrinkage : float, default 0.0
        Shrinkage of the H-score (:func:`h_score`).
    logme_center, logme_tol, logme_max_iter, logme_reference_logdet, logme_convention
        ``center``, ``tol``, ``max_iter``, ``reference_logdet``, ``convention`` of :func:`logme`.
    rcond : float, optional
        Rank tolerance shared by all scores.

    Returns
    -------
    dict[str, float]
        ``{"logme", "h_score", "ls_mse", "ridge_mse"}``.
    """
    def get(key):
        if isinstance(layer_sums, dict):
            return layer_sums.get(key)
        return getattr(layer_sums, key, None)

    if not (0.0 <= float(h_shrinkage) <= 1.0):
        raise ValueError(f"h_shrinkage must be in [0, 1], got {h_shrinkage}")
    if not (float(ridge_alpha) >= 0.0 and math.isfinite(float(ridge_alpha))):
        raise ValueError(f"ridge_alpha must be a finite number >= 0, got {ridge_alpha}")
    if not (logme_tol > 0) or logme_max_iter < 0:
        raise ValueError(f"need logme_tol > 0 and logme_max_iter >= 0, got {logme_tol}, {logme_max_iter}")
    S = _validate(get("XX"), get("XY"), get("sum_x"), class_counts, n_texts)
    Z = _standardise(S, rcond)
    return {
        "logme": _logme_from(S, center=logme_center, rcond=rcond, tol=logme_tol, max_iter=logme_max_iter,
                             reference_logdet=logme_reference_logdet, convention=logme_convention),
        "h_score": _h_shrunk(S, float(h_shrinkage)) if h_shrinkage > 0 else _h_plain(S, Z),
        "ls_mse": _probe_mse(S, Z, 0.0),
        "ridge_mse": _probe_mse(S, Z, float(ridge_alpha)),
    }
