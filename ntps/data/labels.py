"""Label encoding (raw labels → class ids ``0..C-1`` with a recorded mapping) and the label checks:
missing label cells, spellings of one label that differ only in case or surrounding spaces, classes."""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: what pandas, R and JSON exports write into a missing cell (compared after ``strip()``, case-sensitive,
#: so that a class named ``none`` stays a class)
MISSING_LABEL_TOKENS = frozenset({"", "nan", "NaN", "-nan", "NA", "N/A", "n/a", "#N/A", "<NA>", "None", "null",
                                  "NULL"})


def _as_int(v):
    """An integer label (int, integral float, integer-looking string) → int; otherwise None."""
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return int(v)
    if isinstance(v, str) and re.fullmatch(r"\s*[-+]?\d+\s*", v):
        return int(v)
    return None


def encode_labels(dataset: str, raw: Mapping[str, Sequence], encoding: str, names_hint=None):
    """Raw labels per split → int64 class ids ``0..C-1``.

    ``encoding``: ``"int"`` (labels are already class ids; ``names_hint`` names them), ``"sorted"``
    (the distinct values in sorted order — numeric order when all are integers — over all splits
    together, like ``Dataset.class_encode_column``) or ``"auto"`` (int when every label is an integer).
    Returns (``{split: ndarray int64}``, label names, ``{name: id}`` mapping, a description of the rule).
    Raises ValueError for negative or non-contiguous integer labels, naming ``dataset`` and the fix.
    """
    if encoding == "auto":
        encoding = "int" if all(_as_int(y) is not None for s in raw for y in raw[s]) else "sorted"
    if encoding == "int":
        return _encode_int(dataset, raw, names_hint)
    if encoding == "sorted":
        return _encode_sorted(raw)
    raise ValueError(f"unknown label encoding {encoding!r}")


def _encode_int(dataset: str, raw: Mapping[str, Sequence], names_hint):
    conv = {s: [_as_int(y) for y in raw[s]] for s in raw}
    bad = [raw[s][i] for s in raw for i, v in enumerate(conv[s]) if v is None]
    if bad:
        raise ValueError(f"{dataset}: non-integer labels {bad[:5]} where class ids were expected")
    enc = {s: np.array(conv[s], dtype=np.int64) for s in raw}
    allv = np.concatenate(list(enc.values())) if enc else np.zeros(0, np.int64)
    neg = sorted(set(allv[allv < 0].tolist()))
    if neg:
        raise ValueError(
            f"{dataset}: negative labels {neg[:10]}. Labels must be integers 0..C-1. Fix: remove "
            "those rows (e.g. unlabelled -1 rows) or re-encode the labels.")
    c = int(max(allv.max() + 1 if len(allv) else 0, len(names_hint or [])))
    present = set(allv.tolist())
    absent = [k for k in range(c) if k not in present]
    if absent and not names_hint:
        raise ValueError(
            f"{dataset}: integer labels {sorted(present)[:20]} are not contiguous 0..{c - 1} "
            f"(missing {absent[:20]}). Fix: re-encode them to 0..C-1, or store them as strings "
            "(string labels are encoded in sorted order and the mapping is recorded).")
    names = list(names_hint) if names_hint else [str(k) for k in range(c)]
    return enc, names, {names[k]: k for k in range(c)}, "integer labels used as class ids"


def _encode_sorted(raw: Mapping[str, Sequence]):
    distinct = {str(y): y for s in raw for y in raw[s]}
    numeric = all(_as_int(v) is not None for v in distinct.values())
    values = sorted(distinct, key=(lambda v: _as_int(distinct[v])) if numeric else None)
    idx = {v: k for k, v in enumerate(values)}
    enc = {s: np.array([idx[str(y)] for y in raw[s]], dtype=np.int64) for s in raw}
    how = f"values encoded in sorted {'numeric' if numeric else 'string'} order (train and test together)"
    return enc, values, dict(idx), how


def check_train_classes(dataset: str, train_labels: np.ndarray, names: list[str]) -> None:
    """Raise ValueError when train has no rows or fewer than 2 classes, or when a class id has no example
    in train (names the classes and the fix)."""
    if len(train_labels) == 0 or len(names) < 2:
        found = f"{len(train_labels)} rows" + (f" of the one class {names[0]!r}" if len(names) == 1 else "")
        raise ValueError(
            f"{dataset}: the train split has {found}; NTPS needs at least 2 classes, each with at least one "
            "train row. Fix: check the label column (--label_column) and the file, or add rows of another class.")
    counts = np.bincount(train_labels, minlength=len(names))
    missing = [k for k in range(len(names)) if counts[k] == 0]
    if missing:
        shown = f"{missing[:20]} (label names {[names[k] for k in missing[:20]]})"
        raise ValueError(
            f"{dataset}: class id(s) {shown} have no example in the train split (train labels present: "
            f"{sorted(set(train_labels.tolist()))[:20]}). Every class 0..{len(names) - 1} must appear in "
            "train. Fix: use a stratified split (drop --test_file to let the loader split), add examples "
            "of those classes, or re-encode the labels without them.")


def is_missing_label(v) -> bool:
    """True for None, a float NaN, or a string in :data:`MISSING_LABEL_TOKENS`."""
    if v is None:
        return True
    if isinstance(v, (float, np.floating)):
        return math.isnan(v)
    return isinstance(v, str) and v.strip() in MISSING_LABEL_TOKENS


def check_label_cells(where: str, column: str, labels: Sequence, rows: Sequence, fix: str,
                      rows_are: str = "") -> None:
    """Raise ValueError when a label cell is missing (:func:`is_missing_label`): the message gives the
    count, the values, the first five ``rows`` entries (each row's number as the user sees it; ``rows_are``
    says how they count) and ``fix``."""
    bad = [k for k, v in enumerate(labels) if is_missing_label(v)]
    if bad:
        values = sorted({repr(labels[k]) for k in bad})
        raise ValueError(
            f"{where}: {len(bad)} row(s) without a label in column {column!r} (values {', '.join(values)}; "
            f"rows {', '.join(str(rows[k]) for k in bad[:5])}{' ...' if len(bad) > 5 else ''}{rows_are}). "
            f"Fix: {fix}")


def label_variants(labels: Sequence) -> dict[str, dict[str, int]]:
    """Spellings of one label that differ only in case or surrounding spaces (``spam``/``Spam``/`` spam ``):
    ``{merged name: {spelling: rows}}``; the merged name is the most frequent spelling, stripped (ties: the
    first in sorted order). Empty when every label is an integer (those are encoded as numbers)."""
    if all(_as_int(y) is not None for y in labels):
        return {}
    groups: dict[str, dict[str, int]] = {}
    for spelling, n in sorted(Counter(str(y) for y in labels).items()):
        groups.setdefault(spelling.strip().casefold(), {})[spelling] = n
    return {max(g, key=g.get).strip(): g for g in groups.values() if len(g) > 1}


def merge_label_variants(where: str, labels: Sequence, merge: bool) -> tuple[list, dict[str, dict[str, int]]]:
    """Labels with the :func:`label_variants` of one label merged into its most frequent spelling, and the
    groups (recorded as ``info["label_variants_merged"]``). Without ``merge``, variants are a ValueError
    naming them (spelling and rows) and the fix; with it, a logged warning."""
    variants = label_variants(labels)
    if not variants:
        return list(labels), {}
    shown = "; ".join(" / ".join(f"{s!r} ({n} row{'s' * (n != 1)})" for s, n in g.items())
                      for g in variants.values())
    if not merge:
        raise ValueError(
            f"{where}: labels that differ only in case or surrounding spaces would be separate classes: {shown}. "
            "Fix: correct the labels, or pass merge_label_variants=True (--merge_label_variants) to merge each "
            "group into its most frequent spelling.")
    logger.warning("%s: label spellings merged (case/surrounding spaces): %s", where, shown)
    to = {s: name for name, g in variants.items() for s in g}
    return [to.get(str(y), y) for y in labels], variants
