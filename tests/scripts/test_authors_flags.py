"""The authors' command lines: one per script in the spelling of the paper's scripts, parsed onto our
flags and run on the tiny fixtures; --help shows our names; the script boundary (ntps.cli.run)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("sklearn")

import alignment_vis  # noqa: E402
import cache  # noqa: E402
import from_scratch  # noqa: E402
import K_sweep  # noqa: E402
import linear_sklearn  # noqa: E402
import linear_training  # noqa: E402
import lora_finetuning  # noqa: E402
from ntps import cli  # noqa: E402
from ntps.io import run_dir  # noqa: E402
from ntps.training import TrainConfig  # noqa: E402

SCRIPTS = (cache, K_sweep, alignment_vis, linear_sklearn, linear_training, lora_finetuning, from_scratch)


@pytest.fixture(autouse=True)
def one_thread_and_logging_restored():
    """One torch thread; the logging set up by ntps.cli (handlers, levels) undone after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    root = logging.getLogger()
    handlers, levels = list(root.handlers), {name: logging.getLogger(name).level for name in cli._our_loggers()}
    yield
    torch.set_num_threads(n)
    for h in [h for h in root.handlers if h not in handlers and isinstance(h, (cli._Stderr, logging.FileHandler))]:
        root.removeHandler(h)
        h.close()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def notices(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "ntps.cli")


def test_cache_authors_command_line(tiny_lm, tmp_path, caplog, sentiment_csv):
    caplog.set_level(logging.INFO)  # as ntps.cli.run sets it
    argv = ["--model_name", str(tiny_lm), "--dataset_name", str(sentiment_csv), "--batch_size", "4", "--split", "train",
            "--dtype", "float32", "--save_dir", str(tmp_path / "cache"), "--num_workers", "4",
            "--log_dir", str(tmp_path / "logs"), "--device", "cpu", "--max_length", "32"]
    args = cache.parse_args(argv)
    assert (args.model, args.dataset, args.output_dir) == (str(tiny_lm), str(sentiment_csv), str(tmp_path / "cache"))
    assert (args.batch_size, args.split, args.dtype) == (4, "train", "float32")
    assert not hasattr(args, "num_workers") and not hasattr(args, "_authors_used")
    text = notices(caplog)
    assert "--num_workers has no meaning here and is ignored" in text
    assert "pass --max_samples 0" in text and "pass --dtype float32" not in text  # --dtype given
    out = cache.main(args)
    meta = json.loads((out / "meta.json").read_text())
    assert out == run_dir(tmp_path / "cache", str(tiny_lm), meta["dataset"], "train")
    assert meta["n_texts"] == 28 and (out / "stats.safetensors").is_file()
    assert "28 texts" in (tmp_path / "logs" / "cache.log").read_text()  # --log_dir: the log, as a file


def test_k_sweep_authors_command_line(tmp_path, caplog, make_artifact):
    make_artifact(run_dir(tmp_path / "cache", "toy", "toy", "train"))
    argv = ["--model_name", "toy", "--dataset_name", "toy", "--data_path", str(tmp_path / "cache"), "--save_path",
            str(tmp_path / "NTPS"), "--fraction_k", "0.25", "0.5", "--sparse_k", "0"]
    args = K_sweep.parse_args(argv)
    assert (args.model, args.dataset, args.stats_dir, args.output_dir) == \
        ("toy", "toy", str(tmp_path / "cache"), str(tmp_path / "NTPS"))
    assert args.fractions == "0.25,0.5" and args.order == "descending"
    text = notices(caplog)
    assert "--sparse_k has no meaning here" in text and "pass --order ascending" in text and "--atol 1e-8" in text
    res = K_sweep.main(args)
    assert {r["fraction"] for r in res["rows"]} == {0.25, 0.5} and {r["layer"] for r in res["rows"]} == {0, 1, 2}
    assert res["stats_dir"] == str(run_dir(tmp_path / "cache", "toy", "toy", "train"))
    assert (run_dir(tmp_path / "NTPS", "toy", "toy", "train") / "ntps_raw_descending.csv").is_file()
    caplog.clear()  # the authors' order and tolerance given: no note
    ours = K_sweep.main(K_sweep.parse_args([*argv, "--order", "ascending", "--atol", "1e-8"]))
    assert "--order ascending" not in notices(caplog) and ours["settings"]["order"] == "ascending"
    assert ours["settings"]["atol"] == 1e-8


def test_alignment_vis_authors_command_line(tmp_path, bos_model_dir, monkeypatch, caplog, make_vis_artifact,
                                           vis_words):
    from fig_plot import fig1

    monkeypatch.chdir(tmp_path)  # the authors' command names no root: ours is ./outputs
    stats_dir = make_vis_artifact(run_dir(Path(cli.DEFAULT_OUTPUT_DIR), str(bos_model_dir), "toy", "train"),
                                  bos_model_dir)
    monkeypatch.setattr(fig1, "main", lambda args: {})  # the figure is tested in test_alignment_vis
    args = alignment_vis.parse_args(["--model_name", str(bos_model_dir), "--dataset_name", "toy", "--i_layer", "1",
                                     "--words", vis_words])
    assert (args.model, args.dataset, args.layer) == (str(bos_model_dir), "toy", 1)
    assert "BOS" in notices(caplog)
    rec = alignment_vis.main(args)
    assert rec["meta"]["layer"] == 1 and rec["meta"]["stats_dir"] == str(stats_dir)
    assert (stats_dir / "alignment_vis" / "layer1" / "projections.json").is_file()


def test_linear_sklearn_authors_command_line(tmp_path, monkeypatch, toy_features, write_features):
    monkeypatch.chdir(tmp_path)
    X, y = toy_features(N=60, d=6, C=2)
    train = run_dir(Path(cli.DEFAULT_OUTPUT_DIR), "toy", "toy", "train")
    write_features(train, X[None], y, 2)
    args = linear_sklearn.parse_args(["--model_name", "toy", "--dataset_name", "toy"])
    assert (args.model, args.dataset, args.features_dir) == ("toy", "toy", None)
    res = linear_sklearn.main(args)
    assert res["features_dir"] == str(train) and (train / "probes_sklearn.csv").is_file()


def test_linear_training_authors_command_line(tiny_lm, tmp_path, monkeypatch, caplog, sentiment_csv):
    caplog.set_level(logging.INFO)  # as ntps.cli.run sets it
    monkeypatch.chdir(tmp_path)
    argv = ["--model_name", str(tiny_lm), "--dataset_name", str(sentiment_csv), "--batch_size", "4",
            "--learning_rate", "1e-2", "--n_epochs", "1", "--token_selection", "mean_token", "--eval_steps", "0",
            "--logging_steps", "1", "--result_path", "results", "--log_dir", "logs", "--wandb_project", "p",
            "--wandb_entity", "e", "--num_workers", "2", "--lora_rank", "8", "--start_layer", "0",
            "--device", "cpu", "--max_length", "32"]
    cfg = TrainConfig.from_args(linear_training.parse_args(argv), "linear")
    assert (cfg.model, cfg.dataset, cfg.batch_size, cfg.lr, cfg.epochs, cfg.pooling) == \
        (str(tiny_lm), str(sentiment_csv), 4, 1e-2, 1.0, "mean")
    assert (cfg.eval_steps, cfg.logging_steps, cfg.result_path, cfg.log_dir) == (0, 1, "results", "logs")
    assert (cfg.wandb_project, cfg.wandb_entity, cfg.report_to) == ("p", "e", "none")
    text = notices(caplog)
    for flag in ("--num_workers", "--lora_rank", "--start_layer"):
        assert f"{flag} has no meaning here and is ignored" in text
    res = linear_training.main(linear_training.parse_args(argv))
    assert res["steps"] == 7 and res["config"]["lr"] == 1e-2
    assert Path(res["output_dir"]) == run_dir(cli.DEFAULT_OUTPUT_DIR, str(tiny_lm), res["dataset"], "linear")
    copies = list(Path("results").glob("*_linear_results.json"))
    assert len(copies) == 1 and json.loads(copies[0].read_text())["test_accuracy"] == res["test_accuracy"]
    assert "--wandb_entity is ignored: wandb is off" in caplog.text
    assert "linear done" in Path("logs/linear_training.log").read_text()


def test_lora_authors_command_line(tiny_lm, tmp_path, sentiment_csv):
    argv = ["--model_name", str(tiny_lm), "--dataset_name", str(sentiment_csv), "--batch_size", "4", "--lora_rank", "4",
            "--n_steps", "2", "--learning_rate", "1e-2", "--start_layer", "1", "--token_selection", "last",
            "--eval_steps", "1", "--logging_steps", "1", "--result_path", str(tmp_path / "r.json"),
            "--output_dir", str(tmp_path), "--device", "cpu", "--max_length", "32"]
    args = lora_finetuning.parse_args(argv)
    assert (args.lora_r, args.max_steps, args.lr, args.lora_start_block, args.pooling) == (4, 2, 1e-2, 1, "last")
    res = lora_finetuning.main(args)
    assert res["steps"] == 2 and res["model_info"]["lora"]["r"] == 4
    assert res["model_info"]["lora"]["layers_to_transform"] == [1]  # block 1 (produces hidden state 2)
    assert json.loads((tmp_path / "r.json").read_text())["steps"] == 2
    with pytest.raises(SystemExit):  # an unknown value of a mapped flag is an argparse error
        lora_finetuning.parse_args([*argv, "--token_selection", "max"])


def test_from_scratch_authors_command_line(tiny_lm, tmp_path, sentiment_csv):
    args = from_scratch.parse_args(["--model_name", str(tiny_lm), "--dataset_name", str(sentiment_csv), "--n_steps",
                                    "2", "--batch_size", "4", "--learning_rate", "1e-3", "--num_workers", "0",
                                    "--output_dir", str(tmp_path), "--device", "cpu", "--max_length", "32"])
    assert (args.max_steps, args.lr) == (2, 1e-3)
    res = from_scratch.main(args)
    assert res["steps"] == 2 and res["trainable_parameters"] == res["total_parameters"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda m: m.__name__)
def test_help_shows_our_names_and_lists_the_authors_in_one_line(script, capsys):
    with pytest.raises(SystemExit):
        script.parse_args(["--help"])
    options, _, authors = capsys.readouterr().out.partition("the authors' flags: ")
    authors = " ".join(authors.split())
    assert "--model " in options and "--output_dir" in options and "--model_name" not in options
    assert "--model_name = --model" in authors and "--dataset_name = --dataset" in authors
    assert "--output_root" not in options + authors


def test_run_turns_user_errors_into_one_line_and_exit_status_2(tmp_path, capsys, make_artifact):
    with pytest.raises(SystemExit) as e:
        cli.run(K_sweep.main, K_sweep.parse_args, "K_sweep.py", ["--stats_dir", str(tmp_path / "nope")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("K_sweep.py: error: ") and "cache.py" in err[0]
    make_artifact(tmp_path)
    cli.run(K_sweep.main, K_sweep.parse_args, "K_sweep.py", ["--stats_dir", str(tmp_path), "--layers", "0"])
    assert "[K_sweep] 1 layers in" in capsys.readouterr().err  # logging configured by the boundary


def test_logging_only_rank_0_logs_info():
    try:
        cli.setup_logging("cache.py", rank=1)
        assert logging.getLogger("ntps").level == logging.WARNING == logging.getLogger("cache").level
    finally:
        cli.setup_logging("cache.py", rank=0)
    assert logging.getLogger("ntps.training").getEffectiveLevel() == logging.INFO


def test_one_device_resolver():
    assert cli.resolve_device("cpu") == torch.device("cpu") and cli.resolve_device(None).type in ("cpu", "cuda")
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ValueError, match="CUDA is not available"):
        cli.resolve_device("cuda:0")


def test_train_config_checks_and_keeps_the_run_key_names():
    with pytest.raises(ValueError, match="logging_steps"):
        TrainConfig.from_argv("linear", ["--logging_steps", "0"])
    with pytest.raises(ValueError, match="mode must be one of"):
        TrainConfig.from_args(linear_training.parse_args([]), "probe")
    cfg = TrainConfig.from_argv("lora", ["--seed", "3", "--training_seed", "5", "--lora_start_block", "2"])
    key = cfg.run_key()  # the names of results.json / checkpoints written before the flags were renamed
    assert (key["data_seed"], key["seed"], key["start_layer"]) == (3, 5, 2) and "output_dir" not in key
    assert "features_dir" not in key and "features_dir" not in cfg.config() and np.isclose(cfg.lr, 1e-4)
