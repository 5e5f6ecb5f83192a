"""Ray against Dask on the same fleet: the same per-device job, signing in the driver, 2 single-CPU workers.

    python benchmarks/fleet_ray.py --fleet DIR --devices 50 [--ray-path DIR]

A measurement, not a second engine: ``fleet train`` runs on Dask. Ray is not a dependency of tinywarden;
``--ray-path`` names a folder where it was installed on its own (``pip install --no-deps --target DIR ray``;
its core needs nothing the fleet extra lacks), so the measurement leaves the project's environment alone.

Both runs do what ``run_fleet`` does: the job :func:`tinywarden.fleet.device.train_device` on a worker,
at most 4 tasks per worker in flight, each result signed and written in the driver as it comes
(:func:`tinywarden.fleet.ledger.publish`). Dask: a LocalCluster from :func:`~tinywarden.fleet.run.fleet_client`
(2 worker processes + nannies; scheduler in this process). Ray: ``ray.init(num_cpus=2)`` (a GCS server, a
raylet with its object store, helper processes, and worker processes it starts on demand), no dashboard.
Counted for each: wall clock with the load average, CPU seconds of this process and of every process the
engine started (with their children, e.g. the cross-compiler), each worker's peak resident set (``VmHWM``),
and the engine's other processes' resident set at the end. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402
from benchmarks.common import RESULTS, machine_info  # noqa: E402
from benchmarks.fleet import POLICY, load, subset  # noqa: E402

from tinywarden import bundle as tb  # noqa: E402
from tinywarden.fleet.device import DeviceOutcome, TrainOptions, train_device  # noqa: E402
from tinywarden.fleet.ledger import publish  # noqa: E402
from tinywarden.fleet.manifest import read_manifest  # noqa: E402
from tinywarden.fleet.run import IN_FLIGHT_PER_THREAD, fleet_client, run_fleet  # noqa: E402

WORKERS = 2


def _hwm_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return round(next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM")) / 1024, 1)


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _own_cpu() -> float:
    """This process's own CPU; not its reaped children's: those are the engine's processes, counted live."""
    t = os.times()
    return t.user + t.system


def _descendants() -> list[psutil.Process]:
    return psutil.Process().children(recursive=True)


def _job_with_pid(root: str, spec: Any, options: TrainOptions, policy: bytes) -> tuple[int, DeviceOutcome]:
    """The device's job, and which worker process ran it (Ray renames its workers' command lines)."""
    return os.getpid(), train_device(root, spec, options, policy)


def _row(engine: str, n: int, failed: int, seconds: float, cpu: float, peaks: list[float], other_mb: float,
         load_start: str) -> dict[str, Any]:
    row = {"engine": engine, "devices": n, "failed": failed, "seconds": round(seconds, 1),
           "devices_per_min": round(60 * n / seconds, 2), "cpu_seconds": round(cpu, 1),
           "cpu_seconds_per_device": round(cpu / n, 3) if n else None, "peak_mb_per_worker": sorted(peaks),
           "other_processes_mb": round(other_mb, 1), "load_start": load_start, "load_end": load()}
    print(json.dumps(row), flush=True)
    return row


def run_dask(root: Path, out: Path, key: Any) -> dict[str, Any]:
    load_start, cpu0 = load(), _own_cpu()
    start = time.perf_counter()
    with fleet_client(workers=WORKERS) as client:
        run = run_fleet(root, out, key, POLICY.read_bytes(), client)
        seconds = time.perf_counter() - start
        pids = client.run(os.getpid)
        peaks = [_hwm_mb(p) for p in pids.values()]
        workers = {psutil.Process(p) for p in pids.values()}
        cpu = sum(_cpu(p) for p in workers)
        others = [p for p in _descendants() if p not in workers]
        other_mb = sum(p.memory_info().rss for p in others) / 2**20
        cpu += sum(_cpu(p) for p in others)
    cpu += _own_cpu() - cpu0
    return _row("Dask LocalCluster", len(run.done), len(run.failed), seconds, cpu, peaks, other_mb, load_start)


def run_ray(root: Path, out: Path, key: Any) -> dict[str, Any]:
    import ray

    out.mkdir(parents=True)
    load_start, cpu0 = load(), _own_cpu()
    start = time.perf_counter()
    ray.init(num_cpus=WORKERS, include_dashboard=False, log_to_driver=False, logging_level="ERROR",
             configure_logging=False)
    try:
        job = ray.remote(num_cpus=1, max_retries=2)(_job_with_pid)
        policy = POLICY.read_bytes()
        options = TrainOptions()
        specs = iter(read_manifest(root).devices)
        pending: dict[Any, str] = {}

        def submit() -> None:
            spec = next(specs, None)
            if spec is not None:
                pending[job.remote(str(root), spec, options, policy)] = spec.device_id

        for _ in range(IN_FLIGHT_PER_THREAD * WORKERS):
            submit()
        done = failed = 0
        worker_pids: set[int] = set()
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            device_id = pending.pop(ref)
            try:
                pid, outcome = ray.get(ref)
                worker_pids.add(pid)
            except Exception as exc:  # noqa: BLE001 - as run_fleet: a failed task is a failed device
                outcome = DeviceOutcome(device_id, False, f"{type(exc).__name__}: {exc}")
            if outcome.ok:
                publish(out, outcome, key)
                done += 1
            else:
                failed += 1
            submit()
        seconds = time.perf_counter() - start
        procs = _descendants()
        workers = [p for p in procs if p.pid in worker_pids]
        peaks = [_hwm_mb(p.pid) for p in workers]
        other_mb = sum(p.memory_info().rss for p in procs if p not in workers) / 2**20
        cpu = sum(_cpu(p) for p in procs)
    finally:
        ray.shutdown()
    cpu += _own_cpu() - cpu0
    return _row(f"Ray {ray.__version__}", done, failed, seconds, cpu, peaks, other_mb, load_start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fleet", type=Path, required=True, help="a fleet written by `tinywarden simulate --fleet`")
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--ray-path", type=Path, default=None, help="a folder where ray was installed with --target")
    ap.add_argument("--results", type=Path, default=RESULTS / "fleet-ray.md")
    args = ap.parse_args()
    if args.ray_path is not None:  # after site-packages, and for the workers ray starts
        sys.path.append(str(args.ray_path))
        repo = str(Path(__file__).resolve().parent.parent)  # Ray's workers import this module's job by name
        os.environ["PYTHONPATH"] = os.pathsep.join(
            p for p in (repo, os.environ.get("PYTHONPATH"), str(args.ray_path)) if p)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tw-fleet-ray-") as tmp_s:
        tmp = Path(tmp_s)
        root = subset(args.fleet.resolve(), args.devices, tmp / "fleet")
        key = tb.generate_key()
        for name, fn in (("dask", run_dask), ("ray", run_ray)):
            out = tmp / f"out-{name}"
            shutil.rmtree(out, ignore_errors=True)
            rows.append(fn(root, out, key))
        days = read_manifest(root).days
    write_markdown(rows, args, days)


def write_markdown(rows: list[dict[str, Any]], args: argparse.Namespace, days: float) -> None:
    m = machine_info()
    lines = [f"# Ray against Dask: the same {args.devices} devices x {days:g} days, 2 single-CPU workers", "",
             f"Command: `python benchmarks/fleet_ray.py --fleet DIR --devices {args.devices} --ray-path DIR`", "",
             "Wall clock on a shared 2-core machine: the load average is beside each run. CPU s: this process "
             "and every process the engine started, with their children (the cross-compiler).", "",
             "| engine | devices | failed | wall s | devices/min | CPU s (all processes) | CPU s per device | "
             "peak MB per worker | engine's other processes MB | load start -> end |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['devices']} | {r['failed']} | {r['seconds']} | {r['devices_per_min']} | "
                     f"{r['cpu_seconds']} | {r['cpu_seconds_per_device']} | "
                     f"{', '.join(map(str, r['peak_mb_per_worker']))} | {r['other_processes_mb']} | "
                     f"{r['load_start']} -> {r['load_end']} |")
    lines += ["", f"Measured {m['date']} on {m['machine']}, commit {m['commit']}.", ""]
    args.results.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
