"""Resident memory and CPU of the live agent on this host, at 1 Hz, on the default pipeline.

    python benchmarks/agent_footprint.py               # 10 minutes (the goal), writes results/agent_footprint.md
    python benchmarks/agent_footprint.py --minutes 3      # shorter; the table says how long it ran
    python benchmarks/agent_footprint.py --minutes 0.5 --results /tmp/fp.md --json /tmp/fp.json

What runs: the default pipeline (``tinywarden train``'s default detector, window 128 / stride 64) is fitted
on telemetry with this host's live channels, stored with its int8 program, bundled with
``examples/policy.toml`` and signed; then ``tinywarden agent`` samples this host live with psutil at
``--rate`` Hz (dry-run actuators) for the set duration, side by side in the same run: with the default
native runtime (the generated C built on this host, loaded through ctypes: :mod:`tinywarden.native`; the
agent's process imports no numpy), with ``--runtime int8`` (the same program interpreted with numpy) and
with ``--runtime float`` (the float pipeline, which loads torch). Floors, idle processes: python with the
libraries the lean agent cannot do without (cryptography for the bundle's Ed25519 signature, psutil for
the sampler), ``python -c 'import numpy'``, and numpy with those two libraries (the floor of any agent
that imports numpy). The training telemetry is a short live
recording of this host (``--train-seconds`` at 20 Hz) resampled with jitter to enough 1 s rows for the
default window: the model's quality is not what is measured here, its running cost is.

Measured per process from outside (psutil): peak resident memory (the kernel's ``VmHWM``), the mean
resident memory, and CPU time over the steady part of the run (after ``--warmup`` seconds, so the
start-up's imports and bundle verification are reported apart) as a percentage of one core; whether numpy
was mapped into the process at the end (``/proc/PID/maps``) and how many incidents each agent raised (the
native agent summarises an incident from the integer features its C computed, without numpy). The native
module is built before the run (:func:`prepare_native`, as installing the bundle on a device would), so
neither the child process that generates and compiles it nor the compiler is in any figure. The Wazuh
agent figure (about 35 MB resident on average) is the issue's reference, not measured here.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
from benchmarks.common import REPO, RESULTS, machine_info  # noqa: E402
from benchmarks.speed import DEFAULT_STRIDE, DEFAULT_WINDOW  # noqa: E402

from tinywarden.detectors import DEFAULT_FAMILY  # noqa: E402

WAZUH_RSS_MB = 35.0  # the Wazuh agent's average resident memory, as the issue quotes it
GOAL_RSS_MB = 40.0
GOAL_CPU_PCT = 1.0


def build_bundle(work: Path, train_seconds: float, rate: float) -> tuple[Path, Path, int]:
    """A signed bundle of the default pipeline on this host's live channels; (bundle, public key, rows)."""
    from tinywarden import bundle as tb
    from tinywarden.detectors import make_detector
    from tinywarden.modelfile import pipeline_to_bytes
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import int8_sections
    from tinywarden.telemetry import Series
    from tinywarden.telemetry.live import LiveSampler

    sampler = LiveSampler(0.05)
    live = sampler.collect(max(40, int(train_seconds * 20)))
    rng = np.random.default_rng(0)
    n = 40 * DEFAULT_WINDOW
    rows = live.values[rng.integers(0, len(live), n)]
    rows = rows + rng.normal(0.0, 1.0, rows.shape) * (0.05 * live.values.std(axis=0) + 1e-3)
    train = Series(1.7e9 + np.arange(n) / rate, np.abs(rows), live.channels, source="live-resampled")
    p = Pipeline(make_detector(DEFAULT_FAMILY), window=DEFAULT_WINDOW, stride=DEFAULT_STRIDE).fit(train)
    extra, arrays, note = int8_sections(p, train)
    if not extra:
        raise SystemExit(f"the default pipeline has no int8 program here: {note}")
    priv, pub = tb.write_keypair(work / "fleet")
    raw = tb.create_bundle(pipeline_to_bytes(p, extra, arrays), (REPO / "examples" / "policy.toml").read_bytes(),
                           {"model_id": "gateway-footprint", "profile": "gateway"})
    bundle = work / "gateway.twbundle"
    bundle.write_bytes(tb.sign_bundle(raw, tb.load_private_key(priv), version=1))
    return bundle, pub, n


def prepare_native(bundle: Path, pub: Path, state: Path) -> None:
    """Build the bundle's native module into ``state`` before the measured run, as installing it on a device
    does: a two-sample agent run that prepares it and stops."""
    subprocess.run([sys.executable, "-m", "tinywarden", "agent", "--bundle", str(bundle), "--pubkey", str(pub),
                    "--state-dir", str(state), "--rate", "20", "--max-samples", "2"], check=True,
                   capture_output=True, timeout=600)


def peak_rss_mb(proc: psutil.Process) -> float:
    """The kernel's high-water mark of the process's resident memory (``VmHWM``), in MB."""
    for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def maps_numpy(pid: int) -> bool:
    """Whether any of numpy's files are mapped into process ``pid``."""
    try:
        return "/numpy/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def watch(commands: dict[str, list[str]], seconds: float, warmup: float) -> list[dict[str, Any]]:
    """Run the commands side by side for ``seconds``; each one's memory and CPU (module docstring)."""
    procs = {name: subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for name, cmd in commands.items()}  # fmt: skip
    ps = {name: psutil.Process(p.pid) for name, p in procs.items()}
    rss: dict[str, list[float]] = {name: [] for name in procs}
    start = time.monotonic()
    cpu0: dict[str, float] = {}
    t0 = start
    peak: dict[str, float] = {}
    try:
        while time.monotonic() - start < seconds:
            time.sleep(1.0)
            for name, p in ps.items():
                if procs[name].poll() is not None:
                    err = procs[name].stderr.read().decode() if procs[name].stderr else ""
                    raise SystemExit(f"{name} exited early ({procs[name].returncode}): {err.strip()[-500:]}")
                rss[name].append(p.memory_info().rss / 2**20)
            if not cpu0 and time.monotonic() - start >= warmup:
                t0 = time.monotonic()
                cpu0 = {name: sum(p.cpu_times()[:2]) for name, p in ps.items()}
        wall = time.monotonic() - t0
        rows = []
        for name, p in ps.items():
            cpu = sum(p.cpu_times()[:2])
            peak[name] = peak_rss_mb(p)
            numpy_loaded = maps_numpy(p.pid)
            steady = rss[name][int(warmup):] or rss[name]
            rows.append({"process": name, "peak_rss_mb": round(peak[name], 1),
                         "mean_rss_mb": round(float(np.mean(steady)), 1),
                         "cpu_pct_one_core": round(100.0 * (cpu - cpu0.get(name, 0.0)) / max(wall, 1e-9), 3),
                         "startup_cpu_s": round(cpu0.get(name, 0.0), 2), "numpy_loaded": numpy_loaded})
        return rows
    finally:
        for p in procs.values():
            p.terminate()
        for p in procs.values():
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Agent footprint (live, psutil sampler)",
        "",
        f"`python benchmarks/agent_footprint.py --minutes {meta['minutes']:g}`: the agent sampling this host at "
        f"{meta['rate']:g} Hz for **{meta['minutes']:g} minutes** (the issue asks 10), default pipeline "
        f"({meta['detector']}, window {meta['window']} / stride {meta['stride']}, {meta['channels']} live channels), "
        f"dry-run actuators. CPU over the steady part (after {meta['warmup']:g} s of start-up). Machine: "
        f"{meta['machine']}.",
        "",
        "| process | peak RSS (MB) | mean RSS (MB) | CPU, % of one core | start-up CPU (s) | numpy loaded | "
        "incidents | goal |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for r in rows:
        goal = ""
        if r["process"].startswith("agent"):
            mem = "met" if r["peak_rss_mb"] <= GOAL_RSS_MB else "not met"
            cpu = "met" if r["cpu_pct_one_core"] <= GOAL_CPU_PCT else "not met"
            goal = f"memory {mem} (<= {GOAL_RSS_MB:g} MB), CPU {cpu} (<= {GOAL_CPU_PCT:g} %)"
        numpy = {True: "yes", False: "no"}.get(r.get("numpy_loaded"), "")  # type: ignore[arg-type]
        lines.append(f"| {r['process']} | {r['peak_rss_mb']} | {r['mean_rss_mb']} | {r['cpu_pct_one_core']} | "
                     f"{r['startup_cpu_s']} | {numpy} | {r.get('incidents', '')} | {goal} |")
    lines += [f"| Wazuh agent (quoted, not measured) | | ~{WAZUH_RSS_MB:g} | | | | | reference |", ""]
    if meta.get("note"):
        lines += [str(meta["note"]), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=15.0, help="seconds of start-up left out of the CPU figure")
    ap.add_argument("--train-seconds", type=float, default=20.0)
    ap.add_argument("--no-float", action="store_true", help="skip the float-runtime agent")
    ap.add_argument("--no-native-prepare", action="store_true",
                    help="let the native agent build its C module itself at start (counted in its start-up)")
    ap.add_argument("--results", type=Path, default=RESULTS / "agent_footprint.md")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--render", type=Path, default=None, help="only re-render --results from this JSON of a run")
    ap.add_argument("--note", default="", help="a line printed under the table (the machine's load, what changed)")
    args = ap.parse_args(argv)
    if args.render is not None:
        done = json.loads(args.render.read_text())
        args.results.write_text(markdown(done["rows"], done["meta"] | ({"note": args.note} if args.note else {})))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle, pub, _ = build_bundle(work, args.train_seconds, args.rate)
        from tinywarden.telemetry.live import LiveSampler

        channels = len(LiveSampler(1.0).channels)
        base = [sys.executable, "-m", "tinywarden", "agent", "--bundle", str(bundle), "--pubkey", str(pub),
                "--rate", str(args.rate)]
        native, int8 = "agent, native runtime (default)", "agent, int8 runtime"
        states = {native: work / "native", int8: work / "int8"}
        commands = {native: [*base, "--state-dir", str(states[native])],
                    int8: [*base, "--state-dir", str(states[int8]), "--runtime", "int8"]}
        if not args.no_float:
            states["agent, float runtime"] = work / "float"
            commands["agent, float runtime"] = [*base, "--state-dir", str(work / "float"), "--runtime", "float"]
        if not args.no_native_prepare:  # build the native module before the clock starts (a device's install)
            prepare_native(bundle, pub, states[native])
        commands["python + cryptography + psutil, idle (the lean agent's libraries)"] = [
            sys.executable, "-c", "import psutil, time; from cryptography.hazmat.primitives.asymmetric "
            "import ed25519; from cryptography.hazmat.primitives import serialization; time.sleep(1e6)"]
        commands["python + numpy, idle (floor)"] = [sys.executable, "-c", "import numpy, time; time.sleep(1e6)"]
        commands["python + numpy + cryptography + psutil, idle (the agent's libraries)"] = [
            sys.executable, "-c", "import numpy, psutil, time; from cryptography.hazmat.primitives.asymmetric "
            "import ed25519; from cryptography.hazmat.primitives import serialization; time.sleep(1e6)"]
        rows = watch(commands, args.minutes * 60.0, args.warmup)
        for r in rows:
            if r["process"] in states:
                status = states[r["process"]] / "status.json"
                r["incidents"] = json.loads(status.read_text())["incidents"] if status.exists() else None
    m = machine_info()
    meta = {"minutes": args.minutes, "rate": args.rate, "warmup": args.warmup, "detector": DEFAULT_FAMILY,
            "window": DEFAULT_WINDOW, "stride": DEFAULT_STRIDE, "channels": channels,
            "machine": f"{m['machine']}, Python {m['python']}, {m['date']}, commit {m['commit']}", "note": args.note}
    text = markdown(rows, meta)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text)
    if args.json is not None:
        args.json.write_text(json.dumps({"rows": rows, "meta": meta, "wazuh_rss_mb": WAZUH_RSS_MB}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
