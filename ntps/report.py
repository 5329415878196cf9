"""Plain-text rendering shared by the scripts and the report: one number formatter, one markdown table.

(pandas' ``DataFrame.to_markdown`` needs the ``tabulate`` package, which is not a dependency.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

#: Shown for a missing or undefined number (None, NaN, ±inf).
MISSING = "–"


def fmt(value, spec: str = ".3f") -> str:
    """``format(value, spec)`` for a number; :data:`MISSING` for None, NaN and ±inf.

    ``spec="d"`` prints the nearest integer (for layers stored as floats); strings are returned
    unchanged and other objects as ``str``.
    """
    if isinstance(value, str):
        return value
    if value is None:
        return MISSING
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return MISSING
    return str(int(round(x))) if spec == "d" else format(x, spec)


def markdown_table(rows: list[list], header: list[str]) -> str:
    """A GitHub markdown table; cells are written with ``str`` (format numbers with :func:`fmt` first).

    ValueError when a row has not as many cells as the header has columns (a header must match its rows).
    """
    bad = [i for i, r in enumerate(rows) if len(r) != len(header)]
    if bad:
        raise ValueError(f"markdown_table: row {bad[0]} has {len(rows[bad[0]])} cells for {len(header)} columns "
                         f"{header}")
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def files_differ(expected_dir: str | os.PathLike, actual_dir: str | os.PathLike, names) -> list[str]:
    """The ``names`` whose bytes differ between two directories (a file missing on either side differs):
    e.g. a committed report directory and its regeneration."""
    out = []
    for name in names:
        a, b = Path(expected_dir) / name, Path(actual_dir) / name
        if a.is_file() != b.is_file() or (a.is_file() and a.read_bytes() != b.read_bytes()):
            out.append(name)
    return out


#: Significant digits of the floats in the analysis JSON files (robust to BLAS round-off across machines).
JSON_DIGITS = 12


def json_ready(obj, digits: int = JSON_DIGITS):
    """``obj`` with numpy scalars and arrays as Python numbers and lists, NaN/inf as None and floats rounded to
    ``digits`` significant digits: the same analysis gives the same JSON text."""
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): json_ready(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v, digits) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist(), digits)
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(f"{float(obj):.{digits}g}") if math.isfinite(obj) else None
    return obj
