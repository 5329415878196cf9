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
   it is) and ``W = L⁻ᵀ``, taken when nothing is dropped: ``‖Bs‖_F`` bounds ``λ_max`` from above
   and a short Lanczos run on ``Bs⁻¹`` (two triangular solves per step) bounds ``λ_min`` from below
   (with probability > 1 − 1e-7 whatever the spectrum). Near the tolerance, further Lanczos runs
   bracket ``λ_max`` and find the few eigenvectors D of ``Bs`` at or below tol; when they prove
   the eigh rule's rank, ``W = L⁻ᵀ H`` on the complement of ``L⁻¹ S⁻¹ D``
   ("deflated"; real models' C0 often has one or two such directions). Otherwise
   ``W = S Q_r diag(b_r)^-½`` from ``eigh(Bs)``. All give the same generalized eigenvectors.
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
from functools import cached_property

import numpy as np
import torch

DEFAULT_RCOND = 1e-7
#: ``whiten(method="auto")`` tries Cholesky from this size on; below it ``eigh`` is as cheap.
CHOLESKY_MIN_DIM = 256
#: Eigenvalues closer than this (relative to the largest) count as tied (subspace not unique).
GAP_RTOL = 1e-9
#: Krylov dimensions of the Lanczos runs on the Cholesky path: the first test, and the runs that decide
#: near the tolerance (a tighter error bound) and find the directions to deflate.
LANCZOS_STEPS = 16
LANCZOS_STEPS_NEAR = 64
#: Each Lanczos estimate of an extreme eigenvalue is within its bound (:func:`_lanczos_slack`) with
#: probability > 1 - LANCZOS_FAILURE whatever the spectrum (Kuczyński & Woźniakowski 1992).
LANCZOS_FAILURE = 1e-7
#: The Cholesky path deflates at most this many eigenvalues of Bs at or below tol (more: eigh).
DEFLATE_MAX = 8
#: ... and only directions whose subspace error bound (Davis–Kahan, residual / gap) is below this.
DEFLATE_RTOL = 1e-10
ORDERS = ("descending", "ascending")


@dataclass
class Whitener:
    """The whitening map ``W`` (d, r) with ``Wᵀ B W = I_r`` on the range of ``B``, kept factored, with
    ``S = diag(s)`` the Jacobi scaling:

    * ``"cholesky"``: ``W = L⁻ᵀ`` (``B = L Lᵀ``, r = d);
    * ``"deflated"``: ``W = L⁻ᵀ H`` with H (d, d − m) an orthonormal basis of the complement of
      ``N = L⁻¹ S⁻¹ D``, D (d, m) the eigenvectors of ``Bs`` at or below tol: range(W) is then
      ``{x : Dᵀ S⁻¹ x = 0}``, the range the eigh path keeps. ``H`` is held as the Householder QR
      (``Hn``, ``tau``) of N: H = columns m.. of its orthogonal factor;
    * ``"eigh"``: ``W = S Q_r diag(b_r)^-½``.

    Apply it with :meth:`apply` / :meth:`t_apply` (triangular solves instead of an explicit inverse);
    :meth:`to_whitened` maps a direction v to ``Wᵀ B v`` (``B^{1/2} v`` up to a rotation). ``rank = r``;
    ``tol`` the threshold on the scaled eigenvalues and ``lambda_max`` λ_max(Bs) (on the Cholesky paths
    upper bounds: ``‖Bs‖_F`` or the bound of :func:`_cholesky_whitener`); ``lambda_min`` a lower bound on
    λ_min(Bs) (the Lanczos bound of the Cholesky path, holding with probability > 1 − 1e-7; 0 when none is known:
    deflated and eigh paths)."""

    s: torch.Tensor
    rank: int
    tol: float
    lambda_max: float
    method: str  # "cholesky", "deflated" or "eigh"
    lambda_min: float = 0.0
    L: torch.Tensor | None = None
    Q: torch.Tensor | None = None
    b: torch.Tensor | None = None
    Hn: torch.Tensor | None = None
    tau: torch.Tensor | None = None

    @property
    def deflated(self) -> int:
        """m, the number of directions projected out on the deflated Cholesky path (0 otherwise)."""
        return 0 if self.Hn is None else self.Hn.shape[1]

    def _h(self, Y: torch.Tensor, transpose: bool) -> torch.Tensor:
        """``H Y`` (Y (d − m, k)) or ``Hᵀ Y`` (Y (d, k)); the identity without deflation."""
        m = self.deflated
        if not m:
            return Y
        if transpose:
            return torch.ormqr(self.Hn, self.tau, Y, transpose=True)[m:]
        return torch.ormqr(self.Hn, self.tau, torch.nn.functional.pad(Y, (0, 0, m, 0)))

    def t_apply(self, F: torch.Tensor) -> torch.Tensor:
        """``Wᵀ F`` for F (d, m) -> (r, m)."""
        if self.L is not None:  # as (Fᵀ L⁻ᵀ)ᵀ: LAPACK reads a row-major F without a transposed copy
            return self._h(torch.linalg.solve_triangular(self.L.T, F.T, upper=True, left=False).T, True)
        return (self.Q.T @ (self.s[:, None] * F)) / self.b.sqrt()[:, None]

    def apply(self, Y: torch.Tensor) -> torch.Tensor:
        """``W Y`` for Y (r, m) -> (d, m)."""
        if self.L is not None:
            return torch.linalg.solve_triangular(self.L.T, self._h(Y, False), upper=True)
        return self.s[:, None] * (self.Q @ (Y / self.b.sqrt()[:, None]))

    def complement(self, Y: torch.Tensor) -> torch.Tensor | None:
        """On the Cholesky paths, for Y (r, k) with orthonormal columns: a (d, m + k) basis whose span is
        the Euclidean complement of ``W Y⊥`` (Y⊥ the rest of an orthonormal basis of R^r): ``L H Y``
        (``Yᵀ Hᵀ L⁻¹ L H Y⊥ = 0`` since ``Wᵀ B W = I``) after the m columns ``L N`` that span the
        complement of range(W). None on the eigh path."""
        if self.L is None:
            return None
        m = self.deflated
        if m:
            Y = torch.ormqr(self.Hn, self.tau, torch.block_diag(torch.eye(m, dtype=Y.dtype, device=Y.device), Y))
        return _lower_matmul(self.L, Y)

    def to_whitened(self, V: torch.Tensor) -> torch.Tensor:
        """``Wᵀ B V`` for V (d, m) -> (r, m): ``Hᵀ Lᵀ V`` or ``diag(b)^½ Q_rᵀ S⁻¹ V``."""
        if self.L is not None:
            return self._h(self.L.T @ V, True)
        s_inv = torch.where(self.s > 0, 1.0 / self.s.clamp_min(torch.finfo(self.s.dtype).tiny),
                            torch.zeros_like(self.s))
        return self.b.sqrt()[:, None] * (self.Q.T @ (s_inv[:, None] * V))

    def gram_bounds(self) -> tuple[float, float]:
        """Lower bounds on the smallest eigenvalue of the Gram matrix ``ZᵀZ`` of ``Z = W Y`` (:meth:`apply`) and of
        ``Z = `` :meth:`complement` ``(Y)``, for any Y with orthonormal columns (0 when nothing is known):
        ``σ_min(W)² ≥ min(s)² / λ_max(Bs)`` (``W = S W_s`` with ``W_sᵀ Bs W_s = I``) and, on the "cholesky" path,
        ``σ_min(L)² = λ_min(B) ≥ λ_min(Bs) / max(s)²`` (``B = S⁻¹ Bs S⁻¹``; 0 on the deflated path, whose
        complement holds directions of B below tol). They certify the normal-equation
        path of :func:`ntps.score._nested_captured`."""
        lo, hi = (float(x) for x in torch.aminmax(self.s))
        forward = lo * lo / self.lambda_max if self.lambda_max > 0 else 0.0
        return forward, (self.lambda_min / (hi * hi) if self.L is not None and hi > 0 else 0.0)

    @property
    def W(self) -> torch.Tensor:
        """The explicit (d, r) matrix (for tests and small problems)."""
        return self.apply(torch.eye(self.rank, dtype=self.s.dtype, device=self.s.device))


@dataclass
class GeneralizedEig:
    """Ordered solution of ``A x = λ B x`` on the range of ``B``.

    ``values`` (n,) and ``vectors`` (d, n) in the requested order, columns B-orthonormal;
    ``Y`` (r, n) the same vectors in whitened coordinates (``vectors = whitener.W @ Y``, formed on first use);
    ``n_nonzero`` eigenvalues exceed the tolerance (for the perception problem: the label
    rank). With ``only_nonzero=True`` only those ``n_nonzero`` columns are computed.
    """

    values: torch.Tensor
    Y: torch.Tensor
    whitener: Whitener
    n_nonzero: int
    order: str

    @cached_property
    def vectors(self) -> torch.Tensor:
        """(d, n) ``W Y``, formed on first use (the sweep of :mod:`ntps.score` needs only a part)."""
        return self.whitener.apply(self.Y)

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
    """max |B - Bᵀ|, comparing each tile above the diagonal with its mirror (tiles small enough that the
    transposed read stays in cache; a whole transposed difference reads memory with a stride of d)."""
    n = B.shape[0]
    tiles = [(B[i:i + block, j:j + block] - B[j:j + block, i:i + block].T).abs().amax()
             for i in range(0, n, block) for j in range(i, n, block)]
    return float(torch.stack(tiles).max())


def _lanczos(op, like: torch.Tensor, steps: int, deflate: torch.Tensor | None = None):
    """Rayleigh–Ritz on the Krylov space of a seeded random start for the symmetric operator ``op``
    (X (n, k) -> (n, k), n = like.shape[0]; dtype and device of ``like``), with full reorthogonalisation.
    With ``deflate`` D (n, m) orthonormal, the operator is ``(I − DDᵀ) op (I − DDᵀ)`` on the complement
    of D. Returns the Ritz values θ (descending; θ_i ≤ the i-th largest eigenvalue, and the largest is
    within :func:`_lanczos_slack` of λ_max with probability > 1 − LANCZOS_FAILURE), the Ritz vectors
    (n, k) and their residual norms ``‖op z − θ z‖``."""
    n = like.shape[0]
    proj = (lambda X: X - deflate @ (deflate.T @ X)) if deflate is not None else (lambda X: X)
    k = min(steps, n - (0 if deflate is None else deflate.shape[1]))
    Q = torch.zeros(n, k, dtype=like.dtype, device=like.device)
    AQ = torch.zeros_like(Q)
    q = proj(torch.randn(n, 1, generator=torch.Generator().manual_seed(0), dtype=like.dtype).to(like.device))
    for j in range(k):
        for _ in range(2):  # orthogonalise against the basis so far, twice ("twice is enough")
            q = q - Q[:, :j] @ (Q[:, :j].T @ q)
        nrm = torch.linalg.vector_norm(q)
        if j and nrm <= 1e-10 * torch.linalg.vector_norm(AQ[:, j - 1]):
            k = j  # the Krylov space is invariant: its Ritz values are exact
            break
        Q[:, j:j + 1] = q / nrm
        AQ[:, j:j + 1] = q = proj(op(Q[:, j:j + 1]))
    H = Q[:, :k].T @ AQ[:, :k]
    theta, Z = torch.linalg.eigh((H + H.T) / 2)
    theta, Z = theta.flip(0), Z.flip(1)
    X = Q[:, :k] @ Z
    return theta, X, torch.linalg.vector_norm(AQ[:, :k] @ Z - X * theta, dim=0)


def _lanczos_slack(steps: int, n: int) -> float:
    """ε with P(θ_max < (1 − ε) λ_max) ≤ LANCZOS_FAILURE after ``steps`` Lanczos steps on an n × n matrix:
    ``1.648 √n exp(−√ε (2 steps − 1))`` (Kuczyński & Woźniakowski 1992, Thm 4.2). 16 steps at n = 2048:
    0.43; 64 steps: 0.026."""
    return min(0.999, (np.log(1.648 * np.sqrt(n) / LANCZOS_FAILURE) / (2 * steps - 1)) ** 2)


def _scaled_fro(B: torch.Tensor, s: torch.Tensor, block: int = 128) -> float:
    """‖S B S‖_F (an upper bound on λ_max of the Jacobi-scaled matrix): ``Σ_i s_i² (B∘B s²)_i``, by strips of
    rows that stay in cache (one read of B)."""
    s2 = s * s
    return float(sum((B[i:i + block].square() @ s2) @ s2[i:i + block] for i in range(0, B.shape[0], block))) ** 0.5


def _bracket_lambda_max(op, like: torch.Tensor, fro: float, steps: int) -> tuple[float, float]:
    """(lower, upper) bounds on λ_max of the PSD operator ``op`` with Frobenius norm ``fro``, from the top
    Ritz value θ (residual ρ) of ``steps`` Lanczos steps. Lower: θ. Upper: the least of ``fro``,
    ``θ / (1 − slack)`` (with probability > 1 − LANCZOS_FAILURE) and ``max(θ + ρ, √(fro² − (θ − ρ)²))``
    (some eigenvalue lies within ρ of θ: λ_max itself, or another one and then λ_max² ≤ fro² − (θ − ρ)²)."""
    th, _, res = _lanczos(op, like, steps)
    lo, rho = float(th[0]), float(res[0])
    other = np.sqrt(max(fro**2 - (lo - rho) ** 2, 0.0)) if lo > rho else fro
    return lo, min(fro, lo / (1 - _lanczos_slack(steps, like.shape[0])), max(lo + rho, other))


def _cholesky_whitener(B: torch.Tensor, L: torch.Tensor, s: torch.Tensor, rcond: float,
                       atol: float | None) -> Whitener | None:
    """The Cholesky-path whitener of ``B = L Lᵀ`` when its rank decision provably equals the eigh rule's
    (eigenvalues of ``Bs`` at or below tol dropped), with probability > 1 − 5·LANCZOS_FAILURE (at most
    five Lanczos estimates are relied on); None otherwise (the caller takes eigh). Round-off of the
    factorisation counts as ``64 d eps ‖Bs‖_F``.

    1. λ_max(Bs) ≤ ‖Bs‖_F (one pass); 16 Lanczos steps on ``Bs⁻¹`` (two triangular solves each): when
       λ_min > tol by that bound, nothing is dropped (``W = L⁻ᵀ``, method "cholesky").
    2. Near the tolerance, with 16 Lanczos steps and, if they decide nothing, 64
       (tighter bounds): λ_max(Bs) is bracketed (:func:`_bracket_lambda_max`), then
       :func:`_deflated_whitener` drops the eigenvalues the eigh rule drops, if it can prove which."""
    d, s1, solve = B.shape[0], s[:, None], torch.linalg.solve_triangular
    fro = _scaled_fro(B, s)
    rnd = 64 * d * np.finfo(float).eps * fro
    inverse = lambda X: solve(L.T, solve(L, X / s1, upper=False), upper=True) / s1  # noqa: E731 (Bs⁻¹)
    ritz = _lanczos(inverse, B, LANCZOS_STEPS)
    tol = float(atol) if atol is not None else rcond * fro
    mu_max = float(ritz[0][0])  # > 0 for a positive definite B; guarded against round-off anyway
    lam_min = (1 - _lanczos_slack(LANCZOS_STEPS, d)) / mu_max - rnd if mu_max > 0 else 0.0
    if lam_min > tol:
        return Whitener(s=s, rank=d, tol=tol, lambda_max=fro, method="cholesky", lambda_min=lam_min, L=L)
    for steps in (LANCZOS_STEPS, LANCZOS_STEPS_NEAR):
        lam = (fro, fro) if atol is not None else _bracket_lambda_max(lambda X: s1 * (B @ (s1 * X)), B, fro, steps)
        tols = (atol, atol) if atol is not None else (rcond * lam[0], rcond * lam[1])
        if steps != LANCZOS_STEPS:
            ritz = _lanczos(inverse, B, steps)
        wh = _deflated_whitener(L, s, inverse, ritz, tols, lam[1], rnd, steps)
        if wh is not None:
            return wh
    return None


def _deflated_whitener(L, s, inverse, ritz, tols: tuple[float, float], lam_max: float, rnd: float,
                       steps: int) -> Whitener | None:
    """Step 2 of :func:`_cholesky_whitener`. ``ritz`` = (μ, Z, residuals) of Lanczos on ``Bs⁻¹``; ``tols``
    brackets the eigh rule's tol. ``λ_i(Bs) ≤ 1/μ_i``, so the m leading Ritz values with ``1/μ_i ≤ tol``
    are eigenvalues the eigh rule drops; a run on the deflated ``Bs⁻¹`` then bounds λ_{m+1}(Bs) from
    below. When that bound exceeds tol and the Ritz vectors D are accurate to DEFLATE_RTOL (Davis–Kahan:
    residual over the gap to the rest of the spectrum), ``W = L⁻ᵀ H`` on the complement of ``L⁻¹ S⁻¹ D``."""
    mu, Z, res = ritz
    d, eps = L.shape[0], _lanczos_slack(steps, L.shape[0])
    drop = ((mu > 0) & (1 / mu + rnd <= tols[0])).cpu().numpy()  # a prefix: μ descending
    m = int(drop.argmin()) if not drop.all() else len(drop)
    if m > DEFLATE_MAX:
        return None
    nu = float(_lanczos(inverse, L, steps, deflate=Z[:, :m])[0][0]) if m else float(mu[0])
    lam_min = (1 - eps) / nu - rnd if nu > 0 else 0.0  # λ_min(Bs) on the complement of D (of Bs when m = 0)
    if not lam_min > tols[1]:
        return None
    if not m:
        return Whitener(s=s, rank=d, tol=tols[1], lambda_max=lam_max, method="cholesky", lambda_min=lam_min, L=L)
    gap = float(mu[m - 1]) - nu / (1 - eps)  # between the Ritz values of D and the rest of Bs⁻¹'s spectrum
    if not gap > 0 or float(torch.linalg.vector_norm(res[:m])) > DEFLATE_RTOL * gap:
        return None
    Hn, tau = torch.geqrf(torch.linalg.solve_triangular(L, Z[:, :m] / s[:, None], upper=False))
    return Whitener(s=s, rank=d - m, tol=tols[1], lambda_max=lam_max, method="deflated", L=L, Hn=Hn, tau=tau)


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

    ``method``: "cholesky" (the Cholesky paths of :func:`_cholesky_whitener`, with deflation; eigh when
    they cannot prove the eigh rule's rank), "eigh", or "auto" (Cholesky from ``CHOLESKY_MIN_DIM`` on).
    """
    if method not in ("auto", "cholesky", "eigh"):
        raise ValueError(f"method must be auto, cholesky or eigh, got {method!r}")
    d = B.shape[0]
    s = jacobi_scale(B) if atol is None else torch.ones(d, dtype=B.dtype, device=B.device)
    if (method == "cholesky" or (method == "auto" and d >= CHOLESKY_MIN_DIM)) and bool((s > 0).all()):
        L, info = torch.linalg.cholesky_ex(B)
        wh = _cholesky_whitener(B, L, s, rcond, atol) if int(info) == 0 else None
        if wh is not None:
            return wh
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


def gram_lower(G: torch.Tensor, blocks: int = 8, alpha: float = 1.0) -> torch.Tensor:
    """The lower triangle of ``alpha · G Gᵀ`` (G (n, m) -> (n, n), zeros above the diagonal blocks), by
    block rows of the upper triangle, returned transposed: about half the product's cost, all that
    ``torch.linalg.eigh`` and ``cholesky`` read, in the column-major layout LAPACK takes without a transposed copy."""
    n = G.shape[0]
    K = torch.zeros(n, n, dtype=G.dtype, device=G.device)
    h = max(1, -(-n // blocks))
    for i in range(0, n, h):
        K[i:i + h, i:] = (G[i:i + h] if alpha == 1.0 else alpha * G[i:i + h]) @ G[i:].T
    return K.mT


def _lower_matmul(L: torch.Tensor, X: torch.Tensor, blocks: int = 8) -> torch.Tensor:
    """``L X`` for a lower-triangular L (n, n), X (n, m), by block rows that skip the zeros above the
    diagonal blocks (about half a dense product's cost; torch has no triangular multiply)."""
    n = L.shape[0]
    out = torch.empty(n, X.shape[1], dtype=X.dtype, device=X.device)
    h = max(1, -(-n // blocks))
    for i in range(0, n, h):
        out[i:i + h] = L[i:i + h, :i + h] @ X[:i + h]
    return out


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
        # −Wᵀ A W: its ascending eigenvalues are −λ in descending order (no reversed copy of the vectors)
        K = gram_lower(wh.t_apply(F), alpha=-1.0) if A_factor is not None else wh.t_apply(wh.t_apply(A).T).neg_()
        lam, Y = torch.linalg.eigh(K)  # reads the lower triangle only: no symmetrisation needed
        lam = lam.neg_()
    c = int((lam > rel * lam[0]).sum()) if lam[0] > 0 else 0
    if only_nonzero and order == "descending":
        return GeneralizedEig(lam[:c], Y[:, :c], wh, c, order)
    if Y.shape[1] < r:  # thin SVD: complete the basis to (r, r), label directions first
        Q = torch.linalg.qr(Y[:, :c], mode="complete")[0] if c > 0 else torch.eye(r, dtype=F.dtype, device=F.device)
        Y = torch.cat([Y[:, :c], Q[:, c:]], dim=1)
    if c < r:
        Y[:, c:] = _order_null_block(Y[:, c:], wh)
    values = torch.cat([lam[:c], torch.zeros(r - c, dtype=lam.dtype, device=lam.device)])
    if order == "ascending":
        Y, values = Y.flip(1), values.flip(0)
    return GeneralizedEig(values, Y, wh, c, order)
