"""The Hugging Face hub: offline mode, a quick reachability probe, and the one translator of hub errors
(datasets, models, tokenizers) into a message that says what went wrong and the way out."""

from __future__ import annotations

import os
import re
import socket
from urllib.parse import urlparse

_UNREACHABLE = re.compile(r"couldn't reach|connection|offline|name or service|network|timed? ?out|"
                          r"max retries|resolve host|localentrynotfound", re.I)


def offline_mode() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set (the environment or huggingface_hub's constant)."""
    from huggingface_hub import constants

    env = any(os.environ.get(v, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
              for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or env


def reachable(timeout: float = 3.0) -> bool:
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


def _chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and len(chain) < 6:
        chain.append(e)
        e = e.__cause__ or e.__context__
    return chain


def _hub_error_types() -> tuple[tuple, tuple]:
    try:
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers and datasets
        return (), ()
    return (GatedRepoError,), (RepositoryNotFoundError,)


def hub_error(exc: BaseException, name: str, *, what: str, way_out: str, error: type[Exception],
              local_only: bool = False) -> Exception:
    """Translate a failed hub download of ``what`` ("dataset", "model", "tokenizer") ``name`` into
    ``error`` with a message naming the cause — gated, not available offline (``local_only`` or an
    unreachable hub), no such repository, or other — then ``way_out`` and the original error.
    Returns the exception; the caller raises it ``from exc``."""
    gated, not_found = _hub_error_types()
    chain = _chain(exc)
    if any(isinstance(c, gated) for c in chain) or "gated" in str(exc).lower():
        problem = (f"{what} {name!r} is gated on the Hugging Face hub: accept its licence on its hub page "
                   "and log in (`hf auth login` or HF_TOKEN), or pass a local copy")
    elif local_only or any(isinstance(c, (ConnectionError, TimeoutError))
                           or _UNREACHABLE.search(f"{type(c).__name__} {c}") for c in chain):
        problem = (f"{what} {name!r} is not available offline: the Hugging Face hub is unreachable (no "
                   "network, or HF_HUB_OFFLINE=1) and it is not in the local HF cache")
    elif any(isinstance(c, not_found) for c in chain) or "not a valid model identifier" in str(exc):
        problem = (f"{what} {name!r} is neither a local path nor a repository on the Hugging Face hub "
                   "(typo? a private repo needs a token)")
    else:
        problem = f"could not load {what} {name!r}"
    return error(f"{problem}.\n{way_out}\n(original error: {type(exc).__name__}: {str(exc)[:300]})")
