"""Hugging Face dataset directories as ``--dataset PATH`` (issue 16, item 4): a ``save_to_disk`` directory
(DatasetDict, or one Dataset = train only) and a clone of a hub dataset repository (parquet files named by
split). Each test builds its directory in tmp_path; nothing touches the network or the user's HF cache.
"""

from __future__ import annotations

import json
import socket

import pandas as pd
import pytest

from ntps.data import DirectoryDataset, load_split, resolve_record
from ntps.io import slugify

datasets = pytest.importorskip("datasets")

NAMES = ["positive", "negative", "neutral"]  # not sorted: ClassLabel order must win


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    """The datasets cache in tmp_path; any socket connection is recorded and fails the test."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    calls = []

    def connect(self, address, *a):
        calls.append(address)
        raise OSError("no network in this test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert not calls, f"network access: {calls}"


def _rows(n: int, prefix: str, k: int = 3) -> dict:
    return {"text": [f"{prefix} text {i}" for i in range(n)], "label": [i % k for i in range(n)]}


def _features():
    return datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)})


def _dataset(rows: dict, class_label: bool = True):
    return datasets.Dataset.from_dict(rows, features=_features() if class_label else None)


def _both(path, **kw):
    return load_split(path, "train", **kw), load_split(path, "test", **kw)


def test_dataset_dict_save_to_disk_with_classlabel_names(tmp_path):
    src = {"train": _rows(30, "tr"), "test": _rows(9, "te")}
    path = tmp_path / "copies" / "emotion_copy"
    datasets.DatasetDict({s: _dataset(r) for s, r in src.items()}).save_to_disk(str(path))
    tr, te = _both(path)
    for d, s in ((tr, "train"), (te, "test")):
        assert d.texts == src[s]["text"] and d.labels.tolist() == src[s]["label"]
        assert d.label_names == NAMES and d.info["label_mapping"] == {n: k for k, n in enumerate(NAMES)}
        assert d.info["row_indices"] == list(range(len(src[s]["text"])))
    info = tr.info
    assert info["dataset"] == "copies__emotion_copy" and info["layout"] == "save_to_disk"
    assert info["source"] == "local" and info["test_source_split"] == "test" and info["split_seed"] is None
    assert info["data_files"] == {"train": ["train/data-00000-of-00001.arrow"],
                                  "test": ["test/data-00000-of-00001.arrow"]}
    assert set(info["file_sha256"]) == {f for fs in info["data_files"].values() for f in fs}
    assert len(info["directory_sha256"]) == 64 and len(info["sha256"]) == 64 and info["sha256"] != te.info["sha256"]
    json.dumps(info)
    # same directory, another spelling: one key
    assert resolve_record(str(path) + "/").key == resolve_record(path).key == slugify(str(path.resolve()))


def test_plain_dataset_is_train_split_like_a_local_file(tmp_path):
    rows = {"text": [f"row {i}" for i in range(40)], "label": ["spam" if i % 3 else "ham" for i in range(40)]}
    _dataset(rows, class_label=False).save_to_disk(str(tmp_path / "one"))
    pd.DataFrame(rows).to_csv(tmp_path / "one.csv", index=False)
    for s in ("train", "test"):
        d, f = load_split(tmp_path / "one", s), load_split(tmp_path / "one.csv", s)
        assert d.texts == f.texts and d.labels.tolist() == f.labels.tolist() and d.label_names == ["ham", "spam"]
        assert d.info["row_indices"] == f.info["row_indices"]
        assert d.info["split_seed"] == 42 and d.info["test_fraction"] == 0.3 and d.info["test_source_split"] == "train"
    assert len(load_split(tmp_path / "one", "test")) == 12  # round(0.3 * 40)


def _write_parquet(path, rows: dict, class_label: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if class_label:
        _dataset(rows).to_parquet(str(path))
    else:
        pd.DataFrame(rows).to_parquet(path)


def test_hub_clone_parquet_shards(tmp_path):
    repo = tmp_path / "clone"
    a, b, t = _rows(10, "a", 2), _rows(12, "b", 2), _rows(8, "t", 2)
    for r in (a, b, t):
        r["label"] = [["neg", "pos"][y] for y in r["label"]]
    _write_parquet(repo / "data" / "train-00000-of-00002.parquet", a)
    _write_parquet(repo / "data" / "train-00001-of-00002.parquet", b)
    _write_parquet(repo / "data" / "test-00000-of-00001.parquet", t)
    (repo / "README.md").write_text("---\nlicense: mit\n---\n# a dataset card\n")
    (repo / ".gitattributes").write_text("*.parquet filter=lfs diff=lfs merge=lfs -text\n")
    tr, te = _both(repo)
    assert tr.texts == a["text"] + b["text"] and te.texts == t["text"]
    assert [tr.label_names[y] for y in tr.labels] == a["label"] + b["label"]
    assert [te.label_names[y] for y in te.labels] == t["label"] and tr.label_names == ["neg", "pos"]
    assert tr.info["layout"] == "parquet" and tr.info["data_files"]["train"] == [
        "data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    assert tr.info["directory_sha256"] == te.info["directory_sha256"]


def test_validation_is_test_when_test_is_unlabelled_or_absent(tmp_path):
    tr, va = _rows(20, "tr"), _rows(9, "va")
    unlabelled = {"text": [f"te {i}" for i in range(6)], "label": [-1] * 6}  # sst2's hub test split
    for name, splits in (("with_test", {"train": tr, "validation": va, "test": unlabelled}),
                         ("no_test", {"train": tr, "validation": va})):
        for s, rows in splits.items():
            _write_parquet(tmp_path / name / "data" / f"{s}-00000-of-00001.parquet", rows, class_label=True)
        train, test = _both(tmp_path / name)
        assert test.texts == va["text"] and test.labels.tolist() == va["label"] and test.label_names == NAMES
        assert train.texts == tr["text"] and test.info["test_source_split"] == "validation"
        assert "'validation' split used as test" in test.info["test_rule"] and test.info["split_seed"] is None
    # a labelled test split wins over validation
    datasets.DatasetDict({"train": _dataset(tr), "validation": _dataset(va), "test": _dataset(_rows(6, "te"))}) \
        .save_to_disk(str(tmp_path / "dd"))
    assert load_split(tmp_path / "dd", "test").texts == _rows(6, "te")["text"]


def test_split_folders_and_top_level_parquet(tmp_path):
    tr, te = _rows(15, "tr"), _rows(6, "te")
    _write_parquet(tmp_path / "folders" / "train" / "part-0.parquet", tr)
    _write_parquet(tmp_path / "folders" / "test" / "part-0.parquet", te)
    train, test = _both(tmp_path / "folders")
    assert train.texts == tr["text"] and test.texts == te["text"] and test.info["test_source_split"] == "test"
    _write_parquet(tmp_path / "flat" / "everything.parquet", tr)  # no split name: train, split 30 %
    train, test = _both(tmp_path / "flat")
    assert sorted(train.texts + test.texts) == sorted(tr["text"]) and len(test) == round(0.3 * 15)
    assert train.info["test_source_split"] == "train" and "stratified 30%" in train.info["test_rule"]


def test_columns_given_and_missing_column_lists_the_columns(tmp_path):
    rows = {"sentence": [f"s {i}" for i in range(12)], "title": [f"t{i}" for i in range(12)],
            "y": [i % 2 for i in range(12)]}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows),
                          "test": datasets.Dataset.from_dict({k: v[:4] for k, v in rows.items()})}) \
        .save_to_disk(str(tmp_path / "cols"))
    with pytest.raises(ValueError) as e:
        load_split(tmp_path / "cols")
    msg = str(e.value)
    assert str(tmp_path / "cols") in msg and "['text', 'label']" in msg
    assert "['sentence', 'title', 'y']" in msg and "--text_column/--label_column" in msg
    d = load_split(tmp_path / "cols", "train", text_column="title,sentence", label_column="y")
    assert d.texts == [f"t{i} s {i}" for i in range(12)] and d.labels.tolist() == rows["y"]


def test_cleaning_as_for_local_files(tmp_path):
    tr = {"text": ["a", "b", "c", "a", "d", "e"], "label": [0, 1, 0, 0, 1, 2]}
    te = {"text": ["b", "x", "y", "z"], "label": [1, 0, 1, 2]}  # "b" repeats a train text
    datasets.DatasetDict({"train": _dataset(tr), "test": _dataset(te)}).save_to_disk(str(tmp_path / "dup"))
    train, test = _both(tmp_path / "dup")
    assert train.texts == ["a", "b", "c", "d", "e"] and test.texts == ["x", "y", "z"]
    assert train.info["duplicates_dropped"] == 2 and train.info["test_rows_equal_to_a_train_text"] == 1
    bad = {"text": [f"t{i}" for i in range(6)], "label": ["x", "y", None, "x", "y", "x"]}
    datasets.Dataset.from_dict(bad).save_to_disk(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match=r"1 row\(s\) without a label .*rows 3"):
        load_split(tmp_path / "missing")


def test_directories_that_are_no_dataset(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "notes.txt").write_text("hello")
    for name, holds in (("empty", "it is empty"), ("notes", "['notes.txt']")):
        with pytest.raises(ValueError) as e:
            load_split(tmp_path / name)
        msg = str(e.value)
        assert str(tmp_path / name) in msg and holds in msg
        assert "save_to_disk" in msg and "data/train-00000-of-00001.parquet" in msg
    for config in ("sst2", "cola"):  # a repository of several configurations
        _write_parquet(tmp_path / "glue" / config / "train-00000-of-00001.parquet", _rows(6, config))
    with pytest.raises(ValueError, match=r"2 folders \['cola', 'sst2'\].*pass the folder of one configuration"):
        load_split(tmp_path / "glue")
    assert load_split(tmp_path / "glue" / "sst2").info["dataset"] == "glue__sst2"
    lfs = tmp_path / "lfs" / "data" / "train-00000-of-00001.parquet"  # a clone without git lfs
    lfs.parent.mkdir(parents=True)
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")
    with pytest.raises(ValueError, match="git lfs pull"):
        load_split(tmp_path / "lfs")
    _write_parquet(tmp_path / "only_test" / "data" / "test-00000-of-00001.parquet", _rows(6, "t"))
    with pytest.raises(ValueError, match=r"splits \['test'\] but no train split"):
        load_split(tmp_path / "only_test")


def test_directory_options_that_do_not_apply(tmp_path):
    _dataset(_rows(12, "x")).save_to_disk(str(tmp_path / "ds"))
    assert isinstance(resolve_record(tmp_path / "ds"), DirectoryDataset)
    with pytest.raises(ValueError, match="brings its own splits"):
        load_split(tmp_path / "ds", test_file=str(tmp_path / "t.csv"))
    with pytest.raises(ValueError, match="revision"):
        load_split(tmp_path / "ds", revision="main")
    with pytest.raises(ValueError, match="encoding"):
        load_split(tmp_path / "ds", encoding="latin-1")


def test_split_column_of_a_train_only_directory_is_honoured(tmp_path):
    rows = {**_rows(12, "r"), "split": ["test" if i in (3, 7, 11) else "train" for i in range(12)]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "tagged"))
    train, test = _both(tmp_path / "tagged")
    assert test.texts == ["r text 3", "r text 7", "r text 11"] and len(train) == 9
    assert "'split' column" in test.info["test_rule"] and test.info["split_seed"] is None
