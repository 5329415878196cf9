"""The paper's experiment end to end for any list of models and datasets: offline on a CPU, or the paper's own
on GPUs (issue 7, issue 16).

One command, resumable. Two presets:

* ``--preset offline`` (the default): smollm2-135m and gemma3-270m × the 19 offline datasets (one per source,
  plus rotten-tomatoes for the shared-source sensitivity line), LoRA on every dataset for smollm2-135m, the
  sweeps again at rcond × 10 and ÷ 10, then qwen2.5-coder-0.5b at reduced caps; about 4-5 hours of stage time
  on 2 CPU cores, resumable (``make reproduce-offline``);
* ``--preset paper``: the paper's 8 models × 12 datasets of SPEC §3 with its budgets — every text of each
  split, texts up to 512 tokens, bfloat16 forward passes on ``--device cuda``, the linear probe's 50 epochs,
  LoRA's 5000 steps (batch 64, lr 1e-4) on every model × dataset; cache.py runs under
  ``torchrun --standalone --nproc_per_node N`` (N = ``--nproc_per_node``, default: the visible GPUs).

::

    python -m runs.reproduce_offline                          # or: make reproduce-offline
    python -m runs.reproduce_offline --dry_run                # print the plan (every command) and exit
    python -m runs.reproduce_offline --models smollm2-135m --datasets vader-movies,bbc-news
    python -m runs.reproduce_offline --preset paper --dry_run --nproc_per_node 8
    python -m runs.reproduce_offline --preset paper --models Qwen/Qwen2-0.5B,/data/my-model \
        --datasets sst2,emotion,/data/reviews.csv,train=/data/a.parquet,test=/data/b.parquet

``--models`` takes offline keys, hub ids, local model directories and ``.gguf`` files; ``--datasets`` takes
offline keys, the paper's datasets (short names or hub ids), other hub ids and local data files
(``train=A,test=B`` for a separate test file; ``--text_column``/``--label_column`` apply to the datasets that
are not registry names). Every flag given overrides the preset.

Per model × dataset (outputs under the root ``--output_dir``, default ``outputs/{preset}``, in
``{output_dir}/{model}/{dataset}/``):

1. ``cache.py`` on the train and the test split with ``--save_features`` (class-stratified caps below);
2. ``K_sweep.py`` in both eigenvector orders (descending = the paper's theory, ascending = the authors'
   released code, SPEC §2.1) and the whitened variant;
3. ``scores.py``: the training-free baselines LogME, H-score, LS/ridge MSE from the same sums;
4. ``linear_sklearn.py`` at the last layer (SPEC §3 settings, in-sample on train and held out on test);
5. ``linear_training.py`` on the cached last-layer features (the paper's linear probe: AdamW 1e-4,
   batch 64, 50 epochs);

then on the LoRA subset (``--lora_models`` × ``--lora_datasets``) ``runs.ntps_lora`` (LoRA, NTPS before and,
on the first ``--lora_after`` datasets, after with the adapter merged), the three sweeps again at each rank
tolerance of ``--tolerances`` (into ``{output_dir}/tolerance/{label}/``; ``collect.py --sweeps_from`` makes
their long tables), the same for ``--late_models``, and finally ``collect.py`` (the long table), ``analyze.py``
(every score against every metric) and ``runs.report`` which writes ``--report_dir`` (default ``results/{preset}/``):
``REPORT.md``, its CSV/JSON tables and figures.

Every stage is skipped when its outputs exist and ``stages.json`` records the same command and the same code
version (:func:`code_digest`: the sha256 of the code the stages run; the git commit is recorded beside it); every
script is itself resumable (cache shards, training checkpoints), so rerunning the command after an
interruption continues where it stopped. Each stage's log goes to ``{output_dir}/logs/``.

Light stages (K_sweep, scores, probes, tolerance sweeps) run ``--jobs`` at a time (:func:`batches`), each on one
BLAS thread; cache.py, LoRA and the analysis run alone.

Caps (offline preset): texts are cut to ``MAX_LENGTH`` tokens; per model a seeded class-stratified subset of
``CAPS[model]`` (train, test) texts (the forward pass of qwen2.5-coder-0.5b costs ~3× that of the two
smaller models on a CPU, so it gets fewer texts; other models ``DEFAULT_CAPS``). ``--scale`` multiplies every
cap (e.g. ``--scale 0``: whole splits on a GPU). The paper preset reads whole splits; its features
(``--save_features``, float16) take 2 × states × N × d × 2 bytes per split (36 GB for Meta-Llama-3-8B on
sst2's 67k train texts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ntps import cli
from ntps.data import OFFLINE_DATASETS, independent_datasets
from ntps.io import git_commit, run_dir, slugify, write_json
from ntps.linalg import DEFAULT_RCOND

log = logging.getLogger(__name__)

MODELS = ["smollm2-135m", "gemma3-270m"]
#: Run after every stage of MODELS (LoRA and the tolerance sweeps included), so that an interrupted budget
#: loses these first: qwen2.5-coder-0.5b costs ~3× per text on a CPU.
LATE_MODELS = ["qwen2.5-coder-0.5b"]
def offline_datasets() -> list[str]:
    """The offline preset's datasets: one per source (:func:`ntps.data.independent_datasets`, registry order: the
    headline analysis), then the other members of a shared source for the sensitivity line (rotten-tomatoes, the
    texts of vader-movies' source). The ``-3class`` relabellings of the VADER sets are left out."""
    names = [n for n in OFFLINE_DATASETS if not n.endswith("-3class")]
    first = independent_datasets(names)
    return first + [n for n in names if n not in first]


DATASETS = offline_datasets()
#: (train, test) texts per model: 1,500 train texts give N >= 2(d + 1) for d = 576 and 640 where a split has
#: them (Cover's bound, issue 15); qwen2.5-coder-0.5b (d = 896, ~3× the forward cost) gets reduced caps.
CAPS = {"smollm2-135m": (1500, 500), "gemma3-270m": (1500, 500), "qwen2.5-coder-0.5b": (500, 200)}
DEFAULT_CAPS = (1500, 500)
MAX_LENGTH = 64
SEED = 42
#: LoRA (Fig. 3) on every dataset for smollm2-135m, one fixed short budget: 200 steps of batch 8 (1,600 texts,
#: about one epoch of a 1,500-text split), 64 tokens, lr 5e-4 instead of the paper's 1e-4 (tuned for 5000 steps);
#: ~3 min each on 2 cores. NTPS after LoRA (adapter merged) on the first ``after`` datasets.
LORA_SUBSET = {"models": ["smollm2-135m"], "datasets": DATASETS, "steps": 200, "batch_size": 8, "lr": 5e-4,
               "after": 6}
#: Rank tolerances of the sensitivity check: every sweep again with rcond × 10 and ÷ 10 (labels as in REPORT.md).
TOLERANCES = {"rcond_x10": 10.0, "rcond_div10": 0.1}
#: SPEC §3: the paper's models (OpenELM needs remote code; its tokenizer defaults to Llama-2's in ntps.models).
PAPER_MODELS = ["Qwen/Qwen2-0.5B", "Qwen/Qwen2-1.5B", "Qwen/Qwen2-7B", "apple/OpenELM-270M", "apple/OpenELM-450M",
                "apple/OpenELM-1_1B", "apple/OpenELM-3B", "meta-llama/Meta-Llama-3-8B"]
STAGE_FILE = "stages.json"
#: Per-dataset metrics correlated with NTPS and the baselines (collect.py columns).
METRICS = ["probe_train_acc", "probe_train_mse", "probe_test_acc", "probe_test_mse", "linear_test_acc", "lora_gain"]
#: Stages that use every core; the others (d×d eigen-solves, small fits) run on one thread: as fast
#: for these sizes, and immune to the OpenMP oversubscription that made a 576×576 eigh 50× slower
#: (8 s instead of 0.16 s) whenever another process was busy on the same cores.
HEAVY_GROUPS = {"cache", "lora"}
ALWAYS_RUN = {"analysis", "report"}
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
#: The K_sweep runs per model × dataset: (order, variant) -- the paper's theory, the authors' released order,
#: the whitened variant (SPEC §2.1, §2.2).
SWEEPS = (("descending", "raw"), ("ascending", "raw"), ("descending", "whitened"))
#: Code the per-dataset stages do not run (the analysis and the report always rerun): left out of the code digest
#: that keys the stages, so that editing the report does not invalidate hours of stage time.
ANALYSIS_CODE = ("ntps/analysis.py", "ntps/claims.py", "ntps/report.py", "ntps/scripts/analyze.py",
                 "ntps/scripts/collect.py", "runs/report.py", "runs/reproduce_offline.py", "analyze.py", "collect.py")


@dataclass(frozen=True)
class Preset:
    """The defaults of one preset; every flag given on the command line overrides its field."""

    models: list[str]
    datasets: list[str]
    late_models: list[str] = field(default_factory=list)  # after every other stage (cut first when time runs out)
    caps: dict[str, tuple[int, int]] = field(default_factory=dict)  # 0 = the whole split
    default_caps: tuple[int, int] = (0, 0)
    max_length: int = 512
    device: str = "auto"
    dtype: str | None = None  # None: the scripts' own default (auto), no flag passed
    lora_models: list[str] = field(default_factory=list)
    lora_datasets: list[str] = field(default_factory=list)
    lora_steps: int = 5000
    lora_batch_size: int = 64
    lora_lr: float = 1e-4
    lora_after: int | None = None  # NTPS after LoRA on the first N LoRA datasets (None: all)
    tolerances: dict[str, float] = field(default_factory=dict)  # label -> rcond factor (sensitivity sweeps)
    torchrun: bool = False  # cache.py under torchrun (the multi-GPU launch line)


def _paper_preset() -> Preset:
    from ntps.data import PAPER_DATASETS

    datasets = list(PAPER_DATASETS)
    return Preset(PAPER_MODELS, datasets, device="cuda", dtype="bfloat16", lora_models=PAPER_MODELS,
                  lora_datasets=datasets, torchrun=True)


PRESETS = {
    "offline": lambda: Preset(MODELS, DATASETS, LATE_MODELS, CAPS, DEFAULT_CAPS, MAX_LENGTH,
                              lora_models=LORA_SUBSET["models"], lora_datasets=LORA_SUBSET["datasets"],
                              lora_steps=LORA_SUBSET["steps"], lora_batch_size=LORA_SUBSET["batch_size"],
                              lora_lr=LORA_SUBSET["lr"], lora_after=LORA_SUBSET["after"], tolerances=TOLERANCES),
    "paper": _paper_preset,
}


@dataclass
class Stage:
    """One command of the plan; ``outputs`` (files) decide whether it is done."""

    key: str
    cmd: list[str]
    outputs: list[Path]
    group: str  # cache, ksweep, scores, sklearn, linear, lora, tolerance, analysis, report
    model: str | None = None
    dataset: str | None = None


def parse_args(argv=None):
    p = cli.parser("runs/reproduce_offline.py", __doc__)
    p.add_argument("--preset", choices=sorted(PRESETS), default="offline",
                   help="offline = 3 offline models × 7 offline datasets on a CPU; paper = SPEC §3's 8 models × 12 "
                        "datasets with the paper's budgets on GPUs")
    p.add_argument("--models", default=None, help="comma-separated offline keys, hub ids, local model directories "
                   "or .gguf files (default: the preset's)")
    p.add_argument("--late_models", default=None, help="models run after every other stage, LoRA and tolerance "
                   "sweeps included ('' = none; default: none when --models is given, else the preset's: offline "
                   "qwen2.5-coder-0.5b)")
    p.add_argument("--datasets", default=None, help="comma-separated offline keys, paper datasets, hub ids or local "
                   "data files; train=A,test=B for a separate test file (default: the preset's)")
    p.add_argument("--text_column", default=None, help="text column of the datasets that are not registry names")
    p.add_argument("--label_column", default=None, help="label column of the datasets that are not registry names")
    p.add_argument("--output_dir", default=None, help="output root: runs in {output_dir}/{model}/{dataset}/{split}, "
                   "collected.csv, analysis/ (default: outputs/{preset})")
    p.add_argument("--report_dir", default=None, help="REPORT.md, tables and figures (default: results/{preset})")
    p.add_argument("--scale", type=float, default=1.0, help="multiply every text cap; 0 = whole splits")
    p.add_argument("--max_length", type=int, default=None, help="tokens per text (default: the preset's: offline "
                   f"{MAX_LENGTH}, paper 512)")
    p.add_argument("--seed", type=int, default=SEED, help="subset, training and permutation seed")
    p.add_argument("--dtype", default=None, choices=cli.DTYPES, help="forward-pass dtype of cache.py and LoRA "
                   "(default: the preset's: offline the scripts' auto, paper bfloat16)")
    p.add_argument("--trust_remote_code", action="store_true",
                   help="pass --trust_remote_code for every model (OpenELM models always get it)")
    p.add_argument("--nproc_per_node", type=int, default=None,
                   help="cache.py processes (torchrun) per node (default: offline 1, paper the visible GPUs)")
    p.add_argument("--lora_models", default=None, help="models of the LoRA subset ('' = no LoRA; default: the "
                   "preset's: offline smollm2-135m, paper every model)")
    p.add_argument("--lora_datasets", default=None, help="datasets of the LoRA subset (default: the preset's; with "
                   "--datasets, those of them in the preset's)")
    p.add_argument("--lora_steps", type=int, default=None, help=f"LoRA steps (default: offline {LORA_SUBSET['steps']}, "
                   "paper 5000)")
    p.add_argument("--lora_batch_size", type=int, default=None, help="LoRA batch (default: offline "
                   f"{LORA_SUBSET['batch_size']}, paper 64)")
    p.add_argument("--lora_lr", type=float, default=None, help=f"LoRA lr (default: offline {LORA_SUBSET['lr']:g}, "
                   "paper 1e-4)")
    p.add_argument("--lora_after", type=int, default=None, help="NTPS after LoRA (adapter merged) on the first N "
                   f"LoRA datasets (default: offline {LORA_SUBSET['after']}, paper all)")
    p.add_argument("--tolerances", default=None, help="rank-tolerance sensitivity: LABEL=FACTOR pairs, every sweep "
                   "again with --rcond × FACTOR ('' = none; default: offline "
                   + ",".join(f"{k}={v:g}" for k, v in TOLERANCES.items()) + ", paper none)")
    p.add_argument("--probe_layers", default="-1", help="layers of linear_sklearn.py ('all' costs ~30×)")
    p.add_argument("--n_perm", type=int, default=2000, help="permutations of analyze.py's per-score tests in "
                   "{output_dir}/analysis (the report's family-wise tests use runs/report.py's settings: 10⁴ draws)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda (default: the preset's: offline auto, paper cuda)")
    p.add_argument("--stages", default=None,
                   help="only these stage groups: cache,ksweep,scores,sklearn,linear,lora,tolerance,analysis,report")
    p.add_argument("--jobs", type=int, default=2, help="light stages (K_sweep, scores, probes, tolerance sweeps: one "
                   "BLAS thread each) run this many at a time; cache.py and LoRA always alone (default 2)")
    p.add_argument("--dry_run", action="store_true", help="print the plan and exit")
    p.add_argument("--force", action="store_true", help="rerun stages even when their outputs exist")
    args = cli.parse(p, argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.nproc_per_node is not None and args.nproc_per_node < 1:
        p.error(f"--nproc_per_node must be >= 1, got {args.nproc_per_node}")
    return apply_preset(args)


def apply_preset(args):
    """Fill every flag left unset (None) from ``args.preset``; lists become Python lists."""
    preset = PRESETS[args.preset]()
    args.preset_caps, args.preset_default_caps, args.torchrun = preset.caps, preset.default_caps, preset.torchrun
    args.output_dir = args.output_dir or f"outputs/{args.preset}"
    args.report_dir = args.report_dir or f"results/{args.preset}"
    for name, value in (("max_length", preset.max_length), ("device", preset.device), ("dtype", preset.dtype),
                        ("lora_steps", preset.lora_steps), ("lora_batch_size", preset.lora_batch_size),
                        ("lora_lr", preset.lora_lr), ("lora_after", preset.lora_after)):
        if getattr(args, name) is None:
            setattr(args, name, value)
    given_datasets, given_lora = args.datasets is not None, args.lora_datasets
    if args.models is not None and args.late_models is None:
        args.late_models = ""  # a model list given on the command line is the whole list
    for name in ("models", "late_models", "datasets", "lora_models", "lora_datasets"):
        given = getattr(args, name)
        setattr(args, name, getattr(preset, name) if given is None else split_names(given))
    if given_datasets and given_lora is None:  # LoRA only where the run goes
        args.lora_datasets = [d for d in args.datasets if d in preset.lora_datasets]
    args.tolerances = preset.tolerances if args.tolerances is None else parse_tolerances(args.tolerances)
    if args.nproc_per_node is None:
        args.nproc_per_node = _visible_gpus() if args.torchrun else 1
    return args


def _visible_gpus() -> int:
    import torch

    return max(1, torch.cuda.device_count())


def parse_tolerances(text: str) -> dict[str, float]:
    """``rcond_x10=10,rcond_div10=0.1`` -> {label: factor}; '' -> {}."""
    out = {}
    for part in filter(None, (x.strip() for x in text.split(","))):
        label, sep, factor = part.partition("=")
        try:
            value = float(factor)
        except ValueError:
            value = -1.0
        if not sep or not label or not value > 0:
            raise ValueError(f"--tolerances takes LABEL=FACTOR pairs with a factor > 0, got {part!r}")
        out[label] = value
    return out


def split_names(text: str) -> list[str]:
    """Comma-separated names; ``train=A,test=B`` stays one dataset."""
    out: list[str] = []
    for part in (x.strip() for x in str(text).split(",")):
        if part.startswith("test=") and out and out[-1].startswith("train="):
            out[-1] += "," + part
        elif part:
            out.append(part)
    return out


def caps(model: str, scale: float, table: dict | None = None, default: tuple[int, int] = DEFAULT_CAPS
         ) -> tuple[int, int]:
    """(train, test) texts for ``model``; 0 = the whole split (cache.py's convention)."""
    if scale <= 0:
        return 0, 0
    base = (CAPS if table is None else table).get(model, default)
    return tuple(max(1, round(c * scale)) if c else 0 for c in base)


def dataset_key(name: str, args) -> str:
    """The name the scripts file a dataset under (``{output_dir}/{model}/{key}``): the registry key, or the
    slug of a local file / unregistered hub id."""
    from ntps.data import resolve_record

    try:
        return resolve_record(name, **_columns(name, args)).key
    except (KeyError, ValueError, OSError):  # e.g. a file not there yet: the plan is still printed
        train = dict(p.split("=", 1) for p in name.split(",") if "=" in p).get("train", name)  # train=A,test=B
        return slugify(train.strip())


def _columns(name: str, args) -> dict:
    """``--text_column``/``--label_column`` for a dataset that is not a registry name."""
    from ntps.data import resolve

    try:
        resolve(name)
        return {}
    except KeyError:
        return {k: v for k in ("text_column", "label_column") if (v := getattr(args, k)) is not None}


def _model_flags(model: str, args) -> list[str]:
    """--dtype (when the preset or the user sets one) and --trust_remote_code (OpenELM, or asked for)."""
    flags = ["--dtype", args.dtype] if args.dtype else []
    if args.trust_remote_code or "openelm" in model.lower():
        flags.append("--trust_remote_code")
    return flags


def _data_flags(ds: str, args) -> list[str]:
    return [x for k, v in _columns(ds, args).items() for x in (f"--{k}", v)]


def _cache_stages(args, py: str, model: str, ds: str, key: str, n_train: int, n_test: int) -> list[Stage]:
    out, m = Path(args.output_dir), slugify(model)
    launch = [py, *TORCHRUN, str(args.nproc_per_node)] if args.torchrun or args.nproc_per_node > 1 else [py]
    # under torchrun, cache.py maps --device auto to cuda:LOCAL_RANK; a bare "cuda" would put every rank on GPU 0
    device = "auto" if args.nproc_per_node > 1 and args.device == "cuda" else args.device
    stages = []
    for split, n in (("train", n_train), ("test", n_test)):
        d = run_dir(out, model, key, split)
        stages.append(Stage(f"cache/{m}/{key}/{split}", [
            *launch, "cache.py", "--model", model, "--dataset", ds, "--split", split, "--max_samples", str(n),
            "--max_length", str(args.max_length), "--seed", str(args.seed), "--save_features", "--device", device,
            "--output_dir", str(out), *_model_flags(model, args), *_data_flags(ds, args)],
            [d / "stats.safetensors", d / "features_mean.npy"], "cache", model, ds))
    return stages


def _dataset_stages(args, py: str, model: str, ds: str) -> list[Stage]:
    """cache (train, test), K_sweep (3 variants), scores, sklearn probes, linear probe of one model × dataset."""
    out, m, key, dev = Path(args.output_dir), slugify(model), dataset_key(ds, args), args.device
    n_train, n_test = caps(model, args.scale, args.preset_caps, args.preset_default_caps)
    tr, te, root = run_dir(out, model, key, "train"), run_dir(out, model, key, "test"), run_dir(out, model, key)
    stages = _cache_stages(args, py, model, ds, key, n_train, n_test)
    for order, variant in SWEEPS:
        stages.append(Stage(f"ksweep/{m}/{key}/{variant}_{order}", [
            py, "K_sweep.py", "--stats_dir", str(tr), "--order", order, "--variant", variant, "--device", dev],
            [tr / f"ntps_{variant}_{order}.csv"], "ksweep", model, ds))
    stages.append(Stage(f"scores/{m}/{key}", [py, "scores.py", "--stats_dir", str(tr)], [tr / "scores.csv"],
                        "scores", model, ds))
    stages.append(Stage(f"sklearn/{m}/{key}", [
        py, "linear_sklearn.py", "--features_dir", str(tr), "--test_features_dir", str(te),
        "--layers", args.probe_layers, "--solver_seed", "0"], [tr / "probes_sklearn.csv"], "sklearn", model, ds))
    stages.append(Stage(f"linear/{m}/{key}", [
        py, "linear_training.py", "--model", model, "--features_dir", str(tr), "--test_features_dir",
        str(te), "--max_length", str(args.max_length), "--training_seed", str(args.seed), "--device", dev,
        "--output_dir", str(out)], [root / "linear" / "results.json"], "linear", model, ds))
    return stages


def _tolerance_stages(args, py: str, model: str, ds: str) -> list[Stage]:
    """The three sweeps again at every other rank tolerance, into ``{output_dir}/tolerance/{label}/``."""
    out, m, key = Path(args.output_dir), slugify(model), dataset_key(ds, args)
    tr, stages = run_dir(out, model, key, "train"), []
    for label, factor in args.tolerances.items():
        root = out / "tolerance" / label
        for order, variant in SWEEPS:
            stages.append(Stage(f"tolerance/{label}/{m}/{key}/{variant}_{order}", [
                py, "K_sweep.py", "--stats_dir", str(tr), "--order", order, "--variant", variant, "--device",
                args.device, "--rcond", f"{DEFAULT_RCOND * factor:g}", "--output_dir", str(root)],
                [run_dir(root, model, key, "train") / f"ntps_{variant}_{order}.csv"], "tolerance", model, ds))
    return stages


def _lora_stage(args, py: str, model: str, ds: str, after: bool = True) -> Stage:
    out, key = Path(args.output_dir), dataset_key(ds, args)
    n_train, n_test = caps(model, args.scale, args.preset_caps, args.preset_default_caps)
    root = run_dir(out, model, key)
    return Stage(f"lora/{slugify(model)}/{key}", [
        py, "-m", "runs.ntps_lora", "--model", model, "--dataset", ds, "--output_dir", str(out),
        "--device", args.device, "--seed", str(args.seed), "--max_length", str(args.max_length), "--max_samples",
        str(n_train), "--max_eval_samples", str(n_test), "--stats_max_samples", str(n_train),
        "--batch_size", str(args.lora_batch_size), "--lora_max_steps", str(args.lora_steps),
        "--lora_args", f"--lr {args.lora_lr:g} --eval_batch_size 32",
        "--linear_results", str(root / "linear" / "results.json"), "--stats_after" if after else "--no_stats_after",
        *_model_flags(model, args), *_data_flags(ds, args)], [root / "ntps_lora.csv"], "lora", model, ds)


def plan(args) -> list[Stage]:
    """Every stage of the run, in order: per-dataset stages of ``models``, LoRA, tolerance sweeps, then the same
    for ``late_models`` (cut first when the budget runs out), then the analysis and the report."""
    py, out = sys.executable, Path(args.output_dir)
    stages = []
    for models in (args.models, [m for m in args.late_models if m not in args.models]):
        stages += [s for model in models for ds in args.datasets for s in _dataset_stages(args, py, model, ds)]
        n_after = len(args.lora_datasets) if args.lora_after is None else args.lora_after
        stages += [_lora_stage(args, py, model, ds, after=i < n_after) for model in args.lora_models
                   if model in models for i, ds in enumerate(args.lora_datasets)]
        stages += [s for model in models for ds in args.datasets for s in _tolerance_stages(args, py, model, ds)]
    stages.append(Stage("analysis/collect", [py, "collect.py", "--output_dir", str(out), "--out",
                                             str(out / "collected.csv")], [out / "collected.csv"], "analysis"))
    tolerance_tables = {label: out / f"collected_{label}.csv" for label in args.tolerances}
    stages += [Stage(f"analysis/collect_{label}", [py, "collect.py", "--output_dir", str(out), "--sweeps_from",
                                                   str(out / "tolerance" / label), "--out", str(path)], [path],
                     "analysis") for label, path in tolerance_tables.items()]
    tol_flags = ["--tolerance", *(f"{k}={v}" for k, v in tolerance_tables.items())] if tolerance_tables else []
    stages += [
        Stage("analysis/analyze", [py, "analyze.py", "--csv", str(out / "collected.csv"), "--metric", *METRICS,
                                   "--n_perm", str(args.n_perm), "--perm_seed", "0", "--output_dir", str(out)],
              [out / "analysis" / "analysis.json"], "analysis"),
        Stage("report", [py, "-m", "runs.report", "--output_dir", str(out), "--report_dir", args.report_dir,
                         *tol_flags, "--command", " ".join(["python", "-m", "runs.reproduce_offline", *sys.argv[1:]])],
              [Path(args.report_dir) / "REPORT.md"], "report"),
    ]
    return stages


def shown(cmd: list[str]) -> str:
    """A stage's command as a user would type it: ``python X`` or ``torchrun --nproc_per_node N X``."""
    if cmd[1:1 + len(TORCHRUN)] == TORCHRUN:
        return shlex.join(["torchrun", *TORCHRUN[2:], *cmd[1 + len(TORCHRUN):]])
    return shlex.join(["python", *cmd[1:]])


def _load_record(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"stages": {}, "invocations": []}


REPO = Path(__file__).resolve().parent.parent


def code_digest(repo: Path = REPO) -> str:
    """sha256 over the path and content of every Python file the per-dataset stages run (the root scripts,
    ``ntps/``, ``runs/ntps_lora.py``; not :data:`ANALYSIS_CODE`): the code version that keys the stages."""
    files = sorted({*repo.glob("*.py"), *repo.glob("ntps/**/*.py"), repo / "runs" / "ntps_lora.py"})
    h = hashlib.sha256()
    for f in files:
        rel = f.relative_to(repo).as_posix()
        if rel not in ANALYSIS_CODE:
            h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def is_done(stage: Stage, record: dict, code: str) -> bool:
    """A per-dataset stage is done when it ran with the same command and the same code (:func:`code_digest`)
    and its outputs exist; the analysis and the report read everything before them, so they always run."""
    if stage.group in ALWAYS_RUN:
        return False
    prev = record["stages"].get(stage.key)
    return bool(prev and prev.get("cmd") == stage.cmd[1:] and prev.get("code") == code and prev.get("rc") == 0
                and all(p.exists() for p in stage.outputs))


def _light(s: Stage) -> bool:
    return s.group not in HEAVY_GROUPS and s.group not in ALWAYS_RUN and s.group != "analysis"


def batches(stages: list[Stage], jobs: int) -> list[list[Stage]]:
    """The order of execution: each heavy stage (:data:`HEAVY_GROUPS`, the analysis) alone; each run of consecutive
    light stages in groups of up to ``jobs`` that run at once, each on one BLAS thread. Two stages that write one
    directory (each script locks its output directory) never share a group and keep their order: the run is split
    into one queue per directory and the groups take the heads of the first ``jobs`` queues. A light stage only
    reads what a heavy stage before it wrote (cache.py's statistics and features)."""
    out: list[list[Stage]] = []
    run: list[Stage] = []
    for s in [*stages, None]:
        if s is not None and _light(s):
            run.append(s)
            continue
        queues: dict = {}
        for r in run:
            queues.setdefault(r.outputs[0].parent if r.outputs else r.key, []).append(r)
        while queues:
            heads = list(queues)[:jobs]
            out.append([queues[k].pop(0) for k in heads])
            queues = {k: q for k, q in queues.items() if q}
        run = []
        if s is not None:
            out.append([s])
    return out


def run_stage(s: Stage, out: Path, env: dict) -> dict:
    """Run one stage, its output in ``{out}/logs/``; returns its record entry (without the code version)."""
    log_path = out / "logs" / (s.key.replace("/", "__") + ".log")
    t = time.perf_counter()
    stage_env = env if s.group in HEAVY_GROUPS else {**env, **ONE_THREAD}
    with open(log_path, "w") as fh:
        fh.write("$ " + " ".join(s.cmd) + "\n")
        fh.flush()
        rc = subprocess.call(s.cmd, stdout=fh, stderr=subprocess.STDOUT, env=stage_env)
    return {"cmd": s.cmd[1:], "rc": rc, "seconds": round(time.perf_counter() - t, 2), "group": s.group,
            "model": s.model, "dataset": s.dataset, "log": str(log_path),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}


def main(args) -> int:
    stages = plan(args)
    if args.stages:
        wanted = set(args.stages.split(","))
        stages = [s for s in stages if s.group in wanted]
    out = Path(args.output_dir)
    if args.dry_run:
        for s in stages:
            print(f"[{s.group}] {shown(s.cmd)}")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    record_path = out / STAGE_FILE
    record = _load_record(record_path)
    t0 = time.time()
    code, commit = code_digest(), git_commit()
    invocation = {"argv": sys.argv[1:], "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "ran": 0, "skipped": 0,
                  "code": code, "git_commit": commit}
    record["invocations"].append(invocation)
    from tqdm.auto import tqdm

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    pending = [s for s in stages if args.force or not is_done(s, record, code)]
    invocation["skipped"] = len(stages) - len(pending)
    bar = tqdm(total=len(stages), initial=invocation["skipped"], desc="reproduce-offline", unit="stage",
               file=sys.stderr)
    for batch in batches(pending, args.jobs):
        bar.set_postfix_str(batch[0].key)
        with ThreadPoolExecutor(max_workers=len(batch)) as pool:
            done = list(pool.map(lambda s: run_stage(s, out, env), batch))
        failed = None
        for s, entry in zip(batch, done):
            record["stages"][s.key] = {**entry, "code": code, "git_commit": commit}
            invocation["ran"] += 1
            bar.update(1)
            if entry["rc"] == 0:
                tqdm.write(f"[{s.group}] {s.key}: {entry['seconds']:.1f}s", file=sys.stderr)
            elif failed is None:
                failed = (s, entry)
        invocation["seconds"] = round(time.time() - t0, 1)
        write_json(record_path, record)
        if failed is not None:
            s, entry = failed
            tail = Path(entry["log"]).read_text().splitlines()[-15:]
            log.error("%s\nstage %s failed (exit %d); log %s. Fix the cause and rerun the same command: finished "
                      "stages are kept.", "\n".join(tail), s.key, entry["rc"], entry["log"])
            return entry["rc"]
    bar.close()
    invocation["seconds"] = round(time.time() - t0, 1)
    write_json(record_path, record)
    log.info("%d stages run, %d up to date, %.0fs; report in %s/REPORT.md", invocation["ran"], invocation["skipped"],
             invocation["seconds"], args.report_dir)
    return 0


if __name__ == "__main__":
    cli.setup_logging("reproduce_offline.py")
    sys.exit(main(parse_args()))
