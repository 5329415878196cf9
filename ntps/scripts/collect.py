"""Gather the outputs of our runs into one long table (input of analyze.py, the figures and the report).

This is the only code that reads the run tree. Inputs under ``--output_dir`` (the output root; the
``{model}``/``{dataset}`` directories are slugs, the real names come from ``meta.json`` when present):

``{root}/{model}/{dataset}/{split}/meta.json``             cache.py: ``model, dataset, split, n_texts, d``
``{root}/{model}/{dataset}/{split}/ntps_{variant}_{order}.csv``
    K_sweep.py, one row per (layer, fraction or k): ``layer, fraction, k, k_U, k_V, r_U, r_V, label_rank,
    ntps, chance, unique`` (+ ``excess, lower, upper`` for the whitened variant). Required: ``layer`` and
    ``ntps``; ``chance`` is filled with ``k_V / d`` when missing.
``{root}/{model}/{dataset}/{split}/scores.csv``            scores.py: ``layer`` and the baselines
``{root}/{model}/{dataset}/{split}/probes_sklearn.csv``    linear_sklearn.py: ``layer, split, acc, log_loss, mse``
``{root}/{model}/{dataset}/{name}/results.json``           ``test_accuracy`` of linear, lora, scratch ...
``{root}/{model}/{dataset}/lora/stats_after/*/*/{split}/ntps_*.csv``
    K_sweep.py on the LoRA-merged model (runs/ntps_lora.py)
``{root}/{model}/{dataset}/ntps_lora.{csv,json}``, ``{root}/stages.json``
    the LoRA summary rows and the runner's stage record (:func:`lora_runs`, :func:`stage_times`)

Output (``--out``, default ``{root}/collected.csv``): one row per model × dataset × score × layer ×
fraction (or k). Columns, in this order:

- keys: ``model, dataset, model_slug, dataset_slug, split, score, layer, fraction, k, value``;
- ``score`` names: ``ntps_{variant}_{order}`` (a K sweep; ``_after_lora`` appended for the merged
  model), ``logme, h_score, ls_mse, ridge_mse, effective_rank`` (scores.py, per layer; fraction empty),
  ``label_rank`` (per layer, from the sweeps: a "more classes" baseline) and, derived here from
  the sweeps: for raw sweeps ``{sweep}_minus_chance`` (NTPS − chance), ``{sweep}_best`` and
  ``{sweep}_margin_best`` (per layer, max over fractions of NTPS and of NTPS − chance), for
  whitened sweeps ``{sweep}_excess`` (the excess loss Δ(V), lower = better, with its bounds);
- what the figures and the report need (empty where it does not apply): ``chance, k_U, k_V, r_U,
  r_V, label_rank, unique, lower, upper, n_texts, d``; ``chance`` (k_V / d) is given on the sweep
  rows only, so it marks the NTPS sweeps themselves;
- per model × dataset (the metrics): ``probe_layer`` (the largest probed layer, i.e. the final
  representation) and ``probe_{train,test}_{acc,log_loss,mse}`` at that layer; ``dataset_source`` (the
  origin pool, :func:`ntps.data.source_of`: datasets of one source are not independent), ``num_classes`` C,
  ``n_test`` (texts of the test split, its meta.json), ``mse0_train`` and ``mse0_test`` (the MSE of the best
  constant predictor of the one-hot labels, mean over texts and classes like the probes' MSE: it predicts the
  train class proportions q, so in-sample ``(1 − Σ q_c²) / C`` and on the test split, whose proportions are p,
  ``Σ_c (p_c − 2 p_c q_c + q_c²) / C``; from the ``class_counts`` of the two meta.json files),
  ``probe_{train,test}_nmse`` = MSE / constant-predictor MSE (1 = no better than predicting the proportions;
  the raw MSE scales with 1/C, so the number of classes alone would rank the datasets),
  ``in_sample_informative`` (N >= 2(d + 1): below that, by Cover's theorem, random labels are linearly
  separable and the in-sample accuracy and MSE say nothing about the representation); ``linear_test_acc,
  lora_test_acc, lora_gain`` (= lora − linear) and ``{name}_test_acc`` for any other
  ``{name}/results.json`` (e.g. ``scratch``);
- per model × dataset × layer: ``layer_probe_{train,test}_{acc,log_loss,mse}`` (probe at the row's
  own layer); then ``source``, the file the row came from.

Missing files give empty columns, never a crash; unreadable or malformed files are logged and skipped
(``--strict`` turns that into an error). So are stale results: a K_sweep, scores or probes CSV whose JSON
records a meta.json sha256 that is no longer that of the meta.json it names (cache.py recomputed the
statistics since) is never mixed into the table. ``{out}`` minus ``.csv`` plus ``.json`` records the
sha256 of every file read, and the problems. Usage::

    python collect.py --output_dir outputs          # -> outputs/collected.csv
    python collect.py --output_dir outputs --sweeps_from outputs/tolerance/rcond_x10 --out x10.csv
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ntps import cli
from ntps.api import BASELINE_COLUMNS
from ntps.data import source_of
from ntps.io import atomic_path, environment_info, write_json
from ntps.provenance import file_digests, sha256_file

log = logging.getLogger(__name__)

KEY_COLS = ["model", "dataset", "model_slug", "dataset_slug", "split", "score", "layer", "fraction", "k", "value"]
DETAIL_COLS = ["chance", "k_U", "k_V", "r_U", "r_V", "label_rank", "unique", "lower", "upper", "fit_share_dropped",
               "c0_fit_share_dropped", "n_texts", "d"]
BASELINES = BASELINE_COLUMNS[3:]  # logme, h_score, ls_mse, ridge_mse, effective_rank
PROBE_METRICS = ["acc", "log_loss", "mse"]
PROBE_SPLITS = ["train", "test"]
PROBE_COLS = [f"probe_{s}_{m}" for s in PROBE_SPLITS for m in PROBE_METRICS]
DATASET_COLS = ["dataset_source", "num_classes", "n_test", "mse0_train", "mse0_test", "probe_train_nmse",
                "probe_test_nmse", "in_sample_informative"]
TRAIN_COLS = ["linear_test_acc", "lora_test_acc", "lora_gain"]
AFTER_LORA = "_after_lora"
STAGE_FILE = "stages.json"
_SWEEP_RE = re.compile(r"^ntps_(?P<variant>.+)_(?P<order>[^_]+)\.csv$")


class CollectError(ValueError):
    """A file under the output root is malformed (raised only with ``strict=True``)."""


def parse_args(argv=None):
    p = cli.parser("collect.py", __doc__)
    cli.add_output_args(p, help="output root holding the runs {output_dir}/{model}/{dataset}/{split}", overwrite=None)
    p.add_argument("--out", default=None, help="output CSV (default: {output_dir}/collected.csv)")
    p.add_argument("--split", default="train", help="split directory holding the statistics and probes")
    p.add_argument("--strict", action="store_true", help="fail on malformed files instead of skipping")
    p.add_argument("--sweeps_from", default=None, help="root of K_sweep runs with another rank tolerance "
                   "(K_sweep.py --rcond X --output_dir ROOT): its sweeps replace those of --output_dir")
    return cli.parse(p, argv)


# ------------------------------------------------------------------------------------------------
# Readers
# ------------------------------------------------------------------------------------------------


class _Problems:
    def __init__(self, strict: bool):
        self.strict, self.items, self.read = strict, [], []

    def __call__(self, path: Path, why: str):
        if self.strict:
            raise CollectError(f"{path}: {why}")
        self.items.append(f"{path}: {why}")
        log.warning("skipped %s: %s", path, why)


def read_json(path: Path, problems=None) -> dict:
    """A JSON object; {} when the file is absent or (reported to ``problems``) unreadable."""
    problems = problems or _Problems(strict=False)
    if not path.is_file():
        return {}
    problems.read.append(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems(path, f"unreadable JSON ({e})")
        return {}
    if not isinstance(obj, dict):
        problems(path, "not a JSON object")
        return {}
    return obj


def _read_csv(path: Path, problems: _Problems, required: tuple[str, ...]) -> pd.DataFrame | None:
    if _stale(path, problems):
        return None
    problems.read.append(path)
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        problems(path, f"unreadable CSV ({e})")
        return None
    missing = [c for c in required if c not in df]
    if missing:
        problems(path, f"missing required column(s) {missing}")
        return None
    return df


def _stale(path: Path, problems: _Problems) -> bool:
    """Whether the result ``path`` was computed from a meta.json that has changed since (its JSON records
    the sha256 of each file read); reported to ``problems``."""
    record = read_json(path.with_suffix(".json"), problems)
    for role, entry in (record.get("inputs") or {}).items():
        source = Path(entry.get("path", ""))
        if not source.is_file() and role in ("meta.json", "train/meta.json"):  # a moved tree: the one beside it
            source = path.parent / "meta.json"
        if role.endswith("meta.json") and source.is_file() and sha256_file(source) != entry.get("sha256"):
            problems(path, f"stale: computed from an earlier {source} (cache.py rewrote it since); rerun the "
                           "script that wrote it")
            return True
    return False


def _bool(v):
    if isinstance(v, str):
        return {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}.get(
            v.strip().lower(), np.nan)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    return bool(v)


def _read_probes(path: Path, problems: _Problems) -> pd.DataFrame | None:
    """probes_sklearn.csv -> one row per layer with columns probe_{split}_{metric}."""
    if not path.is_file():
        return None
    df = _read_csv(path, problems, ("layer", "split"))
    if df is None:
        return None
    df = df[df["split"].isin(PROBE_SPLITS)]
    if df.duplicated(["layer", "split"]).any():
        problems(path, "duplicate (layer, split) rows; keeping the last")
        df = df.drop_duplicates(["layer", "split"], keep="last")
    wide = pd.DataFrame({"layer": sorted(df["layer"].unique())})
    for s in PROBE_SPLITS:
        part = df[df["split"] == s].set_index("layer")
        for m in PROBE_METRICS:
            col = part[m] if m in part else pd.Series(dtype=float)
            wide[f"probe_{s}_{m}"] = wide["layer"].map(pd.to_numeric(col, errors="coerce"))
    return wide


# ------------------------------------------------------------------------------------------------
# Score rows
# ------------------------------------------------------------------------------------------------


def sweep_rows(path: Path, meta: dict, problems: _Problems, suffix: str = "") -> pd.DataFrame | None:
    """The long rows of one K_sweep CSV: the sweep itself and the scores derived from it."""
    m = _SWEEP_RE.match(path.name)
    if not m:
        problems(path, "name is not ntps_{variant}_{order}.csv")
        return None
    df = _read_csv(path, problems, ("layer", "ntps"))
    if df is None:
        return None
    for col in ["fraction", "k", *DETAIL_COLS]:
        if col not in df:
            df[col] = np.nan
    df["unique"] = df["unique"].map(_bool)
    for key in ("n_texts", "d"):
        if key in meta:
            df[key] = meta[key]
    need = df["chance"].isna() & df["k_V"].notna() & df["d"].notna()
    df.loc[need, "chance"] = df.loc[need, "k_V"] / df.loc[need, "d"]
    name = f"ntps_{m['variant']}_{m['order']}{suffix}"
    parts = [df.assign(score=name, value=df["ntps"])]
    derived = df.assign(chance=np.nan)  # a chance level marks the sweeps themselves
    if m["variant"] == "raw":
        margin = derived.assign(value=df["ntps"] - df["chance"])
        parts.append(margin.assign(score=f"{name}_minus_chance"))
        for what, frame in (("best", derived.assign(value=df["ntps"])), ("margin_best", margin)):
            best = frame.groupby("layer", as_index=False)[["value", "n_texts", "d", "label_rank"]].max()
            parts.append(best.assign(score=f"{name}_{what}", fraction=np.nan, k=np.nan))
    if "excess" in df:
        parts.append(derived.assign(score=f"{name}_excess", value=df["excess"]))
    out = pd.concat(parts, ignore_index=True, sort=False)
    return out.drop(columns=[c for c in ("ntps", "excess") if c in out])


def baseline_rows(path: Path, meta: dict, problems: _Problems) -> pd.DataFrame | None:
    """The long rows of scores.py's scores.csv: one per layer and baseline."""
    df = _read_csv(path, problems, ("layer",))
    if df is None:
        return None
    have = [b for b in BASELINES if b in df]
    if not have:
        problems(path, f"none of the baseline columns {BASELINES}")
        return None
    for key in ("n_texts", "d"):
        if key not in df:
            df[key] = meta.get(key, np.nan)
    long = df.melt(id_vars=["layer", "n_texts", "d"], value_vars=have, var_name="score", value_name="value")
    return long.assign(fraction=np.nan, k=np.nan)


def label_rank_rows(sweeps: list[pd.DataFrame]) -> pd.DataFrame | None:
    """The label rank per layer as a score (one row per layer; from the sweeps' ``label_rank``), or None."""
    if not sweeps:
        return None
    t = pd.concat(sweeps, ignore_index=True, sort=False)
    t = t[t["label_rank"].notna()]
    if t.empty:
        return None
    rank = t.groupby("layer", as_index=False).agg(value=("label_rank", "max"), n_texts=("n_texts", "max"),
                                                    d=("d", "max"), source=("source", "first"))
    return rank.assign(score="label_rank", label_rank=rank["value"], fraction=np.nan, k=np.nan)


def _score_rows(split_dir: Path, meta: dict, problems: _Problems, root: Path, sweeps_from: Path | None = None
                ) -> list[pd.DataFrame]:
    ds_dir = split_dir.parent
    if sweeps_from is None:
        found = [(p, "") for p in sorted(split_dir.glob("ntps_*.csv"))]
        found += [(p, AFTER_LORA) for p in sorted(ds_dir.glob(f"lora/stats_after/*/*/{split_dir.name}/ntps_*.csv"))]
    else:  # the sweeps of another rank tolerance, filed under the same {model}/{dataset}/{split}
        found = [(p, "") for p in sorted((sweeps_from / split_dir.relative_to(root)).glob("ntps_*.csv"))]
    frames = []
    for path, suffix in found:
        after_meta = read_json(path.parent / "meta.json", problems) if suffix else meta
        df = sweep_rows(path, after_meta, problems, suffix)
        if df is not None:
            frames.append(df.assign(source=str(path.relative_to(sweeps_from if sweeps_from and not suffix else root))))
    rank = label_rank_rows([f for f in frames if not f["score"].iloc[0].endswith(AFTER_LORA)])
    if rank is not None:
        frames.append(rank)
    if (split_dir / "scores.csv").is_file():
        df = baseline_rows(split_dir / "scores.csv", meta, problems)
        if df is not None:
            frames.append(df.assign(source=str((split_dir / "scores.csv").relative_to(root))))
    return frames


# ------------------------------------------------------------------------------------------------
# Metrics
# ------------------------------------------------------------------------------------------------


def dataset_metrics(split_dir: Path, problems: _Problems) -> tuple[dict, pd.DataFrame | None]:
    """(per-dataset metrics, per-layer probe table) of one model × dataset."""
    out = {"probe_layer": np.nan, **dict.fromkeys(PROBE_COLS, np.nan)}
    probes = _read_probes(split_dir / "probes_sklearn.csv", problems)
    if probes is None:
        log.info("%s: no probes_sklearn.csv (run linear_sklearn.py); no probe metrics for this dataset", split_dir)
    elif len(probes):
        final = probes.iloc[-1]  # largest probed layer = the final representation
        out["probe_layer"] = final["layer"]
        out.update({c: final[c] for c in PROBE_COLS})
    for res in sorted(split_dir.parent.glob("*/results.json")):
        name = res.parent.name
        if name == split_dir.name:
            continue
        acc = read_json(res, problems).get("test_accuracy", np.nan)
        try:
            out[f"{name}_test_acc"] = float(acc)
        except (TypeError, ValueError):
            problems(res, f"test_accuracy is not a number: {acc!r}")
            out[f"{name}_test_acc"] = np.nan
    for c in ("linear_test_acc", "lora_test_acc"):
        out.setdefault(c, np.nan)
    out["lora_gain"] = out["lora_test_acc"] - out["linear_test_acc"]
    layer_probes = None if probes is None else probes.rename(columns={c: f"layer_{c}" for c in PROBE_COLS})
    return out, layer_probes


def constant_mse(train_counts, test_counts=None) -> float:
    """MSE (mean over texts and classes) of the constant predictor q = train class proportions on one-hot
    labels whose proportions are p (the train ones when ``test_counts`` is None): Σ_c (p_c − 2 p_c q_c + q_c²) / C,
    which is (1 − Σ q_c²) / C in-sample. NaN when the counts are missing, empty or of different lengths."""
    q = np.asarray(train_counts if train_counts is not None else [], dtype=float)
    p = q if test_counts is None else np.asarray(test_counts, dtype=float)
    if q.size < 2 or p.shape != q.shape or q.sum() <= 0 or p.sum() <= 0:
        return float("nan")
    q, p = q / q.sum(), p / p.sum()
    return float(np.mean(p - 2 * p * q + q * q))


def class_metrics(meta: dict, test_meta: dict, metrics: dict) -> dict:
    """C, N_test, the constant-predictor MSEs, the normalised probe MSEs and Cover's-bound flag of one dataset."""
    counts, n, d = meta.get("class_counts"), meta.get("n_texts"), meta.get("d")
    mse0_train, mse0_test = constant_mse(counts), constant_mse(counts, test_meta.get("class_counts"))
    return {"num_classes": len(counts) if counts else meta.get("num_classes", np.nan),
            "n_test": test_meta.get("n_texts", np.nan), "mse0_train": mse0_train, "mse0_test": mse0_test,
            "probe_train_nmse": metrics["probe_train_mse"] / mse0_train,
            "probe_test_nmse": metrics["probe_test_mse"] / mse0_test,
            "in_sample_informative": (n >= 2 * (d + 1)) if n is not None and d is not None else np.nan}


def collect(root: str | Path, split: str = "train", strict: bool = False, problems: _Problems | None = None,
            sweeps_from: str | Path | None = None) -> pd.DataFrame:
    """The long table of the module docstring (empty table if nothing found); ``problems`` collects the
    files read and the problems (default: a fresh one with ``strict``). ``sweeps_from``: a root whose
    ``{model}/{dataset}/{split}/ntps_*.csv`` replace the sweeps of ``root`` (K_sweep.py run with another
    ``--rcond`` and ``--output_dir sweeps_from``); metrics and baselines still come from ``root``."""
    root = Path(root)
    sweeps_from = Path(sweeps_from) if sweeps_from is not None else None
    problems = problems or _Problems(strict)
    frames = []
    for split_dir in sorted(p for p in root.glob(f"*/*/{split}") if p.is_dir()):
        ds_dir, model_dir = split_dir.parent, split_dir.parent.parent
        meta = read_json(split_dir / "meta.json", problems)
        scores = _score_rows(split_dir, meta, problems, root, sweeps_from)
        if not scores:
            continue
        df = pd.concat(scores, ignore_index=True, sort=False)
        df["model"] = meta.get("model", model_dir.name)
        df["dataset"] = meta.get("dataset", ds_dir.name)
        df["model_slug"], df["dataset_slug"] = model_dir.name, ds_dir.name
        df["split"] = meta.get("split", split)
        metrics, layer_probes = dataset_metrics(split_dir, problems)
        test_meta = read_json(ds_dir / "test" / "meta.json", problems) if split_dir.name != "test" else meta
        metrics.update(class_metrics(meta, test_meta, metrics))
        metrics["dataset_source"] = source_of(meta.get("dataset", ds_dir.name))
        df = df.assign(**metrics)
        if layer_probes is not None:
            df = df.merge(layer_probes, on="layer", how="left")
        frames.append(df)

    layer_probe_cols = [f"layer_{c}" for c in PROBE_COLS]
    fixed = KEY_COLS + DETAIL_COLS + ["probe_layer"] + PROBE_COLS + DATASET_COLS + TRAIN_COLS
    if not frames:
        return pd.DataFrame(columns=fixed + layer_probe_cols + ["source"])
    table = pd.concat(frames, ignore_index=True, sort=False)
    for c in fixed + layer_probe_cols:
        if c not in table:
            table[c] = np.nan
    extra = sorted(c for c in table.columns if c.endswith("_test_acc") and c not in fixed + layer_probe_cols)
    cols = fixed + extra + layer_probe_cols + ["source"]
    table = table[cols + [c for c in table.columns if c not in cols]]
    return table.sort_values(["model", "dataset", "score", "layer", "fraction", "k"],
                             na_position="first", kind="stable").reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# The runner's records (read by runs/report.py)
# ------------------------------------------------------------------------------------------------


def lora_runs(root: str | Path) -> pd.DataFrame:
    """ntps_lora.csv rows with the LoRA run's budget (steps, lr, batch, texts, training seconds)."""
    rows = []
    for path in sorted(Path(root).glob("*/*/ntps_lora.csv")):
        info = read_json(path.with_suffix(".json"))
        # the recorded path is relative to the working directory of that run: the file beside the summary first
        beside = path.parent / "lora" / "results.json"
        res = read_json(beside if beside.is_file() else Path(info.get("lora_results", beside)))
        cfg = res.get("config", {})
        for row in pd.read_csv(path).to_dict("records"):
            rows.append({**row, "steps": res.get("steps"), "lr": cfg.get("lr"), "batch_size": cfg.get("batch_size"),
                         "max_length": cfg.get("max_length"), "n_train": res.get("n_train"),
                         "n_test": res.get("n_test"), "lora_train_s": res.get("train_time_s")})
    return pd.DataFrame(rows)


def stage_record(root: str | Path) -> dict:
    """The runner's ``stages.json`` (``{"stages": {}, "invocations": []}`` when there is none)."""
    return read_json(Path(root) / STAGE_FILE) or {"stages": {}, "invocations": []}


def stage_times(root: str | Path) -> pd.DataFrame:
    """Compute seconds per stage: the time cache.py recorded in its artifact, else the runner's wall time."""
    root = Path(root)
    rows = []
    # {model}/{dataset}/{split}/meta.json; LoRA's stats_after lie deeper and are part of the lora stage
    for meta_path in sorted(root.glob("*/*/train/meta.json")) + sorted(root.glob("*/*/test/meta.json")):
        meta = read_json(meta_path)
        key = f"cache/{meta['model']}/{meta['dataset']}/{meta_path.parent.name}"
        rows.append({"stage": "cache", "key": key, "model": meta["model"], "dataset": meta["dataset"],
                     "seconds": float(meta.get("seconds", {}).get("total", np.nan)),
                     "n_texts": meta.get("n_texts"), "n_tokens": meta.get("n_tokens")})
    seen = {r["key"] for r in rows}
    for key, s in stage_record(root)["stages"].items():
        if key in seen or s.get("rc") != 0:
            continue
        rows.append({"stage": key.split("/")[0], "key": key, "model": s.get("model"), "dataset": s.get("dataset"),
                     "seconds": float(s["seconds"]), "n_texts": None, "n_tokens": None})
    return pd.DataFrame(rows)


def main(args) -> pd.DataFrame:
    root = Path(args.output_dir)
    if not root.is_dir():
        raise ValueError(f"output root {root} does not exist")
    problems = _Problems(args.strict)
    table = collect(root, split=args.split, problems=problems, sweeps_from=args.sweeps_from)
    out = Path(args.out) if args.out else root / "collected.csv"
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    write_json(out.with_suffix(".json"), {"inputs": file_digests({str(p): p for p in sorted(set(problems.read))}),
                                          "problems": problems.items, "rows": len(table),
                                          "environment": environment_info()})
    pairs = table[["model", "dataset"]].drop_duplicates()
    log.info("%d rows, %d model(s), %d model x dataset pair(s), scores %s -> %s", len(table),
             table["model"].nunique(), len(pairs), sorted(table["score"].unique()), out)
    per_pair = table.groupby(["model", "dataset"]).first() if len(table) else table
    for col in ("probe_train_acc", "probe_train_mse", "linear_test_acc", "lora_test_acc"):
        log.info("  %16s: %d/%d model x dataset pairs", col, per_pair[col].notna().sum(), len(pairs))
    return table


def run(argv=None) -> None:
    """``python collect.py`` and the console command ``ntps-collect``: :func:`main` behind
    :func:`ntps.cli.run` (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "collect.py", argv)


if __name__ == "__main__":
    run()
