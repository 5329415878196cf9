"""An independent, deliberately naive float64 NTPS (SPEC §2): numpy only, an explicit
pseudo-inverse projector per fraction. Used by the tests and mirrors the benchmark baseline."""

import numpy as np


def naive_gen_eigh(A, B, rcond):
    """Eigenpairs of A x = λ B x on range(B), descending λ; columns B-orthonormal."""
    s = 1 / np.sqrt(np.diag(B))  # the documented convention: tolerance on the unit-diagonal matrix
    b, Q = np.linalg.eigh(s[:, None] * (B + B.T) / 2 * s[None, :])
    keep = b > rcond * b.max()
    W = s[:, None] * Q[:, keep] / np.sqrt(b[keep])
    lam, Y = np.linalg.eigh(W.T @ A @ W)
    idx = np.argsort(-lam, kind="stable")
    return lam[idx], W @ Y[:, idx], int(keep.sum())


def naive_ntps(XX, XY, C0, C1, fractions, rcond=1e-7):
    """NTPS per fraction with the label-rank clamp of the descending convention."""
    lamU, U, rU = naive_gen_eigh(XY @ XY.T, XX, rcond)
    lamV, V, rV = naive_gen_eigh(C1 @ C1.T, C0, rcond)
    label_rank = int((lamU > rcond * lamU[0]).sum())
    out = []
    for f in fractions:
        kU = min(int(np.floor(f * rU + 1e-9)), label_rank)
        kV = int(np.floor(f * rV + 1e-9))
        Uk, Vk = U[:, :kU], V[:, :kV]
        P = Vk @ np.linalg.pinv(Vk)
        out.append(np.linalg.norm(P @ Uk) ** 2 / np.linalg.norm(Uk) ** 2)
    return np.array(out)
