"""Content digests: what every output was computed from, and the checks that rest on them.

Freshness is decided by content, never by names. cache.py records the sha256 of the texts and labels it
summed (after dedupe, split and subsampling: ``LabelledSplit.info["sha256"]``), of the data files, of the
model's weight files (local directory, ``.gguf``, offline model) or its hub commit, of the tokenizer and
of a LoRA adapter (:func:`model_digests`). Every downstream output records the sha256 of each file it
read (:func:`file_digests`, ``{role: {"path", "sha256"}}``) and counts as up to date only when they are
equal (:func:`changed_inputs`).

Weight files are hashed once: the digests of those of 16 MiB or more are kept in ``$NTPS_HOME/digests.json``
keyed on the resolved path, size and modification time. Other files are hashed once per process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

from .io import ntps_home, write_json

log = logging.getLogger(__name__)

DIGEST_CACHE = "digests.json"
_CHUNK = 1 << 22
_CACHE_MIN_BYTES = 1 << 24  # smaller files are hashed again rather than recorded
_memo: dict[tuple, str] = {}

#: meta.json fields that must agree between a train and a test split fed to one probe.
PAIR_KEYS = ("model", "revision", "model_digests", "lora_ckpt", "dtype", "layers", "d", "max_length",
             "label_names", "dataset")


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, computed once per process for a given (path, size, mtime, inode)."""
    path = Path(path)
    key = _stat_key(path)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(_CHUNK):
                h.update(block)
        _memo[key] = h.hexdigest()
    return _memo[key]


def _cached_sha256(path: Path, cache: dict) -> str:
    real, size, mtime, _ = _stat_key(path)
    if size < _CACHE_MIN_BYTES:
        return sha256_file(path)
    hit = cache.get(real)
    if hit and hit.get("size") == size and hit.get("mtime_ns") == mtime:
        return hit["sha256"]
    digest = sha256_file(path)
    cache[real] = {"size": size, "mtime_ns": mtime, "sha256": digest}
    return digest


def sha256_tree(path: str | os.PathLike) -> str:
    """sha256 of a weight file, or of a directory's top-level files (over the sorted ``name NUL sha256``
    lines; hidden files skipped). Digests are cached in ``$NTPS_HOME/digests.json`` keyed on path, size
    and mtime, so a multi-GB model is hashed once."""
    path = Path(path)
    cache_path = ntps_home() / DIGEST_CACHE
    try:
        cache = json.loads(cache_path.read_text())
    except (OSError, ValueError):
        cache = {}
    before = dict(cache)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")):
            h.update(f"{f.name}\0{_cached_sha256(f, cache)}\n".encode())
        digest = h.hexdigest()
    else:
        digest = _cached_sha256(path, cache)
    if cache != before:
        try:
            write_json(cache_path, {k: v for k, v in cache.items() if Path(k).exists()})
        except OSError as e:  # a read-only cache home: hash again next time
            log.debug(f"digest cache not written: {e}")
    return digest


def _local(name) -> Path | None:
    p = Path(str(name)).expanduser() if name else None
    return p if p is not None and p.exists() else None


def model_digests(minfo: dict, lora_ckpt: str | None = None) -> dict:
    """What identifies the weights a model was loaded from: ``weights_sha256`` (local directory, .gguf or
    offline model: :func:`sha256_tree`), ``commit`` (hub models), ``tokenizer_sha256`` (a local tokenizer
    other than the model) and ``lora_sha256`` (the adapter directory). ``minfo``: the info dict of
    :func:`ntps.models.load_model_and_tokenizer`."""
    out = {"weights_sha256": None, "commit": minfo.get("commit"), "tokenizer_sha256": None, "lora_sha256": None}
    if minfo.get("source") != "hub" and _local(minfo.get("path")):
        out["weights_sha256"] = sha256_tree(minfo["path"])
    tok = _local(minfo.get("tokenizer"))
    if tok is not None and minfo.get("tokenizer") != minfo.get("model"):
        out["tokenizer_sha256"] = sha256_tree(tok)
    if lora_ckpt and _local(lora_ckpt):
        out["lora_sha256"] = sha256_tree(lora_ckpt)
    return out


def file_digests(files: dict[str, str | os.PathLike | None]) -> dict[str, dict]:
    """``{role: {"path", "sha256"}}`` of the files an output read (absolute paths; roles whose path is None
    are left out)."""
    return {role: {"path": os.path.abspath(p), "sha256": sha256_file(p)} for role, p in files.items() if p is not None}


def changed_inputs(old: dict | None, new: dict) -> list[str]:
    """Roles whose digest differs between two :func:`file_digests` records (all of them if ``old`` has none)."""
    old = old or {}
    roles = sorted(set(old) | set(new))
    return [r for r in roles if (old.get(r) or {}).get("sha256") != (new.get(r) or {}).get("sha256")]


def artifact_files(directory: str | os.PathLike, *names: str) -> dict[str, Path]:
    """``{name: directory/name}`` for the artifact files an output reads (those that exist)."""
    directory = Path(directory)
    return {n: directory / n for n in names if (directory / n).is_file()}


def cover_warnings(n: int | None, d: int | None, logger: logging.Logger = log) -> list[str]:
    """``[warning]`` (also logged) when N < 2(d + 1), Cover's bound: below it N points in general position in
    d dimensions are linearly separable whatever their labels, so the scores and in-sample probes say
    little; ``[]`` otherwise. Every JSON output records the list under ``warnings``."""
    if n is None or d is None or int(n) >= 2 * (int(d) + 1):
        return []
    text = (f"N = {n} texts < 2(d + 1) = {2 * (int(d) + 1)} (Cover's bound, d = {d}): almost any labelling of "
            "so few points is linearly separable, so NTPS at small fractions, in-sample probe accuracy, the "
            "least-squares MSE and the H-score say little about the task. Fix: more texts (cache.py --max_samples "
            f"{2 * (int(d) + 1)} or more, --max_samples 0 for the whole split)")
    logger.warning(text)
    return [text]


def check_same_source(a: dict, b: dict, what_a: str, what_b: str, keys=PAIR_KEYS) -> None:
    """``ValueError`` naming every field of ``keys`` on which two meta.json records disagree (e.g. the
    train and test features of one probe: other model, layers, max_length or label mapping); a field one
    record does not hold (None) is not compared."""
    bad = [k for k in keys if a.get(k) is not None and b.get(k) is not None and a.get(k) != b.get(k)]
    if bad:
        diff = "; ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in bad)
        raise ValueError(f"{what_a} and {what_b} were computed differently ({diff}); recompute both with the same "
                         "cache.py settings")
