"""Small I/O helpers: atomic writes, slugs, the cache home, environment metadata."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def slugify(name: str) -> str:
    """``org/name`` -> ``org__name`` (also for local paths: the last two components)."""
    name = str(name).rstrip("/")
    if os.sep in name or "/" in name:
        parts = [p for p in Path(name).parts if p not in ("", "/", ".")]
        name = "/".join(parts[-2:])
    return name.replace("/", "__").replace(" ", "_")


def ntps_home() -> Path:
    """Cache folder for offline assets: ``$NTPS_HOME``, default ``~/.cache/ntps``."""
    return Path(os.environ.get("NTPS_HOME", Path.home() / ".cache" / "ntps")).expanduser()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON atomically (numpy scalars and arrays allowed)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=_json_default, allow_nan=True) + "\n")


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> None:
    """Write dict rows as CSV atomically (None -> empty cell; keys outside ``columns`` ignored)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


class OutputExistsError(FileExistsError):
    """Results of other settings lie where a run would write; the message names the flag to pass
    (``--overwrite``, or another ``--output_dir``)."""


def previous_result(json_path: Path, csv_path: Path, settings: dict, overwrite: bool, script: str = "") -> dict | None:
    """The saved result when it was computed with ``settings`` (rerun = no-op, logged), None when there is
    none or ``overwrite``. Raises :class:`OutputExistsError` when results of other settings would be
    replaced silently. (``script`` is unused, kept for callers.)"""
    if overwrite or not (Path(json_path).exists() and Path(csv_path).exists()):
        return None
    previous = read_json(json_path)
    if previous.get("settings") == settings:
        log.info(f"up to date: {json_path} (pass --overwrite to recompute)")
        return previous
    raise OutputExistsError(f"{json_path} exists with other settings or statistics "
                            f"({previous.get('settings')}); pass --overwrite to replace it")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def git_commit(repo_dir: str | os.PathLike | None = None) -> str | None:
    """The commit of the checkout holding this package (``+dirty`` if modified), or None."""
    repo_dir = Path(repo_dir or Path(__file__).resolve().parent.parent)
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo_dir, capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict:
    """Versions, git commit and command line, for the metadata of every artifact."""
    from importlib import metadata

    import ntps

    versions = {"python": platform.python_version(), "ntps": ntps.__version__}
    for pkg in ("torch", "transformers", "numpy", "scipy", "safetensors", "datasets", "peft",
                "scikit-learn"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return {"versions": versions, "git_commit": git_commit(), "command": sys.argv,
            "platform": platform.platform()}


def run_dir(root: str | os.PathLike, model: str, dataset: str, split: str | None = None) -> Path:
    """The run directory ``{root}/{model}/{dataset}/{split}`` with slugged model and dataset names.

    ``root`` is the output root (every script's ``--output_dir``); ``split`` is ``train``/``test`` for a
    statistics artifact or the name of a training run (``linear``, ``lora``); None = the dataset folder.
    """
    path = Path(root) / slugify(model) / slugify(dataset)
    return path / split if split else path
