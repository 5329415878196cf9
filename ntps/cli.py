"""The script boundary: shared argument groups, the authors' flag spellings, the device, logging, errors.

Every script builds its parser from the groups below, so a flag has one spelling and one meaning:

================  =====================================================================================
``--model``       offline key, hub id, local dir or .gguf (the authors' ``--model_name``)
``--dataset``     offline key, paper dataset, hub id or local file (the authors' ``--dataset_name``)
``--split``       ``train`` or ``test``
``--seed``        seed of the class-stratified text subset (and of offline splits)
``--layers``      hidden-state indices, 0 = embedding output, the last after the final norm
``--output_dir``  the output ROOT: a run's directory is ``run_dir(root, model, dataset, split_or_mode)``
``--device``      ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (:func:`resolve_device`)
================  =====================================================================================

The authors' spellings are hidden aliases (``--help`` lists them in one line); flags of theirs that have
no meaning here are accepted and ignored with a one-line notice (:func:`alias`, :func:`ignore`,
:func:`authors_note`, :func:`parse`). :func:`run` configures logging once and turns user errors into
exit status 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import torch

from .io import run_dir

DEFAULT_OUTPUT_DIR = "outputs"
DEFAULT_MODEL = "smollm2-135m"
DEFAULT_DATASET = "vader-movies"
DTYPES = ("auto", "float32", "bfloat16", "float16")
SPLITS = ("train", "test")
MODEL_HELP = "offline key (smollm2-135m, gemma3-270m, qwen2.5-coder-0.5b), hub id, local dir or .gguf"
DATASET_HELP = ("offline key, paper dataset, hub id, a local .csv/.tsv/.jsonl/.json/.parquet file, "
                "train=PATH,test=PATH, or a datasets.save_to_disk / hub-clone directory")
LAYERS_HELP = ("hidden-state indices (0 = embedding output; the last is after the final norm): 'all', '0,6,12', "
               "'10-20', '-1' (last)")
ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------
# parsing helpers
# ------------------------------------------------------------------------------------------------

_INT_RANGE = re.compile(r"^(-?\d+)-(-?\d+)$")


def _indices(text: str, n_available: int | None, flag: str) -> list[int] | None:
    """The indices of '0,5,-1' / '2-6' (negatives resolved against ``n_available`` when given), unsorted."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return None
    resolve = (lambda v: v + n_available if v < 0 else v) if n_available is not None else (lambda v: v)  # noqa: E731
    out: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        m = _INT_RANGE.match(part)
        if m:
            a, b = int(m.group(1)), int(m.group(2))
            lo, hi = resolve(a), resolve(b)
            if lo > hi and (n_available is not None or (a < 0) == (b < 0)):
                raise ValueError(f"{flag} {text}: the range {part!r} runs downwards; write it upwards "
                                 f"({m.group(2)}-{m.group(1)})")
            out.extend(range(lo, hi + 1))
        elif re.fullmatch(r"-?\d+", part):
            out.append(resolve(int(part)))
        else:
            raise ValueError(f"{flag} {text}: {part!r} is not an index or a range; expected e.g. 'all', '0,6,12', "
                             "'10-20' or '-1' (the last)")
    return out


def parse_int_list(text: str | None, n_available: int | None = None, flag: str = "--layers") -> list[int] | None:
    """'all' -> None; '0,5,-1' and '2-6' forms; negative indices count from the end (with ``n_available``).

    Raises ``ValueError`` naming ``flag`` for a part that is not an integer or a range, a range that runs
    downwards ('5-2'), and indices outside ``0..n_available-1``."""
    out = _indices(text, n_available, flag)
    if out is None:
        return None
    if n_available is not None:
        bad = [i for i in out if not 0 <= i < n_available]
        if bad:
            raise ValueError(f"layers {bad} out of range: this model has layers 0..{n_available - 1} "
                             "(0 = embedding output)")
    return sorted(set(out))


def select_layers(spec: str | None, available: list[int], where: str, flag: str = "--layers") -> list[int]:
    """The layers of ``spec`` among those ``available`` in an artifact or feature file (``where``); negative
    indices count from the last available one. ``ValueError`` naming the layers ``where`` holds."""
    available = sorted(int(v) for v in available)
    wanted = _indices(spec, (available[-1] + 1) if available else 0, flag)
    if wanted is None:
        return available
    missing = sorted({v for v in wanted if v not in available})
    if missing:
        raise ValueError(f"{flag} {spec}: layer(s) {missing} out of range: not saved in {where}, which holds layers "
                         f"{available} (0 = embedding output); pass some of these, or rerun cache.py with --layers "
                         "including them")
    return sorted(set(wanted))


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def layers_spec(text: str) -> str:
    """argparse type of ``--layers``: the syntax and order are checked at once (the range, against the model
    or artifact, later)."""
    try:
        parse_int_list(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix(f"--layers {text}: ")) from None
    return text


def parse_float_list(text: str) -> list[float]:
    return [float(x) for x in str(text).split(",") if x.strip()]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The one device resolver: ``auto``/None -> cuda when available, else cpu; any torch device string.

    Raises ``ValueError`` (CUDA is not available) for a CUDA device on a machine without one.
    """
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available (no CUDA device is visible); use --device cpu")
    return dev


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each help text, except where the help states its own default."""

    def _get_help_string(self, action):
        if action.help and "default:" in action.help:
            return action.help
        return super()._get_help_string(action)


def parser(prog: str, doc: str | None) -> argparse.ArgumentParser:
    """The parser of script ``prog`` (e.g. ``cache.py``) with its docstring as description."""
    return argparse.ArgumentParser(prog=prog, description=doc, formatter_class=HelpFormatter)


# ------------------------------------------------------------------------------------------------
# shared argument groups
# ------------------------------------------------------------------------------------------------

def add_model_args(p: argparse.ArgumentParser, *, loading: bool = True, from_artifact: bool = False,
                   help: str = MODEL_HELP, dtype_default: str = "auto",
                   dtype_help: str = "forward-pass dtype (auto: float32 on CPU, bfloat16 on CUDA)"):
    """``--model`` (authors: ``--model_name``); with ``loading`` also ``--revision``, ``--tokenizer_name``,
    ``--trust_remote_code`` and ``--dtype``. ``from_artifact``: every default is the one recorded in the
    statistics artifact (None here). Returns the group, for script-specific model flags."""
    g = p.add_argument_group("model (default: the one recorded in the artifact's meta.json)" if from_artifact
                             else "model")
    artifact = " (default: the artifact's)" if from_artifact else ""
    g.add_argument("--model", default=None if from_artifact else DEFAULT_MODEL, help=help + artifact)
    alias(p, "--model_name", "--model")
    if loading:
        g.add_argument("--revision", default=None, help="hub revision of the model" + artifact)
        g.add_argument("--tokenizer_name", default=None, help="load the tokenizer from here instead" + artifact)
        g.add_argument("--trust_remote_code", action="store_true", help="allow model code from the hub (OpenELM)")
        g.add_argument("--dtype", default=None if from_artifact else dtype_default, choices=DTYPES,
                       help=dtype_help + artifact)
    return g


def add_device_arg(g, *, default: str = "auto", help: str = "auto, cpu, cuda, cuda:N") -> None:
    g.add_argument("--device", default=default, help=help)


def add_data_args(p: argparse.ArgumentParser, *, split: str | None = "train", loading: bool = True,
                  max_samples: int | None = None, max_samples_help: str = "seeded class-stratified cap on "
                  "texts; 0 = all texts of the split", max_eval_samples: bool = False,
                  seed_help: str = "seed of the class-stratified subset (and of offline splits)"):
    """``--dataset`` (authors: ``--dataset_name``) and ``--split`` (None: no split flag); with ``loading``
    also the hub/local-file columns, ``--max_samples`` (``--max_eval_samples``), ``--seed`` and
    ``--max_length``. Returns the group."""
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default=DEFAULT_DATASET, help=DATASET_HELP)
    alias(p, "--dataset_name", "--dataset")
    if split:
        g.add_argument("--split", default=split, choices=SPLITS, help="split of the dataset")
    if not loading:
        return g
    g.add_argument("--dataset_revision", default=None, help="hub revision of the dataset")
    g.add_argument("--text_column", default=None, help="text column of a local file or hub dataset")
    g.add_argument("--label_column", default=None, help="label column of a local file or hub dataset")
    g.add_argument("--test_file", default=None, help="separate test file for a local dataset")
    g.add_argument("--encoding", default="utf-8", help="text encoding of a local file (e.g. latin-1)")
    g.add_argument("--merge_label_variants", action="store_true",
                   help="merge labels of a local file or hub dataset that differ only in case or surrounding "
                        "whitespace (spam / Spam / ' spam ') into the most frequent spelling; without it they are "
                        "an error")
    g.add_argument("--max_samples", type=int, default=max_samples, help=max_samples_help)
    if max_eval_samples:
        g.add_argument("--max_eval_samples", type=int, default=None,
                       help="seeded class-stratified cap on test texts; 0 = all")
    g.add_argument("--seed", type=int, default=42, help=seed_help)
    g.add_argument("--max_length", type=positive_int, default=512, help="truncate texts to this many tokens")
    return g


def add_layers_arg(g, help: str = LAYERS_HELP) -> None:
    g.add_argument("--layers", default="all", type=layers_spec, help=help)


def add_output_args(p: argparse.ArgumentParser, *, default: str | None = DEFAULT_OUTPUT_DIR,
                    help: str = "output root: results go to {output_dir}/{model}/{dataset}/{split}",
                    overwrite: str | None = "discard existing results and recompute", log_dir: bool = False):
    """``--output_dir`` (the output ROOT), ``--overwrite`` (unless None) and, with ``log_dir``,
    ``--log_dir`` (also write the log to ``{log_dir}/{script}.log``). Returns the group."""
    g = p.add_argument_group("output")
    g.add_argument("--output_dir", default=default, help=help)
    if overwrite:
        g.add_argument("--overwrite", action="store_true", help=overwrite)
    if log_dir:
        g.add_argument("--log_dir", default=None, help="also append the log to {log_dir}/{script}.log")
    return g


def add_artifact_args(p: argparse.ArgumentParser, flag: str = "--stats_dir", *, title: str = "the statistics "
                      "artifact (cache.py)", what: str = "artifact directory written by cache.py (holds "
                      "stats.safetensors and meta.json)", model: str | None = "model of the artifact"):
    """The artifact a script reads: ``flag`` (the directory, or a root holding ``{model}/{dataset}/{split}/``)
    or ``--model`` (unless ``model`` is None)/``--dataset``/``--split`` under ``--output_dir``; see
    :func:`locate_artifact`. Returns the group."""
    g = p.add_argument_group(f"{title}: {flag}, or --model/--dataset/--split under --output_dir")
    g.add_argument(flag, default=None, help=f"{what}, or a root holding {{model}}/{{dataset}}/{{split}}/ "
                   "(default: {output_dir}/{model}/{dataset}/{split})")
    if model:
        add_model_args(p, loading=False, help=model)
    add_data_args(p, loading=False)
    return g


def locate_artifact(explicit: str | None, root: str | None, model: str, dataset: str, split: str) -> Path:
    """The artifact directory a script reads: ``explicit`` when given -- the directory itself, or a root
    holding ``{model}/{dataset}/{split}/`` (as the authors' ``--data_path``) -- else
    ``run_dir(root or outputs, model, dataset, split)``."""
    if explicit is None:
        return run_dir(root or DEFAULT_OUTPUT_DIR, model, dataset, split)
    path = Path(explicit)
    nested = run_dir(path, model, dataset, split)
    if not (path / "meta.json").is_file() and (nested / "meta.json").is_file():
        return nested
    return path


def on_artifact(args, script: str, settings_of: Callable, work: Callable):
    """The frame of a script that reads one statistics artifact (K_sweep.py, scores.py): locate it
    (:func:`locate_artifact`), check meta.json against the safetensors header, derive the settings, lock the
    results directory (:func:`results_dir`) and return ``work(args, stats_dir, meta, settings, out_dir)``."""
    from .artifacts import check_meta
    from .io import output_lock

    stats_dir = locate_artifact(args.stats_dir, args.output_dir, args.model, args.dataset, args.split)
    meta = check_meta(stats_dir)
    settings = settings_of(args, meta)
    out_dir = results_dir(stats_dir, meta, args.output_dir, explicit=args.stats_dir is not None)
    with output_lock(out_dir, script, fix="pass --output_dir ROOT to write the results elsewhere"):
        return work(args, stats_dir, meta, settings, out_dir)


def results_dir(artifact: Path, meta: dict, root: str | None, explicit: bool) -> Path:
    """Where a script writes what it computed from ``artifact``: beside it, or -- with ``--output_dir``
    and an explicit artifact directory -- ``run_dir(root, model, dataset, split)`` of the artifact."""
    if root is None or not explicit:
        return Path(artifact)
    return run_dir(root, str(meta.get("model")), str(meta.get("dataset")), str(meta.get("split")))


# ------------------------------------------------------------------------------------------------
# the authors' spellings
# ------------------------------------------------------------------------------------------------

def _registry(p: argparse.ArgumentParser) -> dict:
    if not hasattr(p, "_ntps_authors"):
        p._ntps_authors = {"aliases": {}, "ignored": {}, "notes": []}
    return p._ntps_authors


def _used(namespace) -> list[str]:
    if not hasattr(namespace, "_authors_used"):
        namespace._authors_used = []
    return namespace._authors_used


class _Alias(argparse.Action):
    def __init__(self, option_strings, dest, ours, convert=None, allowed=None, listed=True, **kw):
        super().__init__(option_strings, dest, **kw)
        self.ours, self.convert, self.allowed, self.listed = ours, convert, allowed, listed

    def __call__(self, parser, namespace, values, option_string=None):
        value = self.convert(values) if self.convert else values
        if self.allowed is not None and value not in self.allowed:
            parser.error(f"argument {option_string} (= {self.ours}): invalid choice {values!r} "
                         f"(choose from {', '.join(map(str, self.allowed))})")
        setattr(namespace, self.dest, value)
        if self.listed:
            _used(namespace).append(option_string)


class _Ignored(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        _used(namespace).append(option_string)


def alias(p: argparse.ArgumentParser, theirs: str, ours: str, *, nargs=None, type=None,
          convert: Callable | None = None, listed: bool = True) -> None:
    """Accept ``theirs`` as a hidden spelling of our flag ``ours`` (same meaning; ``convert`` maps its
    parsed value onto ours, e.g. a list of floats onto a comma-separated string). ``listed=False``: a
    transitional spelling, not the authors' (kept out of --help and of the notes)."""
    target = p._option_string_actions[ours]
    p.add_argument(theirs, dest=target.dest, action=_Alias, ours=ours, convert=convert,
                   allowed=target.choices, listed=listed, nargs=nargs if nargs is not None else target.nargs,
                   type=type or target.type, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    if listed:
        _registry(p)["aliases"][theirs] = ours
        p.epilog = _epilog(p)


def ignore(p: argparse.ArgumentParser, theirs: str, why: str, *, nargs=None) -> None:
    """Accept the authors' ``theirs`` (one value unless ``nargs``) and ignore it with a notice saying ``why``."""
    p.add_argument(theirs, action=_Ignored, nargs=nargs, dest="_ignored_" + theirs.lstrip("-"),
                   default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    _registry(p)["ignored"][theirs] = why
    p.epilog = _epilog(p)


def authors_note(p: argparse.ArgumentParser, when: Callable[[argparse.Namespace], bool], text: str) -> None:
    """A one-line note printed when the command line uses an authors' flag and ``when(args)`` holds: where
    our default changes the numbers against the authors' script."""
    _registry(p)["notes"].append((when, text))


def _epilog(p: argparse.ArgumentParser) -> str:
    reg = _registry(p)
    parts = [f"{a} = {o}" for a, o in reg["aliases"].items()]
    line = "the authors' flags: " + ", ".join(parts)
    if reg["ignored"]:
        line += "; accepted and ignored: " + ", ".join(reg["ignored"])
    return textwrap.fill(line, width=100, break_on_hyphens=False)


def parse(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """``p.parse_args(argv)``, then the one-line notices of the authors' flags (ignored ones, defaults of
    ours that change the numbers) and, with ``--log_dir``, the log file."""
    args = p.parse_args(argv)
    used = vars(args).pop("_authors_used", [])
    reg = _registry(p)
    for flag in used:
        if flag in reg["ignored"]:
            log.warning(f"{p.prog}: the authors' flag {flag} has no meaning here and is ignored "
                        f"({reg['ignored'][flag]})")
    if used:
        for when, text in reg["notes"]:
            if when(args):
                log.warning(f"{p.prog}: note: {text}")
    if getattr(args, "log_dir", None):
        log_to_file(Path(args.log_dir) / f"{Path(p.prog).stem}.log")
    return args


# ------------------------------------------------------------------------------------------------
# logging and the script boundary
# ------------------------------------------------------------------------------------------------

class _Stderr(logging.StreamHandler):
    """A handler writing to the current ``sys.stderr`` (so captured streams see it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _Format(logging.Formatter):
    """``[script] message``: the logger's last name component, the script's name for ``__main__``."""

    def __init__(self, script: str, fmt: str = "[%(short)s] %(message)s"):
        super().__init__(fmt)
        self.script = script

    def format(self, record):
        record.short = self.script if record.name == "__main__" else record.name.rsplit(".", 1)[-1]
        return super().format(record)


class _LogFile(logging.FileHandler):
    pass


def _our_loggers() -> list[str]:
    return ["ntps", "__main__", "fig_plot", "runs", "bench", *sorted(p.stem for p in ROOT.glob("*.py"))]


def setup_logging(script: str = "", rank: int | None = None) -> None:
    """Configure stdlib logging once, at the script boundary: our loggers log INFO on rank 0 (WARNING on
    the other ranks of a torchrun job), other libraries WARNING; ``[script] message`` on stderr."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _Stderr)]:
        root.removeHandler(h)
    handler = _Stderr()
    handler.setFormatter(_Format(Path(script).stem))
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    for name in _our_loggers():
        logging.getLogger(name).setLevel(logging.INFO if rank == 0 else logging.WARNING)


def log_to_file(path: Path) -> None:
    """Also append our log records to ``path`` (one file handler at a time), with time stamps."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if isinstance(h, _LogFile)]:
        root.removeHandler(h)
        h.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = _LogFile(path)
    handler.setFormatter(_Format(path.stem, "%(asctime)s [%(short)s] %(message)s"))
    root.addHandler(handler)


def _user_errors() -> tuple[type[BaseException], ...]:
    from .artifacts import ArtifactError
    from .fetch import FetchError
    from .io import OutputExistsError, OutputNotWritableError

    errors: tuple[type[BaseException], ...] = (KeyError, ValueError, FileNotFoundError, ArtifactError,
                                               FetchError, OutputExistsError, OutputNotWritableError)
    try:
        from .data import DatasetUnavailableError
        from .models import ModelNotAvailableError

        errors += (DatasetUnavailableError, ModelNotAvailableError)
    except ImportError:
        pass
    return errors


def run(main, parse_args, script: str, argv=None) -> None:
    """Entry point of a script: configure logging, parse, run. User errors (unknown dataset, model not
    available offline, bad labels, corrupt artifact, results of other settings ...) end the script with
    ``{script}: error: {message}`` on one line and exit status 2, not a traceback. Programming errors
    still raise."""
    setup_logging(script)
    errors = _user_errors()
    try:
        main(parse_args(argv))
    except errors as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"{script}: error: {' '.join(str(msg).split())}", file=sys.stderr)
        raise SystemExit(2) from None
