"""fleet train against a real `dask scheduler` and `dask worker` processes on loopback (not the in-process
LocalCluster): the bundles verify, and a wrong scheduler address is a one-line error."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tinywarden import bundle as tb
from tinywarden.cli import app
from tinywarden.errors import ConfigError
from tinywarden.fleet.dataset import write_fleet
from tinywarden.fleet.ledger import bundle_path, is_done
from tinywarden.fleet.processes import loopback_cluster
from tinywarden.fleet.run import fleet_client

pytest.importorskip("distributed")
runner = CliRunner()


@pytest.mark.slow
def test_fleet_train_on_a_real_scheduler_and_workers(tmp_path: Path) -> None:
    manifest = write_fleet(tmp_path / "fleet", 3, 0.5, seed=11, period_s=60.0)
    priv, pub = tb.write_keypair(tmp_path / "k")
    with loopback_cluster(n_workers=2) as address:
        assert address.startswith("tcp://127.0.0.1:")
        with fleet_client(address) as client:  # see test_workers_keep_glibc_dynamic_mmap_threshold
            assert set(client.run(_trim_threshold).values()) == {None}
            assert set(client.run(_profiling).values()) == {False}
            assert max(client.run(_wakeups_per_s).values()) <= 10
            assert client.run_on_scheduler(_wakeups_per_s) <= 15
        res = runner.invoke(app, ["fleet", "train", str(tmp_path / "fleet"), "--out", str(tmp_path / "b"),
                                  "--key", str(priv), "--scheduler", address])
    assert res.exit_code == 0, res.output
    assert "3 device(s) trained and signed" in res.output
    for d in manifest.devices:
        assert is_done(tmp_path / "b", d.device_id)
        tb.load_verified_bundle(bundle_path(tmp_path / "b", d.device_id), tb.load_public_key(pub))


def test_an_unreachable_scheduler_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match="--scheduler tcp://127.0.0.1:1: cannot connect"), \
            fleet_client("tcp://127.0.0.1:1", connect_timeout=1.0):
        pass
    with pytest.raises(ConfigError, match="--workers sizes the local cluster"), \
            fleet_client("tcp://127.0.0.1:1", workers=2):
        pass


def _trim_threshold() -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def _profiling(dask_worker: Any) -> bool:
    """Whether the worker's statistical profiler runs (see test_fleet_train's profile-history test)."""
    return "profile" in dask_worker.periodic_callbacks or "profile-cycle" in dask_worker.periodic_callbacks


def _wakeups_per_s(dask_worker: Any = None, dask_scheduler: Any = None) -> float:
    """How often a dask server's periodic callbacks wake its event loop, per second (by its configuration)."""
    server = dask_worker if dask_worker is not None else dask_scheduler
    return sum(1000.0 / pc.callback_time for pc in server.periodic_callbacks.values())


def test_workers_keep_glibc_dynamic_mmap_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's nanny gave each worker MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's dynamic mmap
    threshold: a device's job then faulted ~4x the pages and spent ~25% more CPU. Fleet workers go without.
    They also run without the profiler, and their event loops (and the nanny's and the scheduler's) wake a
    few times a second, not ~60 (health ticks every 20 ms, memory every 100 ms: ~5% of a core, idle)."""
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with fleet_client(workers=1) as client:
        assert set(client.run(_trim_threshold).values()) == {None}
        assert set(client.run(_profiling).values()) == {False}  # the nanny passes the worker config on
        assert max(client.run(_wakeups_per_s).values()) <= 10
        assert _wakeups_per_s(dask_worker=next(iter(client.cluster.workers.values()))) <= 10  # the nanny
        assert client.run_on_scheduler(_wakeups_per_s) <= 15
    assert "MALLOC_TRIM_THRESHOLD_" not in os.environ  # nor left behind for the next process this one starts
