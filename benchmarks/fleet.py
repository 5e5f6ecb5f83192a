"""Fleet scale on Dask: devices per minute with 1 and 2 workers, peak memory per worker, bundle bytes, the
same run on a real `dask scheduler` + `dask worker` processes, and memory per worker at two fleet sizes.

    python benchmarks/fleet.py --devices 100 --small 25          # what fits a shared machine (results/fleet.md)
    python benchmarks/fleet.py --devices 1000 --small 100         # the issue's size: 1,000 x 7 days, 100 vs 1,000

Steps, all in this one run: the fleet (``--devices`` x ``--days``) is simulated on a 2-worker local cluster;
then ``fleet train`` (plain ``train``: the default family, window and stride of ``tinywarden fleet train``)
runs on a fresh LocalCluster of 1 worker and of 2 workers (one single-threaded process each); then on a real
scheduler plus 2 worker processes started here on 127.0.0.1 (``tinywarden.fleet.processes``); then on the
first ``--small`` devices alone (2 workers), to compare peak memory per worker against the full fleet. Peak
memory per worker is each worker process's ``VmHWM`` (peak resident set). After the 2-worker run every
bundle is verified and installed into a fresh device state, and ``fleet report`` is written. "End to end"
is train + sign (2 workers) + report, the issue's 15-minute goal. Nothing here asserts a time.
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

import numpy as np  # noqa: E402
from benchmarks.common import RESULTS, machine_info  # noqa: E402

from tinywarden import bundle as tb  # noqa: E402
from tinywarden.fleet.dataset import write_fleet  # noqa: E402
from tinywarden.fleet.ledger import bundle_path, summary_path  # noqa: E402
from tinywarden.fleet.manifest import MANIFEST_FILE, read_manifest  # noqa: E402
from tinywarden.fleet.report import write_report  # noqa: E402
from tinywarden.fleet.run import fleet_client, run_fleet  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "policy.toml"


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as fh:
        kb = next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM"))
    return round(kb / 1024, 1)


def train_once(root: Path, out: Path, key: Any, client: Any, label: str) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run = run_fleet(root, out, key, POLICY.read_bytes(), client)
    seconds = time.perf_counter() - start
    peaks = sorted(client.run(_vmhwm_mb).values())
    n = len(run.done)
    cpu = [json.loads(summary_path(out, d).read_text())["cpu_seconds"] for d in run.done]
    cpu_median = float(np.median(cpu)) if cpu else float("nan")
    print(f"{label}: {n} done, {len(run.failed)} failed in {seconds:.1f} s "
          f"({60 * n / seconds:.1f} devices/min); peak per worker {peaks} MB; "
          f"CPU per device {cpu_median:.2f} s (median)", flush=True)
    return {"run": label, "workers": run.workers, "devices": n, "failed": len(run.failed), "seconds": round(seconds, 1),
            "devices_per_min": round(60 * n / seconds, 2), "peak_mb_per_worker": peaks,
            "bundle_bytes": run.bundle_bytes, "cpu_seconds_per_device": round(cpu_median, 3),
            "cpu_seconds_total": round(float(np.sum(cpu)), 1)}


def subset(root: Path, n: int, dest: Path) -> Path:
    """The first ``n`` devices of the fleet at ``root`` as a fleet of its own (partitions linked, not copied)."""
    m = read_manifest(root)
    dest.mkdir(parents=True, exist_ok=True)
    import dataclasses

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
    ap.add_argument("--small", type=int, default=25, help="devices of the smaller fleet for the memory comparison")
    ap.add_argument("--no-real", action="store_true", help="skip the run on real scheduler/worker processes")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=RESULTS / "fleet.md")
    args = ap.parse_args()

    from tinywarden.fleet.processes import loopback_cluster

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tw-fleet-bench-") as tmp_s:
        tmp = Path(tmp_s)
        root = tmp / "fleet"
        key = tb.generate_key()
        pub = tb.public_key_of(key)
        start = time.perf_counter()
        with fleet_client(workers=2) as client:
            write_fleet(root, args.devices, args.days, seed=0, client=client)
        sim_s = time.perf_counter() - start
        print(f"simulated {args.devices} devices x {args.days:g} days in {sim_s:.1f} s", flush=True)

        for w in (1, 2):
            with fleet_client(workers=w) as client:
                rows.append(train_once(root, tmp / f"out{w}", key, client, f"LocalCluster, {w} worker(s)"))
        start = time.perf_counter()
        summary = write_report(tmp / "out2", tmp / "report.html", tmp / "report.json")
        report_s = time.perf_counter() - start
        verified, installed = verify_and_install(tmp / "out2", root, pub, tmp)
        if not args.no_real:
            with loopback_cluster(2) as address, fleet_client(address) as client:
                rows.append(train_once(root, tmp / "out-real", key, client,
                                       "dask scheduler + 2 dask worker processes (loopback)"))
        small = subset(root, args.small, tmp / "small")
        with fleet_client(workers=2) as client:
            rows.append(train_once(small, tmp / "out-small", key, client,
                                   f"LocalCluster, 2 workers, {args.small} devices"))

    one, two = rows[0], rows[1]
    efficiency = two["devices_per_min"] / (2 * one["devices_per_min"])
    # On a shared machine wall time measures the other users too; CPU seconds per device do not. If they stay
    # the same with 2 workers, the work splits without overhead and 2 free cores give 2 x 60 / cpu devices/min.
    cpu_efficiency = one["cpu_seconds_total"] / two["cpu_seconds_total"] if two["cpu_seconds_total"] else None
    free_rate = 2 * 60 / two["cpu_seconds_per_device"] if two["cpu_seconds_per_device"] else None
    end_to_end = two["seconds"] + report_s
    result = {
        "devices": args.devices, "days": args.days, "simulate_seconds": round(sim_s, 1), "runs": rows,
        "scaling_efficiency_1_to_2": round(efficiency, 3), "report_seconds": round(report_s, 1),
        "cpu_efficiency_1_to_2": None if cpu_efficiency is None else round(cpu_efficiency, 3),
        "devices_per_min_on_2_free_cores": None if free_rate is None else round(free_rate, 1),
        "end_to_end_seconds_2_workers": round(end_to_end, 1),
        "projected_1000_devices_minutes": round(end_to_end * 1000 / args.devices / 60, 1),
        "total_bundle_bytes": two["bundle_bytes"], "bundles_verified": verified, "bundles_installed": installed,
        "detection": {"incidents": summary["incidents"], "detected": summary["detected"],
                      "median_false_alarms_per_day": summary["median_false_alarms_per_day"]},
        "load_average": os.getloadavg(), "machine": machine_info(),
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        f"# Fleet scale on Dask: {args.devices} devices x {args.days:g} days (plain train)", "",
        "| run | workers | devices | failed | seconds | devices/min | peak MB per worker | bundle bytes "
        "| CPU s per device (median) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['run']} | {r['workers']} | {r['devices']} | {r['failed']} | {r['seconds']} | "
                     f"{r['devices_per_min']} | {', '.join(map(str, r['peak_mb_per_worker']))} | {r['bundle_bytes']} | "
                     f"{r['cpu_seconds_per_device']} |")
    lines += [
        "",
        f"- scaling efficiency 1 -> 2 workers, wall clock: {efficiency:.0%} (goal >= 80%); CPU work 1 worker / "
        f"2 workers: {cpu_efficiency if cpu_efficiency is None else f'{cpu_efficiency:.0%}'} (100% = no overhead "
        "from splitting)",
        f"- CPU-bound rate on 2 free cores: {free_rate if free_rate is None else f'{free_rate:.1f}'} devices/min "
        f"(2 x 60 / CPU s per device); 1,000 devices: "
        f"{'-' if free_rate is None else f'{1000 / free_rate:.1f}'} min of training",
        f"- end to end with 2 workers (train + sign {two['seconds']} s, report {report_s:.1f} s): {end_to_end:.0f} s; "
        f"linear projection to 1,000 devices: {result['projected_1000_devices_minutes']} min (goal < 15 min)",
        f"- bundles verified {verified}, installed {installed} of {two['devices']}; total {two['bundle_bytes']} B",
        f"- simulation (2 workers, not part of the goal): {sim_s:.0f} s",
        f"- load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} "
        f"(the machine is shared; times are wall clock)",
        "",
        f"Measured {result['machine']['date']} on {result['machine']['machine']}, "
        f"commit {result['machine']['commit']}.",
        f"Command: `python benchmarks/fleet.py --devices {args.devices} --days {args.days:g} --small {args.small}`",
    ]
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
