"""From-scratch baseline (SPEC §3): the same mean-pooled classifier on a randomly initialised model of
the pretrained model's configuration (AutoModelForCausalLM.from_config), every weight trained with
Adafactor lr 1e-4, cosine schedule with 5 % warm-up, 10000 steps; test accuracy.

Writes results.json, log.jsonl, head.safetensors and the trained decoder (``model/``) into
``outputs/{model}/{dataset}/scratch/``.

Examples:
    python from_scratch.py --model Qwen/Qwen2-0.5B --dataset emotion --device cuda
    python from_scratch.py --max_samples 200 --max_steps 20 --batch_size 8 --max_length 64   # smoke test
"""

from __future__ import annotations

from ntps import cli
from ntps.training import TrainConfig, add_training_args, train

MODE = "scratch"


def parse_args(argv=None):
    p = cli.parser("from_scratch.py", __doc__)
    add_training_args(p, MODE)
    return cli.parse(p, argv)


def main(args) -> dict:
    return train(TrainConfig.from_args(args, MODE))


def run(argv=None) -> None:
    """``python from_scratch.py`` and the console command ``ntps-scratch``: :func:`main` behind
    :func:`ntps.cli.run` (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "from_scratch.py", argv)


if __name__ == "__main__":
    run()
