"""A real Dask cluster on loopback: a ``dask scheduler`` process and ``dask worker`` processes.

What a user runs on a cluster (``dask scheduler`` on one host, ``dask worker tcp://host:8786`` on the
others), started here on 127.0.0.1 as separate processes so that ``fleet train --scheduler`` is measured
and tested against the real thing, not only the in-process LocalCluster. Used by ``benchmarks/fleet.py``
and the tests; it binds to loopback only.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tinywarden.errors import ConfigError
from tinywarden.fleet.run import CLUSTER_CONFIG

START_TIMEOUT_S = 120.0


def _dask_command() -> list[str]:
    exe = shutil.which("dask")
    if exe is None:
        raise ConfigError("the `dask` command is not on PATH: pip install 'tinywarden[fleet]'")
    return [exe]


def write_dask_config(config: dict[str, object], folder: Path) -> Path:
    """``config`` (dotted keys) as a YAML file in ``folder``, for a ``dask`` command started with
    ``DASK_CONFIG=folder``. A file and not ``DASK_...`` variables: dask lower-cases those names, and the
    variables a nanny sets are upper case."""
    import yaml

    nested: dict[str, object] = {}
    for dotted, value in config.items():
        *parents, leaf = dotted.split(".")
        level = nested
        for name in parents:
            level = level.setdefault(name, {})  # type: ignore[assignment]
        level[leaf] = value
    path = folder / "tinywarden-fleet.yaml"
    path.write_text(yaml.safe_dump(nested))
    return path


@contextlib.contextmanager
def loopback_cluster(n_workers: int = 2, memory_limit: str = "auto") -> Iterator[str]:
    """Start a scheduler and ``n_workers`` single-threaded worker processes on 127.0.0.1; yield its address.

    Every process is stopped (SIGTERM, then SIGKILL) when the block ends, whatever happens inside it.
    """
    dask = _dask_command()
    with tempfile.TemporaryDirectory(prefix="tw-dask-") as tmp:
        info = Path(tmp) / "scheduler.json"
        config_dir = Path(tmp) / "dask-config"
        config_dir.mkdir()
        write_dask_config(CLUSTER_CONFIG, config_dir)
        env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}  # see run.CLUSTER_CONFIG
        env |= {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "DASK_CONFIG": str(config_dir)}
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(subprocess.Popen(
                [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(info)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            address = _wait_for_address(info, procs[0])
            procs.append(subprocess.Popen(
                [*dask, "worker", address, "--host", "127.0.0.1", "--nworkers", str(n_workers), "--nthreads", "1",
                 "--no-dashboard", "--memory-limit", memory_limit],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))
            _wait_for_workers(address, n_workers)
            yield address
        finally:
            for p in reversed(procs):
                _stop(p)


def _wait_for_address(info: Path, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"dask scheduler exited at start (status {proc.returncode})")
        with contextlib.suppress(OSError, ValueError, KeyError):
            return str(json.loads(info.read_text())["address"])
        time.sleep(0.2)
    raise ConfigError(f"dask scheduler did not start within {START_TIMEOUT_S:.0f} s")


def _wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout=START_TIMEOUT_S) as client:
        client.wait_for_workers(n, timeout=START_TIMEOUT_S)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group this helper started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
