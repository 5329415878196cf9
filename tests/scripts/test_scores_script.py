"""scores.py end to end on synthetic artifacts; every score through collect.py and analyze.py on a run tree."""

import contextlib
import csv
import io
import json
import logging

import numpy as np
import pandas as pd
import pytest

import analyze
import collect
import K_sweep
import scores
from ntps.artifacts import load_stats
from ntps.baselines import all_baselines
from ntps.cli import run
from ntps.io import OutputExistsError
from ntps.score import DEFAULT_FRACTIONS, ntps_sweep, solve_layer, whitened_sweep


def run_scores(argv):
    return scores.main(scores.parse_args(argv))


def at_the_boundary(main, parse_args, argv, script):
    """A script's main through ntps.cli.run, which prints "{script}: error: ..." and exits with status 2;
    re-raised as SystemExit(message) so that tests can match the message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            run(main, parse_args, script, argv)
        except SystemExit as e:
            assert e.code == 2
            raise SystemExit(err.getvalue().strip()) from None


def run_ksweep(stats_dir, *argv):
    return K_sweep.main(K_sweep.parse_args(["--stats_dir", str(stats_dir), "--device", "cpu", *argv]))


def test_scores_match_direct_calls_and_rerun_rules(tmp_path, capsys, caplog, make_consistent_artifact):
    make_consistent_artifact(tmp_path)
    res = run_scores(["--stats_dir", str(tmp_path), "--ridge_alpha", "2"])
    rows = list(csv.DictReader(open(tmp_path / "scores.csv")))
    assert list(rows[0]) == scores.COLUMNS and len(rows) == 2
    data = json.loads((tmp_path / "scores.json").read_text())
    assert data["artifact"]["model"] == "toy" and data["environment"]["versions"]["torch"]
    assert data["settings"]["ridge_alpha"] == 2.0 and data["warnings"] == []
    s = load_stats(tmp_path)
    for row in res["rows"]:
        sums = s.layers[row["layer"]]
        base = all_baselines(sums, s.class_counts, s.n_texts, ridge_alpha=2.0)
        for k, v in base.items():
            assert row[k] == pytest.approx(v, rel=1e-12, abs=1e-12)
            assert float(rows[row["layer"]][k]) == pytest.approx(v, rel=1e-12)
        assert (row["d"], row["n_texts"]) == (10, 120)
    caplog.set_level(logging.INFO, logger="ntps")
    run_scores(["--stats_dir", str(tmp_path), "--ridge_alpha", "2.0"])
    assert "up to date" in caplog.text
    with pytest.raises(OutputExistsError, match="overwrite"):
        run_scores(["--stats_dir", str(tmp_path), "--layers", "-1"])
    last = run_scores(["--stats_dir", str(tmp_path), "--layers", "-1", "--overwrite"])
    assert [r["layer"] for r in last["rows"]] == [1]
    # --output_dir is the output root, as in every script: {root}/{model}/{dataset}/{split}
    make_consistent_artifact(tmp_path / "root" / "org__m" / "d" / "test")
    by_root = run_scores(["--output_dir", str(tmp_path / "root"), "--model", "org/m", "--dataset", "d",
                          "--split", "test"])
    assert by_root["stats_dir"] == str(tmp_path / "root" / "org__m" / "d" / "test")


def test_ntps_scores_of_the_long_table_match_direct_calls(tmp_path, make_consistent_artifact):
    """The NTPS columns scores.py used to write now come from K_sweep.py's outputs, read by collect.py."""
    tr = tmp_path / "toy" / "toy" / "train"
    make_consistent_artifact(tr)
    run_ksweep(tr)
    run_ksweep(tr, "--variant", "whitened")
    run_scores(["--stats_dir", str(tr)])
    t = collect.collect(tmp_path)
    s = load_stats(tr)

    def cell(score, layer, f=None):
        rows = t[(t.score == score) & (t.layer == layer)]
        rows = rows[rows.fraction.isna()] if f is None else rows[np.isclose(rows.fraction, f)]
        assert len(rows) == 1, (score, layer, f)
        return rows.iloc[0]

    for layer in (0, 1):
        sums = s.layers[layer]
        sol = solve_layer(sums.XX, sums.XY, sums.C0, sums.C1)
        raw = ntps_sweep(sol, fractions=[0.25, 0.5])
        white = whitened_sweep(sol, n_texts=120, fractions=[0.25, 0.5])
        for i, f in enumerate((0.25, 0.5)):
            row = cell("ntps_raw_descending", layer, f)
            assert row["value"] == pytest.approx(raw["ntps"][i], abs=1e-12)
            assert row["chance"] == pytest.approx(raw["k_V"][i] / 10)
            margin = raw["ntps"][i] - raw["chance"][i]
            assert cell("ntps_raw_descending_minus_chance", layer, f)["value"] == pytest.approx(margin, abs=1e-12)
            excess = cell("ntps_whitened_descending_excess", layer, f)
            for k in ("lower", "upper"):
                assert excess[k] == pytest.approx(white[k][i], abs=1e-12)
            assert excess["value"] == pytest.approx(white["excess"][i], abs=1e-12)
            assert cell("ntps_whitened_descending", layer, f)["value"] == pytest.approx(white["ntps"][i], abs=1e-12)
            assert excess["lower"] <= excess["value"] + 1e-12 <= excess["upper"] + 2e-12
        full = ntps_sweep(sol, fractions=DEFAULT_FRACTIONS)["ntps"]
        assert cell("ntps_raw_descending_best", layer)["value"] == pytest.approx(np.nanmax(full), abs=1e-12)
        row = cell("ntps_raw_descending", layer, 0.5)
        assert (row["label_rank"], row["r_U"], row["d"]) == (sol.label_rank, sol.U.rank, 10)
        assert cell("logme", layer)["value"] == pytest.approx(all_baselines(sums, s.class_counts, 120)["logme"])
    with pytest.raises(ValueError, match="fractions"):  # K_sweep's fractions, validated by ntps.score
        ntps_sweep(solve_layer(sums.XX, sums.XY, sums.C0, sums.C1), fractions=[0.0, 2.0])


def test_scores_errors_and_inconsistent_baseline_inputs(tmp_path, caplog, make_artifact):
    with pytest.raises(SystemExit, match="scores.py: .*cache.py"):
        at_the_boundary(scores.main, scores.parse_args, ["--stats_dir", str(tmp_path / "nope")], "scores.py")
    make_artifact(tmp_path / "a", n_layers=1, d=8, N=60)  # sum_x = 0: baselines refuse
    res = run_scores(["--stats_dir", str(tmp_path / "a")])
    assert res["rows"][0]["logme"] is None and res["rows"][0]["d"] == 8  # the layer's row is still written
    assert "baselines not computed" in res["warnings"][0]
    assert any(r.levelname == "WARNING" and "baselines not computed" in r.getMessage() for r in caplog.records)
    with pytest.raises(SystemExit, match="out of range"):
        at_the_boundary(scores.main, scores.parse_args, ["--stats_dir", str(tmp_path / "a"), "--layers", "5",
                                                         "--overwrite"], "scores.py")


def _fake_run(root, model, ds, acc, rng, white_rng, planted_noise=0.01, n_layers=4, fractions=(0.25, 0.5)):
    """scores.csv, the K sweeps (raw and whitened, descending) and the probes of one model x dataset."""
    tr = root / model / ds / "train"
    tr.mkdir(parents=True)
    rows, raw, white = [], [], []
    for layer in range(n_layers):
        row = {"layer": layer, "logme": acc * (1 + 0.1 * layer) + planted_noise * rng.standard_normal(),
               "h_score": rng.standard_normal(), "ls_mse": 1 - acc + 0.3 * rng.standard_normal()}
        for f in fractions:
            raw.append({"layer": layer, "fraction": f, "ntps": rng.uniform(), "chance": f / 10})
            white.append({"layer": layer, "fraction": f, "ntps": white_rng.uniform(),
                          "excess": (1 - acc) + 0.01 * rng.standard_normal()})  # planted: low excess, high acc
        rows.append(row)
    pd.DataFrame(rows).to_csv(tr / "scores.csv", index=False)
    pd.DataFrame(raw).to_csv(tr / "ntps_raw_descending.csv", index=False)
    pd.DataFrame(white).to_csv(tr / "ntps_whitened_descending.csv", index=False)
    pd.DataFrame({"layer": [0, 0, n_layers - 1, n_layers - 1], "split": ["train", "test"] * 2,
                  "acc": [0.5, 0.5, acc, acc - 0.05], "log_loss": 0.5, "mse": 0.1}).to_csv(
        tr / "probes_sklearn.csv", index=False)
    (tr / "meta.json").write_text(json.dumps({"model": model.replace("__", "/"), "dataset": ds}))
    return tr


def make_runs(root):
    """2 models x 6 datasets; model b lacks LoRA results, one dataset of b lacks probes, one is malformed."""
    rng, white_rng = np.random.default_rng(3), np.random.default_rng(4)
    accs = [0.55, 0.62, 0.7, 0.78, 0.85, 0.93]
    for model in ("org__a", "org__b"):
        for j, acc in enumerate(rng.permutation(accs)):
            tr = _fake_run(root, model, f"ds{j}", float(acc), rng, white_rng)
            if model == "org__a":  # LoRA gain shrinks with accuracy (SPEC §3 sign: positive r)
                for name, a in (("linear", acc), ("lora", acc + 0.5 * (1 - acc))):
                    (tr.parent / name).mkdir()
                    (tr.parent / name / "results.json").write_text(json.dumps({"test_accuracy": float(a)}))
    (root / "org__b" / "ds5" / "train" / "probes_sklearn.csv").unlink()
    (root / "org__b" / "bad" / "train").mkdir(parents=True)
    (root / "org__b" / "bad" / "train" / "scores.csv").write_text("foo,bar\n1,2\n")
    return root


def collect_and_analyze(runs, *argv):
    collect.main(collect.parse_args(["--output_dir", str(runs)]))
    return analyze.main(analyze.parse_args(["--output_dir", str(runs), "--no_plots", *argv]))


def test_every_score_ranked_planted_score_wins_and_missing_pieces_are_skipped(tmp_path, capsys, caplog):
    caplog.set_level("INFO")
    runs = make_runs(tmp_path / "runs")
    res = collect_and_analyze(runs, "--metric", "probe_train_acc", "lora_gain", "--n_perm", "500")
    table, out = res["ranking"], capsys.readouterr().out
    assert "run linear_sklearn.py" in caplog.text and "missing required column(s) ['layer']" in caplog.text
    assert "org/b: lora_gain available for 0/6" in caplog.text
    assert "### org/a" in out and "| logme |" in out
    assert set(table["model"]) == {"org/a", "org/b"}
    assert set(table["metric"]) == {"probe_train_acc", "lora_gain"}
    assert not ((table.model == "org/b") & (table.metric == "lora_gain")).any()
    for (model, _metric), part in table.groupby(["model", "metric"]):
        assert part["lodo_r"].is_monotonic_decreasing  # sorted by LODO r
        by = part.set_index("score")
        assert by.loc["logme", "n_datasets"] == (5 if model == "org/b" else 6)
        assert by.loc["logme", "n_candidates"] == 4 and by.loc["ntps_raw_descending", "n_candidates"] == 8
        for planted in ("logme", "-ntps_whitened_descending_excess"):
            assert by.loc[planted, "r_argmax"] > 0.95 and by.loc[planted, "lodo_r"] > 0.8
            assert by.loc[planted, "perm_p"] < 0.05 and by.loc[planted, "r_fixed"] > 0.9
        assert by.loc["-ntps_whitened_descending_excess", "fixed_fraction"] == 0.25
        assert by.loc["logme", "fixed_layer"] == 3
        # the planted scores rank first
        assert set(part["score"].iloc[:2]) == {"logme", "-ntps_whitened_descending_excess"}
        for rand in ("h_score", "ntps_raw_descending"):  # with 6 datasets chance alone can reach r ~ 0.8 (SPEC §5)
            assert by.loc[rand, "perm_p"] > 0.05 and by.loc[rand, "lodo_r"] < 0.9
    saved = pd.read_csv(runs / "analysis" / "ranking.csv")
    assert list(saved.columns) == analyze.RANKING_COLUMNS and len(saved) == len(table)
    assert (runs / "analysis" / "ranking.md").read_text().startswith("### org/a")
    assert json.loads((runs / "analysis" / "analysis.json").read_text())["messages"]


def test_scores_then_analyze_with_too_few_datasets(tmp_path, caplog, make_consistent_artifact):
    runs = tmp_path / "runs"
    for j, acc in enumerate((0.6, 0.7, 0.8)):
        tr = runs / "m" / f"ds{j}" / "train"
        make_consistent_artifact(tr, d=6, N=40, seed=j, dataset=f"ds{j}")
        run_scores(["--stats_dir", str(tr)])
        run_ksweep(tr)
        run_ksweep(tr, "--variant", "whitened")
        probes = {"layer": [1], "split": ["train"], "acc": [acc], "log_loss": [0.1], "mse": [0.1]}
        pd.DataFrame(probes).to_csv(tr / "probes_sklearn.csv", index=False)
    table = collect_and_analyze(runs, "--metric", "probe_train_acc", "lora_gain", "--n_perm", "50")["ranking"]
    assert "meaningless" in caplog.text
    assert set(table["score"]) == {"logme", "h_score", "-ls_mse", "-ridge_mse", "ntps_raw_descending_best",
                                   "ntps_raw_descending_margin_best", "ntps_raw_descending",
                                   "ntps_raw_descending_minus_chance", "ntps_whitened_descending",
                                   "-ntps_whitened_descending_excess", "effective_rank", "label_rank"}
    assert table["n_datasets"].eq(3).all() and table["lodo_r"].isna().all()
    assert table["note"].str.contains("meaningless").all()
    collect.main(collect.parse_args(["--output_dir", str(tmp_path)]))  # no runs: an empty table
    with pytest.raises(SystemExit, match="scores.py"):
        at_the_boundary(analyze.main, analyze.parse_args, ["--output_dir", str(tmp_path)], "analyze.py")
