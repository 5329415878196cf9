"""Pure column functions of the paper's hub datasets (SPEC §3): a batch of columns in, one list out."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Batch = Mapping[str, Sequence]


def join_fields(batch: Batch, fields: Sequence[str], sep: str = " ") -> list[str]:
    """Join several text columns row by row: ``a + " " + b`` for **every** row of the batch.

    (The authors' loader returned from inside its loop, so only the first row of each ``map``
    batch was concatenated; SPEC §3.)
    """
    cols = [batch[f] for f in fields]
    n = len(cols[0])
    if any(len(c) != n for c in cols):
        raise ValueError(f"columns {list(fields)} have different lengths")
    return [sep.join("" if v is None else str(v) for v in row) for row in zip(*cols)]


def commonsense_qa_text(batch: Batch) -> list[str]:
    """``question (0) c0 (1) c1 … (4) c4`` (the authors' format, choices zero-indexed)."""
    out = []
    for question, choices in zip(batch["question"], batch["choices"]):
        texts = choices["text"] if isinstance(choices, Mapping) else choices
        out.append(question + " " + " ".join(f"({i}) {c}" for i, c in enumerate(texts)))
    return out


def answer_key_to_label(keys: Sequence[str | None]) -> list[int]:
    """``A``–``E`` → ``0``–``4``; a missing key (the unlabelled test split) → ``-1`` (dropped later)."""
    out = []
    for k in keys:
        k = (k or "").strip()
        if not k:
            out.append(-1)
        elif len(k) == 1 and "A" <= k.upper() <= "E":
            out.append(ord(k.upper()) - ord("A"))
        else:
            raise ValueError(f"commonsense_qa answerKey {k!r} is not one of A-E")
    return out


def commonsense_qa_label(batch: Batch) -> list[int]:
    return answer_key_to_label(batch["answerKey"])
