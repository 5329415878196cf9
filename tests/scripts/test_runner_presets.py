"""runs/reproduce_offline.py for any model and dataset list, and its presets (issue 16, item 3).

The hub is unreachable here: tiny local models and local data files stand in for hub ids. The paper preset
is checked through its ``--dry_run`` plan; a tiny run executes two stage groups end to end.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from ntps.data import PAPER_DATASETS
from ntps.io import slugify
from runs import reproduce_offline as ro

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "tiny_sentiment.csv"
SPEC_MODELS = ["Qwen/Qwen2-0.5B", "Qwen/Qwen2-1.5B", "Qwen/Qwen2-7B", "apple/OpenELM-270M", "apple/OpenELM-450M",
               "apple/OpenELM-1_1B", "apple/OpenELM-3B", "meta-llama/Meta-Llama-3-8B"]


def flag(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def test_paper_preset_plan_has_the_papers_models_datasets_and_budgets(capsys):
    args = ro.parse_args(["--preset", "paper", "--dry_run", "--nproc_per_node", "4"])
    stages = ro.plan(args)
    assert args.models == SPEC_MODELS and args.datasets == list(PAPER_DATASETS) and len(args.datasets) == 12
    cache = [s for s in stages if s.group == "cache"]
    assert len(cache) == 2 * 8 * 12 and {(s.model, s.dataset) for s in cache} == \
        {(m, d) for m in SPEC_MODELS for d in PAPER_DATASETS}
    for s in cache:
        assert s.cmd[1:7] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4", "cache.py"]
        assert (flag(s.cmd, "--max_samples"), flag(s.cmd, "--max_length"), flag(s.cmd, "--dtype")) == \
            ("0", "512", "bfloat16")
        assert ("--trust_remote_code" in s.cmd) == ("OpenELM" in s.model)
        assert flag(s.cmd, "--output_dir") == "outputs/paper"
    ksweep = [s for s in stages if s.group == "ksweep"]
    assert len(ksweep) == 3 * 96 and {flag(s.cmd, "--device") for s in ksweep} == {"cuda"}
    lora = [s for s in stages if s.group == "lora"]
    assert len(lora) == 96
    for s in lora:
        assert (flag(s.cmd, "--lora_max_steps"), flag(s.cmd, "--batch_size"), flag(s.cmd, "--lora_args")) == \
            ("5000", "64", "--lr 0.0001 --eval_batch_size 32")
        assert (flag(s.cmd, "--stats_max_samples"), flag(s.cmd, "--dtype"), flag(s.cmd, "--device")) == \
            ("0", "bfloat16", "cuda")
        assert ("--trust_remote_code" in s.cmd) == ("OpenELM" in s.model)
    assert [s.group for s in stages][-3:] == ["analysis", "analysis", "report"]
    assert flag(stages[-1].cmd, "--report_dir") == "results/paper"
    assert ro.main(args) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == len(stages)
    assert printed[0].startswith("[cache] torchrun --standalone --nproc_per_node 4 cache.py --model Qwen/Qwen2-0.5B "
                                 "--dataset rotten_tomatoes --split train --max_samples 0")
    assert "--lora_args '--lr 0.0001 --eval_batch_size 32'" in next(p for p in printed if p.startswith("[lora]"))


def test_one_process_paper_run_keeps_device_cuda_and_flags_override_the_preset():
    args = ro.parse_args(["--preset", "paper", "--nproc_per_node", "1", "--models", "Qwen/Qwen2-0.5B", "--datasets",
                          "sst2", "--lora_models", "", "--max_length", "256", "--dtype", "float32"])
    cache = [s for s in ro.plan(args) if s.group == "cache"]
    assert [flag(s.cmd, "--device") for s in cache] == ["cuda", "cuda"]
    assert flag(cache[0].cmd, "--nproc_per_node") == "1"
    assert (flag(cache[0].cmd, "--max_length"), flag(cache[0].cmd, "--dtype")) == ("256", "float32")
    assert not [s for s in ro.plan(args) if s.group == "lora"]
    # under torchrun with several processes, cache.py's --device auto picks cuda:LOCAL_RANK
    many = ro.parse_args(["--preset", "paper", "--nproc_per_node", "2", "--models", "Qwen/Qwen2-0.5B",
                          "--datasets", "sst2"])
    assert {flag(s.cmd, "--device") for s in ro.plan(many) if s.group == "cache"} == {"auto"}


def test_names_of_every_kind_and_their_run_directories(tmp_path):
    model_dir, gguf = tmp_path / "models" / "my-llama", tmp_path / "models" / "m.Q4.gguf"
    train, test = tmp_path / "data" / "a.csv", tmp_path / "data" / "b.csv"
    models = [str(model_dir), "org/hub-model", str(gguf), "smollm2-135m"]
    args = ro.parse_args(["--models", ",".join(models), "--datasets",
                          f"{FIXTURE},stanfordnlp/sst2,org/other,vader-movies,train={train},test={test}",
                          "--text_column", "sentence", "--lora_models", str(model_dir), "--lora_datasets",
                          str(FIXTURE), "--output_dir", str(tmp_path / "out")])
    assert args.datasets[-1] == f"train={train},test={test}" and len(args.datasets) == 5
    stages = ro.plan(args)
    assert len(stages) == 4 * 5 * 8 + 1 + 3 + 4 * 5 * 3 * len(ro.TOLERANCES) + len(ro.TOLERANCES)  # + tolerance
    by_key = {s.key: s for s in stages}
    # hub ids and paths are filed under their slugs; registry names under their keys (sst2 for its hub id)
    fixture_key = slugify(str(FIXTURE))
    for key in (f"cache/models__my-llama/{fixture_key}/train", "cache/org__hub-model/sst2/test",
                "cache/models__m.Q4.gguf/org__other/train", "cache/smollm2-135m/vader-movies/test",
                f"cache/smollm2-135m/{slugify(str(train))}/train"):
        assert key in by_key, key
    cache = by_key[f"cache/models__my-llama/{fixture_key}/train"]
    assert flag(cache.cmd, "--model") == str(model_dir) and flag(cache.cmd, "--dataset") == str(FIXTURE)
    assert cache.outputs[0] == tmp_path / "out" / "models__my-llama" / fixture_key / "train" / "stats.safetensors"
    assert flag(by_key[f"ksweep/models__my-llama/{fixture_key}/raw_descending"].cmd, "--stats_dir") == \
        str(cache.outputs[0].parent)
    # columns go to local files and unregistered hub ids only; caps: the key's, else the default
    assert flag(cache.cmd, "--text_column") == "sentence"
    assert flag(cache.cmd, "--max_samples") == str(ro.DEFAULT_CAPS[0])
    assert flag(by_key["cache/org__hub-model/org__other/train"].cmd, "--text_column") == "sentence"
    for key in ("cache/org__hub-model/sst2/train", "cache/smollm2-135m/vader-movies/train"):
        assert "--text_column" not in by_key[key].cmd and "--dtype" not in by_key[key].cmd
    lora = by_key[f"lora/models__my-llama/{fixture_key}"]
    assert flag(lora.cmd, "--text_column") == "sentence" and "--trust_remote_code" not in lora.cmd
    assert "--trust_remote_code" in ro.plan(ro.parse_args(["--models", "x/OpenELM-tiny", "--datasets",
                                                           "vader-movies"]))[0].cmd


def test_split_names_and_caps():
    assert ro.split_names("a.csv, train=x.csv,test=y.csv,,org/b") == ["a.csv", "train=x.csv,test=y.csv", "org/b"]
    assert ro.caps("smollm2-135m", 0.5) == (750, 250) and ro.caps("other", 1.0) == ro.DEFAULT_CAPS
    assert ro.caps("Qwen/Qwen2-7B", 2.0, {}, (0, 0)) == (0, 0)  # paper: whole splits whatever the scale
    with pytest.raises(SystemExit):
        ro.parse_args(["--nproc_per_node", "0"])


def test_tiny_end_to_end_with_a_local_model_and_a_local_file(tmp_path, monkeypatch, model_dirs):
    """cache (train, test) and scores on a tiny Llama directory and a CSV with its own column names; a rerun
    skips every stage."""
    model_dir = Path(shutil.copytree(model_dirs["llama"], tmp_path / "tiny-llama"))
    data = tmp_path / "reviews.csv"
    with open(FIXTURE) as src, open(data, "w", newline="") as dst:
        rows = list(csv.DictReader(src))
        w = csv.DictWriter(dst, fieldnames=["sentence", "sentiment"])
        w.writeheader()
        w.writerows({"sentence": r["text"], "sentiment": r["label"]} for r in rows)
    out = tmp_path / "out"
    argv = ["--models", str(model_dir), "--datasets", str(data), "--text_column", "sentence", "--label_column",
            "sentiment", "--stages", "cache,scores", "--max_length", "16", "--device", "cpu", "--output_dir", str(out),
            "--report_dir", str(tmp_path / "report")]
    monkeypatch.chdir(ROOT)
    args = ro.parse_args(argv)
    assert ro.main(args) == 0
    record = json.loads((out / ro.STAGE_FILE).read_text())
    assert sorted(record["stages"]) == sorted(s.key for s in ro.plan(args) if s.group in ("cache", "scores"))
    assert all(r["rc"] == 0 for r in record["stages"].values())
    train = out / slugify(str(model_dir)) / slugify(str(data)) / "train"
    meta = json.loads((train / "meta.json").read_text())
    assert meta["n_texts"] == 28 and meta["max_length"] == 16 and meta["label_names"] == ["negative", "positive"]
    assert (train.parent / "test" / "features_mean.npy").is_file() and (train / "scores.csv").is_file()
    assert ro.main(ro.parse_args(argv)) == 0
    assert json.loads((out / ro.STAGE_FILE).read_text())["invocations"][-1]["skipped"] == 3
