"""The training-free baselines of one statistics artifact, one row per layer (NTPS itself: K_sweep.py).

Reads the artifact written by cache.py (SPEC §1) and writes, beside it, ``scores.csv`` and
``scores.json`` (atomically). Per layer, all from the same sums (:mod:`ntps.baselines`):

========================  ===================================================================
column                    meaning
========================  ===================================================================
layer, d, n_texts         hidden-state index (0 = embedding output), width, N
logme, h_score            LogME and H-score (higher = better transfer)
ls_mse, ridge_mse         in-sample MSE of StandardScaler + LinearRegression / Ridge(``--ridge_alpha``)
                          on one-hot targets (lower = better)
effective_rank            label-free: exp(entropy) of the feature covariance's spectrum (:mod:`ntps.spectral`)
========================  ===================================================================

A baseline that cannot be computed (e.g. an artifact whose sum_x or class counts disagree with XY)
is empty in the CSV and null in the JSON, with a warning. ``scores.json`` also holds the settings,
a subset of the artifact's meta.json, the environment (versions, git commit, command) and the
warnings. A rerun with the same settings is a no-op; other settings need ``--overwrite``.
collect.py puts these columns into its long table next to the NTPS of K_sweep.py, and analyze.py
evaluates them all the same way.

Example:
    python scores.py                                      # the embedded default artifact
    python scores.py --model Qwen/Qwen2-0.5B --dataset rotten_tomatoes
    python scores.py --stats_dir outputs/smollm2-135m/vader-movies/train --layers 0,-1
"""

from __future__ import annotations

import logging
import math
import sys
import time

from tqdm.auto import tqdm

from ntps import cli
from ntps.api import BASELINE_COLUMNS
from ntps.artifacts import load_stats
from ntps.baselines import LOGME_CONVENTIONS, all_baselines
from ntps.io import environment_info, previous_result, write_csv, write_json
from ntps.provenance import artifact_files, cover_warnings, file_digests
from ntps.report import fmt
from ntps.spectral import SPECTRAL, spectral_scores

log = logging.getLogger(__name__)

COLUMNS = BASELINE_COLUMNS
BASELINES = [c for c in COLUMNS[3:] if c not in SPECTRAL]  # logme, h_score, ls_mse, ridge_mse
OUT_STEM = "scores"
ARTIFACT_KEYS = ("model", "revision", "dataset", "split", "n_texts", "d", "num_classes", "dtype",
                 "max_length", "max_samples", "fingerprint")


def parse_args(argv=None):
    p = cli.parser("scores.py", __doc__)
    g = cli.add_artifact_args(p)
    cli.add_layers_arg(g)
    g.add_argument("--ridge_alpha", type=float, default=1.0, help="penalty of the ridge probe (ridge_mse)")
    g.add_argument("--logme_convention", choices=LOGME_CONVENTIONS, default="paper",
                   help="paper = the evidence as the paper defines it; reference = thuml/LogME's code (differs "
                        "when N <= d: ntps.baselines.logme)")
    cli.add_output_args(p, default=None, help="output root: results go to {output_dir}/{model}/{dataset}/{split} "
                        "of the artifact (default: beside the artifact)", overwrite="recompute even if results exist")
    cli.alias(p, "--data_path", "--stats_dir")
    return cli.parse(p, argv)


def settings_of(args, meta: dict) -> dict:
    """The settings recorded in scores.json (the artifact's content: ``inputs``, beside them); ``ValueError``
    for layers outside the artifact or an artifact of fewer than two classes."""
    if int(meta.get("num_classes") or 0) < 2:
        raise ValueError(f"the artifact ({meta.get('dataset')}/{meta.get('split')}) has {meta.get('num_classes')} "
                         "class(es): the baselines need at least two. Fix: check --label_column and rerun cache.py")
    settings = {"layers": cli.select_layers(args.layers, meta["layers"], "the artifact"),
                "ridge_alpha": float(args.ridge_alpha)}
    if args.logme_convention != "paper":  # recorded only when not the default, so earlier results stay valid
        settings["logme_convention"] = args.logme_convention
    return settings


def layer_row(layer: int, sums, class_counts, n_texts: int, ridge_alpha: float,
              logme_convention: str = "paper") -> tuple[dict, str | None]:
    """One row of scores.csv and a warning when the baselines could not be computed."""
    row = {"layer": layer, "d": int(sums.XX.shape[0]), "n_texts": int(n_texts), **spectral_scores(sums, n_texts)}
    try:
        row.update(all_baselines(sums, class_counts, n_texts, ridge_alpha=ridge_alpha,
                                 logme_convention=logme_convention))
    except ValueError as e:  # e.g. an artifact whose sum_x or counts disagree with XY
        row.update(dict.fromkeys(BASELINES))
        return row, f"layer {layer}: baselines not computed: {e}"
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}, None


def summarise(rows: list[dict], meta: dict) -> str:
    lines = [f"baselines for {meta.get('model')} on {meta.get('dataset')}/{meta.get('split')}, "
             f"N = {meta.get('n_texts')}, d = {meta.get('d')}",
             f"{'layer':>5} {'logme':>8} {'h_score':>8} {'ls_mse':>8} {'ridge':>8}"]
    for r in rows:
        lines.append(f"{r['layer']:>5} {fmt(r['logme']):>8} {fmt(r['h_score']):>8} "
                     f"{fmt(r['ls_mse'], '.4f'):>8} {fmt(r['ridge_mse'], '.4f'):>8}")
    return "\n".join(lines)


def main(args) -> dict:
    return cli.on_artifact(args, "scores.py", settings_of, _scores)


def _scores(args, stats_dir, meta: dict, settings: dict, out_dir) -> dict:
    json_path, csv_path = out_dir / f"{OUT_STEM}.json", out_dir / f"{OUT_STEM}.csv"
    inputs = file_digests(artifact_files(stats_dir, "meta.json", "stats.safetensors"))
    previous = previous_result(json_path, csv_path, settings, args.overwrite, inputs)
    if previous is not None:
        print(summarise(previous["rows"], meta))
        return previous
    log.info("%s: %d layers, ridge_alpha %g", stats_dir, len(settings["layers"]), settings["ridge_alpha"])
    rows, t0 = [], time.perf_counter()
    warnings = cover_warnings(meta.get("n_texts"), meta.get("d"), log)
    for layer in tqdm(settings["layers"], desc="scores layers", unit="layer", file=sys.stderr):
        s = load_stats(stats_dir, layers=[layer])
        row, warning = layer_row(layer, s.layers[layer], s.class_counts, s.n_texts, settings["ridge_alpha"],
                                 args.logme_convention)
        if warning:
            log.warning(warning)
            warnings.append(warning)
        rows.append(row)
    elapsed = time.perf_counter() - t0
    result = {"settings": settings, "inputs": inputs, "columns": COLUMNS, "rows": rows, "warnings": warnings,
              "seconds": round(elapsed, 3), "stats_dir": str(stats_dir),
              "artifact": {k: meta.get(k) for k in ARTIFACT_KEYS}, "environment": environment_info()}
    write_json(json_path, result)
    write_csv(csv_path, rows, COLUMNS)
    print(summarise(rows, meta))
    log.info("%d layers in %.1fs; wrote %s and %s", len(rows), elapsed, csv_path, json_path)
    return result


def run(argv=None) -> None:
    """``python scores.py`` and the console command ``ntps-scores``: :func:`main` behind
    :func:`ntps.cli.run` (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "scores.py", argv)


if __name__ == "__main__":
    run()
