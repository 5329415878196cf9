"""The committed report is recomputable: ``python analyze.py --from DIR`` rewrites REPORT.md and analysis.json
byte for byte from the committed files (a synthetic results directory: 16 datasets × 2 models, a planted
predictor, a shared source, a second rank tolerance), and the verdict section says what the numbers carry."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import analyze
from ntps import claims
from ntps.report import markdown_table
from runs import report

N_DS, LAYERS, FRACTIONS, D = 16, (0, 1, 2, 3), (0.25, 0.5, 0.75), 200
SETTINGS = claims.Settings(n_perm=999, n_perm_lodo=199, perm_seed=0, n_boot=200)


def synthetic_table(rng, models=("org/good", "org/noise")) -> pd.DataFrame:
    """A long table as collect.py writes it. For "org/good" the raw descending NTPS at (layer 2, f 0.5) ranks the
    datasets like their held-out accuracy, and lies below chance on ds03; everything else is noise. ds15 shares
    ds00's source; ds00-ds03 have N < 2(d + 1)."""
    rows = []
    for model in models:
        acc = rng.uniform(0.55, 0.95, N_DS)
        for j in range(N_DS):
            ds = f"ds{j:02d}"
            per_ds = {"model": model, "dataset": ds, "dataset_source": "src00" if j == 15 else f"src{j:02d}",
                      "n_texts": 300 if j < 4 else 700, "d": D, "n_test": 200, "num_classes": 2 + j % 3,
                      "in_sample_informative": j >= 4, "probe_layer": 3, "probe_train_acc": min(1.0, acc[j] + 0.05),
                      "probe_test_acc": acc[j], "probe_train_mse": 0.1, "probe_test_mse": (1 - acc[j]) / 2,
                      "probe_test_nmse": 1.2 - acc[j] + 0.05 * rng.normal(),
                      "probe_train_nmse": 0.4 + 0.1 * rng.uniform(), "linear_test_acc": acc[j] - 0.05}
            if model == "org/good":
                per_ds.update(lora_test_acc=acc[j] + 0.05 * (1 - acc[j]), lora_gain=0.05 * (1 - acc[j]))
            for score in ("ntps_raw_descending", "ntps_raw_ascending", "ntps_whitened_descending"):
                for layer in LAYERS:
                    # the whitened sweeps carry the share of the LS fit dropped (layer 0 drops one Σ direction)
                    share = ({"fit_share_dropped": 0.0625 * (layer == 0) * (j + 1) / N_DS,
                              "c0_fit_share_dropped": 0.0} if score == "ntps_whitened_descending" else {})
                    for f in FRACTIONS:
                        planted = model == "org/good" and score == "ntps_raw_descending" and (layer, f) == (2, 0.5)
                        value = 0.2 + 0.6 * acc[j] if planted else rng.uniform(0.2, 0.8)
                        chance = 0.9 if planted and j == 3 else f * 0.5
                        rows.append({**per_ds, "score": score, "layer": layer, "fraction": f, "k": int(f * 40),
                                     "value": value, "chance": chance, "k_V": int(f * 40), "r_U": D - (layer == 0),
                                     "r_V": D - 2 * (layer == 0), "label_rank": per_ds["num_classes"] - 1,
                                     "unique": True, **share})
            for layer in LAYERS:
                for score, value in (("logme", rng.normal()), ("ls_mse", rng.uniform()),
                                     ("effective_rank", rng.uniform(5, 50)), ("label_rank", per_ds["num_classes"] - 1)):
                    rows.append({**per_ds, "score": score, "layer": layer, "value": value})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def results_dir(tmp_path_factory):
    """A report directory built by runs/report.py from a run tree holding only the long tables."""
    tmp = tmp_path_factory.mktemp("recompute")
    rng = np.random.default_rng(0)
    runs = tmp / "runs"
    runs.mkdir()
    table = synthetic_table(rng)
    table.to_csv(runs / "collected.csv", index=False)
    other = table.copy()  # "rcond ×10": one more direction of Σ dropped, the whitened sweep moves a little
    other["r_U"] = other["r_U"] - 1
    white = other["score"] == "ntps_whitened_descending"
    other.loc[white, "value"] += 0.01 * rng.normal(size=int(white.sum()))
    other.to_csv(tmp / "x10.csv", index=False)
    (runs / "stages.json").write_text(json.dumps({"stages": {"ksweep/org/good/ds00/raw_descending": {
        "rc": 0, "seconds": 3.0, "model": "org/good", "dataset": "ds00"}}, "invocations": []}))
    out = tmp / "results" / "offline" / "synthetic"
    report.build(runs, out, "python -m runs.reproduce_offline --synthetic", SETTINGS,
                 tolerance={"rcond_x10": tmp / "x10.csv"}, plots=False)
    return out


def test_analyze_from_rewrites_the_committed_files_byte_for_byte(results_dir, tmp_path):
    committed = {name: (results_dir / name).read_bytes() for name in report.OUTPUTS}
    for _ in range(2):  # twice: nothing depends on the time, the machine's state or an earlier run
        analyze.main(analyze.parse_args(["--from", str(results_dir), "--no_plots"]))
        assert {name: (results_dir / name).read_bytes() for name in report.OUTPUTS} == committed
    assert report.check_regenerates(results_dir) == []
    # the comparison can fail: a changed number in the committed report is found
    copy = tmp_path / "copy"
    shutil.copytree(results_dir, copy)
    text = (copy / "REPORT.md").read_text()
    (copy / "REPORT.md").write_text(text.replace("| org/good | 15 |", "| org/good | 14 |", 1))
    assert report.check_regenerates(copy) == ["REPORT.md"]


def test_the_documented_command_regenerates_the_report(results_dir, repo_root):
    before = (results_dir / "REPORT.md").read_bytes()
    done = subprocess.run([sys.executable, "analyze.py", "--from", str(results_dir), "--no_plots"], cwd=repo_root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (results_dir / "REPORT.md").read_bytes() == before
    assert f"python analyze.py --from {results_dir.as_posix()}" in before.decode()


def test_the_verdicts_say_what_the_numbers_carry(results_dir):
    an = json.loads((results_dir / "analysis.json").read_text())
    by = {(r["claim"], r["model"]): r for r in an["claims"]["claims"]}
    good, noise = by[("ntps_test_acc", "org/good")], by[("ntps_test_acc", "org/noise")]
    # one dataset per source: ds15 (source of ds00) is left out of the headline
    assert good["n_datasets"] == 15 and good["left_out"]["same_source"] == ["ds15"]
    assert good["winner"] == {"score": "ntps_raw_descending", "layer": 2, "fraction": 0.5}
    assert good["verdict"] == "supported" and good["p"] < 0.01 and good["lodo"]["p"] < 0.05
    assert noise["verdict"] == "not supported" and noise["p"] >= 0.05 and noise["floor"] < 0.05
    assert good["n_candidates"] == 3 * len(LAYERS) * len(FRACTIONS)  # the NTPS family: 3 sweeps × 4 layers × 3 f
    assert 0.5 < good["reliability"]["median"] <= 1
    assert "per-text" in by[("ntps_test_nmse", "org/good")]["reliability"]["why"]
    # in-sample claims only on N >= 2(d + 1); the LoRA claim only where LoRA ran
    train = by[("ntps_train_acc", "org/good")]
    assert train["n_datasets"] == 12 and train["left_out"]["uninformative_in_sample"] == ["ds00", "ds01", "ds02",
                                                                                          "ds03"]
    assert by[("ntps_lora_gain", "org/noise")]["verdict"] == "not run"
    base = by[("baseline_test_acc", "org/good")]
    assert {s["score"] for s in base["per_score"]} == {"logme", "-ls_mse", "effective_rank", "label_rank"}
    joint = {r["claim"]: r for r in an["claims"]["joint"]}["ntps_test_acc"]
    assert joint["p"] < 0.05 and joint["winner"]["model"] == "org/good" and joint["n_candidates"] == 72
    assert joint["verdict"] == "argmax only"  # the joint test has no LODO: never "supported"
    in_sample = {r["claim"]: r for r in an["claims"]["joint"]}["ntps_train_acc"]
    assert in_sample["models"] == ["org/good", "org/noise"] and in_sample["n_datasets"] == 12  # ds00-ds03: N < 2(d+1)
    assert {r["variant"] for r in an["claims"]["sources"] if r["model"] == "org/good"} >= {"all datasets",
                                                                                         "ds15 for ds00"}
    tol = an["tolerance"]["rows"]
    assert {r["tolerance"] for r in tol} == {"rcond_x10"} and all(isinstance(r["changed"], bool) for r in tol)
    dropped = {(r["tolerance"], r["model"], r["layer"]): r for r in an["dropped_directions"]}
    assert dropped[("headline", "org/good", 0)]["sigma_max"] == 1 and dropped[("rcond_x10", "org/good", 0)][
        "sigma_max"] == 2
    text = (results_dir / "REPORT.md").read_text()
    assert "**NTPS vs held-out probe accuracy**" in text and "1 of 2 models support the claim" in text
    assert "### What the in-sample metrics can and cannot say" in text and "4 of 16 datasets have fewer" in text
    assert "### NTPS below chance" in text  # the planted cell is below chance on ds03:
    assert re.search(r"\| org/good \| NTPS vs held-out probe accuracy: ntps_raw_descending L2 f=0.5 \| ds03 0\.\d+ < "
                     r"0\.900 \|", text)
    assert "No verdict changes" in text or "A verdict changes" in text
    assert re.search(r"\| probe_test_acc \| org/good \| 15 \| 1\.00 \|.*\| 0\.\d\d \(0\.\d\d–0\.\d\d\) \|", text)
    assert "**org/good — probe_test_acc** (reliability of the metric's ranking: 0." in text
    assert dropped[("headline", "org/good", 0)]["fit_share_max"] == 0.0625  # max over the datasets
    assert re.search(r"\| headline \| org/good \| 1/4 \| 1 \| 1/4 \| 2 \| 6\.25e-02 \| 0\.00e\+00 \|", text)
    summary = json.loads((results_dir / "summary.json").read_text())
    assert summary["verdicts"]["probe_test_acc"][0]["verdict"] == "supported"
    assert summary["timings_total_s"] == 3.0


def test_every_table_header_matches_its_rows(results_dir):
    lines = (results_dir / "REPORT.md").read_text().splitlines()
    cells = lambda line: len(re.split(r"(?<!\\)\|", line.strip())) - 2  # noqa: E731
    tables = 0
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            tables += 1
            width = cells(lines[i - 1])
            assert line.count("---|") == width
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert cells(lines[j]) == width, (lines[i - 1], lines[j])
                j += 1
    assert tables > 10
    with pytest.raises(ValueError, match="row 1 has 4 cells for 3 columns"):
        markdown_table([[1, 2, 3], [1, 2, 3, 4]], ["a", "b", "c"])


def test_regenerate_refuses_a_directory_without_the_committed_inputs(tmp_path):
    with pytest.raises(ValueError, match="collected.csv.gz is missing"):
        report.regenerate(tmp_path)


def test_lora_budget_line_groups_identical_budgets():
    """The LoRA section states each distinct budget once with its runs' text counts and training minutes; runs
    without a recorded budget are left out, and a table without budget columns gives no line."""
    lora = pd.DataFrame({"dataset": ["a", "b", "c"], "steps": [200, 200, None], "batch_size": [8, 8, None],
                         "lr": [5e-4, 5e-4, None], "max_length": [64, 64, None], "n_train": [1500, 685, None],
                         "n_test": [500, 293, None], "lora_train_s": [120.0, 300.0, None]})
    assert report.lora_budget(lora) == ("200 steps × batch 8, lr 0.0005, 64 tokens on 2 dataset(s) (685–1500 train / "
                                        "293–500 test texts; training 2.0–5.0 min per run)")
    assert report.lora_budget(lora.drop(columns=["steps"])) == ""


def test_export_reads_the_checkout_state_before_writing(tmp_path, monkeypatch):
    """Re-exporting into a committed report directory: the git state is read before any file is written, so the
    report's own new files are not taken for uncommitted changes (+dirty)."""
    runs = tmp_path / "runs"
    runs.mkdir()
    synthetic_table(np.random.default_rng(1)).to_csv(runs / "collected.csv", index=False)
    out = tmp_path / "results"
    monkeypatch.setattr(report, "git_commit", lambda: "abc" + ("+dirty" if out.exists() else ""))
    report.export(runs, out, "cmd", SETTINGS)
    assert json.loads((out / report.RUN).read_text())["report_code"]["git_commit"] == "abc"


def test_long_table_bytes_depend_on_the_table_only(tmp_path):
    """write_table: the same table gives the same bytes at any path (no temporary file name or time in the gzip
    header), and it reads back unchanged."""
    table = pd.DataFrame({"model": ["m", "m"], "value": [0.5, 0.25]})
    report.write_table(table, tmp_path / "a.csv.gz")
    report.write_table(table, tmp_path / "other.csv.gz")
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "other.csv.gz").read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a.csv.gz"), table)
