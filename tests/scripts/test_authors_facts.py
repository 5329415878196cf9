"""bench/authors_facts.py (SPEC §6, README "Differences from the authors' code"): its pieces against known answers,
then the script on a two-class toy artifact."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from ntps.score import ntps_sweep, solve_layer


def _module(repo_root):
    sys.path.insert(0, str(repo_root / "bench"))
    try:
        import authors_facts
    finally:
        sys.path.pop(0)
    return authors_facts


def test_overlap_is_one_for_one_span_and_zero_for_orthogonal_spans(repo_root):
    af = _module(repo_root)
    rng = np.random.default_rng(0)
    V = torch.as_tensor(rng.normal(size=(10, 3)))
    assert af.overlap(V, V @ torch.as_tensor(rng.normal(size=(3, 3)))) == pytest_approx(1.0)
    E = torch.eye(10, dtype=torch.float64)
    assert af.overlap(E[:, :3], E[:, 3:6]) == pytest_approx(0.0)
    assert af.captured(E[:, :2], E[:, :3]) == pytest_approx(1.0) and af.captured(E[:, 3:5], E[:, :3]) == 0.0


def test_authors_algorithm_in_float64_equals_ours_with_their_cutoff_where_unique(repo_root, random_stats):
    af = _module(repo_root)
    rng = np.random.default_rng(1)
    n = 400
    XX, XY, C0, C1 = (torch.as_tensor(t) for t in random_stats(rng, d=12, N=n, C=4))
    M, N = XY @ XY.T / n**2, C1 @ C1.T / n**2
    U = af.authors_eig(M, XX / n, "descending")
    V = af.authors_eig(N, C0 / n, "descending")
    ours = ntps_sweep(solve_layer(XX, XY, C0, C1, atol=af.ATOL, n_texts=n), fractions=[0.5])
    kU, kV = int(ours["k_U"][0]), int(ours["k_V"][0])
    assert ours["unique"][0]
    assert af.captured(U[:, :kU], V[:, :kV]) == pytest_approx(float(ours["ntps"][0]), abs=1e-8)


def test_script_reports_no_unique_ascending_cell_with_two_classes(repo_root, make_artifact, tmp_path):
    make_artifact(tmp_path / "a", n_layers=2, d=48, C=2, N=300)  # f <= 0.95: k_U <= r_U - C, the null block
    out = subprocess.run([sys.executable, str(repo_root / "bench" / "authors_facts.py"), "--stats_dir",
                          str(tmp_path / "a"), "--fractions", "0.25,0.5"], capture_output=True, text=True, check=True)
    assert "C = 2: 0 of" in out.stdout and "smallest overlap" in out.stdout


def pytest_approx(x, abs=1e-10):
    import pytest

    return pytest.approx(x, abs=abs)
