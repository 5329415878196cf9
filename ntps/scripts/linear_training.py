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

from ntps.training import script

MODE = "linear"
parse_args, main, run = script(MODE, "linear_training.py", __doc__, "ntps-linear")

if __name__ == "__main__":
    run()
