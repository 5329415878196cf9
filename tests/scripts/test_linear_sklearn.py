"""linear_sklearn.py on feature directories in the layout of ``cache.py --save_features``
(features_{mean,last}.npy (layers, N, d), labels.npy, meta.json, optionally stats.safetensors),
written with numpy by the ``write_features`` fixture."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

pytest.importorskip("sklearn")

import linear_sklearn  # noqa: E402
from ntps.probes import load_features  # noqa: E402


def test_linear_sklearn_end_to_end(tmp_path, toy_features, write_features):
    X, y = toy_features(N=200, d=10, C=3)
    Xt, yt = toy_features(N=60, d=10, C=3, noise_seed=1)
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


def test_bad_feature_directories_give_clear_errors(tmp_path, toy_features, write_features):
    X, y = toy_features(N=40, d=4, C=2)
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
