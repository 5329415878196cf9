"""ntps.probes: the paper's sklearn probes and the closed-form LS MSE (linear_sklearn.py on feature
directories: scripts/test_linear_sklearn.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from ntps.probes import ls_mse_from_sums, sklearn_probes  # noqa: E402


def sums(X, y, C):
    Y = np.eye(C)[y]
    return X.T @ X, X.T @ Y, X.sum(0), Y.sum(0), len(y)


def sklearn_mse(X, y, C):
    Y = np.eye(C)[y]
    pred = make_pipeline(StandardScaler(), LinearRegression()).fit(X, Y).predict(X)
    return float(np.mean((pred - Y) ** 2))


# --- closed form vs sklearn ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["plain", "offset_and_scales", "rank_deficient", "two_classes"])
def test_closed_form_mse_matches_sklearn(case, toy_features):
    C = 2 if case == "two_classes" else 3
    if case == "offset_and_scales":
        X, y = toy_features(C=C, offset=5.0, scales=np.logspace(-2, 2, 12))
    else:
        X, y = toy_features(C=C)
    if case == "rank_deficient":  # a duplicated, a rescaled and a constant column
        X = np.column_stack([X, X[:, 0], 3 * X[:, 1], np.full(len(X), 2.0)])
    ref = sklearn_mse(X, y, C)
    ours = ls_mse_from_sums(*sums(X, y, C))
    assert 0.0 < ref < 1.0
    assert ours == pytest.approx(ref, rel=1e-6)


def test_closed_form_accepts_torch_and_is_zero_when_the_features_span_the_samples(toy_features):
    X, y = toy_features(N=10, d=12)  # N <= d: perfect in-sample fit
    XX, XY, s, n, N = sums(X, y, 3)
    t = [torch.from_numpy(a) for a in (XX, XY, s, n)]
    assert ls_mse_from_sums(*t, N) == 0.0
    assert sklearn_mse(X, y, 3) < 1e-20
    with pytest.raises(ValueError, match="sum_x must have shape"):
        ls_mse_from_sums(XX, XY, s[:-1], n, N)
    with pytest.raises(ValueError, match="n_texts"):
        ls_mse_from_sums(XX, XY, s, n, N + 3)


def test_sklearn_probes_in_sample_and_held_out(toy_features):
    X, y = toy_features(N=300, d=8, C=3)
    Xt, yt = toy_features(N=60, d=8, C=3, noise_seed=1)  # same class means, fresh noise
    res = sklearn_probes(X, y, 3, X_test=Xt, y_test=yt)
    assert set(res) == {"train", "test"}
    for r in res.values():
        assert set(r) == {"acc", "log_loss", "mse"} and 0 <= r["acc"] <= 1 and r["log_loss"] > 0
    assert res["train"]["mse"] == pytest.approx(sklearn_mse(X, y, 3), rel=1e-9)
    sep = np.repeat(np.eye(2) * 10, 20, axis=0) + np.random.default_rng(1).normal(size=(40, 2)) * 0.1
    assert sklearn_probes(sep, np.repeat([0, 1], 20), 2)["train"]["acc"] == 1.0
    with pytest.raises(ValueError, match="two classes"):
        sklearn_probes(X, np.zeros(len(X), dtype=int), 3)
