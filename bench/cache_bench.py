"""Throughput of cache.py's step against the bare forward pass, on the same batches of real text.

(a) the bare forward pass of the decoder returning all hidden states, (b) cache.py's full step
(the same forward pass + the streaming accumulation of SPEC §1 over every layer), interleaved
batch by batch in one run so that machine load affects both alike. Prints tokens/s of each, the
ratio b/a (target >= 0.75 with all 31 hidden-state layers of smollm2-135m), peak memory, and the
padding overhead (computed / real tokens) of cache.py's length-sorted batching on the whole split.

    python bench/cache_bench.py                        # smollm2-135m, vader-movies, CPU
    python bench/cache_bench.py --device cuda --dtype bfloat16 --n_texts 4096 --batch_size 64
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntps.accumulate import StatsAccumulator  # noqa: E402
from ntps.cli import resolve_device  # noqa: E402
from ntps.data import load_split  # noqa: E402
from ntps.models import load_model_and_tokenizer  # noqa: E402
from ntps.text import decoder_of, length_sorted_shards, pad_batch, tokenize  # noqa: E402


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dataset", default="vader-movies")
    p.add_argument("--n_texts", type=int, default=384, help="texts timed (a seeded stratified subset)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    model, tok, info = load_model_and_tokenizer(args.model, dtype=args.dtype, device=device)
    net = decoder_of(model)
    full = load_split(args.dataset, "train")
    ids_all, _ = tokenize(tok, full.texts, args.max_length)
    lengths_all = np.array([len(x) for x in ids_all])
    shards = length_sorted_shards(lengths_all, args.batch_size, shard_size=len(lengths_all))
    padded = sum(len(b) * lengths_all[b].max() for s in shards for b in s)
    overhead = padded / lengths_all.sum()

    data = load_split(args.dataset, "train", max_samples=args.n_texts, seed=0)
    ids, _ = tokenize(tok, data.texts, args.max_length)
    lengths = np.array([len(x) for x in ids])
    batches = [b for s in length_sorted_shards(lengths, args.batch_size, len(ids)) for b in s]
    layers = list(range(info["n_states"]))
    acc = StatsAccumulator(layers, info["hidden_size"], data.num_classes, device=device)
    labels = torch.as_tensor(data.labels)
    t_a = t_b = c_a = c_b = 0.0  # wall and process-CPU seconds (CPU time is robust to other load)
    with torch.inference_mode():
        warm = pad_batch([ids[i] for i in batches[0]], tok.pad_token_id, device)
        acc.add_batch(net(input_ids=warm[0], attention_mask=warm[1], output_hidden_states=True).hidden_states,
                      warm[1], labels[batches[0]])
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        peak = {}
        for idx in batches:
            x, mask = pad_batch([ids[i] for i in idx], tok.pad_token_id, "cpu")  # as cache.py: host mask
            x, mask_dev = x.to(device), mask.to(device)
            sync(device)
            t, c = time.perf_counter(), time.process_time()
            net(input_ids=x, attention_mask=mask_dev, output_hidden_states=True, use_cache=False)
            sync(device)
            t_a, c_a = t_a + time.perf_counter() - t, c_a + time.process_time() - c
            t, c = time.perf_counter(), time.process_time()
            hs = net(input_ids=x, attention_mask=mask_dev, output_hidden_states=True, use_cache=False).hidden_states
            acc.add_batch(hs, mask, labels[idx])
            sync(device)
            t_b, c_b = t_b + time.perf_counter() - t, c_b + time.process_time() - c
        if device.type == "cuda":
            peak["cuda_peak_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    tokens = int(lengths.sum())
    totals_mib = sum(t.numel() * t.element_size() for t in (acc.XX, acc.XY, acc.C0, acc.C1, acc.sum_x)) / 2**20
    print(f"model {args.model} ({info['n_states']} hidden-state layers, d={info['hidden_size']}, {info['dtype']}) on "
          f"{device}, torch threads {torch.get_num_threads()}; {len(data)} texts of {args.dataset}, "
          f"{tokens} real tokens in {len(batches)} batches of {args.batch_size}")
    print(f"(a) bare forward + hidden states : {tokens / t_a:9.1f} tokens/s ({t_a:.1f}s)")
    print(f"(b) cache.py step (all layers)   : {tokens / t_b:9.1f} tokens/s ({t_b:.1f}s)")
    print(f"ratio b/a = {t_a / t_b:.3f} wall, {c_a / c_b:.3f} process CPU time   (target >= 0.75)")
    print(f"padding overhead on the whole {args.dataset} train split ({len(lengths_all)} texts, batch "
          f"{args.batch_size}): {overhead:.4f} computed/real tokens   (target < 1.1)")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak process RSS {rss:.2f} GiB; float64 totals {totals_mib:.0f} MiB"
          + "".join(f"; {k} {v:.2f}" for k, v in peak.items()))


if __name__ == "__main__":
    main()
