"""Stream one forward pass over a labelled split and accumulate the per-layer sums of SPEC §1.

Writes ``{output_dir}/{model_slug}/{dataset_slug}/{split}/stats.safetensors`` + ``meta.json``
(read by K_sweep.py), and with ``--save_features`` per-text mean-pooled and last-token features
per layer (``features_mean.npy`` / ``features_last.npy``, shape (layers, N, d), memory-mappable,
rows in the order of ``labels.npy``; float16 unless a value exceeds its range, then float32 for that
run, as meta.json's ``features`` records; a non-finite value is never stored).

Checked before the model is loaded: every argument, the data (texts, two classes or more), that the
output directory is writable, and its lock (a second run into the same directory is refused, naming
the first). meta.json records the sha256 of the texts and labels used, the data files and the model's
weights; a rerun is "up to date" only when they are all equal (:mod:`ntps.provenance`).

Texts are sorted by length and cut into batches (little padding) and shards; each finished shard
updates a float64 checkpoint, so rerunning the same command after an interruption continues
where it stopped and gives totals identical to an uninterrupted run. Under ``torchrun`` or
``accelerate launch`` shards are dealt to ranks by index, the sums are reduced once, and rank 0
writes.

Examples:
    python cache.py                                            # smollm2-135m on vader-movies train
    python cache.py --model Qwen/Qwen2-0.5B --dataset rotten_tomatoes --dtype bfloat16 --device cuda
    torchrun --nproc_per_node 2 cache.py --dataset bbc-news --split test --save_features
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ntps import cli
from ntps.accumulate import PRECISIONS, NonFiniteHiddenStates, StatsAccumulator, resolve_precision
from ntps.api import forward_batches
from ntps.artifacts import (
    CONFIG_KEYS,
    FORMAT_VERSION,
    fingerprint,
    load_stats_file,
    save_stats,
    save_stats_file,
)
from ntps.cli import parse_int_list, resolve_device
from ntps.io import OutputExistsError, atomic_path, environment_info, output_lock, read_json, run_dir, write_json
from ntps.provenance import cover_warnings, file_digests, model_digests
from ntps.text import batch_token_budget, decoder_of, length_sorted_shards, tokenize

DEFAULT_MAX_SAMPLES = 1000
PARTIAL_DIR = ".partial"
log = logging.getLogger(__name__)


def parse_args(argv=None):
    p = cli.parser("cache.py", __doc__)
    g = cli.add_model_args(p, dtype_help="forward-pass dtype (auto: float32 on CPU, bfloat16 on CUDA); sums are "
                           "float32/64")
    g.add_argument("--lora_ckpt", default=None, help="PEFT adapter directory to merge before the pass")
    cli.add_device_arg(g, help="auto, cpu, cuda, cuda:N (under torchrun: cuda:LOCAL_RANK)")
    cli.add_data_args(p, max_samples=DEFAULT_MAX_SAMPLES)
    g = p.add_argument_group("statistics")
    cli.add_layers_arg(g)
    g.add_argument("--batch_size", type=cli.positive_int, default=32,
                   help="texts per forward pass (without --max_batch_tokens)")
    g.add_argument("--max_batch_tokens", type=int, default=None,
                   help="batches of length-sorted texts up to this many padded tokens (batch size × longest "
                        "length) instead of --batch_size texts; default: off on the CPU, 16384 on CUDA; 0 = off")
    g.add_argument("--stats_precision", default="auto", choices=["auto", *PRECISIONS],
                   help="inputs of the per-batch statistic GEMMs (float32 sums, float64 totals either way); "
                        "tf32/bf16/bf16x3 use tensor cores on CUDA: faster, NTPS off by up to ~1e-3 (tf32, bf16x3) "
                        "or ~1e-2 (bf16) (README, Benchmarks); auto = float32")
    g.add_argument("--shard_size", type=cli.positive_int, default=1024, help="texts per resumable shard")
    g.add_argument("--checkpoint_interval", type=float, default=300,
                   help="seconds between resume checkpoints (written after a finished shard; 0 = after every "
                        "shard). A checkpoint holds 3·d² float64 per layer: 9 GB for a 7B model")
    g.add_argument("--save_features", action="store_true",
                   help="also store per-text mean-pooled and last-token features per layer")
    g.add_argument("--features_dtype", default="float16", choices=["float16", "float32"],
                   help="dtype of the stored features; float16 becomes float32 for a run whose features exceed "
                        "float16's range (recorded in meta.json)")
    cli.add_output_args(p, overwrite="discard existing results and checkpoints", log_dir=True)
    cli.alias(p, "--save_dir", "--output_dir")
    cli.ignore(p, "--num_workers", "the texts are tokenised in the main process")
    cli.authors_note(p, lambda a: a.max_samples == DEFAULT_MAX_SAMPLES,
                     f"--max_samples caps the split at {DEFAULT_MAX_SAMPLES} texts here; the authors' cache.py "
                     "reads the whole split (pass --max_samples 0)")
    cli.authors_note(p, lambda a: a.dtype == "auto", "--dtype auto runs bfloat16 on CUDA; the authors' default is "
                     "float32 (pass --dtype float32)")
    return cli.parse(p, argv)


# ------------------------------------------------------------------------------------------------
# distributed helpers (torchrun / accelerate launch set these variables)
# ------------------------------------------------------------------------------------------------

def dist_info() -> tuple[int, int, int]:
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()


class FeatureWriter:
    """(layers, N, d) memory-mapped .npy files written in place as batches finish (float32 while the run
    lasts; :meth:`finalize` stores the dtype that holds the values)."""

    def __init__(self, directory: Path, n_layers: int, n: int, d: int, create: bool):
        self.paths = {k: directory / f"features_{k}.npy.partial" for k in ("mean", "last")}
        mode = "w+" if create else "r+"
        self.maps = {k: np.lib.format.open_memmap(p, mode=mode, dtype="float32", shape=(n_layers, n, d))
                     for k, p in self.paths.items()}

    def write(self, idx: np.ndarray, mean: torch.Tensor, last: torch.Tensor) -> None:
        for name, x in (("mean", mean), ("last", last)):
            if not torch.isfinite(x).all():
                raise NonFiniteHiddenStates(f"non-finite {name}-pooled features: nothing is stored; rerun with "
                                            "--dtype float32")
            self.maps[name][:, idx] = x.cpu().numpy()

    def flush(self) -> None:
        for m in self.maps.values():
            m.flush()

    def finalize(self, requested: str, layers: list[int]) -> dict:
        """Write ``features_{mean,last}.npy`` (without ``.partial``) in ``requested`` dtype, or float32 where a
        value exceeds float16's range; returns meta.json's ``features`` record."""
        self.flush()
        max_abs = [max(float(np.abs(m[i]).max(initial=0.0)) for m in self.maps.values())
                   for i in range(self.maps["mean"].shape[0])]
        if not all(np.isfinite(max_abs)):
            raise NonFiniteHiddenStates("non-finite pooled features: nothing is stored; rerun with --dtype float32")
        limit = float(np.finfo(np.float16).max)
        dtype = "float32" if requested == "float32" or max(max_abs, default=0.0) > limit else "float16"
        for m, p in zip(self.maps.values(), self.paths.values()):
            if dtype == "float16":
                with atomic_path(p.with_suffix("")) as tmp:
                    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=m.shape)
                    for i in range(m.shape[0]):
                        out[i] = m[i]
                    out.flush()
                    del out
                p.unlink()
            else:
                os.replace(p, p.with_suffix(""))  # features_mean.npy
        self.maps = {}
        record = {"files": ["features_mean.npy", "features_last.npy"], "layout": "(layers, N, d)", "dtype": dtype,
                  "requested_dtype": requested, "max_abs": max_abs}
        if dtype != requested:
            record["warning"] = (f"features stored as float32, not {requested}: layer(s) "
                                 f"{[layer for layer, v in zip(layers, max_abs) if v > limit]} hold values up to "
                                 f"{max(max_abs):.4g}, beyond float16's {limit:.0f}")
            log.warning(record["warning"])
        return record


def _check_data(data, split: str) -> None:
    """``ValueError`` before the model is loaded: no texts, or fewer than two classes."""
    name = data.info.get("dataset", "the dataset")
    if len(data) == 0:
        raise ValueError(f"{name}/{split} has no texts (a file with a header only, or every text empty): "
                         "nothing to sum. Fix: check the file and --text_column")
    if data.num_classes < 2:
        raise ValueError(f"{name}/{split} has one class ({data.label_names}): NTPS, the probes and the baselines "
                         "need two or more. Fix: check --label_column (or the dataset)")


def _meta(args, data, minfo: dict, layers: list[int]) -> dict:
    """The artifact's meta.json (without the run's timings), with its fingerprint: the options that change a
    number and the sha256 of the inputs (texts and labels used, data files, weights)."""
    info = data.info
    meta = {
        "model": args.model, "revision": minfo.get("revision"), "model_info": minfo,
        "model_digests": model_digests(minfo, args.lora_ckpt),
        "dtype": str(minfo.get("dtype", args.dtype)), "lora_ckpt": args.lora_ckpt,
        "dataset": info.get("dataset", args.dataset), "dataset_info": {k: v for k, v in info.items()
                                                                      if k != "row_indices"},
        "dataset_revision": args.dataset_revision, "split": args.split, "max_length": args.max_length,
        "max_samples": args.max_samples or None, "test_file": args.test_file,
        "text_column": info.get("text_column", args.text_column),
        "label_column": info.get("label_column", args.label_column),
        "data_sha256": info.get("sha256"), "data_files_sha256": info.get("file_sha256") or info.get("member_sha256"),
        "seed": args.seed, "layers": layers, "d": minfo["hidden_size"], "num_classes": data.num_classes,
        "n_states": minfo["n_states"], "label_names": data.label_names,
    }
    meta["fingerprint"] = fingerprint(meta)
    return meta


def _other_configuration(old: dict, meta: dict, out_dir: Path) -> str:
    """Why the statistics in ``out_dir`` (``old`` meta.json) are not those ``meta`` asks for."""
    if old.get("format") != FORMAT_VERSION:
        return (f"{out_dir} holds statistics of format {old.get('format')!r} (an earlier cache.py, without content "
                "digests, or an unreadable meta.json); pass --overwrite to recompute them")
    short = lambda v: v[:12] if isinstance(v, str) and len(v) == 64 else v  # noqa: E731
    diff = "; ".join(f"{k}: {short(old.get(k))!r} there, {short(meta.get(k))!r} now" for k in CONFIG_KEYS
                     if json.dumps(old.get(k), default=str) != json.dumps(meta.get(k), default=str))
    files = [(old.get("dataset_info") or {}).get("files"), (meta.get("dataset_info") or {}).get("files")]
    same_slug = (f" The dataset folder name {meta['dataset']!r} is built from the last two parts of a file path, "
                 f"so {files[0]} and {files[1]} share it." if files[0] and files[1] and files[0] != files[1] else "")
    return (f"{out_dir} holds statistics of another configuration or other inputs ({diff}).{same_slug} Pass "
            "--overwrite to replace them, or --output_dir to keep both")


def _prepare_output(args, out_dir: Path, meta: dict, run_key: dict, rank: int, world: int) -> bool:
    """True when ``out_dir`` already holds these statistics (equal fingerprints: same options and inputs);
    else clear it (``--overwrite``) and record the run in ``.partial/run.json``. :class:`OutputExistsError`
    for statistics of another configuration or an interrupted run of other settings."""
    if (out_dir / "meta.json").exists() and not args.overwrite:
        try:
            old = read_json(out_dir / "meta.json")
        except (OSError, ValueError):
            old = {}
        requested = (old.get("features") or {}).get("requested_dtype")
        features_ok = not args.save_features or ((out_dir / "features_mean.npy").exists()
                                                 and requested == args.features_dtype)
        if old.get("fingerprint") != meta["fingerprint"] or old.get("format") != FORMAT_VERSION:
            raise OutputExistsError(_other_configuration(old, meta, out_dir))
        if features_ok:
            log.info(f"up to date: {out_dir} (pass --overwrite to recompute)")
            return True
    partial = out_dir / PARTIAL_DIR
    if rank == 0 and args.overwrite and out_dir.exists():
        shutil.rmtree(partial, ignore_errors=True)
        for name in ("stats.safetensors", "meta.json", "labels.npy", "features_mean.npy", "features_last.npy"):
            with contextlib.suppress(FileNotFoundError):
                (out_dir / name).unlink()
    barrier(world)
    partial.mkdir(parents=True, exist_ok=True)
    run_file = partial / "run.json"
    if rank == 0:
        if run_file.exists() and read_json(run_file) != run_key:
            if _resumable(partial):
                raise OutputExistsError(f"{partial} holds an interrupted run with other settings "
                                        f"({read_json(run_file)}); rerun with the same arguments to resume, or "
                                        "pass --overwrite")
            shutil.rmtree(partial)  # a run that failed before its first checkpoint: nothing to resume
            partial.mkdir()
        write_json(run_file, run_key)
    barrier(world)
    return False


def _resumable(partial: Path) -> bool:
    """Whether ``partial`` holds a checkpoint (finished shards of some rank)."""
    return any(partial.glob("rank*of*.json"))


def _resume(args, acc: StatsAccumulator, partial: Path, n_texts: int, rank: int, world: int):
    """(shards this rank finished before, feature writer or None): the checkpoint is loaded into ``acc``."""
    ckpt, done_file = partial / f"rank{rank}of{world}.safetensors", partial / f"rank{rank}of{world}.json"
    done: list[int] = []
    if done_file.exists() and ckpt.exists():
        done = read_json(done_file)["shards_done"]
        if done:
            acc.load_(load_stats_file(ckpt, acc.layers))
    if not args.save_features:
        return done, None
    if rank == 0 and not (partial / "features_mean.npy.partial").exists():
        FeatureWriter(partial, len(acc.layers), n_texts, acc.d, create=True).flush()
    barrier(world)
    return done, FeatureWriter(partial, len(acc.layers), n_texts, acc.d, create=False)


def _write(args, out_dir: Path, acc: StatsAccumulator, meta: dict, data, features) -> None:
    """The artifact (rank 0): features and labels moved into place (their sha256 in meta.json), then
    stats.safetensors + meta.json."""
    partial = out_dir / PARTIAL_DIR
    if features is not None:
        with atomic_path(partial / "labels.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, data.labels.astype(np.int64))
        record = features.finalize(args.features_dtype, acc.layers)
        meta["warnings"] += [record.pop("warning")] if "warning" in record else []
        names = ["labels.npy", *record["files"]]
        record["sha256"] = {n: d["sha256"] for n, d in file_digests({n: partial / n for n in names}).items()}
        for name in names:
            os.replace(partial / name, out_dir / name)
        meta["features"] = record
    save_stats(out_dir, acc.to_stats(), meta)
    shutil.rmtree(partial, ignore_errors=True)


def main(args) -> Path:
    """Load and check the data, check and lock the output directory, then :func:`compute` (or nothing when
    the statistics are up to date)."""
    rank, world, local_rank = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend)
    device = resolve_device(f"cuda:{local_rank}" if args.device == "auto" and world > 1
                            and torch.cuda.is_available() else args.device)

    from ntps.data import load_split

    t_start = time.perf_counter()
    data = load_split(args.dataset, args.split, max_samples=args.max_samples or None, seed=args.seed,
                      text_column=args.text_column, label_column=args.label_column, test_file=args.test_file,
                      revision=args.dataset_revision, encoding=args.encoding,
                      merge_label_variants=args.merge_label_variants)
    _check_data(data, args.split)
    out_dir = run_dir(args.output_dir, args.model, data.info.get("dataset", args.dataset), args.split)
    with output_lock(out_dir, "cache.py") if rank == 0 else contextlib.nullcontext():
        try:
            compute(args, data, out_dir, device, t_start)
        except BaseException:
            partial = out_dir / PARTIAL_DIR
            if rank == 0 and partial.is_dir() and not _resumable(partial):
                shutil.rmtree(partial, ignore_errors=True)  # nothing to resume: nothing may block the next run
            raise
    return out_dir


def compute(args, data, out_dir: Path, device, t_start: float) -> None:
    """Load the model, then the forward pass and the artifact (resuming an interrupted run)."""
    from ntps.models import load_model_and_tokenizer

    rank, world, _ = dist_info()
    model, tokenizer, minfo = load_model_and_tokenizer(
        args.model, revision=args.revision, tokenizer_name=args.tokenizer_name,
        trust_remote_code=args.trust_remote_code, dtype=args.dtype, device=device, lora_ckpt=args.lora_ckpt)
    n_states, d = minfo["n_states"], minfo["hidden_size"]
    layers = parse_int_list(args.layers, n_states) or list(range(n_states))
    meta = _meta(args, data, minfo, layers)
    budget = batch_token_budget(args.max_batch_tokens, device)
    precision = resolve_precision(args.stats_precision, device)
    # the batching decides the float32 partial sums: a resumed run must use the same one
    run_key = {"fingerprint": meta["fingerprint"], "batch_size": args.batch_size, "shard_size": args.shard_size,
               "world_size": world, "save_features": args.save_features, "features_dtype": args.features_dtype,
               "n_texts": len(data), **({"max_batch_tokens": budget} if budget else {}),
               **({"stats_precision": precision} if precision != "float32" else {})}
    if _prepare_output(args, out_dir, meta, run_key, rank, world):
        return

    ids, truncated = tokenize(tokenizer, data.texts, args.max_length)
    lengths = np.array([len(x) for x in ids])
    meta["warnings"] = cover_warnings(len(data), d, log) + _one_token_warnings(lengths, args.max_length)
    shards = length_sorted_shards(lengths, args.batch_size, args.shard_size, budget)
    acc = StatsAccumulator(layers, d, data.num_classes, device=device, precision=precision)
    done, features = _resume(args, acc, out_dir / PARTIAL_DIR, len(data), rank, world)
    todo = [s for s in range(rank, len(shards), world) if s not in done]
    log.info(f"model {args.model} ({minfo.get('architecture')}, {n_states} states × d={d}, {meta['dtype']}) "
             f"on {device}; dataset {meta['dataset']}/{args.split}: {len(data)} texts, {data.num_classes} classes, "
             f"{int(lengths.sum())} tokens ({truncated} truncated to {args.max_length}); {len(shards)} shards, "
             f"{world} process(es)" + (f"; resuming after {len(done)} finished shard(s)" if done else ""))
    if args.max_samples and len(data) == args.max_samples:
        log.info(f"capped at --max_samples {args.max_samples} texts (pass --max_samples 0 for the whole split)")

    t_loop = time.perf_counter()
    computed_tokens = _forward_pass(args, model, tokenizer, ids, data, shards, todo, done, acc, features, meta,
                                    out_dir / PARTIAL_DIR / f"rank{rank}of{world}")
    loop_s = time.perf_counter() - t_loop

    if world > 1:
        acc.all_reduce_()
    if acc.n_texts != len(data) or acc.class_counts.tolist() != data.class_counts.tolist():
        raise RuntimeError(f"accounting error: {acc.n_texts} texts summed for {len(data)} in the split")
    if rank == 0:
        meta.update({"n_tokens_computed_this_run": computed_tokens, "truncated_texts": truncated,
                     "batch_size": args.batch_size, "max_batch_tokens": budget, "stats_precision": precision,
                     "world_size": world, "environment": environment_info(),
                     "seconds": {"total": round(time.perf_counter() - t_start, 2), "loop": round(loop_s, 2)},
                     "features": None})
        _write(args, out_dir, acc, meta, data, features)
        pad = computed_tokens / max(1, sum(int(lengths[i]) for s in todo for b in shards[s] for i in b))
        log.info(f"{acc.n_texts} texts, {acc.n_tokens} tokens, {len(layers)} layers in {loop_s:.1f}s "
                 f"(padding overhead {pad:.3f}); wrote {out_dir}")
    barrier(world)
    if world > 1:
        torch.distributed.destroy_process_group()


def _one_token_warnings(lengths: np.ndarray, max_length: int) -> list[str]:
    """A warning (logged) when every text is one token long: C0 and C1 stay zero."""
    if len(lengths) and (lengths == 1).all():
        text = ("every text is one token long after tokenisation: texts of one token add nothing to C0/C1, so "
                "K_sweep cannot score this artifact (the baselines can). Fix: longer texts"
                + (" or a larger --max_length" if max_length == 1 else ""))
        log.warning(text)
        return [text]
    return []


def _forward_pass(args, model, tokenizer, ids, data, shards, todo, done, acc, features, meta, ckpt) -> int:
    """Sum the shards ``todo`` into ``acc`` (checkpoints to ``ckpt``.safetensors/.json); the tokens computed."""
    labels_t, net, computed_tokens = torch.as_tensor(data.labels), decoder_of(model), 0
    t_ckpt = time.perf_counter()
    rank, world, _ = dist_info()
    with tqdm(total=sum(len(shards[s]) for s in todo), desc=f"cache [{meta['dataset']}]", unit="batch",
              disable=rank != 0, file=sys.stderr) as bar:
        for s in todo:
            for idx, feats, n in forward_batches(net, ids, labels_t, shards[s], acc, pad_id=tokenizer.pad_token_id,
                                                 n_states=meta["n_states"], return_features=features is not None):
                computed_tokens += n
                if features is not None:
                    features.write(idx, *feats)
                bar.update(1)
            if features is not None:
                features.flush()
            acc.flush()  # float64 totals at shard boundaries: same sums however shards are dealt to ranks
            done.append(s)
            last_shard = s == todo[-1] and world == 1  # the final artifact follows at once
            if not last_shard and time.perf_counter() - t_ckpt >= args.checkpoint_interval:
                save_stats_file(ckpt.with_suffix(".safetensors"), acc.to_stats(), meta)
                write_json(ckpt.with_suffix(".json"), {"shards_done": done})
                t_ckpt = time.perf_counter()
    return computed_tokens


def run(argv=None) -> None:
    """``python cache.py`` and the console command ``ntps-cache``: :func:`main` behind :func:`ntps.cli.run`
    (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "cache.py", argv)


if __name__ == "__main__":
    run()
