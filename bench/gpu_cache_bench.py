"""cache.py's step against the bare forward pass on one GPU (issue 14), same texts, same batches.

Randomly initialised decoders of the Qwen2-7B and Qwen2-0.5B configs (weights do not change speed), bf16
forward passes. Text sets: ``short`` = vader-movies train (~24 tokens a text), ``long`` = movie-reviews-v2
train truncated to 512 tokens, tokenised with the smollm2 tokenizer from ``$NTPS_HOME``; where those files are
missing, synthetic token ids of the same length distribution. Batchings: fixed ``--batch_size`` texts, and
``--budgets`` padded tokens per batch (cache.py's ``--max_batch_tokens``). Modes, run one after another on the
same batches: ``bare`` (the decoder returning every hidden state) and cache.py's step at each
``--stats_precision`` (the same forward pass + ``StatsAccumulator.add_batch``, float32 partial sums flushed to
float64 every 8 batches).

Each batching is first run once untimed (``bare``), so that no mode pays for first-seen shapes. Prints and
writes as JSON lines (``--out``): tokens/s, the ratio to ``bare`` in wall time and in device time (the bare
forward's CUDA-event milliseconds over forward + statistics + flushes), peak GPU memory, the time per batch of
each phase from CUDA events (forward, statistics, flushes) and on the host (padding a batch), from
``torch.profiler`` the share of the statistics phase spent in its GEMMs, and the rounding errors of each
precision against the float64 formulas, on the device and in the CPU emulation.

    NTPS_HOME=... python bench/gpu_cache_bench.py --out bench/results/gpu_cache_bench_h200.jsonl  # H200: ~5 min
    python bench/gpu_cache_bench.py --smoke --out /tmp/smoke.jsonl     # CPU, tiny config, a few batches
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from gpu_check import SHAPES  # noqa: E402

from ntps.accumulate import PRECISIONS, StatsAccumulator  # noqa: E402
from ntps.io import git_commit  # noqa: E402
from ntps.text import length_sorted_shards, pad_batch  # noqa: E402

GEMM_OPS = ("aten::addmm", "aten::addmm_", "aten::mm")
FLUSH_EVERY = 8  # StatsAccumulator's default
T0 = time.perf_counter()


def log(out: Path, **record) -> None:
    print(json.dumps(record), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")


def build_decoder(shape: dict, device: torch.device) -> torch.nn.Module:
    """A Qwen2 decoder without LM head (what cache.py runs), random bf16 weights built on ``device``."""
    from transformers import Qwen2Config, Qwen2Model

    cfg = Qwen2Config(max_position_embeddings=4096, rope_theta=1e6, **shape)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with device:
            return Qwen2Model(cfg).eval()
    finally:
        torch.set_default_dtype(default)


def text_set(name: str, n_texts: int, max_length: int, rng) -> tuple[list[list[int]], np.ndarray, str]:
    """(token ids, labels, source) of ``n_texts`` texts of the set, or synthetic ids of similar lengths."""
    dataset = {"short": "vader-movies", "long": "movie-reviews-v2"}[name]
    try:
        from transformers import AutoTokenizer

        from ntps.data import load_split
        from ntps.text import tokenize

        home = Path(os.environ.get("NTPS_HOME", Path.home() / ".cache" / "ntps"))
        tok = AutoTokenizer.from_pretrained(home / "models" / "smollm2-135m")
        data = load_split(dataset, "train", max_samples=n_texts, seed=0)
        ids, _ = tokenize(tok, data.texts, max_length)
        return ids, np.asarray(data.labels), dataset
    except Exception as exc:  # missing files: the speed depends on lengths only
        print(f"{dataset} not available ({type(exc).__name__}): synthetic lengths", flush=True)
    if name == "short":  # vader-movies train: mean 24.5, sd 10.8, 8..52 tokens (5th..99th percentile)
        lengths = np.clip(rng.normal(24.5, 10.8, n_texts), 3, 66).astype(int)
    else:  # movie-reviews-v2 train: 89 % of the texts reach 512 tokens
        lengths = np.where(rng.random(n_texts) < 0.89, max_length, rng.integers(390, max_length, n_texts))
    ids = [rng.integers(0, 49152, n).tolist() for n in lengths]
    return ids, rng.integers(0, 2, n_texts), "synthetic"


class Clock:
    """Stamps on the device's timeline (CUDA events) or the host's (CPU)."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def stamp(self):
        if not self.cuda:
            return time.perf_counter()
        e = torch.cuda.Event(enable_timing=True)
        e.record()
        return e

    def ms(self, a, b) -> float:
        return a.elapsed_time(b) if self.cuda else 1e3 * (b - a)

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


def forward(net, ids, idx, device):
    """cache.py's forward: padding on the host, the decoder with every hidden state; host seconds of both."""
    t = time.perf_counter()
    input_ids, mask = pad_batch([ids[i] for i in idx], 0, "cpu")
    t1 = time.perf_counter()
    hs = net(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
             use_cache=False).hidden_states
    return hs, mask, (t1 - t, time.perf_counter() - t1)


def run_mode(net, mode: str, batches, ids, labels, device, dims) -> dict:
    """One pass over ``batches``: wall time, peak memory and per-phase milliseconds per batch: on the device
    (CUDA events: forward, stats, flush) and on the host (padding, issuing the forward pass and the stats)."""
    n_states, d, C = dims
    acc = None if mode == "bare" else StatsAccumulator(list(range(n_states)), d, C, device=device, precision=mode,
                                                       flush_every=10**9)  # flushed below, every 8 batches
    clock, marks = Clock(device), []
    phases = dict.fromkeys(("forward", "stats", "flush", "host_pad", "host_forward", "host_stats"), 0.0)
    with torch.inference_mode():
        hs, mask, _ = forward(net, ids, batches[0], device)  # warm-up
        if acc is not None:
            acc.add_batch(hs, mask, labels[batches[0]])
        del hs
        clock.sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        for b, idx in enumerate(batches):
            e0 = clock.stamp()
            hs, mask, host = forward(net, ids, idx, device)
            e1, t1 = clock.stamp(), time.perf_counter()
            if acc is not None:
                acc.add_batch(hs, mask, labels[idx])
            phases["host_stats"] += 1e3 * (time.perf_counter() - t1)
            e2 = clock.stamp()
            if acc is not None and ((b + 1) % FLUSH_EVERY == 0 or b == len(batches) - 1):
                acc.flush(check=b == len(batches) - 1)
            marks.append((e0, e1, e2, clock.stamp()))
            phases["host_pad"] += 1e3 * host[0]
            phases["host_forward"] += 1e3 * host[1]
            del hs
        clock.sync()
        seconds = time.perf_counter() - t
    for e0, e1, e2, e3 in marks:
        phases["forward"] += clock.ms(e0, e1)
        phases["stats"] += clock.ms(e1, e2)
        phases["flush"] += clock.ms(e2, e3)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"seconds": round(seconds, 3), "peak_GiB": None if peak is None else round(peak, 2),
            "phase_ms_per_batch": {k: round(v / len(batches), 3) for k, v in phases.items()}}


def gemm_profile(net, mode: str, batches, ids, labels, device, dims, n_batches: int = 3) -> dict:
    """torch.profiler over ``add_batch`` of a few batches: milliseconds in the statistic GEMMs and in all ops."""
    from torch.profiler import ProfilerActivity, profile

    n_states, d, C = dims
    acc = StatsAccumulator(list(range(n_states)), d, C, device=device, precision=mode)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    gemm = total = 0.0
    with torch.inference_mode():
        for idx in batches[:n_batches]:
            hs, mask, _ = forward(net, ids, idx, device)
            with profile(activities=activities) as prof:
                acc.add_batch(hs, mask, labels[idx])
                if device.type == "cuda":
                    torch.cuda.synchronize()
            for ev in prof.key_averages():
                if ev.device_type != torch.autograd.DeviceType.CPU:  # kernels: counted in their op's self time
                    continue
                us = ev.self_device_time_total if device.type == "cuda" else ev.self_cpu_time_total
                total += us / 1e3
                gemm += us / 1e3 if ev.key in GEMM_OPS else 0.0
    k = min(n_batches, len(batches))
    return {"stats_ops_ms_per_batch": round(total / k, 3), "gemm_ms_per_batch": round(gemm / k, 3),
            "gemm_share": round(gemm / total, 3) if total else None}


def rounding_check(device: torch.device, d: int = 1024, B: int = 8, T: int = 512) -> list[dict]:
    """Relative errors of XX, C0, C1 against the float64 formulas of SPEC §1, for bf16 states (random, offset
    like hidden states) summed at each precision on ``device`` and with the CPU's float32 GEMMs
    (``cpu_emulation``: the rounding emulated): whether bench/stats_precision.py's CPU numbers carry over to this
    device's tensor cores. On the device cuBLAS may not reduce split-K partial sums in bf16, except for bf16x3's
    second measurement (``device_bf16_reduction``, torch's default setting)."""
    H = (torch.randn(B, T, d, generator=torch.Generator().manual_seed(0)) + torch.linspace(-3, 3, d)).bfloat16()
    mask, labels = torch.ones(B, T, dtype=torch.long), torch.arange(B) % 2
    S = H.double().cumsum(1)
    x, pairs = S[:, -1] / T, S[:, :-1].reshape(-1, d)
    exact = {"XX": x.T @ x, "C0": pairs.T @ pairs, "C1": pairs.T @ H[:, 1:].double().reshape(-1, d)}
    matmul = torch.backends.cuda.matmul

    def errors(precision, dev, bf16_reduction=False):
        old, matmul.allow_bf16_reduced_precision_reduction = matmul.allow_bf16_reduced_precision_reduction, \
            bf16_reduction
        try:
            acc = StatsAccumulator([0], d, 2, device=dev, precision=precision)
            acc.add_batch([H.to(dev)], mask, labels)
            s = acc.to_stats().layers[0]
        finally:
            matmul.allow_bf16_reduced_precision_reduction = old
        return {k: float((getattr(s, k) - v).norm() / v.norm()) for k, v in exact.items()}

    rows = []
    for precision in PRECISIONS:
        got = {"device": errors(precision, device), "cpu_emulation": errors(precision, "cpu")}
        if precision == "bf16x3" and device.type == "cuda":
            got["device_bf16_reduction"] = errors(precision, device, bf16_reduction=True)
        rows.append({"precision": precision, **{f"{where}_rel_err_{k}": e for where, err in got.items()
                                                for k, e in err.items()}})
    return rows


def batchings(lengths: np.ndarray, batch_size: int, budgets: list[int]) -> dict[str, list[np.ndarray]]:
    """Named batch lists of the length-sorted texts (cache.py's order), fixed size then token budgets."""
    out = {f"{batch_size} texts": [b for s in length_sorted_shards(lengths, batch_size, len(lengths)) for b in s]}
    for n in budgets:
        out[f"{n} tokens"] = [b for s in length_sorted_shards(lengths, batch_size, len(lengths), n) for b in s]
    return out


def bench_model(args, out: Path, name: str, device: torch.device, sets: dict) -> list[dict]:
    t = time.perf_counter()
    net = build_decoder(SHAPES[name], device)
    n_states, d = net.config.num_hidden_layers + 1, net.config.hidden_size
    log(out, step="build", model=name, d=d, n_states=n_states, seconds=round(time.perf_counter() - t, 1))
    rows = []
    for set_name, (ids, labels, source) in sets.items():
        lengths = np.array([len(x) for x in ids])
        labels_t, dims = torch.as_tensor(labels), (n_states, d, int(labels.max()) + 1)
        for batching, batches in batchings(lengths, args.batch_size, args.budgets).items():
            base = {"model": name, "texts": set_name, "source": source, "batching": batching,
                    "n_texts": len(ids), "n_tokens": int(lengths.sum()), "n_batches": len(batches),
                    "padded_tokens": int(sum(len(b) * lengths[b].max() for b in batches))}
            if time.perf_counter() - T0 > args.deadline_s:
                log(out, step="skipped (deadline)", **base)
                continue
            bare = bare_ms = None
            run_mode(net, "bare", batches, ids, labels_t, device, dims)  # untimed: every batch shape seen once
            for mode in ["bare", *args.precisions]:
                try:
                    rec = run_mode(net, mode, batches, ids, labels_t, device, dims)
                except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:
                    log(out, step="measure", mode=mode, error=str(exc).splitlines()[0], **base)
                    continue
                finally:
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
                rec["tokens_per_s"] = round(base["n_tokens"] / rec["seconds"], 1)
                if mode == "bare":
                    bare, bare_ms = rec["seconds"], rec["phase_ms_per_batch"]["forward"]
                rec["ratio"] = round(bare / rec["seconds"], 3) if bare else None
                ph = rec["phase_ms_per_batch"]
                rec["device_ratio"] = round(bare_ms / (ph["forward"] + ph["stats"] + ph["flush"]), 3) \
                    if mode != "bare" and bare_ms and device.type == "cuda" else None
                log(out, step="measure", mode=mode, **base, **rec)
                rows.append({"mode": mode, **base, **rec})
            if batching == f"{args.profile_budget} tokens":
                for mode in args.precisions:
                    log(out, step="gemm profile", mode=mode, **base,
                        **gemm_profile(net, mode, batches, ids, labels_t, device, dims))
    del net
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def summary(rows: list[dict]) -> None:
    print(f"\n{'model':18} {'texts':6} {'batching':13} {'bare tok/s':>11} " +
          " ".join(f"{m:>20}" for m in PRECISIONS) + "   (ratio to bare: wall/device time, peak GiB)")
    keys = dict.fromkeys((r["model"], r["texts"], r["batching"]) for r in rows)
    for key in keys:
        by_mode = {r["mode"]: r for r in rows if (r["model"], r["texts"], r["batching"]) == key}
        bare = by_mode.get("bare", {}).get("tokens_per_s")
        cells = [(f"{by_mode[m]['ratio']}×/{by_mode[m].get('device_ratio') or '-'} {by_mode[m]['peak_GiB'] or '-'}"
                  if m in by_mode else "-") for m in PRECISIONS]
        print(f"{key[0]:18} {key[1]:6} {key[2]:13} {bare!s:>11} " + " ".join(f"{c:>20}" for c in cells))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu_cache_bench.jsonl"))
    p.add_argument("--models", default="qwen2-7b-random,qwen2-0.5b-random")
    p.add_argument("--n_short", type=int, default=2500, help="short texts (vader-movies train has 7029)")
    p.add_argument("--n_long", type=int, default=160, help="long texts, truncated to 512 tokens")
    p.add_argument("--batch_size", type=int, default=64, help="fixed batching: texts per batch")
    p.add_argument("--budgets", default="16384,4096,65536", help="token budgets (padded tokens per batch)")
    p.add_argument("--profile_budget", type=int, default=16384, help="batching profiled with torch.profiler")
    p.add_argument("--precisions", default=",".join(PRECISIONS))
    p.add_argument("--deadline_s", type=float, default=390, help="start no measurement after this many seconds")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny config, a few batches: checks this script")
    args = p.parse_args(argv)
    args.budgets = [int(x) for x in args.budgets.split(",") if x]
    args.precisions = args.precisions.split(",")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if args.smoke:
        for shape in SHAPES.values():
            shape.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=49152)
        args.n_short, args.n_long, args.batch_size, args.budgets, args.profile_budget = 48, 6, 16, [1024], 1024
        args.models = args.models.split(",")[-1]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    log(out, step="env", torch=torch.__version__, cuda=torch.version.cuda, smoke=args.smoke, git_commit=git_commit(),
        device=torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu", time=time.strftime("%F %T"))
    for row in rounding_check(device):
        log(out, step="rounding check", **row)
    rng = np.random.default_rng(0)
    sets = {"short": text_set("short", args.n_short, 512, rng), "long": text_set("long", args.n_long, 512, rng)}
    rows = []
    for name in args.models.split(","):
        rows += bench_model(args, out, name, device, sets)
    summary(rows)
    log(out, step="done", seconds=round(time.perf_counter() - T0, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
