"""Argument helpers shared by the top-level scripts."""

from __future__ import annotations

import argparse

import torch

DEFAULT_OUTPUT_DIR = "outputs"
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_DATASET = "vader-movies"


def parse_int_list(text: str | None, n_available: int | None = None) -> list[int] | None:
    """'all' -> None; '0,5,-1' and '2-6' forms; negative indices count from the end."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return None
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part[1:]:
            lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
            out.extend(range(int(lo), int(hi) + 1))
        else:
            out.append(int(part))
    if n_available is not None:
        out = [i + n_available if i < 0 else i for i in out]
        bad = [i for i in out if not 0 <= i < n_available]
        if bad:
            raise ValueError(f"layers {bad} out of range: this model has layers 0..{n_available - 1} "
                             "(0 = embedding output)")
    return sorted(set(out))


def parse_float_list(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; a clear error for an unavailable device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is visible; use --device cpu")
    return dev


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


def run(main, parse_args, script: str) -> None:
    """Entry point of a script: user errors (unknown dataset, model not available offline, bad
    labels, corrupt artifact ...) are printed as one clear message with exit status 2, not a
    traceback. Programming errors still raise."""
    from .artifacts import ArtifactError
    from .fetch import FetchError

    user_errors: tuple[type[BaseException], ...] = (KeyError, ValueError, ArtifactError, FetchError)
    try:
        from .data import DatasetUnavailableError
        from .models import ModelNotAvailableError

        user_errors += (DatasetUnavailableError, ModelNotAvailableError)
    except ImportError:
        pass
    try:
        main(parse_args())
    except user_errors as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        raise SystemExit(f"{script}: error: {msg}") from None
