"""Classifier training over a causal LM: the paper's linear probe, LoRA and from-scratch runs (SPEC §3).

One model, one loop, three modes:

``SequenceClassifier`` = the LM's decoder without its LM head -> mean pooling of the last hidden
state over the attention mask (or the last real token) -> dropout 0.05 -> ``Linear(d, C)``.

==========  ==========================================  =============================================
mode        trained                                     paper defaults (every one a flag)
==========  ==========================================  =============================================
linear      the head only (frozen LM, bf16 on CUDA)     AdamW lr 1e-4, batch 64, 50 epochs
lora        PEFT LoRA on q/k/v (r 32, α 32, dropout     Adafactor lr 1e-4 (relative_step=False,
            0.05, all blocks) + the head                scale_parameter=False, warmup_init=False,
                                                        clip 1.0, decay −0.8, wd 1e-5), cosine with
                                                        5 % warm-up, 5000 steps
scratch     every weight of a randomly initialised      as lora, 10000 steps
            model of the same config, + the head
==========  ==========================================  =============================================

Settings the paper does not state, and our choice: batch 64 for lora/scratch too; the cosine schedule
with 5 % warm-up also for the linear probe (``--lr_scheduler constant`` for none); AdamW weight decay
0 (transformers' Trainer default); no gradient-norm clipping (Adafactor clips its update RMS itself);
final-step test accuracy (no selection on the test split). The linear mode computes the pooled
features of the frozen model once (the LM runs in eval mode and the dropout acts after pooling, so
this is the same optimisation problem as a forward pass per step, only 50x cheaper).

Outputs in the run directory ``{output_dir}/{model}/{dataset}/{mode}/`` (``--output_dir`` is the output
root, default ``outputs``): ``log.jsonl`` (train loss and lr every ``--logging_steps``, test metrics
every ``--eval_steps``), ``results.json``
(test_accuracy, balanced_accuracy, test_loss, steps, wall_time_s, config, environment, ...),
``head.safetensors`` (+ ``adapter/`` for lora, ``model/`` for scratch), and resumable checkpoints
``checkpoints/step-NNNNNNN/`` (trainable weights in safetensors; optimizer, scheduler and RNG state
via ``torch.save`` of tensors and plain values, read back with ``weights_only=True``; step and run
settings in JSON). ``--resume_from_checkpoint latest`` (or a path) continues a run and ends with the
same weights as an uninterrupted one: the batch order is a function of (``--training_seed``, epoch),
and the RNG state (dropout) is restored. ``--seed`` is the seed of the text subsets, as in cache.py.
The settings travel as a validated :class:`TrainConfig`; :func:`train` = :func:`prepare`, :func:`fit`,
:func:`finish`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import cli
from .io import OutputExistsError, atomic_path, environment_info, read_json, run_dir, slugify, write_json
from .provenance import changed_inputs, check_same_source, file_digests
from .text import decoder_of, pad_batch, tokenize

__all__ = ["MODES", "DEFAULTS", "TrainConfig", "SequenceClassifier", "add_training_args", "decoder_of",
           "pool_hidden", "build_optimizer", "build_scheduler", "evaluate", "train", "prepare", "fit", "finish",
           "trainable_state", "find_checkpoint", "CHECKPOINT_DIR"]

log = logging.getLogger(__name__)

MODES = ("linear", "lora", "scratch")
CHECKPOINT_DIR = "checkpoints"
GROUP_BATCHES = 50  # --group_by_length window, in batches (the HF Trainer uses 50 as well)

#: Per-mode defaults (SPEC §3); ``None`` weight decay resolves per optimizer (Adafactor 1e-5, AdamW 0).
DEFAULTS = {
    "linear": {"optimizer": "adamw", "lr": 1e-4, "batch_size": 64, "epochs": 50, "max_steps": -1,
               "dtype": "auto", "eval_steps": 0, "save_steps": 0},
    "lora": {"optimizer": "adafactor", "lr": 1e-4, "batch_size": 64, "epochs": 1, "max_steps": 5000,
             "dtype": "auto", "eval_steps": 500, "save_steps": 500},
    "scratch": {"optimizer": "adafactor", "lr": 1e-4, "batch_size": 64, "epochs": 1, "max_steps": 10000,
                "dtype": "float32", "eval_steps": 1000, "save_steps": 1000},
}
ADAFACTOR_WEIGHT_DECAY = 1e-5

#: Settings that may change between an interrupted run and its resumption.
_RESUME_FREE = {"resume_from_checkpoint", "stop_after_steps", "eval_steps", "save_steps", "save_total_limit",
                "logging_steps", "report_to", "wandb_project", "wandb_entity", "run_name", "output_dir",
                "overwrite", "device", "eval_batch_size", "num_threads", "log_dir", "result_path"}
#: Settings of one mode only (absent from the run key and the config of the others).
_MODE_FIELDS = {"lora": ("lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_start_block"),
                "linear": ("features_dir", "test_features_dir")}
#: The run key (results.json, checkpoints) keeps the names the settings had before the flags were renamed,
#: so earlier runs stay up to date and resumable.
_RUN_KEY_NAMES = {"training_seed": "seed", "seed": "data_seed", "lora_start_block": "start_layer"}


# ----------------------------------------------------------------------------------------------
# Arguments and the validated configuration
# ----------------------------------------------------------------------------------------------


def add_training_args(p: argparse.ArgumentParser, mode: str) -> argparse.ArgumentParser:
    """Add every flag of a training script (defaults of ``mode``) to ``p``, with the authors' spellings."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    d = DEFAULTS[mode]
    g = cli.add_model_args(p, dtype_default=d["dtype"],
                           dtype_help="weights of the LM (auto: bfloat16 on CUDA where supported, float32 on CPU)")
    cli.add_device_arg(g)
    g.add_argument("--pooling", choices=["mean", "last"], default="mean",
                   help="mean over the attention mask (the paper) or the last real token")
    g.add_argument("--head_dropout", type=float, default=0.05, help="dropout on the pooled representation")
    g.add_argument("--gradient_checkpointing", action="store_true", help="trade compute for activation memory")
    if mode == "lora":
        _add_lora_args(p)
    g = cli.add_data_args(p, split=None, max_samples_help="seeded class-stratified cap on train texts; 0 = all",
                          max_eval_samples=True,
                          seed_help="seed of the class-stratified train and test subsets (as cache.py)")
    if mode == "linear":
        g.add_argument("--features_dir", default=None,
                       help="train on the pooled last-hidden-state features of this cache.py --save_features "
                            "directory instead of running the model (no second forward pass)")
        g.add_argument("--test_features_dir", default=None, help="the test split's features (with --features_dir)")
    _add_optimisation_args(p, d)
    _add_run_args(p, d, mode)
    _add_authors_flags(p, mode)
    return p


def _add_lora_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("LoRA")
    g.add_argument("--lora_r", type=int, default=32, help="LoRA rank r")
    g.add_argument("--lora_alpha", type=float, default=32)
    g.add_argument("--lora_dropout", type=float, default=0.05)
    g.add_argument("--lora_target_modules", default="auto",
                   help="comma-separated module names; auto = the attention q/k/v projections "
                        "(ntps.models.lora_target_modules: q_proj,k_proj,v_proj; qkv_proj for OpenELM)")
    g.add_argument("--lora_start_block", type=int, default=0,
                   help="adapt only decoder blocks with module index >= K (0-based, as in model.layers.K). Blocks "
                        "are not hidden states: block i produces hidden state i+1 (hidden state 0 = embedding "
                        "output); 0 = all blocks (the paper)")


def _add_optimisation_args(p: argparse.ArgumentParser, d: dict) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=["adamw", "adafactor"], default=d["optimizer"])
    g.add_argument("--lr", type=float, default=d["lr"], help="peak learning rate")
    g.add_argument("--weight_decay", type=float, default=None,
                   help=f"default: {ADAFACTOR_WEIGHT_DECAY:g} with Adafactor (paper), 0 with AdamW")
    g.add_argument("--adam_betas", default="0.9,0.999")
    g.add_argument("--adam_eps", type=float, default=1e-8)
    g.add_argument("--adafactor_clip_threshold", type=float, default=1.0)
    g.add_argument("--adafactor_decay_rate", type=float, default=-0.8)
    g.add_argument("--lr_scheduler", choices=["cosine", "linear", "constant"], default="cosine")
    g.add_argument("--warmup_ratio", type=float, default=0.05, help="fraction of the steps spent warming up")
    g.add_argument("--max_grad_norm", type=float, default=0.0, help="gradient-norm clipping; 0 = off")
    g.add_argument("--batch_size", type=int, default=d["batch_size"], help="texts per optimisation step")
    g.add_argument("--gradient_accumulation_steps", type=int, default=1,
                   help="split each step's batch into this many micro-batches (same result, less memory)")
    g.add_argument("--epochs", type=float, default=d["epochs"], help="used when --max_steps <= 0")
    g.add_argument("--max_steps", type=int, default=d["max_steps"], help="optimisation steps; <= 0: use --epochs")
    g.add_argument("--training_seed", type=int, default=42,
                   help="seed of the head/LoRA/model initialisation, dropout and batch order (--seed is the "
                        "subset seed)")
    g.add_argument("--group_by_length", action=argparse.BooleanOptionalAction, default=True,
                   help=f"batches of texts of similar length (random windows of {GROUP_BATCHES} batches "
                        "sorted by length, batch order shuffled): less padding, same epochs")
    g.add_argument("--bf16", choices=["auto", "true", "false"], default="auto",
                   help="bfloat16 autocast; auto = on for CUDA devices that support bfloat16")


def _add_run_args(p: argparse.ArgumentParser, d: dict, mode: str) -> None:
    g = p.add_argument_group("evaluation, logging, checkpoints")
    g.add_argument("--eval_steps", type=int, default=d["eval_steps"],
                   help="evaluate on the test split every N steps (0 = only at the end)")
    g.add_argument("--eval_batch_size", type=int, default=64)
    g.add_argument("--logging_steps", type=int, default=10, help="log the train loss every N steps")
    g.add_argument("--save_steps", type=int, default=d["save_steps"],
                   help="write a resumable checkpoint every N steps (0 = only at the end)")
    g.add_argument("--save_total_limit", type=int, default=2, help="checkpoints kept (the most recent)")
    g.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint directory, or 'latest'")
    g.add_argument("--stop_after_steps", type=int, default=None,
                   help="stop after this global step with a resumable checkpoint (time-sliced / "
                        "preemptible jobs)")
    g.add_argument("--report_to", choices=["none", "wandb"], default="none")
    g.add_argument("--wandb_project", default="ntps")
    g.add_argument("--wandb_entity", default=None, help="wandb team or user (with --report_to wandb)")
    g.add_argument("--run_name", default=None)
    g.add_argument("--num_threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    g = cli.add_output_args(p, help=f"output root: the run goes to {{output_dir}}/{{model}}/{{dataset}}/{mode}",
                            overwrite="discard previous results and checkpoints", log_dir=True)
    g.add_argument("--result_path", default=None,
                   help="also write the results JSON here (a .json file, or a directory)")


def _add_authors_flags(p: argparse.ArgumentParser, mode: str) -> None:
    cli.alias(p, "--learning_rate", "--lr")
    cli.alias(p, "--n_epochs", "--epochs")
    cli.alias(p, "--n_steps", "--max_steps")
    cli.alias(p, "--token_selection", "--pooling", convert=lambda v: v.removesuffix("_token"))
    if mode == "lora":
        cli.alias(p, "--lora_rank", "--lora_r")
        cli.alias(p, "--start_layer", "--lora_start_block")
    else:
        cli.ignore(p, "--lora_rank", f"no LoRA in the {mode} mode")
        cli.ignore(p, "--start_layer", f"no LoRA in the {mode} mode")
    cli.ignore(p, "--num_workers", "batches are built in the main process")


@dataclass(kw_only=True)
class TrainConfig:
    """Every setting of one training run: the flags of :func:`add_training_args` (same names), checked.

    Build it with :meth:`from_args` (parsed flags) or :meth:`from_argv` (a command line); raises
    ``ValueError`` for an unknown mode, a batch size that is not a positive multiple of the gradient
    accumulation, non-positive step counts, and features flags that do not go together.
    """

    mode: str
    model: str
    revision: str | None
    tokenizer_name: str | None
    trust_remote_code: bool
    dtype: str
    device: str
    pooling: str
    head_dropout: float
    gradient_checkpointing: bool
    lora_r: int | None = None
    lora_alpha: float | None = None
    lora_dropout: float | None = None
    lora_target_modules: str | None = None
    lora_start_block: int | None = None
    dataset: str
    dataset_revision: str | None
    text_column: str | None
    label_column: str | None
    test_file: str | None
    encoding: str = "utf-8"
    merge_label_variants: bool = False
    max_samples: int | None
    max_eval_samples: int | None
    seed: int
    max_length: int
    features_dir: str | None = None
    test_features_dir: str | None = None
    optimizer: str
    lr: float
    weight_decay: float | None
    adam_betas: str
    adam_eps: float
    adafactor_clip_threshold: float
    adafactor_decay_rate: float
    lr_scheduler: str
    warmup_ratio: float
    max_grad_norm: float
    batch_size: int
    gradient_accumulation_steps: int
    epochs: float
    max_steps: int
    training_seed: int
    group_by_length: bool
    bf16: str
    eval_steps: int
    eval_batch_size: int
    logging_steps: int
    save_steps: int
    save_total_limit: int
    resume_from_checkpoint: str | None
    stop_after_steps: int | None
    report_to: str
    wandb_project: str
    wandb_entity: str | None
    run_name: str | None
    num_threads: int | None
    output_dir: str
    overwrite: bool
    log_dir: str | None
    result_path: str | None

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        accum = self.gradient_accumulation_steps
        if self.batch_size < 1 or accum < 1 or self.batch_size % accum:
            raise ValueError("--batch_size must be a positive multiple of --gradient_accumulation_steps")
        for flag in ("eval_batch_size", "logging_steps"):
            if getattr(self, flag) < 1:
                raise ValueError(f"--{flag} must be positive")
        if self.max_steps <= 0 and not self.epochs > 0:
            raise ValueError("--epochs must be positive when --max_steps <= 0")
        if self.mode == "lora" and self.lora_start_block < 0:
            raise ValueError("--lora_start_block must be >= 0 (0 = all decoder blocks)")
        if self.features_dir and not self.test_features_dir:
            raise ValueError("--features_dir needs --test_features_dir (the test split's features)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, mode: str) -> TrainConfig:
        """The configuration of parsed :func:`add_training_args` flags (``TypeError`` for an unknown one)."""
        return cls(mode=mode, **vars(args))

    @classmethod
    def from_argv(cls, mode: str, argv: list[str]) -> TrainConfig:
        """The configuration of a training command line of ``mode`` (defaults of that mode)."""
        p = add_training_args(cli.parser(f"{mode}", None), mode)
        return cls.from_args(cli.parse(p, argv), mode)

    def config(self) -> dict:
        """The settings of this mode as a plain dict (``results.json["config"]``, wandb)."""
        other = {f for m, fs in _MODE_FIELDS.items() if m != self.mode for f in fs}
        return {k: v for k, v in asdict(self).items() if k not in other}

    def run_key(self) -> dict:
        """The settings a finished or resumed run must share with this one (recorded in results.json and
        every checkpoint)."""
        items = {_RUN_KEY_NAMES.get(k, k): v for k, v in self.config().items() if k not in _RESUME_FREE}
        return {"mode": self.mode, **dict(sorted(items.items()))}


# ----------------------------------------------------------------------------------------------
# The classifier
# ----------------------------------------------------------------------------------------------


def pool_hidden(hidden: torch.Tensor, mask: torch.Tensor, pooling: str = "mean") -> torch.Tensor:
    """(B, T, d) hidden states, (B, T) mask -> (B, d) float32: mean over real tokens, or the last real one
    (found from the mask, so either padding side works)."""
    m = mask.to(hidden.device)
    if pooling == "mean":
        mf = m.to(torch.float32).unsqueeze(-1)
        return (hidden.float() * mf).sum(1) / mf.sum(1).clamp_min(1.0)
    if pooling == "last":
        T = m.shape[1]
        last = T - 1 - m.flip(1).to(torch.long).argmax(1)
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last].float()
    raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")


class SequenceClassifier(nn.Module):
    """Decoder (no LM head) -> pooled last hidden state -> dropout -> ``Linear(d, C)``.

    ``forward(input_ids, attention_mask)`` returns (B, C) float32 logits; ``forward(features=...)``
    applies only dropout and head to precomputed pooled features (B, d).
    """

    def __init__(self, backbone: nn.Module, hidden_size: int, num_classes: int, *, pooling: str = "mean",
                 dropout: float = 0.05):
        super().__init__()
        if pooling not in ("mean", "last"):
            raise ValueError(f"pooling must be 'mean' or 'last', got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, num_classes)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
        return pool_hidden(hidden, attention_mask, self.pooling)

    def forward(self, input_ids=None, attention_mask=None, *, features=None) -> torch.Tensor:
        if features is None:
            features = self.pool(input_ids, attention_mask)
        return self.head(self.dropout(features.float()))


def trainable_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Detached CPU copies of the parameters with ``requires_grad`` (names as in ``named_parameters``)."""
    return {n: p.detach().to("cpu").clone().contiguous()
            for n, p in module.named_parameters() if p.requires_grad}


# ----------------------------------------------------------------------------------------------
# Optimiser, schedule, precision
# ----------------------------------------------------------------------------------------------


def build_optimizer(params, name: str, lr: float, weight_decay: float | None = None, *,
                    betas=(0.9, 0.999), eps: float = 1e-8, clip_threshold: float = 1.0,
                    decay_rate: float = -0.8) -> torch.optim.Optimizer:
    """AdamW, or the paper's Adafactor with an external learning rate (relative_step=False,
    scale_parameter=False, warmup_init=False)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("no trainable parameters")
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps,
                                 weight_decay=0.0 if weight_decay is None else weight_decay)
    if name == "adafactor":
        from transformers.optimization import Adafactor

        return Adafactor(params, lr=lr, relative_step=False, scale_parameter=False, warmup_init=False,
                         clip_threshold=clip_threshold, decay_rate=decay_rate,
                         weight_decay=ADAFACTOR_WEIGHT_DECAY if weight_decay is None else weight_decay)
    raise ValueError(f"optimizer must be 'adamw' or 'adafactor', got {name!r}")


def build_scheduler(optimizer, name: str, warmup_steps: int, total_steps: int):
    """transformers' cosine / linear / constant schedule with linear warm-up."""
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    if name == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if name == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup_steps, total_steps)
    if name == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup_steps)
    raise ValueError(f"unknown lr_scheduler {name!r}")


def bf16_enabled(choice: str, device: torch.device) -> bool:
    """``auto``: on for CUDA devices with bfloat16; ``true`` elsewhere is an error."""
    supported = device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if choice == "true" and not supported:
        raise ValueError(f"--bf16 true: bfloat16 autocast needs a CUDA device with bf16 support "
                         f"(device {device})")
    return supported and choice != "false"


def _autocast(enabled: bool, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------


def batch_indices(n: int, batch_size: int, step: int, seed: int, lengths=None,
                  group_batches: int = GROUP_BATCHES) -> np.ndarray:
    """Texts of global step ``step`` (0-based): a fresh seeded permutation every epoch, batches in
    order, the last one of an epoch possibly smaller. A pure function of its arguments, so a resumed
    run draws the same batches.

    With ``lengths`` (tokens per text) the batches are length-grouped, as ``group_by_length`` of the
    HF Trainer: the permutation is cut into windows of ``group_batches`` batches, each window sorted
    by length (longest first) and cut into batches, and the batches of the epoch are shuffled. Every
    text is still seen once per epoch and batch composition stays random, with far less padding.
    """
    per_epoch = math.ceil(n / batch_size)
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).numpy()
    if lengths is None:
        return perm[pos * batch_size: (pos + 1) * batch_size]
    lengths = np.asarray(lengths)
    window = batch_size * max(1, group_batches)
    perm = np.concatenate([w[np.argsort(-lengths[w], kind="stable")]
                           for w in np.split(perm, range(window, n, window))])
    batches = np.split(perm, range(batch_size, n, batch_size))
    return batches[int(torch.randperm(per_epoch, generator=g)[pos])]


class _Inputs:
    """Train or test inputs: token ids (forward through the LM) or precomputed pooled features."""

    def __init__(self, ids=None, features=None, labels=None, pad_id=0):
        self.ids, self.features, self.pad_id = ids, features, pad_id
        self.labels = torch.as_tensor(labels, dtype=torch.long)

    def __len__(self):
        return len(self.labels)

    def logits(self, clf: SequenceClassifier, idx, device) -> torch.Tensor:
        if self.features is not None:
            return clf(features=self.features[torch.as_tensor(idx)].to(device))
        input_ids, mask = pad_batch([self.ids[i] for i in idx], self.pad_id, device)
        return clf(input_ids, mask)


@torch.no_grad()
def _pooled_features(clf: SequenceClassifier, ids, pad_id, device, batch_size, amp) -> torch.Tensor:
    order = np.argsort([len(x) for x in ids], kind="stable")
    out = torch.empty(len(ids), clf.head.in_features)
    for s in range(0, len(ids), batch_size):
        idx = order[s: s + batch_size]
        input_ids, mask = pad_batch([ids[i] for i in idx], pad_id, device)
        with _autocast(amp, device):
            out[torch.as_tensor(idx)] = clf.pool(input_ids, mask).float().cpu()
    return out


@torch.no_grad()
def evaluate(clf: SequenceClassifier, inputs: _Inputs, device, batch_size: int, num_classes: int,
             amp: bool = False) -> dict:
    """Loss, accuracy and balanced accuracy (mean recall over the classes present) on ``inputs``."""
    was_training = clf.training
    clf.eval()
    n = len(inputs)
    lengths = [len(x) for x in inputs.ids] if inputs.ids is not None else [0] * n
    order = np.argsort(lengths, kind="stable")
    preds = np.empty(n, dtype=np.int64)
    loss_sum = 0.0
    for s in range(0, n, batch_size):
        idx = order[s: s + batch_size]
        with _autocast(amp, device):
            logits = inputs.logits(clf, idx, device).float()
        y = inputs.labels[torch.as_tensor(idx)].to(logits.device)
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        preds[idx] = logits.argmax(1).cpu().numpy()
    clf.train(was_training)
    y = inputs.labels.numpy()
    recalls = [float(np.mean(preds[y == k] == k)) for k in range(num_classes) if np.any(y == k)]
    return {"loss": loss_sum / max(n, 1), "accuracy": float(np.mean(preds == y)) if n else float("nan"),
            "balanced_accuracy": float(np.mean(recalls)) if recalls else float("nan"), "n": int(n)}


# ----------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------


def _rng_state() -> dict:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch_cpu"])
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["torch_cuda"])


def save_checkpoint(root: Path, clf, optimizer, scheduler, step: int, run_key: dict, extra: dict) -> Path:
    """``root/step-NNNNNNN/``: trainable.safetensors, training_state.pt, trainer_state.json, written
    into a hidden directory and renamed into place (a killed run never leaves half a checkpoint)."""
    from safetensors.torch import save_file

    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(clf), str(tmp / "trainable.safetensors"), metadata={"step": str(step)})
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                "step": step}, tmp / "training_state.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, "run_key": run_key, **extra}, indent=2,
                                                       default=str) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if (p / "trainer_state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def find_checkpoint(output_dir: Path, spec: str) -> Path:
    """``latest`` -> the newest complete checkpoint of ``output_dir``; else the given directory."""
    if spec == "latest":
        found = list_checkpoints(output_dir / CHECKPOINT_DIR)
        if not found:
            raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint under "
                                    f"{output_dir / CHECKPOINT_DIR}")
        return found[-1]
    path = Path(spec)
    if not (path / "trainer_state.json").is_file():
        raise FileNotFoundError(f"{spec} is not a checkpoint directory (no trainer_state.json)")
    return path


def load_checkpoint(path: Path, clf, optimizer, scheduler, run_key: dict) -> dict:
    """Restore trainable weights, optimizer, scheduler and RNG; return trainer_state.json."""
    from safetensors.torch import load_file

    state = read_json(path / "trainer_state.json")
    diff = {k: (state["run_key"].get(k), v) for k, v in run_key.items() if state["run_key"].get(k) != v}
    if diff:
        raise ValueError(f"checkpoint {path} was written with other settings: "
                         + ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items()))
    weights = load_file(str(path / "trainable.safetensors"))
    params = dict(clf.named_parameters())
    trainable = {n for n, p in params.items() if p.requires_grad}
    if set(weights) != trainable:
        raise ValueError(f"checkpoint {path} holds other trainable tensors than this model "
                         f"(missing {sorted(trainable - set(weights))[:3]}, "
                         f"extra {sorted(set(weights) - trainable)[:3]})")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t)
    blob = torch.load(path / "training_state.pt", weights_only=True, map_location="cpu")
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    _set_rng_state(blob["rng"])
    return state


# ----------------------------------------------------------------------------------------------
# Logging
# ----------------------------------------------------------------------------------------------


class RunLog:
    """``log.jsonl`` (one JSON object per line) and, with ``--report_to wandb``, wandb."""

    def __init__(self, path: Path, report_to: str, config: dict, project: str, name: str | None,
                 resume_step: int | None, entity: str | None = None):
        self.path = path
        if resume_step is not None and path.is_file():  # drop entries a resumed run will write again
            kept = [ln for ln in path.read_text().splitlines()
                    if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(ln + "\n" for ln in kept))
        elif resume_step is None:
            path.unlink(missing_ok=True)
        self.wandb = None
        if report_to == "wandb":
            try:
                import wandb
            except ImportError as e:
                raise ValueError("--report_to wandb needs the wandb package (pip install wandb); "
                                 "use --report_to none to log to log.jsonl only") from e
            self.wandb = wandb.init(project=project, entity=entity, name=name, config=config, resume="allow")

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=record.get("step"))

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


# ----------------------------------------------------------------------------------------------
# Building the model of a mode
# ----------------------------------------------------------------------------------------------


def _load_lm(cfg: TrainConfig, device):
    from .models import load_model_and_tokenizer

    return load_model_and_tokenizer(cfg.model, revision=cfg.revision, tokenizer_name=cfg.tokenizer_name,
                                    trust_remote_code=cfg.trust_remote_code, dtype=cfg.dtype, device=device)


def blocks_name(decoder: nn.Module, n_blocks: int) -> str:
    """Name of the ``nn.ModuleList`` holding the ``n_blocks`` decoder blocks (``layers``, ``h`` ...),
    PEFT's ``layers_pattern``."""
    names = [n.rsplit(".", 1)[-1] for n, m in decoder.named_modules()
             if isinstance(m, nn.ModuleList) and len(m) == n_blocks]
    if not names:
        raise ValueError(f"cannot find the list of {n_blocks} decoder blocks in {type(decoder).__name__}")
    return names[0]


def _lora_config(cfg: TrainConfig, lm, decoder):
    from peft import LoraConfig

    from .models import lora_target_modules

    targets = (lora_target_modules(lm) if cfg.lora_target_modules == "auto"
               else [t.strip() for t in cfg.lora_target_modules.split(",") if t.strip()])
    n_blocks, start = info_layers(lm), cfg.lora_start_block
    if not 0 <= start < n_blocks:
        raise ValueError(f"--lora_start_block {start}: this model has decoder blocks 0..{n_blocks - 1} "
                         "(block i produces hidden state i+1)")
    layers = pattern = None
    if start > 0:
        layers, pattern = list(range(start, n_blocks)), blocks_name(decoder, n_blocks)
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=targets, layers_to_transform=layers, layers_pattern=pattern, bias="none")


def info_layers(lm) -> int:
    from .models import model_dims

    return model_dims(lm.config)[0] - 1


def build_classifier(cfg: TrainConfig, num_classes: int, device):
    """(classifier, tokenizer, model info) with exactly the parameters of ``cfg.mode`` trainable."""
    mode = cfg.mode
    # scratch: the pretrained weights are only read for the config and tokenizer quirks, on the CPU
    lm, tokenizer, info = _load_lm(cfg, "cpu" if mode == "scratch" else device)
    d = info["hidden_size"]
    torch.manual_seed(cfg.training_seed)
    if mode == "scratch":
        from transformers import AutoModelForCausalLM

        config = lm.config
        del lm
        lm = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code,
                                              dtype=torch.float32 if cfg.dtype == "auto" else
                                              getattr(torch, cfg.dtype))
        info = {**info, "initialisation": f"random (AutoModelForCausalLM.from_config, seed {cfg.training_seed})",
                "dtype": str(next(lm.parameters()).dtype).removeprefix("torch."), "device": str(device)}
        lm.to(device)
    backbone = decoder_of(lm)
    if mode == "lora":
        from peft import get_peft_model

        lora_cfg = _lora_config(cfg, lm, backbone)
        backbone = get_peft_model(backbone, lora_cfg)
        info["lora"] = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
                        "target_modules": sorted(lora_cfg.target_modules),
                        "layers_to_transform": lora_cfg.layers_to_transform}
    for n, p in backbone.named_parameters():
        p.requires_grad_(mode == "scratch" or (mode == "lora" and "lora_" in n))
    clf = SequenceClassifier(backbone, d, num_classes, pooling=cfg.pooling, dropout=cfg.head_dropout)
    clf.to(device)
    if cfg.gradient_checkpointing and mode != "linear":
        base = backbone.get_base_model() if hasattr(backbone, "get_base_model") else backbone
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return clf, tokenizer, info


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def _load_data(cfg: TrainConfig):
    """Train and test splits of ``--dataset`` (the data errors name the dataset and the fix)."""
    from .data import load_split

    kw = dict(seed=cfg.seed, text_column=cfg.text_column, label_column=cfg.label_column,
              test_file=cfg.test_file, revision=cfg.dataset_revision, encoding=cfg.encoding,
              merge_label_variants=cfg.merge_label_variants)
    train = load_split(cfg.dataset, "train", max_samples=cfg.max_samples or None, **kw)
    test = load_split(cfg.dataset, "test", max_samples=cfg.max_eval_samples or None, **kw)
    if test.num_classes != train.num_classes:
        raise ValueError(f"dataset {cfg.dataset!r}: train has {train.num_classes} classes but test "
                         f"{test.num_classes}")
    return train, test


def _token_inputs(cfg: TrainConfig, clf, tokenizer, train_split, test_split, device, amp):
    """Train/test inputs from the texts: token ids, or (linear) the frozen model's pooled features."""
    pad_id = tokenizer.pad_token_id
    # the same tokens as cache.py (ntps.text): special tokens as the tokenizer adds them, cut at max_length
    (train_ids, n_cut), (test_ids, n_cut_test) = (tokenize(tokenizer, d.texts, cfg.max_length)
                                                  for d in (train_split, test_split))
    if n_cut or n_cut_test:
        log.info(f"{n_cut} train and {n_cut_test} test texts truncated to {cfg.max_length} tokens")
    if cfg.mode != "linear":
        return (_Inputs(ids=train_ids, labels=train_split.labels, pad_id=pad_id),
                _Inputs(ids=test_ids, labels=test_split.labels, pad_id=pad_id))
    clf.backbone.eval()  # frozen LM in eval mode: pool once, train the head on the features
    log.info(f"computing pooled features of {len(train_ids)} + {len(test_ids)} texts (frozen model) ...")
    feats = [_pooled_features(clf, ids, pad_id, device, cfg.eval_batch_size, amp) for ids in (train_ids, test_ids)]
    return (_Inputs(features=feats[0], labels=train_split.labels),
            _Inputs(features=feats[1], labels=test_split.labels))


def _cached_split(cfg: TrainConfig, flag: str, directory):
    """One split of ``--features_dir`` / ``--test_features_dir`` (cache.py --save_features): the last
    hidden state's pooled features (N, d) float32 and labels, checked to belong to ``--model``."""
    from types import SimpleNamespace

    from .probes import FEATURE_FILES, load_features

    try:
        feats, labels, meta = load_features(directory, cfg.pooling)
    except (FileNotFoundError, ValueError) as e:
        raise type(e)(f"{flag}: {e}") from e
    directory = Path(directory)
    files = {n: directory / n for n in ("meta.json", "labels.npy", FEATURE_FILES[cfg.pooling])}
    last = int(meta["n_states"]) - 1
    if last not in meta["layers"]:
        raise ValueError(f"{flag} {directory} has no features of the last hidden state ({last}); "
                         "rerun cache.py --save_features with --layers all (or including -1)")
    if slugify(str(meta["model"])) != slugify(cfg.model):
        raise ValueError(f"{flag} {directory} holds features of {meta['model']!r}, not --model "
                         f"{cfg.model!r}; pass the matching --model")
    return SimpleNamespace(
        features=torch.from_numpy(np.array(feats[meta["layers"].index(last)], dtype=np.float32)),
        labels=labels, num_classes=int(meta["num_classes"]), label_names=meta["label_names"],
        info={**meta["dataset_info"], "features_dir": str(directory), "max_length": meta["max_length"]},
        model_info=meta["model_info"], max_length=meta["max_length"], meta=meta,
        inputs={f"{flag.strip('-')}/{n}": d for n, d in file_digests(files).items()})


def _cached_splits(cfg: TrainConfig):
    """Train and test splits of ``--features_dir`` / ``--test_features_dir``, checked to agree."""
    train_split = _cached_split(cfg, "--features_dir", cfg.features_dir)
    test_split = _cached_split(cfg, "--test_features_dir", cfg.test_features_dir)
    check_same_source(train_split.meta, test_split.meta, f"--features_dir {cfg.features_dir}",
                      f"--test_features_dir {cfg.test_features_dir}")
    if train_split.max_length != cfg.max_length:
        raise ValueError(f"the features were computed with max_length {train_split.max_length}; pass "
                         f"--max_length {train_split.max_length} (it is part of the run's record)")
    if cfg.max_samples is not None or cfg.max_eval_samples is not None:
        raise ValueError("--max_samples/--max_eval_samples do not apply to --features_dir; cap the texts with "
                         "cache.py --max_samples")
    if (train_split.num_classes, train_split.max_length) != (test_split.num_classes, test_split.max_length) or \
            train_split.info.get("dataset") != test_split.info.get("dataset"):
        raise ValueError("--features_dir and --test_features_dir disagree on dataset, classes or max_length; "
                         "cache both splits with the same settings")
    return train_split, test_split


def _model_and_inputs(cfg: TrainConfig, train_split, test_split, device, amp):
    """(classifier, model info, train inputs, test inputs) of the run."""
    if cfg.features_dir:  # the frozen model's pooled features from cache.py --save_features: no forward pass
        info = {**train_split.model_info, "features_dir": str(cfg.features_dir),
                "test_features_dir": str(cfg.test_features_dir)}
        clf = SequenceClassifier(nn.Identity(), train_split.features.shape[1], train_split.num_classes,
                                 pooling=cfg.pooling, dropout=cfg.head_dropout).to(device)
        return (clf, info, _Inputs(features=train_split.features, labels=train_split.labels),
                _Inputs(features=test_split.features, labels=test_split.labels))
    clf, tokenizer, info = build_classifier(cfg, train_split.num_classes, device)
    return (clf, info, *_token_inputs(cfg, clf, tokenizer, train_split, test_split, device, amp))


def _save_final(out: Path, clf: SequenceClassifier, mode: str, label_names, info: dict) -> list[str]:
    from safetensors.torch import save_file

    head = {k: v.detach().cpu().contiguous() for k, v in clf.head.state_dict().items()}
    save_file(head, str(out / "head.safetensors"),
              metadata={"pooling": clf.pooling, "num_classes": str(clf.head.out_features),
                        "hidden_size": str(clf.head.in_features),
                        "label_names": json.dumps(list(label_names)),
                        "model": str(info.get("model"))})
    files = ["head.safetensors"]
    if mode == "lora":
        shutil.rmtree(out / "adapter", ignore_errors=True)
        clf.backbone.save_pretrained(str(out / "adapter"))
        files.append("adapter/")
    elif mode == "scratch":
        shutil.rmtree(out / "model", ignore_errors=True)
        clf.backbone.save_pretrained(str(out / "model"))
        files.append("model/")
    return files


# ----------------------------------------------------------------------------------------------
# The run: prepare, fit, finish
# ----------------------------------------------------------------------------------------------


@dataclass(eq=False)
class Run:
    """What :func:`prepare` sets up for :func:`fit` and :func:`finish`."""

    cfg: TrainConfig
    out: Path
    run_key: dict
    device: torch.device
    amp: bool
    train_split: object
    test_split: object
    dataset_key: str
    clf: SequenceClassifier
    info: dict
    train_in: _Inputs
    test_in: _Inputs
    trainable: list
    optimizer: torch.optim.Optimizer
    scheduler: object
    total: int
    per_epoch: int
    prep_s: float
    t_start: float
    log: RunLog | None = None
    step: int = 0
    train_time: float = 0.0
    resumed_from: str | None = None


def train(cfg: TrainConfig) -> dict:
    """Run one training job (:func:`prepare`, :func:`fit`, :func:`finish`).

    Returns the results dict (also written to ``results.json``); ``{"status": "stopped", ...}`` after
    ``--stop_after_steps``, and the previous results when ``results.json`` is already up to date.
    """
    run = prepare(cfg)
    if isinstance(run, dict):
        return run
    fit(run)
    return finish(run)


def _check_output(cfg: TrainConfig, out: Path, run_key: dict) -> dict | None:
    """Clear ``out`` with ``--overwrite``; the previous results when they are up to date (None: train);
    :class:`OutputExistsError` when results or checkpoints of another run are in the way."""
    ckpt_root, results_path = out / CHECKPOINT_DIR, out / "results.json"
    if cfg.overwrite and out.exists():
        for name in (CHECKPOINT_DIR, "adapter", "model"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("results.json", "log.jsonl", "head.safetensors"):
            (out / name).unlink(missing_ok=True)
    if results_path.is_file() and not cfg.resume_from_checkpoint:
        previous = read_json(results_path)
        if previous.get("run_key") == run_key:
            log.info(f"up to date: {results_path} (test accuracy {previous.get('test_accuracy')}); "
                     "pass --overwrite to retrain")
            return {**previous, "reused": True}
        old = previous.get("run_key") or {}
        changed = sorted(k for k in set(old) | set(run_key) if old.get(k) != run_key.get(k))
        inputs = changed_inputs(old.get("inputs"), run_key.get("inputs") or {}) if "inputs" in changed else []
        raise OutputExistsError(f"{results_path} holds a run with other settings or inputs ({', '.join(changed)}"
                                + (f": {', '.join(inputs)} changed" if inputs else "") + "); pass --overwrite to "
                                "replace it or --output_dir to keep both")
    if list_checkpoints(ckpt_root) and not cfg.resume_from_checkpoint:
        raise OutputExistsError(f"{ckpt_root} holds checkpoints of an unfinished run; pass "
                                "--resume_from_checkpoint latest to continue it or --overwrite to start again")
    out.mkdir(parents=True, exist_ok=True)
    return None


def _optimisation(cfg: TrainConfig, clf, n: int):
    """(trainable parameters, optimizer, scheduler, total steps, steps per epoch, warm-up steps)."""
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.epochs * per_epoch))
    warmup = int(cfg.warmup_ratio * total)
    trainable = [p for p in clf.parameters() if p.requires_grad]
    betas = tuple(float(b) for b in str(cfg.adam_betas).split(","))
    optimizer = build_optimizer(trainable, cfg.optimizer, cfg.lr, cfg.weight_decay, betas=betas,
                                eps=cfg.adam_eps, clip_threshold=cfg.adafactor_clip_threshold,
                                decay_rate=cfg.adafactor_decay_rate)
    return trainable, optimizer, build_scheduler(optimizer, cfg.lr_scheduler, warmup, total), total, per_epoch, warmup


def prepare(cfg: TrainConfig) -> Run | dict:
    """Data, output directory, model, optimiser, and the state of ``--resume_from_checkpoint``.

    Returns the :class:`Run` to :func:`fit`, or the previous results dict when ``results.json`` is up to date.
    """
    t_start = time.perf_counter()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    device = cli.resolve_device(cfg.device)
    amp = bf16_enabled(cfg.bf16, device)
    train_split, test_split = _cached_splits(cfg) if cfg.features_dir else _load_data(cfg)
    dataset_key = train_split.info.get("dataset", cfg.dataset)
    out, run_key = run_dir(cfg.output_dir, cfg.model, dataset_key, cfg.mode), cfg.run_key()
    if cfg.features_dir:  # the sha256 of the cached features read: a changed file is never mixed in
        run_key["inputs"] = {**train_split.inputs, **test_split.inputs}
    previous = _check_output(cfg, out, run_key)
    if previous is not None:
        return previous
    t_tok = time.perf_counter()
    clf, info, train_in, test_in = _model_and_inputs(cfg, train_split, test_split, device, amp)
    prep_s = time.perf_counter() - t_tok
    trainable, optimizer, scheduler, total, per_epoch, warmup = _optimisation(cfg, clf, len(train_in))
    run = Run(cfg=cfg, out=out, run_key=run_key, device=device, amp=amp, train_split=train_split,
              test_split=test_split, dataset_key=dataset_key, clf=clf, info=info, train_in=train_in,
              test_in=test_in, trainable=trainable, optimizer=optimizer, scheduler=scheduler, total=total,
              per_epoch=per_epoch, prep_s=prep_s, t_start=t_start)
    _restore(run)
    if cfg.wandb_entity and cfg.report_to != "wandb":
        log.warning("--wandb_entity is ignored: wandb is off (pass --report_to wandb)")
    run.log = RunLog(out / "log.jsonl", cfg.report_to, cfg.config(), cfg.wandb_project,
                     cfg.run_name or f"{slugify(cfg.model)}-{slugify(dataset_key)}-{cfg.mode}",
                     resume_step=run.step if run.resumed_from else None, entity=cfg.wandb_entity)
    n_trainable, n_total = sum(p.numel() for p in trainable), sum(p.numel() for p in clf.parameters())
    log.info(f"{cfg.mode}: {info.get('model')} ({info.get('architecture')}, d={info['hidden_size']}, "
             f"{info.get('dtype')}) on {device}{' with bf16 autocast' if amp else ''}; {dataset_key}: "
             f"{len(train_in)} train / {len(test_in)} test texts, {train_split.num_classes} classes; "
             f"{n_trainable:,} of {n_total:,} parameters trained; {cfg.optimizer} lr {cfg.lr:g} {cfg.lr_scheduler} "
             f"(warm-up {warmup}), batch {cfg.batch_size}, {total} steps ({total / per_epoch:.2f} epochs); "
             f"output {out}")
    return run


def _restore(run: Run) -> None:
    """Load ``--resume_from_checkpoint`` into the run, or seed the dropout stream of a fresh one."""
    cfg = run.cfg
    if not cfg.resume_from_checkpoint:
        torch.manual_seed(cfg.training_seed)  # dropout stream starts from the seed, whatever the init consumed
        return
    path = find_checkpoint(run.out, cfg.resume_from_checkpoint)
    state = load_checkpoint(path, run.clf, run.optimizer, run.scheduler, run.run_key)
    run.step, run.train_time, run.resumed_from = int(state["step"]), float(state.get("train_time_s", 0.0)), str(path)
    log.info(f"resumed from {path} at step {run.step}")


def _train_step(run: Run, idx: np.ndarray) -> float:
    """One optimisation step on the texts ``idx`` (in gradient-accumulation micro-batches); its mean loss."""
    cfg = run.cfg
    micro = cfg.batch_size // cfg.gradient_accumulation_steps
    run.optimizer.zero_grad(set_to_none=True)
    loss_val = 0.0
    for s in range(0, len(idx), micro):
        part = idx[s: s + micro]
        with _autocast(run.amp, run.device):
            logits = run.train_in.logits(run.clf, part, run.device).float()
        y = run.train_in.labels[torch.as_tensor(part)].to(logits.device)
        loss = nn.functional.cross_entropy(logits, y, reduction="sum") / len(idx)
        loss.backward()
        loss_val += loss.item()
    if not math.isfinite(loss_val):
        raise FloatingPointError(f"non-finite training loss at step {run.step + 1}; lower --lr or use float32")
    if cfg.max_grad_norm > 0:
        nn.utils.clip_grad_norm_(run.trainable, cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    return loss_val


def fit(run: Run) -> None:
    """The optimisation loop, from ``run.step`` to ``--stop_after_steps`` or the last step: the train loss
    every ``--logging_steps``, test metrics every ``--eval_steps``, checkpoints every ``--save_steps``."""
    from tqdm.auto import tqdm

    cfg, n = run.cfg, len(run.train_in)
    stop_at = min(run.total, cfg.stop_after_steps) if cfg.stop_after_steps else run.total
    # length-grouped batches only matter when each step runs the LM (not for cached linear features)
    lengths = [len(x) for x in run.train_in.ids] if cfg.group_by_length and run.train_in.ids is not None else None
    run.clf.train()
    if cfg.mode == "linear":
        run.clf.backbone.eval()
    losses: list[float] = []  # since the last log record
    t_loop, time_before = time.perf_counter(), run.train_time
    with tqdm(total=stop_at, initial=run.step, desc=f"{cfg.mode} [{run.dataset_key}]", unit="step",
              file=sys.stderr, disable=None) as bar:
        while run.step < stop_at:
            losses.append(_train_step(run, batch_indices(n, cfg.batch_size, run.step, cfg.training_seed,
                                                         lengths=lengths)))
            run.step += 1
            bar.update(1)
            run.train_time = time_before + time.perf_counter() - t_loop
            if run.step % cfg.logging_steps == 0 or run.step == stop_at:
                _log_loss(run, losses, bar)
                losses = []
            _evaluate_and_save(run, stop_at)
    run.train_time = time_before + time.perf_counter() - t_loop


def _log_loss(run: Run, losses: list[float], bar) -> None:
    rec = {"step": run.step, "epoch": round(run.step / run.per_epoch, 4), "loss": sum(losses) / len(losses),
           "lr": run.scheduler.get_last_lr()[0], "elapsed_s": round(run.train_time, 2)}
    run.log.write(rec)
    bar.set_postfix(loss=f"{rec['loss']:.4f}")
    if bar.disable:  # no progress bar (not a terminal): a plain line instead
        log.info(f"step {run.step}/{run.total} loss {rec['loss']:.4f} lr {rec['lr']:.3g} ({rec['elapsed_s']:.0f}s)")


def _evaluate_and_save(run: Run, stop_at: int) -> None:
    """Test metrics every ``--eval_steps`` and a checkpoint every ``--save_steps`` and at ``stop_at``
    (not at the last step: finish writes the results instead)."""
    cfg, step = run.cfg, run.step
    if cfg.eval_steps and step % cfg.eval_steps == 0 and step < run.total:
        ev = evaluate(run.clf, run.test_in, run.device, cfg.eval_batch_size, run.train_split.num_classes, run.amp)
        run.log.write({"step": step, **{f"eval_{k}": v for k, v in ev.items()}})
        log.info(f"step {step}: test accuracy {ev['accuracy']:.4f}, loss {ev['loss']:.4f}")
    if step < run.total and ((cfg.save_steps and step % cfg.save_steps == 0) or step == stop_at):
        ckpt_root = run.out / CHECKPOINT_DIR
        save_checkpoint(ckpt_root, run.clf, run.optimizer, run.scheduler, step, run.run_key,
                        {"train_time_s": run.train_time, "epoch": step / run.per_epoch})
        for old in list_checkpoints(ckpt_root)[:-max(1, cfg.save_total_limit)]:
            shutil.rmtree(old, ignore_errors=True)


def finish(run: Run) -> dict:
    """Final test metrics, weights and ``results.json`` (also ``--result_path``); the checkpoints go. After
    ``--stop_after_steps`` only ``{"status": "stopped", ...}``."""
    cfg, out = run.cfg, run.out
    if run.step < run.total:
        run.log.close()
        log.info(f"stopped after step {run.step} of {run.total} (--stop_after_steps); continue with "
                 "--resume_from_checkpoint latest")
        return {"status": "stopped", "steps": run.step, "total_steps": run.total, "output_dir": str(out)}
    final = evaluate(run.clf, run.test_in, run.device, cfg.eval_batch_size, run.train_split.num_classes, run.amp)
    run.log.write({"step": run.step, **{f"eval_{k}": v for k, v in final.items()}})
    files = _save_final(out, run.clf, cfg.mode, run.train_split.label_names, run.info)
    shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)  # finished: results and weights replace the checkpoints
    results = _results(run, final, files)
    write_json(out / "results.json", results)
    if cfg.result_path:
        write_json(_result_copy(cfg, run.dataset_key), results)
    run.log.close()
    log.info(f"{cfg.mode} done: test accuracy {final['accuracy']:.4f} (balanced {final['balanced_accuracy']:.4f}, "
             f"loss {final['loss']:.4f}) after {run.step} steps; train {run.train_time:.1f}s, total "
             f"{results['wall_time_s']:.1f}s; wrote {out / 'results.json'}")
    return results


def _results(run: Run, final: dict, files: list[str]) -> dict:
    cfg, splits = run.cfg, {"train": run.train_split, "test": run.test_split}
    return {
        "mode": cfg.mode, "model": cfg.model, "dataset": run.dataset_key, "output_dir": str(run.out),
        "test_accuracy": final["accuracy"], "balanced_accuracy": final["balanced_accuracy"],
        "test_loss": final["loss"], "n_train": len(run.train_in), "n_test": final["n"],
        "num_classes": run.train_split.num_classes,
        "label_names": run.train_split.label_names, "steps": run.step, "epochs": run.step / run.per_epoch,
        "wall_time_s": round(time.perf_counter() - run.t_start, 2), "train_time_s": round(run.train_time, 2),
        "prep_time_s": round(run.prep_s, 2), "resumed_from": run.resumed_from, "device": str(run.device),
        "bf16_autocast": run.amp,
        "trainable_parameters": sum(p.numel() for p in run.trainable),
        "total_parameters": sum(p.numel() for p in run.clf.parameters()), "files": files,
        "config": cfg.config(), "run_key": run.run_key, "model_info": run.info,
        "dataset_info": {s: {k: v for k, v in d.info.items() if k != "row_indices"} for s, d in splits.items()},
        "environment": environment_info(),
    }


def _result_copy(cfg: TrainConfig, dataset_key: str) -> Path:
    """``--result_path``: a .json file, or a directory receiving ``{model}_{dataset}_{mode}_results.json``."""
    path = Path(cfg.result_path)
    if path.suffix == ".json":
        return path
    return path / f"{slugify(cfg.model)}_{slugify(dataset_key)}_{cfg.mode}_results.json"


def script(mode: str, prog: str, doc: str, command: str):
    """``(parse_args, main, run)`` of the training script ``prog`` (linear_training.py, lora_finetuning.py,
    from_scratch.py) for ``mode``: ``parse_args(argv=None)`` -> Namespace, ``main(args)`` -> the results
    dict of :func:`train`, ``run(argv=None)`` = ``python {prog}`` and the console command ``command``."""

    def parse_args(argv=None):
        return cli.parse(add_training_args(cli.parser(prog, doc), mode), argv)

    def main(args) -> dict:
        return train(TrainConfig.from_args(args, mode))

    def run(argv=None) -> None:
        cli.run(main, parse_args, prog, argv)

    run.__doc__ = f"``python {prog}`` and the console command ``{command}``."
    return parse_args, main, run
