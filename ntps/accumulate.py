"""Streaming accumulation of the per-layer sums of SPEC §1 from batches of hidden states.

One batch of hidden states is processed at a time in the prefix-sum GEMM form, over all real
tokens of the batch at once (never a per-text loop, never an L×L matrix):

    S = cumsum(H) over the sequence,   x_n = S[last real token of n] / L_n,
    S' = S with every row zeroed whose next position is not a real token of the same text,
    C0 += S'ᵀ S',   C1 += S'[:-1]ᵀ H[1:]     (row t of S' meets row t+1 of H: s_t h_{t+1}ᵀ)

Padding is excluded through the attention mask (left padding is masked before the prefix sum),
so the result does not depend on the padding side, the batch size or the batch order (up to
round-off). C0 is symmetric: each batch adds the upper part of its block rows only (ceil(d / 512)
blocks: about half the GEMM work at large d), mirrored when flushed. Partial sums are accumulated in
float32 on the compute device by fused ``addmm_`` GEMMs and flushed into float64 totals every
``flush_every`` batches (and before any read of the totals): the float64 conversion of 3·d² numbers
per layer costs more than the GEMMs on a CPU if done for every small batch, and over 8 batches
float32 adds < 1e-6 relative error.

The GEMM inputs may be rounded for tensor cores (``precision``: ``tf32``, ``bf16``, or ``bf16x3``, each input
split as hi + lo in bf16 and three products summed; the prefix sums, the accumulation and the float64 totals
stay float32/float64); on other devices than CUDA that rounding is emulated (same numbers, no speed-up).

No device value is read on the host per batch: the mask and the labels are checked on the host (pass host
tensors), counts are host integers, and the finiteness of the sums is a device flag read by
:meth:`StatsAccumulator.flush` (on the CPU after every batch).
"""

from __future__ import annotations

import contextlib

import torch

from .artifacts import LayerSums, Stats

PRECISIONS = ("float32", "tf32", "bf16", "bf16x3")
GRAM_BLOCK_COLUMNS = 512  # most columns a block row of C0's upper part has (near-equal blocks, _add_gram)


class NonFiniteHiddenStates(ValueError):
    """The model produced NaN/inf hidden states (e.g. float16 overflow)."""


def check_mask(mask: torch.Tensor) -> torch.Tensor:
    """Lengths (B,) of a (B, T) bool mask with one contiguous run of real tokens per row."""
    B, T = mask.shape
    lengths = mask.sum(1)
    if B and T:
        first = mask.float().argmax(1)
        span = torch.where(lengths > 0, T - mask.flip(1).float().argmax(1) - first, torch.zeros_like(lengths))
        if not torch.equal(span, lengths):
            raise ValueError("attention mask is not one contiguous run of real tokens per text")
    return lengths


def resolve_precision(precision: str, device) -> str:
    """``auto`` → the default statistic-GEMM precision for ``device`` (float32 everywhere; see README)."""
    if precision == "auto":
        return "float32"
    if precision not in PRECISIONS:
        raise ValueError(f"stats precision {precision!r} is not one of auto, {', '.join(PRECISIONS)}")
    return precision


def _round_tf32(t: torch.Tensor) -> torch.Tensor:
    """float32 rounded to TF32's 10-bit mantissa (half away from zero), as tensor cores read it."""
    return ((t.view(torch.int32) + 0x1000) & -0x2000).view(torch.float32)


def _mm_to_float32(device: torch.device) -> bool:
    """Whether this torch multiplies bf16 matrices into a float32 result on ``device`` (torch >= 2.8)."""
    one = torch.ones(1, 1, dtype=torch.bfloat16, device=device)
    try:
        return torch.mm(one, one, out_dtype=torch.float32).dtype == torch.float32
    except (TypeError, RuntimeError, NotImplementedError):
        return False


@contextlib.contextmanager
def _cublas_float32(tf32: bool):
    """Inside the block only (the forward pass keeps its setting): cuBLAS float32 GEMMs on TF32 tensor cores
    (``tf32``) or in IEEE float32, whatever the caller set globally (e.g. ``set_float32_matmul_precision``)."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9
        name, value = "fp32_precision", "tf32" if tf32 else "ieee"
    else:
        name, value = "allow_tf32", tf32
    old = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, old)


class StatsAccumulator:
    """Float64 totals of SPEC §1 for ``layers`` (indices into ``hidden_states``), width ``d``.

    ``precision`` (one of :data:`PRECISIONS`) rounds the inputs of the per-batch GEMMs: ``float32`` (exact
    float32 products), ``tf32`` (10-bit mantissa), ``bf16`` (7-bit), ``bf16x3`` (hi·hi + hi·lo + lo·hi of a bf16
    split, ~16 bits, 2-3 GEMMs a sum); products are summed in float32. README, Benchmarks: their cost in NTPS.
    """

    def __init__(self, layers: list[int], d: int, num_classes: int, device="cpu", flush_every: int = 8,
                 precision: str = "float32"):
        self.layers = list(layers)
        self.d, self.num_classes, self.device = d, num_classes, torch.device(device)
        self.flush_every = flush_every
        self.precision = resolve_precision(precision, self.device)
        # tensor cores for tf32/bf16 on CUDA; the meta device takes the same path (tests check its shapes/dtypes)
        self._tensor_cores = self.precision != "float32" and self.device.type in ("cuda", "meta")
        if self._tensor_cores and self.precision.startswith("bf16") and not _mm_to_float32(self.device):
            self._tensor_cores = False  # float32 GEMMs of the bf16 values: the same numbers, slower
        n = len(self.layers)
        z = lambda *s, dtype=torch.float64: torch.zeros(*s, dtype=dtype, device=self.device)  # noqa: E731
        # float64 totals, stacked over layers: (n, d, d) etc.
        self.XX, self.XY, self.C0, self.C1, self.sum_x = z(n, d, d), z(n, d, num_classes), z(n, d, d), \
            z(n, d, d), z(n, d)
        # float32 partial sums since the last flush
        f32 = torch.float32
        self._part = {k: z(*getattr(self, k).shape, dtype=f32) for k in ("XX", "XY", "C0", "C1", "sum_x")}
        # C0's block rows: ceil(d / GRAM_BLOCK_COLUMNS) of near-equal height; k blocks cost (k + 1) / 2k of the product
        self._block = -(-d // -(-d // GRAM_BLOCK_COLUMNS))
        self._nonfinite = z(n, dtype=torch.bool)  # per layer, set on the device, read by flush()
        self._check_every_batch = self.device.type == "cpu"  # no device queue to stall: report at once
        self._pending = 0
        self._S = torch.empty(0, device=self.device)
        self.class_counts = torch.zeros(num_classes, dtype=torch.int64)
        self.n_texts = self.n_tokens = self.n_pairs = 0

    def _gemm_input(self, t: torch.Tensor, scratch: bool = False) -> list[torch.Tensor]:
        """``t`` (float32 or bf16) as the statistic GEMMs read it: [t rounded], or [hi, lo] (t ≈ hi + lo) for
        bf16x3 unless ``t`` holds bf16 values; ``scratch``: ``t`` may be overwritten (by t − hi)."""
        if self.precision == "float32" or (self.precision == "tf32" and self._tensor_cores):
            return [t.float()]
        if self.precision == "tf32":
            return [_round_tf32(t.float())]
        hi = t.bfloat16()
        if self.precision == "bf16" or t.dtype == torch.bfloat16:
            parts = [hi]
        else:  # t − hi is exact in float32
            parts = [hi, (t.sub_(hi) if scratch else t - hi).bfloat16()]
        return parts if self._tensor_cores else [x.float() for x in parts]

    @staticmethod
    def _addmm(out: torch.Tensor, a: list[torch.Tensor], b: list[torch.Tensor]) -> None:
        """out (float32) += (Σ a_i) @ (Σ b_j) without the lo·lo term; bf16 inputs on CUDA tensor cores with a
        float32 result (bf16 products are exact in float32, so the emulation on float32 values agrees)."""
        for i, ai in enumerate(a):
            for bj in b[: 2 - i]:
                if ai.dtype == torch.bfloat16:
                    out.add_(torch.mm(ai, bj, out_dtype=torch.float32))
                else:
                    out.addmm_(ai, bj)

    def _add_gram(self, out: torch.Tensor, a: list[torch.Tensor], block: int) -> None:
        """out += AᵀA for A = hi (+ lo), in the upper part of block rows of height ``block`` only, as
        :func:`ntps.linalg.gram_lower` (the lower triangle is made at :meth:`flush`): hiᵀhi + hiᵀlo + loᵀhi,
        + diag(loᵀlo). Off the diagonal the dropped lo·lo terms have random signs; on it they are squares, whose
        omission would bias every diagonal entry low by ~1e-6 (relative), enough to move NTPS by 1e-3."""
        for i in range(0, out.shape[0], block):
            self._addmm(out[i:i + block, i:], [x[:, i:i + block].T for x in a], [x[:, i:] for x in a])
        if len(a) == 2:
            out.diagonal().add_(a[1].float().square().sum(0))

    def _host_batch(self, mask: torch.Tensor, labels: torch.Tensor):
        """Checks on the host mask/labels; (lengths, right_padded, last_pos, inv_len, onehot) host tensors."""
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels {sorted(set(labels.tolist()))} outside 0..{self.num_classes - 1}")
        lengths = check_mask(mask)
        if (lengths == 0).any():
            bad = (lengths == 0).nonzero().flatten().tolist()
            raise ValueError(f"texts at batch positions {bad} have no tokens: drop empty texts first")
        B, T = mask.shape
        last_pos = torch.arange(B) * T + (lengths - 1 + mask.long().argmax(1))
        onehot = torch.nn.functional.one_hot(labels, self.num_classes).to(torch.float32)
        return lengths, bool(mask[:, 0].all()), last_pos, 1.0 / lengths.to(torch.float32)[:, None], onehot

    @torch.no_grad()
    def add_batch(self, hidden_states, mask: torch.Tensor, labels: torch.Tensor,
                  return_features: bool = False):
        """Add one batch. ``hidden_states``: sequence of (B, T, d) tensors (all model states);
        ``mask`` (B, T); ``labels`` (B,) ints in 0..C-1. Texts must have at least one token.
        Pass ``mask`` and ``labels`` as host (CPU) tensors: on another device they are copied to the host,
        which waits for the device.

        Returns (mean (n, B, d), last (n, B, d)) float32 features when ``return_features``.
        Raises :class:`NonFiniteHiddenStates` on NaN/inf (on CUDA at the next :meth:`flush`; the
        accumulator is then unusable).
        """
        mask, labels = mask.to("cpu").bool(), labels.to("cpu").long()
        lengths, right_padded, last_pos, inv_len, onehot = self._host_batch(mask, labels)
        B, T = mask.shape
        d, dev = self.d, self.device
        # with right padding, pad positions come after every real one and never enter a prefix sum
        # at a real position; with left padding they are zeroed before the prefix sum
        not_pair = torch.ones(B, T, dtype=torch.bool)
        not_pair[:, :-1] = ~(mask[:, :-1] & mask[:, 1:])
        zero_rows, last_pos, inv_len = not_pair.flatten().nonzero().flatten().to(dev), last_pos.to(dev), \
            inv_len.to(dev)
        bf16_onehot = self.precision.startswith("bf16")  # 0/1: exact in bf16
        onehot = self._gemm_input(onehot.to(dev, torch.bfloat16 if bf16_onehot else torch.float32))
        mask_dev = None if right_padded else mask.to(dev)
        if self._S.numel() < B * T * d:
            self._S = torch.empty(B * T * d, device=dev)
        p = self._part
        feats = []
        on_cuda = dev.type in ("cuda", "meta")  # meta: the CUDA path's shapes and calls, in tests
        gemm_settings = (lambda: _cublas_float32(self.precision == "tf32")) if on_cuda else contextlib.nullcontext
        for i, layer in enumerate(self.layers):
            h = hidden_states[layer].to(dev)  # the model's dtype: bf16 GEMM inputs need no float32 copy
            if mask_dev is not None:
                h = torch.where(mask_dev[..., None], h, 0.0)
            flat = h.reshape(B * T, d)
            S = torch.cumsum(h, 1, dtype=torch.float32, out=self._S[: B * T * d].view(B, T, d)).view(B * T, d)
            x = S.index_select(0, last_pos) * inv_len  # (B, d) mean-pooled
            S.index_fill_(0, zero_rows, 0.0)  # keep s_t only where h_{t+1} is a real token
            xg, Hg, Sg = self._gemm_input(x), self._gemm_input(flat), self._gemm_input(S, scratch=True)
            with gemm_settings():
                self._add_gram(p["C0"][i], Sg, self._block)
                self._addmm(p["C1"][i], [s[:-1].T for s in Sg], [h[1:] for h in Hg])
                self._add_gram(p["XX"][i], xg, d)  # B rows: one block
                self._addmm(p["XY"][i], [s.T for s in xg], onehot)
            p["sum_x"][i].add_(x.sum(0))
            self._nonfinite[i] |= ~(torch.isfinite(x).all() & torch.isfinite(p["C0"][i].diagonal()).all()
                                    & torch.isfinite(p["C1"][i].diagonal()).all())
            if return_features:
                feats.append((x, flat.index_select(0, last_pos).float()))
        if self._check_every_batch:
            self._raise_if_nonfinite()
        self.class_counts += torch.bincount(labels, minlength=self.num_classes)
        self.n_texts += B
        self.n_tokens += int(lengths.sum())
        self.n_pairs += int(lengths.sum()) - B
        self._pending += 1
        if self._pending >= self.flush_every:
            self.flush(check=False)
        if return_features:
            return torch.stack([f[0] for f in feats]), torch.stack([f[1] for f in feats])
        return None

    def _raise_if_nonfinite(self) -> None:
        if self._nonfinite.any():  # a host read of a device flag: waits for the device
            layer = self.layers[int(self._nonfinite.int().argmax())]
            raise NonFiniteHiddenStates(
                f"non-finite hidden states at layer {layer}: typically float16 overflow; rerun with "
                "--dtype float32 (or bfloat16). Nothing was written.")

    def flush(self, check: bool = True) -> None:
        """Add the float32 partial sums to the float64 totals and reset them (device work only); with
        ``check``, raise :class:`NonFiniteHiddenStates` if any batch so far had NaN/inf (one device sync)."""
        if self._pending:
            for k, part in self._part.items():
                total = getattr(self, k)
                for i in range(len(self.layers)):  # per layer: a d×d float64 temporary, not n×d×d
                    if k in ("XX", "C0"):  # upper block rows (_add_gram): the upper triangle, mirrored
                        u = part[i].double().triu_()
                        total[i].add_(u)
                        total[i].add_(u.fill_diagonal_(0.0).mT)
                    else:
                        total[i].add_(part[i].double())
                part.zero_()
            self._pending = 0
        if check:
            self._raise_if_nonfinite()

    def to_stats(self, meta: dict | None = None) -> Stats:
        """The totals as a :class:`~ntps.artifacts.Stats` (CPU float64)."""
        self.flush()
        layers = {layer: LayerSums(self.XX[i].cpu(), self.XY[i].cpu(), self.C0[i].cpu(), self.C1[i].cpu(),
                                   self.sum_x[i].cpu()) for i, layer in enumerate(self.layers)}
        return Stats(layers=layers, class_counts=self.class_counts.clone(), n_texts=self.n_texts,
                     n_tokens=self.n_tokens, n_pairs=self.n_pairs, meta=dict(meta or {}))

    def load_(self, stats: Stats) -> StatsAccumulator:
        """Continue from saved totals (resume)."""
        self.flush()
        for i, layer in enumerate(self.layers):
            s = stats.layers[layer]
            for k in ("XX", "XY", "C0", "C1", "sum_x"):
                getattr(self, k)[i] = getattr(s, k).to(self.device)
        self.class_counts = stats.class_counts.clone()
        self.n_texts, self.n_tokens, self.n_pairs = stats.n_texts, stats.n_tokens, stats.n_pairs
        return self

    def all_reduce_(self) -> StatsAccumulator:
        """Sum the totals over the ranks of the default process group (each rank once)."""
        import torch.distributed as dist

        self.flush()
        for t in (self.XX, self.XY, self.C0, self.C1, self.sum_x):
            dist.all_reduce(t)
        counts = torch.tensor([self.n_texts, self.n_tokens, self.n_pairs], dtype=torch.int64, device=self.device)
        cc = self.class_counts.to(self.device)
        dist.all_reduce(counts)
        dist.all_reduce(cc)
        self.class_counts = cc.cpu()
        self.n_texts, self.n_tokens, self.n_pairs = (int(v) for v in counts.cpu())
        return self
