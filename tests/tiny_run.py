"""Helpers of the provenance and bad-input tests: a tiny random Llama saved with a word-level tokenizer,
small labelled CSV files, and the scripts run in-process (no network, a second or two per run)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

POSITIVE = "good great happy lovely enjoyable amazing delighted fine nice warm".split()
NEGATIVE = "bad awful sad horrible disappointing unhappy lonely dull cold boring".split()
FILLER = "the a film book was is were am are it this that very so and".split()
WORDS = POSITIVE + NEGATIVE + FILLER


def make_model_dir(path: Path, d: int = 16, scale: float | None = None, seed: int = 0) -> Path:
    """A 2-block Llama of width ``d`` and its tokenizer (no BOS added: a one-word text is one token) saved in
    ``path``; ``scale`` multiplies the embedding table (hidden states beyond float16's range)."""
    vocab = {w: i for i, w in enumerate(["<unk>", "<s>", "</s>", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64, bos_token_id=1,
                      eos_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    if scale is not None:
        with torch.no_grad():
            model.get_input_embeddings().weight.mul_(scale)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def rows(n: int = 40, seed: int = 0, words: int = 6) -> list[dict]:
    """``n`` texts of ``words`` words, alternately positive and negative (``label``), and a second label column
    (``label2``: the text's length class)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        pool = POSITIVE if i % 2 == 0 else NEGATIVE
        k = words + i % 3
        idx = torch.randint(0, len(FILLER), (k,), generator=g).tolist()
        text = " ".join([FILLER[j] for j in idx[:-2]] + [pool[idx[-1] % len(pool)], pool[idx[-2] % len(pool)]])
        out.append({"text": text, "label": "pos" if i % 2 == 0 else "neg", "label2": "long" if k > words else "short"})
    return out


def write_csv(path: Path, data: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(data[0]) if data else ["text", "label"])
        w.writeheader()
        w.writerows(data)
    return path


def run(module, *argv):
    """``module.main(module.parse_args(argv))`` with the arguments as strings."""
    return module.main(module.parse_args([str(a) for a in argv]))


def cache_argv(model: Path, data: Path, out: Path, *extra) -> list:
    return ["--model", model, "--dataset", data, "--output_dir", out, "--max_samples", "0", "--batch_size", "8",
            "--shard_size", "16", "--checkpoint_interval", "0", "--device", "cpu", *extra]
