"""GPU check and timings on randomly initialised models of the paper's sizes (weights do not change speed).

Runs the real scripts with ``--device cuda`` (bf16 forward passes, bf16 autocast in training, float64
eigen-solves on the GPU) and writes one JSON line per step to ``--out`` (default ``$OUT/gpu_check.jsonl``):

1. builds Qwen2-0.5B- and Qwen2-7B-shaped models from their configs (random weights, bf16), with the
   smollm2 tokenizer (its ids fit both vocabularies), saved as local model directories;
2. ``cache.py`` on the whole vader-movies train split (7029 texts) for both → tokens/s;
3. ``K_sweep.py`` on the GPU for every layer, and on the CPU for three layers → agreement and speed-up;
4. ``lora_finetuning.py`` (issue 4's CPU setting: 300 steps, batch 8, max length 64) on the 0.5B model, and
   50 steps on the 7B one → seconds per step;
5. ``linear_training.py`` with the paper's settings (batch 64, 50 epochs) and ``from_scratch.py`` (100 steps)
   on the 0.5B model.

Needs ``NTPS_HOME`` holding ``datasets/vader-movies`` and ``models/smollm2-135m`` tokenizer files (see the
README's benchmark section for the exact ``run`` command). Not a test: it prints timings.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE = "cuda"

SHAPES = {  # the paper's Qwen2 sizes (config.json of Qwen/Qwen2-0.5B and Qwen/Qwen2-7B)
    "qwen2-0.5b-random": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                              num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                              tie_word_embeddings=True),
    "qwen2-7b-random": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                            num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                            tie_word_embeddings=False),
}


def log(out: Path, **record) -> None:
    record["t"] = time.strftime("%H:%M:%S")
    print(json.dumps(record), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(record) + "\n")


def build_model(name: str, root: Path, tokenizer_dir: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    path = root / name
    if (path / "config.json").is_file():
        return path
    cfg = Qwen2Config(max_position_embeddings=4096, rope_theta=1e6, **SHAPES[name])
    torch.manual_seed(0)
    with torch.device(DEVICE):
        model = Qwen2ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(path)
    del model
    torch.cuda.empty_cache()
    return path


def run(out: Path, step: str, argv: list[str], **extra) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True)
    seconds = round(time.perf_counter() - t, 2)
    rec = {"step": step, "rc": proc.returncode, "seconds": seconds, **extra}
    if proc.returncode:
        rec["stderr_tail"] = proc.stderr[-2500:]
    log(out, **rec)
    return rec


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(Path(os.environ.get("OUT", "/tmp")) / "gpu_check.jsonl"))
    p.add_argument("--work", default="/tmp/ntps_gpu")
    p.add_argument("--skip_7b", action="store_true")
    p.add_argument("--smoke", action="store_true",
                   help="check this script on the CPU: tiny shapes, 64 texts, a few steps")
    args = p.parse_args()
    global DEVICE
    if args.smoke:
        DEVICE = "cpu"
        for shape in SHAPES.values():
            shape.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=49152)
    out, work = Path(args.out), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    log(out, step="env", torch=torch.__version__, cuda=torch.version.cuda, gpu=gpu,
        python=sys.version.split()[0])
    tok_dir = Path(os.environ["NTPS_HOME"]) / "models" / "smollm2-135m"
    names = ["qwen2-0.5b-random"] + ([] if args.skip_7b else ["qwen2-7b-random"])
    runs = work / "outputs"
    for name in names:
        t = time.perf_counter()
        path = build_model(name, work / "models", tok_dir)
        log(out, step=f"build {name}", seconds=round(time.perf_counter() - t, 1))
        res = run(out, f"cache {name}", ["cache.py", "--model", str(path), "--dataset", "vader-movies",
                                         "--max_samples", "64" if args.smoke else "0", "--device", DEVICE,
                                         "--dtype", "bfloat16",
                                         "--batch_size", "64", "--output_dir", str(runs), "--overwrite"])
        stats = next(runs.glob(f"*{name}*/vader-movies/train"), None)
        if res["rc"] or stats is None:
            continue
        meta = json.loads((stats / "meta.json").read_text())
        log(out, step=f"cache {name} throughput", n_texts=meta["n_texts"], n_tokens=meta["n_tokens"],
            loop_s=meta["seconds"]["loop"], total_s=meta["seconds"]["total"],
            tokens_per_s=round(meta["n_tokens"] / meta["seconds"]["loop"], 1))
        gpu = run(out, f"K_sweep cuda {name}", ["K_sweep.py", "--stats_dir", str(stats), "--device", DEVICE,
                                                "--output_dir", str(work / f"ks_gpu_{name}"), "--overwrite"])
        n_states = meta["n_states"]
        few = f"0,{n_states // 2},{n_states - 1}"
        cpu = run(out, f"K_sweep cpu 3 layers {name}", ["K_sweep.py", "--stats_dir", str(stats), "--device", "cpu",
                                                        "--layers", few, "--output_dir", str(work / f"ks_cpu_{name}"),
                                                        "--overwrite"])
        if not gpu["rc"] and not cpu["rc"]:
            a = json.loads((work / f"ks_gpu_{name}" / "ntps_raw_descending.json").read_text())
            b = json.loads((work / f"ks_cpu_{name}" / "ntps_raw_descending.json").read_text())
            ga = {(r["layer"], r["fraction"]): r["ntps"] for r in a["rows"]}
            diffs = [abs(r["ntps"] - ga[(r["layer"], r["fraction"])]) for r in b["rows"]
                     if r["ntps"] is not None and ga.get((r["layer"], r["fraction"])) is not None and r.get("unique")]
            log(out, step=f"K_sweep agreement {name}", layers_compared=few, n_cells=len(diffs),
                max_abs_diff=max(diffs) if diffs else None, gpu_s_all_layers=a["seconds"],
                cpu_s_3_layers=b["seconds"], gpu_s_per_layer=round(a["seconds"] / n_states, 3),
                cpu_s_per_layer=round(b["seconds"] / 3, 3))
        steps = "3" if args.smoke else "300" if "0.5b" in name else "50"
        lora = run(out, f"lora {name}", ["lora_finetuning.py", "--model", str(path), "--dataset", "vader-movies",
                                         "--device", DEVICE, "--max_steps", steps, "--batch_size", "8",
                                         "--max_length", "64", "--eval_batch_size", "128",
                                         *(["--max_samples", "64", "--max_eval_samples", "32"] if args.smoke else []),
                                         "--output_dir", str(work / f"lora_{name}"), "--overwrite"])
        if not lora["rc"]:
            r = json.loads((work / f"lora_{name}" / "results.json").read_text())
            log(out, step=f"lora {name} result", steps=r["steps"], train_s=r["train_time_s"],
                s_per_step=round(r["train_time_s"] / r["steps"], 4), wall_s=r["wall_time_s"],
                bf16=r["bf16_autocast"], n_test=r["n_test"], test_accuracy=r["test_accuracy"])
        if "0.5b" in name:
            small = ["--max_samples", "64", "--max_eval_samples", "32", "--epochs", "1"] if args.smoke else []
            lin = run(out, f"linear {name}", ["linear_training.py", "--model", str(path), "--dataset", "vader-movies",
                                              "--device", DEVICE, "--output_dir", str(work / "linear"), "--overwrite",
                                              *small])
            if not lin["rc"]:
                r = json.loads((work / "linear" / "results.json").read_text())
                log(out, step="linear result", steps=r["steps"], wall_s=r["wall_time_s"], prep_s=r["prep_time_s"],
                    test_accuracy=r["test_accuracy"])
            run(out, f"from_scratch {name}", ["from_scratch.py", "--model", str(path), "--dataset", "vader-movies",
                                              "--device", DEVICE, "--max_steps", "3" if args.smoke else "100",
                                              "--batch_size", "32",
                                              "--max_length", "128", "--max_eval_samples", "500",
                                              "--output_dir", str(work / "scratch"), "--overwrite"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
