"""Checks before the forward pass, failures that never block the fix, and honest numbers (issue 12, items
5-10, 14, 15): each case a small input that gave a silent wrong number, a late failure or a misleading
message before.

Tiny random Llama models and CSV files written here (tests/tiny_run.py); no network.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

import cache
import K_sweep
import linear_sklearn
import ntps.models
import scores
from ntps import cli
from ntps.accumulate import StatsAccumulator
from ntps.artifacts import LayerSums, Stats, save_stats
from ntps.io import OutputLockedError, OutputNotWritableError, output_lock
from ntps.probes import probe_both, sklearn_probes
from tests.tiny_run import cache_argv, make_model_dir, rows, run, write_csv


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("bad_model") / "tiny")


@pytest.fixture
def no_model(monkeypatch):
    """Loading a model fails the test: the checks must come first."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the check")

    monkeypatch.setattr(ntps.models, "load_model_and_tokenizer", refuse)


def synthetic_artifact(path, layers=(0, 5), d=6, N=40, n_pairs=None, C=2):
    rng = np.random.default_rng(0)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
    sums = {}
    for layer in layers:
        X, Y = rng.normal(size=(N, d)), np.eye(C)[np.arange(N) % C]
        S = rng.normal(size=(3 * N, d)) * (0 if n_pairs == 0 else 1)
        sums[layer] = LayerSums(t(X.T @ X), t(X.T @ Y), t(S.T @ S), t(S.T @ rng.normal(size=(3 * N, d))), t(X.sum(0)))
    stats = Stats(layers=sums, class_counts=torch.bincount(torch.arange(N) % C), n_texts=N, n_tokens=4 * N,
                  n_pairs=3 * N if n_pairs is None else n_pairs)
    save_stats(path, stats, {"model": "toy", "dataset": "toy", "split": "train", "n_states": max(layers) + 1})
    return path


# --- item 5: the paper's saga fit and the converged fit ------------------------------------------------


def test_probes_report_the_converged_fit_and_never_hide_convergence():
    rng = np.random.default_rng(0)
    N, d = 200, 120
    y = np.arange(N) % 2
    X = rng.normal(size=(N, d))
    X[:, 0] += 0.3 * y
    X = X @ rng.normal(size=(d, d))
    res, notes = probe_both(X, y, 2, where="layer 3")
    train = res["train"]
    assert train["acc"] < train["acc_converged"] - 0.01 and train["saga_converged"] and train["lbfgs_converged"]
    assert train["lbfgs_n_iter"] > train["saga_n_iter"] and notes and "layer 3" in notes[0] and "short" in notes[0]
    # a fit that hits max_iter is recorded, and sklearn's warning is not filtered out
    _, fit = sklearn_probes(X, y, 2, lr_kwargs={"max_iter": 2}, return_fit=True)
    assert fit["converged"] is False and fit["n_iter"] == 2 and fit["warnings"]
    with pytest.warns(ConvergenceWarning):
        sklearn_probes(X, y, 2, lr_kwargs={"max_iter": 2})


# --- item 6: features beyond float16's range --------------------------------------------------------


def test_features_beyond_float16_are_stored_as_float32_never_inf(tmp_path):
    big = make_model_dir(tmp_path / "big", scale=1e7)  # embedding outputs ~1e5, like gemma3's <bos> state
    data = write_csv(tmp_path / "data.csv", rows(40))
    out = run(cache, *cache_argv(big, data, tmp_path / "out", "--save_features"))
    meta = json.loads((out / "meta.json").read_text())
    feats = np.load(out / "features_mean.npy")
    assert meta["features"]["dtype"] == "float32" == str(feats.dtype)
    assert meta["features"]["requested_dtype"] == "float16"
    assert np.isfinite(feats).all() and np.abs(feats).max() > 65504
    assert any("float32" in w for w in meta["warnings"])
    res = run(linear_sklearn, "--features_dir", out, "--test_features_dir", "none", "--layers", "0")
    assert res["rows"][0]["acc"] >= 0.5
    small = run(cache, *cache_argv(make_model_dir(tmp_path / "small"), data, tmp_path / "out2", "--save_features"))
    assert np.load(small / "features_mean.npy").dtype == np.float16


# --- items 7-10: checks before the model, nothing left that blocks the fix -------------------------------


def test_data_is_checked_before_the_model_is_loaded(tmp_path, no_model):
    one = write_csv(tmp_path / "one.csv", [{"text": "good film", "label": "pos"}] * 6)
    with pytest.raises(ValueError, match="one class"):
        run(cache, *cache_argv("m", one, tmp_path / "out"))
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    with pytest.raises(ValueError, match="no texts|no data rows"):
        run(cache, *cache_argv("m", header, tmp_path / "out"))
    assert not list(tmp_path.rglob("meta.json")) and not list(tmp_path.rglob(".partial"))


def test_scores_refuse_an_artifact_of_one_class(tmp_path):
    synthetic_artifact(tmp_path, C=1)
    with pytest.raises(ValueError, match="at least two"):
        run(scores, "--stats_dir", tmp_path)


@pytest.mark.parametrize("flag,value,message", [
    ("--max_length", "0", "positive"), ("--batch_size", "-4", "positive"), ("--batch_size", "0", "positive"),
    ("--layers", "5-2", "runs downwards"), ("--layers", "abc", "not an index")])
def test_bad_arguments_stop_at_parse_time(flag, value, message, capsys):
    with pytest.raises(SystemExit) as e:
        cache.parse_args([flag, value])
    assert e.value.code == 2 and message in capsys.readouterr().err
    if flag == "--layers":
        with pytest.raises(ValueError, match=message):
            cli.parse_int_list(value, 30)


def test_unwritable_output_fails_before_any_computation(tmp_path, no_model, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    data = write_csv(tmp_path / "data.csv", rows(20))
    with pytest.raises(OutputNotWritableError, match="cannot write"):
        run(cache, *cache_argv("m", data, blocker / "out"))
    art = synthetic_artifact(tmp_path / "art")
    monkeypatch.setattr(K_sweep, "sweep_layer", lambda *a, **k: pytest.fail("computed before the check"))
    with pytest.raises(OutputNotWritableError, match="--output_dir"):
        run(K_sweep, "--stats_dir", art, "--output_dir", blocker)
    with pytest.raises(OutputNotWritableError):
        run(scores, "--stats_dir", art, "--output_dir", blocker)


def test_a_second_run_into_one_directory_is_refused_naming_the_first(model, tmp_path):
    data = write_csv(tmp_path / "data.csv", rows(20))
    out_dir = cache.run_dir(tmp_path / "out", str(model), str(data), "train")
    with output_lock(out_dir, "cache.py"):
        with pytest.raises(OutputLockedError, match=rf"pid {os.getpid()}"):
            run(cache, *cache_argv(model, data, tmp_path / "out"))
    assert not (out_dir / ".partial").exists()
    assert run(cache, *cache_argv(model, data, tmp_path / "out")) == out_dir


def test_a_failed_run_leaves_nothing_that_blocks_the_corrected_command(model, tmp_path, monkeypatch):
    data = write_csv(tmp_path / "data.csv", rows(40))
    original = StatsAccumulator.add_batch
    monkeypatch.setattr(StatsAccumulator, "add_batch", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        run(cache, *cache_argv(model, data, tmp_path / "out", "--save_features"))
    assert not list(tmp_path.rglob(".partial"))
    monkeypatch.setattr(StatsAccumulator, "add_batch", original)
    # other settings, and no --overwrite needed
    out = run(cache, *cache_argv(model, data, tmp_path / "out", "--max_samples", "20"))
    assert json.loads((out / "meta.json").read_text())["n_texts"] == 20


# --- items 14, 15: Cover's bound, layers the artifact holds, one-token texts ---------------------------


def test_few_texts_for_the_width_warn_in_every_json(tmp_path):
    data = write_csv(tmp_path / "data.csv", rows(40))
    args = cache_argv(make_model_dir(tmp_path / "wide", d=32), data, tmp_path / "out", "--save_features")
    out = run(cache, *args)  # 28 train texts, d = 32: N < 2(d + 1) = 66
    run(cache, *args, "--split", "test")
    outputs = [json.loads((out / "meta.json").read_text()), run(K_sweep, "--stats_dir", out),
               run(scores, "--stats_dir", out), run(linear_sklearn, "--features_dir", out)]
    for record in outputs:
        assert any("Cover's bound" in w and "more texts" in w for w in record["warnings"])


def test_k_sweep_names_the_layers_the_artifact_holds(tmp_path):
    synthetic_artifact(tmp_path)
    with pytest.raises(ValueError, match=r"\[7\] out of range: not saved in the artifact, which holds layers \[0, 5\]"):
        run(K_sweep, "--stats_dir", tmp_path, "--layers", "7")
    with pytest.raises(ValueError, match=r"\[3\].*holds layers \[0, 5\]"):
        run(scores, "--stats_dir", tmp_path, "--layers", "3")
    assert {r["layer"] for r in run(K_sweep, "--stats_dir", tmp_path, "--layers", "-1")["rows"]} == {5}


def test_one_token_texts_name_the_cause_and_the_fix(model, tmp_path):
    data = write_csv(tmp_path / "words.csv", [{"text": w, "label": "pos" if i % 2 else "neg"}
                                              for i, w in enumerate(["good", "bad", "sad", "fine"] * 5)])
    out = run(cache, *cache_argv(model, data, tmp_path / "out"))
    assert any("one token" in w for w in json.loads((out / "meta.json").read_text())["warnings"])
    with pytest.raises(ValueError, match="one token long.*add nothing to C0/C1.*Fix: use longer texts"):
        run(K_sweep, "--stats_dir", out)
    assert len(run(scores, "--stats_dir", out)["rows"]) == 3  # the baselines need no pairs


# --- item 11 and 15 through the scripts: --merge_label_variants and --encoding reach load_split ------------


def test_label_variants_and_encoding_flags_reach_the_data(tmp_path, no_model):
    data = rows(40)
    for r in data[::4]:
        r["label"] = r["label"].upper()
    variants = write_csv(tmp_path / "variants.csv", data)
    with pytest.raises(ValueError, match="--merge_label_variants"):
        run(cache, *cache_argv("m", variants, tmp_path / "out"))
    latin = tmp_path / "latin.csv"
    latin.write_bytes(b"text,label\n" + "".join(f"caf\u00e9 {r['text']},{r['label'].lower()}\n"
                                                         for r in data).encode("latin-1"))
    with pytest.raises(ValueError, match="--encoding latin-1"):
        run(cache, *cache_argv("m", latin, tmp_path / "out"))
    for argv in ([variants, "--merge_label_variants"], [latin, "--encoding", "latin-1"]):  # data pass, model refused
        with pytest.raises(AssertionError, match="the model was loaded before the check"):
            run(cache, *cache_argv("m", argv[0], tmp_path / "out", *argv[1:]))
