"""Linear probe (SPEC §3, Fig. 3 baseline): a frozen causal LM, mean pooling of its last hidden state,
dropout 0.05 and Linear(d, C) trained with AdamW (lr 1e-4, batch 64, 50 epochs); test accuracy.

The frozen model runs once over the texts (eval mode, bf16 on CUDA) and the head is trained on the
pooled features; see ntps/training.py for the outputs (results.json, log.jsonl, head.safetensors).

Examples:
    python linear_training.py                                 # smollm2-135m on vader-movies
    python linear_training.py --model Qwen/Qwen2-0.5B --dataset emotion --device cuda
    python linear_training.py --max_samples 200 --epochs 2    # smoke test
"""

from __future__ import annotations

from ntps import cli
from ntps.training import TrainConfig, add_training_args, train

MODE = "linear"


def parse_args(argv=None):
    p = cli.parser("linear_training.py", __doc__)
    add_training_args(p, MODE)
    return cli.parse(p, argv)


def main(args) -> dict:
    return train(TrainConfig.from_args(args, MODE))


def run(argv=None) -> None:
    """``python linear_training.py`` and the console command ``ntps-linear``: :func:`main` behind
    :func:`ntps.cli.run` (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "linear_training.py", argv)


if __name__ == "__main__":
    run()
