"""ntps.probes and linear_sklearn.py: the paper's sklearn probes and the closed-form LS MSE.

Feature directories are written here with numpy in the layout of ``cache.py --save_features``
(features_{mean,last}.npy (layers, N, d), labels.npy, meta.json, optionally stats.safetensors).
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

pytest.importorskip("sklearn")

from sklearn.linear_model import LinearRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import linear_sklearn  # noqa: E402
from ntps.artifacts import LayerSums, Stats, save_stats  # noqa: E402
from ntps.probes import load_features, ls_mse_from_sums, sklearn_probes  # noqa: E402


def toy(N=240, d=12, C=3, seed=0, offset=0.0, scales=None, noise_seed=None):
    """Features with class signal (class means from ``seed``; noise from ``noise_seed``, default
    ``seed``), a large mean offset and uneven feature scales if asked."""
    means = np.random.default_rng(seed).normal(size=(C, d))
    rng = np.random.default_rng(seed if noise_seed is None else noise_seed + 1000)
    y = np.arange(N) % C
    X = means[y] + rng.normal(size=(N, d)) * 1.5 + offset
    if scales is not None:
        X = X * scales
    return X, y


def sums(X, y, C):
    Y = np.eye(C)[y]
    return X.T @ X, X.T @ Y, X.sum(0), Y.sum(0), len(y)


def sklearn_mse(X, y, C):
    Y = np.eye(C)[y]
    pred = make_pipeline(StandardScaler(), LinearRegression()).fit(X, Y).predict(X)
    return float(np.mean((pred - Y) ** 2))


# --- closed form vs sklearn ---------------------------------------------------------------------


@pytest.mark.parametrize("case", ["plain", "offset_and_scales", "rank_deficient", "two_classes"])
def test_closed_form_mse_matches_sklearn(case):
    C = 2 if case == "two_classes" else 3
    if case == "offset_and_scales":
        X, y = toy(C=C, offset=5.0, scales=np.logspace(-2, 2, 12))
    else:
        X, y = toy(C=C)
    if case == "rank_deficient":  # a duplicated, a rescaled and a constant column
        X = np.column_stack([X, X[:, 0], 3 * X[:, 1], np.full(len(X), 2.0)])
    ref = sklearn_mse(X, y, C)
    ours = ls_mse_from_sums(*sums(X, y, C))
    assert 0.0 < ref < 1.0
    assert ours == pytest.approx(ref, rel=1e-6)


def test_closed_form_accepts_torch_and_is_zero_when_the_features_span_the_samples():
    X, y = toy(N=10, d=12)  # N <= d: perfect in-sample fit
    XX, XY, s, n, N = sums(X, y, 3)
    t = [torch.from_numpy(a) for a in (XX, XY, s, n)]
    assert ls_mse_from_sums(*t, N) == 0.0
    assert sklearn_mse(X, y, 3) < 1e-20
    with pytest.raises(ValueError, match="sum_x must have shape"):
        ls_mse_from_sums(XX, XY, s[:-1], n, N)
    with pytest.raises(ValueError, match="n_texts"):
        ls_mse_from_sums(XX, XY, s, n, N + 3)


def test_sklearn_probes_in_sample_and_held_out():
    X, y = toy(N=300, d=8, C=3)
    Xt, yt = toy(N=60, d=8, C=3, noise_seed=1)  # same class means, fresh noise
    res = sklearn_probes(X, y, 3, X_test=Xt, y_test=yt)
    assert set(res) == {"train", "test"}
    for r in res.values():
        assert set(r) == {"acc", "log_loss", "mse"} and 0 <= r["acc"] <= 1 and r["log_loss"] > 0
    assert res["train"]["mse"] == pytest.approx(sklearn_mse(X, y, 3), rel=1e-9)
    sep = np.repeat(np.eye(2) * 10, 20, axis=0) + np.random.default_rng(1).normal(size=(40, 2)) * 0.1
    assert sklearn_probes(sep, np.repeat([0, 1], 20), 2)["train"]["acc"] == 1.0
    with pytest.raises(ValueError, match="two classes"):
        sklearn_probes(X, np.zeros(len(X), dtype=int), 3)


# --- linear_sklearn.py on cache.py-style directories ----------------------------------------------


def write_features(path, X_layers, y, C, *, dtype=np.float16, layers=None, stats=False):
    path.mkdir(parents=True, exist_ok=True)
    X_layers = np.asarray(X_layers, dtype=dtype)
    L, N, d = X_layers.shape
    layers = list(range(L)) if layers is None else layers
    np.save(path / "features_mean.npy", X_layers)
    np.save(path / "features_last.npy", X_layers[:, :, ::-1].copy())
    np.save(path / "labels.npy", np.asarray(y, dtype=np.int64))
    meta = {"model": "toy", "dataset": "toy", "split": path.name, "layers": layers, "num_classes": C,
            "label_names": [str(k) for k in range(C)], "n_texts": N, "d": d}
    if stats:  # sums of exactly these (float16-rounded) features, as cache.py would write
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))  # noqa: E731
        per_layer = {}
        for i, layer in enumerate(layers):
            XX, XY, s, n, _ = sums(X_layers[i].astype(np.float64), y, C)
            per_layer[layer] = LayerSums(t(XX), t(XY), t(np.zeros((d, d))), t(np.zeros((d, d))), t(s))
        st = Stats(layers=per_layer, class_counts=torch.from_numpy(np.bincount(y, minlength=C)), n_texts=N,
                   n_tokens=5 * N, n_pairs=4 * N)
        save_stats(path, st, {**meta, "dtype": "float32", "max_length": 64, "max_samples": None, "seed": 42})
    else:
        (path / "meta.json").write_text(json.dumps(meta))


def test_linear_sklearn_end_to_end(tmp_path):
    X, y = toy(N=200, d=10, C=3)
    Xt, yt = toy(N=60, d=10, C=3, noise_seed=1)
    train_layers = np.stack([X * 0.01, X, X + 1.0])  # three "layers"
    write_features(tmp_path / "m" / "ds" / "train", train_layers, y, 3, layers=[0, 5, 10], stats=True)
    test_layers = np.stack([Xt * 0.01, Xt, Xt + 1.0])
    write_features(tmp_path / "m" / "ds" / "test", test_layers, yt, 3, layers=[0, 5, 10])
    train_dir = tmp_path / "m" / "ds" / "train"
    res = linear_sklearn.main(linear_sklearn.parse_args(["--features_dir", str(train_dir),
                                                         "--layers", "5,-1"]))
    rows = list(csv.DictReader(open(train_dir / "probes_sklearn.csv")))
    assert list(rows[0]) == ["layer", "split", "acc", "log_loss", "mse", "acc_converged", "log_loss_converged",
                            "saga_n_iter", "saga_converged", "lbfgs_n_iter", "lbfgs_converged"]
    assert [(r["layer"], r["split"]) for r in rows] == [("5", "train"), ("5", "test"), ("10", "train"),
                                                      ("10", "test")]
    data = json.loads((train_dir / "probes_sklearn.json").read_text())
    assert data["settings"]["logistic_regression"] == {"solver": "saga", "max_iter": 1000, "tol": 0.01}
    assert data["environment"]["versions"] and data["n_test"] == 60
    # in-sample sklearn MSE on the float16 features == closed form from the sums of the same features
    for r in res["rows"]:
        if r["split"] == "train":
            closed = data["mse_closed_form_from_stats"][str(r["layer"])]
            assert closed == pytest.approx(r["mse"], rel=1e-6)
    # last-token pooling writes its own files; 'none' disables the test split
    linear_sklearn.main(linear_sklearn.parse_args(["--features_dir", str(train_dir), "--pooling", "last",
                                                   "--test_features_dir", "none", "--layers", "0"]))
    rows = list(csv.DictReader(open(train_dir / "probes_sklearn_last.csv")))
    assert [(r["layer"], r["split"]) for r in rows] == [("0", "train")]


def test_bad_feature_directories_give_clear_errors(tmp_path):
    X, y = toy(N=40, d=4, C=2)
    d = tmp_path / "train"
    write_features(d, X[None], y, 2)
    with pytest.raises(ValueError, match="not saved"):
        linear_sklearn.main(linear_sklearn.parse_args(["--features_dir", str(d), "--layers", "3"]))
    (d / "features_mean.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"features_mean\.npy is missing.*--save_features"):
        linear_sklearn.main(linear_sklearn.parse_args(["--features_dir", str(d)]))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        linear_sklearn.main(linear_sklearn.parse_args(["--features_dir", str(tmp_path / "nope")]))
    bad = tmp_path / "bad"
    write_features(bad, X[None], y + 1, 2)  # labels 1..2 with num_classes 2
    with pytest.raises(ValueError, match=r"0\.\.1"):
        load_features(bad)
    with pytest.raises(ValueError, match=r"0\.\.1"):
        linear_sklearn.main(linear_sklearn.parse_args(["--features_dir", str(bad)]))
    short = tmp_path / "short"
    write_features(short, X[None], y, 2)
    np.save(short / "labels.npy", y[:-1])
    with pytest.raises(ValueError, match="rows"):
        load_features(short)
