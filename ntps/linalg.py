"""Generalized symmetric eigenproblems on the range of a PSD matrix (SPEC §2, §2.0).

Everything runs in float64 through torch, so the same code uses LAPACK on the CPU and
cuSOLVER on a GPU (``device="cuda"``).

Algorithm for ``A x = λ B x`` with ``B`` symmetric PSD, possibly singular:

1. *Whitening.* ``W`` (d, r) with ``Wᵀ B W = I_r`` on the range of ``B``. The rank decision uses
   the Jacobi-scaled ``Bs = S B S`` (unit diagonal; the eigenproblem is invariant to this change
   of variables): directions with an eigenvalue of ``Bs`` at or below ``tol = rcond · λ_max(Bs)``
   are dropped (relative, the default); ``atol`` instead applies an absolute threshold to the
   eigenvalues of the unscaled ``B`` as given (the authors' K_sweep drops eigenvalues ``<= 1e-8`` of
   the N-normalised ``B / N``: :func:`ntps.score.solve_layer` passes ``atol · N`` for raw sums).
   Fast path: Cholesky ``B = L Lᵀ`` (invariant to the diagonal scaling, so ``B`` is factored as
   it is) and ``W = L⁻ᵀ``, taken when nothing is dropped: short Lanczos runs on ``Bs`` and on
   ``Bs⁻¹`` (two triangular solves per step) estimate ``λ_max`` and ``λ_min``, and the path is
   taken when ``λ_min > 4 · tol`` by those estimates (the factor covers their error). Otherwise
   ``W = S Q_r diag(b_r)^-½`` from ``eigh(Bs)``. Both give the same generalized eigenvectors.
2. *Reduced problem.* ``Wᵀ A W y = λ y``. When ``A = F Fᵀ`` is given by a thin factor ``F``
   (d, m) with ``m < r`` (the perception problem, ``m = C``), a thin SVD of ``Wᵀ F`` replaces
   the r×r eigendecomposition. Eigenvectors map back as ``X = W Y`` (columns B-orthonormal).
3. *Null block (SPEC §2.0).* Eigenvalues ``λ ≤ rcond · λ_max`` are reported as 0 and their
   eigenvectors form a degenerate block in which any basis is valid. Convention: inside the
   block, directions are ordered by decreasing feature variance per unit norm
   (``xᵀBx / xᵀx``, i.e. PCA restricted to the block), computed by one eigendecomposition of
   the block. Deterministic up to signs, which no subspace depends on.

``DEFAULT_RCOND = 1e-7`` is about the float32 machine epsilon: the statistics are accumulated
from hidden states of at most float32 precision, so eigenvalues of the scaled ``Bs`` below
~1e-7 · λ_max are indistinguishable from round-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_RCOND = 1e-7
#: ``whiten(method="auto")`` tries Cholesky from this size on; below it ``eigh`` is as cheap.
CHOLESKY_MIN_DIM = 256
#: Eigenvalues closer than this (relative to the largest) count as tied (subspace not unique).
GAP_RTOL = 1e-9
#: Krylov dimension of the Lanczos estimates of λ_max(Bs) and λ_min(Bs) on the Cholesky path.
LANCZOS_STEPS = 16
#: The Cholesky path needs the estimated λ_min above ``CERTIFY_MARGIN · tol``. Each estimate is off
#: by less than 2x with probability > 1 - 1e-7 whatever the spectrum (Kuczyński & Woźniakowski 1992),
#: so the true λ_min then exceeds tol; a matrix with λ_min in (tol, 4·tol] takes the eigh path.
CERTIFY_MARGIN = 4.0
ORDERS = ("descending", "ascending")


@dataclass
class Whitener:
    """The whitening map ``W`` (d, r) with ``Wᵀ B W = I_r`` on the range of ``B``, kept factored:
    ``W = L⁻ᵀ`` (Cholesky path, ``B = L Lᵀ``) or ``W = S Q_r diag(b_r)^-½`` (eigh path), with
    ``S = diag(s)`` the Jacobi scaling. Apply it with :meth:`apply` / :meth:`t_apply` (triangular
    solves instead of an explicit inverse); :meth:`to_whitened` maps a direction v to ``Wᵀ B v``
    (``B^{1/2} v`` up to a rotation). ``rank = r``; ``tol`` the threshold on the scaled eigenvalues
    (from the Lanczos estimate of ``lambda_max`` on the Cholesky path)."""

    s: torch.Tensor
    rank: int
    tol: float
    lambda_max: float
    method: str  # "cholesky" or "eigh"
    L: torch.Tensor | None = None
    Q: torch.Tensor | None = None
    b: torch.Tensor | None = None

    def t_apply(self, F: torch.Tensor) -> torch.Tensor:
        """``Wᵀ F`` for F (d, m) -> (r, m)."""
        if self.L is not None:  # as (Fᵀ L⁻ᵀ)ᵀ: LAPACK reads a row-major F without a transposed copy
            return torch.linalg.solve_triangular(self.L.T, F.T, upper=True, left=False).T
        return (self.Q.T @ (self.s[:, None] * F)) / self.b.sqrt()[:, None]

    def apply(self, Y: torch.Tensor) -> torch.Tensor:
        """``W Y`` for Y (r, m) -> (d, m)."""
        if self.L is not None:
            return torch.linalg.solve_triangular(self.L.T, Y, upper=True)
        return self.s[:, None] * (self.Q @ (Y / self.b.sqrt()[:, None]))

    def to_whitened(self, V: torch.Tensor) -> torch.Tensor:
        """``Wᵀ B V`` for V (d, m) -> (r, m): ``Lᵀ V`` or ``diag(b)^½ Q_rᵀ S⁻¹ V``."""
        if self.L is not None:
            return self.L.T @ V
        s_inv = torch.where(self.s > 0, 1.0 / self.s.clamp_min(torch.finfo(self.s.dtype).tiny),
                            torch.zeros_like(self.s))
        return self.b.sqrt()[:, None] * (self.Q.T @ (s_inv[:, None] * V))

    @property
    def W(self) -> torch.Tensor:
        """The explicit (d, r) matrix (for tests and small problems)."""
        return self.apply(torch.eye(self.rank, dtype=self.s.dtype, device=self.s.device))


@dataclass
class GeneralizedEig:
    """Ordered solution of ``A x = λ B x`` on the range of ``B``.

    ``values`` (n,) and ``vectors`` (d, n) in the requested order, columns B-orthonormal;
    ``Y`` (r, n) the same vectors in whitened coordinates (``vectors = whitener.W @ Y``);
    ``n_nonzero`` eigenvalues exceed the tolerance (for the perception problem: the label
    rank). With ``only_nonzero=True`` only those ``n_nonzero`` columns are computed.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    Y: torch.Tensor
    whitener: Whitener
    n_nonzero: int
    order: str

    @property
    def rank(self) -> int:
        return self.whitener.rank

    def unique_prefix(self, k: np.ndarray | int) -> np.ndarray:
        """True where span of the first ``k`` columns is uniquely defined (eigenvalue gap at k).

        ``k = 0`` and ``k = rank`` are always unique; inside the null block never.
        """
        k = np.asarray(k)
        vals = self.values.detach().cpu().numpy()
        n = vals.shape[0]
        scale = max(float(np.abs(vals).max(initial=0.0)), np.finfo(float).tiny)
        gaps = np.abs(vals[:-1] - vals[1:]) > GAP_RTOL * scale  # gaps[i]: between i and i+1
        out = np.zeros(k.shape, dtype=bool)
        out[(k == 0) | (k >= self.rank)] = True
        inner = (k > 0) & (k < n)
        out[inner] = gaps[k[inner] - 1]
        if n < self.rank:  # only the non-null columns were computed: k == n closes the block
            out[k == n] = True
        return out


def as_float64(x, name: str, device=None) -> torch.Tensor:
    """Convert an array or tensor to a float64 torch tensor, rejecting non-finite entries."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")
    x = x.to(device=device if device is not None else x.device, dtype=torch.float64)
    # a NaN/inf entry makes the sum non-finite; the element-wise count runs only then
    bad = 0 if torch.isfinite(x.sum()) else int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"{name} has {bad} non-finite entries (NaN/inf): the statistics are corrupt, "
                         "e.g. float16 overflow in the forward pass; recompute them with --dtype float32")
    return x


def check_symmetric_psd_shape(B: torch.Tensor, name: str, rtol: float = 1e-8) -> torch.Tensor:
    """Validate a square symmetric matrix (to relative ``rtol``); returns it unchanged (the LAPACK
    routines used afterwards read one triangle only)."""
    if B.ndim != 2 or B.shape[0] != B.shape[1]:
        raise ValueError(f"{name} must be a square (d, d) matrix, got shape {tuple(B.shape)}")
    lo, hi = torch.aminmax(B) if B.numel() else (torch.zeros(()), torch.zeros(()))
    scale = float(torch.maximum(-lo, hi))
    if scale == 0.0:
        raise ValueError(f"{name} is all zeros: no data was accumulated for it")
    asym = _max_asymmetry(B)
    if asym > rtol * scale:
        raise ValueError(f"{name} is not symmetric (max |B - Bᵀ| = {asym:.3g}, {asym / scale:.2g} relative); "
                         "pass a covariance-like matrix (sum of outer products)")
    return B


def _max_asymmetry(B: torch.Tensor, block: int = 256) -> float:
    """max |B - Bᵀ|, comparing each strip above the diagonal with its mirror (cache-sized pieces:
    a whole transposed difference reads memory with a stride of d)."""
    n = B.shape[0]
    return max(float((B[i:i + block, i:] - B[i:, i:i + block].T).abs().max()) for i in range(0, n, block))


def _largest_ritz_value(op, like: torch.Tensor, steps: int = LANCZOS_STEPS) -> float:
    """Largest eigenvalue of the symmetric operator ``op`` (X (n, k) -> (n, k), n = like.shape[0],
    dtype and device of ``like``): Rayleigh–Ritz on the Krylov space of a seeded random start
    (Lanczos with full reorthogonalisation). A lower bound; for ``steps`` = 16 within a factor 2
    with probability > 1 - 1e-7 whatever the spectrum (Kuczyński & Woźniakowski 1992), and far
    closer when λ_max is separated from the rest."""
    n = like.shape[0]
    k = min(steps, n)
    Q = torch.zeros(n, k, dtype=like.dtype, device=like.device)
    AQ = torch.zeros_like(Q)
    q = torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=like.dtype).to(like.device)
    for j in range(k):
        for _ in range(2):  # orthogonalise against the basis so far, twice ("twice is enough")
            q = q - Q[:, :j] @ (Q[:, :j].T @ q)
        nrm = torch.linalg.vector_norm(q)
        if j and nrm <= 1e-10 * torch.linalg.vector_norm(AQ[:, j - 1]):
            k = j  # the Krylov space is invariant: its Ritz values are exact
            break
        Q[:, j:j + 1] = q / nrm
        AQ[:, j:j + 1] = q = op(Q[:, j:j + 1])
    H = Q[:, :k].T @ AQ[:, :k]
    return float(torch.linalg.eigvalsh((H + H.T) / 2)[-1])


def _scaled_extremes(B: torch.Tensor, L: torch.Tensor, s: torch.Tensor) -> tuple[float, float]:
    """Estimates of (λ_min, λ_max) of ``Bs = S B S`` given ``B = L Lᵀ``: Lanczos on Bs and on
    ``Bs⁻¹ = S⁻¹ L⁻ᵀ L⁻¹ S⁻¹`` (two triangular solves per step). λ_min is over-, λ_max
    under-estimated, each by less than 2x with probability > 1 - 1e-7."""
    s1, solve = s[:, None], torch.linalg.solve_triangular
    lam_max = _largest_ritz_value(lambda X: s1 * (B @ (s1 * X)), B)
    inv_max = _largest_ritz_value(lambda X: solve(L.T, solve(L, X / s1, upper=False), upper=True) / s1, B)
    return 1 / inv_max, lam_max


def jacobi_scale(B: torch.Tensor) -> torch.Tensor:
    """s (d,) with ``diag(s) B diag(s)`` of unit diagonal; 0 for coordinates with zero variance."""
    dg = B.diagonal()
    if bool((dg < 0).any()):
        raise ValueError("the matrix has negative diagonal entries: not a sum of outer products (PSD)")
    return torch.where(dg > 0, dg.clamp_min(torch.finfo(B.dtype).tiny).rsqrt(), torch.zeros_like(dg))


def whiten(B: torch.Tensor, *, rcond: float = DEFAULT_RCOND, atol: float | None = None,
           method: str = "auto") -> Whitener:
    """Whitening map on the range of the symmetric PSD ``B`` (d, d); see the module docstring.

    With ``rcond`` the tolerance applies to the Jacobi-scaled matrix ``Bs = S B S`` (unit diagonal,
    ``S = diag(B)^-½``): eigenvalues of ``Bs`` at or below ``rcond · λ_max(Bs)`` are dropped. The
    generalized eigenproblem is invariant to this change of variables, and the rank decision no
    longer depends on the units of individual features (hidden states have a few "massive"
    dimensions whose variance exceeds the others' by 10⁶ or more). With ``atol`` the threshold
    is absolute on the unscaled eigenvalues of ``B`` as given (eigenvalues ``<= atol`` are dropped);
    the authors apply 1e-8 to ``B / N``, i.e. ``atol = 1e-8 · N`` on raw sums (SPEC §2).

    ``method``: "cholesky" (fast path, falls back to eigh unless every eigenvalue of Bs clearly
    exceeds tol), "eigh", or "auto" (Cholesky from ``CHOLESKY_MIN_DIM`` on).
    """
    if method not in ("auto", "cholesky", "eigh"):
        raise ValueError(f"method must be auto, cholesky or eigh, got {method!r}")
    d = B.shape[0]
    s = jacobi_scale(B) if atol is None else torch.ones(d, dtype=B.dtype, device=B.device)
    if (method == "cholesky" or (method == "auto" and d >= CHOLESKY_MIN_DIM)) and bool((s > 0).all()):
        L, info = torch.linalg.cholesky_ex(B)
        if int(info) == 0:
            lam_min, lam_max = _scaled_extremes(B, L, s)
            tol = float(atol) if atol is not None else rcond * lam_max
            if lam_min > CERTIFY_MARGIN * tol + 64 * d * np.finfo(float).eps * lam_max:  # W = L⁻ᵀ
                return Whitener(s=s, rank=d, tol=tol, lambda_max=lam_max, method="cholesky", L=L)
    Bs = B * s[:, None] * s[None, :]
    b, Q = torch.linalg.eigh(Bs)
    b, Q = b.flip(0), Q.flip(1)  # descending (scaled) variance
    lam_max = float(b[0])
    tol = float(atol) if atol is not None else rcond * lam_max
    r = int((b > tol).sum())
    if r == 0:
        raise ValueError(f"every eigenvalue of the matrix is <= tol = {tol:.3g}: nothing to whiten "
                         "(too few texts, or an absolute --atol too large for these sums)")
    return Whitener(s=s, rank=r, tol=tol, lambda_max=lam_max, method="eigh", Q=Q[:, :r], b=b[:r])


def _gram_lower(G: torch.Tensor, blocks: int = 8) -> torch.Tensor:
    """The lower triangle of ``G Gᵀ`` (G (n, m) -> (n, n), zeros above the diagonal blocks), by
    block rows: about half the product's cost, and all that ``torch.linalg.eigh`` reads."""
    n = G.shape[0]
    K = torch.zeros(n, n, dtype=G.dtype, device=G.device)
    h = max(1, -(-n // blocks))
    for i in range(0, n, h):
        K[i:i + h, :i + h] = G[i:i + h] @ G[:i + h].T
    return K


def _order_null_block(N: torch.Tensor, wh: Whitener) -> torch.Tensor:
    """Order an orthonormal basis ``N`` (r, m) of a degenerate block by decreasing
    variance per unit norm of ``x = W y``: ascending eigenvalues of ``Nᵀ WᵀW N``."""
    if N.shape[1] <= 1:
        return N
    WN = wh.apply(N)
    crit = WN.T @ WN
    _, E = torch.linalg.eigh((crit + crit.T) / 2)
    return N @ E


def generalized_eigh(B, *, A=None, A_factor=None, rcond: float = DEFAULT_RCOND, atol: float | None = None,
                     order: str = "descending", only_nonzero: bool = False, device=None,
                     name_A: str = "A", name_B: str = "B", checked: bool = False) -> GeneralizedEig:
    """Solve ``A x = λ B x`` on the range of ``B`` (SPEC §2) with a deterministic order.

    Parameters
    ----------
    B : (d, d) symmetric PSD array/tensor.
    A : (d, d) symmetric PSD, or ``A_factor`` (d, m) with ``A = A_factor A_factorᵀ`` (preferred:
        more accurate, and cheap when m < d).
    rcond, atol : relative (default, on the Jacobi-scaled ``B``) or absolute (on ``B`` as given)
        tolerance on the eigenvalues of ``B``; ``rcond`` is also the relative threshold below which an
        eigenvalue of the reduced problem is 0.
    order : "descending" (largest λ first, the paper's definition) or "ascending" (the
        authors' released code). Ascending is the exact reverse of the full descending order.
    only_nonzero : compute only the columns with λ > 0 (descending order only).
    checked : the inputs are float64 tensors already validated (skips the checks).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if (A is None) == (A_factor is None):
        raise ValueError("pass exactly one of A or A_factor")
    if rcond is not None and not (0 < rcond < 1):
        raise ValueError(f"rcond must lie in (0, 1), got {rcond}")
    if atol is not None and not atol >= 0:
        raise ValueError(f"atol must be >= 0, got {atol}")
    if not checked:
        B = check_symmetric_psd_shape(as_float64(B, name_B, device), name_B)
    d = B.shape[0]
    if A_factor is not None:
        F = A_factor if checked else as_float64(A_factor, name_A, B.device)
        if F.ndim == 1:
            F = F[:, None]
        if F.ndim != 2 or F.shape[0] != d:
            raise ValueError(f"{name_A} must have shape ({d}, m) to match {name_B} ({d}, {d}), "
                             f"got {tuple(F.shape)}")
    elif not checked:
        A = check_symmetric_psd_shape(as_float64(A, name_A, B.device), name_A)
        if A.shape != B.shape:
            raise ValueError(f"{name_A} {tuple(A.shape)} and {name_B} {tuple(B.shape)} must have the same shape")

    wh = whiten(B, rcond=rcond, atol=atol)
    r = wh.rank
    rel = rcond if rcond is not None else DEFAULT_RCOND
    if A_factor is not None and F.shape[1] < r:
        Y, sv, _ = torch.linalg.svd(wh.t_apply(F), full_matrices=False)  # (r, m), (m,)
        lam = sv**2
    else:
        K = _gram_lower(wh.t_apply(F)) if A_factor is not None else wh.t_apply(wh.t_apply(A).T)  # Wᵀ A W
        lam, Y = torch.linalg.eigh(K)  # reads the lower triangle only: no symmetrisation needed
        lam, Y = lam.flip(0), Y.flip(1)
    c = int((lam > rel * lam[0]).sum()) if lam[0] > 0 else 0
    if only_nonzero and order == "descending":
        return GeneralizedEig(lam[:c], wh.apply(Y[:, :c]), Y[:, :c], wh, c, order)
    if Y.shape[1] < r:  # thin SVD: complete the basis to (r, r), label directions first
        Q = torch.linalg.qr(Y[:, :c], mode="complete")[0] if c > 0 else torch.eye(r, dtype=F.dtype, device=F.device)
        Y = torch.cat([Y[:, :c], Q[:, c:]], dim=1)
    if c < r:
        Y[:, c:] = _order_null_block(Y[:, c:], wh)
    values = torch.cat([lam[:c], torch.zeros(r - c, dtype=lam.dtype, device=lam.device)])
    if order == "ascending":
        Y, values = Y.flip(1), values.flip(0)
    return GeneralizedEig(values, wh.apply(Y), Y, wh, c, order)
