"""Fleet scale on Dask: devices per minute with 1 and 2 workers, CPU seconds per device, peak memory per
worker at two fleet sizes, bundle bytes, and the same run on a real `dask scheduler` + `dask worker` processes.

    python benchmarks/fleet.py --devices 100 --small 25               # a quick look
    python benchmarks/fleet.py --devices 1000 --small 100             # the issue's size: 1,000 x 7 days
    python benchmarks/fleet.py --devices 1000 --small 100 --fleet DIR # reuse a fleet `simulate --fleet` wrote

Steps, all in this one run: the fleet (``--devices`` x ``--days``) is simulated on a 2-worker local cluster
(or read from ``--fleet``). ``fleet train`` (plain ``train``: the default family, window and stride of
``tinywarden fleet train``) runs on a fresh LocalCluster of 2 workers (one single-threaded process each) on
the first ``--small`` devices, then on the whole fleet (the issue's goal, run early in case the machine is
slow), then on the small fleet with 1 worker, then on a real scheduler plus 2 worker processes started here
on 127.0.0.1 (``tinywarden.fleet.processes``). Every bundle of the whole-fleet run is verified and installed
into a fresh device state, and ``fleet report`` is written; train + sign + report is the issue's "1,000
devices in 15 minutes". Peak memory per worker is each worker process's
``VmHWM`` (peak resident set), compared between the small and the whole fleet.

The machine is shared, so wall clock measures the other users too. Every run therefore also counts CPU
seconds: each worker process's own and its children's (the cross-compiler that sizes a module), and this
process's (the client, and for LocalCluster the scheduler and the nannies), plus the real scheduler's and
nannies'. On otherwise idle cores a run could not take less than ``max(busiest worker's CPU, all CPU / cores)``;
that floor, 1 worker against 2, is the CPU-time scaling efficiency. Load averages are recorded at the start and
end of every run. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import dataclasses
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

import numpy as np  # noqa: E402
from benchmarks.common import RESULTS, machine_info  # noqa: E402

from tinywarden import bundle as tb  # noqa: E402
from tinywarden.fleet.dataset import write_fleet  # noqa: E402
from tinywarden.fleet.ledger import bundle_path, summary_path  # noqa: E402
from tinywarden.fleet.manifest import MANIFEST_FILE, read_manifest  # noqa: E402
from tinywarden.fleet.report import write_report  # noqa: E402
from tinywarden.fleet.run import fleet_client, run_fleet  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "policy.toml"
CORES = os.cpu_count() or 1


def _cpu(t: os.times_result, children: bool = True) -> float:
    return t.user + t.system + ((t.children_user + t.children_system) if children else 0.0)


def _worker_facts() -> dict[str, Any]:
    """Run on each worker: its peak RSS, its CPU seconds (with the tools it ran), and its nanny's CPU."""
    import psutil

    with open("/proc/self/status") as fh:
        kb = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM"))
    parent = psutil.Process(os.getppid())
    pt = parent.cpu_times()
    return {"peak_mb": round(kb / 1024, 1), "cpu_s": _cpu(os.times()), "ppid": parent.pid,
            "parent_cpu_s": pt.user + pt.system}


def _scheduler_cpu() -> float:
    return _cpu(os.times(), children=False)


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def train_once(root: Path, out: Path, key: Any, client: Any, label: str, separate_scheduler: bool) -> dict[str, Any]:
    """One ``run_fleet`` on a fresh cluster, with wall clock, CPU seconds per process and peak memory."""
    shutil.rmtree(out, ignore_errors=True)
    load_start = load()
    own0 = _cpu(os.times(), children=False)
    start = time.perf_counter()
    run = run_fleet(root, out, key, POLICY.read_bytes(), client)
    seconds = time.perf_counter() - start
    client_cpu = _cpu(os.times(), children=False) - own0
    facts = client.run(_worker_facts)
    workers_cpu = sorted(round(f["cpu_s"], 1) for f in facts.values())
    peaks = sorted(f["peak_mb"] for f in facts.values())
    other_cpu = 0.0  # a real cluster's scheduler and nanny processes; LocalCluster's live in this process
    if separate_scheduler:
        other_cpu += client.run_on_scheduler(_scheduler_cpu)
        other_cpu += sum({f["ppid"]: f["parent_cpu_s"] for f in facts.values()}.values())
    n = len(run.done)
    summaries = [json.loads(summary_path(out, d).read_text()) for d in run.done]
    task_cpu = [s["cpu_seconds"] for s in summaries]
    task_wall = sum(s["task_seconds"] for s in summaries)
    total_cpu = sum(workers_cpu) + client_cpu + other_cpu
    floor = max(max(workers_cpu), total_cpu / CORES)  # the least wall time idle cores would need
    row = {
        "run": label, "workers": run.workers, "devices": n, "failed": len(run.failed), "seconds": round(seconds, 1),
        "devices_per_min": round(60 * n / seconds, 2), "peak_mb_per_worker": peaks, "bundle_bytes": run.bundle_bytes,
        "cpu_seconds_per_device_median": round(float(np.median(task_cpu)), 3) if task_cpu else None,
        "task_cpu_seconds": round(float(np.sum(task_cpu)), 1), "workers_cpu_seconds": workers_cpu,
        "client_scheduler_cpu_seconds": round(client_cpu + other_cpu, 1), "cpu_seconds_total": round(total_cpu, 1),
        "cpu_seconds_per_device_all": round(total_cpu / n, 3) if n else None,
        "busy_fraction": round(task_wall / (run.workers * seconds), 3),
        "cpu_share": round(total_cpu / seconds, 2), "idle_cores_floor_seconds": round(floor, 1),
        "devices_per_min_idle_cores": round(60 * n / floor, 1) if floor else None,
        "load_start": load_start, "load_end": load(),
    }
    print(json.dumps(row), flush=True)
    return row


def train_small(small: Path, tmp: Path, key: Any, workers: int, n: int, rows: list[dict[str, Any]]) -> Path:
    out = tmp / f"out{workers}"
    with fleet_client(workers=workers) as client:
        rows.append(train_once(small, out, key, client, f"LocalCluster, {workers} worker(s), {n} devices", False))
    return out


def subset(root: Path, n: int, dest: Path) -> Path:
    """The first ``n`` devices of the fleet at ``root`` as a fleet of its own (partitions linked, not copied)."""
    m = read_manifest(root)
    dest.mkdir(parents=True, exist_ok=True)
    for d in m.devices[:n]:
        os.symlink(root / d.partition, dest / d.partition)
    (dest / MANIFEST_FILE).write_text(dataclasses.replace(m, devices=m.devices[:n]).to_json())
    return dest


def verify_and_install(out: Path, root: Path, pub: bytes, tmp: Path) -> tuple[int, int]:
    verified = installed = 0
    for d in read_manifest(root).devices:
        path = bundle_path(out, d.device_id)
        if not path.is_file():
            continue
        tb.verify_bundle(path.read_bytes(), pub, source=str(path))
        verified += 1
        tb.install_bundle(path, pub, tmp / "state" / d.device_id)
        installed += 1
    return verified, installed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=100)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--small", type=int, default=25,
                    help="devices of the smaller fleet: 1 vs 2 workers, the real cluster, memory against the whole")
    ap.add_argument("--fleet", type=Path, default=None,
                    help="a fleet already simulated (its first --devices devices; --days is then its own)")
    ap.add_argument("--no-real", action="store_true", help="skip the run on real scheduler/worker processes")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=RESULTS / "fleet.md")
    args = ap.parse_args()

    from tinywarden.fleet.processes import loopback_cluster

    rows: list[dict[str, Any]] = []
    uptime_start = load()
    with tempfile.TemporaryDirectory(prefix="tw-fleet-bench-") as tmp_s:
        tmp = Path(tmp_s)
        key = tb.generate_key()
        pub = tb.public_key_of(key)
        sim_s = None
        if args.fleet is not None:
            root = subset(args.fleet.resolve(), args.devices, tmp / "fleet")
            days = read_manifest(root).days
        else:
            root, days = tmp / "fleet", args.days
            start = time.perf_counter()
            with fleet_client(workers=2) as client:
                write_fleet(root, args.devices, days, seed=0, client=client)
            sim_s = time.perf_counter() - start
            print(f"simulated {args.devices} devices x {days:g} days in {sim_s:.1f} s (load {load()})", flush=True)
        small_n = min(args.small, args.devices)
        small = subset(root, small_n, tmp / "small") if small_n < args.devices else root

        # the whole fleet right after the small 2-worker run: the goal first, if the machine is slow
        out2 = train_small(small, tmp, key, 2, small_n, rows)
        full_out = out2
        if small_n < args.devices:
            with fleet_client(workers=2) as client:
                rows.append(train_once(root, tmp / "out-full", key, client,
                                       f"LocalCluster, 2 workers, {args.devices} devices", False))
            full_out = tmp / "out-full"
        full = rows[-1]
        train_small(small, tmp, key, 1, small_n, rows)
        if not args.no_real:
            with loopback_cluster(2) as address, fleet_client(address) as client:
                rows.append(train_once(small, tmp / "out-real", key, client,
                                       f"dask scheduler + 2 dask worker processes (loopback), {small_n} devices",
                                       True))
        start = time.perf_counter()
        summary = write_report(full_out, tmp / "report.html", tmp / "report.json")
        report_s = time.perf_counter() - start
        verified, installed = verify_and_install(full_out, root, pub, tmp)

    two, one = rows[0], next(r for r in rows if r["workers"] == 1)
    wall_eff = two["devices_per_min"] / (2 * one["devices_per_min"])
    cpu_eff = one["idle_cores_floor_seconds"] / (2 * two["idle_cores_floor_seconds"])
    end_to_end = full["seconds"] + report_s
    idle_end_to_end = full["idle_cores_floor_seconds"] + report_s
    result = {
        "devices": args.devices, "days": days, "small": small_n, "simulate_seconds": sim_s, "runs": rows,
        "scaling_efficiency_wall_clock": round(wall_eff, 3), "scaling_efficiency_idle_cores": round(cpu_eff, 3),
        "report_seconds": round(report_s, 1), "end_to_end_seconds_2_workers": round(end_to_end, 1),
        "end_to_end_seconds_idle_cores": round(idle_end_to_end, 1),
        "full_run": full["run"], "total_bundle_bytes": full["bundle_bytes"], "bundles_verified": verified,
        "bundles_installed": installed,
        "detection": {"incidents": summary["incidents"], "detected": summary["detected"],
                      "median_false_alarms_per_day": summary["median_false_alarms_per_day"]},
        "load_start": uptime_start, "load_end": load(), "machine": machine_info(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    write_markdown(args, result)


def write_markdown(args: argparse.Namespace, result: dict[str, Any]) -> None:
    rows = result["runs"]
    two = rows[0]
    full = rows[1] if result["small"] < result["devices"] else two
    lines = [
        f"# Fleet scale on Dask: {result['devices']} devices x {result['days']:g} days (plain train)", "",
        "Wall clock on this shared 2-core machine measures the other users as much as tinywarden (load "
        "averages beside each run), so every run also counts CPU seconds: workers (with the cross-compiler "
        "that sizes each module), client + scheduler (+ nannies). *Idle-cores floor* = max(busiest worker's "
        "CPU, all CPU / 2 cores): the least wall time the run would take on an otherwise idle machine. "
        "*Busy* = task time / (workers x wall): how well the scheduler kept the workers fed.", "",
        "| run | devices | failed | wall s | devices/min (wall) | load 1/5/15 min, start -> end | CPU s per device "
        "(task median / all processes) | client + scheduler CPU s | busy | idle-cores floor s | devices/min on "
        "idle cores | peak MB per worker | bundle bytes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['run']} | {r['devices']} | {r['failed']} | {r['seconds']} | {r['devices_per_min']} | "
            f"{r['load_start']} -> {r['load_end']} | {r['cpu_seconds_per_device_median']} / "
            f"{r['cpu_seconds_per_device_all']} | {r['client_scheduler_cpu_seconds']} | {r['busy_fraction']:.0%} | "
            f"{r['idle_cores_floor_seconds']} | {r['devices_per_min_idle_cores']} | "
            f"{', '.join(map(str, r['peak_mb_per_worker']))} | {r['bundle_bytes']:,} |")
    small_peak = max(two["peak_mb_per_worker"])
    full_peak = max(full["peak_mb_per_worker"])
    lines += [
        "",
        f"- scaling 1 -> 2 workers ({result['small']} devices): on idle cores (CPU-time floor) "
        f"{result['scaling_efficiency_idle_cores']:.0%}, by wall clock {result['scaling_efficiency_wall_clock']:.0%} "
        "(goal >= 80%; the wall-clock figure moves with the other users' load)",
        f"- {full['devices']} devices on 2 workers: train + sign {full['seconds']} s wall "
        f"(idle-cores floor {full['idle_cores_floor_seconds']} s), report {result['report_seconds']} s: end to end "
        f"{result['end_to_end_seconds_2_workers'] / 60:.1f} min wall, "
        f"{result['end_to_end_seconds_idle_cores'] / 60:.1f} min on idle cores (goal < 15 min)",
        f"- peak memory per worker: {small_peak} MB with {result['small']} devices, {full_peak} MB with "
        f"{full['devices']} (one device's data at a time, whatever the fleet size)",
        f"- bundles verified {result['bundles_verified']}, installed {result['bundles_installed']} of "
        f"{full['devices']}; total {result['total_bundle_bytes']:,} B; detection {result['detection']}",
        f"- simulation: {'read from --fleet' if result['simulate_seconds'] is None else str(round(result['simulate_seconds'])) + ' s (2 workers, not part of the goal)'}",  # noqa: E501
        f"- load average at start: {result['load_start']}; at end: {result['load_end']}",
        "",
        f"Measured {result['machine']['date']} on {result['machine']['machine']}, "
        f"commit {result['machine']['commit']}.",
        f"Command: `python benchmarks/fleet.py --devices {result['devices']} --days {result['days']:g} "
        f"--small {result['small']}{' --fleet DIR' if args.fleet else ''}{' --no-real' if args.no_real else ''}`",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
