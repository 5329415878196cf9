"""Solve the generalized eigenproblems of every layer and write NTPS per layer × fraction.

Reads the statistics artifact written by cache.py (SPEC §1) and writes, beside it,
``ntps_{variant}_{order}.json`` and ``.csv``: one row per layer and fraction (or absolute k)
with the score, its chance level k_V/d, the ranks r_U, r_V, the label rank, k_U, k_V and
whether both subspaces are uniquely defined (SPEC §2.0).

Example:
    python K_sweep.py                                   # the embedded default artifact
    python K_sweep.py --stats_dir outputs/Qwen__Qwen2-0.5B/rotten_tomatoes/train --order ascending
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ntps.artifacts import ArtifactError, load_stats, read_meta
from ntps.cli import (
    DEFAULT_DATASET,
    DEFAULT_MODEL,
    DEFAULT_OUTPUT_DIR,
    HelpFormatter,
    parse_float_list,
    parse_int_list,
    resolve_device,
    run,
)
from ntps.io import environment_info, previous_result, slugify, write_csv, write_json
from ntps.linalg import DEFAULT_RCOND, ORDERS
from ntps.score import DEFAULT_FRACTIONS, VARIANTS, ntps_sweep, solve_layer, whitened_sweep

COLUMNS = ["layer", "fraction", "k", "k_U_nominal", "k_U", "k_V", "r_U", "r_V", "label_rank", "ntps",
           "chance", "unique"]
BOUND_COLUMNS = ["excess", "lower", "upper"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    default_dir = Path(DEFAULT_OUTPUT_DIR) / slugify(DEFAULT_MODEL) / slugify(DEFAULT_DATASET) / "train"
    p.add_argument("--stats_dir", default=str(default_dir),
                   help="artifact directory written by cache.py (holds stats.safetensors and meta.json)")
    p.add_argument("--output_dir", default=None, help="where to write the results (default: --stats_dir)")
    p.add_argument("--order", choices=ORDERS, default="descending",
                   help="descending = the paper's top eigenvectors; ascending = the authors' released "
                        "K_sweep (bottom eigenvectors, SPEC §2.1)")
    p.add_argument("--variant", choices=VARIANTS, default="raw",
                   help="raw = the reference ratio in raw coordinates; whitened = Σ-whitened NTPS̃ on the "
                        "top label directions with the excess-loss bound of SPEC §2.2")
    p.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                   help="comma-separated fractions f of the ranks: k = floor(f · r)")
    p.add_argument("--k", default=None,
                   help="comma-separated absolute k values (clamped to the ranks) instead of --fractions")
    p.add_argument("--layers", default="all", help="'all', or e.g. '0,6,12', '10-20', '-1' (last)")
    p.add_argument("--rcond", type=float, default=DEFAULT_RCOND,
                   help="relative tolerance: eigenvalues of Σ / C0 <= rcond · max are dropped")
    p.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance instead of --rcond (1e-8 reproduces the authors' code)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ... (float64 everywhere)")
    p.add_argument("--overwrite", action="store_true", help="recompute even if results exist")
    return p.parse_args(argv)


def settings_of(args, meta: dict) -> dict:
    return {"order": args.order, "variant": args.variant,
            "fractions": None if args.k else parse_float_list(args.fractions),
            "k": parse_int_list(args.k) if args.k else None,
            "layers": parse_int_list(args.layers, len(meta["layers"]) and max(meta["layers"]) + 1) or meta["layers"],
            "rcond": None if args.atol is not None else args.rcond, "atol": args.atol,
            "stats_fingerprint": meta.get("fingerprint")}


def summarise(rows: list[dict], meta: dict, settings: dict) -> str:
    """A short table: per layer, NTPS at a few fractions next to chance, and the best cell."""
    ok = [r for r in rows if r["ntps"] is not None]
    if not ok:
        return "no finite scores (ranks too small for these fractions?)"
    key = "fraction" if settings["fractions"] else "k"
    cols = sorted({r[key] for r in ok})
    show = [cols[i] for i in sorted({0, len(cols) // 4, len(cols) // 2, 3 * len(cols) // 4, len(cols) - 1})]
    lines = [f"NTPS ({settings['variant']}, {settings['order']}) for {meta.get('model')} on "
             f"{meta.get('dataset')}/{meta.get('split')}, N = {meta.get('n_texts')}, d = {meta.get('d')}, "
             f"label rank = {ok[0]['label_rank']}",
             f"{'layer':>5} " + " ".join(f"{key[0]}={c:<11g}" for c in show) + "   (score / chance)"]
    by_layer: dict[int, dict] = {}
    for r in ok:
        by_layer.setdefault(r["layer"], {})[r[key]] = r
    for layer, cells in sorted(by_layer.items()):
        lines.append(f"{layer:>5} " + " ".join(
            f"{cells[c]['ntps']:.3f}/{cells[c]['chance']:.3f} " if c in cells else f"{'-':<13}" for c in show))
    best = max(ok, key=lambda r: r["ntps"] - r["chance"])
    lines.append(f"largest margin over chance: layer {best['layer']}, {key} {best[key]:g}: NTPS {best['ntps']:.4f} "
                 f"vs chance {best['chance']:.4f} (k_U={best['k_U']}, k_V={best['k_V']})")
    return "\n".join(lines)


def main(args) -> dict:
    stats_dir = Path(args.stats_dir)
    try:
        meta = read_meta(stats_dir)
    except ArtifactError as e:
        sys.exit(f"K_sweep.py: {e}")
    settings = settings_of(args, meta)
    out_dir = Path(args.output_dir or stats_dir)
    stem = f"ntps_{args.variant}_{args.order}"
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    previous = previous_result(json_path, csv_path, settings, args.overwrite, "K_sweep.py")
    if previous is not None:
        print(summarise(previous["rows"], meta, settings))
        return previous
    device = resolve_device(args.device)
    rows, t0 = [], time.perf_counter()
    for layer in tqdm(settings["layers"], desc="K_sweep layers", unit="layer", file=sys.stderr):
        try:
            s = load_stats(stats_dir, layers=[layer])
        except ArtifactError as e:
            sys.exit(f"K_sweep.py: {e}")
        sums = s.layers[layer]
        sol = solve_layer(sums.XX, sums.XY, sums.C0, sums.C1, rcond=args.rcond, atol=args.atol,
                          order=args.order, device=device)
        kw = {"fractions": settings["fractions"], "ks": settings["k"]}
        res = (ntps_sweep(sol, **kw) if args.variant == "raw"
               else whitened_sweep(sol, n_texts=float(s.n_texts), **kw))
        for i in range(len(res["k_V"])):
            row = {"layer": layer}
            for key, arr in res.items():
                v = arr[i]
                if key == "unique":
                    row[key] = bool(v)
                elif np.issubdtype(type(v), np.integer):
                    row[key] = int(v)
                else:  # NaN (undefined: k = 0, or a dependent prefix) is written as null / empty
                    row[key] = None if np.isnan(v) else float(v)
            rows.append(row)
    elapsed = time.perf_counter() - t0
    result = {"settings": settings, "rows": rows, "seconds": round(elapsed, 3), "device": str(device),
              "stats_dir": str(stats_dir),
              "artifact": {k: meta.get(k) for k in ("model", "revision", "dataset", "split", "n_texts", "d",
                                                   "num_classes", "dtype", "fingerprint")},
              "environment": environment_info()}
    write_json(json_path, result)
    write_csv(csv_path, rows, COLUMNS + (BOUND_COLUMNS if args.variant == "whitened" else []))
    print(summarise(rows, meta, settings))
    print(f"[K_sweep] {len(settings['layers'])} layers in {elapsed:.1f}s on {device}; wrote {csv_path} and {json_path}")
    return result


if __name__ == "__main__":
    run(main, parse_args, "K_sweep.py")
