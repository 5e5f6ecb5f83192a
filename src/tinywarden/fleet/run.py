"""Train a whole fleet on Dask: one task per device, signed and written as each one finishes.

By default a ``dask.distributed`` :class:`~distributed.LocalCluster` with one single-threaded worker
process per core (or ``workers``); with ``scheduler`` (``tcp://host:8786``) the tasks go to a running
cluster, whose workers must see the fleet folder at the same path. Each task reads only its own device's
partition (:func:`~tinywarden.fleet.device.train_device`), so a worker's memory is one device's data
whatever the fleet size. A task that fails is reported and the others go on; a worker that dies mid-task
has its task rerun elsewhere by the scheduler (``distributed.scheduler.allowed-failures``). Devices
already done (:func:`~tinywarden.fleet.ledger.is_done`) are skipped, so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinywarden.bundle import public_key_of
from tinywarden.errors import ConfigError, TinywardenError
from tinywarden.fleet.device import DeviceOutcome, TrainOptions, train_device
from tinywarden.fleet.ledger import is_done, publish, start_run, write_run
from tinywarden.fleet.manifest import read_manifest

#: ``progress(done, failed, remaining, device_id)`` after each device.
Progress = Callable[[int, int, int, str], None]
CONNECT_TIMEOUT_S = 10
IN_FLIGHT_PER_THREAD = 4
#: Dask configuration of the clusters this module starts. Dask's nanny starts each worker with
#: ``MALLOC_TRIM_THRESHOLD_=65536``, which keeps a long-lived worker's resident memory close to what it
#: holds, but setting it turns off glibc's dynamic mmap threshold: every array over 128 KB is then mapped
#: and unmapped afresh and its pages faulted in again. A device's job allocates many such arrays: with the
#: variable a job took 112,000 page faults and 0.30 CPU-s of system time instead of 26,000 and 0.08, about
#: a quarter of its CPU (benchmarks/results/fleet.md). A fleet worker holds one device's data at a time,
#: so nothing is left to trim. ``None`` removes the variable (the nanny's documented way). A cluster of
#: the user's (``--scheduler``) keeps its own configuration: the same effect there is this key set to
#: ``null`` in a dask YAML file its workers read (:func:`tinywarden.fleet.processes.write_dask_config`).
#:
#: The workers' statistical profiler is off. It samples the running task's stack every 10 ms from the
#: worker's event loop and keeps a tree of the samples for each second of the last 1,000 seconds (twice:
#: whole worker and per task prefix), reading every frame's source line through ``linecache``. A device's
#: job has deep, varied stacks (sklearn, numpy, the compiler driver): after 114 s of jobs a worker held
#: 39 MB of profile trees and 42 MB of cached source, so its memory grew with the run's length, i.e. with
#: the fleet size (390 MB at 100 devices, 487 MB at 1,000), and the sampling took the GIL from the job
#: 100 times a second. Dask's dashboard loses its profile page; nothing else reads it.
#:
#: The event loops wake less often. By default each scheduler, nanny and worker checks its loop's health
#: every 20 ms (``tick``), each nanny and worker reads its worker's memory every 100 ms and system
#: figures every 500 ms, and the scheduler rebalances queued tasks every 100 ms (work stealing): ~60
#: wake-ups a second per process, 24 ms of CPU a second in the client's process (scheduler + nannies)
#: and 13 ms in each worker with nothing to do, about 5% of a core for a 2-worker cluster, paid for every
#: second of the run. At 1 s, 1 s, 2 s and no stealing: 6.5 and 2.7 ms a second. Fleet tasks are equal
#: and few are in flight (:data:`IN_FLIGHT_PER_THREAD`); the scheduler's queue hands the next one to
#: whichever worker frees a thread, so there is nothing to steal; a worker's memory limit is still
#: checked every second, and a loop blocked for longer than ``tick.limit`` (3 s) is still logged.
CLUSTER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                  "distributed.worker.profile.enabled": False,
                  "distributed.admin.tick.interval": "1s",
                  "distributed.worker.memory.monitor-interval": "1s",
                  "distributed.admin.system-monitor.interval": "2s",
                  "distributed.scheduler.work-stealing": False}


@dataclass
class FleetRun:
    """What a run did: devices trained and signed now, skipped as already done, and failed (with why)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    bundle_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"done": self.done, "skipped": self.skipped, "failed": self.failed, "seconds": self.seconds,
                "workers": self.workers, "bundle_bytes": self.bundle_bytes}


@contextlib.contextmanager
def fleet_client(scheduler: str | None = None, workers: int | None = None,
                 memory_limit: str | int = "auto", processes: bool = True,
                 connect_timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """A :class:`distributed.Client`: on ``scheduler`` if given, else on a LocalCluster sized to the machine.

    ``processes=False`` runs the local workers as threads of this process (quick to start; for tests).
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ModuleNotFoundError:
        raise ConfigError("fleet commands need dask.distributed: pip install 'tinywarden[fleet]'") from None
    if scheduler is not None:
        if workers is not None:
            raise ConfigError("--workers sizes the local cluster; with --scheduler the cluster has its own workers")
        try:
            client = Client(scheduler, timeout=connect_timeout)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ConfigError(f"--scheduler {scheduler}: cannot connect ({type(exc).__name__}: {exc})") from None
        with client:
            yield client
        return
    n = workers if workers is not None else (os.cpu_count() or 1)
    if n < 1:
        raise ConfigError(f"--workers: expected 1 or more, got {n}")
    # Loopback only (in-process workers talk over inproc://), no dashboard; the scheduler's HTTP routes
    # (health) go on a free loopback port, not on :8787 of every interface. Workers without dask's
    # MALLOC_TRIM_THRESHOLD_, without the profiler, waking less often (see CLUSTER_CONFIG).
    with dask.config.set(CLUSTER_CONFIG), LocalCluster(n_workers=n, threads_per_worker=1, processes=processes,
                      host="127.0.0.1" if processes else None,
                      dashboard_address=None, scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                      memory_limit=memory_limit, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        yield client


def run_fleet(root: str | Path, out: str | Path, key: Any, policy: bytes, client: Any,
              options: TrainOptions | None = None, progress: Progress | None = None,
              task: Callable[..., DeviceOutcome] = train_device) -> FleetRun:
    """Train, sign and write every device of the fleet at ``root`` that is not done in ``out``.

    ``key`` is the Ed25519 private key (it stays in this process); ``task`` is the per-device job (the
    default is the real one; tests swap in one that kills its worker).
    """
    from distributed import as_completed

    options = options or TrainOptions()
    manifest = read_manifest(root)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    run = FleetRun(workers=len(client.scheduler_info().get("workers", {})))
    start = time.perf_counter()
    public_key = public_key_of(key)
    todo = []
    for spec in manifest.devices:
        if is_done(out_dir, spec.device_id, public_key):
            run.skipped.append(spec.device_id)
        else:
            todo.append(spec)
    start_run(out_dir, len(todo))  # from here on, until write_run, the folder holds a run that has not finished
    root_abs = str(Path(root).resolve())
    batch = uuid.uuid4().hex  # task keys unique to this run: a shared scheduler may hold another run's
    pending = iter(todo)
    futures: dict[Any, str] = {}
    running = as_completed()

    def submit_next() -> None:
        spec = next(pending, None)
        if spec is not None:
            future = client.submit(task, root_abs, spec, options, policy, key=f"tw-fleet-{spec.device_id}-{batch}",
                                   pure=False)
            futures[future] = spec.device_id
            running.add(future)

    # A bounded number of tasks in flight: the scheduler and this process hold a few tasks' arguments and
    # results at a time, whatever the fleet size.
    slots = IN_FLIGHT_PER_THREAD * max(1, sum(client.nthreads().values()))
    for _ in range(slots):
        submit_next()
    remaining = len(todo)
    if progress is not None:
        progress(0, 0, remaining, "")
    for future in running:
        device_id = futures.pop(future)
        remaining -= 1
        try:
            outcome: DeviceOutcome = future.result()
        except Exception as exc:  # noqa: BLE001 - the task itself died (e.g. its worker, more than allowed)
            outcome = DeviceOutcome(device_id, False, f"{device_id}: task failed: {type(exc).__name__}: {exc}")
        if outcome.ok:
            try:
                summary = publish(out_dir, outcome, key)
            except TinywardenError as exc:
                outcome = DeviceOutcome(device_id, False, str(exc))
            except OSError as exc:
                outcome = DeviceOutcome(device_id, False, f"{device_id}: cannot write its bundle ({exc})")
            else:
                run.done.append(device_id)
                run.bundle_bytes += summary["bundle_bytes"]
        if not outcome.ok:
            run.failed[device_id] = outcome.error
        future.release()
        submit_next()
        if progress is not None:
            progress(len(run.done), len(run.failed), remaining, device_id)
    run.seconds = time.perf_counter() - start
    write_run(out_dir, run.to_dict())
    return run
