"""The types every source shares: the result (:class:`LabelledSplit`), a dataset record's rows
(:class:`Pool`, :class:`Pools`), the record interface (:class:`DatasetRecord`) and the error."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

SPLITS = ("train", "test")
DEFAULT_SEED = 42
DEFAULT_TEST_FRACTION = 0.3


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be obtained (hub unreachable, package download failed, checksum mismatch)."""


@dataclass
class LabelledSplit:
    """One split of a labelled dataset.

    Attributes
    ----------
    texts : list of str, length N
    labels : ndarray of int64, shape (N,), values in ``0..num_classes-1``
    label_names : list of str, length num_classes (``label_names[k]`` names class ``k``)
    num_classes : int
    info : dict
        JSON-serialisable provenance: ``dataset`` (canonical key), ``source`` (hub / offline / local),
        ``hub_id``/``revision`` or ``package``/``member_sha256`` or ``files``, ``split``, ``n``,
        ``class_counts``, ``seed``, ``split_seed``, ``max_samples``, ``test_rule``, ``label_mapping``,
        ``row_indices`` (rows kept, as indices into the source split / parsed rows / file), drop counts,
        ``sha256`` of the (text, label) content, ``credit``.
    """

    texts: list[str]
    labels: np.ndarray
    label_names: list[str]
    num_classes: int
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if self.labels.ndim != 1 or len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but labels of shape {self.labels.shape}")
        if len(self.label_names) != self.num_classes:
            raise ValueError(f"{len(self.label_names)} label names for {self.num_classes} classes")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            raise ValueError(f"labels outside 0..{self.num_classes - 1}")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def class_counts(self) -> np.ndarray:
        """Texts per class, shape (num_classes,)."""
        return np.bincount(self.labels, minlength=self.num_classes)


class Pool(NamedTuple):
    """Rows of one split before label encoding: texts, raw labels, and row ids (indices into the
    source split / parsed rows / file, recorded as ``info["row_indices"]``)."""

    texts: list
    labels: list
    ids: list

    def take(self, idx) -> Pool:
        return Pool([self.texts[i] for i in idx], [self.labels[i] for i in idx], [self.ids[i] for i in idx])


def split_pool(pool: Pool, train_idx, test_idx) -> dict[str, Pool]:
    """``{"train": pool.take(train_idx), "test": pool.take(test_idx)}``."""
    return {s: pool.take(idx) for s, idx in zip(SPLITS, (train_idx, test_idx))}


def split_by_tag(pool: Pool, tags: list[str]) -> dict[str, Pool]:
    """``{split: the rows tagged split}`` for train and test."""
    return {s: pool.take([k for k, t in enumerate(tags) if t == s]) for s in SPLITS}


def join_splits(splits: dict[str, Pool]) -> tuple[Pool, list[str]]:
    """The train rows, then the test rows, as one pool, and each row's split tag."""
    parts = [(s, splits[s]) for s in SPLITS if s in splits]
    pool = Pool(*([x for _, p in parts for x in p[f]] for f in range(3)))
    return pool, [s for s, p in parts for _ in p.texts]


@dataclass
class Pools:
    """What a source hands to :func:`ntps.data.load_split`: the train and test rows and how to read them.

    ``encoding``: ``"int"`` (labels are class ids), ``"sorted"`` (encode the values in sorted order) or
    ``"auto"`` (int when every label is an integer). ``label_names``: names of the class ids, if known.
    ``seeded``: the test split was drawn with ``split_seed``/``test_fraction``. ``info``: the source's
    provenance, merged into :attr:`LabelledSplit.info`.
    """

    splits: dict[str, Pool]
    info: dict
    test_rule: str
    seeded: bool
    encoding: str
    label_names: list[str] | None = None
    num_classes: int | None = None
    credit: str = ""


class DatasetRecord(ABC):
    """A dataset a name resolves to — a hub dataset, an offline (registry package) dataset or a local
    file; each knows how to obtain its train/test rows."""

    key: str

    @abstractmethod
    def pools(self, test_fraction: float, split_seed: int) -> Pools:
        """The train and test rows; ``test_fraction``/``split_seed`` apply where the test split is drawn."""
