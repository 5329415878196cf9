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
    assert set(checks) == set(PRECISIONS[1:])  # on the CPU both sides are the emulation
    assert all(r["device_rel_err_C0"] == r["cpu_emulation_rel_err_C0"] > 0 for r in checks.values())
    assert records[-1]["step"] == "done" and "ratio" in proc.stdout
