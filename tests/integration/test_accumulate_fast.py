"""The fast paths of the statistics pass (issue 14): token-budget batching, statistic GEMMs on rounded
inputs (tf32/bf16), and no host reads of device values per batch."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cache
import ntps.accumulate as accumulate
from ntps.accumulate import PRECISIONS, NonFiniteHiddenStates, StatsAccumulator, _round_tf32
from ntps.artifacts import load_stats
from ntps.text import DEFAULT_CUDA_BATCH_TOKENS, batch_token_budget, length_sorted_shards

KEYS = ("XX", "XY", "C0", "C1", "sum_x")


def rel_err(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def test_token_budget_batches_are_full_sorted_and_cover_every_text_once():
    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(1, 30, 200), [55, 80]])  # two texts longer than the budget
    budget, shard_size = 48, 20
    shards = length_sorted_shards(lengths, 4, shard_size, max_batch_tokens=budget)
    batches = [b for s in shards for b in s]
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths))) and (np.diff(lengths[flat]) >= 0).all()
    for b, nxt in zip(batches, batches[1:] + [None]):
        assert len(b) * lengths[b].max() <= budget or len(b) == 1
        if nxt is not None:  # greedy: the next text would not have fitted
            assert (len(b) + 1) * lengths[nxt[0]] > budget
    for s, nxt in zip(shards, shards[1:] + [None]):
        n = sum(len(b) for b in s)
        assert n <= shard_size or len(s) == 1
        if nxt is not None:
            assert n + len(nxt[0]) > shard_size
    assert length_sorted_shards(np.array([], dtype=int), 4, 8, max_batch_tokens=16) == []


def test_token_budget_default_is_off_on_the_cpu_only():
    assert batch_token_budget(None, "cpu") == 0 and batch_token_budget(None, "cuda") == DEFAULT_CUDA_BATCH_TOKENS
    assert batch_token_budget(0, "cuda") == 0 and batch_token_budget(512, "cpu") == 512
    with pytest.raises(ValueError, match=">= 0"):
        batch_token_budget(-1, "cpu")


@pytest.fixture
def run_cache(model_dirs, sentiment_csv):
    """``run_cache(out, *extra)``: cache.py with the tiny Llama on the 28 training texts, one shard."""

    def run(out, *extra):
        argv = ["--model", str(model_dirs["llama"]), "--dataset", str(sentiment_csv), "--output_dir", str(out),
                "--max_samples", "0", "--batch_size", "4", "--shard_size", "1000", "--checkpoint_interval", "1e9",
                *extra]
        return cache.main(cache.parse_args(argv))

    return run


def test_cache_with_a_token_budget_equals_fixed_batches(run_cache, tmp_path, monkeypatch):
    shapes = []
    original = StatsAccumulator.add_batch

    def spy(self, hs, mask, *a, **k):
        shapes.append(tuple(mask.shape))
        return original(self, hs, mask, *a, **k)

    monkeypatch.setattr(StatsAccumulator, "add_batch", spy)
    fixed = load_stats(run_cache(tmp_path / "fixed"))
    n_fixed = len(shapes)
    packed = load_stats(run_cache(tmp_path / "packed", "--max_batch_tokens", "24"))
    assert all(B * T <= 24 or B == 1 for B, T in shapes[n_fixed:]) and len(shapes) - n_fixed != n_fixed
    assert packed.meta["max_batch_tokens"] == 24 and fixed.meta["max_batch_tokens"] == 0
    assert (packed.n_texts, packed.n_tokens, packed.n_pairs) == (fixed.n_texts, fixed.n_tokens, fixed.n_pairs)
    for layer in fixed.layers:
        for k in KEYS:
            assert rel_err(getattr(packed.layers[layer], k), getattr(fixed.layers[layer], k)) < 1e-6, (layer, k)


def random_batches(rng, n_batches=4, B=5, T=9, d=12, n_layers=2, left=False):
    for _ in range(n_batches):
        lengths = rng.integers(1, T + 1, B)
        mask = torch.as_tensor(np.arange(T)[None, :] < lengths[:, None]).long()
        if left:
            mask = mask.flip(1)
        hs = [torch.from_numpy(rng.standard_normal((B, T, d)).astype(np.float32) + 1.0) for _ in range(n_layers)]
        yield hs, mask, torch.as_tensor(rng.integers(0, 3, B))


@pytest.mark.parametrize("block", [512, 5])
def test_rounded_gemm_inputs_cost_what_their_rounding_predicts(block, monkeypatch):
    monkeypatch.setattr("ntps.accumulate.GRAM_BLOCK_COLUMNS", block)
    x = torch.randn(1000) * 1e3
    r = _round_tf32(x)
    assert ((r.view(torch.int32) & 0x1FFF) == 0).all() and ((r - x).abs() <= 2**-11 * x.abs()).all()
    stats = {}
    for precision in PRECISIONS:
        acc = StatsAccumulator([0, 1], 12, 3, precision=precision)
        for hs, mask, labels in random_batches(np.random.default_rng(1)):
            acc.add_batch(hs, mask, labels)
        stats[precision] = acc.to_stats()
    for k in ("XX", "XY", "C0", "C1"):
        e = {p: rel_err(getattr(stats[p].layers[1], k), getattr(stats["float32"].layers[1], k)) for p in PRECISIONS}
        assert 1e-6 < e["tf32"] < 2 * 2**-11 and e["tf32"] < e["bf16"] < 2 * 2**-8, (k, e)
        assert e["bf16x3"] < min(e["tf32"], 2 * 2**-15), (k, e)  # hi + lo: ~16-bit inputs
    assert torch.equal(stats["bf16"].layers[0].sum_x, stats["float32"].layers[0].sum_x)  # no GEMM: float32
    for s in stats.values():  # K_sweep checks symmetry to 1e-8: hi·lo and lo·hi must not round apart
        assert all(torch.equal(m, m.T) for layer in s.layers.values() for m in (layer.XX, layer.C0))
    with pytest.raises(ValueError, match="float16"):
        StatsAccumulator([0], 4, 2, precision="float16")


@pytest.mark.parametrize("left", [False, True])
def test_no_device_value_is_read_on_the_host_per_batch(monkeypatch, left):
    """On the meta device any read of a value raises; .item/.cpu/.tolist/.numpy are counted besides."""
    calls = []
    for name in ("item", "cpu", "tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _name=name, _original=original, **k):
            calls.append(_name)
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    real_settings, settings = accumulate._cublas_float32, []
    monkeypatch.setattr(accumulate, "_cublas_float32", lambda tf32: settings.append(tf32) or real_settings(tf32))
    for precision in PRECISIONS:  # on meta, tf32/bf16 take the CUDA tensor-core path
        acc = StatsAccumulator([0, 2], 12, 3, device="meta", precision=precision, flush_every=2)
        settings.clear()
        n = 0
        for hs, mask, labels in random_batches(np.random.default_rng(2), n_batches=5, n_layers=3, left=left):
            acc.add_batch([h.to("meta", torch.bfloat16) for h in hs], mask, labels, return_features=True)
            n += int(mask.sum())
        assert acc.XX.device.type == "meta" and acc._pending == 1 and (acc.n_texts, acc.n_tokens) == (25, n)
        assert settings == [precision == "tf32"] * 10  # every layer's GEMMs: IEEE float32 unless tf32
    assert calls == []


def test_nonfinite_states_are_reported_by_the_next_flush_where_checks_are_deferred():
    acc = StatsAccumulator([0, 1], 4, 2)
    acc._check_every_batch = False  # as on CUDA: the device flag is read by flush(), not per batch
    hs, mask = [torch.ones(2, 3, 4), torch.ones(2, 3, 4)], torch.ones(2, 3, dtype=torch.long)
    hs[1][0, 1, 2] = float("nan")
    acc.add_batch(hs, mask, torch.tensor([0, 1]))
    acc.flush(check=False)
    with pytest.raises(NonFiniteHiddenStates, match="layer 1"):
        acc.flush()
    with pytest.raises(NonFiniteHiddenStates):
        acc.to_stats()


def test_cache_loop_calls_no_item_cpu_or_tolist_per_batch(run_cache, repo_root, tmp_path, monkeypatch):
    """Calls from cache.py, ntps/accumulate.py and ntps/text.py do not grow with the number of batches."""
    ours = {repo_root / "cache.py", repo_root / "ntps" / "accumulate.py", repo_root / "ntps" / "text.py"}
    counts = []
    for name in ("item", "cpu", "tolist"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **k):
            counts[-1] += Path(sys._getframe(1).f_code.co_filename).resolve() in ours
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for n in (8, 28):  # 2 and 7 batches of 4 texts, one shard
        counts.append(0)
        run_cache(tmp_path / str(n), "--max_samples", str(n))
    assert counts[0] == counts[1], counts


def test_bf16x3_keeps_the_squares_of_the_low_parts_on_the_diagonal():
    v, lo = 1 + 2**-9 + 2**-10, 2**-9 + 2**-10  # bf16 splits v exactly: hi = 1, lo
    hs, mask = [torch.full((1, 2, 3), v)], torch.ones(1, 2, dtype=torch.long)
    out = {}
    for precision in ("float32", "bf16x3"):
        acc = StatsAccumulator([0], 3, 2, precision=precision)
        acc.add_batch(hs, mask, torch.tensor([1]))
        out[precision] = acc.to_stats().layers[0]
    for k in ("C0", "XX"):  # one text: C0 = s_1 s_1ᵀ = XX = v² everywhere
        exact, split = getattr(out["float32"], k), getattr(out["bf16x3"], k)
        assert torch.equal(split.diagonal(), exact.diagonal())  # a biased diagonal would move NTPS by ~1e-3
        off = ~torch.eye(3, dtype=torch.bool)
        assert torch.equal(exact[off] - split[off], torch.full((6,), lo**2, dtype=torch.float64))


def test_cuda_float32_statistics_ignore_a_global_tf32_setting():
    """cache.py's float32 sums stay IEEE float32 on CUDA even where the caller turned TF32 on globally
    (torch.set_float32_matmul_precision("high")); tf32 turns it on inside the block only."""
    from ntps.accumulate import _cublas_float32

    matmul = torch.backends.cuda.matmul
    name = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    on, off = ("tf32", "ieee") if name == "fp32_precision" else (True, False)
    before = getattr(matmul, name)
    try:
        for outside in (on, off):
            setattr(matmul, name, outside)
            for tf32, inside in ((False, off), (True, on)):
                with _cublas_float32(tf32):
                    assert getattr(matmul, name) == inside
                assert getattr(matmul, name) == outside
    finally:
        setattr(matmul, name, before)
