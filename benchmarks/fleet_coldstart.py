"""Cold start (issue 18 item 3): what a device pays for running its profile's model instead of its own.

    python benchmarks/fleet_coldstart.py --devices 60 --days 7      # the published table
    python benchmarks/fleet_coldstart.py --devices 12 --days 3      # a quick look

Steps, all in this one run, through the same functions as the CLI: a fleet is simulated (``tinywarden
simulate --fleet``), every device is trained on its own attack-free span and signed (``tinywarden fleet
train``), then ``tinywarden fleet coldstart`` fits one model per profile on the attack-free spans of at most
``--max-devices`` of that profile's devices (at most half of them) and scores it on the *other* devices of
the profile, over the same post-training rows as their own models: false alarms per day and detection of the
simulated attacks, own model against profile model, device by device. Labels (the manifest's attack times)
are used only to score; nothing is fitted or chosen on them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, machine_info  # noqa: E402

from tinywarden import bundle as tb  # noqa: E402
from tinywarden.fleet.coldstart import cold_start  # noqa: E402
from tinywarden.fleet.dataset import write_fleet  # noqa: E402
from tinywarden.fleet.device import TrainOptions  # noqa: E402
from tinywarden.fleet.manifest import read_manifest  # noqa: E402
from tinywarden.fleet.run import fleet_client, run_fleet  # noqa: E402

POLICY = Path(__file__).resolve().parent.parent / "examples" / "policy.toml"


def measure(devices: int, days: float, seed: int, max_devices: int, workers: int) -> dict[str, Any]:
    options = TrainOptions()
    with tempfile.TemporaryDirectory(prefix="tw-coldstart-") as tmp_s, fleet_client(workers=workers) as client:
        tmp = Path(tmp_s)
        root, bundles = tmp / "fleet", tmp / "bundles"
        start = time.perf_counter()
        write_fleet(root, devices, days, seed=seed, client=client)
        key = tb.generate_key()
        run = run_fleet(root, bundles, key, POLICY.read_bytes(), client, options)
        trained = time.perf_counter()
        result, models = cold_start(root, bundles, read_manifest(root), client, options, max_devices)
        done = time.perf_counter()
    return {"devices": devices, "days": days, "seed": seed, "max_devices": max_devices, "workers": workers,
            "model": options.model, "window": options.window, "stride": options.stride,
            "own_models_failed": len(run.failed), "simulate_and_train_seconds": round(trained - start, 1),
            "coldstart_seconds": round(done - trained, 1),
            "profile_model_bytes": {p: len(m) for p, m in models.items()}, **result}


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def write_markdown(res: dict[str, Any], path: Path, command: str) -> None:
    lines = ["# Cold start: a profile model against each device's own (issue 18 item 3)", "",
             f"Produced by `{command}`.", "",
             (__doc__ or "").split("\n\n", 2)[2].strip(), "",
             f"Fleet: {res['devices']} simulated devices x {res['days']:g} days (seed {res['seed']}), "
             f"`fleet train` defaults ({res['model']}, window {res['window']}, stride {res['stride']}); "
             f"own models failed: {res['own_models_failed']}. Profile models on at most {res['max_devices']} "
             "devices each.", "",
             "| profile | trained on | compared on | incidents | detected, own model | detected, profile model "
             "| false alarms / day, own (mean) | false alarms / day, profile (mean) | profile model B |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    tot = {"n": 0, "inc": 0, "own": 0, "prof": 0, "fa_own": 0.0, "fa_prof": 0.0}
    for name, p in sorted(res["profiles"].items()):
        if "skipped" in p:
            lines.append(f"| {name} | skipped: {p['skipped']} | | | | | | | |")
            continue
        lines.append(f"| {name} | {len(p['trained_on'])} | {p['devices_compared']} | {p['incidents']} | "
                     f"{p['own_detected']} | {p['profile_detected']} | {_f(p['own_false_alarms_per_day'])} | "
                     f"{_f(p['profile_false_alarms_per_day'])} | {p['model_bytes']:,} |")
        n = p["devices_compared"]
        tot["n"] += n
        tot["inc"] += p["incidents"]
        tot["own"] += p["own_detected"]
        tot["prof"] += p["profile_detected"]
        tot["fa_own"] += (p["own_false_alarms_per_day"] or 0.0) * n
        tot["fa_prof"] += (p["profile_false_alarms_per_day"] or 0.0) * n
    if tot["n"]:
        lines.append(f"| **all** | | {tot['n']} | {tot['inc']} | {tot['own']} | {tot['prof']} | "
                     f"{tot['fa_own'] / tot['n']:.2f} | {tot['fa_prof'] / tot['n']:.2f} | |")
        lines += ["", f"Cost of the profile model, over the {tot['n']} devices that did not train it: detection "
                  f"{tot['prof']} of {tot['inc']} incidents against {tot['own']} with their own models; false "
                  f"alarms {tot['fa_prof'] / tot['n']:.2f} a day against {tot['fa_own'] / tot['n']:.2f}.",
                  "", "How to read it: a profile model is fitted on the normal of up to "
                  f"{res['max_devices']} devices, so its threshold is calibrated on that many times the windows of "
                  "one device's own model; a device's own model knows its own rhythm and firmware slot but only "
                  "its own few days. Which of the two raises fewer false alarms is what this table measures; "
                  "the per-device rows below show how much it varies from device to device."]
    per_device = [d for p in res["profiles"].values() for d in p.get("devices", [])]
    if per_device:
        lines += ["", "## Per device", "",
                  "| device | incidents | detected own / profile | false alarms / day own / profile |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {d['device_id']} | {d['incidents']} | {d['own_detected']} / {d['profile_detected']} | "
                  f"{_f(d['own_false_alarms_per_day'])} / {_f(d['profile_false_alarms_per_day'])} |"
                  for d in per_device]
    m = res["machine"]
    lines += ["", f"Simulate + own models {res['simulate_and_train_seconds']} s, cold start "
              f"{res['coldstart_seconds']} s wall on {res['workers']} workers (load average at start "
              f"{res['load_start']}). Measured {m.get('date', '')} on {m.get('machine', '')}, commit "
              f"{m.get('commit', '')}.", ""]
    path.write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=60)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-devices", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=RESULTS / "fleet-coldstart.md")
    args = ap.parse_args()
    load_start = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    res = measure(args.devices, args.days, args.seed, args.max_devices, args.workers)
    res["load_start"] = load_start
    res["machine"] = machine_info()
    command = "python benchmarks/fleet_coldstart.py " + " ".join(sys.argv[1:])
    if args.json:
        args.json.write_text(json.dumps(res, indent=1) + "\n")
    write_markdown(res, args.results, command.strip())
    print(args.results.read_text())


if __name__ == "__main__":
    main()
