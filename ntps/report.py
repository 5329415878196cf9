"""Plain-text rendering shared by the scripts and the report: one number formatter, one markdown table.

(pandas' ``DataFrame.to_markdown`` needs the ``tabulate`` package, which is not a dependency.)
"""

from __future__ import annotations

import math

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
    """A GitHub markdown table; cells are written with ``str`` (format numbers with :func:`fmt` first)."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
