"""The public Python API (issue 16, item 2) equals what the scripts write, on a tiny random Llama (no network).

An in-memory ``ntps.compute_statistics`` equals cache.py's artifact for the same texts, ``ntps.score`` equals
K_sweep.py's CSV rows, ``ntps.baselines`` equals scores.py's, and ``save_stats``/``load_stats`` round-trip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import cache
import K_sweep
import ntps
import scores
from ntps.artifacts import LAYER_KEYS
from ntps.data import load_split
from ntps.models import load_model_and_tokenizer

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "tiny_sentiment.csv"


@pytest.fixture(scope="module")
def setup(tmp_path_factory, model_dirs):
    """A tiny Llama directory, cache.py's artifact of the fixture's train split, and the loaded model."""
    root, model_dir = tmp_path_factory.mktemp("api"), model_dirs["llama"]
    artifact = cache.main(cache.parse_args(["--model", str(model_dir), "--dataset", str(FIXTURE), "--output_dir",
                                            str(root / "out"), "--max_samples", "0", "--batch_size", "2"]))
    model, tokenizer, _ = load_model_and_tokenizer(str(model_dir))
    return {"root": root, "artifact": Path(artifact), "model": model, "tokenizer": tokenizer,
            "data": load_split(str(FIXTURE), "train")}


@pytest.fixture(scope="module")
def stats(setup):
    data = setup["data"]
    return ntps.compute_statistics(setup["model"], setup["tokenizer"], data.texts, data.labels, batch_size=2,
                                   label_names=data.label_names)


def rel_err(a, b) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def assert_same_sums(got, ref, layers):
    assert (got.n_texts, got.n_tokens, got.n_pairs) == (ref.n_texts, ref.n_tokens, ref.n_pairs)
    assert torch.equal(got.class_counts, ref.class_counts)
    for layer in layers:
        for key in LAYER_KEYS:
            assert rel_err(getattr(got.layers[layer], key), getattr(ref.layers[layer], key)) <= 1e-12, (layer, key)


def test_in_memory_statistics_equal_the_artifact_cache_py_writes(setup, stats):
    ref = ntps.load_stats(setup["artifact"])
    assert sorted(stats.layers) == sorted(ref.layers) == [0, 1, 2]
    assert_same_sums(stats, ref, [0, 1, 2])
    assert stats.meta["label_names"] == ref.meta["label_names"] and stats.meta["d"] == 32
    assert stats.meta["n_states"] == 3 and stats.meta["dtype"] == "float32"
    assert not setup["model"].training  # the loader's eval mode is kept


def test_layer_subset_and_string_labels(setup, stats):
    data = setup["data"]
    names = np.array(data.label_names)[data.labels]  # the same labels as strings: encoded in sorted order
    sub = ntps.compute_statistics(setup["model"], setup["tokenizer"], data.texts, names.tolist(), layers=[0, -1],
                                  batch_size=2)
    assert sorted(sub.layers) == [0, 2] and sub.meta["label_names"] == sorted(data.label_names)
    assert_same_sums(sub, stats, [0, 2])


def test_save_and_load_round_trip_feeds_the_scripts(setup, stats, tmp_path):
    out = ntps.save_stats(stats, tmp_path / "run", meta={"dataset": "tiny", "split": "train"})
    back = ntps.load_stats(out)
    assert_same_sums(back, stats, [0, 1, 2])
    assert back.meta["dataset"] == "tiny" and back.meta["model"] == stats.meta["model"]
    assert sorted(ntps.load_stats(out, layers=[1]).layers) == [1]
    rows = K_sweep.main(K_sweep.parse_args(["--stats_dir", str(out), "--fractions", "0.5"]))["rows"]
    assert len(rows) == 3


@pytest.mark.parametrize("argv,kwargs", [
    ([], {}),
    (["--order", "ascending", "--k", "1,3,40"], {"order": "ascending", "k": [1, 3, 40]}),
    (["--variant", "whitened", "--fractions", "0.1,0.5,1"], {"variant": "whitened", "fractions": [0.1, 0.5, 1]}),
])
def test_score_equals_k_sweep_csv_rows(setup, stats, argv, kwargs, tmp_path):
    K_sweep.main(K_sweep.parse_args(["--stats_dir", str(setup["artifact"]), "--output_dir", str(tmp_path), *argv]))
    csv = next(tmp_path.rglob("ntps_*.csv"))
    want = pd.read_csv(csv)
    for source in (stats, ntps.load_stats(setup["artifact"])):
        got = ntps.score(source, **kwargs)
        assert list(got.columns) == list(want.columns)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12, atol=0)


def test_baselines_equal_scores_py_rows(setup, stats, tmp_path):
    for convention in ("paper", "reference"):
        scores.main(scores.parse_args(["--stats_dir", str(setup["artifact"]), "--output_dir", str(tmp_path),
                                       "--logme_convention", convention, "--overwrite"]))
        want = pd.read_csv(next(tmp_path.rglob("scores.csv")))
        got = ntps.baselines(stats, logme_convention=convention)
        pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12, atol=0)
    assert list(ntps.baselines(stats, layers="1-2")["layer"]) == [1, 2]


def test_score_and_baselines_are_also_the_modules():
    from ntps.baselines import logme  # noqa: F401
    from ntps.score import solve_layer  # noqa: F401

    assert callable(ntps.score) and callable(ntps.baselines)
    assert ntps.score.solve_layer is solve_layer and ntps.baselines.logme is logme


def test_errors(setup, stats):
    model, tok, data = setup["model"], setup["tokenizer"], setup["data"]
    with pytest.raises(ValueError, match="as many labels as texts"):
        ntps.compute_statistics(model, tok, data.texts, data.labels[:-1])
    with pytest.raises(ValueError, match="outside 0..1"):
        ntps.compute_statistics(model, tok, data.texts[:2], [0, 2], num_classes=2)
    with pytest.raises(ValueError, match="out of range"):
        ntps.compute_statistics(model, tok, data.texts[:2], [0, 1], layers=[5])
    with pytest.raises(ValueError, match="not in the statistics"):
        ntps.score(ntps.compute_statistics(model, tok, data.texts[:4], [0, 1, 0, 1], layers=[0, 2]), layers=[1])
    with pytest.raises(ValueError, match="not both"):
        ntps.score(stats, fractions=[0.5], k=[2])
    with pytest.raises(ValueError, match="order must be"):
        ntps.score(stats, order="top")
