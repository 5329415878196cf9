"""The two facts of SPEC §6 about the authors' released K_sweep, shown on one real statistics artifact.

1. **No unique cell in ascending order with two classes.** M Mᵀ has rank C (the label rank), so in the
   authors' ascending order every U_k with k <= r_U − C lies in the eigenvalue-0 block of the perception problem
   (with C = 2 and r_U > 40 that is every f <= 0.95):
   any basis of it is as valid as another and the published numbers depend on the one LAPACK returned. Our
   ascending sweep flags every such cell ``unique = False``; this prints how many cells are unique.
2. **float32 subspaces far from float64 ones.** The authors' algorithm (sums divided by N, eigenvalues of
   Σ/N and C0/N at or below 1e-8 dropped, whitening, ``eigh``) run in float32 and in float64 on the same sums: per
   layer and fraction, the overlap ‖Q64ᵀ Q32‖²_F / k of the two top-k autoregressive subspaces V_k (1 = the same
   subspace, k/d = chance) and the NTPS difference that follows.

    python bench/authors_facts.py --stats_dir outputs/offline/smollm2-135m/vader-movies/train
    python bench/authors_facts.py --stats_dir DIR --layers 8,16,24 --fractions 0.25,0.5 --order ascending
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntps.artifacts import load_stats  # noqa: E402
from ntps.score import ntps_sweep, solve_layer  # noqa: E402

ATOL = 1e-8  # the authors' cutoff on the N-normalised Σ and C0 (SPEC §2)


def authors_eig(A: torch.Tensor, B: torch.Tensor, order: str) -> torch.Tensor:
    """The authors' generalized eigenvectors of (A, B) in their dtype: drop B's eigenvalues <= ATOL, whiten,
    ``eigh``; columns ascending (their code) or descending."""
    b, Q = torch.linalg.eigh(B)
    keep = b > ATOL
    W = Q[:, keep] / b[keep].sqrt()
    _, Y = torch.linalg.eigh(W.T @ A @ W)
    V = W @ Y
    return V if order == "ascending" else V.flip(1)


def overlap(V1: torch.Tensor, V2: torch.Tensor) -> float:
    """‖Q1ᵀ Q2‖²_F / k of the spans of two (d, k) bases, in float64."""
    Q1, Q2 = (torch.linalg.qr(v.double())[0] for v in (V1, V2))
    return float((Q1.T @ Q2).pow(2).sum()) / V1.shape[1]


def captured(U: torch.Tensor, V: torch.Tensor) -> float:
    """NTPS = ‖P_V U‖²_F / ‖U‖²_F, in float64."""
    Q = torch.linalg.qr(V.double())[0]
    U = U.double()
    return float((Q.T @ U).pow(2).sum() / U.pow(2).sum())


def layer_rows(sums, n: int, fractions, order: str) -> list[dict]:
    XX, XY, C0, C1 = (torch.as_tensor(np.asarray(t), dtype=torch.float64) for t in
                      (sums.XX, sums.XY, sums.C0, sums.C1))
    M, N = XY @ XY.T / n**2, C1 @ C1.T / n**2
    rows = []
    bases = {dt: (authors_eig(M.to(dt), (XX / n).to(dt), order), authors_eig(N.to(dt), (C0 / n).to(dt), order))
             for dt in (torch.float32, torch.float64)}
    (U64, V64), (U32, V32) = bases[torch.float64], bases[torch.float32]
    for f in fractions:
        kU, kV = int(f * U64.shape[1]), int(f * V64.shape[1])
        if kU < 1 or kV < 1 or V32.shape[1] < kV or U32.shape[1] < kU:
            continue
        rows.append({"f": f, "k_V": kV, "overlap_V": overlap(V64[:, :kV], V32[:, :kV]),
                     "ntps64": captured(U64[:, :kU], V64[:, :kV]), "ntps32": captured(U32[:, :kU], V32[:, :kV])})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stats_dir", required=True, help="a cache.py artifact (stats.safetensors + meta.json)")
    p.add_argument("--layers", default=None, help="comma-separated layers (default: every 4th and the last)")
    p.add_argument("--fractions", default="0.1,0.25,0.5,0.75")
    p.add_argument("--order", choices=["ascending", "descending"], default="ascending",
                   help="order of the float32-vs-float64 comparison (the authors' code: ascending)")
    args = p.parse_args(argv)
    stats = load_stats(args.stats_dir)
    layers = sorted(stats.layers)
    layers = [int(x) for x in args.layers.split(",")] if args.layers else sorted({*layers[::4], layers[-1]})
    fractions = [float(x) for x in args.fractions.split(",")]
    n = stats.n_texts
    print(f"{args.stats_dir}: N = {n}, d = {stats.layers[layers[0]].XX.shape[0]}, layers {layers}")

    unique = total = 0
    for layer in layers:
        s = stats.layers[layer]
        res = ntps_sweep(solve_layer(s.XX, s.XY, s.C0, s.C1, order="ascending"))
        ok = ~np.isnan(res["ntps"])
        unique, total = unique + int(res["unique"][ok].sum()), total + int(ok.sum())
    c = int(np.asarray(stats.layers[layers[0]].XY).shape[1])
    print(f"1. ascending order (the released code), C = {c}: {unique} of {total} layer × f cells uniquely defined")

    print(f"2. the authors' algorithm ({args.order}), float32 vs float64 on the same sums:")
    print(f"{'layer':>5} {'f':>5} {'k_V':>4} {'overlap of V_k':>15} {'NTPS f64':>9} {'NTPS f32':>9} {'|Δ|':>7}")
    worst_overlap, worst_diff = 1.0, 0.0
    for layer in layers:
        for r in layer_rows(stats.layers[layer], n, fractions, args.order):
            diff = abs(r["ntps64"] - r["ntps32"])
            worst_overlap, worst_diff = min(worst_overlap, r["overlap_V"]), max(worst_diff, diff)
            print(f"{layer:>5} {r['f']:>5g} {r['k_V']:>4} {r['overlap_V']:>15.3f} {r['ntps64']:>9.4f} "
                  f"{r['ntps32']:>9.4f} {diff:>7.4f}")
    print(f"smallest overlap {worst_overlap:.3f}; largest NTPS difference {worst_diff:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
