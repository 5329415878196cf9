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

import logging
import sys
import time

import numpy as np
from tqdm.auto import tqdm

from ntps import cli
from ntps.api import BOUND_COLUMNS, SCORE_COLUMNS
from ntps.artifacts import load_stats
from ntps.cli import parse_float_list, parse_int_list, resolve_device
from ntps.io import environment_info, previous_result, write_csv, write_json
from ntps.linalg import DEFAULT_RCOND, ORDERS
from ntps.provenance import artifact_files, cover_warnings, file_digests
from ntps.score import DEFAULT_FRACTIONS, SHARE_COLUMNS, VARIANTS, sweep_layer

COLUMNS = SCORE_COLUMNS
log = logging.getLogger(__name__)


def parse_args(argv=None):
    p = cli.parser("K_sweep.py", __doc__)
    cli.add_artifact_args(p)
    g = p.add_argument_group("sweep")
    g.add_argument("--order", choices=ORDERS, default="descending",
                   help="descending = the paper's top eigenvectors; ascending = the authors' released "
                        "K_sweep (bottom eigenvectors, SPEC §2.1)")
    g.add_argument("--variant", choices=VARIANTS, default="raw",
                   help="raw = the reference ratio in raw coordinates; whitened = Σ-whitened NTPS̃ on the "
                        "top label directions with the excess-loss bound of SPEC §2.2")
    g.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                   help="comma-separated fractions f of the ranks: k = floor(f · r)")
    g.add_argument("--k", default=None,
                   help="comma-separated absolute k values (clamped to the ranks) instead of --fractions")
    cli.add_layers_arg(g)
    g.add_argument("--rcond", type=float, default=DEFAULT_RCOND,
                   help="relative tolerance: eigenvalues of Σ / C0 <= rcond · max are dropped")
    g.add_argument("--atol", type=float, default=None,
                   help="absolute tolerance instead of --rcond: eigenvalues of the N-normalised Σ/N and C0/N "
                        "(N = texts) <= atol are dropped, as in the authors' code (1e-8 reproduces it)")
    cli.add_device_arg(g, help="auto, cpu, cuda, cuda:1 ... (float64 everywhere)")
    cli.add_output_args(p, default=None, help="output root: results go to {output_dir}/{model}/{dataset}/{split} "
                        "of the artifact (default: beside the artifact)", overwrite="recompute even if results exist")
    cli.alias(p, "--data_path", "--stats_dir")
    cli.alias(p, "--save_path", "--output_dir")
    cli.alias(p, "--fraction_k", "--fractions", nargs="+", type=float, convert=lambda v: ",".join(map(str, v)))
    cli.ignore(p, "--sparse_k", "the authors' sparse-solver side list of k = 1..sparse_k-1; pass --k 1,2,... "
               "for absolute k")
    cli.authors_note(p, lambda a: a.order == "descending", "--order descending (the paper's top eigenvectors) is "
                     "our default; the authors' K_sweep takes ascending eigenvectors (pass --order ascending)")
    cli.authors_note(p, lambda a: a.atol is None, "--rcond is a relative tolerance here; the authors' code drops "
                     "eigenvalues <= 1e-8 (pass --atol 1e-8)")
    return cli.parse(p, argv)


def settings_of(args, meta: dict) -> dict:
    """The settings recorded in the JSON (the artifact's content: ``inputs``, beside them)."""
    return {"order": args.order, "variant": args.variant,
            "fractions": None if args.k else parse_float_list(args.fractions),
            "k": parse_int_list(args.k, flag="--k") if args.k else None,
            "layers": cli.select_layers(args.layers, meta["layers"], "the artifact"),
            "rcond": None if args.atol is not None else args.rcond, "atol": args.atol,
            # results of --atol made before it applied to the sums / N (issue 12.16) must not count as up to date
            **({"atol_on": "sums / n_texts"} if args.atol is not None else {})}


def check_pairs(meta: dict) -> None:
    """``ValueError`` when no text contributed a (prefix, next state) pair: C0 and C1 are zero."""
    if meta.get("n_pairs") == 0:
        raise ValueError(f"every text of the artifact ({meta.get('dataset')}/{meta.get('split')}, N = "
                         f"{meta.get('n_texts')}) is one token long after tokenisation (n_pairs = 0): texts of one "
                         "token add nothing to C0/C1, so the autoregressive problem is empty. Fix: use longer texts "
                         "(or a larger cache.py --max_length) and rerun cache.py")


def summarise(rows: list[dict], meta: dict, settings: dict) -> str:
    """A short table: per layer, NTPS at a few fractions next to chance, and the best cell."""
    text = _table(rows, meta, settings)
    last = (meta.get("n_states") or 0) - 1
    if any(r["layer"] == last for r in rows):
        text += f"\n(layer {last}, the last hidden state, is taken after the model's final norm)"
    return text


def _table(rows: list[dict], meta: dict, settings: dict) -> str:
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
    return cli.on_artifact(args, "K_sweep.py", settings_of, _sweep)


def _sweep(args, stats_dir, meta: dict, settings: dict, out_dir) -> dict:
    stem = f"ntps_{args.variant}_{args.order}"
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    inputs = file_digests(artifact_files(stats_dir, "meta.json", "stats.safetensors"))
    previous = previous_result(json_path, csv_path, settings, args.overwrite, inputs)
    if previous is not None:
        print(summarise(previous["rows"], meta, settings))
        return previous
    check_pairs(meta)
    device = resolve_device(args.device)
    rows, t0 = [], time.perf_counter()
    for layer in tqdm(settings["layers"], desc="K_sweep layers", unit="layer", file=sys.stderr):
        s = load_stats(stats_dir, layers=[layer])
        sums = s.layers[layer]
        res = sweep_layer(sums, variant=args.variant, order=args.order, rcond=args.rcond, atol=args.atol,
                          n_texts=s.n_texts, device=device, fractions=settings["fractions"], ks=settings["k"])
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
    warnings = cover_warnings(meta.get("n_texts"), meta.get("d"), log)
    result = {"settings": settings, "inputs": inputs, "warnings": warnings, "rows": rows,
              "seconds": round(elapsed, 3), "device": str(device), "stats_dir": str(stats_dir),
              "artifact": {k: meta.get(k) for k in ("model", "revision", "dataset", "split", "n_texts", "d",
                                                   "num_classes", "dtype", "fingerprint")},
              "environment": environment_info()}
    write_json(json_path, result)
    write_csv(csv_path, rows, COLUMNS + (BOUND_COLUMNS + SHARE_COLUMNS if args.variant == "whitened" else []))
    print(summarise(rows, meta, settings))
    log.info(f"{len(settings['layers'])} layers in {elapsed:.1f}s on {device}; wrote {csv_path} and {json_path}")
    return result


def run(argv=None) -> None:
    """``python K_sweep.py`` and the console command ``ntps-sweep``: :func:`main` behind :func:`ntps.cli.run`
    (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "K_sweep.py", argv)


if __name__ == "__main__":
    run()
