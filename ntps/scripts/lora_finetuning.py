"""LoRA fine-tuning (SPEC §3, Fig. 3): PEFT LoRA (r 32, alpha 32, dropout 0.05) on the attention q/k/v
projections of every block plus the mean-pooled linear head, Adafactor lr 1e-4 with a cosine schedule
and 5 % warm-up, 5000 steps; test accuracy.

Writes results.json, log.jsonl, head.safetensors and the adapter (``adapter/``, PEFT save_pretrained)
into ``outputs/{model}/{dataset}/lora/``; NTPS after LoRA:
``python cache.py --model M --dataset D --lora_ckpt outputs/{model}/{dataset}/lora/adapter --output_dir ...``
(or ntps_lora.py, which does both runs and both statistics).

Examples:
    python lora_finetuning.py                                        # smollm2-135m on vader-movies
    python lora_finetuning.py --max_steps 300 --batch_size 8 --max_length 64   # a CPU-sized run
    python lora_finetuning.py --model Qwen/Qwen2-0.5B --dataset sst2 --device cuda --lora_start_block 12
    python lora_finetuning.py --resume_from_checkpoint latest        # continue an interrupted run
"""

from __future__ import annotations

from ntps.training import script

MODE = "lora"
parse_args, main, run = script(MODE, "lora_finetuning.py", __doc__, "ntps-lora")

if __name__ == "__main__":
    run()
