"""Seconds per layer of the full 19-fraction K_sweep: our solver (float64) vs the naive
algorithm of SPEC §2 (float32: eigh of B, whitening, eigh, one pseudo-inverse per fraction),
on the same random statistics in one run, with the ratio (wall clock and process CPU time).
Beside it, our time per layer in units of one float64 ``torch.linalg.eigh`` of a d × d
symmetric Gaussian matrix measured in the same run (the floor: the autoregressive side needs
one full eigendecomposition). Agreement is checked where the subspaces are uniquely defined
(SPEC §2.0) against the same naive algorithm run in float64 (our answer must match it to
1e-6); the float32 naive's own deviation is printed beside it: on ill-conditioned statistics
float32 whitening loses several digits.

    python bench/ksweep_bench.py                 # d = 576, 1024, 2048 on the CPU
    OMP_NUM_THREADS=1 python bench/ksweep_bench.py --repeats 3   # on a shared machine
    python bench/ksweep_bench.py --dims 2048 --c0_small 1e-9,3e-8   # C0 with 2 directions below tol
    python bench/ksweep_bench.py --device cuda --dims 2048,4096
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntps.cli import resolve_device  # noqa: E402
from ntps.linalg import whiten  # noqa: E402
from ntps.score import DEFAULT_FRACTIONS, ntps_sweep, solve_layer  # noqa: E402


def random_statistics(d: int, C: int, seed: int, device):
    """Covariance-like sums with a decaying spectrum, as the sums of SPEC §1 would look."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    scale = torch.logspace(0, -3, d, dtype=torch.float64)
    A = torch.randn(d, 2 * d, generator=g, dtype=torch.float64) * scale[:, None]
    Bm = torch.randn(d, 2 * d, generator=g, dtype=torch.float64) * scale[:, None]
    XX, C0 = A @ A.T, Bm @ Bm.T
    XY = XX @ torch.randn(d, C, generator=g, dtype=torch.float64) / d
    C1 = C0 @ torch.randn(d, d, generator=g, dtype=torch.float64) / d**0.5
    return [t.to(device) for t in (XX, XY, C0, C1)]


def with_small_eigenvalues(B: torch.Tensor, small) -> torch.Tensor:
    """B with the smallest eigenvalues of its Jacobi-scaled form set to ``small`` × the largest: a layer
    whose C0 keeps d − len(small) directions, as real models' do (smollm2-135m: 575 of 576)."""
    s = B.diagonal().rsqrt()
    b, Q = torch.linalg.eigh(s[:, None] * B * s[None, :])
    b[: len(small)] = torch.tensor(small, dtype=b.dtype, device=b.device) * b[-1]
    return (Q * b) @ Q.T / s[:, None] / s[None, :]


def naive_sweep(XX, XY, C0, C1, fractions, rcond=1e-7, dtype=torch.float32):
    """The reference algorithm: full eigendecompositions, then a pinv projector per fraction."""
    def gen_eigh(A, B):
        s = B.diagonal().rsqrt()  # the same tolerance convention: relative on the unit-diagonal matrix
        b, Q = torch.linalg.eigh(s[:, None] * B * s[None, :])
        keep = b > rcond * b.max()
        W = s[:, None] * Q[:, keep] / b[keep].sqrt()
        lam, Y = torch.linalg.eigh(W.T @ A @ W)
        return lam.flip(0), (W @ Y).flip(1), int(keep.sum())

    XX, XY, C0, C1 = (t.to(dtype) for t in (XX, XY, C0, C1))
    lamU, U, rU = gen_eigh(XY @ XY.T, XX)
    _, V, rV = gen_eigh(C1 @ C1.T, C0)
    c = int((lamU > rcond * lamU[0]).sum())
    out = []
    for f in fractions:
        kU, kV = min(int(f * rU + 1e-9), c), int(f * rV + 1e-9)
        Uk, Vk = U[:, :kU], V[:, :kV]
        P = Vk @ torch.linalg.pinv(Vk)
        out.append(float(torch.linalg.matrix_norm(P @ Uk) ** 2 / torch.linalg.matrix_norm(Uk) ** 2))
    return np.array(out)


def timed(fn, device):
    """(result, wall seconds, process CPU seconds): CPU time, summed over BLAS threads, is robust
    to other processes sharing the cores; wall time is what a user waits."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t, time.process_time() - c


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dims", default="576,1024,2048")
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--c0_small", default="",
                   help="comma-separated eigenvalues (relative) that replace the smallest of the Jacobi-scaled C0, "
                        "e.g. 1e-9,3e-8: C0 then has directions below the tolerance, like real models' layers")
    args = p.parse_args(argv)
    c0_small = [float(x) for x in args.c0_small.split(",") if x]
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, C = {args.classes}, "
          f"{len(DEFAULT_FRACTIONS)} fractions" + (f", C0 with scaled eigenvalues {c0_small}" if c0_small else ""))
    print(f"{'d':>6} {'ours f64 s':>11} {'naive f32 s':>12} {'ratio':>7} {'CPU-s ratio':>12} {'eigh s':>7} "
          f"{'ours/eigh':>10} {'CPU-s ours/eigh':>16} {'|Δ| vs naive f64':>17} {'|Δ| naive f32':>14} {'unique':>7}")
    for d in (int(x) for x in args.dims.split(",")):
        stats = random_statistics(d, args.classes, seed=d, device=device)
        if c0_small:
            stats[2] = with_small_eigenvalues(stats[2], c0_small)
        sym = torch.randn(d, d, generator=torch.Generator().manual_seed(d), dtype=torch.float64).to(device)
        sym = sym + sym.T
        small = random_statistics(64, args.classes, seed=0, device=device)
        solve_layer(*small, device=device)  # warm-up
        torch.linalg.eigh(small[0])
        times, out = {"ours": [], "naive": [], "eigh": []}, {}  # (wall, CPU) pairs
        for _ in range(args.repeats):  # eigh right before and after ours: the same load on the machine
            for key, fn in (("eigh", lambda m=sym: torch.linalg.eigh(m)),
                            ("ours", lambda st=stats: ntps_sweep(solve_layer(*st, device=device))),
                            ("eigh", lambda m=sym: torch.linalg.eigh(m)),
                            ("naive", lambda st=stats: naive_sweep(*st, DEFAULT_FRACTIONS))):
                out[key], *t = timed(fn, device)
                times[key].append(t)
        res, ref = out["ours"], out["naive"]
        ref64 = naive_sweep(*stats, DEFAULT_FRACTIONS, dtype=torch.float64)
        m = res["unique"]
        diff64 = float(np.max(np.abs(res["ntps"][m] - ref64[m]))) if m.any() else float("nan")
        diff32 = float(np.max(np.abs(res["ntps"][m] - ref[m]))) if m.any() else float("nan")
        (a, ca), (b, cb), (e, ce) = (np.min(times[k], axis=0) for k in ("ours", "naive", "eigh"))
        print(f"{d:>6} {a:>11.3f} {b:>12.3f} {b / a:>6.1f}x {cb / max(ca, 1e-9):>11.1f}x {e:>7.3f} {a / e:>10.2f} "
              f"{ca / max(ce, 1e-9):>16.2f} {diff64:>17.2e} {diff32:>14.2e} {int(m.sum()):>4}/{len(m)} "
              f"{whiten(stats[2]).method:>9}", flush=True)
        if not diff64 <= 1e-6:
            print(f"  WARNING: disagreement {diff64:.2e} > 1e-6 with the float64 naive algorithm", flush=True)


if __name__ == "__main__":
    main()
