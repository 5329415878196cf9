"""Input hygiene of ntps.data (issue 12, items 7, 11, 12, 13, 15): every bad local file or label column is
refused by ``load_split`` with a message naming the file, the problem and the fix, before any model loads;
duplicates and train/test overlap are dropped and counted; a ``split`` column is honoured.

Each test writes its own small files; hub data is an in-memory ``datasets.DatasetDict``. No network.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ntps.data import load_split

FIX = Path(__file__).resolve().parents[1] / "fixtures"


def _csv(path: Path, rows, header="text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in rows), encoding="utf-8")
    return path


def _rows(n: int, labels=("neg", "pos"), prefix="t"):
    return [(f"{prefix}{i}", labels[i % len(labels)]) for i in range(n)]


@pytest.fixture
def no_hub(monkeypatch):
    """``datasets.load_dataset`` fails the test: a local name must never reach the hub."""
    datasets = pytest.importorskip("datasets")

    def load_dataset(*a, **k):
        raise AssertionError(f"hub lookup for {a}")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)


# ------------------------------------------------------------------------------- item 11: label cells


@pytest.mark.parametrize("token", ["NaN", "NA", "None", "null", "nan", "N/A"])
def test_missing_label_tokens_are_errors_listing_the_rows(tmp_path, token):
    p = _csv(tmp_path / "export.csv", _rows(10) + [("x1", token), ("x2", token)])
    with pytest.raises(ValueError) as e:
        load_split(p)
    msg = str(e.value)
    assert str(p) in msg and "2 row(s) without a label" in msg and repr(token) in msg
    assert "11, 12" in msg and "--label_column" in msg  # data rows counted from 1


def test_missing_label_in_json_and_parquet(tmp_path):
    import pandas as pd

    rows = [{"text": f"t{i}", "label": ["a", "b", None][i % 3]} for i in range(9)]
    (tmp_path / "n.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame({"text": [f"t{i}" for i in range(6)], "label": [0.0, 1.0, float("nan")] * 2}).to_parquet(
        tmp_path / "n.parquet")
    for name in ("n.jsonl", "n.parquet"):
        with pytest.raises(ValueError, match=r"without a label .*rows 3, 6"):
            load_split(tmp_path / name)


def test_label_spelling_variants_error_then_merge_with_the_flag(tmp_path, caplog):
    rows = [(f"t{i}", y) for i, y in enumerate(["spam", "Spam", " spam ", "spam", "ham", "ham", "ham", "spam"])]
    p = _csv(tmp_path / "v.csv", rows)
    with pytest.raises(ValueError) as e:
        load_split(p)
    msg = str(e.value)
    assert str(p) in msg and "' spam ' (1 row)" in msg and "'Spam' (1 row)" in msg and "'spam' (3 rows)" in msg
    assert "--merge_label_variants" in msg
    with caplog.at_level(logging.WARNING, logger="ntps.data"):
        tr = load_split(p, merge_label_variants=True)
        te = load_split(p, "test", merge_label_variants=True)
    assert tr.label_names == ["ham", "spam"] and tr.num_classes == 2
    assert tr.info["label_variants_merged"] == {"spam": {" spam ": 1, "Spam": 1, "spam": 3}}
    assert (tr.class_counts + te.class_counts).tolist() == [3, 5]
    assert "merged" in caplog.text


# ------------------------------------------------------------------------------- item 12: duplicates


def test_duplicates_dropped_counted_and_logged(tmp_path, caplog):
    rows = _rows(20) + [("t0", "neg"), ("t0", "neg"), ("t3", "pos"), ("clash", "neg"), ("clash", "pos")]
    p = _csv(tmp_path / "d.csv", rows)
    with caplog.at_level(logging.WARNING, logger="ntps.data"):
        tr, te = load_split(p), load_split(p, "test")
    assert tr.info["duplicates_dropped"] == 3 and tr.info["conflicting_duplicates_dropped"] == 2
    texts = tr.texts + te.texts
    assert sorted(texts) == sorted(f"t{i}" for i in range(20)) and not set(tr.texts) & set(te.texts)
    assert "3 duplicate row(s) dropped" in caplog.text


def test_texts_in_both_train_and_test_dropped_from_test(tmp_path, caplog):
    train = _csv(tmp_path / "tr.csv", _rows(10))
    test = _csv(tmp_path / "te.csv", _rows(4, prefix="u") + [("t1", "pos"), ("t2", "neg"), ("u0", "neg")])
    both = (tmp_path / "both.csv")
    both.write_text("text,label,split\n" + "".join(f"{t},{y},train\n" for t, y in _rows(10)) +
                    "".join(f"{t},{y},test\n" for t, y in _rows(4, prefix="u") + [("t1", "pos"), ("t2", "neg")]))
    for name, kw in ((f"train={train},test={test}", {}), (train, {"test_file": str(test)}), (both, {})):
        with caplog.at_level(logging.WARNING, logger="ntps.data"):
            te = load_split(name, "test", **kw)
        assert te.info["test_rows_equal_to_a_train_text"] == 2, name
        assert te.texts == ["u0", "u1", "u2", "u3"] and te.info["duplicates_dropped"] >= 2
        assert "2 test row(s) repeat a train text" in caplog.text
        caplog.clear()


def test_hub_duplicates_and_overlap(monkeypatch):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": ["a", "b", "c", "d", "a", "e"], "label": [0, 1, 0, 1, 0, 1]}),
        "test": datasets.Dataset.from_dict({"text": ["f", "g", "b"], "label": [0, 1, 1]})})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: dd)
    tr, te = load_split("someorg/toy", "train"), load_split("someorg/toy", "test")
    assert tr.texts == ["a", "b", "c", "d", "e"] and te.texts == ["f", "g"]
    assert tr.info["duplicates_dropped"] == 2 and tr.info["test_rows_equal_to_a_train_text"] == 1
    assert te.info["row_indices"] == [0, 1]


def test_hub_string_label_cells_checked(monkeypatch):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": list("abcdef"), "label": ["x", "y", "NA", "x", "Y", "y"]}),
        "test": datasets.Dataset.from_dict({"text": ["g", "h"], "label": ["x", "y"]})})
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: dd)
    with pytest.raises(ValueError, match=r"someorg/toy: 1 row\(s\) without a label .*train:2"):
        load_split("someorg/toy")
    dd["train"] = dd["train"].select([0, 1, 3, 4, 5])
    with pytest.raises(ValueError, match="'Y' .*--merge_label_variants"):
        load_split("someorg/toy")
    assert load_split("someorg/toy", merge_label_variants=True).label_names == ["x", "y"]


# ------------------------------------------------------------------------------- item 13: split column


def test_split_column_is_honoured(tmp_path):
    rows = _rows(12)
    p = tmp_path / "s.csv"
    p.write_text("text,label,split\n" + "".join(f"{t},{y},{'TEST' if i < 4 else 'train'}\n"
                                                 for i, (t, y) in enumerate(rows)))
    tr, te = load_split(p), load_split(p, "test")
    assert te.texts == ["t0", "t1", "t2", "t3"] and tr.texts == [f"t{i}" for i in range(4, 12)]
    assert "'split' column" in te.info["test_rule"] and te.info["split_seed"] is None
    p.write_text("text,label,split\n" + "".join(f"{t},{y},dev\n" for t, y in rows))
    with pytest.raises(ValueError, match=r"s\.csv: column 'split' has values \['dev'\]"):
        load_split(p)
    p.write_text("text,label,split\n" + "".join(f"{t},{y},train\n" for t, y in rows))
    with pytest.raises(ValueError, match="marks no row as test"):
        load_split(p)


# ------------------------------------------------------------------------------- item 15: bad files


def test_not_utf8_names_file_byte_and_fix(tmp_path):
    p = tmp_path / "latin.csv"
    p.write_bytes(("text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(8)) + "caf\xe9,1\n").encode("latin-1"))
    with pytest.raises(ValueError) as e:
        load_split(p)
    msg = str(e.value)
    assert str(p) in msg and "not utf-8" in msg and "0xe9" in msg and "line 10" in msg and "--encoding" in msg
    d = load_split(p, "train", encoding="latin-1")
    assert "café" in d.texts + load_split(p, "test", encoding="latin-1").texts
    assert d.info["encoding"] == "latin-1"


def test_tsv_saved_as_csv(tmp_path):
    plain = tmp_path / "plain.csv"
    plain.write_text("text\tlabel\n" + "".join(f"t{i}\t{i % 2}\n" for i in range(8)))
    commas = tmp_path / "commas.csv"  # a comma in a text: pandas' "Expected 1 fields in line 5, saw 2"
    commas.write_text("text\tlabel\n" + "".join(f"t{i}{', x' * (i == 3)}\t{i % 2}\n" for i in range(8)))
    for p in (plain, commas):
        with pytest.raises(ValueError, match=rf"{p.name} looks tab-separated .* rename it to \.tsv"):
            load_split(p)


def test_json_array_of_objects_is_read(tmp_path):
    import pandas as pd

    rows = pd.read_json(FIX / "tiny_topics.jsonl", lines=True).to_dict("records")
    (tmp_path / "a.json").write_text(json.dumps(rows, indent=1))
    ref, got = load_split(FIX / "tiny_topics.jsonl"), load_split(tmp_path / "a.json")
    assert got.texts == ref.texts and got.labels.tolist() == ref.labels.tolist()


def test_missing_paths_say_no_such_file_never_the_hub(tmp_path, monkeypatch, no_hub):
    (tmp_path / "data").mkdir()
    _csv(tmp_path / "data" / "train.csv", _rows(10))
    for cwd, name in ((tmp_path, "data/train"), (tmp_path, str(tmp_path / "data" / "train")),
                      (tmp_path / "data", "train")):  # a typo: no extension
        monkeypatch.chdir(cwd)
        with pytest.raises(FileNotFoundError, match=r"no such file.*did you mean .*train\.csv"):
            load_split(name)
    monkeypatch.chdir(tmp_path)
    for name in ("data/nothing.csv", "./nothing", "data/sub/nothing", "train=data/train.csv,test=data/te.csv"):
        with pytest.raises(FileNotFoundError, match="no such file"):
            load_split(name)
    with pytest.raises(FileNotFoundError, match="the test file 'data/te.csv'"):
        load_split("data/train.csv", test_file="data/te.csv")


# ------------------------------------------------------------------------------- item 7: classes, empty files


def test_single_class_empty_and_header_only_files(tmp_path):
    one = _csv(tmp_path / "one.csv", _rows(10, labels=("pos",)))
    for split in ("train", "test"):
        with pytest.raises(ValueError, match=r"one\.csv: the train split has 7 rows of the one class 'pos'; "
                                             r"NTPS needs at least 2 classes"):
            load_split(one, split)
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    with pytest.raises(ValueError, match=r"header\.csv has a header \(text, label\) but no data rows"):
        load_split(header)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv is empty"):
        load_split(empty)
    train = _csv(tmp_path / "tr.csv", _rows(6))
    with pytest.raises(ValueError, match=r"te\.csv has a header"):
        load_split(train, test_file=str(header.rename(tmp_path / "te.csv")))


def test_empty_test_split_after_overlap_is_an_error(tmp_path):
    train = _csv(tmp_path / "tr.csv", _rows(6))
    test = _csv(tmp_path / "te.csv", _rows(2))
    assert len(load_split(train, test_file=str(test))) == 6
    with pytest.raises(ValueError, match=r"the test split is empty"):
        load_split(train, "test", test_file=str(test))


# ------------------------------------------------------------------------------- clean inputs unchanged


def test_clean_inputs_keep_their_content_digest():
    """The sha256 of the (text, label) content of clean files is what it was before these checks."""
    want = {("tiny_sentiment.csv", "train"): "837778768cee97b549f6aa4033aa88c6fdbf105c521ba1c53543f086c6cff5cc",
            ("tiny_sentiment.csv", "test"): "3ab5f173cd4ddd62c6c7464565cbb66d7a84b35833eb79eeeae592d35d4c808e",
            ("tiny_topics.jsonl", "train"): "1ec274b43ea74a7de8688039f2f218ca757b38e2c6abdce9b85a605c041f7542",
            ("tiny_topics.jsonl", "test"): "a390724a4c13be4dbf36dcdda596f59632df3a87098d09689dda3d270b80026b"}
    for (name, split), digest in want.items():
        d = load_split(FIX / name, split)
        assert d.info["sha256"] == digest and d.info["duplicates_dropped"] == 0, (name, split)
