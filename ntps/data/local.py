"""Local files (.csv, .tsv, .jsonl/.json: JSON lines or an array of objects, .parquet): the record type and
how its rows are read and checked."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..fetch import sha256_file
from ..io import slugify
from .base import SPLITS, DatasetRecord, Pool, Pools, split_by_tag, split_pool
from .fields import join_fields
from .labels import check_label_cells, merge_label_variants
from .splits import dedupe_pool, stratified_split_indices

LOCAL_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet")
#: a column of this name with values train/test (any case) assigns each row of a local file to its split
LOCAL_SPLIT_COLUMN = "split"


@dataclass(frozen=True)
class LocalDataset(DatasetRecord):
    """A local train file, optionally with a separate test file or a ``split`` column (``train``/``test``
    per row); without either, the test split is a seeded, class-stratified ``test_fraction`` of the train
    file. ``text_column="a,b"`` joins columns with a space. Row ids index each file's data rows.
    ``encoding``: the text encoding of a .csv/.tsv/.json/.jsonl file. ``merge_label_variants``: merge
    spellings of one label that differ in case or surrounding spaces (else they are an error).

    Before the split: a missing label cell is an error, label spellings are checked, exact duplicate texts
    are dropped (:func:`ntps.data.splits.dedupe_pool`, test rows repeating a train text included)."""

    key: str
    train: Path
    test: Path | None = None
    text_column: str = "text"
    label_column: str = "label"
    encoding: str = "utf-8"
    merge_label_variants: bool = False

    def pools(self, test_fraction: float, split_seed: int) -> Pools:
        files = {"train": str(self.train), **({"test": str(self.test)} if self.test else {})}
        frames = [(role if self.test else None, path, _read_local(Path(path), self.encoding))
                  for role, path in files.items()]
        splits, test_rule, seeded, stats = split_frames(
            " and ".join(files.values()), frames, self.text_column, self.label_column, self.merge_label_variants,
            test_fraction, split_seed, given="separate test file; row ids index each file's data rows")
        info = {"dataset": self.key, "source": "local", "files": files,
                "file_sha256": {k: sha256_file(v) for k, v in files.items()},
                "text_column": self.text_column, "label_column": self.label_column, "encoding": self.encoding,
                **stats}
        return Pools(splits, info, test_rule, seeded=seeded, encoding="auto")


def split_frames(where: str, frames, text_column: str, label_column: str, merge: bool, test_fraction: float,
                 split_seed: int, given: str, whole: str = "the file") -> tuple[dict[str, Pool], str, bool, dict]:
    """The rows of local tables as train/test pools, by the rules of local files.

    ``frames``: ``(role, name, DataFrame)`` for each table; ``role`` is ``"train"``/``"test"`` when the table
    is that split, None when its ``split`` column (else the seeded split) assigns its rows; ``name`` names it
    in messages. Missing label cells are an error, label spellings are checked (``merge``), exact duplicate
    texts dropped, train first (:func:`ntps.data.splits.dedupe_pool`); then the split: the roles (rule
    ``given``), the ``split`` column of ``whole``, or a class-stratified ``test_fraction`` of ``whole``
    seeded with ``split_seed``. Row ids index each table's rows. Returns (``{split: Pool}``, the test rule,
    whether the split was seeded, the drop counts and ``label_variants_merged``)."""
    pool, tags = Pool([], [], []), []
    for role, name, df in frames:
        texts, labels = _local_columns(df, name, text_column, label_column)
        pool = Pool(pool.texts + texts, pool.labels + labels, pool.ids + list(range(len(texts))))
        tags += _split_tags(df, name, role)
    seeded = "test" not in tags  # no test table, no split column
    labels, variants = merge_label_variants(where, pool.labels, merge)
    pool, tags, stats = dedupe_pool(where, pool._replace(labels=labels), tags)
    rows = f"; row ids index {whole}'s data rows"
    if seeded:
        splits = split_pool(pool, *stratified_split_indices([str(y) for y in pool.labels], test_fraction, split_seed))
        test_rule = f"stratified {test_fraction:.0%} of {whole}, seed {split_seed}{rows}"
    elif any(role for role, _, _ in frames):
        splits, test_rule = split_by_tag(pool, tags), given
    else:
        splits, test_rule = split_by_tag(pool, tags), f"{whole}'s {LOCAL_SPLIT_COLUMN!r} column (train/test){rows}"
    return splits, test_rule, seeded, {**stats, **({"label_variants_merged": variants} if variants else {})}


def local_record(name, test_file=None, text_column=None, label_column=None, encoding: str = "utf-8",
                 merge_label_variants: bool = False) -> LocalDataset | None:
    """The :class:`LocalDataset` that ``name`` (a file path or ``train=PATH[,test=PATH]``) names, or None
    if ``name`` is no file. Raises FileNotFoundError for a path that does not exist (a name ending in a
    file suffix, or a ``train=``/``test=`` path), ValueError for a directory, a malformed ``train=`` spec,
    a test file given twice, or ``test_file`` with a name that is not a file."""
    paths = _local_paths(name, test_file)
    if paths is None:
        return None
    for role, path in zip(SPLITS, paths):
        if path is not None and not path.is_file():
            raise FileNotFoundError(no_such_file(path, f"the {role} file"))
    return LocalDataset(key=slugify(str(paths[0])), train=paths[0], test=paths[1],
                        text_column=text_column or "text", label_column=label_column or "label",
                        encoding=encoding, merge_label_variants=merge_label_variants)


def no_such_file(path, what: str = "the dataset") -> str:
    """The message for a missing file: its absolute path and, for a name without a suffix, the files with
    a known suffix that exist beside it."""
    p = Path(path).expanduser()
    near = [str(p.with_name(p.name + s)) for s in LOCAL_SUFFIXES if p.with_name(p.name + s).is_file()]
    hint = f"; did you mean {' or '.join(near)}?" if near else "; check the path."
    return (f"no such file: {what} {str(path)!r} ({p.absolute()}) does not exist{hint} A name that looks like "
            "a path is read as a local file, never looked up on the hub.")


def looks_like_path(name) -> bool:
    """True when a name that is neither a file nor a registry name is a mistyped path rather than a hub id
    ``org/name``: it starts with ``/``, ``.`` or ``~``, has a backslash or more than one ``/``, its folder
    exists here, or a file of that name with a known suffix exists (``data/train`` → ``data/train.csv``)."""
    s = str(name).strip()
    p = Path(s).expanduser()
    if s.startswith(("/", ".", "~")) or "\\" in s or s.count("/") > 1:
        return True
    if "/" in s and p.parent.is_dir():
        return True
    return any(p.with_name(p.name + x).is_file() for x in LOCAL_SUFFIXES) if p.name else False


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
        raise ValueError(f"{name!r} is a directory; local_record reads .csv/.tsv/.jsonl/.parquet files (or "
                         "train=PATH,test=PATH), directory_record reads dataset directories (load_split: both)")
    if p.suffix.lower() in LOCAL_SUFFIXES or p.is_file():
        return p, Path(test_file).expanduser() if test_file else None
    if test_file is not None:
        raise ValueError(f"test_file applies to local files only, not to {name!r}")
    return None


def _read_local(path: Path, encoding: str = "utf-8"):
    """A local file as a DataFrame (csv/tsv cells as strings); ValueError naming the file, the problem and
    the fix for an unsupported suffix, an empty or header-only file, text that is not ``encoding``, a
    tab/comma mix-up, or JSON that is neither JSON lines nor an array of objects."""
    import pandas as pd

    suffix = path.suffix.lower()
    if suffix not in LOCAL_SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(LOCAL_SUFFIXES)}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty; a dataset file needs the columns text,label and at least one row of "
                         "each of >= 2 classes.")
    try:
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix in (".jsonl", ".json"):
            df = _read_json(path, encoding)
        else:
            df = _read_delimited(path, "\t" if suffix == ".tsv" else ",", encoding)
    except UnicodeDecodeError as e:
        raise ValueError(_not_decodable(path, encoding, e)) from None
    if len(df) == 0:
        raise ValueError(f"{path} has a header ({', '.join(map(str, df.columns))}) but no data rows; it needs "
                         "at least one row of each of >= 2 classes.")
    return df


def _read_delimited(path: Path, sep: str, encoding: str):
    import pandas as pd

    try:
        df = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, encoding=encoding)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} has no header line and no rows; a dataset file needs the columns text,label "
                         "and at least one row of each of >= 2 classes.") from None
    except pd.errors.ParserError as e:
        raise ValueError(_separator_hint(path, sep, encoding) or
                         f"{path} is not a valid {path.suffix} file ({' '.join(str(e).split())}). Fix: quote "
                         "fields that contain the separator, quotes or line breaks.") from None
    if len(df.columns) == 1 and (hint := _separator_hint(path, sep, encoding)):
        raise ValueError(hint)
    return df


def _separator_hint(path: Path, sep: str, encoding: str) -> str | None:
    """The message for a tab-separated file named .csv (or a comma-separated one named .tsv), else None."""
    with open(path, encoding=encoding, errors="replace") as f:
        header = f.readline()
    other, (name, fix) = ("\t", ("tab", ".tsv")) if sep == "," else (",", ("comma", ".csv"))
    if other in header and sep not in header:
        return (f"{path} looks {name}-separated (its header line has {name}s and no "
                f"{'commas' if sep == ',' else 'tabs'}) but is named {path.suffix}. Fix: rename it to {fix}.")
    return None


def _read_json(path: Path, encoding: str):
    """JSON lines, or a JSON array of objects (told apart by the first character that is not a space)."""
    import pandas as pd

    with open(path, encoding=encoding) as f:
        array = f.read(4096).lstrip("\ufeff \t\r\n").startswith("[")
    try:
        return pd.read_json(path, orient="records", dtype=False, encoding=encoding) if array else \
            pd.read_json(path, lines=True, dtype=False, encoding=encoding)
    except ValueError as e:
        if isinstance(e, UnicodeDecodeError):
            raise
        raise ValueError(f"{path}: expected JSON lines (one object per line) or a JSON array of objects: "
                         f"{e}") from None


def _not_decodable(path: Path, encoding: str, error: UnicodeDecodeError) -> str:
    """Where ``path`` stops being ``encoding`` text (byte, position, line) and the fix."""
    raw = path.read_bytes()
    try:
        raw.decode(encoding)
        where = str(error)  # pragma: no cover - pandas failed where a plain decode does not
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        where = f"byte 0x{raw[e.start]:02x} at position {e.start}, line {line}"
    return (f"{path} is not {encoding} text ({where}). Fix: re-save it as UTF-8, or pass its encoding, "
            "e.g. encoding='latin-1' or 'cp1252' (--encoding latin-1).")


def _split_tags(df, path, role: str | None) -> list[str]:
    """Each row's split: the ``split`` column (values train/test, any case) if the file has one, else
    ``role`` (``train`` if None). ValueError for other values, a file without test rows, or a column that
    contradicts the file's role (a test file's row marked train)."""
    if LOCAL_SPLIT_COLUMN not in df.columns:
        return [role or "train"] * len(df)
    tags = [str(v).strip().lower() for v in df[LOCAL_SPLIT_COLUMN].tolist()]
    other = sorted(set(tags) - set(SPLITS))
    if other:
        raise ValueError(f"{path}: column {LOCAL_SPLIT_COLUMN!r} has values {other[:10]}; only train/test are "
                         f"understood. Fix: map them to train/test, or rename the column to use the seeded split.")
    if role is not None and set(tags) != {role}:
        raise ValueError(f"{path} is the {role} file but its {LOCAL_SPLIT_COLUMN!r} column also marks rows "
                         f"{sorted(set(tags) - {role})}. Fix: give one file with the column, or two files.")
    if role is None and "test" not in tags:
        raise ValueError(f"{path}: column {LOCAL_SPLIT_COLUMN!r} marks no row as test. Fix: mark the test rows, pass a "
                         "test file, or rename the column to use the seeded split.")
    return tags


def _is_missing(v) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return isinstance(v, str) and not v.strip()


def _local_columns(df, path, text_column: str, label_column: str):
    cols = [c.strip() for c in text_column.split(",")]
    missing = [c for c in [*cols, label_column] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: no column(s) {missing}; its columns are {list(df.columns)}. Pass "
                         "text_column=/label_column= (--text_column/--label_column).")
    batch = {c: ["" if _is_missing(v) else str(v) for v in df[c].tolist()] for c in cols}
    texts = join_fields(batch, cols)
    labels = df[label_column].tolist()
    check_label_cells(str(path), label_column, labels, range(1, len(labels) + 1),
                      f"drop those rows, or name another column with label_column= (--label_column); its columns are "
                      f"{list(df.columns)}. If such a value is a real class name, rename it.",
                      rows_are=", data rows counted from 1")
    return texts, labels
