"""Streaming accumulation of the per-layer sums of SPEC §1 from batches of hidden states.

One batch of hidden states for all selected layers is processed at a time in the prefix-sum
GEMM form, over all real tokens of the batch at once:

    x_n = mean_t h_t,   S = cumsum(H) over real tokens,
    C0 += S[:-1]ᵀ S[:-1],   C1 += S[:-1]ᵀ H[1:]    (pairs of consecutive real tokens)

Padding is excluded through the attention mask, so the result does not depend on the padding
side, the batch size or the batch order (up to round-off). Batch partial sums are computed in
float32 on the compute device (two GEMMs per layer) and added to float64 totals.
"""

from __future__ import annotations

import torch

from .artifacts import LayerSums, Stats


class NonFiniteHiddenStates(ValueError):
    """The model produced NaN/inf hidden states (e.g. float16 overflow)."""


def real_token_indices(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat indices into (B·T) of every real token and of every (s_t, h_{t+1}) pair.

    ``mask`` (B, T) bool with one contiguous run of real tokens per row (either padding side).
    Returns (lengths (B,), pair_idx (P,) positions t with t+1 real, next_idx = pair_idx + 1).
    """
    B, T = mask.shape
    lengths = mask.sum(1)
    if B and T:
        first = mask.float().argmax(1)
        span = torch.where(lengths > 0, T - mask.flip(1).float().argmax(1) - first, torch.zeros_like(lengths))
        if not torch.equal(span, lengths):
            raise ValueError("attention mask is not one contiguous run of real tokens per text")
    pair = mask[:, :-1] & mask[:, 1:]
    pair_idx = (pair.nonzero() * torch.tensor([T, 1], device=mask.device)).sum(1)
    return lengths, pair_idx, pair_idx + 1


class StatsAccumulator:
    """Float64 totals of SPEC §1 for ``layers`` (indices into ``hidden_states``), width ``d``."""

    def __init__(self, layers: list[int], d: int, num_classes: int, device="cpu"):
        self.layers = list(layers)
        self.d, self.num_classes, self.device = d, num_classes, torch.device(device)
        n = len(self.layers)
        z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=self.device)  # noqa: E731
        # stacked over layers: (n, d, d) etc.
        self.XX, self.XY, self.C0, self.C1, self.sum_x = z(n, d, d), z(n, d, num_classes), z(n, d, d), \
            z(n, d, d), z(n, d)
        self.class_counts = torch.zeros(num_classes, dtype=torch.int64)
        self.n_texts = self.n_tokens = self.n_pairs = 0

    @torch.no_grad()
    def add_batch(self, hidden_states, mask: torch.Tensor, labels: torch.Tensor,
                  return_features: bool = False):
        """Add one batch. ``hidden_states``: sequence of (B, T, d) tensors (all model states);
        ``mask`` (B, T); ``labels`` (B,) ints in 0..C-1. Texts must have at least one token.

        Returns (mean (n, B, d), last (n, B, d)) float32 features when ``return_features``.
        """
        mask = mask.to(self.device).bool()
        labels = labels.to(self.device).long()
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"labels {sorted(set(labels.tolist()))} outside 0..{self.num_classes - 1}")
        lengths, pair_idx, next_idx = real_token_indices(mask)
        if (lengths == 0).any():
            bad = (lengths == 0).nonzero().flatten().tolist()
            raise ValueError(f"texts at batch positions {bad} have no tokens: drop empty texts first")
        B, T = mask.shape
        # with right padding, pad positions come after every real one: they cannot enter a prefix
        # sum at a real position, so only the mean needs the mask (and we skip a masked copy)
        right_padded = bool(mask[:, 0].all())
        maskf = mask.to(torch.float32)
        onehot = torch.nn.functional.one_hot(labels, self.num_classes).to(torch.float32)
        last_pos = torch.arange(B, device=self.device) * T + (lengths - 1 + mask.long().argmax(1))
        feats = []
        for i, layer in enumerate(self.layers):
            h = hidden_states[layer].to(self.device, torch.float32)
            if not right_padded:
                h = h * maskf[..., None]
            x = torch.bmm(maskf[:, None, :], h).squeeze(1) / lengths[:, None]  # (B, d) mean-pooled
            if not torch.isfinite(x).all():  # NaN at a pad position must not count
                h = torch.where(mask[..., None], h, 0.0)
                x = torch.bmm(maskf[:, None, :], h).squeeze(1) / lengths[:, None]
            flat = h.reshape(B * T, self.d)
            S = h.cumsum(1).reshape(B * T, self.d)
            Sp = S.index_select(0, pair_idx)  # (P, d) prefix sums s_t with a next real token
            C0 = Sp.T @ Sp
            C1 = Sp.T @ flat.index_select(0, next_idx)
            if not (torch.isfinite(x).all() and torch.isfinite(C0.diagonal()).all()):
                raise NonFiniteHiddenStates(
                    f"non-finite hidden states at layer {layer}: typically float16 overflow; rerun with "
                    "--dtype float32 (or bfloat16). Nothing was written.")
            self.XX[i] += x.T @ x
            self.XY[i] += x.T @ onehot
            self.C0[i] += C0
            self.C1[i] += C1
            self.sum_x[i] += x.sum(0)
            if return_features:
                feats.append((x, flat.index_select(0, last_pos)))
        self.class_counts += torch.bincount(labels.cpu(), minlength=self.num_classes)
        self.n_texts += B
        self.n_tokens += int(lengths.sum())
        self.n_pairs += int(pair_idx.numel())
        if return_features:
            return torch.stack([f[0] for f in feats]), torch.stack([f[1] for f in feats])
        return None

    def to_stats(self, meta: dict | None = None) -> Stats:
        """The totals as a :class:`~ntps.artifacts.Stats` (CPU float64)."""
        layers = {layer: LayerSums(self.XX[i].cpu(), self.XY[i].cpu(), self.C0[i].cpu(), self.C1[i].cpu(),
                                   self.sum_x[i].cpu()) for i, layer in enumerate(self.layers)}
        return Stats(layers=layers, class_counts=self.class_counts.clone(), n_texts=self.n_texts,
                     n_tokens=self.n_tokens, n_pairs=self.n_pairs, meta=dict(meta or {}))

    def load_(self, stats: Stats) -> StatsAccumulator:
        """Continue from saved totals (resume)."""
        for i, layer in enumerate(self.layers):
            s = stats.layers[layer]
            self.XX[i], self.XY[i], self.C0[i], self.C1[i], self.sum_x[i] = (
                s.XX.to(self.device), s.XY.to(self.device), s.C0.to(self.device), s.C1.to(self.device),
                s.sum_x.to(self.device))
        self.class_counts = stats.class_counts.clone()
        self.n_texts, self.n_tokens, self.n_pairs = stats.n_texts, stats.n_tokens, stats.n_pairs
        return self

    def all_reduce_(self) -> StatsAccumulator:
        """Sum the totals over the ranks of the default process group (each rank once)."""
        import torch.distributed as dist

        for t in (self.XX, self.XY, self.C0, self.C1, self.sum_x):
            dist.all_reduce(t)
        counts = torch.tensor([self.n_texts, self.n_tokens, self.n_pairs], dtype=torch.int64, device=self.device)
        cc = self.class_counts.to(self.device)
        dist.all_reduce(counts)
        dist.all_reduce(cc)
        self.class_counts = cc.cpu()
        self.n_texts, self.n_tokens, self.n_pairs = (int(v) for v in counts.cpu())
        return self
