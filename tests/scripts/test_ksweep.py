"""K_sweep.py end to end on a synthetic statistics artifact (the ``make_artifact`` fixture)."""

import csv
import json
import logging

import pytest
import torch

import K_sweep
from ntps.artifacts import ArtifactError, load_stats
from ntps.io import OutputExistsError
from tests.naive import naive_ntps


def run(argv):
    return K_sweep.main(K_sweep.parse_args(argv))


def test_writes_json_and_csv_matching_the_naive_formula(tmp_path, capsys, make_artifact):
    raw = make_artifact(tmp_path)
    res = run(["--stats_dir", str(tmp_path), "--fractions", "0.1,0.25,0.5,0.9"])
    rows = list(csv.DictReader(open(tmp_path / "ntps_raw_descending.csv")))
    assert len(rows) == 3 * 4 and set(K_sweep.COLUMNS) <= set(rows[0])
    data = json.loads((tmp_path / "ntps_raw_descending.json").read_text())
    assert data["artifact"]["model"] == "toy" and data["environment"]["versions"]["torch"]
    for layer in range(3):
        ref = naive_ntps(*raw[layer], [0.1, 0.25, 0.5, 0.9])
        ours = [r for r in res["rows"] if r["layer"] == layer]
        for r, x in zip(ours, ref):
            assert r["chance"] == pytest.approx(r["k_V"] / 16)
            if r["unique"]:
                assert r["ntps"] == pytest.approx(x, abs=1e-8)
    assert "largest margin over chance" in capsys.readouterr().out


def test_rerun_is_up_to_date_and_other_settings_refuse_without_overwrite(tmp_path, caplog, make_artifact):
    caplog.set_level(logging.INFO)
    make_artifact(tmp_path)
    run(["--stats_dir", str(tmp_path), "--layers", "0,2"])
    run(["--stats_dir", str(tmp_path), "--layers", "0,2"])
    assert "up to date" in caplog.text
    with pytest.raises(OutputExistsError, match="overwrite"):
        run(["--stats_dir", str(tmp_path), "--layers", "1"])
    res = run(["--stats_dir", str(tmp_path), "--layers", "1", "--overwrite"])
    assert {r["layer"] for r in res["rows"]} == {1}


def test_whitened_variant_absolute_k_and_ascending(tmp_path, make_artifact):
    make_artifact(tmp_path)
    w = run(["--stats_dir", str(tmp_path), "--variant", "whitened", "--k", "1,4,8"])
    assert all(r["lower"] <= r["excess"] + 1e-12 <= r["upper"] + 2e-12 for r in w["rows"])
    assert (tmp_path / "ntps_whitened_descending.csv").exists()
    a = run(["--stats_dir", str(tmp_path), "--order", "ascending", "--layers", "-1"])
    assert {r["layer"] for r in a["rows"]} == {2}


def test_missing_truncated_and_mismatched_artifacts_give_clear_errors(tmp_path, make_artifact):
    with pytest.raises(ArtifactError, match="cache.py"):
        run(["--stats_dir", str(tmp_path / "nope")])
    make_artifact(tmp_path / "a")
    stats_file = tmp_path / "a" / "stats.safetensors"
    data = stats_file.read_bytes()
    stats_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match="truncated|corrupt"):
        run(["--stats_dir", str(tmp_path / "a")])
    make_artifact(tmp_path / "b")
    make_artifact(tmp_path / "c", d=12)
    (tmp_path / "b" / "stats.safetensors").write_bytes((tmp_path / "c" / "stats.safetensors").read_bytes())
    with pytest.raises(ArtifactError, match="does not belong"):
        run(["--stats_dir", str(tmp_path / "b")])
    with pytest.raises(ValueError, match="out of range"):
        run(["--stats_dir", str(tmp_path / "c"), "--layers", "7"])


def test_artifact_roundtrip_and_addition(tmp_path, make_artifact):
    make_artifact(tmp_path)
    s = load_stats(tmp_path)
    assert sorted(s.layers) == [0, 1, 2] and s.n_texts == 300 and s.d == 16
    twice = load_stats(tmp_path).add_(s)
    assert twice.n_texts == 600 and torch.equal(twice.layers[1].XX, 2 * s.layers[1].XX)


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        K_sweep.parse_args(["--help"])
    out = capsys.readouterr().out
    for flag in ("--order", "--fractions", "--k", "--layers", "--rcond", "--atol", "--variant", "--device",
                 "--overwrite", "--stats_dir"):
        assert flag in out
