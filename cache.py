"""Stream one forward pass over a labelled split and accumulate the per-layer sums of SPEC §1.

Writes ``{output_dir}/{model_slug}/{dataset_slug}/{split}/stats.safetensors`` + ``meta.json``
(read by K_sweep.py), and with ``--save_features`` per-text mean-pooled and last-token features
per layer (``features_mean.npy`` / ``features_last.npy``, shape (layers, N, d), memory-mappable,
rows in the order of ``labels.npy``).

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
from ntps.accumulate import PRECISIONS, StatsAccumulator, resolve_precision
from ntps.artifacts import ArtifactError, fingerprint, load_stats_file, read_meta, save_stats, save_stats_file
from ntps.cli import parse_int_list, resolve_device
from ntps.io import OutputExistsError, atomic_path, environment_info, read_json, run_dir, write_json
from ntps.text import batch_token_budget, decoder_of, length_sorted_shards, pad_batch, tokenize

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
    g.add_argument("--batch_size", type=int, default=32, help="texts per forward pass (without --max_batch_tokens)")
    g.add_argument("--max_batch_tokens", type=int, default=None,
                   help="batches of length-sorted texts up to this many padded tokens (batch size × longest "
                        "length) instead of --batch_size texts; default: off on the CPU, 16384 on CUDA; 0 = off")
    g.add_argument("--stats_precision", default="auto", choices=["auto", *PRECISIONS],
                   help="inputs of the per-batch statistic GEMMs (float32 sums, float64 totals either way); "
                        "tf32/bf16 use tensor cores on CUDA (README, Benchmarks); auto = float32")
    g.add_argument("--shard_size", type=int, default=1024, help="texts per resumable shard")
    g.add_argument("--checkpoint_interval", type=float, default=300,
                   help="seconds between resume checkpoints (written after a finished shard; 0 = after every "
                        "shard). A checkpoint holds 3·d² float64 per layer: 9 GB for a 7B model")
    g.add_argument("--save_features", action="store_true",
                   help="also store per-text mean-pooled and last-token features per layer")
    g.add_argument("--features_dtype", default="float16", choices=["float16", "float32"])
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
    """(layers, N, d) memory-mapped .npy files written in place as batches finish."""

    def __init__(self, directory: Path, n_layers: int, n: int, d: int, dtype: str, create: bool):
        self.paths = {k: directory / f"features_{k}.npy.partial" for k in ("mean", "last")}
        mode = "w+" if create else "r+"
        self.maps = {k: np.lib.format.open_memmap(p, mode=mode, dtype=dtype, shape=(n_layers, n, d))
                     for k, p in self.paths.items()}

    def write(self, idx: np.ndarray, mean: torch.Tensor, last: torch.Tensor) -> None:
        self.maps["mean"][:, idx] = mean.cpu().numpy()
        self.maps["last"][:, idx] = last.cpu().numpy()

    def flush(self) -> None:
        for m in self.maps.values():
            m.flush()

    def finalize(self) -> None:
        self.flush()
        for p in self.paths.values():
            os.replace(p, p.with_suffix(""))  # features_mean.npy


def _meta(args, data, minfo: dict, layers: list[int]) -> dict:
    """The artifact's meta.json (without the run's timings), with its fingerprint."""
    meta = {
        "model": args.model, "revision": minfo.get("revision"), "model_info": minfo,
        "dtype": str(minfo.get("dtype", args.dtype)), "lora_ckpt": args.lora_ckpt,
        "dataset": data.info.get("dataset", args.dataset), "dataset_info": {k: v for k, v in data.info.items()
                                                                           if k != "row_indices"},
        "dataset_revision": args.dataset_revision, "split": args.split, "max_length": args.max_length,
        "max_samples": args.max_samples or None,
        "seed": args.seed, "layers": layers, "d": minfo["hidden_size"], "num_classes": data.num_classes,
        "n_states": minfo["n_states"], "label_names": data.label_names,
    }
    meta["fingerprint"] = fingerprint(meta)
    return meta


def _prepare_output(args, out_dir: Path, meta: dict, run_key: dict, rank: int, world: int) -> bool:
    """True when ``out_dir`` already holds these statistics; else clear it (``--overwrite``) and record the
    run in ``.partial/run.json``. :class:`OutputExistsError` for statistics or an interrupted run of
    other settings."""
    if (out_dir / "meta.json").exists() and not args.overwrite:
        try:
            old = read_meta(out_dir)
        except ArtifactError:
            old = {}
        features_ok = not args.save_features or (out_dir / "features_mean.npy").exists()
        if old.get("fingerprint") == meta["fingerprint"] and features_ok:
            log.info(f"up to date: {out_dir} (pass --overwrite to recompute)")
            return True
        if old.get("fingerprint") != meta["fingerprint"]:
            raise OutputExistsError(
                f"{out_dir} holds statistics of another configuration (model {old.get('model')}, dataset "
                f"{old.get('dataset')}, layers, max_samples or dtype differ); pass --overwrite to replace them or "
                "--output_dir to keep both")
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
            raise OutputExistsError(f"{partial} holds an interrupted run with other settings ({read_json(run_file)}); "
                                    "rerun with the same arguments to resume, or pass --overwrite")
        write_json(run_file, run_key)
    barrier(world)
    return False


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
        FeatureWriter(partial, len(acc.layers), n_texts, acc.d, args.features_dtype, create=True).flush()
    barrier(world)
    return done, FeatureWriter(partial, len(acc.layers), n_texts, acc.d, args.features_dtype, create=False)


def _write(args, out_dir: Path, acc: StatsAccumulator, meta: dict, data, features) -> None:
    """The artifact (rank 0): features and labels moved into place, then stats.safetensors + meta.json."""
    partial = out_dir / PARTIAL_DIR
    if features is not None:
        with atomic_path(out_dir / "labels.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, data.labels.astype(np.int64))
        features.finalize()
        for k in ("mean", "last"):
            os.replace(partial / f"features_{k}.npy", out_dir / f"features_{k}.npy")
    save_stats(out_dir, acc.to_stats(), meta)
    shutil.rmtree(partial, ignore_errors=True)


def main(args) -> Path:
    rank, world, local_rank = dist_info()
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and args.device != "cpu" else "gloo"
        torch.distributed.init_process_group(backend)
    device = resolve_device(f"cuda:{local_rank}" if args.device == "auto" and world > 1
                            and torch.cuda.is_available() else args.device)

    from ntps.data import load_split
    from ntps.models import load_model_and_tokenizer

    t_start = time.perf_counter()
    data = load_split(args.dataset, args.split, max_samples=args.max_samples or None, seed=args.seed,
                      text_column=args.text_column, label_column=args.label_column, test_file=args.test_file,
                      revision=args.dataset_revision)
    model, tokenizer, minfo = load_model_and_tokenizer(
        args.model, revision=args.revision, tokenizer_name=args.tokenizer_name,
        trust_remote_code=args.trust_remote_code, dtype=args.dtype, device=device, lora_ckpt=args.lora_ckpt)
    n_states, d = minfo["n_states"], minfo["hidden_size"]
    layers = parse_int_list(args.layers, n_states) or list(range(n_states))
    out_dir = run_dir(args.output_dir, args.model, data.info.get("dataset", args.dataset), args.split)
    meta = _meta(args, data, minfo, layers)
    budget = batch_token_budget(args.max_batch_tokens, device)
    precision = resolve_precision(args.stats_precision, device)
    # the batching decides the float32 partial sums: a resumed run must use the same one
    run_key = {"fingerprint": meta["fingerprint"], "batch_size": args.batch_size, "shard_size": args.shard_size,
               "world_size": world, "save_features": args.save_features, "features_dtype": args.features_dtype,
               "n_texts": len(data), **({"max_batch_tokens": budget} if budget else {}),
               **({"stats_precision": precision} if precision != "float32" else {})}
    if _prepare_output(args, out_dir, meta, run_key, rank, world):
        return out_dir

    ids, truncated = tokenize(tokenizer, data.texts, args.max_length)
    lengths = np.array([len(x) for x in ids])
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

    ckpt = out_dir / PARTIAL_DIR / f"rank{rank}of{world}"  # .safetensors (sums) and .json (shards done)
    labels_t, net, computed_tokens = torch.as_tensor(data.labels), decoder_of(model), 0
    t_loop = t_ckpt = time.perf_counter()
    with tqdm(total=sum(len(shards[s]) for s in todo), desc=f"cache [{meta['dataset']}]", unit="batch",
              disable=rank != 0, file=sys.stderr) as bar, torch.inference_mode():
        for s in todo:
            for idx in shards[s]:
                input_ids, mask = pad_batch([ids[i] for i in idx], tokenizer.pad_token_id, "cpu")  # host mask
                computed_tokens += input_ids.numel()
                hs = net(input_ids=input_ids.to(device), attention_mask=mask.to(device), output_hidden_states=True,
                         use_cache=False).hidden_states
                if len(hs) != n_states:
                    raise RuntimeError(f"model returned {len(hs)} hidden states, config says {n_states}")
                feats = acc.add_batch(hs, mask, labels_t[idx], return_features=features is not None)
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
                     "features": ({"files": ["features_mean.npy", "features_last.npy"], "layout": "(layers, N, d)",
                                   "dtype": args.features_dtype} if features is not None else None)})
        _write(args, out_dir, acc, meta, data, features)
        pad = computed_tokens / max(1, sum(int(lengths[i]) for s in todo for b in shards[s] for i in b))
        log.info(f"{acc.n_texts} texts, {acc.n_tokens} tokens, {len(layers)} layers in {loop_s:.1f}s "
                 f"(padding overhead {pad:.3f}); wrote {out_dir}")
    barrier(world)
    if world > 1:
        torch.distributed.destroy_process_group()
    return out_dir


if __name__ == "__main__":
    cli.run(main, parse_args, "cache.py")
