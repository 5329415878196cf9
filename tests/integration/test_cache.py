"""Streaming statistics (SPEC §1): the accumulator against naive per-text formulas, and cache.py
end to end on tiny random Llama / Qwen2 models (no network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import cache
import K_sweep
from ntps.accumulate import NonFiniteHiddenStates, StatsAccumulator
from ntps.artifacts import load_stats
from ntps.io import OutputExistsError
from ntps.text import decoder_of, length_sorted_shards, tokenize

KEYS = ("XX", "XY", "C0", "C1", "sum_x")


def naive_sums(per_text_states: list[np.ndarray], labels, C: int) -> dict[str, np.ndarray]:
    """SPEC §1 per text, float64: per_text_states[n] is (n_layers, L_n, d)."""
    n_layers, _, d = per_text_states[0].shape
    out = {k: np.zeros((n_layers, d, d)) for k in ("XX", "C0", "C1")}
    out["XY"], out["sum_x"] = np.zeros((n_layers, d, C)), np.zeros((n_layers, d))
    for H, y in zip(per_text_states, labels):
        H = H.astype(np.float64)
        x = H.mean(1)
        out["XX"] += np.einsum("ld,le->lde", x, x)
        out["XY"][:, :, y] += x
        out["sum_x"] += x
        for t in range(1, H.shape[1]):  # s_t = h_1 + ... + h_t paired with h_{t+1}
            s = H[:, :t].sum(1)
            out["C0"] += np.einsum("ld,le->lde", s, s)
            out["C1"] += np.einsum("ld,le->lde", s, H[:, t])
    return out


def rel_err(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def random_texts(rng, n, d=8, n_layers=3, max_len=7):
    lengths = rng.integers(1, max_len + 1, n)
    lengths[0] = 1  # a one-token text contributes to XX/XY only
    return [rng.standard_normal((n_layers, L, d)).astype(np.float32) for L in lengths]


def accumulate(texts, labels, C, batch_size, side="right"):
    n_layers, _, d = texts[0].shape
    acc = StatsAccumulator(list(range(n_layers)), d, C)
    for b in range(0, len(texts), batch_size):
        chunk = texts[b: b + batch_size]
        T = max(t.shape[1] for t in chunk)
        H = torch.full((n_layers, len(chunk), T, d), 7.0)  # junk at pad positions must not count
        mask = torch.zeros(len(chunk), T, dtype=torch.long)
        for i, t in enumerate(chunk):
            L = t.shape[1]
            sl = slice(0, L) if side == "right" else slice(T - L, T)
            H[:, i, sl] = torch.from_numpy(t)
            mask[i, sl] = 1
        acc.add_batch(list(H), mask, torch.as_tensor(labels[b: b + batch_size]))
    return acc.to_stats()


@pytest.mark.parametrize("block", [512, 3])  # C0/XX as one block row, or as 3 (upper parts, mirrored at flush)
def test_streaming_sums_equal_naive_per_text_formula_any_batching_padding_and_order(block, monkeypatch):
    monkeypatch.setattr("ntps.accumulate.GRAM_BLOCK_COLUMNS", block)
    rng = np.random.default_rng(0)
    texts, C = random_texts(rng, 23), 3
    labels = rng.integers(0, C, len(texts))
    ref = naive_sums(texts, labels, C)
    for batch_size, side in ((1, "right"), (4, "right"), (7, "left"), (23, "left")):
        s = accumulate(texts, labels, C, batch_size, side)
        for layer in range(3):
            for k in KEYS:
                assert rel_err(getattr(s.layers[layer], k), ref[k][layer]) < 1e-6, (batch_size, side, k)
        assert s.n_texts == 23 and s.n_tokens == sum(t.shape[1] for t in texts)
        assert s.n_pairs == sum(t.shape[1] - 1 for t in texts)
        assert s.class_counts.tolist() == np.bincount(labels, minlength=C).tolist()
        assert all(torch.equal(m, m.T) for layer in s.layers.values() for m in (layer.XX, layer.C0))
    perm = rng.permutation(len(texts))
    shuffled = accumulate([texts[i] for i in perm], labels[perm], C, 5)
    assert rel_err(shuffled.layers[1].C1, ref["C1"][1]) < 1e-6


def test_accumulator_rejects_bad_labels_nonfinite_states_and_empty_texts():
    acc = StatsAccumulator([0], 4, 2)
    H, mask = [torch.ones(2, 3, 4)], torch.ones(2, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="outside 0..1"):
        acc.add_batch(H, mask, torch.tensor([0, 2]))
    bad = torch.ones(2, 3, 4)
    bad[1, 1, 2] = float("inf")
    with pytest.raises(NonFiniteHiddenStates, match="float32"):
        acc.add_batch([bad], mask, torch.tensor([0, 1]))
    acc = StatsAccumulator([0], 4, 2)
    mask[1] = 0
    with pytest.raises(ValueError, match="no tokens"):
        acc.add_batch(H, mask, torch.tensor([0, 1]))
    assert acc.n_texts == 0  # nothing was added by the rejected batch


def test_left_padding_with_nan_at_pad_positions_is_ignored():
    acc = StatsAccumulator([0], 4, 2)
    H = torch.ones(2, 3, 4)
    H[0, 0] = float("nan")  # a fully masked attention row can give NaN at a left pad position
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    acc.add_batch([H], mask, torch.tensor([0, 1]))
    s = acc.to_stats()
    assert torch.isfinite(s.layers[0].C0).all() and torch.isfinite(s.layers[0].XX).all()
    assert s.n_pairs == 3 and s.n_tokens == 5


# --- cache.py on tiny models ----------------------------------------------------------------------

@pytest.fixture
def run_cache(sentiment_csv):
    """``run_cache(model_dir, out, *extra)``: cache.py on the 28 training texts of tiny_sentiment.csv."""

    def run(model_dir, out, *extra):
        argv = ["--model", str(model_dir), "--dataset", str(sentiment_csv), "--output_dir", str(out),
                "--max_samples", "0", "--batch_size", "4", "--shard_size", "8", "--checkpoint_interval", "0", *extra]
        return cache.main(cache.parse_args(argv))

    return run


def per_text_states(model_dir, texts):
    from ntps.models import load_model_and_tokenizer

    model, tok, _ = load_model_and_tokenizer(str(model_dir))
    net = decoder_of(model)
    out = []
    with torch.inference_mode():
        for t in texts:
            ids = tok(t, return_tensors="pt")["input_ids"][:, :512]
            hs = net(input_ids=ids, output_hidden_states=True).hidden_states
            out.append(torch.stack(hs)[:, 0].numpy())
    return out


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_cache_end_to_end_equals_naive_and_feeds_k_sweep(model_dirs, tmp_path, kind, run_cache, sentiment_csv):
    from ntps.data import load_split

    out_dir = run_cache(model_dirs[kind], tmp_path, "--save_features", "--features_dtype", "float32")
    s = load_stats(out_dir)
    data = load_split(str(sentiment_csv), "train", max_samples=None)
    ref = naive_sums(per_text_states(model_dirs[kind], data.texts), data.labels, data.num_classes)
    assert s.n_texts == len(data) and sorted(s.layers) == [0, 1, 2]
    for layer in range(3):
        for k in KEYS:
            assert rel_err(getattr(s.layers[layer], k), ref[k][layer]) < 1e-5, (layer, k)
    meta = json.loads((out_dir / "meta.json").read_text())
    for key in ("model", "dataset", "split", "n_texts", "dtype", "layers", "d", "environment", "label_names"):
        assert key in meta
    assert meta["environment"]["versions"]["transformers"]
    mean = np.load(out_dir / "features_mean.npy", mmap_mode="r")
    assert mean.shape == (3, len(data), 32)
    np.testing.assert_allclose(mean[2, 5], ref_x := per_text_states(model_dirs[kind], [data.texts[5]])[0][2].mean(0),
                               rtol=1e-4, atol=1e-5)
    assert ref_x.shape == (32,)
    assert (np.load(out_dir / "labels.npy") == data.labels).all()
    assert not (out_dir / ".partial").exists()
    res = K_sweep.main(K_sweep.parse_args(["--stats_dir", str(out_dir), "--fractions", "0.25,0.5"]))
    assert len(res["rows"]) == 6


@pytest.mark.parametrize("max_samples", ["16", "17", "15"])  # N a multiple of the shard size, N±1
def test_shards_merge_to_the_single_pass_totals(model_dirs, tmp_path, max_samples, run_cache):
    one = load_stats(run_cache(model_dirs["llama"], tmp_path / "a", "--max_samples", max_samples,
                               "--shard_size", "1000", "--batch_size", "32"))
    many = load_stats(run_cache(model_dirs["llama"], tmp_path / "b", "--max_samples", max_samples))
    assert one.n_texts == many.n_texts == int(max_samples)
    for k in KEYS:
        assert rel_err(getattr(many.layers[2], k), getattr(one.layers[2], k)) < 1e-6


def test_resume_after_interruption_gives_identical_totals(model_dirs, tmp_path, monkeypatch, run_cache):
    full = load_stats(run_cache(model_dirs["llama"], tmp_path / "full"))
    calls = {"n": 0}
    original = StatsAccumulator.add_batch

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:  # the third shard (2 batches per shard)
            raise KeyboardInterrupt
        return original(self, *a, **k)

    monkeypatch.setattr(StatsAccumulator, "add_batch", flaky)
    with pytest.raises(KeyboardInterrupt):
        run_cache(model_dirs["llama"], tmp_path / "cut")
    partial = tmp_path / "cut"
    assert not list(partial.rglob("stats.safetensors"))  # no final artifact from a cut run
    assert list(partial.rglob("rank0of1.json"))
    monkeypatch.setattr(StatsAccumulator, "add_batch", original)
    resumed = load_stats(run_cache(model_dirs["llama"], tmp_path / "cut"))
    for layer in full.layers:
        for k in KEYS:
            assert torch.equal(getattr(resumed.layers[layer], k), getattr(full.layers[layer], k))
    # another configuration refuses to mix with these results unless --overwrite
    with pytest.raises(OutputExistsError, match="overwrite"):
        run_cache(model_dirs["llama"], tmp_path / "cut", "--max_samples", "12")
    assert load_stats(run_cache(model_dirs["llama"], tmp_path / "cut", "--max_samples", "12",
                                "--overwrite")).n_texts == 12


def test_nonfinite_hidden_states_never_leave_an_artifact(model_dirs, tmp_path, monkeypatch, run_cache):
    original = StatsAccumulator.add_batch

    def overflow(self, hidden_states, *a, **k):
        hs = list(hidden_states)
        hs[1] = hs[1].clone()
        hs[1][0, 0, 0] = float("inf")  # like a float16 overflow
        return original(self, hs, *a, **k)

    monkeypatch.setattr(StatsAccumulator, "add_batch", overflow)
    with pytest.raises(NonFiniteHiddenStates, match="layer 1"):
        run_cache(model_dirs["llama"], tmp_path)
    assert not list(tmp_path.rglob("stats.safetensors")) and not list(tmp_path.rglob("meta.json"))


def test_empty_and_one_token_texts(model_dirs):
    from ntps.models import load_model_and_tokenizer

    _, tok, _ = load_model_and_tokenizer(str(model_dirs["llama"]))
    with pytest.raises(ValueError, match="zero tokens"):
        tokenize(tok, ["the cat", ""], 16)
    ids, truncated = tokenize(tok, ["cat", "the cat sat on the mat"], 3)
    assert [len(x) for x in ids] == [1, 3] and truncated == 1


def test_batches_sorted_by_length_cover_every_text_once():
    lengths = np.array([5, 1, 9, 3, 3, 7, 2])
    shards = length_sorted_shards(lengths, batch_size=2, shard_size=4)
    flat = np.concatenate([b for s in shards for b in s])
    assert sorted(flat.tolist()) == list(range(7))
    assert (np.diff(lengths[flat]) >= 0).all() and [len(s) for s in shards] == [2, 2]


@pytest.mark.slow  # two subprocesses, about 40 s of CPU
def test_two_processes_with_gloo_equal_the_single_process_run(model_dirs, tmp_path, repo_root, sentiment_csv,
                                                              free_port):
    # both runs as subprocesses with one thread each, so the forward passes round identically
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    args = [str(repo_root / "cache.py"), "--model", str(model_dirs["llama"]), "--dataset", str(sentiment_csv),
            "--max_samples", "0", "--batch_size", "4", "--shard_size", "8", "--device", "cpu"]
    runs = {"one": [sys.executable], "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node",
                                              "2", "--master_port", str(free_port)]}
    stats = {}
    for name, launcher in runs.items():
        proc = subprocess.run(launcher + args + ["--output_dir", str(tmp_path / name)], env=env,
                              capture_output=True, text=True, timeout=300, cwd=repo_root)
        assert proc.returncode == 0, proc.stderr[-3000:]
        stats[name] = load_stats(next((tmp_path / name).rglob("meta.json")).parent)
    one, two = stats["one"], stats["two"]
    assert two.n_texts == one.n_texts == 28 and torch.equal(two.class_counts, one.class_counts)
    assert two.meta["world_size"] == 2 and one.meta["world_size"] == 1
    for layer in one.layers:
        for k in KEYS:  # equal up to the order of float64 additions: each text counted exactly once
            assert rel_err(getattr(two.layers[layer], k), getattr(one.layers[layer], k)) < 1e-12
