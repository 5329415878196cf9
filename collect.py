"""Gather the outputs of our runs into one tidy CSV (input of analyze.py and the figure scripts).

Inputs, globbed under ``--runs_dir`` (default ``outputs/``); ``{model_slug}``/``{dataset_slug}``
are directory names (``org__name``), the real names come from ``meta.json`` when present:

``{runs}/{model_slug}/{dataset_slug}/{split}/ntps_{variant}_{order}.csv``  (split: ``--split``, train)
    K sweep, one row per (layer, fraction): ``layer, fraction, k, k_U, k_V, r_U, r_V, label_rank,
    ntps, chance, unique``; ``fraction`` empty when an absolute k was used. ``variant`` may
    contain underscores, ``order`` (e.g. ``desc``/``asc``) is the last ``_`` field.
    Required: ``layer`` and ``ntps``; any other missing column becomes NaN (``chance`` is
    filled with ``k_V / d`` when both are known).
``{runs}/{model_slug}/{dataset_slug}/{split}/meta.json``
    ``model, dataset, split, n_texts, d`` (missing -> directory names / NaN).
``{runs}/{model_slug}/{dataset_slug}/{split}/probes_sklearn.csv``
    ``layer, split, acc, log_loss, mse`` with split in {train, test} (sklearn probes, SPEC §3).
``{runs}/{model_slug}/{dataset_slug}/{name}/results.json``  (name: linear, lora, any other)
    ``{"test_accuracy": float, ...}``.

Output (``--out``, default ``{runs}/collected.csv``), one row per model x dataset x layer x
fraction x order x variant, columns in this order:

- keys: ``model, dataset, model_slug, dataset_slug, split, variant, order, layer, fraction, k``
- NTPS sweep: ``k_U, k_V, r_U, r_V, label_rank, ntps, chance, unique, n_texts, d``
- per model x dataset (constant over the rows of a dataset; the figures' metrics):
  ``probe_layer`` (the largest probed layer, i.e. the final representation) and
  ``probe_{train,test}_{acc,log_loss,mse}`` at that layer;
  ``linear_test_acc, lora_test_acc, lora_gain`` (= lora - linear), and ``{name}_test_acc``
  for any other ``{name}/results.json`` (e.g. ``scratch``);
- per model x dataset x layer: ``layer_probe_{train,test}_{acc,log_loss,mse}`` (probe at the
  row's own layer; NaN where that layer was not probed).

Missing files give NaN columns, never a crash; unreadable/malformed files are reported on
stderr and skipped (``--strict`` turns that into an error). Usage::

    python collect.py --runs_dir outputs --out outputs/collected.csv
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ntps.io import atomic_path

KEY_COLS = ["model", "dataset", "model_slug", "dataset_slug", "split", "variant", "order", "layer",
            "fraction", "k"]
SWEEP_COLS = ["k_U", "k_V", "r_U", "r_V", "label_rank", "ntps", "chance", "unique", "n_texts", "d"]
PROBE_METRICS = ["acc", "log_loss", "mse"]
PROBE_SPLITS = ["train", "test"]
PROBE_COLS = [f"probe_{s}_{m}" for s in PROBE_SPLITS for m in PROBE_METRICS]
TRAIN_COLS = ["linear_test_acc", "lora_test_acc", "lora_gain"]
_SWEEP_RE = re.compile(r"^ntps_(?P<variant>.+)_(?P<order>[^_]+)\.csv$")


class CollectError(ValueError):
    """A file under the runs directory is malformed (raised only with ``strict=True``)."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs_dir", default="outputs", help="root of the run outputs (default: outputs/)")
    p.add_argument("--out", default=None, help="output CSV (default: {runs_dir}/collected.csv)")
    p.add_argument("--split", default="train", help="split directory holding the K sweeps (default: train)")
    p.add_argument("--strict", action="store_true", help="fail on malformed files instead of skipping")
    return p.parse_args(argv)


def _bool(v):
    if isinstance(v, str):
        s = v.strip().lower()
        if s in ("true", "1", "yes"):
            return True
        if s in ("false", "0", "no"):
            return False
        return np.nan
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return np.nan
    return bool(v)


class _Problems:
    def __init__(self, strict: bool):
        self.strict, self.items = strict, []

    def __call__(self, path: Path, why: str):
        if self.strict:
            raise CollectError(f"{path}: {why}")
        self.items.append(f"{path}: {why}")
        print(f"[collect] skipped {path}: {why}", file=sys.stderr)


def _read_json(path: Path, problems: _Problems) -> dict:
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems(path, f"unreadable JSON ({e})")
        return {}
    if not isinstance(obj, dict):
        problems(path, "not a JSON object")
        return {}
    return obj


def _read_sweep(path: Path, problems: _Problems) -> pd.DataFrame | None:
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        problems(path, f"unreadable CSV ({e})")
        return None
    missing = [c for c in ("layer", "ntps") if c not in df]
    if missing:
        problems(path, f"missing required column(s) {missing}")
        return None
    return df


def _read_probes(path: Path, problems: _Problems) -> pd.DataFrame | None:
    """probes_sklearn.csv -> one row per layer with columns probe_{split}_{metric}."""
    if not path.is_file():
        return None
    try:
        df = pd.read_csv(path)
    except (OSError, ValueError) as e:
        problems(path, f"unreadable CSV ({e})")
        return None
    if not {"layer", "split"} <= set(df.columns):
        problems(path, "needs columns layer and split")
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


def collect(runs_dir: str | Path, split: str = "train", strict: bool = False) -> pd.DataFrame:
    """Build the tidy table described in the module docstring (empty table if nothing found)."""
    runs_dir = Path(runs_dir)
    problems = _Problems(strict)
    frames = []
    for sweep_path in sorted(runs_dir.glob(f"*/*/{split}/ntps_*.csv")):
        m = _SWEEP_RE.match(sweep_path.name)
        if not m:
            problems(sweep_path, "name is not ntps_{variant}_{order}.csv")
            continue
        df = _read_sweep(sweep_path, problems)
        if df is None:
            continue
        split_dir = sweep_path.parent
        ds_dir, model_dir = split_dir.parent, split_dir.parent.parent
        meta = _read_json(split_dir / "meta.json", problems)
        for col in ["fraction", "k", *SWEEP_COLS]:
            if col not in df:
                df[col] = np.nan
        df["unique"] = df["unique"].map(_bool)
        if "n_texts" in meta:
            df["n_texts"] = meta["n_texts"]
        if "d" in meta:
            df["d"] = meta["d"]
        need_chance = df["chance"].isna() & df["k_V"].notna() & df["d"].notna()
        df.loc[need_chance, "chance"] = df.loc[need_chance, "k_V"] / df.loc[need_chance, "d"]
        df["model"] = meta.get("model", model_dir.name)
        df["dataset"] = meta.get("dataset", ds_dir.name)
        df["model_slug"], df["dataset_slug"] = model_dir.name, ds_dir.name
        df["split"] = meta.get("split", split)
        df["variant"], df["order"] = m["variant"], m["order"]

        probes = _read_probes(split_dir / "probes_sklearn.csv", problems)
        if probes is not None and len(probes):
            final = probes.iloc[-1]  # largest probed layer = the final representation
            df["probe_layer"] = final["layer"]
            for c in PROBE_COLS:
                df[c] = final[c]
            same = probes.rename(columns={c: f"layer_{c}" for c in PROBE_COLS})
            df = df.merge(same, on="layer", how="left")
        else:
            df["probe_layer"] = np.nan
            for c in PROBE_COLS:
                df[c] = np.nan
            for c in PROBE_COLS:
                df[f"layer_{c}"] = np.nan

        for res in sorted(ds_dir.glob("*/results.json")):
            name = res.parent.name
            if name == split:
                continue
            acc = _read_json(res, problems).get("test_accuracy", np.nan)
            try:
                df[f"{name}_test_acc"] = float(acc)
            except (TypeError, ValueError):
                problems(res, f"test_accuracy is not a number: {acc!r}")
                df[f"{name}_test_acc"] = np.nan
        for c in ("linear_test_acc", "lora_test_acc"):
            if c not in df:
                df[c] = np.nan
        df["lora_gain"] = df["lora_test_acc"] - df["linear_test_acc"]
        df["source"] = str(sweep_path.relative_to(runs_dir))
        frames.append(df)

    layer_probe_cols = [f"layer_{c}" for c in PROBE_COLS]
    fixed = KEY_COLS + SWEEP_COLS + ["probe_layer"] + PROBE_COLS + TRAIN_COLS
    if not frames:
        return pd.DataFrame(columns=fixed + layer_probe_cols + ["source"])
    table = pd.concat(frames, ignore_index=True, sort=False)
    extra = sorted(c for c in table.columns if c.endswith("_test_acc") and c not in fixed)
    cols = fixed + extra + layer_probe_cols + ["source"]
    table = table[cols + [c for c in table.columns if c not in cols]]
    return table.sort_values(["model", "dataset", "variant", "order", "layer", "fraction", "k"],
                             na_position="first", kind="stable").reset_index(drop=True)


def main(args):
    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise SystemExit(f"collect: runs directory {runs_dir} does not exist")
    table = collect(runs_dir, split=args.split, strict=args.strict)
    out = Path(args.out) if args.out else runs_dir / "collected.csv"
    with atomic_path(out) as tmp:
        table.to_csv(tmp, index=False)
    n_models, n_ds = table["model"].nunique(), table[["model", "dataset"]].drop_duplicates().shape[0]
    print(f"[collect] {len(table)} rows, {n_models} model(s), {n_ds} model x dataset pair(s) -> {out}")
    for col in ("probe_train_acc", "probe_train_mse", "linear_test_acc", "lora_test_acc"):
        have = table.groupby(["model", "dataset"])[col].first().notna().sum() if len(table) else 0
        print(f"[collect]   {col:>16}: {have}/{n_ds} model x dataset pairs")
    return table


if __name__ == "__main__":
    main(parse_args())
