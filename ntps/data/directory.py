"""Hugging Face dataset directories: one written by ``save_to_disk`` or a clone of a hub dataset repository
(parquet files named by split), read with the ``datasets`` library and never the network; the record type
and how its rows are read. Its rows then follow the rules of local files (:func:`ntps.data.local.split_frames`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from ..io import slugify
from ..provenance import sha256_file
from .base import DatasetRecord, Pools
from .labels import is_missing_label
from .local import LOCAL_SPLIT_COLUMN, split_frames

#: the splits used as test, in order of preference: the first one that has labels
TEST_SPLITS = ("test", "validation")
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class DirectoryDataset(DatasetRecord):
    """A dataset directory: ``layout`` ``"save_to_disk"`` (a ``DatasetDict`` written by
    ``DatasetDict.save_to_disk``, or one ``Dataset`` = train only) or ``"parquet"`` (a clone of a hub dataset
    repository: ``data/train-00000-of-00001.parquet``, ``data/test-…``, ``train/*.parquet``, ``train.parquet``
    …, split names as the hub infers them; parquet files without a split name are train).

    Test split: ``test`` when it has labels; else ``validation`` (the rule of sst2 and commonsense_qa, SPEC §3,
    whose test labels are -1 or empty); else a seeded, class-stratified ``test_fraction`` of train, or the train
    split's ``split`` column (train/test) as for a local file. Other splits are not read. A ``ClassLabel`` label
    column names the classes (class id k = its k-th name); other labels are encoded as a local file's. Then the
    rules of local files: a missing label cell (also -1) is an error, label spellings are checked, exact
    duplicate texts dropped, a test row repeating a train text dropped from test. Row ids index each split's rows.
    """

    key: str
    path: Path
    layout: str
    text_column: str = "text"
    label_column: str = "label"
    merge_label_variants: bool = False

    def pools(self, test_fraction: float, split_seed: int) -> Pools:
        where = str(self.path)
        found, files = read_splits(self.path, self.layout)
        test = test_split(found, self.label_column)
        used = ["train", *([test] if test else [])]
        frames = [(role if test else None, f"{where} (split {s!r})", _frame(found[s], drop_split_column=bool(test)))
                  for role, s in zip(("train", "test"), used)]
        names = _class_names(where, {s: found[s] for s in used}, self.label_column)
        given = (f"the directory's {test!r} split" if test == "test" else f"the directory's {test!r} split used "
                 "as test (no labelled 'test' split; SPEC §3's rule for sst2)") + "; row ids index each split's rows"
        splits, test_rule, seeded, stats = split_frames(
            where, frames, self.text_column, self.label_column, self.merge_label_variants, test_fraction,
            split_seed, given=given, whole="the train split")
        digests = {_relative(f, self.path): sha256_file(f) for s in used for f in files[s]}
        info = {"dataset": self.key, "source": "local", "layout": self.layout, "files": {"directory": where},
                "directory_splits": sorted(found), "test_source_split": test or "train",
                "data_files": {s: [_relative(f, self.path) for f in files[s]] for s in used},
                "file_sha256": digests, "directory_sha256": _digest(digests),
                "text_column": self.text_column, "label_column": self.label_column, **stats}
        return Pools(splits, info, test_rule, seeded=seeded, encoding="int" if names else "auto", label_names=names)


def directory_record(name, text_column=None, label_column=None, test_file=None,
                     merge_label_variants: bool = False) -> DirectoryDataset | None:
    """The :class:`DirectoryDataset` that ``name`` names, or None when ``name`` is no directory. ValueError for
    a directory of neither layout (naming what was expected and what it holds), or with ``test_file`` (a
    directory brings its splits). The key is built like a local file's: the last two parts of its absolute path."""
    path = Path(str(name)).expanduser()
    if not path.is_dir():
        return None
    layout = directory_layout(path)
    if layout is None:
        raise ValueError(not_a_dataset_directory(path))
    if test_file is not None:
        raise ValueError(f"test_file applies to local files; the directory {str(path)!r} brings its own splits")
    return DirectoryDataset(key=slugify(str(path.resolve())), path=path, layout=layout,
                            text_column=text_column or "text", label_column=label_column or "label",
                            merge_label_variants=merge_label_variants)


def directory_layout(path: Path) -> str | None:
    """``"save_to_disk"`` (``dataset_dict.json``, or ``state.json`` of one ``Dataset``), ``"parquet"`` (parquet
    files the hub's naming rules assign to splits) or None."""
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return "save_to_disk"
    return "parquet" if parquet_files(path) else None


def parquet_files(path: Path) -> dict[str, list[Path]]:
    """``{split: parquet files}`` by the hub's rules (``datasets.data_files.get_data_patterns``: ``data/
    {split}-00000-of-00001.parquet``, ``{split}/``, a split name in the file name; otherwise every file is
    train), splits without a parquet file left out. ValueError when one split's files lie in several folders
    (a repository of several configurations) or a file is no parquet file (a Git LFS pointer)."""
    from datasets.data_files import DataFilesDict, EmptyDatasetError, get_data_patterns

    try:
        patterns = get_data_patterns(str(path.resolve()))
    except EmptyDatasetError:
        return {}
    resolved = DataFilesDict.from_patterns(patterns, base_path=str(path.resolve()), allowed_extensions=[".parquet"])
    out = {str(s): sorted(Path(f) for f in fs) for s, fs in resolved.items() if len(fs)}
    for split, fs in out.items():
        folders = sorted({_relative(f.parent, path) for f in fs})
        if len(folders) > 1:
            raise ValueError(f"{path}: the {split} parquet files lie in {len(folders)} folders {folders[:5]}; a hub "
                             "repository keeps one configuration per folder. Fix: pass the folder of one "
                             f"configuration, e.g. {path / folders[0]}")
        for f in fs:
            with open(f, "rb") as fh:
                head = fh.read(4)
            if head != _PARQUET_MAGIC:
                raise ValueError(f"{f} is not a parquet file (it starts with {head!r}; a clone made without Git LFS "
                                 f"holds pointer files). Fix: run 'git lfs pull' in {path}.")
    return out


def read_splits(path: Path, layout: str) -> tuple[dict, dict[str, list[Path]]]:
    """``({split: datasets.Dataset}, {split: data files})`` of a dataset directory (parquet layout: the train,
    validation and test splits only); ValueError without a train split."""
    import datasets

    if layout == "save_to_disk":
        loaded = datasets.load_from_disk(str(path))
        found = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
        files = {s: [Path(f["filename"]) for f in ds.cache_files] for s, ds in found.items()}
    else:
        files = {s: fs for s, fs in parquet_files(path).items() if s in ("train", *TEST_SPLITS)}
        found = dict(datasets.load_dataset("parquet", data_files={s: [str(f) for f in fs] for s, fs in files.items()}))
    if "train" not in found:
        raise ValueError(f"{path} has the splits {sorted(found) or 'none'} but no train split. Fix: name the training "
                         "rows' split 'train' (DatasetDict key, or data/train-*.parquet).")
    return found, files


def test_split(found: dict, label_column: str) -> str | None:
    """The split used as test: the first of :data:`TEST_SPLITS` present with at least one label (a column it
    lacks counts as present, so that reading it names the columns), else None (drawn from train)."""
    for s in TEST_SPLITS:
        if s in found and (label_column not in found[s].column_names
                           or not all(_unlabelled(v) for v in found[s][label_column])):
            return s
    return None


def not_a_dataset_directory(path: Path) -> str:
    """The message for a directory of neither layout: what was expected and what it holds."""
    entries = sorted(p.name + "/" * p.is_dir() for p in path.iterdir() if not p.name.startswith("."))
    holds = f"it holds {entries[:10]}{' ...' if len(entries) > 10 else ''}" if entries else "it is empty"
    return (f"{path} is a directory but no dataset directory ({holds}). Expected one written by datasets' "
            "save_to_disk (dataset_dict.json, or state.json and data-*.arrow) or a clone of a hub dataset repository "
            "with parquet files named by split (data/train-00000-of-00001.parquet, data/test-…, train/*.parquet; "
            "other parquet files are train). Fix: pass that directory, or a .csv/.tsv/.jsonl/.parquet file "
            "(train=PATH,test=PATH).")


def _unlabelled(v) -> bool:
    return is_missing_label(v) or (isinstance(v, int) and v < 0)


def _frame(ds, drop_split_column: bool):
    """A split as a DataFrame; without its ``split`` column when the directory's splits assign the rows."""
    df = ds.to_pandas()
    return df.drop(columns=[LOCAL_SPLIT_COLUMN]) if drop_split_column and LOCAL_SPLIT_COLUMN in df else df


def _class_names(where: str, found: dict, label_column: str) -> list[str] | None:
    """The names of a ``ClassLabel`` label column (None for other columns); ValueError when splits disagree."""
    names = {s: getattr(ds.features.get(label_column), "names", None) for s, ds in found.items()}
    if len({tuple(n) if n else None for n in names.values()}) > 1:
        raise ValueError(f"{where}: the splits' ClassLabel names of {label_column!r} differ ({names}). Fix: cast "
                         "the splits to one ClassLabel (Dataset.cast_column) and save them again.")
    return list(names["train"]) if names["train"] else None


def _relative(path: Path, root: Path) -> str:
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


def _digest(digests: dict[str, str]) -> str:
    """sha256 over the sorted ``name NUL sha256`` lines (the form of :func:`ntps.provenance.sha256_tree`)."""
    h = hashlib.sha256()
    for name in sorted(digests):
        h.update(f"{name}\0{digests[name]}\n".encode())
    return h.hexdigest()
