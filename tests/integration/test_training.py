"""ntps.training's helpers: seeded batch order, length-grouped batches, pooling without padding, the
optimiser and schedule (the scripts end to end: scripts/test_training_scripts.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from ntps import training  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_batch_indices_are_seeded_epoch_permutations():
    n, b = 10, 4  # 3 batches per epoch, the last of 2
    epoch0 = [training.batch_indices(n, b, s, seed=1) for s in range(3)]
    assert [len(x) for x in epoch0] == [4, 4, 2]
    assert sorted(np.concatenate(epoch0).tolist()) == list(range(n))
    epoch1 = np.concatenate([training.batch_indices(n, b, s, seed=1) for s in range(3, 6)])
    assert sorted(epoch1.tolist()) == list(range(n)) and not np.array_equal(epoch1, np.concatenate(epoch0))
    bi = training.batch_indices
    assert np.array_equal(bi(n, b, 4, seed=1), bi(n, b, 4, seed=1))
    assert not np.array_equal(bi(n, b, 0, seed=1), bi(n, b, 0, seed=2))


def test_length_grouped_batches_cover_each_epoch_once_and_cut_padding():
    rng = np.random.default_rng(0)
    n, b = 1003, 8
    lengths = rng.integers(3, 200, size=n)
    per_epoch = -(-n // b)
    bi = training.batch_indices

    def padding(batches):  # padded tokens / real tokens
        return sum(len(x) * lengths[x].max() for x in batches) / lengths.sum()

    for epoch in range(2):
        steps = range(epoch * per_epoch, (epoch + 1) * per_epoch)
        grouped = [bi(n, b, s, seed=3, lengths=lengths, group_batches=10) for s in steps]
        assert sorted(np.concatenate(grouped).tolist()) == list(range(n))  # every text once an epoch
        plain = [bi(n, b, s, seed=3) for s in steps]
        assert padding(grouped) < 1.1 < 1.5 < padding(plain)
    # batch order is shuffled (not longest-first) and a pure function of the step, as resume needs
    firsts = [lengths[bi(n, b, s, seed=3, lengths=lengths, group_batches=10)].max() for s in range(per_epoch)]
    assert not np.all(np.diff(firsts) <= 0)
    assert np.array_equal(bi(n, b, 7, seed=3, lengths=lengths), bi(n, b, 7, seed=3, lengths=lengths))


@pytest.mark.parametrize("side", ["right", "left"])
def test_pooling_excludes_padding_on_either_side(side):
    h = torch.randn(2, 5, 3)
    lengths = [5, 2]
    mask = torch.zeros(2, 5, dtype=torch.long)
    for i, L in enumerate(lengths):
        if side == "right":
            mask[i, :L] = 1
        else:
            mask[i, 5 - L:] = 1
    mean = training.pool_hidden(h, mask, "mean")
    last = training.pool_hidden(h, mask, "last")
    for i in range(2):
        real = h[i][mask[i].bool()]
        torch.testing.assert_close(mean[i], real.mean(0))
        torch.testing.assert_close(last[i], real[-1])
    with pytest.raises(ValueError, match="pooling"):
        training.pool_hidden(h, mask, "max")


def test_adafactor_has_the_papers_settings():
    p = torch.nn.Parameter(torch.zeros(3, 3))
    opt = training.build_optimizer([p], "adafactor", 1e-4)
    g = opt.param_groups[0]
    assert g["lr"] == 1e-4 and not (g["relative_step"] or g["scale_parameter"] or g["warmup_init"])
    assert (g["clip_threshold"], g["decay_rate"], g["weight_decay"]) == (1.0, -0.8, 1e-5)
    sched = training.build_scheduler(opt, "cosine", 5, 100)
    assert sched.get_last_lr()[0] == 0.0  # linear warm-up from 0
    for _ in range(5):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(1e-4)
    assert training.bf16_enabled("auto", torch.device("cpu")) is False
    with pytest.raises(ValueError, match="CUDA"):
        training.bf16_enabled("true", torch.device("cpu"))
