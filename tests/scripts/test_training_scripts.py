"""The training scripts end to end (linear probe, LoRA, from scratch, runs/ntps_lora.py).

Fast tier: the ``tiny_lm`` fixture (a tiny random Llama, 2 layers, width 32, saved with a WordLevel
tokenizer built from the 40-row fixtures); every run is a few optimisation steps on one CPU thread.
Nothing is downloaded. ntps.training's helpers: integration/test_training.py.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")

from safetensors.torch import load_file  # noqa: E402

import cache  # noqa: E402
import from_scratch  # noqa: E402
import linear_training  # noqa: E402
import lora_finetuning  # noqa: E402
from ntps import training  # noqa: E402
from ntps.io import OutputExistsError, run_dir  # noqa: E402
from ntps.models import load_model_and_tokenizer  # noqa: E402
from runs import ntps_lora  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def argv(sentiment_csv):
    """``argv(lm, out, *extra, dataset=tiny_sentiment.csv)``: a training script's command line, batch 4, on the CPU."""

    def make(lm, out, *extra, dataset=sentiment_csv):
        return ["--model", str(lm), "--dataset", str(dataset), "--output_dir", str(out), "--device", "cpu",
                "--batch_size", "4", "--max_length", "32", "--eval_batch_size", "16", "--logging_steps", "1",
                *extra]

    return make


@pytest.fixture
def spy(monkeypatch):
    """Capture the classifier of a run, with a copy of its state dict before training."""
    seen = {}
    real = training.build_classifier

    def wrapped(*a, **k):
        clf, tok, info = real(*a, **k)
        seen["clf"] = clf
        seen["before"] = {n: t.detach().clone() for n, t in clf.state_dict().items()}
        return clf, tok, info

    monkeypatch.setattr(training, "build_classifier", wrapped)
    return seen


def changed(seen) -> set[str]:
    after = seen["clf"].state_dict()
    return {n for n, t in seen["before"].items() if not torch.equal(t, after[n])}


def test_linear_training_end_to_end_trains_only_the_head(tiny_lm, tmp_path, spy, argv):
    root = tmp_path / "linear"
    run = ("--epochs", "2", "--lr", "1e-2")
    res = linear_training.main(linear_training.parse_args(argv(tiny_lm, root, *run)))
    out = Path(res["output_dir"])  # --output_dir is the root: {root}/{model}/{dataset}/linear
    assert out == run_dir(root, str(tiny_lm), res["dataset"], "linear")
    assert res["steps"] == 2 * 7 and res["mode"] == "linear"  # 28 train texts, batch 4
    assert 0.0 <= res["test_accuracy"] <= 1.0 and res["n_test"] == 12
    assert {"balanced_accuracy", "wall_time_s", "config", "environment"} <= set(res)
    assert changed(spy) == {"head.weight", "head.bias"}
    for f in ("results.json", "log.jsonl", "head.safetensors"):
        assert (out / f).is_file()
    assert not (out / training.CHECKPOINT_DIR).exists()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == list(range(1, 15)) and "eval_accuracy" in log[-1]
    head = load_file(str(out / "head.safetensors"))
    assert head["weight"].shape == (2, 32)
    # a rerun with the same settings is up to date; other settings need --overwrite
    again = linear_training.main(linear_training.parse_args(argv(tiny_lm, root, *run)))
    assert again["reused"] and again["test_accuracy"] == res["test_accuracy"]
    with pytest.raises(OutputExistsError, match="overwrite"):
        linear_training.main(linear_training.parse_args(argv(tiny_lm, root, "--epochs", "3")))


def test_linear_probe_on_cached_features_equals_the_forward_pass_run(tiny_lm, tmp_path, argv, sentiment_csv):
    """--features_dir (cache.py --save_features, float32) trains the same head as running the model."""
    dirs = {}
    for split in ("train", "test"):
        dirs[split] = Path(cache.main(cache.parse_args(
            ["--model", str(tiny_lm), "--dataset", str(sentiment_csv), "--split", split, "--max_length", "32",
             "--output_dir", str(tmp_path / "cache"), "--save_features", "--features_dtype", "float32",
             "--device", "cpu"])))
    run = ("--epochs", "3", "--lr", "1e-2", "--head_dropout", "0", "--batch_size", "64")
    direct = linear_training.main(linear_training.parse_args(argv(tiny_lm, tmp_path / "direct", *run)))
    cached = linear_training.main(linear_training.parse_args(
        argv(tiny_lm, tmp_path / "cached", *run, "--features_dir", str(dirs["train"]),
             "--test_features_dir", str(dirs["test"]))))
    assert cached["n_train"] == direct["n_train"] == 28 and cached["n_test"] == direct["n_test"] == 12
    assert cached["test_loss"] == pytest.approx(direct["test_loss"], rel=1e-5)
    assert cached["test_accuracy"] == direct["test_accuracy"]
    a, b = (load_file(str(Path(r["output_dir"]) / "head.safetensors")) for r in (direct, cached))
    torch.testing.assert_close(a["weight"], b["weight"], rtol=1e-4, atol=1e-5)
    # features of another model, another max_length, or without the test split: clear errors
    feats = ("--features_dir", str(dirs["train"]), "--test_features_dir", str(dirs["test"]))
    with pytest.raises(ValueError, match="not --model"):
        linear_training.main(linear_training.parse_args(
            ["--model", "smollm2-135m", "--output_dir", str(tmp_path / "m"), "--max_length", "32", *feats]))
    with pytest.raises(ValueError, match="--max_length 32"):
        linear_training.main(linear_training.parse_args(
            argv(tiny_lm, tmp_path / "l", *feats, "--max_length", "64")))  # the last flag wins
    with pytest.raises(ValueError, match="test_features_dir"):
        linear_training.main(linear_training.parse_args(
            argv(tiny_lm, tmp_path / "t", "--features_dir", str(dirs["train"]))))


def test_gradient_accumulation_gives_the_same_step(tiny_lm, tmp_path, argv):
    common = ("--max_steps", "3", "--head_dropout", "0", "--lr", "1e-2")
    a = linear_training.main(linear_training.parse_args(argv(tiny_lm, tmp_path / "a", *common)))
    b = linear_training.main(linear_training.parse_args(
        argv(tiny_lm, tmp_path / "b", *common, "--gradient_accumulation_steps", "2")))
    wa, wb = (load_file(str(Path(r["output_dir"]) / "head.safetensors")) for r in (a, b))
    torch.testing.assert_close(wa["weight"], wb["weight"], rtol=1e-5, atol=1e-6)
    assert a["test_accuracy"] == b["test_accuracy"]


def test_lora_changes_only_adapter_and_head_and_the_adapter_merges(tiny_lm, tmp_path, spy, argv, topics_jsonl):
    res = lora_finetuning.main(lora_finetuning.parse_args(argv(
        tiny_lm, tmp_path / "lora", "--max_steps", "4", "--lr", "1e-2", "--lora_start_block", "1", "--dataset",
        str(topics_jsonl))))
    out = Path(res["output_dir"])
    assert res["num_classes"] == 3 and res["steps"] == 4 and res["model_info"]["lora"]["r"] == 32
    diff = changed(spy)
    assert diff and all("lora_" in n or n.startswith("head.") for n in diff), diff
    assert {"head.weight", "head.bias"} <= diff and any("lora_B" in n for n in diff)
    lora_names = [n for n in spy["before"] if "lora_" in n]
    assert lora_names and all(".layers.1." in n for n in lora_names)  # --lora_start_block 1: block 1 only
    assert sorted(res["model_info"]["lora"]["target_modules"]) == ["k_proj", "q_proj", "v_proj"]
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "head.safetensors").is_file()
    # cache.py --lora_ckpt path: the adapter merges into the causal LM and changes only q/k/v of block 1
    base, _, _ = load_model_and_tokenizer(str(tiny_lm))
    merged, _, info = load_model_and_tokenizer(str(tiny_lm), lora_ckpt=str(out / "adapter"))
    sb, sm = base.state_dict(), merged.state_dict()
    moved = {n for n in sb if not torch.equal(sb[n], sm[n])}
    assert moved and all(re.fullmatch(r"model\.layers\.1\.self_attn\.[qkv]_proj\.weight", n) for n in moved)
    assert info["lora_ckpt"] == str(out / "adapter")


def test_from_scratch_trains_every_weight_from_a_random_init(tiny_lm, tmp_path, spy, argv):
    res = from_scratch.main(from_scratch.parse_args(argv(tiny_lm, tmp_path / "scratch", "--max_steps", "3", "--lr",
                                                         "1e-2", "--optimizer", "adamw")))
    out = Path(res["output_dir"])
    assert res["trainable_parameters"] == res["total_parameters"]
    params = {n for n, _ in spy["clf"].named_parameters()}
    assert params <= changed(spy)
    pretrained, _, _ = load_model_and_tokenizer(str(tiny_lm))
    init = spy["before"]["backbone.layers.0.self_attn.q_proj.weight"]
    assert not torch.equal(init, pretrained.model.layers[0].self_attn.q_proj.weight)
    assert (out / "model" / "config.json").is_file()


def test_resumed_run_ends_with_the_same_weights(tiny_lm, tmp_path, argv):
    common = ("--max_steps", "6", "--lr", "1e-2", "--eval_steps", "2")
    straight = lora_finetuning.main(lora_finetuning.parse_args(argv(tiny_lm, tmp_path / "a", *common)))
    part = lora_finetuning.main(lora_finetuning.parse_args(
        argv(tiny_lm, tmp_path / "b", *common, "--stop_after_steps", "3")))
    assert part["status"] == "stopped" and part["steps"] == 3
    a, b = Path(straight["output_dir"]), Path(part["output_dir"])
    ckpt = b / training.CHECKPOINT_DIR / "step-0000003"
    files = {p.name for p in ckpt.iterdir()}
    assert files == {"trainable.safetensors", "training_state.pt", "trainer_state.json"}
    torch.load(ckpt / "training_state.pt", weights_only=True)  # tensors and plain values only
    with pytest.raises(OutputExistsError, match="resume_from_checkpoint"):
        lora_finetuning.main(lora_finetuning.parse_args(argv(tiny_lm, tmp_path / "b", *common)))
    with pytest.raises(ValueError, match="other settings"):
        lora_finetuning.main(lora_finetuning.parse_args(
            argv(tiny_lm, tmp_path / "b", "--max_steps", "7", "--lr", "1e-2",
                 "--resume_from_checkpoint", "latest")))
    resumed = lora_finetuning.main(lora_finetuning.parse_args(
        argv(tiny_lm, tmp_path / "b", *common, "--resume_from_checkpoint", "latest")))
    assert resumed["resumed_from"].endswith("step-0000003") and resumed["steps"] == 6
    for f in ("head.safetensors", "adapter/adapter_model.safetensors"):
        wa, wb = load_file(str(a / f)), load_file(str(b / f))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    steps = [json.loads(x)["step"] for x in (b / "log.jsonl").read_text().splitlines()]
    steps_a = [json.loads(x)["step"] for x in (a / "log.jsonl").read_text().splitlines()]
    assert steps == steps_a  # the resumed log holds each entry once


def test_bad_inputs_give_clear_errors(tiny_lm, tmp_path, argv):
    with pytest.raises(KeyError, match="unknown dataset"):
        linear_training.main(linear_training.parse_args(
            argv(tiny_lm, tmp_path / "x", dataset="no-such-dataset")))
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\n" + "".join(f"text number {i},{1 + i % 2}\n" for i in range(20)))
    with pytest.raises(ValueError, match=r"0\.\.C-1|0\.\.1|labels"):
        linear_training.main(linear_training.parse_args(argv(tiny_lm, tmp_path / "y", dataset=bad)))
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        linear_training.main(linear_training.parse_args(
            argv(tiny_lm, tmp_path / "z", "--gradient_accumulation_steps", "3")))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        lora_finetuning.main(lora_finetuning.parse_args(
            argv(tiny_lm, tmp_path / "w", "--max_steps", "2", "--resume_from_checkpoint", "latest")))


def test_ntps_lora_end_to_end(tiny_lm, tmp_path, sentiment_csv):
    pytest.importorskip("cache")
    args = ntps_lora.parse_args(["--model", str(tiny_lm), "--dataset", str(sentiment_csv), "--output_dir",
                                 str(tmp_path), "--device", "cpu", "--batch_size", "4", "--max_length", "32",
                                 "--linear_max_steps", "3", "--lora_max_steps", "3",
                                 "--lora_args", "--lr 1e-2 --eval_steps 0", "--fractions", "0.25,0.5"])
    res = ntps_lora.main(args)
    row = res["row"]
    assert set(ntps_lora.ROW_COLUMNS) <= set(row)
    assert row["gain"] == pytest.approx(row["lora_acc"] - row["linear_acc"])
    assert 0.0 <= row["ntps_before"] <= 1.0 and 0.0 <= row["ntps_after"] <= 1.0
    base = Path(res["stats_before"]).parent
    rows = list(csv.DictReader(open(base / "ntps_lora.csv")))
    assert len(rows) == 1 and rows[0]["model"] == str(tiny_lm)
    sweep = list(csv.DictReader(open(base / "ntps_lora_sweep.csv")))
    assert len(sweep) == 3 * 2  # layers 0..2 × 2 fractions
    assert json.loads((Path(res["stats_after"]) / "meta.json").read_text())["lora_ckpt"] == res["adapter"]
    assert any(r["ntps_before"] != r["ntps_after"] for r in sweep if r["layer"] != "0")
    # a finished linear probe can be reused (reproduce_offline.py trains it on cached features)
    linear_json = Path(res["linear_results"])
    reuse = ntps_lora.parse_args([*argv_of(args), "--linear_results", str(linear_json)])
    assert ntps_lora.main(reuse)["row"]["linear_acc"] == row["linear_acc"]
    # without the statistics after LoRA: the same row, ntps_after empty
    before_only = ntps_lora.main(ntps_lora.parse_args([*argv_of(args), "--no_stats_after"]))
    assert before_only["stats_after"] is None and before_only["row"]["ntps_after"] is None
    assert before_only["row"]["gain"] == row["gain"] and before_only["row"]["ntps_before"] == row["ntps_before"]
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(linear_json.read_text()), "model": "someone-else"}))
    with pytest.raises(SystemExit, match="not a linear probe of"):
        ntps_lora.main(ntps_lora.parse_args([*argv_of(args), "--linear_results", str(other)]))
    with pytest.raises(SystemExit, match="does not exist"):
        ntps_lora.main(ntps_lora.parse_args([*argv_of(args), "--linear_results", str(tmp_path / "none.json")]))


def argv_of(args) -> list[str]:
    """The argv of an ntps_lora run (for reruns with one more flag)."""
    return ["--model", args.model, "--dataset", args.dataset, "--output_dir", args.output_dir, "--device", "cpu",
            "--batch_size", str(args.batch_size), "--max_length", str(args.max_length), "--linear_max_steps",
            str(args.linear_max_steps), "--lora_max_steps", str(args.lora_max_steps), "--lora_args", args.lora_args,
            "--fractions", args.fractions]


def test_select_cell():
    rows = [{"layer": L, "fraction": f, "ntps": n, "chance": 0.1}
            for L, f, n in [(0, 0.5, 0.2), (1, 0.5, 0.6), (1, 0.25, 0.3), (2, 0.5, None)]]
    assert ntps_lora.select_cell(rows, None, None)[:2] == (1, 0.5)
    assert ntps_lora.select_cell(rows, 0, None)[:2] == (0, 0.5)
    assert ntps_lora.select_cell(rows, -2, 0.25) == (1, 0.25, "given")
    with pytest.raises(ValueError, match="no finite"):
        ntps_lora.select_cell(rows, 2, None)
