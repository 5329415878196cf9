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


def length_sorted_shards(lengths: np.ndarray, batch_size: int, shard_size: int) -> list[list[np.ndarray]]:
    """Shards of batches of text indices, texts sorted by (length, index) so that padding is small."""
    order = np.lexsort((np.arange(len(lengths)), lengths))
    per_shard = max(1, shard_size // batch_size) * batch_size
    shards = []
    for s in range(0, len(order), per_shard):
        chunk = order[s: s + per_shard]
        shards.append([chunk[b: b + batch_size] for b in range(0, len(chunk), batch_size)])
    return shards
