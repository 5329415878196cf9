"""The paper's sklearn probes (Fig. 2, SPEC §3) on the features cached by ``cache.py --save_features``.

Per layer: StandardScaler + LogisticRegression(solver="saga", max_iter=1000, tol=0.01) -> accuracy and
log-loss; StandardScaler + LinearRegression on one-hot labels -> MSE (mean over samples and classes).
Both are fitted on the train features and scored in-sample (the paper's protocol) and, when the test
features exist, on the test split. No forward pass: the features come from cache.py.

The paper's saga fit stops at tol 0.01, often short of the optimum: beside its numbers (acc, log_loss) come
those of the converged fit (acc_converged, log_loss_converged: lbfgs, tol 1e-6), the iterations of both and
whether each converged; a fit that did not converge, or a paper fit more than 0.01 in-sample accuracy from
the converged one, is logged and listed under ``warnings`` in the JSON. Train and test features of other
models, layers, max_length or label mappings are refused.

Writes ``probes_sklearn.csv`` (columns layer,split,acc,log_loss,mse,acc_converged,log_loss_converged,
saga_n_iter,saga_converged,lbfgs_n_iter,lbfgs_converged) and ``probes_sklearn.json`` (settings, the sha256
of every file read, warnings, rows, environment) beside the train features; with ``--pooling last`` the files are
``probes_sklearn_last.*``. When ``stats.safetensors`` sits beside the features, the JSON also holds
the closed-form least-squares MSE from the sums (computed from float32 features, so it differs from
the sklearn MSE on float16 features by round-off only).

Examples:
    python cache.py --save_features && python cache.py --split test --save_features
    python linear_sklearn.py                          # outputs/smollm2-135m/vader-movies/train
    python linear_sklearn.py --features_dir outputs/Qwen__Qwen2-0.5B/emotion/train --layers 0,12,-1
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from ntps import cli
from ntps.io import environment_info, output_lock, write_csv, write_json
from ntps.probes import CONVERGED_KWARGS, FEATURE_FILES, LR_KWARGS, load_features, ls_mse_from_stats, probe_both
from ntps.provenance import check_same_source, cover_warnings, file_digests

COLUMNS = ["layer", "split", "acc", "log_loss", "mse", "acc_converged", "log_loss_converged", "saga_n_iter",
           "saga_converged", "lbfgs_n_iter", "lbfgs_converged"]
log = logging.getLogger(__name__)


def parse_args(argv=None):
    p = cli.parser("linear_sklearn.py", __doc__)
    g = cli.add_artifact_args(p, "--features_dir", title="the features (cache.py --save_features)",
                              what="cache.py --save_features directory of the train split",
                              model="model of the features")
    g.add_argument("--test_features_dir", default=None,
                   help="directory of the test-split features (default: the sibling 'test' directory if it "
                        "exists); 'none' = in-sample only")
    g = p.add_argument_group("probes")
    cli.add_layers_arg(g, help="hidden-state indices among the saved ones (0 = embedding output): 'all', '0,6,-1'")
    g.add_argument("--pooling", choices=["mean", "last"], default="mean",
                   help="mean-pooled (the paper) or last-token features")
    g.add_argument("--solver_seed", type=int, default=0, help="random_state of the saga solver")
    cli.add_output_args(p, default=None, help="output root: results go to {output_dir}/{model}/{dataset}/{split} "
                        "of the features (default: beside the train features)", overwrite=None)
    return cli.parse(p, argv)


def _locate(args):
    """(train features directory, test features directory or None)."""
    train_dir = cli.locate_artifact(args.features_dir, args.output_dir, args.model, args.dataset, args.split)
    if args.test_features_dir is None:
        test_dir = train_dir.parent / "test"
        return train_dir, (test_dir if (test_dir / "labels.npy").is_file() else None)
    return train_dir, (None if str(args.test_features_dir).lower() == "none" else Path(args.test_features_dir))


def main(args) -> dict:
    t0 = time.perf_counter()
    train_dir, test_dir = _locate(args)
    feats, labels, meta = load_features(train_dir, args.pooling)
    test = load_features(test_dir, args.pooling) if test_dir is not None else None
    layers = cli.select_layers(args.layers, meta["layers"], f"the features in {train_dir}")
    C = int(meta["num_classes"])
    if test is not None:
        check_same_source(meta, test[2], f"the train features {train_dir}", f"the test features {test_dir}")
        if test[0].shape[2] != feats.shape[2] or int(test[2]["num_classes"]) != C:
            raise ValueError(f"{test_dir} does not match {train_dir} (d or classes differ); recompute both with the "
                             "same cache.py settings")
    out_dir = cli.results_dir(train_dir, meta, args.output_dir, explicit=args.features_dir is not None)
    with output_lock(out_dir, "linear_sklearn.py", fix="pass --output_dir ROOT to write the results elsewhere"):
        return _probe(args, t0, train_dir, test_dir, feats, labels, meta, test, layers, out_dir)


def _probe(args, t0, train_dir, test_dir, feats, labels, meta, test, layers, out_dir) -> dict:
    C = int(meta["num_classes"])
    log.info(f"{meta.get('model')} on {meta.get('dataset')}: N={len(labels)} train"
             + (f", {len(test[1])} test" if test else " (no test features: in-sample only)")
             + f", d={feats.shape[2]}, C={C}, {len(layers)} layers, {args.pooling} pooling")
    warnings = cover_warnings(len(labels), feats.shape[2], log)
    rows = []
    for layer in layers:
        i = list(meta["layers"]).index(layer)
        kw = {"X_test": test[0][i], "y_test": test[1]} if test else {}
        res, notes = probe_both(feats[i], labels, C, seed=args.solver_seed, where=f"layer {layer}", **kw)
        for note in notes:
            log.warning(note)
        warnings += notes
        for split, r in res.items():
            rows.append({"layer": layer, "split": split, **r})
        shown = "  ".join(f"{s}: acc {r['acc']:.4f} (converged fit {r['acc_converged']:.4f}) log-loss "
                          f"{r['log_loss']:.4f} mse {r['mse']:.5f}" for s, r in res.items())
        log.info(f"layer {layer:>3}  {shown}")

    closed_form = None
    if (train_dir / "stats.safetensors").is_file():
        try:
            closed_form = {str(k): v for k, v in ls_mse_from_stats(train_dir, layers).items()}
        except (ValueError, KeyError) as e:  # an older or partial artifact: the probes stand alone
            log.warning(f"closed-form MSE skipped: {e}")

    stem = "probes_sklearn" if args.pooling == "mean" else f"probes_sklearn_{args.pooling}"
    names = ["meta.json", "labels.npy", FEATURE_FILES[args.pooling]] + (["stats.safetensors"] if closed_form else [])
    inputs = file_digests({f"{split}/{n}": d / n for split, d in (("train", train_dir), ("test", test_dir))
                           if d is not None for n in names if (d / n).is_file()})
    write_csv(out_dir / f"{stem}.csv", rows, COLUMNS)
    result = {
        "settings": {"pooling": args.pooling, "layers": layers, "seed": args.solver_seed,
                     "logistic_regression": LR_KWARGS, "logistic_regression_converged": CONVERGED_KWARGS,
                     "scaler": "StandardScaler",
                     "mse": "LinearRegression on one-hot labels, mean over samples and classes",
                     "protocol": "fit on train; 'train' rows in-sample (paper), 'test' rows held out; acc, log_loss: "
                                 "the paper's saga fit; acc_converged, log_loss_converged: the converged fit"},
        "inputs": inputs, "warnings": warnings,
        "features_dir": str(train_dir), "test_features_dir": str(test_dir) if test else None,
        "artifact": {k: meta.get(k) for k in ("model", "dataset", "split", "n_texts", "d", "num_classes",
                                              "label_names", "fingerprint")},
        "n_train": int(len(labels)), "n_test": int(len(test[1])) if test else None,
        "rows": rows, "mse_closed_form_from_stats": closed_form,
        "seconds": round(time.perf_counter() - t0, 2), "environment": environment_info(),
    }
    write_json(out_dir / f"{stem}.json", result)
    log.info(f"wrote {out_dir / (stem + '.csv')} and .json in {result['seconds']:.1f}s")
    return result


def run(argv=None) -> None:
    """``python linear_sklearn.py`` and the console command ``ntps-sklearn-probes``: :func:`main` behind
    :func:`ntps.cli.run` (one-line errors, exit status 2)."""
    cli.run(main, parse_args, "linear_sklearn.py", argv)


if __name__ == "__main__":
    run()
