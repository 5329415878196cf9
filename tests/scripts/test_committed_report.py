"""The committed report of the offline experiment (issue 15): `python analyze.py --from results/offline` rewrites
every text output of results/offline byte for byte from the committed inputs alone (the figures are not compared)."""

from __future__ import annotations

import json

from runs import report


def test_committed_report_regenerates_byte_for_byte(repo_root):
    report_dir = repo_root / "results" / "offline"
    assert report.check_regenerates(report_dir) == []


def test_committed_report_ran_one_clean_code_version(repo_root):
    run = json.loads((repo_root / "results" / "offline" / "run.json").read_text())
    codes = {u["code"] for u in run["stage_code"]}
    assert codes == {run["report_code"]["code"]}  # every stage ran the code of the commit that exported the report
    assert not any(str(u["git_commit"]).endswith("+dirty") for u in run["stage_code"])
    assert not str(run["report_code"]["git_commit"]).endswith("+dirty")
    assert len({(r["dataset"]) for r in json.loads((repo_root / "results" / "offline" / "summary.json").read_text())
                ["per_dataset"]}) >= 17
