"""The Next Token Perception Score for every fraction in one pass (SPEC §2, §2.0, §2.2).

Conventions (documented in the README):

* Perception subspace ``U`` solves ``(M Mᵀ) u = λ Σ u``; autoregressive ``V`` solves
  ``(C1 C1ᵀ) v = λ C0 v``. Both are computed on the range of the right-hand matrix.
* ``k_U = floor(f · r_U)``, ``k_V = floor(f · r_V)`` (or an absolute k, clamped to the ranks).
* **Label-rank clamp (SPEC §2.0).** In the default descending order only the first
  ``label_rank`` columns of U carry label information (λ > 0); any basis of the rest is as
  valid as another, so ``k_U`` is clamped to ``label_rank`` and NTPS_f measures how much of the
  label subspace lies in the top-``k_V`` autoregressive subspace. In ascending order (the
  authors' released code) U is not clamped; its null block follows the variance convention of
  :mod:`ntps.linalg`. ``k_U_nominal`` keeps the unclamped value.
* ``NTPS = ‖P_V U_k‖²_F / ‖U_k‖²_F`` in raw coordinates (U columns Σ-orthonormal, as the
  reference), with chance level ``k_V / d``. ``k_U = 0`` or ``k_V = 0`` gives NaN.
* Nested subspaces: one factorisation of the ordered V serves every k; no projector or pseudo-inverse
  is formed per fraction. For the few label directions of the default order it is the Cholesky factor
  of VᵀV (normal equations, every residual formed explicitly and its error certified, :func:`_nested_residuals`),
  otherwise a Householder QR applied as ``Qᵀ U`` with 2-D prefix sums. On the Cholesky paths the larger
  k are served by the complement of span(V_k) instead (:func:`_captured`).
* The whitened variant (SPEC §2.2) uses the top-``label_rank`` perception directions in
  Σ-whitened coordinates and the bound ``λ_r r (1 − NTPS̃) ≤ Δ(V) ≤ λ_1 r (1 − NTPS̃)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.linalg import solve_triangular

from .linalg import (
    DEFAULT_RCOND,
    GeneralizedEig,
    as_float64,
    check_symmetric_psd_shape,
    generalized_eigh,
    gram_lower,
    jacobi_scale,
)

DEFAULT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(1, 20))
VARIANTS = ("raw", "whitened")


@dataclass
class LayerSolution:
    """Both subspaces of one layer."""

    U: GeneralizedEig  # perception
    V: GeneralizedEig  # autoregressive
    d: int

    @property
    def label_rank(self) -> int:
        return self.U.n_nonzero


def validate_stats(XX, XY, C0, C1, device=None):
    """Convert the sums of SPEC §1 to float64 tensors and check shapes, symmetry, finiteness.

    Shapes: XX (d, d), XY (d, C) with C >= 2, C0 (d, d), C1 (d, d).
    """
    XX = check_symmetric_psd_shape(as_float64(XX, "XX (Σ)", device), "XX (Σ)")
    d = XX.shape[0]
    XY = as_float64(XY, "XY (M)", XX.device)
    if XY.ndim != 2 or XY.shape[0] != d:
        raise ValueError(f"XY (M) must have shape ({d}, C) to match XX ({d}, {d}), got {tuple(XY.shape)}")
    if XY.shape[1] < 2:
        raise ValueError(f"XY (M) has C = {XY.shape[1]} label column(s): NTPS needs at least 2 classes")
    C0 = check_symmetric_psd_shape(as_float64(C0, "C0", XX.device), "C0")
    C1 = as_float64(C1, "C1", XX.device)
    for name, mat in (("C0", C0), ("C1", C1)):
        if tuple(mat.shape) != (d, d):
            raise ValueError(f"{name} must have shape ({d}, {d}) like XX, got {tuple(mat.shape)}")
    return XX, XY, C0, C1


def solve_layer(XX, XY, C0, C1, *, rcond: float = DEFAULT_RCOND, atol: float | None = None,
                n_texts: float | None = None, order: str = "descending", device=None) -> LayerSolution:
    """Solve the perception and autoregressive problems of one layer (SPEC §2).

    Sums may be raw or divided by N: eigenvectors and NTPS do not depend on that factor, and the
    default relative ``rcond`` (on the Jacobi-scaled Σ and C0) keeps the same ranks either way.
    ``atol`` is the authors' absolute rule: eigenvalues of the N-normalised ``Σ / N`` and ``C0 / N``
    at or below ``atol`` are dropped (SPEC §2; the left-hand ``M Mᵀ / N²`` and ``C1 C1ᵀ / N²``
    only rescale λ). It needs ``n_texts`` = N, the number of texts the sums were taken over
    (``n_texts=1`` for sums already divided by N).
    """
    if atol is not None:
        if n_texts is None or not n_texts > 0:
            raise ValueError("atol is an absolute tolerance on the N-normalised sums (Σ/N, C0/N, as the authors): "
                             f"pass n_texts = N > 0, the number of texts of the statistics (got {n_texts})")
        atol = atol * float(n_texts)  # λ(B / N) > atol  <=>  λ(B) > atol · N
    XX, XY, C0, C1 = validate_stats(XX, XY, C0, C1, device)
    U = generalized_eigh(XX, A_factor=XY, rcond=rcond, atol=atol, order=order,
                         only_nonzero=order == "descending", checked=True)
    V = generalized_eigh(C0, A_factor=C1, rcond=rcond, atol=atol, order=order, checked=True)
    return LayerSolution(U=U, V=V, d=XX.shape[0])


def ks_for(fractions, ks, r_U: int, r_V: int, label_rank: int, order: str):
    """(k_U_nominal, k_U, k_V) integer arrays for fractions of the ranks or absolute ks."""
    if (fractions is None) == (ks is None):
        raise ValueError("pass exactly one of fractions or ks")
    if fractions is not None:
        f = np.asarray(fractions, dtype=float)
        if f.ndim != 1 or f.size == 0 or np.any((f <= 0) | (f > 1)):
            raise ValueError(f"fractions must be a non-empty list in (0, 1], got {fractions}")
        kU_nom = np.floor(f * r_U + 1e-9).astype(int)
        kV = np.floor(f * r_V + 1e-9).astype(int)
    else:
        k = np.asarray(ks, dtype=int)
        if k.ndim != 1 or k.size == 0 or np.any(k < 1):
            raise ValueError(f"k values must be positive integers, got {ks}")
        kU_nom, kV = np.minimum(k, r_U), np.minimum(k, r_V)
    kU = np.minimum(kU_nom, label_rank) if order == "descending" else kU_nom
    return kU_nom, kU, kV


def _nested_coordinates(X: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``Qᵀ Y`` (min(n, k), m) and ``|diag R|`` for the Householder QR ``X = Q R`` of X (n, k), Y (n, m).

    Row i holds the coordinates of Y along the i-th column of an orthonormal Q with
    span(Q[:, :k]) = span(X[:, :k]) for every k; Q itself is never formed. A small ``|R_ii|``
    marks a column that depends on the previous ones."""
    H, tau = torch.geqrf(X)
    return torch.ormqr(H, tau, Y, transpose=True)[: min(X.shape)], H.diagonal().abs()


#: :func:`_captured` takes the normal equations for at most this many columns of X (the label directions of the
#: default order); their certified error must stay below CERTIFIED_RTOL · ‖x‖² per column.
GRAM_MAX_COLUMNS = 64
CERTIFIED_RTOL = 1e-12


def _nested_residuals(Z: torch.Tensor, X: torch.Tensor, js: np.ndarray, lam_lb: float) -> torch.Tensor | None:
    """``‖x_i − P_j x_i‖²`` (len(js), c) for every prefix size j in ``js`` and column x_i of X (d, c), P_j the
    Euclidean projector onto span(Z[:, :j]) (Z (d, m)); None when the error certificate fails.

    Normal equations of the nested least-squares problems: one Cholesky ``ZᵀZ = R Rᵀ`` serves every prefix
    (``R[:j, :j]`` factors ``Z_jᵀ Z_j``), all GEMM-rich work (Householder QR runs at a third of GEMM speed).
    The residual ``r = x − Z_j z`` is formed explicitly, so ``‖r‖² = ‖r*‖² + ‖Z_j δ‖²`` (r* the exact residual,
    δ the error of z) with ``‖Z_j δ‖² ≤ ‖Z_jᵀ r‖² / λ_min(ZᵀZ) ≤ ‖Z_jᵀ r‖² / lam_lb`` (interlacing); up to two
    refinement steps ``z += (Z_jᵀZ_j)⁻¹ Z_jᵀ r`` bring it below ``CERTIFIED_RTOL ‖x_i‖²``, or None is returned
    (the caller takes Householder QR). ``lam_lb`` ≤ λ_min(ZᵀZ): :meth:`ntps.linalg.Whitener.gram_bounds` (a Lanczos
    bound on the complement side: it holds with probability > 1 − 1e-7). The bound is on the method's error; the
    rounding in forming r is of the order of Householder QR's own (an independent 80-bit check: ≤ 5·10⁻¹³ ‖x‖²)."""
    if not lam_lb > 0:
        return None
    m, c, p = Z.shape[1], X.shape[1], len(js)
    R, info = torch.linalg.cholesky_ex(gram_lower(Z.T))
    if int(info):
        return None
    cols = torch.as_tensor(np.repeat(js, c), device=Z.device)
    mask = (torch.arange(m, device=Z.device)[:, None] < cols[None, :]).to(Z.dtype)  # (m, p c): rows of prefix j
    Xp, bound = X.repeat(1, p), CERTIFIED_RTOL * lam_lb * (X**2).sum(0).repeat(p)
    solve = lambda G: solve_triangular(R.T, solve_triangular(R, G, upper=False) * mask, upper=True)  # noqa: E731
    G = (Z.T @ X).repeat(1, p) * mask
    z = torch.zeros_like(G)
    for _ in range(3):  # the solve, then up to two refinement steps
        z = z + solve(G)
        res = Xp - Z @ z
        G = (Z.T @ res) * mask
        if bool(((G**2).sum(0) <= bound).all()):
            return (res**2).sum(0).reshape(p, c)
    return None


def _nested_captured(Z: torch.Tensor, X: torch.Tensor, js: np.ndarray, cols: np.ndarray, lam_lb: float) -> np.ndarray:
    """``‖P_j X[:, :cols[i]]‖²_F`` for j = js[i], P_j the Euclidean projector onto span(Z[:, :j]) (Z (d, m), X (d, c)):
    by the certified normal equations (:func:`_nested_residuals`), or, when ``lam_lb`` is 0 (no bound on λ_min(ZᵀZ))
    or the certificate fails, by one Householder QR of Z and 2-D prefix sums of ``(Qᵀ X)²``."""
    uniq, at = np.unique(js, return_inverse=True)
    res = _nested_residuals(Z, X, uniq, lam_lb)
    if res is None:
        return _prefix_sums(_nested_coordinates(Z, X)[0] ** 2, js, cols)
    cap = torch.nn.functional.pad(((X**2).sum(0) - res).cumsum(1), (1, 0))  # (p, c + 1)
    return cap[torch.as_tensor(at), torch.as_tensor(cols)].cpu().numpy()


def _split(kV: np.ndarray, n: int, d: int, gram: tuple[bool, bool]) -> int:
    """The largest k served by the forward basis ``V[:, :a]`` (see :func:`_captured`); larger k use the complement.
    Minimises the flops of both parts: the triangular map of their m columns (``d² m``) plus Householder QR
    (``2 m² (d − m/3)``) or, where ``gram`` (forward, complement) says the normal equations are taken, the Gram
    matrix and its Cholesky (``d m² + m³/3``)."""
    ks = np.unique(kV)
    fwd = np.concatenate([[0], ks]).astype(float)  # the forward basis's columns a
    comp = np.concatenate([n - ks, [0]]).astype(float)  # the complement's columns when it serves every k > a
    cost = lambda m, g: d * d * m + (d * m**2 + m**3 / 3 if g else 2 * m**2 * (d - m / 3))  # noqa: E731
    return int(fwd[np.argmin(cost(fwd, gram[0]) + cost(comp, gram[1]))])


def _captured(V: GeneralizedEig, X: torch.Tensor, kV: np.ndarray, kU: np.ndarray, total: np.ndarray) -> np.ndarray:
    """``‖P_k X[:, :j]‖²_F`` for every ``(k, j) = (kV[i], kU[i])``, P_k the Euclidean projector onto the first
    k columns of V (d, n); ``total[i] = ‖X[:, :kU[i]]‖²_F``.

    Small k: the nested projections onto ``V[:, :a]`` serve every k ≤ a (:func:`_nested_captured`). Large k, on
    the Cholesky paths (Y square): the columns of V are B-orthonormal, so the Euclidean complement of
    span(V_k) is spanned by the m columns of ``Whitener.complement`` that complement range(W) (m = 0 when
    B is positive definite) and ``B V_{>k}`` (``L Y_{>k}``); ``‖P_k x‖² = ‖x‖² − ‖P⊥ x‖²`` then comes from
    the nested projections onto that basis with V's columns taken from the last. The split point minimises the
    flops of both parts (:func:`_split`)."""
    n = V.Y.shape[1]
    m = V.whitener.deflated
    full = V.whitener.L is not None and n == V.whitener.rank
    # λ_min bounds for the normal equations; 0 (Householder QR) for many columns: the ascending order
    lb_forward, lb_complement = V.whitener.gram_bounds() if X.shape[1] <= GRAM_MAX_COLUMNS else (0.0, 0.0)
    a = _split(kV, n, V.Y.shape[0] + m, (lb_forward > 0, lb_complement > 0)) if full else int(kV.max(initial=0))
    fwd = kV <= a
    num = np.zeros(len(kV))
    if a > 0:
        num[fwd] = _nested_captured(V.whitener.apply(V.Y[:, :a]), X, kV[fwd], kU[fwd], lb_forward)
    lo = int(kV[~fwd].min(initial=n))
    if lo < n or (m and not fwd.all()):
        Zc = V.whitener.complement(V.Y[:, lo:].flip(1))
        num[~fwd] = total[~fwd] - _nested_captured(Zc, X, m + n - kV[~fwd], kU[~fwd], lb_complement)
    else:  # k = n = d: V spans everything
        num[~fwd] = total[~fwd]
    return num


def _prefix_sums(P: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """S[i] = sum of P[:rows[i], :cols[i]] for every i, from 2-D cumulative sums (O(size of P))."""
    S = P.cumsum(0).cumsum(1)
    S = torch.nn.functional.pad(S, (1, 0, 1, 0))
    return S[torch.as_tensor(rows), torch.as_tensor(cols)].cpu().numpy()


def ntps_sweep(sol: LayerSolution, *, fractions=DEFAULT_FRACTIONS, ks=None) -> dict[str, np.ndarray]:
    """Raw-coordinate NTPS for every fraction (or absolute k) of one layer.

    Returns a dict of equal-length arrays: fraction (NaN for absolute k), k, k_U_nominal, k_U,
    k_V, r_U, r_V, label_rank, ntps, chance (= k_V/d), unique (both subspaces uniquely defined).
    """
    U, V = sol.U, sol.V
    if ks is not None:
        fractions = None
    kU_nom, kU, kV = ks_for(fractions, ks, U.rank, V.rank, sol.label_rank, U.order)
    Ucols = U.vectors[:, : int(kU.max(initial=0))]
    den = np.concatenate([[0.0], (Ucols**2).sum(0).cumsum(0).cpu().numpy()])[kU]
    num = _captured(V, Ucols, kV, kU, den)
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where((kU > 0) & (kV > 0), num / den, np.nan)
    n = len(kV)
    return {
        "fraction": np.asarray(fractions, dtype=float) if fractions is not None else np.full(n, np.nan),
        "k": np.full(n, -1) if ks is None else np.asarray(ks, dtype=int),
        "k_U_nominal": kU_nom, "k_U": kU, "k_V": kV,
        "r_U": np.full(n, U.rank), "r_V": np.full(n, V.rank),
        "label_rank": np.full(n, sol.label_rank),
        "ntps": np.clip(score, 0.0, 1.0), "chance": kV / sol.d,
        "unique": U.unique_prefix(kU) & V.unique_prefix(kV),
    }


def whitened_sweep(sol: LayerSolution, *, n_texts: float = 1.0, fractions=DEFAULT_FRACTIONS,
                   ks=None) -> dict[str, np.ndarray]:
    """Whitened NTPS̃ with the excess-loss bound of SPEC §2.2 for every k_V.

    U is the top-``label_rank`` perception directions (orthonormal in whitened coordinates),
    V_k is mapped to whitened coordinates as ``Σ^{1/2} V_k`` (up to a rotation shared with U).
    ``excess``/``lower``/``upper`` are per text when ``n_texts`` = N is given (sums → means).
    Returns the keys of :func:`ntps_sweep` plus excess, lower, upper.
    """
    U, V = sol.U, sol.V
    if U.order != "descending":
        raise ValueError("the whitened variant is defined on the top perception directions: "
                         "use order='descending'")
    if ks is not None:
        fractions = None
    c = sol.label_rank
    _, _, kV = ks_for(fractions, ks, U.rank, V.rank, c, "descending")
    kU = np.full_like(kV, c)
    Ut = U.Y[:, :c]  # (r_U, c), orthonormal
    lam = U.values[:c] / n_texts
    SV = U.whitener.to_whitened(V.whitener.apply(V.Y[:, : int(kV.max(initial=0))]))  # (r_U, kV_max)
    QtU, rdiag = _nested_coordinates(SV, Ut)
    # prefixes that contain a (numerically) dependent column are not nested-orthonormalisable
    dependent = (rdiag <= 1e-10 * rdiag.max()).cpu().numpy()
    first_dep = int(np.argmax(dependent)) if dependent.any() else len(dependent)
    T2 = QtU**2  # (min(r_U, kV_max), c)
    captured = torch.nn.functional.pad(T2.cumsum(0), (0, 0, 1, 0))  # captured[k, i] = ‖P_k ũ_i‖²
    # with N < d, span(Σ) has r_U < k_V dimensions: at most r_U nested directions, and those k_V are NaN below
    cap = captured[torch.as_tensor(np.minimum(kV, captured.shape[0] - 1))].cpu().numpy()  # (n, c)
    lam_np = lam.cpu().numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where((kV > 0) & (c > 0), cap.sum(1) / max(c, 1), np.nan)
    miss = c * (1.0 - score)
    excess = ((1.0 - cap) * lam_np).sum(1)
    lower = lam_np[-1] * miss if c else np.full(len(kV), np.nan)
    upper = lam_np[0] * miss if c else np.full(len(kV), np.nan)
    invalid = kV > first_dep
    for arr in (score, excess, lower, upper):
        arr[invalid] = np.nan
    n = len(kV)
    return {
        "fraction": np.asarray(fractions, dtype=float) if fractions is not None else np.full(n, np.nan),
        "k": np.full(n, -1) if ks is None else np.asarray(ks, dtype=int),
        "k_U_nominal": kU, "k_U": kU, "k_V": kV,
        "r_U": np.full(n, U.rank), "r_V": np.full(n, V.rank), "label_rank": np.full(n, c),
        "ntps": np.clip(score, 0.0, 1.0), "chance": kV / sol.d,
        "unique": U.unique_prefix(kU) & V.unique_prefix(kV),
        "excess": excess, "lower": lower, "upper": upper,
    }


#: Whitened variant, per layer: share of the least-squares fit in the Σ / C0 directions the tolerance dropped.
SHARE_COLUMNS = ["fit_share_dropped", "c0_fit_share_dropped"]


def sweep_layer(sums, *, variant: str = "raw", order: str = "descending", rcond: float = DEFAULT_RCOND,
                atol: float | None = None, n_texts: float, fractions=DEFAULT_FRACTIONS, ks=None, device=None
                ) -> dict[str, np.ndarray]:
    """One layer of K_sweep.py / :func:`ntps.api.score`: :func:`solve_layer` on ``sums`` (XX, XY, C0, C1 of
    SPEC §1, N = ``n_texts``), then :func:`ntps_sweep` (raw) or :func:`whitened_sweep` with the per-layer
    :data:`SHARE_COLUMNS` (:func:`fit_share_dropped` at the sweep's ranks r_U, r_V)."""
    sol = solve_layer(sums.XX, sums.XY, sums.C0, sums.C1, rcond=rcond, atol=atol, n_texts=n_texts, order=order,
                      device=device)
    if variant == "raw":
        return ntps_sweep(sol, fractions=fractions, ks=ks)
    res = whitened_sweep(sol, n_texts=float(n_texts), fractions=fractions, ks=ks)
    n, scaled = len(res["k_V"]), atol is None
    res["fit_share_dropped"] = np.full(n, fit_share_dropped(sums.XX, sums.XY, sol.U.rank, scaled=scaled))
    res["c0_fit_share_dropped"] = np.full(n, fit_share_dropped(sums.C0, sums.C1, sol.V.rank, scaled=scaled))
    return res


def fit_share_dropped(B, A_factor, rank: int, *, scaled: bool = True) -> float:
    """Share of the least-squares fit ``tr(Aᵀ B⁺ A)`` carried by the directions of B that a rank tolerance
    dropped (issue 15: is a whitened score sensitive to the tolerance?).

    ``B`` (d, d) symmetric PSD (Σ or C0), ``A_factor`` (d, C) its cross-moment (M, or C1), ``rank`` the number of
    directions kept (r_U or r_V of the sweep). Eigen-directions are those of the Jacobi-scaled ``S B S`` when
    ``scaled`` (the ``rcond`` rule of :func:`ntps.linalg.whiten`; the fit itself does not depend on S), of B as
    given otherwise (``atol``). Directions with an eigenvalue at or below ``d · eps · λ_max`` are numerically zero
    and left out of both sums. Returns a share in [0, 1]: 0 when nothing was dropped; NaN when the fit is 0.
    """
    B = as_float64(B, "B")
    A = as_float64(A_factor, "A", B.device)
    s = jacobi_scale(B) if scaled else torch.ones(B.shape[0], dtype=B.dtype, device=B.device)
    b, Q = torch.linalg.eigh(B * s[:, None] * s[None, :])
    b, Q = b.flip(0), Q.flip(1)
    live = b > b[0] * B.shape[0] * torch.finfo(B.dtype).eps
    fit = torch.where(live, ((Q.T @ (A * s[:, None])) ** 2).sum(1) / b.clamp_min(torch.finfo(B.dtype).tiny), 0.0)
    total = float(fit.sum())
    return float(fit[rank:].sum()) / total if total > 0 else float("nan")


def excess_loss_bound(Sigma, M, V, *, rcond: float = DEFAULT_RCOND) -> tuple[float, float, float]:
    """(lower, excess, upper) of SPEC §2.2 for an encoder ``V`` (d, k).

    ``excess`` Δ(V) is computed directly from least squares, independently of the eigenvectors:
    ``Δ = tr(Mᵀ Σ⁺ M) − tr(Mᵀ V (Vᵀ Σ V)⁺ Vᵀ M)`` — the increase of the optimal squared loss
    of a linear read-out of y when x is first encoded by ``Vᵀ x``. With ``Sigma = XX/N`` and
    ``M = XY/N`` it is a per-sample loss. The bounds use the top-``r`` eigenvalues of
    ``K = Σ^{-1/2} M Mᵀ Σ^{-1/2}`` (``r`` = label rank) and the whitened NTPS̃ of V.
    Σ must be positive definite (up to ``rcond``).
    """
    Sigma = check_symmetric_psd_shape(as_float64(Sigma, "Sigma"), "Sigma")
    M = as_float64(M, "M", Sigma.device)
    V = as_float64(V, "V", Sigma.device)
    if V.ndim == 1:
        V = V[:, None]
    d = Sigma.shape[0]
    if M.shape[0] != d or V.shape[0] != d:
        raise ValueError(f"M {tuple(M.shape)} and V {tuple(V.shape)} must have {d} rows like Sigma")
    best = torch.trace(M.T @ torch.linalg.pinv(Sigma, hermitian=True, rtol=rcond) @ M)
    VtSV = V.T @ Sigma @ V
    got = torch.trace(M.T @ V @ torch.linalg.pinv(VtSV, hermitian=True, rtol=rcond) @ V.T @ M)
    excess = float(best - got)
    sol = generalized_eigh(Sigma, A_factor=M, rcond=rcond, only_nonzero=True)
    c = sol.n_nonzero
    if sol.rank < d:
        raise ValueError(f"Sigma is singular (rank {sol.rank} < {d}): the bound of SPEC §2.2 needs it "
                         "positive definite")
    Qs, s, _ = torch.linalg.svd(sol.whitener.to_whitened(V), full_matrices=False)
    Q = Qs[:, s > 1e-10 * s[0]]  # orthonormal basis of span(Σ^{1/2} V), V may be rank-deficient
    ntps_w = float(((Q.T @ sol.Y) ** 2).sum()) / c
    lam = sol.values
    miss = c * (1.0 - ntps_w)
    return float(lam[-1]) * miss, excess, float(lam[0]) * miss
