"""Fixtures shared by the three tiers: ``unit/`` (math on toy arrays), ``integration/`` (tiny random
models, artifacts, data loading) and ``scripts/`` (each script's ``main`` on fixtures).

Builders that take parameters are fixtures returning a function (call ``make_artifact(path, d=8)``);
anything that builds and saves a model is session-scoped, built once. The repository root is importable
through ``pythonpath = ["."]`` in pyproject.toml; nothing here edits ``sys.path``. Heavy libraries
(torch, transformers) are imported inside the fixtures, so ``pytest tests/unit`` does not load them.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT / "tests" / "fixtures"

# the tiny models' vocabulary (make_tokenizer); tiny_model's default vocab_size is its length
WORDS = "the a cat dog sat ran on mat big small happy sad is was and".split()
SPECIALS = ["<unk>", "<s>", "</s>"]
VOCAB = {w: i for i, w in enumerate(SPECIALS + WORDS)}
N_VOCAB = len(VOCAB)


# --- paths -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sentiment_csv() -> Path:
    """tests/fixtures/tiny_sentiment.csv: 40 rows, labels "positive"/"negative" (28 train, 12 test)."""
    return FIXTURES / "tiny_sentiment.csv"


@pytest.fixture(scope="session")
def topics_jsonl() -> Path:
    """tests/fixtures/tiny_topics.jsonl: 40 rows, integer labels 0, 1, 2."""
    return FIXTURES / "tiny_topics.jsonl"


@pytest.fixture(scope="session")
def paper_data() -> Path:
    """fig_plot/data: the authors' figure data (fig1.json, fig2_1.json, fig2_2.json, fig3.json)."""
    return REPO_ROOT / "fig_plot" / "data"


# --- small helpers ---------------------------------------------------------------------------------


@pytest.fixture
def free_port() -> int:
    """A TCP port that was free a moment ago (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices: one torch thread avoids oversubscription on a shared machine (and is deterministic)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- toy statistics and artifacts --------------------------------------------------------------------


@pytest.fixture(scope="session")
def random_stats():
    """``random_stats(rng, d=24, N=400, C=3, T=6) -> (XX, XY, C0, C1)``: the sums of SPEC §1 from explicit
    random hidden states of N texts of T tokens (float64 numpy; every class present)."""

    def make(rng, d=24, N=400, C=3, T=6):
        H = rng.standard_normal((N, T, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal(d)
        X = H.mean(1)
        y = rng.integers(0, C, N)
        y[:C] = np.arange(C)
        Y = np.eye(C)[y]
        S = H.cumsum(1)[:, :-1].reshape(-1, d)
        C0 = S.T @ S
        C1 = S.T @ H[:, 1:].reshape(-1, d)
        return X.T @ X, X.T @ Y, C0, C1

    return make


def _save_artifact(path, layers: dict, class_counts, N: int, T: int, meta: dict) -> None:
    """Write {layer: (XX, XY, C0, C1, sum_x)} (numpy) as a statistics artifact (ntps.artifacts)."""
    import torch

    from ntps.artifacts import LayerSums, Stats, save_stats

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    sums = {layer: LayerSums(*map(t, arrays)) for layer, arrays in layers.items()}
    stats = Stats(layers=sums, class_counts=torch.as_tensor(class_counts), n_texts=N, n_tokens=T * N,
                  n_pairs=(T - 1) * N)
    save_stats(path, stats, {"model": "toy", "dataset": "toy", "split": "train", "dtype": "float64",
                             "max_length": None, "max_samples": None, "seed": 0, **meta})


@pytest.fixture(scope="session")
def make_artifact(random_stats):
    """``make_artifact(path, n_layers=3, d=16, C=3, N=300, seed=0, *, random_sum_x=False, rank1=False, **meta)
    -> {layer: (XX, XY, C0, C1)}``: an artifact of independent toy sums per layer (``random_stats``, T = 6).

    sum_x is zero (the baselines refuse it) unless ``random_sum_x`` (N × a standard normal vector, drawn
    after each layer's sums); ``rank1`` puts both class sums on one line (label rank 1, C = 2);
    ``meta`` overrides or adds artifact metadata (model "toy", dtype "float64", ...)."""

    def make(path, n_layers=3, d=16, C=3, N=300, seed=0, *, random_sum_x=False, rank1=False, **meta):
        rng = np.random.default_rng(seed)
        layers, raw = {}, {}
        for layer in range(n_layers):
            XX, XY, C0, C1 = random_stats(rng, d=d, N=N, C=C)
            if rank1:  # both class sums on one line: rank(M Mᵀ) = 1
                XY[:, 1] = 2.0 * XY[:, 0]
            raw[layer] = (XX, XY, C0, C1)
            layers[layer] = (XX, XY, C0, C1, rng.standard_normal(d) * N if random_sum_x else np.zeros(d))
        counts = [N // C] * (C - 1) + [N - (C - 1) * (N // C)]
        _save_artifact(path, layers, counts, N, 6, meta)
        return raw

    return make


@pytest.fixture(scope="session")
def make_vis_artifact(make_artifact):
    """``make_vis_artifact(path, model_dir, d=32, rank1=False) -> path``: an artifact for alignment_vis.py
    on ``model_dir`` (3 hidden states, 2 classes, 120 texts, random sum_x, model = str(model_dir))."""

    def make(path, model_dir, d=32, rank1=False):
        make_artifact(path, n_layers=3, d=d, C=2, N=120, random_sum_x=True, rank1=rank1, model=str(model_dir),
                      dtype="float32", n_states=3)
        return path

    return make


@pytest.fixture(scope="session")
def make_consistent_artifact():
    """``make_consistent_artifact(path, n_layers=2, d=10, C=3, N=120, T=5, seed=0, model="toy", dataset="toy")``:
    consistent sums of SPEC §1 (XY rows sum to sum_x, counts from the labels) from random states with
    some label signal on feature 0."""

    def make(path, n_layers=2, d=10, C=3, N=120, T=5, seed=0, model="toy", dataset="toy"):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, C, N)
        y[:C] = np.arange(C)
        Y = np.eye(C)[y]
        layers = {}
        for layer in range(n_layers):
            H = rng.standard_normal((N, T, d)) @ rng.standard_normal((d, d)) * 0.3 + rng.standard_normal(d)
            H[:, :, 0] += 0.5 * y[:, None]  # some label signal
            X, S = H.mean(1), H.cumsum(1)
            C0 = np.einsum("ntd,nte->de", S[:, :-1], S[:, :-1])
            C1 = np.einsum("ntd,nte->de", S[:, :-1], H[:, 1:])
            layers[layer] = (X.T @ X, X.T @ Y, C0, C1, X.sum(0))
        _save_artifact(path, layers, np.bincount(y, minlength=C), N, T,
                       {"model": model, "dataset": dataset, "seed": seed})

    return make


@pytest.fixture(scope="session")
def tidy_table():
    """``tidy_table(rng, models=("m/A",), n_ds=8, layers=(0, 1, 2), fractions=(0.1, 0.5, 0.9))``: a long table
    as collect.py writes it, score "ntps_raw_desc"; the value at (layer 1, f 0.5) tracks probe_train_acc."""
    import pandas as pd

    def make(rng, models=("m/A",), n_ds=8, layers=(0, 1, 2), fractions=(0.1, 0.5, 0.9)):
        rows = []
        for model in models:
            acc, gain = rng.uniform(0.5, 1.0, n_ds), rng.normal(size=n_ds)
            for j in range(n_ds):
                for layer in layers:
                    for f in fractions:
                        ntps = acc[j] * (layer == 1) * (f == 0.5) + 0.02 * rng.normal()
                        rows.append({"model": model, "dataset": f"ds{j}", "layer": layer, "fraction": f,
                                     "value": ntps, "chance": f * 0.1, "probe_train_acc": acc[j],
                                     "lora_gain": gain[j], "score": "ntps_raw_desc"})
        return pd.DataFrame(rows)

    return make


# --- features in the layout of cache.py --save_features ------------------------------------------------


@pytest.fixture(scope="session")
def toy_features():
    """``toy_features(N=240, d=12, C=3, seed=0, offset=0.0, scales=None, noise_seed=None) -> (X, y)``:
    features with class signal (class means from ``seed``; noise from ``noise_seed``, default ``seed``),
    a large mean offset and uneven feature scales if asked."""

    def make(N=240, d=12, C=3, seed=0, offset=0.0, scales=None, noise_seed=None):
        means = np.random.default_rng(seed).normal(size=(C, d))
        rng = np.random.default_rng(seed if noise_seed is None else noise_seed + 1000)
        y = np.arange(N) % C
        X = means[y] + rng.normal(size=(N, d)) * 1.5 + offset
        if scales is not None:
            X = X * scales
        return X, y

    return make


@pytest.fixture(scope="session")
def write_features():
    """``write_features(path, X_layers, y, C, *, dtype=np.float16, layers=None, stats=False)``: a feature
    directory as ``cache.py --save_features`` writes it (features_{mean,last}.npy (layers, N, d), labels.npy,
    meta.json; with ``stats`` also stats.safetensors holding the sums of exactly these rounded features)."""
    import json

    def write(path, X_layers, y, C, *, dtype=np.float16, layers=None, stats=False):
        path.mkdir(parents=True, exist_ok=True)
        X_layers = np.asarray(X_layers, dtype=dtype)
        L, N, d = X_layers.shape
        layers = list(range(L)) if layers is None else layers
        np.save(path / "features_mean.npy", X_layers)
        np.save(path / "features_last.npy", X_layers[:, :, ::-1].copy())
        np.save(path / "labels.npy", np.asarray(y, dtype=np.int64))
        meta = {"model": "toy", "dataset": "toy", "split": path.name, "layers": layers, "num_classes": C,
                "label_names": [str(k) for k in range(C)], "n_texts": N, "d": d}
        if not stats:
            (path / "meta.json").write_text(json.dumps(meta))
            return
        Y = np.eye(C)[y]
        per_layer = {}
        for i, layer in enumerate(layers):
            X = X_layers[i].astype(np.float64)
            per_layer[layer] = (X.T @ X, X.T @ Y, np.zeros((d, d)), np.zeros((d, d)), X.sum(0))
        _save_artifact(path, per_layer, np.bincount(y, minlength=C), N, 5,
                       {**meta, "dtype": "float32", "max_length": 64, "max_samples": None, "seed": 42})

    return write


# --- tiny tokenizers and models (no downloads) ----------------------------------------------------------


@pytest.fixture(scope="session")
def make_tokenizer():
    """``make_tokenizer(eos=True, unk=True, prepend_bos=False)``: a WordLevel tokenizer over VOCAB (bos
    ``<s>``; eos ``</s>`` and unk ``<unk>`` if asked; no pad token); ``prepend_bos`` adds BOS like Llama's."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    def make(eos=True, unk=True, prepend_bos=False):
        tok = Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        kwargs = {"bos_token": "<s>"}
        if eos:
            kwargs["eos_token"] = "</s>"
        if unk:
            kwargs["unk_token"] = "<unk>"
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)
        if prepend_bos:
            fast._tokenizer.post_processor = processors.TemplateProcessing(
                single="<s> $A", special_tokens=[("<s>", fast.convert_tokens_to_ids("<s>"))])
        return fast

    return make


@pytest.fixture(scope="session")
def make_bpe_tokenizer():
    """``make_bpe_tokenizer()``: a byte-level BPE with ``<|endoftext|>`` as eos, like Qwen's (transformers 5
    re-creates any tokenizer saved beside a ``qwen2`` config as ``Qwen2Tokenizer``, which must reproduce it)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    def make():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator([" ".join(WORDS), "the cat sat on the mat", "a dog ran"] * 3, trainer)
        return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")

    return make


def _tiny_config(kind: str, vocab_size: int):
    from transformers import GPT2Config, LlamaConfig, Phi3Config, Qwen2Config

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64)
    if kind == "llama":
        return LlamaConfig(num_key_value_heads=2, bos_token_id=1, eos_token_id=2, **common)
    if kind == "qwen2":
        return Qwen2Config(num_key_value_heads=2, bos_token_id=1, eos_token_id=2, **common)
    if kind == "phi3":
        return Phi3Config(num_key_value_heads=4, pad_token_id=0, bos_token_id=1, eos_token_id=2, **common)
    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    raise ValueError(kind)


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(kind, seed=0, vocab_size=N_VOCAB)``: a random causal LM in eval mode, 2 layers, width
    32; kind is "llama", "qwen2", "phi3" or "gpt2"."""
    import torch
    from transformers import GPT2LMHeadModel, LlamaForCausalLM, Phi3ForCausalLM, Qwen2ForCausalLM

    classes = {"llama": LlamaForCausalLM, "qwen2": Qwen2ForCausalLM, "phi3": Phi3ForCausalLM,
               "gpt2": GPT2LMHeadModel}

    def make(kind, seed=0, vocab_size=N_VOCAB):
        torch.manual_seed(seed)
        return classes[kind](_tiny_config(kind, vocab_size)).eval()

    return make


def _save_model(path: Path, model, tokenizer) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory, make_tokenizer, make_bpe_tokenizer, tiny_model) -> dict[str, Path]:
    """Saved tiny models: "llama" with the WordLevel tokenizer (eos/unk, no pad token), "qwen2" with the
    byte-level BPE (``<|endoftext|>``)."""
    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    for kind, tok in (("llama", make_tokenizer()), ("qwen2", make_bpe_tokenizer())):
        out[kind] = _save_model(root / kind, tiny_model(kind, vocab_size=len(tok)), tok)
    return out


@pytest.fixture(scope="session")
def bos_model_dir(tmp_path_factory, make_tokenizer, tiny_model) -> Path:
    """The tiny Llama saved with the WordLevel tokenizer that prepends BOS (alignment_vis.py's words)."""
    tok = make_tokenizer(prepend_bos=True)
    return _save_model(tmp_path_factory.mktemp("tiny_bos") / "llama", tiny_model("llama", vocab_size=len(tok)), tok)


@pytest.fixture(scope="session")
def vis_words() -> str:
    """alignment_vis.py ``--words`` for the tiny models: three groups, every word in VOCAB."""
    return "Joy=happy,big;Sad=sad,small;Be=is,was"


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory, sentiment_csv, topics_jsonl) -> Path:
    """A saved 2-layer Llama (d=32) whose lower-casing WordLevel vocabulary covers the fixtures' words."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words: set[str] = set()
    for f in (sentiment_csv, topics_jsonl):
        words |= set(re.findall(r"\w+|[^\w\s]", f.read_text().lower()))
    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2)
    return _save_model(tmp_path_factory.mktemp("tiny_lm") / "llama", LlamaForCausalLM(config), tokenizer)
