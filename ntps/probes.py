"""The paper's sklearn probes on cached features, and their closed form from the sums (SPEC §3).

Fig. 2 of the paper scores every (model, dataset) by two probes on the per-text mean-pooled
features of the train split, both fitted and scored in-sample:

* StandardScaler + LogisticRegression(solver="saga", max_iter=1000, tol=0.01) -> accuracy (and log-loss);
* StandardScaler + LinearRegression on one-hot targets -> MSE (mean over samples *and* classes).

The paper's saga fit stops where ``tol=0.01`` is met, often after some 50 iterations and far from the
optimum (e.g. in-sample accuracy 0.893 where the optimum gives 1.000): :func:`probe_both` fits it (the
paper-faithful numbers) and, beside it, the converged fit of :data:`CONVERGED_KWARGS` (lbfgs, tol 1e-6),
records per fit whether it converged (iterations vs ``max_iter``) and returns a warning where a fit did
not converge or stopped short of the converged accuracy.

:func:`sklearn_probes` runs both on a feature matrix (optionally also scoring a held-out split);
:func:`load_features` reads what ``cache.py --save_features`` wrote, checked against the sha256 of the
files and the statistics header that cache.py recorded. :func:`ls_mse_from_sums` gives
the in-sample least-squares MSE exactly from the statistics of SPEC §1 (XX, XY, sum_x, class
counts, N), with no second pass over the texts: with F (N×d) the features, Y (N×C) one-hot,
centred Gram G = XX − s sᵀ/N, centred cross B = XY − s nᵀ/N and centred target sums of squares
n_k − n_k²/N,

    MSE = [ Σ_k (n_k − n_k²/N) − tr(Bᵀ G⁺ B) ] / (N · C).

An ordinary least-squares fit with intercept only depends on the column span of the centred
features, which a StandardScaler (a positive per-feature scale) does not change, so the value is
that of StandardScaler + LinearRegression. G⁺ keeps eigenvalues above ``rcond`` times the trace of
the uncentred Gram matrix (the reference of its round-off; default ``max(N, d)·ε``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

__all__ = ["load_features", "sklearn_probes", "probe_both", "ls_mse_from_sums", "ls_mse_from_stats",
           "FEATURE_FILES", "LR_KWARGS", "CONVERGED_KWARGS"]

FEATURE_FILES = {"mean": "features_mean.npy", "last": "features_last.npy"}
#: The paper's logistic-regression settings (SPEC §3).
LR_KWARGS = {"solver": "saga", "max_iter": 1000, "tol": 0.01}
#: The converged fit reported beside it (the same L2-penalised objective, solved to tol 1e-6).
CONVERGED_KWARGS = {"solver": "lbfgs", "max_iter": 10000, "tol": 1e-6}
#: In-sample accuracy gap (paper fit vs converged fit) above which a warning is recorded.
ACC_GAP = 0.01


def load_features(directory: str | Path, pooling: str = "mean") -> tuple[np.ndarray, np.ndarray, dict]:
    """Features, labels and meta.json of a ``cache.py --save_features`` directory.

    Returns
    -------
    features : ndarray, shape (n_layers_saved, N, d), memory-mapped (float16/32)
        Axis 0 is aligned with ``meta["layers"]`` (hidden-state indices, 0 = embedding output).
    labels : ndarray of int64, shape (N,), values in ``0..C-1``
    meta : dict

    Raises
    ------
    FileNotFoundError
        A file is missing (with the cache.py command that writes it).
    ValueError
        Shapes disagree with each other or with meta.json, labels are not ``0..C-1``, meta.json disagrees
        with the stats header beside it (an :class:`~ntps.artifacts.ArtifactError` naming the fields), or a
        file's sha256 is not the one meta.json records (files of two runs in one directory).
    """
    directory = Path(directory)
    if pooling not in FEATURE_FILES:
        raise ValueError(f"pooling must be one of {sorted(FEATURE_FILES)}, got {pooling!r}")
    hint = (" Write it with `python cache.py --model M --dataset D --split S --save_features` "
            "(it goes into {output_dir}/{model}/{dataset}/{split}/).")
    if not directory.is_dir():
        raise FileNotFoundError(f"feature directory {directory} does not exist.{hint}")
    paths = {"meta": directory / "meta.json", "labels": directory / "labels.npy",
             "features": directory / FEATURE_FILES[pooling]}
    for what, path in paths.items():
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing ({what}).{hint}")
    meta = json.loads(paths["meta"].read_text())
    _check_recorded(directory, meta, [paths["labels"], paths["features"]])
    feats = np.load(paths["features"], mmap_mode="r", allow_pickle=False)
    labels = np.load(paths["labels"], allow_pickle=False)
    layers = list(meta.get("layers") or [])
    if feats.ndim != 3:
        raise ValueError(f"{paths['features']}: expected shape (layers, N, d), got {feats.shape}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{paths['labels']}: expected a 1-D integer array, got {labels.dtype} "
                         f"{labels.shape}")
    if feats.shape[1] != len(labels):
        raise ValueError(f"{paths['features']} has {feats.shape[1]} rows but {paths['labels']} "
                         f"{len(labels)}")
    if len(layers) != feats.shape[0]:
        raise ValueError(f"meta.json lists {len(layers)} layers but {paths['features']} holds "
                         f"{feats.shape[0]}")
    if meta.get("d") is not None and int(meta["d"]) != feats.shape[2]:
        raise ValueError(f"meta.json says d={meta['d']} but the features have width {feats.shape[2]}")
    C = int(meta.get("num_classes") or (labels.max() + 1 if len(labels) else 0))
    if len(labels) and (labels.min() < 0 or labels.max() >= C):
        raise ValueError(f"{paths['labels']}: labels must lie in 0..{C - 1} (num_classes={C}), found "
                         f"{sorted(set(np.unique(labels).tolist()))[:10]}")
    meta.setdefault("num_classes", C)
    return feats, labels.astype(np.int64), meta


def _check_recorded(directory: Path, meta: dict, files: list[Path]) -> None:
    """meta.json against the stats header beside it, and ``files`` against the sha256 it records
    (``ValueError``: a hand-edited meta.json, or files of two runs in one directory)."""
    from .artifacts import check_meta
    from .provenance import sha256_file

    if (directory / "stats.safetensors").is_file():
        check_meta(directory)
    recorded = (meta.get("features") or {}).get("sha256") or {}
    for path in files:
        if path.name in recorded and sha256_file(path) != recorded[path.name]:
            raise ValueError(f"{path} is not the file cache.py wrote with {directory / 'meta.json'} (sha256 "
                             "differs): the directory mixes two runs. Rerun cache.py --save_features --overwrite")


def _one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    Y = np.zeros((len(labels), num_classes))
    Y[np.arange(len(labels)), labels] = 1.0
    return Y


def sklearn_probes(X, y, num_classes: int, *, X_test=None, y_test=None, seed: int = 0,
                   lr_kwargs: dict | None = None, return_fit: bool = False):
    """StandardScaler + LogisticRegression (accuracy, log-loss) and StandardScaler + LinearRegression
    on one-hot targets (MSE), fitted on ``(X, y)``; scored on it (``"train"``, in-sample as in the
    paper) and on ``(X_test, y_test)`` (``"test"``) when given.

    Parameters
    ----------
    X : array, shape (N, d)      y : int array, shape (N,), values 0..num_classes-1
    X_test, y_test : optional held-out split of the same width
    seed : random_state of the saga solver
    lr_kwargs : overrides of :data:`LR_KWARGS`
    return_fit : also return the logistic fit's ``{"n_iter", "max_iter", "converged", "warnings"}``
        (``converged``: it stopped before ``max_iter``); without it, sklearn's ConvergenceWarning is re-issued

    Returns
    -------
    ``{"train": {"acc", "log_loss", "mse"}, "test": {...}}`` (float64 computation throughout), and the fit
    record with ``return_fit``.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"X must be (N, d) with N = len(y); got {X.shape} and {y.shape}")
    if len(np.unique(y)) < 2:
        raise ValueError("the probes need at least two classes in the training split")
    clf = make_pipeline(StandardScaler(), LogisticRegression(**{**LR_KWARGS, "random_state": seed,
                                                                 **(lr_kwargs or {})}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        clf.fit(X, y)
    lr = clf[-1]
    fit = {"n_iter": int(np.max(lr.n_iter_)), "max_iter": int(lr.max_iter), "warnings": []}
    fit["converged"] = fit["n_iter"] < fit["max_iter"]
    for w in caught:
        if issubclass(w.category, ConvergenceWarning) and return_fit:
            fit["warnings"].append(" ".join(str(w.message).split()))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    reg = make_pipeline(StandardScaler(), LinearRegression()).fit(X, _one_hot(y, num_classes))
    labels = np.arange(num_classes)
    splits = {"train": (X, y)}
    if X_test is not None:
        splits["test"] = (np.asarray(X_test, dtype=np.float64), np.asarray(y_test))
    out = {}
    for name, (Xs, ys) in splits.items():
        proba = clf.predict_proba(Xs)
        full = np.zeros((len(ys), num_classes))  # classes absent from the fit get probability 0
        full[:, clf.classes_] = proba
        out[name] = {
            "acc": float(np.mean(labels[full.argmax(1)] == ys)),
            "log_loss": float(log_loss(ys, np.clip(full, 1e-15, 1.0), labels=labels)),
            "mse": float(np.mean((reg.predict(Xs) - _one_hot(ys, num_classes)) ** 2)),
        }
    return (out, fit) if return_fit else out


def probe_both(X, y, num_classes: int, *, X_test=None, y_test=None, seed: int = 0,
               where: str = "") -> tuple[dict[str, dict], list[str]]:
    """The paper's probes (:data:`LR_KWARGS`) and, beside them, the converged logistic fit
    (:data:`CONVERGED_KWARGS`), as in :func:`sklearn_probes`.

    Returns ``({split: {"acc", "log_loss", "mse", "acc_converged", "log_loss_converged", "saga_n_iter",
    "saga_converged", "lbfgs_n_iter", "lbfgs_converged"}}, warnings)``: iterations of the paper's (saga) and
    the converged (lbfgs) fit and whether each converged (stopped before ``max_iter``); a warning (naming
    ``where``, e.g. the layer) for a fit that did not converge, and for a paper fit whose in-sample accuracy
    is more than :data:`ACC_GAP` from the converged fit's.
    """
    kw = {"X_test": X_test, "y_test": y_test, "seed": seed, "return_fit": True}
    paper, fit = sklearn_probes(X, y, num_classes, **kw)
    opt, fit_opt = sklearn_probes(X, y, num_classes, lr_kwargs=CONVERGED_KWARGS, **kw)
    rows = {split: {**r, "acc_converged": opt[split]["acc"], "log_loss_converged": opt[split]["log_loss"],
                    "saga_n_iter": fit["n_iter"], "saga_converged": fit["converged"],
                    "lbfgs_n_iter": fit_opt["n_iter"], "lbfgs_converged": fit_opt["converged"]}
            for split, r in paper.items()}
    notes = []
    for name, f, kwargs in (("the paper's", fit, LR_KWARGS), ("the converged", fit_opt, CONVERGED_KWARGS)):
        if not f["converged"]:
            notes.append(f"{where}: {name} logistic fit ({kwargs}) did not converge in {f['max_iter']} iterations"
                         + (f" ({f['warnings'][0]})" if f["warnings"] else ""))
    gap = rows["train"]["acc"] - rows["train"]["acc_converged"]
    if abs(gap) > ACC_GAP:
        notes.append(f"{where}: the paper's saga fit (tol {LR_KWARGS['tol']}) stopped after {fit['n_iter']} "
                     f"iterations, short of the optimum: in-sample accuracy {rows['train']['acc']:.3f} vs "
                     f"{rows['train']['acc_converged']:.3f} for the converged fit (acc_converged)")
    return rows, notes


def ls_mse_from_sums(XX, XY, sum_x, class_counts, n_texts: int | None = None, *,
                     rcond: float | None = None) -> float:
    """In-sample MSE of least squares with intercept on one-hot targets, from the sums of SPEC §1.

    Parameters
    ----------
    XX : (d, d) Σ x xᵀ     XY : (d, C) Σ x yᵀ     sum_x : (d,) Σ x     class_counts : (C,)
    n_texts : N (default ``class_counts.sum()``)
    rcond : eigenvalues of the centred Gram ≤ rcond · tr(XX) count as zero (default max(N, d)·ε)

    Returns
    -------
    float : mean over samples and classes of the squared residual, equal to StandardScaler +
    LinearRegression's in-sample MSE (to about ε·cond of the centred Gram).
    """
    from .baselines import ls_probe_mse

    counts = np.asarray(class_counts.detach().cpu() if hasattr(class_counts, "detach") else class_counts)
    n = int(counts.sum()) if n_texts is None else n_texts
    return ls_probe_mse(XX, XY, sum_x, counts, n, rcond=rcond)


def ls_mse_from_stats(stats_dir: str | Path, layers: list[int] | None = None) -> dict[int, float]:
    """:func:`ls_mse_from_sums` for the layers of a cache.py statistics artifact."""
    from .artifacts import load_stats

    stats = load_stats(stats_dir, layers=layers)
    return {layer: ls_mse_from_sums(s.XX, s.XY, s.sum_x, stats.class_counts, stats.n_texts)
            for layer, s in sorted(stats.layers.items())}
