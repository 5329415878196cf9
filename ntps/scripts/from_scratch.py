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

from ntps.training import script

MODE = "scratch"
parse_args, main, run = script(MODE, "from_scratch.py", __doc__, "ntps-scratch")

if __name__ == "__main__":
    run()
