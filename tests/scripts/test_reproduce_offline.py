"""The offline-reproduction runner (plan, resume rule) and the report built from analysis outputs.

The report test plants a known structure: NTPS at (layer 1, f 0.25) equals the accuracy of each of
eight datasets for model "good" and is noise for model "noise"; the report must call the first
supported and the second not, with the numbers of analyze.py's analysis.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import analyze
from ntps.cli import run
from runs import report
from runs import reproduce_offline as ro


def test_plan_covers_every_model_and_dataset_with_the_caps():
    args = ro.parse_args([])
    stages = ro.plan(args)
    keys = [s.key for s in stages]
    assert len(keys) == len(set(keys))
    groups = {s.group for s in stages}
    assert groups == {"cache", "ksweep", "scores", "sklearn", "linear", "lora", "tolerance", "analysis", "report"}
    assert len(ro.DATASETS) >= 17 and ro.LATE_MODELS  # >= 16 independent sources + the shared-source one
    for model in ro.MODELS + ro.LATE_MODELS:
        n_train, n_test = ro.CAPS[model]
        for ds in ro.DATASETS:
            train = next(s for s in stages if s.key == f"cache/{model}/{ds}/train")
            test = next(s for s in stages if s.key == f"cache/{model}/{ds}/test")
            for stage, n in ((train, n_train), (test, n_test)):
                cmd = stage.cmd
                assert cmd[cmd.index("--max_samples") + 1] == str(n)
                assert cmd[cmd.index("--max_length") + 1] == str(ro.MAX_LENGTH)
                assert "--save_features" in cmd
    # the LoRA subset reuses the linear probe trained on the cached features
    lora = [s for s in stages if s.group == "lora"]
    assert len(lora) == len(ro.LORA_SUBSET["models"]) * len(ro.LORA_SUBSET["datasets"])
    assert all("--linear_results" in s.cmd for s in lora)
    after = [s.dataset for s in lora if "--stats_after" in s.cmd]
    assert after == ro.LORA_SUBSET["datasets"][:ro.LORA_SUBSET["after"]] and len(after) >= 4
    # every sweep again at each other rank tolerance, into its own root, with rcond scaled
    tol = [s for s in stages if s.group == "tolerance"]
    assert len(tol) == 3 * len(ro.TOLERANCES) * len(ro.DATASETS) * len(ro.MODELS + ro.LATE_MODELS)
    x10 = next(s for s in tol if s.key == "tolerance/rcond_x10/smollm2-135m/bbc-news/whitened_descending")
    assert float(x10.cmd[x10.cmd.index("--rcond") + 1]) == pytest.approx(10 * ro.DEFAULT_RCOND)
    assert x10.cmd[x10.cmd.index("--output_dir") + 1] == str(Path(args.output_dir) / "tolerance" / "rcond_x10")
    # the late model comes after every stage of the others (LoRA and tolerance included)
    first_late = min(i for i, s in enumerate(stages) if s.model in ro.LATE_MODELS)
    assert first_late > max(i for i, s in enumerate(stages) if s.model in ro.MODELS)
    # the analysis (collect -> analyze) comes after every per-dataset stage, the report last
    order = [s.group for s in stages]
    assert order.index("analysis") > max(i for i, g in enumerate(order) if g in ("cache", "lora", "tolerance"))
    assert order[-1] == "report"
    assert [s.key for s in stages if s.group == "analysis"] == [
        "analysis/collect", *(f"analysis/collect_{k}" for k in ro.TOLERANCES), "analysis/analyze"]
    rep = stages[-1].cmd
    assert rep[rep.index("--tolerance") + 1:][:len(ro.TOLERANCES)] == [
        f"{k}={Path(args.output_dir) / f'collected_{k}.csv'}" for k in ro.TOLERANCES]
    # every stage addresses the same output root: {output_dir}/{model}/{dataset}/{split}
    ks = next(s for s in stages if s.key == "ksweep/smollm2-135m/bbc-news/raw_descending")
    assert ks.cmd[ks.cmd.index("--stats_dir") + 1] == str(Path(args.output_dir) / "smollm2-135m" / "bbc-news" / "train")
    for s in stages:
        if "--output_dir" in s.cmd and s.group not in ("linear", "tolerance"):
            assert s.cmd[s.cmd.index("--output_dir") + 1] == args.output_dir, s.key


def test_scale_and_filters():
    stages = ro.plan(ro.parse_args(["--models", "gemma3-270m", "--datasets", "bbc-news", "--scale", "0.5",
                                    "--lora_models", ""]))
    cache = [s for s in stages if s.group == "cache"]
    assert [s.cmd[s.cmd.index("--max_samples") + 1] for s in cache] == ["750", "250"]  # no late model
    assert not [s for s in stages if s.group == "lora"]
    whole = ro.plan(ro.parse_args(["--models", "gemma3-270m", "--datasets", "bbc-news", "--scale", "0"]))
    assert {s.cmd[s.cmd.index("--max_samples") + 1] for s in whole if s.group == "cache"} == {"0"}


def test_a_stage_is_done_only_with_the_same_command_code_and_its_outputs(tmp_path):
    out = tmp_path / "x.csv"
    stage = ro.Stage("k", ["python", "a.py", "--n", "1"], [out], "ksweep")
    record = {"stages": {"k": {"cmd": ["a.py", "--n", "1"], "code": "c1", "rc": 0}}}
    assert not ro.is_done(stage, record, "c1")  # output missing
    out.write_text("x")
    assert ro.is_done(stage, record, "c1")
    assert not ro.is_done(stage, record, "c2")  # other code
    assert not ro.is_done(ro.Stage("k", ["python", "a.py", "--n", "2"], [out], "ksweep"), record, "c1")
    record["stages"]["k"]["rc"] = 1
    assert not ro.is_done(stage, record, "c1")


def test_code_digest_follows_the_stage_code_not_the_analysis_code(tmp_path):
    for rel in ("cache.py", "analyze.py", "ntps/score.py", "ntps/claims.py", "runs/ntps_lora.py", "runs/report.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(f"# {rel}\n")
    base = ro.code_digest(tmp_path)
    for rel in ("analyze.py", "ntps/claims.py", "runs/report.py"):
        (tmp_path / rel).write_text("# edited\n")
    assert ro.code_digest(tmp_path) == base  # the report can change without rerunning hours of stages
    for rel in ("cache.py", "ntps/score.py", "runs/ntps_lora.py"):
        (tmp_path / rel).write_text("# edited\n")
        assert ro.code_digest(tmp_path) != base
        base = ro.code_digest(tmp_path)


def test_light_stages_run_in_groups_heavy_ones_alone(tmp_path, monkeypatch):
    def st(key, group, out=None):
        return ro.Stage(key, ["python", key], [tmp_path / (out or key) / "x.csv"], group)

    # stages writing one directory (train/) never run together (each script locks its output directory)
    plan = [st("c1", "cache"), st("k1", "ksweep", "train"), st("k2", "ksweep", "train"), st("s1", "scores", "train"),
            st("lin", "linear"), st("c2", "cache"), st("x1", "tolerance", "x"), st("x2", "tolerance", "x"),
            st("y1", "tolerance", "y"), st("y2", "tolerance", "y"), st("l1", "lora"), st("a1", "analysis"),
            st("a2", "analysis"), st("r", "report")]
    groups = [[s.key for s in b] for b in ro.batches(plan, 2)]
    assert groups == [["c1"], ["k1", "lin"], ["k2"], ["s1"], ["c2"], ["x1", "y1"], ["x2", "y2"], ["l1"], ["a1"],
                      ["a2"], ["r"]]
    assert [[s.key for s in b] for b in ro.batches(plan, 1)] == [
        ["c1"], ["k1"], ["k2"], ["s1"], ["lin"], ["c2"], ["x1"], ["x2"], ["y1"], ["y2"], ["l1"], ["a1"], ["a2"], ["r"]]
    # two light stages of one group overlap in time
    script = ("import sys, time, pathlib; t = time.time(); time.sleep(1.0); "
              "pathlib.Path(sys.argv[1]).write_text(f'{t} {time.time()}')")
    outs = [tmp_path / "x" / "x.txt", tmp_path / "y" / "y.txt"]
    for o in outs:
        o.parent.mkdir()
    stages = [ro.Stage(o.stem, [sys.executable, "-c", script, str(o)], [o], "ksweep") for o in outs]
    monkeypatch.setattr(ro, "plan", lambda args: stages)
    assert ro.main(ro.parse_args(["--output_dir", str(tmp_path / "runs"), "--jobs", "2"])) == 0
    (s1, e1), (s2, e2) = ([float(v) for v in o.read_text().split()] for o in outs)
    assert s2 < e1 and s1 < e2


def test_runner_runs_resumes_and_stops_on_failure(tmp_path, monkeypatch, caplog):
    """A fake plan of three shell stages: the second fails once; a rerun skips the first."""
    marker = tmp_path / "fail_once"
    marker.write_text("")
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    script = ("import sys, pathlib; m = pathlib.Path(sys.argv[1]);\n"
              "if m.exists(): m.unlink(); sys.exit(3)\n"
              "pathlib.Path(sys.argv[2]).write_text('ok')")
    stages = [ro.Stage("one", [sys.executable, "-c", f"open({str(a)!r}, 'w').write('ok')"], [a], "ksweep"),
              ro.Stage("two", [sys.executable, "-c", script, str(marker), str(b)], [b], "scores")]
    monkeypatch.setattr(ro, "plan", lambda args: stages)
    args = ro.parse_args(["--output_dir", str(tmp_path / "runs")])
    assert ro.main(args) == 3 and a.is_file() and not b.exists()
    assert "stage two failed" in caplog.text
    assert ro.main(args) == 0 and b.is_file()
    record = json.loads((tmp_path / "runs" / ro.STAGE_FILE).read_text())
    assert [i["ran"] for i in record["invocations"]] == [2, 1]
    assert [i["skipped"] for i in record["invocations"]] == [0, 1]
    assert record["stages"]["two"]["rc"] == 0


def _collected(rng) -> pd.DataFrame:
    rows = []
    n_ds, layers, fractions = 8, (0, 1, 2), (0.25, 0.5)
    for model in ("good", "noise"):
        acc = rng.uniform(0.6, 0.95, n_ds)
        for j in range(n_ds):
            for layer in layers:
                for f in fractions:
                    signal = model == "good" and layer == 1 and f == 0.25
                    ntps = acc[j] if signal else rng.uniform(0.2, 0.8)
                    rows.append({"model": model, "dataset": f"ds{j}", "score": "ntps_raw_descending",
                                 "layer": layer, "fraction": f, "k_V": int(f * 64), "value": ntps, "chance": f,
                                 "n_texts": 500, "d": 64, "label_rank": 2, "probe_layer": 2,
                                 "probe_train_acc": acc[j], "probe_test_acc": acc[j] - 0.1,
                                 "probe_train_mse": 1 - acc[j], "probe_test_mse": 1.1 - acc[j],
                                 "linear_test_acc": acc[j] - 0.05})
    return pd.DataFrame(rows)


def test_report_states_the_verdicts_with_the_analysis_numbers(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    _collected(np.random.default_rng(0)).to_csv(runs / "collected.csv", index=False)
    analyze.main(analyze.parse_args(["--csv", str(runs / "collected.csv"), "--n_perm", "199", "--output_dir",
                                     str(runs), "--no_plots", "--metric", "probe_train_acc",
                                     "probe_test_acc", "probe_train_mse"]))
    (runs / "stages.json").write_text(json.dumps({"stages": {
        "ksweep/good/ds0/raw_descending": {"rc": 0, "seconds": 2.5, "model": "good", "dataset": "ds0"}},
        "invocations": [{"started": "2026-01-01T00:00:00", "ran": 1, "skipped": 0, "seconds": 2.5}]}))
    summary = report.build(runs, tmp_path / "report", "python -m runs.reproduce_offline --test")
    text = (tmp_path / "report" / "REPORT.md").read_text()

    analysis = json.loads((runs / "analysis" / "analysis.json").read_text())
    good = next(r for r in analysis["results"]["probe_train_acc"] if r["model"] == "good")
    assert (good["layer"], good["fraction"]) == (1, 0.25) and good["r_argmax"] == pytest.approx(1.0)
    verdicts = {v["model"]: v for v in summary["verdicts"]["probe_train_acc"]}
    assert verdicts["good"]["verdict"] == "supported" and verdicts["good"]["perm_p"] == good["perm_p"]
    assert verdicts["noise"]["verdict"] != "supported"
    assert verdicts["good"]["lodo_r"] == pytest.approx(good["lodo_r"])
    assert "python -m runs.reproduce_offline --test" in text and "## Do the paper's claims hold here?" in text
    assert "1 of 2 models support the claim" in text
    for section in ("## Spearman r of NTPS", "## NTPS with chance levels", "## Probe accuracies",
                    "## Wall time per stage", "## Caveats"):
        assert section in text
    # the fixed-cell NTPS table: last layer, f = 0.25, with chance
    fixed = pd.read_csv(tmp_path / "report" / "ntps_table.csv")
    assert set(fixed["layer"]) == {2} and np.allclose(fixed["fraction"], 0.25) and np.allclose(fixed["chance"], 0.25)
    assert (tmp_path / "report" / "figures" / "ntps_vs_probe_train_acc.png").is_file()
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["timings_total_s"] == 2.5


def test_report_refuses_without_the_analysis(tmp_path, capsys):
    argv = ["--output_dir", str(tmp_path), "--report_dir", str(tmp_path / "r")]
    with pytest.raises(SystemExit) as exit_info:
        run(report.main, report.parse_args, "runs/report.py", argv)
    assert exit_info.value.code == 2 and "collected.csv is missing" in capsys.readouterr().err


def test_report_states_which_code_the_stages_ran():
    record = {"stages": {"a": {"rc": 0, "code": "c" * 64, "git_commit": "1" * 40, "seconds": 60},
                         "b": {"rc": 0, "code": "c" * 64, "git_commit": "1" * 40, "seconds": 120},
                         "c": {"rc": 1, "code": "d" * 64, "git_commit": "2" * 40 + "+dirty", "seconds": 5}}}
    used = report.stage_code(record)
    assert used == [{"code": "c" * 64, "git_commit": "1" * 40, "stages": 2, "seconds": 180.0}]  # failed: not counted
    same = report.code_lines({"stage_code": used, "report_code": {"code": "c" * 64, "git_commit": "3" * 40}})[0]
    assert "**the same**" in same and "`111111111111` (2 stages, 3 min)" in same and "dirty" not in same
    # the same code under two commits (a resumed run after a commit that changed only the report) is the same code
    record["stages"]["d"] = {"rc": 0, "code": "c" * 64, "git_commit": "4" * 40, "seconds": 6}
    assert "**the same**" in report.code_lines({"stage_code": report.stage_code(record),
                                                "report_code": {"code": "c" * 64}})[0]
    record["stages"]["c"]["rc"] = 0
    mixed = report.code_lines({"stage_code": report.stage_code(record), "report_code": {"code": "c" * 64}})[0]
    assert "**not the same**" in mixed and "`222222222222 (+dirty: uncommitted changes)`" in mixed
