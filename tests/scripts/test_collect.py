"""collect.py (the run tree into one long table) and analyze.py on synthetic run trees and tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyze
import collect


def _write_sweep(path: Path, rng, layers=(0, 1), fractions=(0.25, 0.5), with_chance=True):
    rows = []
    for layer in layers:
        for f in fractions:
            k_v = int(f * 16)
            rows.append({"layer": layer, "fraction": f, "k": k_v, "k_U": 1, "k_V": k_v, "r_U": 2, "r_V": 16,
                         "label_rank": 1, "ntps": rng.uniform(), "unique": "True",
                         **({"chance": k_v / 32} if with_chance else {})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, index=False)


def make_runs(root: Path) -> Path:
    """1 model x 3 datasets; pieces deliberately missing or malformed."""
    rng = np.random.default_rng(0)
    m = root / "org__tiny"
    for ds in ("d__a", "b", "c"):
        tr = m / ds / "train"
        _write_sweep(tr / "ntps_raw_desc.csv", rng)
        (tr / "meta.json").write_text(json.dumps({"model": "org/tiny", "dataset": ds.replace("__", "/"),
                                                  "split": "train", "n_texts": 10, "d": 32}))
    _write_sweep(m / "d__a" / "train" / "ntps_whitened_x_asc.csv", rng, with_chance=False)
    pd.DataFrame({"layer": [0, 0, 1, 1], "split": ["train", "test"] * 2, "acc": [0.6, 0.5, 0.9, 0.8],
                  "log_loss": [0.7, 0.8, 0.3, 0.4], "mse": [0.2, 0.3, 0.1, 0.15]}).to_csv(
        m / "d__a" / "train" / "probes_sklearn.csv", index=False)
    for name, acc in (("linear", 0.7), ("lora", 0.9)):
        (m / "d__a" / name).mkdir()
        (m / "d__a" / name / "results.json").write_text(json.dumps({"test_accuracy": acc}))
    (m / "b" / "lora").mkdir()
    (m / "b" / "lora" / "results.json").write_text(json.dumps({"test_accuracy": 0.8}))
    (m / "c" / "train" / "ntps_raw_asc.csv").write_text("foo,bar\n1,2\n")  # malformed: no layer/ntps
    return root


def test_collect_long_table(tmp_path, caplog):
    runs = make_runs(tmp_path / "runs")
    t = collect.collect(runs)
    assert "missing required column" in caplog.text
    sweeps = t[t.score.isin(["ntps_raw_desc", "ntps_whitened_x_asc"])]
    assert len(sweeps) == 3 * 4 + 4  # 3 datasets x (2 layers x 2 fractions) + the whitened_x sweep
    # derived from each raw sweep: minus_chance (4 cells), best and margin_best (2 layers each); label_rank per layer
    assert len(t) == len(sweeps) + 3 * (4 + 2 + 2 + 2)
    rank = t[t.score == "label_rank"]
    assert len(rank) == 6 and (rank.value == 1).all() and rank.fraction.isna().all() and rank.chance.isna().all()
    assert list(t.columns[:10]) == collect.KEY_COLS
    assert t.columns.is_unique  # layer_probe_test_acc once (it also ends in _test_acc)
    a = t[(t.dataset == "d/a") & (t.score == "ntps_raw_desc")]
    assert a.model.unique().tolist() == ["org/tiny"] and len(a) == 4
    assert (a.probe_layer == 1).all() and (a.probe_train_acc == 0.9).all()
    assert (a.probe_test_mse == 0.15).all()
    assert a.set_index("fraction").groupby("layer").layer_probe_train_acc.first().to_dict() == {0: 0.6, 1: 0.9}
    assert a.lora_gain.iloc[0] == pytest.approx(0.2)
    margin = t[(t.dataset == "d/a") & (t.score == "ntps_raw_desc_minus_chance")].set_index(["layer", "fraction"])
    np.testing.assert_allclose(margin.value, (a.set_index(["layer", "fraction"]).value - a.set_index(
        ["layer", "fraction"]).chance).loc[margin.index])
    assert margin.chance.isna().all()
    best = t[(t.dataset == "d/a") & (t.score == "ntps_raw_desc_best")]
    assert best.set_index("layer").value.to_dict() == a.groupby("layer").value.max().to_dict()
    assert best.fraction.isna().all() and best.chance.isna().all()
    w = t[t.score == "ntps_whitened_x_asc"]
    assert np.allclose(w.chance, w.k_V / 32)  # filled from k_V / d
    b = t[t.dataset == "b"]
    assert b.probe_train_acc.isna().all() and b.linear_test_acc.isna().all() and b.lora_gain.isna().all()
    assert (b.lora_test_acc == 0.8).all() and b[b.score == "ntps_raw_desc"].unique.all()
    with pytest.raises(collect.CollectError):
        collect.collect(runs, strict=True)


def test_collect_cli_and_analyze_cli(tmp_path, capsys, tidy_table, paper_data):
    runs = make_runs(tmp_path / "runs")
    collect.main(collect.parse_args(["--output_dir", str(runs)]))
    t = pd.read_csv(runs / "collected.csv")
    assert len(t) == 16 + 3 * 10 and collect.collect(tmp_path / "empty").empty
    # analyze: a synthetic table with a real sweep (heat map) and the authors' data (single candidate)
    csv = tmp_path / "tidy.csv"
    tidy_table(np.random.default_rng(1)).to_csv(csv, index=False)
    out = tmp_path / "an"
    res = analyze.main(analyze.parse_args(["--csv", str(csv), "--metric", "probe_train_acc", "--n_perm", "99",
                                           "--output_dir", str(out)]))
    r = res["results"]["probe_train_acc"][0]
    assert (r["layer"], r["fraction"]) == (1, 0.5) and r["perm_p"] < 0.05 and r["lodo_r"] is not None
    assert (out / "analysis" / "heatmap_probe_train_acc_m__A_ntps_raw_desc.png").is_file()
    assert (out / "analysis" / "analysis.json").is_file()
    assert len(pd.read_csv(out / "analysis" / "selected_probe_train_acc.csv")) == 8
    analyze.main(analyze.parse_args(["--input", str(paper_data / "fig2_2.json"), "--output_dir",
                                     str(out), "--no_plots"]))
    text = capsys.readouterr().out
    assert "single (layer, f) candidate" in text and "authors published only the selected" in text
    assert "Qwen/Qwen2-0.5B" in text and " 0.70 " in text


def test_collect_reads_the_lora_outputs(tmp_path):
    """runs/ntps_lora.py's sweep after LoRA becomes a score; its summary rows and budget come with lora_runs."""
    rng = np.random.default_rng(0)
    ds = tmp_path / "m" / "d"
    meta = {"model": "m", "dataset": "d", "split": "train", "n_texts": 10, "d": 32}
    for split_dir in (ds / "train", ds / "lora" / "stats_after" / "m" / "d" / "train"):
        _write_sweep(split_dir / "ntps_raw_descending.csv", rng)
        (split_dir / "meta.json").write_text(json.dumps(meta))
    (ds / "lora" / "results.json").write_text(json.dumps({"test_accuracy": 0.9, "steps": 300, "n_train": 10,
                                                          "config": {"lr": 5e-4, "batch_size": 8}}))
    pd.DataFrame([{"model": "m", "dataset": "d", "layer": 1, "fraction": 0.25, "ntps_before": 0.5,
                   "ntps_after": 0.6, "gain": 0.1}]).to_csv(ds / "ntps_lora.csv", index=False)
    # recorded relative to the run's working directory, which need not be the reader's
    (ds / "ntps_lora.json").write_text(json.dumps({"lora_results": "outputs/offline/m/d/lora/results.json"}))
    t = collect.collect(tmp_path)
    after = t[t.score == "ntps_raw_descending_after_lora"]
    assert len(after) == 4 and (after.model == "m").all() and (after.lora_test_acc == 0.9).all()
    assert after.source.str.startswith("m/d/lora/stats_after/").all()
    lora = collect.lora_runs(tmp_path)
    assert lora.loc[0, "ntps_after"] == 0.6 and (lora.loc[0, "steps"], lora.loc[0, "lr"]) == (300, 5e-4)
    assert collect.stage_times(tmp_path)["key"].tolist() == ["cache/m/d/train"]  # not the LoRA-merged artifact
    assert collect.stage_record(tmp_path) == {"stages": {}, "invocations": []}


def test_collect_normalised_mse_and_cover_flag(tmp_path):
    """probe MSE / constant-predictor MSE (train proportions, scored on each split's labels), C, N_test,
    the source of the dataset and N >= 2(d + 1)."""
    rng = np.random.default_rng(0)
    tr = tmp_path / "m" / "vader-movies" / "train"
    _write_sweep(tr / "ntps_raw_descending.csv", rng)
    (tr / "meta.json").write_text(json.dumps({"model": "m", "dataset": "vader-movies", "split": "train",
                                              "n_texts": 40, "d": 32, "class_counts": [30, 10]}))
    (tr.parent / "test").mkdir()
    (tr.parent / "test" / "meta.json").write_text(json.dumps({"n_texts": 20, "class_counts": [5, 15]}))
    pd.DataFrame({"layer": [1, 1], "split": ["train", "test"], "acc": [0.9, 0.7], "log_loss": [0.3, 0.6],
                  "mse": [0.05, 0.2]}).to_csv(tr / "probes_sklearn.csv", index=False)
    row = collect.collect(tmp_path).iloc[0]
    q = np.array([0.75, 0.25])

    def naive(labels):  # the constant prediction q against explicit one-hot rows
        return np.mean((np.eye(2)[labels] - q) ** 2)

    train_labels, test_labels = np.repeat([0, 1], [30, 10]), np.repeat([0, 1], [5, 15])
    assert row.mse0_train == pytest.approx(naive(train_labels)) and row.mse0_test == pytest.approx(naive(test_labels))
    assert row.probe_train_nmse == pytest.approx(0.05 / naive(train_labels))
    assert row.probe_test_nmse == pytest.approx(0.2 / naive(test_labels))
    assert (row.num_classes, row.n_test, row.dataset_source) == (2, 20, "pang-lee-movie-reviews")
    assert not row.in_sample_informative  # 40 < 2 (32 + 1)
    assert collect.constant_mse([3, 3], [1, 2, 3]) != collect.constant_mse([3, 3], [1, 2, 3])  # NaN: mismatch
