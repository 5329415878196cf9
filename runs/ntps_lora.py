"""NTPS before and after LoRA for one (model, dataset), with the linear-probe and LoRA accuracies (Fig. 3).

Steps (each reuses its outputs when they are already up to date):

1. linear probe           linear_training.py   -> {output_dir}/{model}/{dataset}/linear/results.json
2. LoRA fine-tuning       lora_finetuning.py   -> {output_dir}/{model}/{dataset}/lora/{results.json,adapter/}
3. statistics before      cache.py on the train split of the pretrained model
4. statistics after       cache.py --lora_ckpt .../lora/adapter (adapter merged), into .../lora/stats_after/
5. NTPS before and after  K_sweep.py on both (per layer × fraction; its CSV/JSON stay beside each artifact)

(``--no_stats_after``: no step 4, NTPS before only.)

and writes ``ntps_lora.csv`` / ``ntps_lora.json`` (one row: model, dataset, layer, fraction, ntps_before,
ntps_after, chance, linear_acc, lora_acc, gain = lora_acc − linear_acc) and ``ntps_lora_sweep.csv``
(every layer × fraction, before and after) into ``{output_dir}/{model}/{dataset}/`` (``--output_dir`` is the
output root, as for every script). collect.py reads them, and the sweep after LoRA as the score
``ntps_raw_{order}_after_lora``.

The reported cell is ``--ntps_layer`` / ``--ntps_fraction`` when given, else the cell with the largest
margin of NTPS-before over chance (the same cell is read after LoRA). The paper instead picks the cell
that maximises a correlation over 12 datasets (SPEC §3, §5): use the sweep file for that.

Examples:
    python -m runs.ntps_lora                                   # smollm2-135m on vader-movies, paper budgets
    python -m runs.ntps_lora --lora_max_steps 300 --linear_max_steps 300 --batch_size 8 --max_length 64
    python -m runs.ntps_lora --model Qwen/Qwen2-0.5B --dataset sst2 --device cuda --ntps_layer 12 \
        --ntps_fraction 0.5
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

from ntps import cli
from ntps.io import environment_info, read_json, run_dir, slugify, write_csv, write_json

log = logging.getLogger(__name__)

ROW_COLUMNS = ["model", "dataset", "layer", "fraction", "ntps_before", "ntps_after", "chance", "linear_acc",
               "lora_acc", "gain", "selection"]
SWEEP_COLUMNS = ["layer", "fraction", "ntps_before", "ntps_after", "chance"]


def parse_args(argv=None):
    p = cli.parser("runs/ntps_lora.py", __doc__)
    g = cli.add_model_args(p, loading=False)
    g.add_argument("--dtype", default="auto", choices=cli.DTYPES, help="forward-pass dtype of every step")
    g.add_argument("--trust_remote_code", action="store_true", help="allow model code from the hub (OpenELM)")
    cli.add_device_arg(g)
    cli.add_data_args(p, split=None, max_eval_samples=True, max_samples_help="seeded class-stratified cap on "
                      "training texts (linear probe and LoRA); 0 = all",
                      seed_help="seed of the class-stratified subsets (training texts and statistics)")
    cli.add_output_args(p, help="output root: runs in {output_dir}/{model}/{dataset}/{train, linear, lora}",
                        overwrite="retrain and recompute everything")
    g = p.add_argument_group("training (linear probe and LoRA)")
    g.add_argument("--batch_size", type=int, default=64)
    g.add_argument("--training_seed", type=int, default=42,
                   help="seed of the head/LoRA initialisation, dropout and batch order")
    g.add_argument("--linear_epochs", type=float, default=50, help="linear probe epochs (paper: 50)")
    g.add_argument("--linear_max_steps", type=int, default=-1, help="linear probe steps (overrides epochs)")
    g.add_argument("--lora_max_steps", type=int, default=5000, help="LoRA steps (paper: 5000)")
    g.add_argument("--linear_results", default=None,
                   help="results.json of a finished linear probe to use instead of training one (e.g. "
                        "linear_training.py --features_dir on the cached features)")
    g.add_argument("--linear_args", default="", help="extra linear_training.py flags, e.g. '--lr 1e-3'")
    g.add_argument("--lora_args", default="", help="extra lora_finetuning.py flags, e.g. '--lora_start_block 10'")
    g = p.add_argument_group("statistics and NTPS")
    g.add_argument("--stats_max_samples", type=int, default=2000,
                   help="train texts for the statistics (cache.py's default is 1000); 0 = all")
    g.add_argument("--stats_batch_size", type=int, default=32)
    g.add_argument("--layers", default="all", help="hidden-state indices for the statistics and NTPS")
    g.add_argument("--fractions", default=None, help="K_sweep fractions (default: K_sweep's 0.05..0.95)")
    g.add_argument("--order", default="descending", choices=["descending", "ascending"])
    g.add_argument("--stats_after", action="store_true", default=True,
                   help="statistics and NTPS after LoRA, adapter merged (the default)")
    g.add_argument("--no_stats_after", dest="stats_after", action="store_false",
                   help="skip the statistics after LoRA: ntps_after stays empty")
    g.add_argument("--ntps_layer", type=int, default=None, help="report this layer (negative: from the end)")
    g.add_argument("--ntps_fraction", type=float, default=None, help="report this fraction")
    return cli.parse(p, argv)


# ------------------------------------------------------------------------------------------------
# The steps (thin wrappers over the scripts, so a test can replace any of them)
# ------------------------------------------------------------------------------------------------


def train_linear(args) -> dict:
    import linear_training

    argv = _common_train_argv(args) + ["--epochs", str(args.linear_epochs), "--max_steps",
                                       str(args.linear_max_steps)] + shlex.split(args.linear_args)
    return linear_training.main(linear_training.parse_args(argv))


def read_linear_results(args) -> dict:
    """The finished linear probe of ``--linear_results``, checked to be of the same model and dataset."""
    path = Path(args.linear_results)
    if not path.is_file():
        raise SystemExit(f"ntps_lora.py: --linear_results {path} does not exist; run linear_training.py first "
                         "or drop the flag to train the probe here")
    res = read_json(path)
    if slugify(str(res.get("model"))) != slugify(args.model) or "test_accuracy" not in res:
        raise SystemExit(f"ntps_lora.py: {path} is not a linear probe of {args.model!r} (model "
                         f"{res.get('model')!r})")
    return {**res, "output_dir": str(path.parent)}


def train_lora(args) -> dict:
    import lora_finetuning

    argv = _common_train_argv(args) + ["--max_steps", str(args.lora_max_steps)] + shlex.split(args.lora_args)
    return lora_finetuning.main(lora_finetuning.parse_args(argv))


def _common_train_argv(args) -> list[str]:
    argv = ["--model", args.model, "--device", args.device, "--dtype", args.dtype, "--training_seed",
            str(args.training_seed), "--batch_size", str(args.batch_size), "--output_dir", str(args.output_dir)]
    argv += _data_argv(args) + _remote_code_argv(args)
    for flag in ("max_samples", "max_eval_samples"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    if args.overwrite:
        argv.append("--overwrite")
    return argv


def _remote_code_argv(args) -> list[str]:
    return ["--trust_remote_code"] if args.trust_remote_code else []


def _data_argv(args) -> list[str]:
    """The data flags every step shares: dataset, its columns and files, subset seed, max_length."""
    argv = ["--dataset", args.dataset, "--seed", str(args.seed), "--max_length", str(args.max_length)]
    for flag in ("dataset_revision", "text_column", "label_column", "test_file"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    argv += ["--encoding", args.encoding] + (["--merge_label_variants"] if args.merge_label_variants else [])
    return argv


def compute_stats(args, output_dir: Path, lora_ckpt: Path | None, overwrite: bool) -> Path:
    """cache.py on the train split (with ``lora_ckpt`` merged); returns the artifact directory."""
    import cache

    argv = ["--model", args.model, "--split", "train", "--max_samples", str(args.stats_max_samples),
            "--output_dir", str(output_dir), "--layers", args.layers, "--batch_size", str(args.stats_batch_size),
            "--device", args.device, "--dtype", args.dtype, *_data_argv(args), *_remote_code_argv(args)]
    if lora_ckpt is not None:
        argv += ["--lora_ckpt", str(lora_ckpt)]
    if overwrite:
        argv.append("--overwrite")
    return Path(cache.main(cache.parse_args(argv)))


def compute_ntps(args, stats_dir: Path) -> list[dict]:
    """K_sweep.py on one artifact (always recomputed: the sweep is cheap, the sums may be new)."""
    import K_sweep

    argv = ["--stats_dir", str(stats_dir), "--layers", args.layers, "--order", args.order, "--overwrite"]
    if args.fractions:
        argv += ["--fractions", args.fractions]
    return K_sweep.main(K_sweep.parse_args(argv))["rows"]


# ------------------------------------------------------------------------------------------------


def select_cell(before: list[dict], layer: int | None, fraction: float | None) -> tuple[int, float, str]:
    """The (layer, fraction) to report: the given ones, else the largest margin of NTPS over chance."""
    layers = sorted({r["layer"] for r in before})
    cells = [r for r in before if r.get("ntps") is not None]
    if not cells:
        raise ValueError("K_sweep returned no finite NTPS (ranks too small for these fractions?)")
    if layer is not None and layer < 0:
        layer = max(layers) + 1 + layer
    if layer is not None:
        cells = [r for r in cells if r["layer"] == layer]
    if fraction is not None:
        cells = [r for r in cells if abs(r["fraction"] - fraction) < 1e-9]
    if not cells:
        raise ValueError(f"no finite NTPS at layer {layer}, fraction {fraction} (layers {layers})")
    best = max(cells, key=lambda r: r["ntps"] - r["chance"])
    if layer is not None and fraction is not None:
        how = "given"
    else:
        how = "largest NTPS-before margin over chance" + (f" at layer {layer}" if layer is not None else "") \
            + (f" at f={fraction:g}" if fraction is not None else "")
    return best["layer"], best["fraction"], how


def _stats_after(args, lora: dict, lora_dir: Path, adapter: Path) -> Path:
    """The statistics of the LoRA-merged model (recomputed when the adapter is new)."""
    after_root = lora_dir / "stats_after"
    after_meta = next(after_root.glob("*/*/train/meta.json"), None) if after_root.is_dir() else None
    stale = (args.overwrite or not lora.get("reused") or after_meta is None
             or read_json(after_meta).get("lora_ckpt") != str(adapter))
    return compute_stats(args, after_root, adapter, overwrite=stale)


def main(args) -> dict:
    linear = read_linear_results(args) if args.linear_results else train_linear(args)
    log.info("linear probe: test accuracy %.4f", linear["test_accuracy"])
    lora = train_lora(args)
    log.info("LoRA: test accuracy %.4f", lora["test_accuracy"])
    dataset_key = lora["dataset"]
    if slugify(str(linear.get("dataset"))) != slugify(str(dataset_key)):
        raise SystemExit(f"ntps_lora.py: the linear probe was trained on {linear.get('dataset')!r}, LoRA on "
                         f"{dataset_key!r}")
    lora_dir = Path(lora["output_dir"])
    adapter = (lora_dir / "adapter").resolve()
    if not (adapter / "adapter_config.json").is_file():
        raise SystemExit(f"ntps_lora.py: no LoRA adapter at {adapter}")

    before_dir = compute_stats(args, Path(args.output_dir), None, args.overwrite)
    if read_json(before_dir / "meta.json").get("lora_ckpt"):
        raise SystemExit(f"ntps_lora.py: {before_dir} holds statistics of a LoRA-merged model; rerun with "
                         "--overwrite or remove it")
    after_dir = _stats_after(args, lora, lora_dir, adapter) if args.stats_after else None
    rows_before = compute_ntps(args, before_dir)
    rows_after = compute_ntps(args, after_dir) if after_dir is not None else []

    after_by = {(r["layer"], r["fraction"]): r for r in rows_after}
    sweep = [{"layer": r["layer"], "fraction": r["fraction"], "ntps_before": r["ntps"],
              "ntps_after": after_by.get((r["layer"], r["fraction"]), {}).get("ntps"), "chance": r["chance"]}
             for r in rows_before]
    layer, fraction, how = select_cell(rows_before, args.ntps_layer, args.ntps_fraction)
    cell = next(r for r in sweep if r["layer"] == layer and r["fraction"] == fraction)
    row = {"model": args.model, "dataset": dataset_key, "layer": layer, "fraction": fraction,
           "ntps_before": cell["ntps_before"], "ntps_after": cell["ntps_after"], "chance": cell["chance"],
           "linear_acc": linear["test_accuracy"], "lora_acc": lora["test_accuracy"],
           "gain": lora["test_accuracy"] - linear["test_accuracy"], "selection": how}

    out = run_dir(args.output_dir, args.model, dataset_key)
    write_csv(out / "ntps_lora.csv", [row], ROW_COLUMNS)
    write_csv(out / "ntps_lora_sweep.csv", sweep, SWEEP_COLUMNS)
    result = {"row": row, "sweep": sweep, "stats_before": str(before_dir),
              "stats_after": None if after_dir is None else str(after_dir),
              "adapter": str(adapter), "linear_results": str(Path(linear["output_dir"]) / "results.json"),
              "lora_results": str(lora_dir / "results.json"), "settings": vars(args),
              "environment": environment_info()}
    write_json(out / "ntps_lora.json", result)
    log.info("%s on %s, layer %s, f=%g (%s): NTPS %s -> %s (chance %.4f); linear %.4f, LoRA %.4f, gain %+.4f; "
             "wrote %s", args.model, dataset_key, layer, fraction, how, row["ntps_before"], row["ntps_after"],
             row["chance"], row["linear_acc"], row["lora_acc"], row["gain"], out / "ntps_lora.csv")
    return result


if __name__ == "__main__":
    cli.run(main, parse_args, "runs/ntps_lora.py")
