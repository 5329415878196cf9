"""Local files (.csv, .tsv, .jsonl/.json lines, .parquet): the record type and how its rows are read."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..fetch import sha256_file
from ..io import slugify
from .base import SPLITS, DatasetRecord, Pool, Pools, split_pool
from .fields import join_fields
from .splits import stratified_split_indices

LOCAL_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class LocalDataset(DatasetRecord):
    """A local train file, optionally with a separate test file; without one, the test split is a
    seeded, class-stratified ``test_fraction`` of the train file. ``text_column="a,b"`` joins columns
    with a space. Row ids index each file's data rows."""

    key: str
    train: Path
    test: Path | None = None
    text_column: str = "text"
    label_column: str = "label"

    def pools(self, test_fraction: float, split_seed: int) -> Pools:
        texts, labels = _local_columns(_read_local(self.train), self.train, self.text_column, self.label_column)
        pool = Pool(texts, labels, list(range(len(texts))))
        if self.test is not None:
            t2, l2 = _local_columns(_read_local(self.test), self.test, self.text_column, self.label_column)
            splits = {"train": pool, "test": Pool(t2, l2, list(range(len(t2))))}
            test_rule = "separate test file; row ids index each file's data rows"
        else:
            splits = split_pool(pool, *stratified_split_indices([str(y) for y in labels], test_fraction, split_seed))
            test_rule = (f"stratified {test_fraction:.0%} of the file, seed {split_seed}; row ids index "
                         "the file's data rows")
        files = {"train": str(self.train), **({"test": str(self.test)} if self.test else {})}
        info = {"dataset": self.key, "source": "local", "files": files,
                "file_sha256": {k: sha256_file(v) for k, v in files.items()},
                "text_column": self.text_column, "label_column": self.label_column}
        return Pools(splits, info, test_rule, seeded=self.test is None, encoding="auto")


def local_record(name, test_file=None, text_column=None, label_column=None) -> LocalDataset | None:
    """The :class:`LocalDataset` that ``name`` (a file path or ``train=PATH[,test=PATH]``) names, or None
    if ``name`` is no file. Raises ValueError for a directory, a malformed ``train=`` spec, a test file
    given twice, or ``test_file`` with a name that is not a file."""
    paths = _local_paths(name, test_file)
    if paths is None:
        return None
    return LocalDataset(key=slugify(str(paths[0])), train=paths[0], test=paths[1],
                        text_column=text_column or "text", label_column=label_column or "label")


def _local_paths(name: str, test_file) -> tuple[Path, Path | None] | None:
    """``train=a,test=b`` or a path → (train path, test path or None); None if ``name`` is no file."""
    s = str(name)
    if re.match(r"^\s*(train|test)\s*=", s):
        parts = dict(p.split("=", 1) for p in s.split(",") if "=" in p)
        parts = {k.strip(): v.strip() for k, v in parts.items()}
        unknown = set(parts) - set(SPLITS)
        if unknown or "train" not in parts:
            raise ValueError(f"expected 'train=PATH[,test=PATH]', got {name!r}")
        if "test" in parts and test_file is not None:
            raise ValueError("test file given twice (in the name and as test_file)")
        test = parts.get("test") or test_file
        return Path(parts["train"]).expanduser(), Path(test).expanduser() if test else None
    p = Path(s).expanduser()
    if p.is_dir():
        raise ValueError(f"{name!r} is a directory; pass a .csv/.tsv/.jsonl/.parquet file "
                         "(or train=PATH,test=PATH)")
    if p.suffix.lower() in LOCAL_SUFFIXES or p.is_file():
        return p, Path(test_file).expanduser() if test_file else None
    if test_file is not None:
        raise ValueError(f"test_file applies to local files only, not to {name!r}")
    return None


def _read_local(path: Path):
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    if suffix in (".jsonl", ".json"):
        try:
            return pd.read_json(path, lines=True, dtype=False)
        except ValueError as e:
            raise ValueError(f"{path}: expected JSON lines (one object per line): {e}") from e
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")


def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _local_columns(df, path: Path, text_column: str, label_column: str):
    cols = [c.strip() for c in text_column.split(",")]
    missing = [c for c in [*cols, label_column] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; the file has {list(df.columns)}. Pass "
                         "text_column=/label_column= (--text_column/--label_column).")
    batch = {c: ["" if _is_missing(v) else str(v) for v in df[c].tolist()] for c in cols}
    texts = join_fields(batch, cols)
    labels = df[label_column].tolist()
    bad = [i for i, v in enumerate(labels) if _is_missing(v)]
    if bad:
        raise ValueError(f"{path}: {len(bad)} row(s) without a label in column {label_column!r} "
                         f"(first data rows {bad[:5]}); fill or remove them.")
    return texts, labels
