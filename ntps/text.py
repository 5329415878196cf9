"""Tokenising and batching texts for forward passes (shared by cache.py and the training scripts)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def decoder_of(model: nn.Module) -> nn.Module:
    """The decoder without its LM head (``model.model`` for Llama/Qwen, ``transformer`` for GPT-2/OpenELM):
    hidden states are all we need, and the LM head would cost a d × vocab GEMM per token."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    return base if isinstance(base, nn.Module) else model


def tokenize(tokenizer, texts: list[str], max_length: int) -> tuple[list[list[int]], int]:
    """Token ids per text (special tokens as the tokenizer adds them, e.g. Gemma's BOS), truncated to
    ``max_length``; returns (ids, number of texts truncated). Texts with zero tokens are an error."""
    enc = tokenizer(list(texts), add_special_tokens=True, truncation=False)["input_ids"]
    truncated = sum(len(x) > max_length for x in enc)
    ids = [x[:max_length] for x in enc]
    empty = [i for i, x in enumerate(ids) if len(x) == 0]
    if empty:
        raise ValueError(f"{len(empty)} texts tokenize to zero tokens (first indices {empty[:5]}): "
                         "drop empty texts from the dataset")
    return ids, truncated


def pad_batch(ids: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (B, T) input ids and attention mask."""
    T = max(len(x) for x in ids)
    out = torch.full((len(ids), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), T), dtype=torch.long)
    for i, x in enumerate(ids):
        out[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        mask[i, : len(x)] = 1
    return out.to(device), mask.to(device)


DEFAULT_CUDA_BATCH_TOKENS = 16384  # H200, bench/results/gpu_cache_bench_h200.jsonl: within 4 % of the best batching


def batch_token_budget(max_batch_tokens: int | None, device) -> int:
    """Padded tokens per batch (0 = fixed batches of texts): ``None`` → off on the CPU (its batches are
    small enough), :data:`DEFAULT_CUDA_BATCH_TOKENS` on CUDA."""
    if max_batch_tokens is None:
        return DEFAULT_CUDA_BATCH_TOKENS if torch.device(device).type == "cuda" else 0
    if max_batch_tokens < 0:
        raise ValueError(f"max_batch_tokens must be >= 0 (0 = off), got {max_batch_tokens}")
    return max_batch_tokens


def _token_budget_bounds(sorted_lengths: np.ndarray, max_batch_tokens: int) -> list[int]:
    """Batch boundaries over ascending lengths: texts × longest length <= max_batch_tokens (a longer
    text forms a batch alone)."""
    bounds, start = [0], 0
    for j, length in enumerate(sorted_lengths.tolist()):
        if j > start and (j - start + 1) * length > max_batch_tokens:
            start = j
            bounds.append(j)
    return bounds + [len(sorted_lengths)] if len(sorted_lengths) else [0]


def length_sorted_shards(lengths: np.ndarray, batch_size: int, shard_size: int,
                         max_batch_tokens: int = 0) -> list[list[np.ndarray]]:
    """Shards of batches of text indices, texts sorted by (length, index) so that padding is small.

    Batches hold ``batch_size`` texts, or with ``max_batch_tokens`` > 0 as many texts as fit in that many
    padded tokens (batch size × longest length, padding included). A shard holds whole batches: a multiple
    of ``batch_size`` texts up to ``shard_size``, or with a token budget batches up to ``shard_size`` texts
    (at least one batch).
    """
    order = np.lexsort((np.arange(len(lengths)), lengths))
    if max_batch_tokens:
        bounds = _token_budget_bounds(np.asarray(lengths)[order], max_batch_tokens)
        shards, count = [], 0
        for a, b in zip(bounds[:-1], bounds[1:]):
            if not shards or count + b - a > shard_size:
                shards.append([])
                count = 0
            shards[-1].append(order[a:b])
            count += b - a
        return shards
    per_shard = max(1, shard_size // batch_size) * batch_size
    shards = []
    for s in range(0, len(order), per_shard):
        chunk = order[s: s + per_shard]
        shards.append([chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)])
    return shards
