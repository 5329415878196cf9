"""Content-keyed provenance (issue 12, items 1-4): every script run twice around a changed input; the
second run's output changed, or the run was refused -- never an old number kept under the same name.

Tiny random Llama models and CSV files written here (tests/tiny_run.py); no network.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

import alignment_vis
import cache
import collect
import K_sweep
import linear_sklearn
import linear_training
import scores
from ntps.artifacts import ArtifactError
from ntps.io import OutputExistsError
from tests.tiny_run import cache_argv, make_model_dir, rows, run, write_csv


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("prov_model") / "tiny")


def _flip(data: list[dict], every: int = 3) -> list[dict]:
    """The same texts, every ``every``-th label flipped."""
    flip = {"pos": "neg", "neg": "pos"}
    return [{**r, "label": flip[r["label"]] if i % every == 0 else r["label"]} for i, r in enumerate(data)]


def _meta(out_dir):
    return json.loads((out_dir / "meta.json").read_text())


def test_cache_is_up_to_date_only_for_equal_content(model, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = write_csv(tmp_path / "d" / "data.csv", rows(30))
    out = run(cache, *cache_argv(model, data, tmp_path / "out"))
    first = _meta(out)
    assert first["data_sha256"] and first["model_digests"]["weights_sha256"] and first["text_column"] == "text"
    run(cache, *cache_argv(model, data, tmp_path / "out"))
    assert "up to date" in caplog.text and _meta(out)["seconds"] == first["seconds"]
    # labels edited under the same file name: refused, naming the changed digest (item 1)
    write_csv(data, _flip(rows(30)))
    with pytest.raises(OutputExistsError, match="data_sha256"):
        run(cache, *cache_argv(model, data, tmp_path / "out"))
    again = _meta(run(cache, *cache_argv(model, data, tmp_path / "out", "--overwrite")))
    assert again["data_sha256"] != first["data_sha256"] and again["fingerprint"] != first["fingerprint"]
    # another label column, another text column: other statistics
    with pytest.raises(OutputExistsError, match="label_column"):
        run(cache, *cache_argv(model, data, tmp_path / "out", "--label_column", "label2"))
    write_csv(data, [{**r, "text2": r["text"] + " very"} for r in _flip(rows(30))])
    with pytest.raises(OutputExistsError, match="text_column"):
        run(cache, *cache_argv(model, data, tmp_path / "out", "--text_column", "text2"))
    # a separate test file: the train split is the whole file now (N 21 -> 30)
    test_file = write_csv(tmp_path / "d" / "test.csv", rows(12, seed=1))
    with pytest.raises(OutputExistsError, match="data_sha256"):
        run(cache, *cache_argv(model, data, tmp_path / "out", "--test_file", test_file))


def test_two_local_files_with_one_folder_name_are_refused(model, tmp_path):
    a = write_csv(tmp_path / "projA" / "data" / "train.csv", rows(24))
    b = write_csv(tmp_path / "projB" / "data" / "train.csv", rows(24, seed=5))
    out = run(cache, *cache_argv(model, a, tmp_path / "out"))
    with pytest.raises(OutputExistsError, match="projA.*projB|share it"):
        run(cache, *cache_argv(model, b, tmp_path / "out"))
    assert _meta(out)["dataset_info"]["files"]["train"] == str(a)


def test_k_sweep_and_scores_follow_the_statistics(model, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data = write_csv(tmp_path / "data.csv", rows(40))
    out = run(cache, *cache_argv(model, data, tmp_path / "out"))
    sweep, base = run(K_sweep, "--stats_dir", out), run(scores, "--stats_dir", out)
    assert set(sweep["inputs"]) == {"meta.json", "stats.safetensors"} == set(base["inputs"])
    assert run(K_sweep, "--stats_dir", out)["rows"] == sweep["rows"] and "up to date" in caplog.text
    # cache.py --overwrite on edited labels: both recompute from the new sums (item 2)
    write_csv(data, _flip(rows(40)))
    run(cache, *cache_argv(model, data, tmp_path / "out", "--overwrite"))
    caplog.clear()
    sweep2, base2 = run(K_sweep, "--stats_dir", out), run(scores, "--stats_dir", out)
    assert "recomputing" in caplog.text
    assert sweep2["inputs"]["stats.safetensors"]["sha256"] != sweep["inputs"]["stats.safetensors"]["sha256"]
    assert [r["ntps"] for r in sweep2["rows"]] != [r["ntps"] for r in sweep["rows"]]
    assert [r["logme"] for r in base2["rows"]] != [r["logme"] for r in base["rows"]]
    on_disk = json.loads((out / "ntps_raw_descending.json").read_text())
    assert on_disk["inputs"] == sweep2["inputs"]


def test_an_edited_meta_json_is_refused_naming_the_field(model, tmp_path):
    data = write_csv(tmp_path / "data.csv", rows(40))
    out = run(cache, *cache_argv(model, data, tmp_path / "out", "--save_features"))
    meta = _meta(out)
    (out / "meta.json").write_text(json.dumps({**meta, "model": "Qwen/Qwen2-7B", "d": 3584}))
    for module, flag in ((K_sweep, "--stats_dir"), (scores, "--stats_dir"), (linear_sklearn, "--features_dir"),
                         (alignment_vis, "--stats_dir")):
        with pytest.raises(ArtifactError, match=r"(?=.*model: 'Qwen/Qwen2-7B' in meta.json)(?=.*d: 3584 in meta.json)"):
            run(module, flag, out)
    # a features file of another run is refused as well
    (out / "meta.json").write_text(json.dumps(meta))
    feats = np.load(out / "features_mean.npy")
    np.save(out / "features_mean.npy", feats + np.float16(1))
    with pytest.raises(ValueError, match="sha256 differs"):
        run(linear_sklearn, "--features_dir", out, "--test_features_dir", "none")


@pytest.fixture
def feature_dirs(model, tmp_path):
    data = write_csv(tmp_path / "data.csv", rows(60))
    args = cache_argv(model, data, tmp_path / "out", "--save_features")
    return {s: run(cache, *args, "--split", s) for s in ("train", "test")}, data, args


def test_probes_follow_the_features_and_refuse_mixed_splits(feature_dirs, tmp_path):
    dirs, data, args = feature_dirs
    first = run(linear_sklearn, "--features_dir", dirs["train"])
    assert {"train/features_mean.npy", "test/features_mean.npy", "train/meta.json"} <= set(first["inputs"])
    write_csv(data, _flip(rows(60)))
    run(cache, *args, "--split", "train", "--overwrite")
    second = run(linear_sklearn, "--features_dir", dirs["train"])
    assert second["inputs"]["train/labels.npy"] != first["inputs"]["train/labels.npy"]
    assert [r["acc"] for r in second["rows"]] != [r["acc"] for r in first["rows"]]
    # test features cut at another max_length (item 3), or of another label mapping: refused
    run(cache, *args, "--split", "test", "--overwrite", "--max_length", "4")
    with pytest.raises(ValueError, match="max_length: 512 vs 4"):
        run(linear_sklearn, "--features_dir", dirs["train"])
    write_csv(data, [{**r, "label": {"pos": "yes", "neg": "no"}[r["label"]]} for r in rows(60)])
    run(cache, *args, "--split", "test", "--overwrite")
    with pytest.raises(ValueError, match="label_names"):
        run(linear_sklearn, "--features_dir", dirs["train"])


def test_training_on_cached_features_refuses_changed_features(feature_dirs, tmp_path):
    dirs, data, args = feature_dirs
    train = ["--model", args[1], "--dataset", data, "--output_dir", tmp_path / "runs", "--epochs", "1",
             "--device", "cpu", "--features_dir", dirs["train"], "--test_features_dir", dirs["test"]]
    res = run(linear_training, *train)
    assert "features_dir/features_mean.npy" in res["run_key"]["inputs"]
    assert run(linear_training, *train).get("reused")
    write_csv(data, _flip(rows(60)))
    run(cache, *args, "--split", "train", "--overwrite")
    with pytest.raises(OutputExistsError, match="inputs: .*features_dir/labels.npy"):
        run(linear_training, *train)


def test_alignment_vis_records_the_artifact_it_read(model, tmp_path):
    data = write_csv(tmp_path / "data.csv", rows(40))
    out = run(cache, *cache_argv(model, data, tmp_path / "out"))
    argv = ("--stats_dir", out, "--formats", "png", "--dpi", "20", "--words", "Joy=lovely,amazing;Sad=sad,awful")
    first = run(alignment_vis, *argv)["meta"]["inputs"]
    write_csv(data, _flip(rows(40)))
    run(cache, *cache_argv(model, data, tmp_path / "out", "--overwrite"))
    second = run(alignment_vis, *argv)["meta"]["inputs"]
    assert first["stats.safetensors"]["sha256"] != second["stats.safetensors"]["sha256"]


def test_collect_records_its_inputs_and_skips_stale_results(model, tmp_path, caplog):
    data = write_csv(tmp_path / "data.csv", rows(40))
    root = tmp_path / "out"
    out = run(cache, *cache_argv(model, data, root))
    run(K_sweep, "--stats_dir", out)
    run(scores, "--stats_dir", out)
    table = run(collect, "--output_dir", root)
    record = json.loads((root / "collected.json").read_text())
    assert any(k.endswith("ntps_raw_descending.csv") for k in record["inputs"]) and not record["problems"]
    assert {"ntps_raw_descending", "logme"} <= set(table["score"])
    # the statistics recomputed, K_sweep not rerun: its rows are stale and kept out of the table
    write_csv(data, _flip(rows(40)))
    run(cache, *cache_argv(model, data, root, "--overwrite"))
    run(scores, "--stats_dir", out)
    table = run(collect, "--output_dir", root)
    assert "ntps_raw_descending" not in set(table["score"]) and "logme" in set(table["score"])
    record = json.loads((root / "collected.json").read_text())
    assert any("stale" in p and "ntps_raw_descending" in p for p in record["problems"])
    with pytest.raises(collect.CollectError, match="stale"):
        run(collect, "--output_dir", root, "--strict")
