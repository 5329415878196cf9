"""Every training-free score of one statistics artifact, one row per layer: baselines next to NTPS.

Reads the artifact written by cache.py (SPEC §1) and writes, beside it, ``scores.csv`` and
``scores.json`` (atomically). Per layer, all from the same sums, with one eigen-solve
(:func:`ntps.score.solve_layer`, descending order = the paper's top eigenvectors) shared by both
NTPS variants:

========================  ===================================================================
column                    meaning
========================  ===================================================================
layer, d, n_texts         hidden-state index (0 = embedding output), width, N
label_rank, r_U, r_V      rank of M Mᵀ on range(Σ), ranks of Σ and C0 (SPEC §2, §2.0)
logme, h_score            LogME and H-score (:mod:`ntps.baselines`; higher = better transfer)
ls_mse, ridge_mse         in-sample MSE of StandardScaler + LinearRegression / Ridge(``--ridge_alpha``)
                          on one-hot targets (lower = better)
ntps_raw_best             max over the sweep fractions (``--sweep_fractions``, default 0.05..0.95)
                          of the raw NTPS; ``ntps_raw_best_fraction`` the smallest f reaching it.
                          The label-clamped raw NTPS grows with f (nested V), so this is usually
                          the largest f: read it next to ``ntps_margin_best``
ntps_margin_best          max over the sweep fractions of NTPS − chance, and its fraction
                          ``ntps_margin_best_fraction``
and for every F of ``--fractions`` (default 0.05, 0.25, 0.5; F written with ``%g``):
ntps_raw_f{F}             raw-coordinate NTPS at k = floor(F · r) (K_sweep.py ``--variant raw``)
chance_f{F}               its chance level k_V / d
ntps_minus_chance_f{F}    ntps_raw_f{F} − chance_f{F}
unique_f{F}               both subspaces uniquely defined at that k (SPEC §2.0)
ntps_whitened_f{F}        Σ-whitened NTPS̃ on the top-label_rank directions (SPEC §2.2)
excess_f{F}               excess least-squares loss Δ(V) of the top-k_V autoregressive encoder,
lower_f{F}, upper_f{F}    and the bound λ_r r (1 − NTPS̃) ≤ Δ ≤ λ_1 r (1 − NTPS̃), all per text
========================  ===================================================================

Undefined values (k = 0, a dependent prefix, a baseline that could not be computed) are empty in
the CSV and null in the JSON. ``scores.json`` also holds the settings, a subset of the artifact's
meta.json, the environment (versions, git commit, command) and any warnings. A rerun with the same
settings is a no-op; other settings need ``--overwrite``. compare_scores.py ranks these scores
across datasets.

Example:
    python scores.py --stats_dir outputs/Qwen__Qwen2-0.5B/rotten_tomatoes/train
    python scores.py --stats_dir outputs/smollm2-135m/vader-movies/train --layers 0,-1 --fractions 0.1,0.5
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ntps.artifacts import ArtifactError, load_stats, read_meta
from ntps.baselines import all_baselines
from ntps.cli import (
    DEFAULT_DATASET,
    DEFAULT_MODEL,
    DEFAULT_OUTPUT_DIR,
    HelpFormatter,
    parse_float_list,
    parse_int_list,
    resolve_device,
)
from ntps.io import environment_info, previous_result, slugify, write_csv, write_json
from ntps.linalg import DEFAULT_RCOND
from ntps.score import DEFAULT_FRACTIONS, ntps_sweep, solve_layer, whitened_sweep

DEFAULT_SCORE_FRACTIONS = (0.05, 0.25, 0.5)
BASELINES = ["logme", "h_score", "ls_mse", "ridge_mse"]
LEAD_COLUMNS = ["layer", "d", "n_texts", "label_rank", "r_U", "r_V", *BASELINES, "ntps_raw_best",
                "ntps_raw_best_fraction", "ntps_margin_best", "ntps_margin_best_fraction"]
PER_FRACTION = ["ntps_raw", "chance", "ntps_minus_chance", "unique", "ntps_whitened", "excess", "lower",
                "upper"]
OUT_STEM = "scores"
ARTIFACT_KEYS = ("model", "revision", "dataset", "split", "n_texts", "d", "num_classes", "dtype",
                 "max_length", "max_samples", "fingerprint")


def ftag(f: float) -> str:
    """Column suffix of a fraction: 0.05 -> 'f0.05', 0.5 -> 'f0.5'."""
    return f"f{f:g}"


def columns_for(fractions) -> list[str]:
    return LEAD_COLUMNS + [f"{name}_{ftag(f)}" for f in fractions for name in PER_FRACTION]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    default_dir = Path(DEFAULT_OUTPUT_DIR) / slugify(DEFAULT_MODEL) / slugify(DEFAULT_DATASET) / "train"
    p.add_argument("--stats_dir", default=str(default_dir),
                   help="artifact directory written by cache.py (holds stats.safetensors and meta.json)")
    p.add_argument("--output_dir", default=None, help="where to write scores.csv/json; None = --stats_dir")
    p.add_argument("--layers", default="all", help="'all', or e.g. '0,6,12', '10-20', '-1' (last)")
    p.add_argument("--fractions", default=",".join(f"{f:g}" for f in DEFAULT_SCORE_FRACTIONS),
                   help="fixed fractions F reported as *_f{F} columns: k = floor(F · r)")
    p.add_argument("--sweep_fractions", default=",".join(f"{f:g}" for f in DEFAULT_FRACTIONS),
                   help="fractions over which ntps_raw_best and ntps_margin_best are maximised "
                        "(--fractions are added)")
    p.add_argument("--ridge_alpha", type=float, default=1.0, help="penalty of the ridge probe (ridge_mse)")
    p.add_argument("--rcond", type=float, default=DEFAULT_RCOND,
                   help="relative tolerance of the NTPS eigen-solves (eigenvalues of Σ / C0 <= rcond · max "
                        "dropped); the baselines use their own documented default")
    p.add_argument("--device", default="auto",
                   help="auto, cpu, cuda, cuda:1 ... for the NTPS eigen-solves (float64); baselines run on "
                        "CPU")
    p.add_argument("--overwrite", action="store_true", help="recompute even if results exist")
    return p.parse_args(argv)


def _fractions(text: str, name: str) -> list[float]:
    try:
        fr = parse_float_list(text)
    except ValueError as e:
        raise SystemExit(f"scores.py: {name} must be comma-separated numbers, got {text!r}") from e
    if not fr or any(not (0 < f <= 1) for f in fr):
        raise SystemExit(f"scores.py: {name} must be a non-empty list of fractions in (0, 1], got {text!r}")
    return sorted(set(fr))


def settings_of(args, meta: dict) -> dict:
    n_layers = len(meta["layers"]) and max(meta["layers"]) + 1
    try:
        layers = parse_int_list(args.layers, n_layers) or list(meta["layers"])
    except ValueError as e:
        raise SystemExit(f"scores.py: --layers {args.layers}: {e}") from e
    fractions = _fractions(args.fractions, "--fractions")
    sweep = _fractions(args.sweep_fractions, "--sweep_fractions")
    return {"order": "descending", "fractions": fractions,
            "sweep_fractions": sorted(set(sweep) | set(fractions)),
            "layers": layers, "ridge_alpha": float(args.ridge_alpha), "rcond": args.rcond,
            "stats_fingerprint": meta.get("fingerprint")}


def _clean(v):
    """numpy scalar -> JSON/CSV-friendly Python value; NaN -> None."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    v = float(v)
    return None if math.isnan(v) else v


def _index_of(fractions: np.ndarray, f: float) -> int:
    return int(np.argmin(np.abs(fractions - f)))


def layer_row(layer: int, sums, class_counts, n_texts: int, settings: dict,
              device) -> tuple[dict, str | None]:
    """One row of scores.csv (see the module docstring) and a warning when the baselines failed."""
    sol = solve_layer(sums.XX, sums.XY, sums.C0, sums.C1, rcond=settings["rcond"], order="descending",
                      device=device)
    raw = ntps_sweep(sol, fractions=settings["sweep_fractions"])
    white = whitened_sweep(sol, n_texts=float(n_texts), fractions=settings["fractions"])
    row = {"layer": layer, "d": sol.d, "n_texts": int(n_texts), "label_rank": sol.label_rank,
           "r_U": sol.U.rank, "r_V": sol.V.rank}
    warning = None
    try:
        row.update(all_baselines(sums, class_counts, n_texts, ridge_alpha=settings["ridge_alpha"]))
    except ValueError as e:  # e.g. an artifact whose sum_x or counts disagree with XY
        warning = f"layer {layer}: baselines not computed: {e}"
        row.update(dict.fromkeys(BASELINES, math.nan))
    score, chance, fr = raw["ntps"], raw["chance"], raw["fraction"]
    margin = score - chance
    for name, arr in (("ntps_raw_best", score), ("ntps_margin_best", margin)):
        if np.all(np.isnan(arr)):
            row[name], row[f"{name}_fraction"] = math.nan, math.nan
        else:
            i = int(np.nanargmax(arr))  # first (smallest) fraction reaching the maximum
            row[name], row[f"{name}_fraction"] = arr[i], fr[i]
    for f in settings["fractions"]:
        i, j, t = _index_of(fr, f), _index_of(white["fraction"], f), ftag(f)
        row[f"ntps_raw_{t}"], row[f"chance_{t}"] = score[i], chance[i]
        row[f"ntps_minus_chance_{t}"], row[f"unique_{t}"] = margin[i], raw["unique"][i]
        row[f"ntps_whitened_{t}"] = white["ntps"][j]
        for key in ("excess", "lower", "upper"):
            row[f"{key}_{t}"] = white[key][j]
    return {k: _clean(v) for k, v in row.items()}, warning


def _fmt(v, spec=".3f"):
    return "-" if v is None else format(v, spec)


def summarise(rows: list[dict], meta: dict, settings: dict) -> str:
    f = settings["fractions"][len(settings["fractions"]) // 2]
    t = ftag(f)
    lines = [f"scores for {meta.get('model')} on {meta.get('dataset')}/{meta.get('split')}, "
             f"N = {meta.get('n_texts')}, d = {meta.get('d')}",
             f"{'layer':>5} {'logme':>8} {'h_score':>8} {'ls_mse':>8} {'ridge':>8} {'ntps_best':>9} "
             f"{'ntps@' + format(f, 'g'):>9} {'chance':>7} {'whitened':>8} {'lab_r':>5}"]
    for r in rows:
        lines.append(f"{r['layer']:>5} {_fmt(r['logme']):>8} {_fmt(r['h_score']):>8} "
                     f"{_fmt(r['ls_mse'], '.4f'):>8} {_fmt(r['ridge_mse'], '.4f'):>8} "
                     f"{_fmt(r['ntps_raw_best']):>9} {_fmt(r['ntps_raw_' + t]):>9} "
                     f"{_fmt(r['chance_' + t]):>7} {_fmt(r['ntps_whitened_' + t]):>8} {r['label_rank']:>5}")
    return "\n".join(lines)


def main(args) -> dict:
    stats_dir = Path(args.stats_dir)
    try:
        meta = read_meta(stats_dir)
    except ArtifactError as e:
        raise SystemExit(f"scores.py: {e}") from e
    settings = settings_of(args, meta)
    out_dir = Path(args.output_dir or stats_dir)
    json_path, csv_path = out_dir / f"{OUT_STEM}.json", out_dir / f"{OUT_STEM}.csv"
    previous = previous_result(json_path, csv_path, settings, args.overwrite, "scores.py")
    if previous is not None:
        print(summarise(previous["rows"], meta, settings))
        return previous
    device = resolve_device(args.device)
    print(f"[scores] {stats_dir}: {len(settings['layers'])} layers, fractions {settings['fractions']}, "
          f"ridge_alpha {settings['ridge_alpha']}, device {device}", file=sys.stderr)
    rows, warnings, t0 = [], [], time.perf_counter()
    for layer in tqdm(settings["layers"], desc="scores layers", unit="layer", file=sys.stderr):
        try:
            s = load_stats(stats_dir, layers=[layer])
        except ArtifactError as e:
            raise SystemExit(f"scores.py: {e}") from e
        row, warning = layer_row(layer, s.layers[layer], s.class_counts, s.n_texts, settings, device)
        if warning:
            print(f"[scores] WARNING {warning}", file=sys.stderr)
            warnings.append(warning)
        rows.append(row)
    elapsed = time.perf_counter() - t0
    columns = columns_for(settings["fractions"])
    result = {"settings": settings, "columns": columns, "rows": rows, "warnings": warnings,
              "seconds": round(elapsed, 3), "device": str(device), "stats_dir": str(stats_dir),
              "artifact": {k: meta.get(k) for k in ARTIFACT_KEYS}, "environment": environment_info()}
    write_json(json_path, result)
    write_csv(csv_path, rows, columns)
    print(summarise(rows, meta, settings))
    print(f"[scores] {len(rows)} layers in {elapsed:.1f}s on {device}; wrote {csv_path} and {json_path}")
    return result


if __name__ == "__main__":
    main(parse_args())
