"""Small I/O helpers: atomic writes, slugs, the cache home, environment metadata, the output directory's
writability check and lock, and the up-to-date rule of derived results."""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
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


class OutputNotWritableError(PermissionError):
    """The output directory cannot be created or written (checked before any computation)."""


class OutputLockedError(OutputExistsError):
    """Another run holds the lock of the output directory; the message names it (pid, host, command)."""


LOCK_FILE = ".ntps.lock"


def writable_dir(directory: str | os.PathLike, fix: str = "pass --output_dir with a writable folder") -> Path:
    """Create ``directory`` if needed and check that a file can be written in it, before any computation.
    Raises :class:`OutputNotWritableError` naming the directory, the reason and ``fix``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputNotWritableError(f"cannot write to {directory} ({e.strerror or e}); {fix}") from e
    return directory


@contextlib.contextmanager
def output_lock(directory: str | os.PathLike, script: str, fix: str = "pass --output_dir with a writable folder"):
    """Hold the lock of an output directory (``filelock``; released when the process ends, however it ends)
    while a run writes there. The directory is checked to be writable first (:func:`writable_dir`); the
    holder's pid, host, command and start time are kept in ``.ntps.lock.json`` beside the lock, and a second
    run gets :class:`OutputLockedError` naming them instead of mixing its files with the first run's."""
    from filelock import FileLock, Timeout

    directory = writable_dir(directory, fix)
    lock, sidecar = FileLock(str(directory / LOCK_FILE)), directory / f"{LOCK_FILE}.json"
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            other = read_json(sidecar)
            who = (f"pid {other.get('pid')} on {other.get('host')}, started {other.get('started')}: "
                   f"{' '.join(map(str, other.get('command') or []))}")
        except (OSError, ValueError):
            who = "its record is unreadable"
        raise OutputLockedError(f"another run is writing {directory} ({who}); wait for it to finish, or pass "
                                "another --output_dir") from None
    try:
        write_json(sidecar, {"pid": os.getpid(), "host": socket.gethostname(), "script": script,
                             "command": sys.argv, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        yield directory
    finally:
        with contextlib.suppress(OSError):
            sidecar.unlink()
        lock.release()


def previous_result(json_path: Path, csv_path: Path, settings: dict, overwrite: bool,
                    inputs: dict | None = None) -> dict | None:
    """The saved result when it was computed with ``settings`` from the same ``inputs`` (sha256 of each
    file read, :func:`ntps.provenance.file_digests`): a rerun is a no-op, logged. None when there is none,
    with ``overwrite``, or when an input changed since (the result is stale and is recomputed). Raises
    :class:`OutputExistsError` when results of other settings would be replaced silently."""
    from .provenance import changed_inputs

    if overwrite or not (Path(json_path).exists() and Path(csv_path).exists()):
        return None
    previous = read_json(json_path)
    old = {k: v for k, v in (previous.get("settings") or {}).items() if k != "stats_fingerprint"}  # before inputs
    if old != settings:
        raise OutputExistsError(f"{json_path} exists with other settings ({previous.get('settings')}); pass "
                                "--overwrite to replace it")
    changed = changed_inputs(previous.get("inputs"), inputs or {})
    if changed:
        log.info(f"{json_path} was computed from other inputs ({', '.join(changed)} changed since): recomputing")
        return None
    log.info(f"up to date: {json_path} (pass --overwrite to recompute)")
    return previous


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
