"""bench/gpu_cache_bench.py in its CPU smoke mode: every model × text set × batching × mode is measured and
written as a JSON line (the script itself is meant for one GPU; see the README's Benchmarks section)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from ntps.accumulate import PRECISIONS


def test_gpu_cache_bench_smoke_writes_ratios_memory_and_phases(repo_root, tmp_path):
    out = tmp_path / "bench.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NTPS_HOME": str(tmp_path / "empty_home")}  # synthetic texts
    script = repo_root / "bench" / "gpu_cache_bench.py"
    proc = subprocess.run([sys.executable, str(script), "--smoke", "--out", str(out)], env=env, capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines()]
    measured = [r for r in records if r["step"] == "measure"]
    cells = {(r["model"], r["texts"], r["batching"]) for r in measured}
    assert len(cells) == 2 * 2  # text sets × (fixed, one token budget), one model
    for cell in cells:
        modes = {r["mode"]: r for r in measured if (r["model"], r["texts"], r["batching"]) == cell}
        assert set(modes) == {"bare", *PRECISIONS}, cell
        assert modes["bare"]["ratio"] == 1.0 and all(r["tokens_per_s"] > 0 and r["ratio"] > 0 for r in modes.values())
        assert modes["bf16"]["phase_ms_per_batch"]["stats"] > 0 and modes["bare"]["phase_ms_per_batch"]["stats"] < 1
        assert {r["source"] for r in modes.values()} == {"synthetic"}
    fixed = [r for r in measured if r["batching"] == "16 texts" and r["texts"] == "short"]
    packed = [r for r in measured if r["batching"] == "1024 tokens" and r["texts"] == "short"]
    assert fixed[0]["n_tokens"] == packed[0]["n_tokens"] and packed[0]["n_batches"] < fixed[0]["n_batches"]
    profiles = [r for r in records if r["step"] == "gemm profile"]
    assert len(profiles) == 2 * len(PRECISIONS) and all(0 < r["gemm_share"] <= 1 for r in profiles)
    checks = {r["precision"]: r for r in records if r["step"] == "rounding check"}
    assert set(checks) == set(PRECISIONS)  # errors against float64; on the CPU both sides are the emulation
    assert all(r["device_rel_err_C0"] == r["cpu_emulation_rel_err_C0"] > 0 for r in checks.values())
    c0 = {p: checks[p]["device_rel_err_C0"] for p in PRECISIONS}
    assert c0["float32"] < c0["bf16x3"] < c0["tf32"] < c0["bf16"] < 1e-3, c0
    assert records[-1]["step"] == "done" and "ratio" in proc.stdout


def test_readme_gpu_table_is_the_committed_h200_run(repo_root):
    """Each single-batching row of the README's GPU table (bare tokens/s, then per precision 'device ratio (tokens/s)')
    is what bench/results/gpu_cache_bench_h200.jsonl holds, as printed."""
    import re

    lines = (repo_root / "bench/results/gpu_cache_bench_h200.jsonl").read_text().splitlines()
    runs = [json.loads(line) for line in lines]
    measured = {(r["model"], r["texts"], r["batching"], r["mode"]): r for r in runs if r["step"] == "measure"}
    sizes = {"7B": "qwen2-7b-random", "0.5B": "qwen2-0.5b-random"}
    rows = re.findall(r"^\| (7B|0\.5B), (short|long), (\d+ (?:tokens|texts))[^|]*\| ([\d.]+k) \|(.*)\|[^|]*\|$",
                      (repo_root / "README.md").read_text(), re.M)
    assert len(rows) >= 7, rows

    def k(tokens_per_s: float) -> str:  # 30688 → '30.7k', 154512 → '155k'
        return f"{tokens_per_s / 1e3:.1f}k" if tokens_per_s < 1e5 else f"{tokens_per_s / 1e3:.0f}k"

    for size, texts, batching, bare, cells in rows:
        key = (sizes[size], texts, batching)
        assert bare == k(measured[(*key, "bare")]["tokens_per_s"]), key
        printed = [c.strip().strip("*") for c in cells.split("|")]
        expected = [f"{measured[(*key, p)]['device_ratio']:.2f} ({k(measured[(*key, p)]['tokens_per_s'])})"
                    for p in PRECISIONS]
        assert printed == expected, (key, printed, expected)
