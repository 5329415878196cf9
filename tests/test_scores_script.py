"""scores.py end to end on synthetic artifacts; compare_scores.py on a synthetic runs directory."""

import csv
import json

import numpy as np
import pandas as pd
import pytest
import torch
from test_ksweep import make_artifact as make_artifact_without_sum_x

import compare_scores
import scores
from ntps.artifacts import LayerSums, Stats, load_stats, save_stats
from ntps.baselines import all_baselines
from ntps.score import DEFAULT_FRACTIONS, ntps_sweep, solve_layer, whitened_sweep


def make_artifact(path, n_layers=2, d=10, C=3, N=120, T=5, seed=0, model="toy", dataset="toy"):
    """Consistent sums of SPEC §1 (XY rows sum to sum_x, counts from the labels) from random states."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    y[:C] = np.arange(C)
    Y = np.eye(C)[y]
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    layers = {}
    for layer in range(n_layers):
        H = rng.standard_normal((N, T, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal(d)
        H[:, :, 0] += 0.5 * y[:, None]  # some label signal
        X, S = H.mean(1), H.cumsum(1)
        C0 = np.einsum("ntd,nte->de", S[:, :-1], S[:, :-1])
        C1 = np.einsum("ntd,nte->de", S[:, :-1], H[:, 1:])
        layers[layer] = LayerSums(t(X.T @ X), t(X.T @ Y), t(C0), t(C1), t(X.sum(0)))
    stats = Stats(layers=layers, class_counts=torch.tensor(np.bincount(y, minlength=C)), n_texts=N,
                  n_tokens=T * N, n_pairs=(T - 1) * N)
    meta = {"model": model, "dataset": dataset, "split": "train", "dtype": "float64", "max_length": None,
            "max_samples": None, "seed": seed}
    save_stats(path, stats, meta)


def run_scores(argv):
    return scores.main(scores.parse_args([*argv, "--device", "cpu"]))


def test_scores_match_direct_calls_and_rerun_rules(tmp_path, capsys):
    make_artifact(tmp_path)
    res = run_scores(["--stats_dir", str(tmp_path), "--fractions", "0.25,0.5", "--ridge_alpha", "2"])
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert list(rows[0]) == scores.columns_for([0.25, 0.5]) and len(rows) == 2
    data = json.loads((tmp_path / "scores.json").read_text())
    assert data["artifact"]["model"] == "toy" and data["environment"]["versions"]["torch"]
    assert data["settings"]["fractions"] == [0.25, 0.5] and data["warnings"] == []
    s = load_stats(tmp_path)
    for row in res["rows"]:
        sums = s.layers[row["layer"]]
        base = all_baselines(sums, s.class_counts, s.n_texts, ridge_alpha=2.0)
        for k, v in base.items():
            assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-12)
            assert float(rows[row["layer"]][k]) == pytest.approx(v, rel=1e-12)
        sol = solve_layer(sums.XX, sums.XY, sums.C0, sums.C1)
        raw = ntps_sweep(sol, fractions=[0.25, 0.5])
        white = whitened_sweep(sol, n_texts=120, fractions=[0.25, 0.5])
        for i, t in enumerate(("f0.25", "f0.5")):
            assert row[f"ntps_raw_{t}"] == pytest.approx(raw["ntps"][i], abs=1e-12)
            assert row[f"chance_{t}"] == pytest.approx(raw["k_V"][i] / 10)
            margin = raw["ntps"][i] - raw["chance"][i]
            assert row[f"ntps_minus_chance_{t}"] == pytest.approx(margin, abs=1e-12)
            for k in ("excess", "lower", "upper"):
                assert row[f"{k}_{t}"] == pytest.approx(white[k][i], abs=1e-12)
            assert row[f"ntps_whitened_{t}"] == pytest.approx(white["ntps"][i], abs=1e-12)
            assert row[f"lower_{t}"] <= row[f"excess_{t}"] + 1e-12 <= row[f"upper_{t}"] + 2e-12
        full = ntps_sweep(sol, fractions=sorted(set(DEFAULT_FRACTIONS) | {0.25, 0.5}))["ntps"]
        assert row["ntps_raw_best"] == pytest.approx(np.nanmax(full), abs=1e-12)
        assert (row["label_rank"], row["r_U"], row["d"]) == (sol.label_rank, sol.U.rank, 10)
    run_scores(["--stats_dir", str(tmp_path), "--fractions", "0.5,0.25", "--ridge_alpha", "2"])
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="overwrite"):
        run_scores(["--stats_dir", str(tmp_path), "--layers", "-1"])
    last = run_scores(["--stats_dir", str(tmp_path), "--layers", "-1", "--overwrite"])
    assert [r["layer"] for r in last["rows"]] == [1]


def test_scores_errors_and_inconsistent_baseline_inputs(tmp_path, capsys):
    with pytest.raises(SystemExit, match="scores.py: .*cache.py"):
        run_scores(["--stats_dir", str(tmp_path / "nope")])
    make_artifact_without_sum_x(tmp_path / "a", n_layers=1, d=8, N=60)  # sum_x = 0: baselines refuse
    res = run_scores(["--stats_dir", str(tmp_path / "a")])
    assert res["rows"][0]["logme"] is None and res["rows"][0]["ntps_raw_f0.5"] is not None
    assert "baselines not computed" in res["warnings"][0] and "WARNING" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="out of range"):
        run_scores(["--stats_dir", str(tmp_path / "a"), "--layers", "5", "--overwrite"])
    with pytest.raises(SystemExit, match="fractions"):
        run_scores(["--stats_dir", str(tmp_path / "a"), "--fractions", "0,2", "--overwrite"])


def _fake_run(root, model, ds, acc, rng, planted_noise=0.01, n_layers=4, fractions=(0.25, 0.5)):
    tr = root / model / ds / "train"
    tr.mkdir(parents=True)
    rows = []
    for layer in range(n_layers):
        row = {"layer": layer, "logme": acc * (1 + 0.1 * layer) + planted_noise * rng.standard_normal(),
               "h_score": rng.standard_normal(), "ls_mse": 1 - acc + 0.3 * rng.standard_normal()}
        for f in fractions:
            row[f"ntps_raw_f{f:g}"] = rng.uniform()
            row[f"excess_f{f:g}"] = (1 - acc) + 0.01 * rng.standard_normal()  # planted: low excess, high acc
        rows.append(row)
    pd.DataFrame(rows).to_csv(tr / "scores.csv", index=False)
    pd.DataFrame({"layer": [0, 0, n_layers - 1, n_layers - 1], "split": ["train", "test"] * 2,
                  "acc": [0.5, 0.5, acc, acc - 0.05], "log_loss": 0.5, "mse": 0.1}).to_csv(
        tr / "probes_sklearn.csv", index=False)
    (tr / "meta.json").write_text(json.dumps({"model": model.replace("__", "/"), "dataset": ds}))
    return tr


def make_runs(root):
    """2 models x 6 datasets; model b lacks LoRA results, one dataset of b lacks probes, one is malformed."""
    rng = np.random.default_rng(3)
    accs = [0.55, 0.62, 0.7, 0.78, 0.85, 0.93]
    for model in ("org__a", "org__b"):
        for j, acc in enumerate(rng.permutation(accs)):
            tr = _fake_run(root, model, f"ds{j}", float(acc), rng)
            if model == "org__a":  # LoRA gain shrinks with accuracy (SPEC §3 sign: positive r)
                for name, a in (("linear", acc), ("lora", acc + 0.5 * (1 - acc))):
                    (tr.parent / name).mkdir()
                    (tr.parent / name / "results.json").write_text(json.dumps({"test_accuracy": float(a)}))
    (root / "org__b" / "ds5" / "train" / "probes_sklearn.csv").unlink()
    (root / "org__b" / "bad" / "train").mkdir(parents=True)
    (root / "org__b" / "bad" / "train" / "scores.csv").write_text("foo,bar\n1,2\n")
    return root


def test_compare_scores_planted_score_wins_and_missing_pieces_are_skipped(tmp_path, capsys):
    runs = make_runs(tmp_path / "runs")
    table = compare_scores.main(compare_scores.parse_args(["--runs_dir", str(runs), "--n_perm", "500"]))
    err = capsys.readouterr()
    assert "run linear_sklearn.py" in err.err and "no 'layer' column" in err.err
    assert "org/b: lora_gain available for 0/6" in err.err
    assert "### org/a" in err.out and "| logme |" in err.out
    assert set(table["model"]) == {"org/a", "org/b"}
    assert set(table["metric"]) == {"probe_train_acc", "lora_gain"}
    assert not ((table.model == "org/b") & (table.metric == "lora_gain")).any()
    for (model, _metric), part in table.groupby(["model", "metric"]):
        assert part["lodo_r"].is_monotonic_decreasing  # sorted by LODO r
        by = part.set_index("score")
        assert by.loc["logme", "n_datasets"] == (5 if model == "org/b" else 6)
        assert by.loc["logme", "n_candidates"] == 4 and by.loc["ntps_raw", "n_candidates"] == 8
        for planted in ("logme", "-excess"):
            assert by.loc[planted, "r_argmax"] > 0.95 and by.loc[planted, "lodo_r"] > 0.8
            assert by.loc[planted, "perm_p"] < 0.05 and by.loc[planted, "r_fixed"] > 0.9
        assert by.loc["-excess", "fixed_fraction"] == 0.25 and by.loc["logme", "fixed_layer"] == 3
        assert set(part["score"].iloc[:2]) == {"logme", "-excess"}  # the planted scores rank first
        for rand in ("h_score", "ntps_raw"):  # with 6 datasets chance alone can reach r ~ 0.8 (SPEC §5)
            assert by.loc[rand, "perm_p"] > 0.05 and by.loc[rand, "lodo_r"] < 0.9
    saved = pd.read_csv(runs / "compare_scores.csv")
    assert list(saved.columns) == compare_scores.COLUMNS and len(saved) == len(table)
    assert (runs / "compare_scores.md").read_text().startswith("### org/a")
    assert json.loads((runs / "compare_scores.json").read_text())["messages"]


def test_scores_then_compare_with_too_few_datasets(tmp_path, capsys):
    runs = tmp_path / "runs"
    for j, acc in enumerate((0.6, 0.7, 0.8)):
        tr = runs / "m" / f"ds{j}" / "train"
        make_artifact(tr, d=6, N=40, seed=j)
        run_scores(["--stats_dir", str(tr)])
        probes = {"layer": [1], "split": ["train"], "acc": [acc], "log_loss": [0.1], "mse": [0.1]}
        pd.DataFrame(probes).to_csv(tr / "probes_sklearn.csv", index=False)
    table = compare_scores.main(compare_scores.parse_args(["--runs_dir", str(runs), "--n_perm", "50"]))
    assert "meaningless" in capsys.readouterr().err
    assert set(table["score"]) == {"logme", "h_score", "-ls_mse", "-ridge_mse", "ntps_raw_best",
                                   "ntps_margin_best", "ntps_raw", "ntps_minus_chance", "ntps_whitened",
                                   "-excess"}
    assert table["n_datasets"].eq(3).all() and table["lodo_r"].isna().all()
    assert table["note"].str.contains("meaningless").all()
    with pytest.raises(SystemExit, match="scores.py"):
        compare_scores.main(compare_scores.parse_args(["--runs_dir", str(tmp_path)]))
