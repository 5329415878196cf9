""":func:`load_split`: a dataset name → a :class:`LabelledSplit`, the same rules for every source."""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np

from .base import DEFAULT_SEED, DEFAULT_TEST_FRACTION, SPLITS, LabelledSplit, Pool
from .labels import check_train_classes, encode_labels
from .registry import resolve_record
from .splits import stratified_subsample_indices

_SUBSAMPLE_RULE = "class-stratified, proportional (largest remainder), >= 1 per class, seeded"


def load_split(name: str | os.PathLike, split: str = "train", *, max_samples: int | None = None,
               seed: int = DEFAULT_SEED, text_column: str | None = None, label_column: str | None = None,
               test_file: str | None = None, revision: str | None = None,
               test_fraction: float = DEFAULT_TEST_FRACTION, split_seed: int = DEFAULT_SEED,
               merge_label_variants: bool = False, encoding: str = "utf-8") -> LabelledSplit:
    """Load one split of a labelled dataset as a :class:`LabelledSplit`.

    Parameters
    ----------
    name : str
        An offline key (``vader-movies``, ``bbc-news`` …), a paper dataset (``sst2``, ``emotion``,
        ``legacy-datasets/banking77`` …), a local file path, ``train=PATH,test=PATH``, a dataset directory
        (``save_to_disk`` or a hub repository clone with parquet files: :class:`ntps.data.DirectoryDataset`), or
        any hub id.
    split : {"train", "test"}
    max_samples : int, optional
        Keep a seeded, class-stratified subset of at most this many rows of the chosen split.
    seed : int
        Seed of the ``max_samples`` subset.
    text_column, label_column : str, optional
        Columns of a local file or hub dataset (defaults ``text``/``label``, or the registry's).
        ``text_column="a,b"`` joins columns with a space.
    test_file : str, optional
        Separate test file for a local train file (else a stratified ``test_fraction`` split).
    revision : str, optional
        Hub revision (commit sha, tag or branch); None = the registry's pin (unpinned = main).
    test_fraction, split_seed : float, int
        The seeded split for offline/local data without a test set (hub data: the authors' fixed rule).
    merge_label_variants : bool
        Local and hub data: merge spellings of one label that differ only in case or surrounding spaces
        (``spam``/``Spam``/`` spam ``) into the most frequent one (recorded in
        ``info["label_variants_merged"]``). Default: such variants are a ValueError naming them.
    encoding : str
        Text encoding of a local .csv/.tsv/.json/.jsonl file.

    Rules for local files and hub data (offline data: their parser's rules, the same dedupe): a missing
    label cell (empty, ``NaN``, ``NA``, ``None``, ``null`` … as pandas/R/JSON export it) is an error listing
    the rows; exact duplicate texts are kept once, and dropped altogether when their labels disagree
    (``info["duplicates_dropped"]``, ``info["conflicting_duplicates_dropped"]``, logged); when the test rows
    are given (a test file, a ``split`` column with values train/test, ``train=PATH,test=PATH``, a hub test
    split), a test row whose text is a train text is dropped from test
    (``info["test_rows_equal_to_a_train_text"]``, a logged warning).

    Raises
    ------
    KeyError
        Unknown name (with close suggestions and the offline keys).
    FileNotFoundError
        A local file (or a name that looks like a path) that does not exist.
    ValueError
        A directory that is no dataset directory (naming what was expected and what it holds).
    ValueError
        Bad split, labels not ``0..C-1``, missing label cells, label spelling variants, fewer than 2 classes
        or no rows in train, a class absent from train, an empty requested split, bad columns, an empty,
        header-only, non-UTF-8 (``encoding``) or mis-delimited file, bad ``max_samples``.
    DatasetUnavailableError
        Hub unreachable / package download failed / checksum mismatch (the message names the fix).
    """
    _check_request(split, max_samples)
    record = resolve_record(name, text_column=text_column, label_column=label_column, test_file=test_file,
                            revision=revision, encoding=encoding, merge_label_variants=merge_label_variants)
    got = record.pools(test_fraction, split_seed)
    dataset = got.info["dataset"]
    where = " and ".join(got.info["files"].values()) if "files" in got.info else got.info.get("hub_id", dataset)
    pools, empty = _drop_empty_texts(got.splits)
    if empty.get(split):
        warnings.warn(f"{dataset}: dropped {empty[split]} {split} row(s) with empty text", stacklevel=2)
    enc, label_names, mapping, how = encode_labels(where, {s: p.labels for s, p in pools.items()},
                                                   got.encoding, got.label_names)
    check_train_classes(where, enc["train"], label_names)
    if not len(enc[split]):
        raise ValueError(f"{where}: the {split} split is empty ({got.test_rule}). Fix: add rows, or a larger "
                         "test file / test_fraction.")
    c = len(label_names)
    if got.num_classes is not None and got.num_classes != c:
        warnings.warn(f"{dataset}: {c} classes found, the registry expects {got.num_classes}", stacklevel=2)
    texts, labels, ids = pools[split].texts, enc[split], pools[split].ids
    n_split = len(texts)
    if max_samples is not None:
        if split == "train" and max_samples < c:
            raise ValueError(f"{dataset}: max_samples={max_samples} is smaller than the {c} classes; "
                             f"every class must be present in train. Use max_samples >= {c}.")
        pos = stratified_subsample_indices(labels, int(max_samples), seed, c)
        texts, labels, ids = [texts[i] for i in pos], labels[pos], [ids[i] for i in pos]
    info = {"requested": str(name), "split": split, **got.info, "n": len(texts), "n_split": n_split,
            "num_classes": c, "class_counts": dict(zip(label_names, np.bincount(labels, minlength=c).tolist())),
            "label_names": label_names, "label_mapping": mapping, "label_encoding": how,
            "test_rule": got.test_rule, "split_seed": split_seed if got.seeded else None,
            "test_fraction": test_fraction if got.seeded else None, "seed": seed, "max_samples": max_samples,
            "subsample": _SUBSAMPLE_RULE if max_samples is not None else None,
            "empty_texts_dropped": empty.get(split, 0), "row_indices": [int(i) for i in ids],
            "sha256": _content_sha256(texts, labels), "credit": got.credit}
    return LabelledSplit(texts=texts, labels=labels, label_names=label_names, num_classes=c, info=info)


def load_splits(name: str, **kwargs) -> dict[str, LabelledSplit]:
    """Both splits: ``{"train": ..., "test": ...}`` (same arguments as :func:`load_split`)."""
    return {s: load_split(name, s, **kwargs) for s in SPLITS}


def _check_request(split: str, max_samples) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r} (validation sets serve as "
                         "'test' where the paper says so)")
    if max_samples is not None and (int(max_samples) != max_samples or max_samples < 1):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")


def _drop_empty_texts(splits: dict[str, Pool]) -> tuple[dict[str, Pool], dict[str, int]]:
    """Rows whose text is None or whitespace dropped (texts made str); returns the pools and the counts."""
    kept, empty = {}, {}
    for s, pool in splits.items():
        keep = [i for i, t in enumerate(pool.texts) if t is not None and str(t).strip()]
        empty[s] = len(pool.texts) - len(keep)
        kept[s] = Pool([str(pool.texts[i]) for i in keep], *pool.take(keep)[1:])
    return kept, empty


def _content_sha256(texts: list[str], labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for t, y in zip(texts, labels.tolist()):
        h.update(f"{y}\t{t}\n".encode())
    return h.hexdigest()
