"""The statistics artifact of SPEC §1: raw per-layer sums in safetensors, metadata in JSON.

Layout of one artifact directory (``{output_dir}/{model_slug}/{dataset_slug}/{split}/``)::

    stats.safetensors   float64 sums per layer, int64 counts; layer 0 = embedding output
        layer{L}.XX     (d, d)   sum_n x_n x_nᵀ           (x = mean-pooled hidden state)
        layer{L}.XY     (d, C)   sum_n x_n y_nᵀ           (y = one-hot label)
        layer{L}.C0     (d, d)   sum_n sum_t s_t s_tᵀ     (s_t = prefix sum, t = 1..L_n-1)
        layer{L}.C1     (d, d)   sum_n sum_t s_t h_{t+1}ᵀ
        layer{L}.sum_x  (d,)     sum_n x_n
        class_counts    (C,)     texts per class
        n_texts, n_tokens, n_pairs   (1,) int64: texts, real tokens, (s_t, h_{t+1}) pairs
    meta.json           self-describing metadata (model, dataset, split, N, dtype, layers,
                        versions, git commit, command); ``format`` = FORMAT_VERSION

The safetensors header repeats ``format``, ``fingerprint`` (a hash of the configuration part of
meta.json, CONFIG_KEYS, content digests included) and every field of :data:`HEADER_KEYS` (model,
revision, dataset, split, N, d, layers, dtype, max_length, the digests ...): a stats file paired with
another run's meta.json, or a meta.json edited by hand, is refused with the fields that disagree
(:func:`check_header`). Sums are never divided: shards, ranks and resumed runs merge by addition.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .io import atomic_path, read_json, write_json

FORMAT_VERSION = "ntps-stats-2"  # 2: content digests in the fingerprint, the configuration in the header
STATS_FILE = "stats.safetensors"
META_FILE = "meta.json"
LAYER_KEYS = ("XX", "XY", "C0", "C1", "sum_x")
#: meta.json keys that define *what* was computed (a resumed or merged run must agree on them): the options
#: that change a number and the sha256 of the inputs (texts and labels used, data files, weights).
CONFIG_KEYS = ("model", "revision", "lora_ckpt", "dataset", "dataset_revision", "split", "layers", "d",
               "num_classes", "max_length", "max_samples", "seed", "dtype", "text_column", "label_column",
               "label_names", "data_sha256", "data_files_sha256", "model_digests")
#: meta.json keys repeated in the safetensors header (checked against each other when the artifact is read).
HEADER_KEYS = (*CONFIG_KEYS, "n_texts", "class_counts")


class ArtifactError(ValueError):
    """A statistics artifact is missing, truncated or inconsistent."""


@dataclass
class LayerSums:
    """Raw sums of SPEC §1 for one layer (float64 tensors)."""

    XX: torch.Tensor
    XY: torch.Tensor
    C0: torch.Tensor
    C1: torch.Tensor
    sum_x: torch.Tensor

    @classmethod
    def zeros(cls, d: int, num_classes: int, device="cpu") -> LayerSums:
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=device)  # noqa: E731
        return cls(z(d, d), z(d, num_classes), z(d, d), z(d, d), z(d))

    def add_(self, other: LayerSums) -> LayerSums:
        for k in LAYER_KEYS:
            getattr(self, k).add_(getattr(other, k).to(getattr(self, k)))
        return self


@dataclass
class Stats:
    """All sums of an artifact: per-layer sums plus the global counts."""

    layers: dict[int, LayerSums]
    class_counts: torch.Tensor  # (C,) int64
    n_texts: int = 0
    n_tokens: int = 0
    n_pairs: int = 0
    meta: dict = field(default_factory=dict)

    @property
    def d(self) -> int:
        return next(iter(self.layers.values())).XX.shape[0]

    @property
    def num_classes(self) -> int:
        return int(self.class_counts.numel())

    def add_(self, other: Stats) -> Stats:
        if sorted(self.layers) != sorted(other.layers):
            raise ArtifactError("cannot add statistics over different layers")
        for layer, sums in self.layers.items():
            sums.add_(other.layers[layer])
        self.class_counts += other.class_counts.to(self.class_counts)
        self.n_texts += other.n_texts
        self.n_tokens += other.n_tokens
        self.n_pairs += other.n_pairs
        return self

    def to_tensors(self) -> dict[str, torch.Tensor]:
        out = {}
        for layer, sums in sorted(self.layers.items()):
            for k in LAYER_KEYS:
                out[f"layer{layer}.{k}"] = getattr(sums, k).detach().to("cpu", torch.float64).contiguous()
        out["class_counts"] = self.class_counts.to("cpu", torch.int64).contiguous()
        for k in ("n_texts", "n_tokens", "n_pairs"):
            out[k] = torch.tensor([getattr(self, k)], dtype=torch.int64)
        return out


def fingerprint(meta: dict) -> str:
    """Short hash of the configuration keys of ``meta`` (CONFIG_KEYS)."""
    cfg = {k: meta.get(k) for k in CONFIG_KEYS}
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _header(stats: Stats, meta: dict) -> dict[str, str]:
    return {"format": FORMAT_VERSION, "fingerprint": fingerprint(meta),
            "layers": json.dumps(sorted(stats.layers)), "d": str(stats.d),
            "num_classes": str(stats.num_classes), "n_texts": str(stats.n_texts),
            "config": json.dumps({k: meta.get(k) for k in HEADER_KEYS}, sort_keys=True, default=str)}


def check_header(header: dict, meta: dict, path: Path, meta_path: Path) -> None:
    """:class:`ArtifactError` unless the safetensors ``header`` and ``meta`` (meta.json) describe the same run:
    same format and fingerprint, every :data:`HEADER_KEYS` field equal, and a fingerprint that matches the
    configuration meta.json states (a hand-edited meta.json is refused, naming the fields)."""
    fix = "the directory mixes two runs or meta.json was edited: rerun cache.py with --overwrite"
    if header.get("format") != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format {header.get('format')!r}, expected {FORMAT_VERSION!r}: {fix}")
    recorded = json.loads(header.get("config") or "{}")
    stated = json.loads(json.dumps({k: meta.get(k) for k in recorded}, default=str))
    bad = [k for k in recorded if recorded[k] != stated[k]]
    if bad:
        diff = "; ".join(f"{k}: {stated[k]!r} in {META_FILE}, {recorded[k]!r} in {STATS_FILE}" for k in bad)
        raise ArtifactError(f"{path} does not belong to {meta_path} ({diff}); {fix}")
    if header.get("fingerprint") != meta.get("fingerprint") or fingerprint(meta) != meta.get("fingerprint"):
        raise ArtifactError(f"{path} does not belong to {meta_path} (fingerprint {header.get('fingerprint')} in "
                            f"{STATS_FILE}, {meta.get('fingerprint')} in {META_FILE}, {fingerprint(meta)} computed "
                            f"from {META_FILE}); {fix}")


def check_meta(directory: str | Path) -> dict:
    """meta.json of an artifact, checked against the header of the ``stats.safetensors`` beside it (only the
    header is read); :class:`ArtifactError` as :func:`check_header`."""
    directory = Path(directory)
    meta, path, f = _open(directory)
    with f:
        check_header(f.metadata() or {}, meta, path, directory / META_FILE)
    return meta


def _open(directory: Path, device="cpu"):
    """(meta.json, path of stats.safetensors, its open safetensors handle)."""
    from safetensors import SafetensorError, safe_open

    meta = read_meta(directory)
    path = directory / STATS_FILE
    if not path.is_file():
        raise ArtifactError(f"{path} missing beside {META_FILE}; rerun cache.py with --overwrite")
    try:
        return meta, path, safe_open(str(path), framework="pt", device=str(device))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise ArtifactError(f"{path} is truncated or corrupt ({e}); rerun cache.py with --overwrite") from e


def save_stats_file(path: str | Path, stats: Stats, meta: dict) -> None:
    """Write the tensors of ``stats`` to one safetensors file, atomically."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(stats.to_tensors(), str(tmp), metadata=_header(stats, meta))


def load_stats_file(path: str | Path, layers: list[int]) -> Stats:
    """Read a stats file written by :func:`save_stats_file` (e.g. a cache.py rank checkpoint), no meta."""
    from safetensors.torch import load_file

    t = load_file(str(path))
    return Stats(layers={layer: LayerSums(*(t[f"layer{layer}.{k}"] for k in LAYER_KEYS)) for layer in layers},
                 class_counts=t["class_counts"], n_texts=int(t["n_texts"][0]), n_tokens=int(t["n_tokens"][0]),
                 n_pairs=int(t["n_pairs"][0]))


def save_stats(directory: str | Path, stats: Stats, meta: dict) -> Path:
    """Write ``stats.safetensors`` then ``meta.json`` (each atomically) into ``directory``."""
    directory = Path(directory)
    meta = {**meta, "format": FORMAT_VERSION, "layers": sorted(stats.layers), "d": stats.d,
            "num_classes": stats.num_classes, "n_texts": stats.n_texts, "n_tokens": stats.n_tokens,
            "n_pairs": stats.n_pairs, "class_counts": stats.class_counts.tolist()}
    meta["fingerprint"] = fingerprint(meta)
    save_stats_file(directory / STATS_FILE, stats, meta)
    write_json(directory / META_FILE, meta)
    return directory


def read_meta(directory: str | Path) -> dict:
    """meta.json of an artifact, with a clear error when it is absent or not ours."""
    directory = Path(directory)
    meta_path = directory / META_FILE
    if not meta_path.is_file():
        hint = ""
        if not directory.exists():
            hint = " (the directory does not exist)"
        raise ArtifactError(f"no statistics artifact at {directory}: {META_FILE} missing{hint}. "
                            "Run cache.py first, or pass the directory it printed.")
    try:
        meta = read_json(meta_path)
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{meta_path} is not valid JSON ({e}); rerun cache.py with --overwrite") from e
    if meta.get("format") != FORMAT_VERSION:
        old = " (written by an earlier cache.py that recorded no content digests)" \
            if meta.get("format") == "ntps-stats-1" else ""
        raise ArtifactError(f"{meta_path} has format {meta.get('format')!r}, expected {FORMAT_VERSION!r}{old}; "
                            "rerun cache.py with --overwrite")
    return meta


def load_stats(directory: str | Path, layers: list[int] | None = None, device="cpu") -> Stats:
    """Load an artifact (optionally a subset of layers), checking it against meta.json."""
    directory = Path(directory)
    meta, path, f = _open(directory, device)
    with f:
        header = f.metadata() or {}
        check_header(header, meta, path, directory / META_FILE)
        available = json.loads(header.get("layers", "[]"))
        wanted = available if layers is None else list(layers)
        missing = [layer for layer in wanted if layer not in available]
        if missing:
            raise ArtifactError(f"layers {missing} not in {path}: it holds layers {available}"
                                if available else f"{path} holds no layers")
        d, C = int(header["d"]), int(header["num_classes"])
        keys = set(f.keys())
        out = {}
        for layer in wanted:
            tensors = {}
            for k in LAYER_KEYS:
                name = f"layer{layer}.{k}"
                if name not in keys:
                    raise ArtifactError(f"{path} lacks {name}: truncated artifact, rerun cache.py")
                tensors[k] = f.get_tensor(name)
            expect = {"XX": (d, d), "XY": (d, C), "C0": (d, d), "C1": (d, d), "sum_x": (d,)}
            for k, shape in expect.items():
                if tuple(tensors[k].shape) != shape:
                    raise ArtifactError(f"{path}: layer{layer}.{k} has shape {tuple(tensors[k].shape)}, "
                                        f"expected {shape}")
            out[layer] = LayerSums(**tensors)
        counts = f.get_tensor("class_counts")
        scalars = {k: int(f.get_tensor(k)[0]) for k in ("n_texts", "n_tokens", "n_pairs")}
    if scalars["n_texts"] != meta.get("n_texts") or int(counts.sum()) != scalars["n_texts"]:
        raise ArtifactError(f"{path}: text counts disagree (stats {scalars['n_texts']}, class counts "
                            f"{int(counts.sum())}, meta {meta.get('n_texts')}); rerun cache.py --overwrite")
    return Stats(layers=out, class_counts=counts, meta=meta, **scalars)
