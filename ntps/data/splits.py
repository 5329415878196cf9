"""Deduplication, seeded train/test splits and class-stratified subsets (pure functions of the labels)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np

from .base import DEFAULT_SEED, DEFAULT_TEST_FRACTION, Pool

logger = logging.getLogger(__name__)


def dedupe(texts: Sequence[str], labels: Sequence) -> tuple[np.ndarray, int, int]:
    """Exact-duplicate removal: keep the first copy when all copies agree on the label; drop every copy
    when they disagree. Returns (kept indices ascending, copies dropped as duplicates, rows dropped
    because their copies disagreed)."""
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        groups.setdefault(t, []).append(i)
    keep, n_dup, n_conflict = [], 0, 0
    for idx in groups.values():
        if len({labels[i] for i in idx}) == 1:
            keep.append(idx[0])
            n_dup += len(idx) - 1
        else:
            n_conflict += len(idx)
    return np.array(sorted(keep), dtype=np.int64), n_dup, n_conflict


def dedupe_pool(where: str, pool: Pool, tags: list[str]) -> tuple[Pool, list[str], dict]:
    """:func:`dedupe` of a local file's or hub dataset's rows (the rule of the offline datasets), rows in
    order, train before test: a test row whose text is a train text is dropped (the train copy is kept
    when the labels agree). Empty texts are left for the loader to drop and count.

    Returns the kept rows, their tags and the counts ``duplicates_dropped``, ``conflicting_duplicates_dropped``
    and, when some rows are tagged test, ``test_rows_equal_to_a_train_text``; non-zero counts are logged.
    """
    real = [k for k, t in enumerate(pool.texts) if t is not None and str(t).strip()]
    keep, n_dup, n_conflict = dedupe([pool.texts[k] for k in real], [pool.labels[k] for k in real])
    kept = sorted(set(range(len(tags))) - set(real) | {real[k] for k in keep})
    stats = {"duplicates_dropped": n_dup, "conflicting_duplicates_dropped": n_conflict}
    if n_dup or n_conflict:
        logger.warning("%s: %d duplicate row(s) dropped (first copy kept), %d row(s) dropped because copies of "
                       "their text have different labels", where, n_dup, n_conflict)
    if "test" in tags:
        train = {pool.texts[k] for k in real if tags[k] == "train"}
        overlap = sum(1 for k in real if tags[k] == "test" and pool.texts[k] in train)
        stats["test_rows_equal_to_a_train_text"] = overlap
        if overlap:
            logger.warning("%s: %d test row(s) repeat a train text; dropped from test", where, overlap)
    return pool.take(kept), [tags[k] for k in kept], stats


def hf_train_test_split_indices(n: int, test_size: float = DEFAULT_TEST_FRACTION,
                                seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The rows ``datasets.Dataset.train_test_split(test_size, shuffle=True, seed)`` puts in train and
    test (the authors' rule for train-only datasets), returned sorted ascending.

    Same arithmetic as ``datasets``: ``n_test = ceil(test_size * n)``, a PCG64 permutation from
    ``np.random.default_rng(seed)``, test = its first ``n_test`` entries.
    """
    n_test = math.ceil(test_size * n)
    n_train = n - n_test
    if n_train <= 0 or n_test <= 0:
        raise ValueError(f"cannot split {n} rows with test_size={test_size}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _allocate(counts: np.ndarray, total: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Integer allocation proportional to ``counts`` with ``lo <= a <= hi`` and ``sum(a) = total``
    (clipped to what the bounds allow); largest remainders first, ties to the lower class index."""
    counts = np.asarray(counts, dtype=np.float64)
    lo, hi = np.asarray(lo, dtype=np.int64), np.asarray(hi, dtype=np.int64)
    total = int(min(max(total, lo.sum()), hi.sum()))
    quota = total * counts / max(counts.sum(), 1.0)
    a = np.clip(np.floor(quota).astype(np.int64), lo, hi)
    while a.sum() > total:
        over = np.where(a > lo, a - quota, -np.inf)
        a[int(np.argmax(over))] -= 1
    while a.sum() < total:
        under = np.where(a < hi, quota - a, -np.inf)
        a[int(np.argmax(under))] += 1
    return a


def stratified_split_indices(labels: Sequence, test_fraction: float = DEFAULT_TEST_FRACTION,
                             seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Seeded class-stratified train/test split; returns (train, test) indices, each ascending.

    ``round(test_fraction * n)`` test rows allocated to classes in proportion to their size; every
    class keeps at least one row in train, and a class with at least two rows gets at least one in
    test. Deterministic given ``seed``; labels may be any hashable values.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    labels = list(labels)
    classes = sorted(set(labels), key=lambda v: (str(type(v)), v))
    members = [np.array([i for i, y in enumerate(labels) if y == c], dtype=np.int64) for c in classes]
    counts = np.array([len(m) for m in members])
    lo = (counts >= 2).astype(np.int64)
    alloc = _allocate(counts, round(test_fraction * len(labels)), lo, counts - 1)
    rng = np.random.default_rng(seed)
    test = [rng.permutation(m)[:k] for m, k in zip(members, alloc)]
    test_idx = np.sort(np.concatenate(test)) if test else np.zeros(0, np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def stratified_subsample_indices(labels: np.ndarray, max_samples: int, seed: int = DEFAULT_SEED,
                                 num_classes: int | None = None) -> np.ndarray:
    """Positions of a seeded, class-stratified subset of size ``min(max_samples, n)``, ascending.

    Proportional allocation (largest remainders); when ``max_samples >= C`` every class present keeps
    at least one example. Deterministic given ``seed``; a different seed gives a different subset.
    """
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    if max_samples >= n:
        return np.arange(n)
    c = int(num_classes if num_classes is not None else labels.max() + 1)
    counts = np.bincount(labels, minlength=c)
    present = counts > 0
    lo = (present & (max_samples >= present.sum())).astype(np.int64)
    alloc = _allocate(counts, max_samples, lo, counts)
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == k))[:alloc[k]] for k in range(c)]
    return np.sort(np.concatenate(parts))


def balanced_subsample_indices(labels: Sequence, per_class: int, seed: int = DEFAULT_SEED) -> np.ndarray:
    """Positions (ascending) of a seeded class-balanced subsample: ``min(per_class, n_k)`` rows of class k.

    One ``np.random.default_rng(seed)``, one permutation per class, classes in sorted order (labels
    compared as strings). Raises ValueError for ``per_class < 1``.
    """
    if per_class < 1:
        raise ValueError(f"per_class must be >= 1, got {per_class}")
    labels = [str(y) for y in labels]
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.array([i for i, y in enumerate(labels) if y == c], dtype=np.int64))[:per_class]
            for c in sorted(set(labels))]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
