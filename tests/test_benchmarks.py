"""Smoke tests of the benchmark scripts: they run in quick mode and write well-formed JSON.

Benchmarks assert nothing about speed or quality here; the checks below are about the scripts' output
contract (keys, types, one row per detector) and about the KitNET re-implementation's basic behaviour.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
REQUIRED = {"dataset": str, "detector": str, "family": str, "int8": bool, "roc_auc": float, "pr_auc": float,
            "model_bytes": int, "windows_per_s": float}


def _need_peers() -> None:
    for pkg in ("pyod", "river"):
        pytest.importorskip(pkg, reason=f"{pkg} is a benchmark extra: pip install -e .[bench]")


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)


def test_quality_quick_writes_rows_with_required_keys(shared_data: Path, tmp_path: Path) -> None:
    _need_peers()
    out, results = tmp_path / "rows.json", tmp_path / "results"
    proc = _run([str(REPO / "benchmarks" / "quality.py"), "--quick", "--datasets", "nab,sim",
                 "--detectors", "ewma,kmeans", "--peers", "pca_baseline,river_hst,kitnet",
                 "--json", str(out), "--results", str(results)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert isinstance(rows, list)
    got = {(r["dataset"], r["detector"], r["int8"]) for r in rows}
    want = {(d, det, q) for d in ("nab", "sim") for det in ("ewma", "kmeans") for q in (False, True)}
    want |= {(d, p, False) for d in ("nab", "sim") for p in ("pca_baseline", "river_hst", "kitnet")}
    assert got == want
    for r in rows:
        for key, typ in REQUIRED.items():
            assert isinstance(r[key], typ) or (r[key] is None and typ is float), (key, r)
        assert r["family"] in ("tinywarden", "peer")
        assert r["model_bytes"] > 0 and r["windows_per_s"] > 0
        assert r["roc_auc"] is None or 0.0 <= r["roc_auc"] <= 1.0
    # the results folder holds the table, the plot and the same rows
    assert (results / "quality.png").stat().st_size > 0
    table = (results / "quality.md").read_text()
    assert "Protocol" in table and "| kmeans | yes |" in table
    assert json.loads((results / "quality.json").read_text()) == rows


def test_quality_rejects_unknown_dataset(tmp_path: Path) -> None:
    proc = _run([str(REPO / "benchmarks" / "quality.py"), "--quick", "--datasets", "nope"], tmp_path)
    assert proc.returncode == 2
    assert "unknown dataset(s) nope" in proc.stderr


def test_speed_quick_writes_json(tmp_path: Path) -> None:
    _need_peers()
    out = tmp_path / "speed.json"
    proc = _run([str(REPO / "benchmarks" / "speed.py"), "--quick", "--json", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(out.read_text())
    names = [r["detector"] for r in payload["rows"]]
    assert any(n.startswith("tinywarden") for n in names) and any("HST" in n for n in names)
    for r in payload["rows"]:
        assert r["stream_ns_per_sample"] > 0 and r["batch_samples_per_s"] > 0
    assert {(r["vary"], r["window"], r["channels"]) for r in payload["scaling"]} == {
        ("window", 64, 9), ("window", 128, 9), ("window", 256, 9),
        ("channels", 128, 4), ("channels", 128, 16), ("channels", 128, 64)}


def test_kitnet_scores_outliers_above_normal() -> None:
    sys.path.insert(0, str(REPO))
    from benchmarks.peers.kitnet import KitNET

    rng = np.random.default_rng(0)
    latent = rng.normal(size=(3000, 3))
    x = np.hstack([latent, latent @ rng.normal(size=(3, 9))]) + rng.normal(scale=0.05, size=(3000, 12))
    det = KitNET(max_ae_size=4).fit(x[:2500])
    assert sum(len(g) for g in det.groups_) == 12 and max(len(g) for g in det.groups_) <= 4
    assert sorted(int(i) for g in det.groups_ for i in g) == list(range(12))
    normal = det.score_samples(x[2500:])
    shifted = x[2500:].copy()
    shifted[:, 5] += 10 * x[:, 5].std()  # one feature far outside the range it learned
    assert np.median(det.score_samples(shifted)) > np.quantile(normal, 0.99)
    assert np.array_equal(det.score_samples(x[2500:]), normal)  # scoring does not learn
