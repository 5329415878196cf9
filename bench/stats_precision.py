"""Precision cost of statistic GEMMs on rounded inputs (cache.py ``--stats_precision tf32|bf16``) against float32,
on real hidden states.

One forward pass of an offline model over ``--n_texts`` texts of a labelled split (cache.py's batches); the same
hidden states feed one ``StatsAccumulator`` per precision and a float64 reference (SPEC §1's per-text formula).
On the CPU the rounding of the GEMM inputs is emulated (the numbers tensor cores produce, up to the order of the
float32 additions). Prints per precision the relative error (Frobenius norm) of XX, C0 and C1 against the float32
path (median and max over layers) and the NTPS difference per cell (layer × fraction, descending order,
``ntps.score``) against the float32 path and against float64: max |Δ| over the cells whose subspaces are unique,
and how many cells differ by more than 1e-4. JSON lines to ``--out``.

    python bench/stats_precision.py                      # smollm2-135m, vader-movies train, 1000 texts, CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ntps.accumulate import PRECISIONS, StatsAccumulator  # noqa: E402
from ntps.artifacts import LayerSums  # noqa: E402
from ntps.data import load_split  # noqa: E402
from ntps.models import load_model_and_tokenizer  # noqa: E402
from ntps.score import ntps_sweep, solve_layer  # noqa: E402
from ntps.text import decoder_of, length_sorted_shards, pad_batch, tokenize  # noqa: E402


def add_float64(ref: dict, hs, lengths, labels) -> None:
    """SPEC §1 per text in float64 (x = mean, s_t = prefix sums paired with h_{t+1})."""
    for layer, h in enumerate(hs):
        for n, (L, y) in enumerate(zip(lengths, labels)):
            H = h[n, :L].double()
            S = H.cumsum(0)
            x = S[-1] / L
            ref["XX"][layer] += torch.outer(x, x)
            ref["XY"][layer][:, y] += x
            ref["C0"][layer] += S[:-1].T @ S[:-1]
            ref["C1"][layer] += S[:-1].T @ H[1:]


def sums(args) -> tuple[dict, dict]:
    """({precision: {layer: LayerSums}} over the same hidden states, float64 included; run info)."""
    model, tok, info = load_model_and_tokenizer(args.model, dtype=args.dtype, device="cpu")
    data = load_split(args.dataset, "train", max_samples=args.n_texts, seed=0)
    ids, _ = tokenize(tok, data.texts, args.max_length)
    lengths = np.array([len(x) for x in ids])
    layers = list(range(info["n_states"]))
    accs = {p: StatsAccumulator(layers, info["hidden_size"], data.num_classes, precision=p) for p in PRECISIONS}
    d, C = info["hidden_size"], data.num_classes
    ref = {k: torch.zeros(len(layers), d, d, dtype=torch.float64) for k in ("XX", "C0", "C1")}
    ref["XY"] = torch.zeros(len(layers), d, C, dtype=torch.float64)
    labels, net, t = torch.as_tensor(data.labels), decoder_of(model), time.perf_counter()
    with torch.inference_mode():
        for idx in (b for s in length_sorted_shards(lengths, args.batch_size, len(ids)) for b in s):
            input_ids, mask = pad_batch([ids[i] for i in idx], tok.pad_token_id, "cpu")
            hs = net(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
            for acc in accs.values():
                acc.add_batch(hs, mask, labels[idx])
            add_float64(ref, hs, lengths[idx].tolist(), data.labels[idx].tolist())
    run = {"model": args.model, "dtype": str(info["dtype"]), "dataset": args.dataset, "n_texts": len(ids),
           "n_tokens": int(lengths.sum()), "d": info["hidden_size"], "n_states": len(layers),
           "seconds": round(time.perf_counter() - t, 1)}
    out = {p: acc.to_stats().layers for p, acc in accs.items()}
    out["float64"] = {i: LayerSums(ref["XX"][i], ref["XY"][i], ref["C0"][i], ref["C1"][i], None) for i in layers}
    return out, run


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def sweeps(layer_sums: dict) -> dict:
    return {i: ntps_sweep(solve_layer(s.XX, s.XY, s.C0, s.C1)) for i, s in layer_sums.items()}


def ntps_diffs(a: dict, b: dict, name: str) -> dict:
    """max |Δ NTPS| over the cells where both subspaces are unique, cells over 1e-4, layers whose ranks differ."""
    diffs = [np.abs(a[i]["ntps"] - b[i]["ntps"])[a[i]["unique"] & b[i]["unique"] & ~np.isnan(a[i]["ntps"])
                                                 & ~np.isnan(b[i]["ntps"])] for i in a]
    d = np.concatenate(diffs)
    return {f"ntps_vs_{name}_max_abs_diff": float(d.max(initial=0)), f"ntps_vs_{name}_cells_over_1e-4":
            int((d > 1e-4).sum()), f"ntps_vs_{name}_unique_cells": int(d.size),
            f"ntps_vs_{name}_layers_with_other_ranks": sum(int(a[i]["r_V"][0] != b[i]["r_V"][0] or a[i]["r_U"][0]
                                                              != b[i]["r_U"][0]) for i in a),
            f"ntps_vs_{name}_max_abs_diff_per_layer": [round(float(x.max(initial=0)), 8) for x in diffs]}


def compare(stats: dict, solved: dict, precision: str) -> dict:
    """Relative errors of the sums against float32 and NTPS differences against float32 and float64."""
    errs = {k: [rel_err(getattr(stats[precision][i], k), getattr(stats["float32"][i], k)) for i in stats["float32"]]
            for k in ("XX", "C0", "C1")}
    return {"precision": precision, **{f"rel_err_{k}_median": float(np.median(v)) for k, v in errs.items()},
            **{f"rel_err_{k}_max": float(np.max(v)) for k, v in errs.items()},
            **ntps_diffs(solved[precision], solved["float32"], "float32"),
            **ntps_diffs(solved[precision], solved["float64"], "float64")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--dataset", default="vader-movies")
    p.add_argument("--n_texts", type=int, default=1000)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_length", type=int, default=512)
    p.add_argument("--dtype", default="float32", help="forward-pass dtype (bfloat16: states as on a GPU)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "stats_precision.jsonl"))
    args = p.parse_args(argv)
    stats, run = sums(args)
    print(f"{run['model']} ({run['dtype']}, d={run['d']}, {run['n_states']} hidden states), {run['n_texts']} texts "
          f"of {run['dataset']} train, {run['n_tokens']} tokens; forward + {len(PRECISIONS)} accumulators "
          f"{run['seconds']}s")
    solved = {p: sweeps(s) for p, s in stats.items()}
    print("relative error of the sums vs float32 (median/max over layers); NTPS max |Δ| over unique cells and "
          "cells with |Δ| > 1e-4, vs float32 and vs float64")
    print(f"{'precision':9} {'XX':>17} {'C0':>17} {'C1':>17} {'NTPS vs float32':>20} {'NTPS vs float64':>20}")
    with open(args.out, "a") as f:
        for precision in PRECISIONS:
            r = compare(stats, solved, precision)
            print(f"{precision:9} " + " ".join(f"{r[f'rel_err_{k}_median']:8.1e}/{r[f'rel_err_{k}_max']:.1e}"
                                               for k in ("XX", "C0", "C1"))
                  + "".join(f" {r[f'ntps_vs_{n}_max_abs_diff']:10.1e} {r[f'ntps_vs_{n}_cells_over_1e-4']:4d}/"
                            f"{r[f'ntps_vs_{n}_unique_cells']}" for n in ("float32", "float64")))
            f.write(json.dumps({**run, **r, "time": time.strftime("%F %T"), "torch": torch.__version__}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
