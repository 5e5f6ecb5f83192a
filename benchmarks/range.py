"""The attack range (issue 15 item 4): a live Linux "device" protected end to end by the real CLI, attacked
by real processes, with every response checked on the real kernel.

Two network namespaces made for the run and joined by one veth pair; the only addresses are on the pair's
ends (``10.77.0.1/29`` on the device; ``.2`` backend and broker, ``.3`` an exfiltration drop, ``.4`` a flood
and scan victim on the peer), no namespace has a default route, so nothing can leave them. The device runs
a normal workload (uploads to the backend, an MQTT publisher, a day/night rhythm compressed to
``--day`` seconds); the peer runs a real Mosquitto bound to ``10.77.0.2``, an upload sink and a subscriber.

Pipeline, all through the CLI: ``record`` in the device namespace, ``tune --flash 8KB --ram 4KB``,
``keygen``, ``bundle``, ``sign``, ``install``, then ``agent --real-actuators --mqtt 10.77.0.2`` in the device
namespace. Then a normal period (false actions counted) and the attacks, each bounded in packets and time:
a CPU-bound miner, a UDP flood, bulk exfiltration to a new address, a TCP port scan, a fork storm. For each:
detected, time to the first alarm (windows and seconds), the actions really in place (the nftables drop
counter, the tc qdisc, the miner's process state), the dead-man/de-escalation revert, ``audit verify`` and
the incident as received by the subscriber. Namespaces and every process in them are removed at the end,
also on failure.

    sudo python benchmarks/range.py                       # 40 min recording, 30 min normal, 5 attacks
    sudo python benchmarks/range.py --record 120 --normal 120 --attacks flood,miner   # a quick look

Writes benchmarks/results/range.md and range.json. Internal roles (workload, sink, subscriber and the
attacks) are this file run as ``range.py role NAME ...`` inside a namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

DEVICE_IP, BACKEND_IP, EXFIL_IP, VICTIM_IP = "10.77.0.1", "10.77.0.2", "10.77.0.3", "10.77.0.4"
PREFIXLEN = 29
UPLOAD_PORT, CONFIG_PORT, EXFIL_PORT, MQTT_PORT, FLOOD_PORT = 8080, 8443, 443, 1883, 9
MINER_NAME = "tw-miner"  # the process name the policy's process actions match
TELEMETRY_TOPIC = "range/telemetry"
INCIDENT_TOPIC = "tinywarden/+/incident"
#: Channels the sampler reads host-wide (/proc/stat, /proc/loadavg, /proc/meminfo): on a real gateway they are
#: the device's own; on the range's shared machine they are every other job's, so they are left out of the
#: recording before tune by default (``--keep-host-channels`` keeps them).
HOST_WIDE = ("cpu_pct", "mem_pct", "load1")
ATTACKS = ("miner", "flood", "exfil", "scan", "forkstorm")
#: ``--min-confidence`` (the benchmark's default; ``none`` turns it off): the policy's tiers count a window only when
#: its calibrated confidence (:mod:`tinywarden.likelihood`) reaches it; 0.5 is a level the normal score distribution
#: reaches once in 1e5 windows, HTM's "red" level (Ahmad et al., 2017; ``tinywarden.likelihood.HOLDOFF_LEVEL``), a
#: published value. Alone it left the likelihood learning from attack windows, so the attacks that came after three
#: others were missed (results/range-bar-ungated.md); with :data:`LIKELIHOOD_GATE` all five were caught within 2
#: windows (results/range-alert-cap.md).
MIN_CONFIDENCE = 0.5
#: ``--likelihood-gate`` (the benchmark's default; ``none`` turns it off): ``tune --likelihood-gate``, levels over
#: z 3 teach the confidence scale 16 times more slowly, so one attack does not widen the scale the next is judged
#: on. 3 is the smaller of the two gates measured on NAB (``tinywarden.likelihood``), chosen before the range ran.
LIKELIHOOD_GATE = 3.0
#: ``--target-fpr`` (tune's): 0.001, the level about 1,460 held-out windows resolve (their second highest score or
#: so). The quiet of the normal period is left to :data:`MIN_CONFIDENCE`'s gate (a level reached once in 1e5
#: windows) and the tiers' k-of-n. Two runs used 1e-5, which those windows cannot resolve, so tune extrapolated it
#: with a peaks-over-threshold fit of their tail (``tinywarden.calibrate.tail_threshold``): 1.15 and 6.1 times
#: their highest score, and in the second the scan and the fork storm took 5 and 4 windows; replayed at 0.001
#: both met every goal (results/range-thresholds-1.md, range-thresholds-tail-2.md). 0.001 was set back before
#: the next runs, not after them: results/range-1e3-1.md met every goal, results/range-1e3-2.md had one false episode.
TARGET_FPR = 1e-3
#: Below this 1-minute load average at every checkpoint the page calls the 2-core machine nearly idle.
IDLE_LOAD = 1.5

POLICY = f"""
[adaptation]
enabled = false

[policy]
name = "range"
version = "1"
fail_safe_tier = "alert"
telemetry_timeout_s = 30

[critical]
addresses = ["{BACKEND_IP}"]   # the backend and broker stay reachable whatever the tier

[tiers.alert]
actions = ["notify", "throttle_miner"]   # not the traffic the model scores (Policy.advice)
k = 2
n = 3
{{gate}}deescalate_after_s = {{quiet}}
dead_man_s = {{dead_man}}

[tiers.constrain]
actions = ["cap_uplink", "egress_allowlist", "stop_miner"]
k = 3
n = 4
margin = 0.25
{{gate}}deescalate_after_s = {{quiet}}
dead_man_s = {{dead_man}}

[actions.notify]
type = "log"
message = "device behaves unusually"

[actions.throttle_miner]
type = "process_renice"
process = "{MINER_NAME}"
nice = 19

[actions.cap_uplink]
type = "tc_rate_limit"
interface = "{{iface}}"
rate = "2mbit"

[actions.egress_allowlist]
type = "nft_egress_allowlist"
allow = ["{BACKEND_IP}/32"]

[actions.stop_miner]
type = "process_suspend"
process = "{MINER_NAME}"
"""


def unavailable() -> str | None:
    """Why the range cannot run here (not root, no ``ip netns``, no nft/tc, no Mosquitto), or None."""
    if os.geteuid() != 0:
        return "the attack range needs root (network namespaces, nftables, tc)"
    for tool in ("ip", "nft", "tc", "nsenter", "unshare"):
        if shutil.which(tool) is None:
            return f"{tool} not installed (scripts/setup-system.sh installs iproute2 and nftables)"
    if mosquitto_binary() is None:
        return "mosquitto broker not installed (scripts/setup-system.sh installs it)"
    probe = f"twr-probe-{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def mosquitto_binary() -> str | None:
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else shutil.which("mosquitto")


def tinywarden_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "tinywarden", *args]


def role_argv(*args: str) -> list[str]:
    return [sys.executable, str(Path(__file__).resolve()), "role", *args]


def child_env() -> dict[str, str]:
    """The environment of every child: this checkout's tinywarden, no colour, one BLAS thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    env.update(NO_COLOR="1", COLUMNS="200", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    return env


# ------------------------------------------------------------------------------------------- namespaces


class Range:
    """The two namespaces, their veth pair and every process started in them; removed on exit."""

    def __init__(self, workdir: Path) -> None:
        tag = secrets.token_hex(3)
        self.device, self.peer = f"twr-dev-{tag}", f"twr-peer-{tag}"
        self.dev_if, self.peer_if = f"twd{tag}", f"twp{tag}"
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.env = child_env()
        self.device_init: int | None = None
        self._init_proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Range:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _create(self) -> None:
        for ns in (self.device, self.peer):
            _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", self.dev_if, "netns", self.device, "type", "veth",
              "peer", "name", self.peer_if, "netns", self.peer])  # fmt: skip
        self.run(self.device, ["ip", "addr", "add", f"{DEVICE_IP}/{PREFIXLEN}", "dev", self.dev_if])
        for ip in (BACKEND_IP, EXFIL_IP, VICTIM_IP):
            self.run(self.peer, ["ip", "addr", "add", f"{ip}/{PREFIXLEN}", "dev", self.peer_if])
        self.run(self.device, ["ip", "link", "set", self.dev_if, "up"])
        self.run(self.peer, ["ip", "link", "set", self.peer_if, "up"])
        for ns in (self.device, self.peer):  # paho's wake-up socket pair binds 127.0.0.1
            self.run(ns, ["ip", "link", "set", "lo", "up"])
        self._device_pid_namespace()

    def prefix(self, ns: str) -> list[str]:
        if ns == self.device and self.device_init is not None:
            return ["nsenter", "-t", str(self.device_init), "-n", "-p", "-m"]
        return ["ip", "netns", "exec", ns]

    def _device_pid_namespace(self) -> None:
        """A PID namespace (with its own /proc) for everything on the device, so ``proc_count`` and
        ``proc_cpu_pct`` count the device's processes, not the whole shared host's. Its init reaps orphans as
        a real init does (a ``sleep`` did not: a miner killed with its parent stayed a zombie, counted in
        ``proc_count`` for the rest of the run); killing it ends them all."""
        import psutil

        self._init_proc = subprocess.Popen([*self.prefix(self.device), "unshare", "--pid", "--fork", "--mount-proc",
                                            sys.executable, "-c", _REAPER])  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            kids = psutil.Process(self._init_proc.pid).children(recursive=True)
            if kids:
                self.device_init = kids[-1].pid
                return
            time.sleep(0.05)
        raise RuntimeError("unshare did not start the device's PID namespace")

    def run(self, ns: str, argv: Sequence[str], timeout: float = 600, check: bool = True) -> str:
        return _run([*self.prefix(ns), *argv], env=self.env, timeout=timeout, check=check)

    def spawn(self, ns: str, argv: Sequence[str], name: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "ab")  # noqa: SIM115  (closed with the process)
        proc = subprocess.Popen([*self.prefix(ns), *argv], stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        self.procs.append(proc)
        return proc

    def run_net(self, ns: str, argv: Sequence[str], check: bool = True) -> str:
        """``argv`` in the network namespace ``ns`` only: a process of the range's own (the monitor's ``nft``
        and ``tc`` polls) must not be one of the device's processes, which the sampler counts."""
        return _run(["ip", "netns", "exec", ns, *argv], env=self.env, check=check)

    def routes(self) -> dict[str, str]:
        """Each namespace's routing table, to show there is no way out."""
        return {ns: self.run(ns, ["ip", "-4", "route"]).strip() for ns in (self.device, self.peer)}

    def close(self) -> None:
        for proc in reversed(self.procs):
            stop(proc)
        if self.device_init is not None:  # the PID namespace's init: the kernel ends what is left in it
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.device_init, signal.SIGKILL)
        if self._init_proc is not None:
            stop(self._init_proc)
        for ns in (self.device, self.peer):
            listed = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
            for pid in listed.split():  # anything still running in a namespace this run made
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


#: The device's init: waits for every child it adopts, so an orphan never stays a zombie.
_REAPER = """
import os, time
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        time.sleep(0.5)
"""


def _run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600, check: bool = True) -> str:
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM (and SIGCONT, for a SIGSTOPped one) to the process and all its descendants, then SIGKILL.

    The descendants matter: ``nsenter`` runs the command as its child and does not pass signals on."""
    import psutil

    def tree() -> list[psutil.Process]:
        try:
            top = psutil.Process(proc.pid)
            return [*top.children(recursive=True), top]
        except psutil.NoSuchProcess:
            return []

    if proc.poll() is not None:
        return
    for p in tree():
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
            p.send_signal(signal.SIGCONT)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        for p in tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait(timeout)


def wait_listening(rng: Range, ns: str, addr: str, port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"{addr}:{port}" in rng.run(ns, ["ss", "-Hltn"], check=False):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on {addr}:{port} in {ns} after {timeout} s")


def start_broker(rng: Range) -> None:
    """A real Mosquitto in the peer namespace, bound to the backend address only."""
    conf = rng.workdir / "mosquitto.conf"
    conf.write_text("\n".join([
        f"listener {MQTT_PORT} {BACKEND_IP}", "allow_anonymous true", "persistence true",
        f"persistence_location {rng.workdir}/", "log_dest stderr", "log_type error", "log_type warning",
        "user root",  # otherwise it drops to its own user, which cannot reach a 0700 work folder
    ]) + "\n")  # fmt: skip
    rng.spawn(rng.peer, [str(mosquitto_binary()), "-c", str(conf)], "mosquitto")
    wait_listening(rng, rng.peer, BACKEND_IP, MQTT_PORT)


# ------------------------------------------------------------------------------------------- the pipeline


@dataclass
class Pipeline:
    """What the CLI produced: the chosen model, the device's state and keys."""

    model: str = ""
    window: int = 0
    stride: int = 0
    flash: int = 0
    ram: int = 0
    channels: int = 0
    record_rows: int = 0
    record_s: float = 0.0
    tune_s: float = 0.0
    calibration_windows: int = 0  # of the chosen model: its threshold is set from their scores (calibrate_threshold)
    state: Path = Path()
    pub: Path = Path()


def build_pipeline(rng: Range, record_s: float, rate: float, trials: int, target_fpr: float,
                   drop_host: bool = True, min_confidence: float | None = None, tune_args: Sequence[str] = (),
                   timer_floor_s: float = 4.0) -> Pipeline:
    """record (device namespace) -> tune -> keygen -> bundle -> sign -> install, all through the CLI.

    ``tune_args`` are more ``tune`` options (a smaller search: ``--families``, ``--windows``); the policy's
    de-escalation and dead-man timers are 3 and 4 windows, at least ``timer_floor_s`` and 1.5 times it."""
    w = rng.workdir
    p = Pipeline(state=w / "state", pub=w / "keys" / "fleet.pub")
    rec = w / "recording"
    t0 = time.monotonic()
    rng.run(rng.device, tinywarden_argv("record", "--out", str(rec), "--rate", f"{rate:g}", "--interface",
                                        rng.dev_if, "--duration", f"{record_s:g}s", "--format", "csv",
                                        "--flush", "2s"), timeout=record_s + 120)  # fmt: skip
    p.record_s = time.monotonic() - t0
    p.record_rows = sum(max(0, len(f.read_text().splitlines()) - 1) for f in rec.glob("*.csv"))
    if drop_host:
        drop_columns(rec, HOST_WIDE)
    t0 = time.monotonic()
    out = _run(tinywarden_argv("tune", str(rec), "--out", str(w / "model.twb"), "--flash", "8KB", "--ram", "4KB",
                               "--no-count", "--trials", str(trials), "--target-fpr", f"{target_fpr:g}", "--json",
                               *tune_args), env=rng.env, timeout=3600)
    p.tune_s = time.monotonic() - t0
    chosen = json.loads(out.strip().splitlines()[-1])
    p.model = f"{chosen['family']} {dict(chosen['params'])}, features {chosen['features']}"
    p.window, p.stride, p.flash, p.ram = chosen["window"], chosen["stride"], chosen["flash"], chosen["ram"]
    p.channels = len(chosen["channels"])
    p.calibration_windows = calibration_windows(w / "model.twb")
    (w / "policy.toml").write_text(policy_text(rng.dev_if, p.stride / rate, min_confidence, timer_floor_s))
    (w / "keys").mkdir(exist_ok=True)
    cli = [
        ("keygen", "--out", str(w / "keys" / "fleet")),
        ("bundle", str(w / "model.twb"), "--policy", str(w / "policy.toml"), "--out", str(w / "range.twbundle"),
         "--model-id", "range-device", "--profile", "linux-gateway"),
        ("sign", str(w / "range.twbundle"), "--key", str(w / "keys" / "fleet.key"), "--version", "1"),
        ("install", str(w / "range.twbundle"), "--pubkey", str(p.pub), "--state-dir", str(p.state)),
    ]
    for args in cli:
        _run(tinywarden_argv(*args), env=rng.env, timeout=300)
    return p


def calibration_windows(model: Path) -> int:
    """How many held-out windows the model's threshold was calibrated on (0 when the file does not say)."""
    from tinywarden.modelfile import load_pipeline

    return int(getattr(load_pipeline(model), "train_summary_", {}).get("calibration_windows", 0))


def policy_text(iface: str, window_s: float, min_confidence: float | None = None,
                timer_floor_s: float = 4.0) -> str:
    """The range's policy for interface ``iface`` and windows every ``window_s``: de-escalation after 3 quiet
    windows and the dead-man after 4, at least ``timer_floor_s`` and 1.5 times it; with ``min_confidence`` both
    tiers count only windows at that calibrated confidence or above."""
    quiet, dead_man = max(timer_floor_s, 3 * window_s), max(1.5 * timer_floor_s, 4 * window_s)
    gate = "" if min_confidence is None else f"min_confidence = {min_confidence:g}\n"
    return POLICY.format(iface=iface, quiet=f"{quiet:g}", dead_man=f"{dead_man:g}", gate=gate)


def drop_columns(folder: Path, names: Sequence[str]) -> None:
    """Remove columns ``names`` from every CSV file of a recording folder, in place."""
    import csv

    for f in sorted(folder.glob("*.csv")):
        with open(f, newline="") as fh:
            rows = list(csv.reader(fh))
        keep = [i for i, name in enumerate(rows[0]) if name not in names]
        with open(f, "w", newline="") as fh:
            csv.writer(fh).writerows([[r[i] for i in keep] for r in rows])


# ------------------------------------------------------------------------------- roles inside the namespaces


def _stop_flag() -> threading.Event:
    """Set on SIGTERM/SIGINT, so a role finishes its bookkeeping and exits."""
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    return done


def _write_json(path: str, doc: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.replace(tmp, path)


def role_workload(a: argparse.Namespace) -> None:
    """The device's normal, following a compressed day: 1 Hz MQTT telemetry (QoS 1); uploads to the backend,
    each by a short-lived child process as a gateway's cron job would run ``curl``; now and then a
    configuration check on the backend's second port."""
    import paho.mqtt.client as mqtt

    done = _stop_flag()
    rnd = random.Random(a.seed)
    stats = {"uploads": 0, "upload_bytes": 0, "upload_errors": 0, "config_checks": 0, "published": 0}
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="range-device-telemetry", clean_session=False)
    client.connect(BACKEND_IP, MQTT_PORT, keepalive=30)
    client.loop_start()
    kids: dict[int, int] = {}
    last = None
    events = open(a.events, "a", buffering=1) if a.events else None  # noqa: SIM115  (closed at the end)
    t0, next_pub, next_upload, next_check = time.monotonic(), 0.0, 0.0, 5.0
    while not done.is_set():
        t = time.monotonic() - t0
        day = 0.5 - 0.5 * math.cos(2 * math.pi * t / a.day)  # 0 at "midnight", 1 at "noon"
        if t >= next_pub:
            stats["published"] += 1
            body = json.dumps({"seq": stats["published"], "temp": round(20 + 5 * day + rnd.gauss(0, 0.2), 2)})
            last = client.publish(TELEMETRY_TOPIC, body, qos=1)
            next_pub = t + 1.0
        if t >= next_upload:
            size = int(2000 + 30000 * day * rnd.uniform(0.7, 1.3))
            pace = rnd.uniform(0.1, 0.6 + day)
            if events is not None:  # what the device did, to explain a false alarm afterwards
                events.write(json.dumps({"t": time.time(), "kind": "upload", "bytes": size, "pace_s": pace}) + "\n")
            pid = os.fork()
            if pid == 0:
                os._exit(_upload(UPLOAD_PORT, size, pace))
            kids[pid] = size
            next_upload = t + rnd.expovariate(0.3 + 1.7 * day)
        if t >= next_check:
            if events is not None:
                events.write(json.dumps({"t": time.time(), "kind": "config", "bytes": 200, "pace_s": 0.5}) + "\n")
            pid = os.fork()
            if pid == 0:
                os._exit(_upload(CONFIG_PORT, 200, 0.5))
            kids[pid] = 0
            next_check = t + rnd.uniform(5, 20)
        for pid in list(kids):
            done_pid, code = os.waitpid(pid, os.WNOHANG)
            if done_pid:
                size = kids.pop(pid)
                key = "uploads" if size else "config_checks"
                stats[key] += code == 0
                stats["upload_errors"] += code != 0
                stats["upload_bytes"] += size if size and code == 0 else 0
        _write_every(a.stats, stats, t)
        done.wait(0.05)
    if last is not None:  # QoS 1: what was published is acknowledged before we leave
        with contextlib.suppress(RuntimeError, ValueError):
            last.wait_for_publish(10)
    client.loop_stop()
    client.disconnect()
    for pid in kids:
        os.waitpid(pid, 0)
    if events is not None:
        events.close()
    _write_json(a.stats, stats)


def _upload(port: int, size: int, pace_s: float) -> int:
    """One upload of ``size`` bytes to the backend, spread over ``pace_s``; the child's exit status."""
    try:
        with socket.create_connection((BACKEND_IP, port), timeout=5) as s:
            chunk = max(1, size // 4)
            for i in range(0, size, chunk):
                s.sendall(b"u" * min(chunk, size - i))
                time.sleep(pace_s / 4)
        return 0
    except OSError:
        return 1


_last_write = [0.0]


def _write_every(path: str, doc: dict[str, Any], t: float, every: float = 2.0) -> None:
    if t - _last_write[0] >= every:
        _write_json(path, doc)
        _last_write[0] = t


def role_sink(a: argparse.Namespace) -> None:
    """TCP sinks on the peer: the backend's upload port and the exfiltration drop; counts bytes per address."""
    done = _stop_flag()
    got: dict[str, int] = {}
    lock = threading.Lock()

    def serve(addr: str, port: int) -> None:
        srv = socket.create_server((addr, port), reuse_port=False)
        srv.settimeout(0.5)
        while not done.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            threading.Thread(target=drain, args=(conn, addr), daemon=True).start()

    def drain(conn: socket.socket, addr: str) -> None:
        with conn:
            conn.settimeout(10)
            with contextlib.suppress(OSError):
                while chunk := conn.recv(1 << 16):
                    with lock:
                        got[addr] = got.get(addr, 0) + len(chunk)

    for addr, port in ((BACKEND_IP, UPLOAD_PORT), (BACKEND_IP, CONFIG_PORT), (EXFIL_IP, EXFIL_PORT)):
        threading.Thread(target=serve, args=(addr, port), daemon=True).start()
    while not done.wait(1.0):
        with lock:
            _write_json(a.stats, dict(got))
    with lock:
        _write_json(a.stats, dict(got))


def role_subscriber(a: argparse.Namespace) -> None:
    """A fleet subscriber on the broker: incidents in full, the device's telemetry by sequence number."""
    import paho.mqtt.client as mqtt

    done = _stop_flag()
    out = open(a.out, "a", buffering=1)  # noqa: SIM115  (one line per message, closed at exit)

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        out.write(json.dumps({"at": time.time(), "topic": msg.topic, "payload": msg.payload.decode()}) + "\n")

    def on_connect(c: Any, *_: Any) -> None:
        c.subscribe([(INCIDENT_TOPIC, 1), (TELEMETRY_TOPIC, 1)])

    def on_subscribe(*_: Any) -> None:  # the range starts the device's workload only now
        Path(f"{a.out}.ready").touch()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="range-fleet", clean_session=False)
    client.on_message, client.on_connect, client.on_subscribe = on_message, on_connect, on_subscribe
    client.connect(BACKEND_IP, MQTT_PORT, keepalive=30)
    client.loop_start()
    done.wait()
    time.sleep(1.0)  # what is in flight
    client.loop_stop()
    client.disconnect()
    out.close()


def _set_name(name: str) -> None:
    """The process name (``comm``) the policy matches, as a real miner binary would have."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME


def _report(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


def attack_miner(a: argparse.Namespace) -> None:
    """CPU-bound hashing in one process per core for ``--seconds``; a SIGSTOP just pauses it."""
    _set_name(MINER_NAME)
    deadline = time.monotonic() + a.seconds
    kids = []
    for _ in range(a.procs):
        pid = os.fork()
        if pid == 0:
            _set_name(MINER_NAME)
            h, n = b"x", 0
            while time.monotonic() < deadline:
                for _ in range(20000):
                    h = hashlib.sha256(h).digest()
                n += 1
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    _report({"procs": a.procs})


def attack_flood(a: argparse.Namespace) -> None:
    """UDP datagrams to the victim in bursts of 100, at most ``--packets`` and ``--seconds`` (``--pps``: a pause
    after each burst for that rate, else as fast as possible)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    payload = os.urandom(64)
    sent = refused = 0
    deadline = time.monotonic() + a.seconds
    while sent + refused < a.packets and time.monotonic() < deadline:
        for _ in range(100):
            try:
                s.sendto(payload, (VICTIM_IP, FLOOD_PORT))
                sent += 1
            except PermissionError:  # a filter dropped it at the output hook
                refused += 1
            except (BlockingIOError, ConnectionRefusedError, OSError):
                refused += 0
        if a.pps:
            time.sleep(100 / a.pps)
    _report({"sent": sent, "refused_by_filter": refused})


def attack_exfil(a: argparse.Namespace) -> None:
    """Bulk upload to an address the device never talked to, reconnecting when cut off."""
    sent = attempts = 0
    deadline = time.monotonic() + a.seconds
    block = os.urandom(1 << 16)
    while sent < a.bytes and time.monotonic() < deadline:
        attempts += 1
        try:
            with socket.create_connection((EXFIL_IP, EXFIL_PORT), timeout=2) as s:
                s.settimeout(2)
                while sent < a.bytes and time.monotonic() < deadline:
                    sent += s.send(block)
        except OSError:
            time.sleep(0.5)
    _report({"bytes_sent": sent, "connection_attempts": attempts})


def attack_scan(a: argparse.Namespace) -> None:
    """TCP connect scan of the victim's ports 1..``--ports``, sweeping until ``--seconds`` or ``--probes``."""
    probes = answered = refused = 0
    deadline = time.monotonic() + a.seconds
    port = 0
    while probes < a.probes and time.monotonic() < deadline:
        port = port % a.ports + 1
        probes += 1
        try:
            with socket.create_connection((VICTIM_IP, port), timeout=0.2):
                answered += 1
        except ConnectionRefusedError:
            answered += 1  # RST: the port is closed, the host answered
        except PermissionError:
            refused += 1
        except OSError:
            pass
        if a.pps:
            time.sleep(1 / a.pps)
    _report({"probes": probes, "answered": answered, "refused_by_filter": refused})


def attack_forkstorm(a: argparse.Namespace) -> None:
    """At most ``--procs`` processes, forked at ``--rate`` per second, each alive until ``--seconds``."""
    deadline = time.monotonic() + a.seconds
    kids = []
    while len(kids) < a.procs and time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:
            time.sleep(max(0.0, deadline - time.monotonic()))
            os._exit(0)
        kids.append(pid)
        time.sleep(1 / a.rate)
    for pid in kids:
        os.waitpid(pid, 0)
    _report({"forked": len(kids)})


ROLES: dict[str, Callable[[argparse.Namespace], None]] = {
    "workload": role_workload, "sink": role_sink, "subscriber": role_subscriber, "miner": attack_miner,
    "flood": attack_flood, "exfil": attack_exfil, "scan": attack_scan, "forkstorm": attack_forkstorm,
}  # fmt: skip


#: The roles that send traffic from the device: they run only where the device's address is (its namespace).
SENDERS = ("workload", "flood", "exfil", "scan")


def _refuse_outside_the_device() -> None:
    """Exit unless this process is in the range's device namespace (the only one with ``DEVICE_IP``): run by
    hand on the host, a flood would follow the host's default route to whatever network that leads to."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((DEVICE_IP, 0))
        except OSError:
            raise SystemExit(f"range role: {DEVICE_IP} is not an address here, so this is not the range's device "
                             "namespace: refusing to send anything") from None


def role_main(argv: Sequence[str]) -> None:
    ap = argparse.ArgumentParser(prog="range.py role")
    ap.add_argument("name", choices=sorted(ROLES))
    ap.add_argument("--stats", default="")
    ap.add_argument("--out", default="")
    ap.add_argument("--events", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--day", type=float, default=120.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--packets", type=int, default=300_000)
    ap.add_argument("--pps", type=float, default=0.0)
    ap.add_argument("--bytes", type=int, default=200 << 20)
    ap.add_argument("--ports", type=int, default=1024)
    ap.add_argument("--probes", type=int, default=20_000)
    ap.add_argument("--rate", type=float, default=50.0)
    a = ap.parse_args(argv)
    if a.name in SENDERS:
        _refuse_outside_the_device()
    if a.name in ATTACKS:  # the attack starts now, not when the range asked for an interpreter (see started_at)
        _report({"started": time.time()})
    ROLES[a.name](a)


# ------------------------------------------------------------------------------------------- measuring


class Monitor:
    """Polls the device's real state twice a second: our nftables tables and their drop counters, the tc
    qdisc, and the state and nice value of every process named like the miner."""

    def __init__(self, rng: Range, period_s: float = 0.5) -> None:
        self.rng, self.period_s = rng, period_s
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> Monitor:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        import psutil

        while not self._stop.is_set():
            t = time.time()
            ruleset = self.rng.run_net(self.rng.device, ["nft", "list", "ruleset"], check=False)
            tables = {m.group(1): 0 for m in re.finditer(r"^table inet (tw_\w+)", ruleset, re.M)}
            for name, body in re.findall(r"^table inet (tw_\w+) \{(.*?)^\}", ruleset, re.M | re.S):
                tables[name] = sum(int(n) for n in re.findall(r"counter packets (\d+) bytes \d+ drop", body))
            qdisc = self.rng.run_net(self.rng.device, ["tc", "qdisc", "show", "dev", self.rng.dev_if, "root"],
                                     check=False)
            miners = []
            for p in psutil.process_iter(["name", "status", "nice"]):
                if p.info["name"] == MINER_NAME:
                    miners.append({"pid": p.pid, "status": p.info["status"], "nice": p.info["nice"]})
            self.samples.append({"t": t, "tables": tables, "tbf": "tbf 7477:" in qdisc, "miners": miners})
            self._stop.wait(self.period_s)

    def between(self, t0: float, t1: float) -> list[dict[str, Any]]:
        return [s for s in self.samples if t0 <= s["t"] <= t1]

    def quiet_since(self, since: float) -> bool:
        """No table of ours and no tc qdisc in the last sample, taken after ``since`` (epoch seconds)."""
        s = self.samples[-1] if self.samples else None
        return s is not None and s["t"] > since and not s["tables"] and not s["tbf"]


def read_status(state: Path) -> dict[str, Any]:
    try:
        return json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def device_quiet(state: Path, monitor: Monitor, since: float) -> bool:
    """The agent's status, written after ``since``, says tier 0 and the kernel shows none of our actions."""
    st = read_status(state)
    return st.get("tier") == 0 and float(st.get("last_update") or 0) > since and monitor.quiet_since(since)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(ValueError):
            out.append(json.loads(line))
    return out


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


@dataclass
class AttackSpec:
    name: str
    args: tuple[str, ...]
    what: str


def attack_specs(seconds: float) -> dict[str, AttackSpec]:
    """Each attack with its bounds (packets, bytes, probes, processes and time)."""
    s = f"{seconds:g}"
    packets = min(300_000, math.ceil(15_000 * seconds))  # 300,000 for the benchmark's 20 s
    # paced over its whole length: unpaced, a fast machine sent a short flood's packets before the allow-list was
    # in place, so whether the rule's counter saw any depended on the machine's speed
    pps = math.ceil(packets / seconds)
    return {
        "miner": AttackSpec("miner", ("--seconds", s, "--procs", "2"),
                            f"2 processes named {MINER_NAME} hashing SHA-256, {s} s"),
        "flood": AttackSpec("flood", ("--seconds", s, "--packets", str(packets), "--pps", str(pps)),
                            f"UDP 64 B datagrams to {VICTIM_IP}:{FLOOD_PORT}, <= {packets} packets at <= {pps}/s, "
                            f"<= {s} s"),
        "exfil": AttackSpec("exfil", ("--seconds", s, "--bytes", str(200 << 20)),
                            f"TCP bulk upload to new address {EXFIL_IP}:{EXFIL_PORT}, <= 200 MiB, <= {s} s"),
        "scan": AttackSpec("scan", ("--seconds", s, "--ports", "1024", "--probes", "20000", "--pps", "400"),
                           f"TCP connect scan of {VICTIM_IP} ports 1-1024, <= 20000 probes at <= 400/s, <= {s} s"),
        "forkstorm": AttackSpec("forkstorm", ("--seconds", s, "--procs", "300", "--rate", "60"),
                                f"<= 300 processes forked at 60/s, alive <= {s} s"),
    }  # fmt: skip


@dataclass
class Config:
    record_s: float = 2400.0
    normal_s: float = 1800.0
    rate: float = 10.0
    day_s: float = 120.0
    attacks: tuple[str, ...] = ATTACKS
    attack_s: float = 20.0
    trials: int = 6
    target_fpr: float = TARGET_FPR
    drop_host_channels: bool = True
    min_confidence: float | None = None  # the tiers' min_confidence (None: scores and k-of-n alone)
    likelihood_gate: float | None = None  # tune --likelihood-gate (None: every level teaches the scale alike)
    tune_args: tuple[str, ...] = ()  # more tune options (the test's smaller search)
    timer_floor_s: float = 4.0  # shortest de-escalation timer of the policy (the dead-man's is 1.5 times it)
    settle_s: float = 90.0  # longest wait for the device to be quiet again after an attack
    workdir: Path | None = None


@dataclass
class RangeResult:
    config: dict[str, Any]
    pipeline: dict[str, Any]
    routes: dict[str, str]
    normal: dict[str, Any]
    attacks: list[dict[str, Any]]
    broker: dict[str, Any]
    audit_verdict: str
    notes: list[str] = field(default_factory=list)
    load: dict[str, float] = field(default_factory=dict)  # the host's 1-minute load average at each phase
    tiers: dict[str, list[str]] = field(default_factory=lambda: dict(TIERS_BEFORE))  # the policy's actions


#: Each scored window of the range's agent, one JSON line (:func:`traced_agent`), in the work folder.
WINDOWS_TRACE = "windows.jsonl"
#: Each sample the range's agent read (:func:`traced_agent`), one JSON line, in the work folder.
SAMPLES_TRACE = "samples.jsonl"


def start_agent(rng: Range, pipe: Pipeline, rate: float) -> subprocess.Popen[bytes]:
    args = ("--pubkey", str(pipe.pub), "--state-dir", str(pipe.state), "--rate", f"{rate:g}", "--interface",
            rng.dev_if, "--mqtt", f"{BACKEND_IP}:{MQTT_PORT}", "--real-actuators", "--device-id", "range-device",
            "--poll", "3600")  # fmt: skip
    argv = [sys.executable, str(Path(__file__).resolve()), "traced-agent", str(rng.workdir / WINDOWS_TRACE), *args]
    proc = rng.spawn(rng.device, argv, "agent")
    if not wait_for(lambda: read_status(pipe.state).get("windows_scored", 0) >= 2 or proc.poll() is not None, 180):
        raise RuntimeError("the agent scored no window within 180 s")
    if proc.poll() is not None:
        tail = (rng.workdir / "agent.log").read_text()[-3000:]
        raise RuntimeError(f"the agent exited with {proc.returncode}: {tail}")
    return proc


def traced_agent(trace: str, agent_args: Sequence[str]) -> int:
    """``tinywarden agent AGENT_ARGS`` exactly as the console command runs it, plus one JSON line per scored
    window in ``trace``: its end time, raw score, calibrated confidence and the tier after it (what the tiers
    saw), through the agent's public ``on_window`` hook, so a run's misses and false actions can be studied
    afterwards on its own windows. Nothing the agent decides changes."""
    from tinywarden.agent import loop
    from tinywarden.agent.command import main as agent_main

    real = loop.session

    @contextlib.contextmanager
    def session(config: Any, source: Any, **kw: Any) -> Any:
        with open(trace, "a") as out:
            agent: list[Any] = []

            def on_window(ws: Any) -> None:
                c = agent[0].last_confidence if agent and math.isfinite(ws.score) else None
                out.write(json.dumps({"t": round(ws.time, 3), "score": ws.score, "confidence": c,
                                      "tier": ws.tier}) + "\n")

            sampler = getattr(source, "sampler", None)
            if sampler is not None:  # live: every sample the agent reads, to the samples trace
                source.sampler = _TeeSampler(sampler, Path(trace).with_name(SAMPLES_TRACE), source.channels)
            with real(config, source, on_window=on_window, **kw) as runner:
                agent.append(runner)
                yield runner

    loop.session = session  # type: ignore[assignment]
    return agent_main(list(agent_args))


class _TeeSampler:
    """A live sampler whose :meth:`stream` also writes each sample to ``path``: one JSON line of the channel
    names, then ``[time, value, ...]`` per sample, so a run's scores can be traced to the telemetry behind them."""

    def __init__(self, inner: Any, path: Path, channels: Sequence[str]) -> None:
        self._inner, self._path, self._channels = inner, path, list(channels)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def stream(self, n: int | None = None, **kw: Any) -> Any:  # the sampler's own options (values, sleep, ...)
        with open(self._path, "a") as out:
            out.write(json.dumps({"channels": self._channels}) + "\n")
            for t, v in self._inner.stream(n, **kw):
                out.write(json.dumps([round(t, 3), *(round(float(x), 4) for x in v)]) + "\n")
                yield t, v


def audit_verify(rng: Range, state: Path) -> str:
    proc = subprocess.run(tinywarden_argv("audit", "verify", str(state / "audit.log"), "--key",
                                          str(state / "keys" / "audit.key")),
                          capture_output=True, text=True, env=rng.env)  # fmt: skip
    return {0: "intact", 1: "tampered", 3: "unproven"}.get(proc.returncode, f"exit {proc.returncode}")


def started_at(log_lines: Sequence[str], spawned: float) -> float:
    """When the attack began: the ``{"started": ...}`` line its process printed once its interpreter was up
    (on a loaded machine that takes up to a second after the spawn, which no agent can see), else ``spawned``."""
    for line in log_lines:
        with contextlib.suppress(ValueError, TypeError, KeyError):
            return float(json.loads(line)["started"])
    return spawned


def start_services(rng: Range, work: Path, day_s: float) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The peer's broker, upload sink and fleet subscriber, then the device's normal workload once the subscriber
    has subscribed; ``(subscriber, workload)``."""
    start_broker(rng)
    rng.spawn(rng.peer, role_argv("sink", "--stats", str(work / "sink.json")), "sink")
    wait_listening(rng, rng.peer, BACKEND_IP, UPLOAD_PORT)
    subscriber = rng.spawn(rng.peer, role_argv("subscriber", "--out", str(work / "fleet.jsonl")), "subscriber")
    # the workload's first telemetry message would reach a broker without the subscription yet: lost there
    if not wait_for(lambda: (work / "fleet.jsonl.ready").exists() or subscriber.poll() is not None, 60, 0.1):
        raise RuntimeError("the fleet subscriber did not subscribe within 60 s")
    workload = rng.spawn(rng.device, role_argv("workload", "--stats", str(work / "workload.json"),
                                               "--events", str(work / "workload.jsonl"),
                                               "--day", f"{day_s:g}"), "workload")  # fmt: skip
    return subscriber, workload


def run_range(cfg: Config, log: Callable[[str], None] = print) -> RangeResult:
    """Build the range, run the pipeline, the normal period and the attacks; always tear it all down."""
    import tempfile

    specs = attack_specs(cfg.attack_s)
    unknown = [a for a in cfg.attacks if a not in specs]
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choose from {list(specs)}")
    with contextlib.ExitStack() as stack:
        work = cfg.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="twrange-")))
        work.mkdir(parents=True, exist_ok=True)
        rng = stack.enter_context(Range(work))
        log(f"range: namespaces {rng.device} / {rng.peer}, veth {rng.dev_if} / {rng.peer_if}, work {work}")
        subscriber, workload = start_services(rng, work, cfg.day_s)
        routes = rng.routes()
        load = {"recording": os.getloadavg()[0]}
        log(f"range: recording {cfg.record_s:g} s of normal at {cfg.rate:g} Hz in {rng.device}")
        gate_args = () if cfg.likelihood_gate is None else ("--likelihood-gate", f"{cfg.likelihood_gate:g}")
        pipe = build_pipeline(rng, cfg.record_s, cfg.rate, cfg.trials, cfg.target_fpr, cfg.drop_host_channels,
                              cfg.min_confidence, (*cfg.tune_args, *gate_args), cfg.timer_floor_s)
        period = pipe.stride / cfg.rate
        log(f"range: tuned {pipe.model}, window {pipe.window} stride {pipe.stride} ({period:g} s per window), "
            f"{pipe.flash} B flash, {pipe.ram} B RAM; starting the agent")
        agent = start_agent(rng, pipe, cfg.rate)
        monitor = Monitor(rng).start()
        stack.callback(monitor.close)

        n0 = time.time()
        load["normal start"] = os.getloadavg()[0]
        log(f"range: normal period, {cfg.normal_s:g} s")
        time.sleep(cfg.normal_s)
        n1 = time.time()
        load["normal end"] = os.getloadavg()[0]
        runs = []
        for name in cfg.attacks:
            spec = specs[name]
            asked = time.time()
            quiet = wait_for(lambda t=asked: device_quiet(pipe.state, monitor, t), cfg.settle_s)
            t0 = time.time()
            log(f"range: attack {name}: {spec.what}")
            proc = rng.spawn(rng.device, role_argv(name, *spec.args), f"attack-{name}")
            try:
                proc.wait(cfg.attack_s + 60)
            except subprocess.TimeoutExpired:
                stop(proc)
            t1 = time.time()
            reverted = wait_for(lambda t=t1: device_quiet(pipe.state, monitor, t), cfg.settle_s)
            t2 = time.time()
            out = (work / f"attack-{name}.log").read_text().strip().splitlines()
            runs.append({"name": name, "what": spec.what, "t0": t0, "started": started_at(out, t0), "t1": t1,
                         "t2": t2, "quiet_before": quiet,
                         "reverted_within_wait": reverted, "verify": audit_verify(rng, pipe.state),
                         "report": json.loads(out[-1]) if out and out[-1].startswith("{") else {"log": out[-3:]}})

        load["attacks end"] = os.getloadavg()[0]
        stop(agent, 30)
        stop(workload)
        fleet_log = work / "fleet.jsonl"
        size, deadline = -1, time.monotonic() + 30
        while fleet_log.exists() and fleet_log.stat().st_size != size and time.monotonic() < deadline:
            size = fleet_log.stat().st_size  # until the last QoS 1 messages are in (the agent and the workload
            time.sleep(1.0)  # have ended, having had their acknowledgements: what is left is in flight, milliseconds)
        stop(subscriber)
        monitor.close()
        verdict = audit_verify(rng, pipe.state)
        status = read_status(pipe.state)
        audit = [r for r in read_jsonl(pipe.state / "audit.log") if r.get("kind") == "action"]
        fleet = read_jsonl(work / "fleet.jsonl")
        sink = json.loads((work / "sink.json").read_text()) if (work / "sink.json").exists() else {}
        wl = json.loads((work / "workload.json").read_text()) if (work / "workload.json").exists() else {}
        events = read_jsonl(work / "workload.jsonl")
        samples = SampleContext(read_jsonl(work / SAMPLES_TRACE), recorded_ranges(work / "recording"))
        result = analyse(cfg, pipe, routes, (n0, n1), runs, audit, fleet, status, monitor, sink, wl, events,
                         samples)
        result.audit_verdict = verdict
        result.load = {k: round(v, 1) for k, v in load.items()}
        return result
    raise AssertionError("unreachable")


def analyse(cfg: Config, pipe: Pipeline, routes: dict[str, str], normal: tuple[float, float],
            runs: list[dict[str, Any]], audit: list[dict[str, Any]], fleet: list[dict[str, Any]],
            status: dict[str, Any], monitor: Monitor, sink: dict[str, Any], wl: dict[str, Any],
            events: Sequence[dict[str, Any]] = (), samples: SampleContext | None = None) -> RangeResult:
    """The range's figures from the audit log, the monitor's samples and what the subscriber received."""
    period = pipe.stride / cfg.rate
    applies = [r["data"] | {"t": r["time"]} for r in audit if r["data"].get("event") == "apply"]
    reverts = [r["data"] | {"t": r["time"]} for r in audit if r["data"].get("event") == "revert"]
    incidents = []
    for m in fleet:
        if m["topic"].endswith("/incident"):
            with contextlib.suppress(ValueError):
                incidents.append(json.loads(m["payload"]))
    telemetry = set()
    for m in fleet:
        if m["topic"] == TELEMETRY_TOPIC:
            with contextlib.suppress(ValueError, KeyError):
                telemetry.add(json.loads(m["payload"])["seq"])

    n0, n1 = normal
    false_actions = [a for a in applies if n0 <= a["t"] < n1 and a.get("action")]
    normal_doc = {"seconds": round(n1 - n0, 1), "windows": round((n1 - n0) / period),
                  "span": [round(n0, 3), round(n1, 3)],
                  "false_actions": len(false_actions),
                  "false_alarm_entries": len({(a["t"], a["action_tier"]) for a in false_actions}),
                  "actions": sorted({a["action"] for a in false_actions}),
                  "entries": false_entries(false_actions, incidents, events, n0, pipe.window / cfg.rate,
                                           samples)}  # fmt: skip

    attacks = []
    ends = [r["t0"] for r in runs[1:]] + [math.inf]  # a late revert still belongs to its attack
    for r, until in zip(runs, ends, strict=True):
        t0, t1, t2 = r["t0"], r["t1"], r["t2"]
        start = r.get("started", t0)  # an earlier range.json has no start line: its spawn time
        mine = [a for a in applies if t0 <= a["t"] <= t1 + 3 * period]
        first = min((a["t"] for a in mine), default=None)
        latency = None if first is None else max(0.0, first - start)
        seen = monitor.between(t0, t2)
        dropped = max((sum(s["tables"].values()) for s in seen), default=0)
        stopped = any(m["status"] == "stopped" for s in seen for m in s["miners"])
        reniced = any(m["nice"] == 19 for s in seen for m in s["miners"])
        back = [v for v in reverts if t0 <= v["t"] < until]
        last_revert = max((v["t"] for v in back), default=None)
        got = [i for i in incidents if t0 - 1 <= float(i.get("created_at", 0)) <= t2]
        attacks.append({
            "attack": r["name"], "what": r["what"], "detected": first is not None,
            "alarm_s": None if latency is None else round(latency, 2),
            "alarm_windows": None if latency is None else max(1, math.ceil(latency / period - 1e-9)),
            "start_delay_s": round(start - t0, 2),
            "tiers": sorted({a["action_tier"] for a in mine}),
            "actions": sorted({a["action"] for a in mine if a.get("action")}),
            "nft_dropped": dropped, "tc_seen": any(s["tbf"] for s in seen),
            "miner_reniced": reniced, "miner_stopped": stopped,
            "reverted": first is None or last_revert is not None, "reverted_within_wait": r["reverted_within_wait"],
            "revert_after_end_s": None if last_revert is None else round(last_revert - t1, 2),
            "revert_reasons": sorted({v["reason_code"] for v in back}),
            "audit": r["verify"], "incidents_received": len(got),
            "incident_tiers": sorted({int(i.get("tier", 0)) for i in got}),
            "attack_s": round(t1 - t0, 1), "process_report": r["report"], "quiet_before": r["quiet_before"],
            "span": [round(start, 3), round(t1, 3)],  # epoch seconds, to match the windows trace
        })  # fmt: skip
    esc = status.get("escalation") or {}
    ids = {i.get("incident_id") for i in incidents}
    broker = {"incidents_raised": status.get("incidents"), "delivered": esc.get("delivered"),
              "spooled": esc.get("spooled"), "dropped": esc.get("dropped"), "received": len(ids),
              "telemetry_published": wl.get("published"), "telemetry_received": len(telemetry),
              "uploads": wl.get("uploads"), "upload_errors": wl.get("upload_errors"),
              "sink_bytes": sink}  # fmt: skip
    return RangeResult(
        config={k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                for k, v in asdict(cfg).items()},
        pipeline={k: str(v) if isinstance(v, Path) else v for k, v in asdict(pipe).items()
                  if k not in ("state", "pub")} | {"window_s": period},
        routes=routes, normal=normal_doc, attacks=attacks, broker=broker, audit_verdict="",
        tiers=tier_actions(),
    )


def tier_actions() -> dict[str, list[str]]:
    """The range policy's actions by tier, as the result keeps them (the page describes the run's own policy)."""
    from tinywarden.respond.policy import parse_policy

    policy = parse_policy(policy_text("twd0", 1.0), "range policy")
    return {t.name: list(t.actions) for t in policy.tiers if t.actions}


#: What each of the range policy's actions does, for the page.
ACTION_WORDS = {"notify": "log", "throttle_miner": "renice the miner's name to 19",
                "cap_uplink": "`tc` 2 mbit cap on the device veth",
                "egress_allowlist": f"nftables egress allow-list (only `{BACKEND_IP}`)",
                "stop_miner": "SIGSTOP the miner's name"}
#: The tiers of the runs before the cap moved to the constrain tier (their range.json has no ``tiers``).
TIERS_BEFORE = {"alert": ["notify", "throttle_miner", "cap_uplink"], "constrain": ["egress_allowlist", "stop_miner"]}


@dataclass
class SampleContext:
    """The agent's samples (:data:`SAMPLES_TRACE`: a header line of channel names, then ``[t, values...]``) and
    each channel's ``(min, max)`` in the recording the model was tuned on."""

    rows: Sequence[Any]
    recorded: dict[str, tuple[float, float]]

    def beyond(self, t0: float, t1: float) -> dict[str, list[float]]:
        """Channels whose samples in ``(t0, t1]`` left the recorded range: ``[lowest, highest, recorded min,
        recorded max]`` each."""
        if not self.rows or not isinstance(self.rows[0], dict):
            return {}
        names = self.rows[0]["channels"]
        inside = [r for r in self.rows[1:] if isinstance(r, list) and t0 < r[0] <= t1]
        out = {}
        for j, name in enumerate(names):
            if name not in self.recorded or not inside:
                continue
            lo, hi = self.recorded[name]
            vals = [r[j + 1] for r in inside]
            if min(vals) < lo or max(vals) > hi:
                out[name] = [min(vals), max(vals), lo, hi]
        return out


def recorded_ranges(folder: Path) -> dict[str, tuple[float, float]]:
    """Each channel's ``(min, max)`` over a recording folder, read as ``train`` reads it (a file that cannot be
    read is skipped); empty when there is no readable recording."""
    import numpy as np

    from tinywarden.errors import TinywardenError
    from tinywarden.telemetry.io import read_folder

    try:
        series = read_folder(folder)
    except (TinywardenError, OSError):
        return {}
    lo, hi = np.nanmin(series.values, axis=0), np.nanmax(series.values, axis=0)
    return {c: (float(a), float(b)) for c, a, b in zip(series.channels, lo, hi, strict=True)}


def false_entries(false_actions: Sequence[dict[str, Any]], incidents: Sequence[dict[str, Any]],
                  events: Sequence[dict[str, Any]], n0: float, window_s: float,
                  samples: SampleContext | None = None) -> list[dict[str, Any]]:
    """Each tier entry of the normal period explained: when, the tier, the window's calibrated confidence and
    score over threshold (from the audit record), the most deviating features with their z (from the incident
    the subscriber received), what the workload had started in the window and the few seconds before, and
    (with ``samples``) the channels whose samples in the last three windows left the range of the recording."""
    out = []
    for t, tier in sorted({(a["t"], a["action_tier"]) for a in false_actions}):
        a = next(x for x in false_actions if x["t"] == t and x["action_tier"] == tier)
        scores = a.get("scores") or [0.0]
        inc = next((i for i in incidents if abs(float(i.get("created_at", 0)) - t) < 0.5 and i.get("tier") == tier),
                   {})
        recent = [e for e in events if t - window_s - 3.0 <= e["t"] <= t]
        out.append({
            "minute": round((t - n0) / 60, 2), "tier": tier, "actions": sorted({x["action"] for x in false_actions
                                                                             if x["t"] == t}),
            "confidence": a.get("confidence"), "reason": a.get("reason"),
            "score_over_threshold": round(float(scores[-1]) / float(a["threshold"]), 2) if a.get("threshold") else None,
            "features_z": inc.get("features", {}),
            "workload_started": {"uploads": sum(e["kind"] == "upload" for e in recent),
                                 "config_checks": sum(e["kind"] == "config" for e in recent),
                                 "bytes": sum(int(e["bytes"]) for e in recent),
                                 "seconds": round(window_s + 3.0, 1)},
            **({"beyond_recording": samples.beyond(t - 3 * window_s, t)} if samples is not None else {}),
        })  # fmt: skip
    return out


# ------------------------------------------------------------------------------------------- the table


def goals(res: RangeResult) -> list[tuple[str, str, bool]]:
    """(goal, measured, met) for the issue's three goals."""
    a = res.attacks
    within = [x for x in a if x["detected"] and x["alarm_windows"] <= 3]
    worst = max((x["alarm_windows"] for x in a if x["detected"]), default=None)
    b = res.broker
    lost_inc = (b["delivered"] or 0) - b["received"] if b["delivered"] is not None else None
    lost_tel = (b["telemetry_published"] or 0) - b["telemetry_received"]
    minutes = res.normal["seconds"] / 60
    return [
        ("every attack detected within 3 windows",
         f"{len(within)}/{len(a)} (slowest {worst} windows)", len(within) == len(a) and bool(a)),
        ("0 false actions in 30 min of normal",
         f"{res.normal['false_actions']} in {minutes:.1f} min", res.normal["false_actions"] == 0 and minutes >= 30),
        ("nothing lost at the broker",
         f"incidents {b['received']} received / {b['delivered']} delivered / {b['incidents_raised']} raised "
         f"({b['spooled']} spooled, {b['dropped']} dropped); telemetry {b['telemetry_received']} / "
         f"{b['telemetry_published']}", lost_inc == 0 and lost_tel == 0 and not b["dropped"]),
    ]  # fmt: skip


def markdown(res: RangeResult) -> str:
    from tinywarden.likelihood import SLOW_SHIFT

    c, p = res.config, res.pipeline
    lines = [
        "# Attack range (issue 15 item 4)",
        "",
        f"Generated by `sudo python benchmarks/range.py --record {c['record_s']:g} --normal {c['normal_s']:g} "
        f"--rate {c['rate']:g} --day {c['day_s']:g} --attacks {','.join(c['attacks'])} --attack-seconds "
        f"{c['attack_s']:g} --trials {c['trials']} --target-fpr {c['target_fpr']:g} --settle {c['settle_s']:g}"
        + f" --min-confidence {_opt(c.get('min_confidence'))} --likelihood-gate {_opt(c.get('likelihood_gate'))}"
        + ("" if c["drop_host_channels"] else " --keep-host-channels")
        + "`. Two network namespaces made for the run, joined by one veth pair: device "
        f"`{DEVICE_IP}/{PREFIXLEN}`; peer `{BACKEND_IP}` (backend uploads and Mosquitto), `{EXFIL_IP}` (exfiltration "
        f"drop, never used by the normal workload), `{VICTIM_IP}` (flood and scan victim). No default route "
        "(routing tables below); every process in both namespaces is stopped and the namespaces deleted at the end.",
        "",
        f"- **Pipeline, all CLI**: `record` {p['record_s']:.0f} s ({p['record_rows']} rows) at **{c['rate']:g} Hz** "
        f"in the device namespace (raised from the 1 Hz default so the range runs in minutes), `tune --flash 8KB "
        f"--ram 4KB --no-count --trials {c['trials']} --target-fpr {c['target_fpr']:g}"
        + (f" --likelihood-gate {c['likelihood_gate']:g}" if c.get("likelihood_gate") is not None else "")
        + f"` ({p['tune_s']:.0f} s) "
        f"chose {p['model']}, window "
        f"{p['window']} stride {p['stride']} = **{p['window_s']:g} s per window**, {p['flash']} B flash, "
        f"{p['ram']} B RAM, {p['channels']} channels"
        + (f", threshold calibrated on {p['calibration_windows']} held-out windows"
           if p.get("calibration_windows") else "")
        + "; `keygen`, `bundle`, `sign --version 1`, `install`, then "
        f"`agent --real-actuators --mqtt {BACKEND_IP}:{MQTT_PORT} --rate {c['rate']:g}` in the device namespace"
        + (" (through `range.py traced-agent`: the agent's own main, which also writes each scored window's score, "
           "confidence and tier to a trace for the replay in the notes)." if "span" in res.normal else "."),
        f"- **Normal workload**: uploads to `{BACKEND_IP}:{UPLOAD_PORT}` and 1 Hz MQTT telemetry (QoS 1), both "
        f"following a day/night rhythm compressed to {c['day_s']:g} s.",
        "- **Policy**: "
        + "; ".join(f"{name} ({rule}): {', '.join(ACTION_WORDS.get(a, a) for a in res.tiers.get(name, []))}"
                    for name, rule in (("alert", "2 of 3 windows"), ("constrain", "3 of 4")))
        + ". "
        + (f"A window counts toward either tier only at a calibrated confidence >= {c['min_confidence']:g} (a "
           "level the normal score distribution reaches once in 1e5 windows: HTM's red level, not fitted here). "
           if c.get("min_confidence") is not None else "")
        + (f"The confidence scale learns levels over z = {c['likelihood_gate']:g} {2**SLOW_SHIFT} times more slowly "
           "than "
           "the others (`--likelihood-gate`), so one attack does not widen the scale the next is judged on. "
           if c.get("likelihood_gate") is not None else "")
        + "De-escalation and dead-man timers of a few windows.",
        ("- **Shared machine**: 2 cores used by other jobs at the same time (1-minute load average "
         if not res.load or max(res.load.values()) >= IDLE_LOAD else
         "- **Machine**: 2 cores, nearly idle (1-minute load average ")
        + (", ".join(f"{v:g} at {k}" for k, v in res.load.items()) if res.load else "about 20")
        + "). The sampler reads `cpu_pct`, `load1` and `mem_pct` host-wide, so here they are every other job's; "
        + ("they were removed from the recording before `tune` (the only step outside the CLI), so the model sees "
           "the device's own channels: its veth counters, `proc_count` and `proc_cpu_pct` (the device has its "
           "own PID namespace, and `proc_cpu_pct` is the CPU of the processes in it) and `distinct_remote_*`."
           if c["drop_host_channels"] else "they were kept (`--keep-host-channels`)."),
        "",
        "## Goals",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
        *(f"| {g} | {m} | {'yes' if ok else '**no**'} |" for g, m, ok in goals(res)),
        "",
        "## Attacks",
        "",
        "| attack | bounds | detected | first alarm | tiers | actions in place (seen on the kernel) | revert "
        "after attack end | audit verify | incidents at subscriber |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for a in res.attacks:
        seen = [f"nft drop counter {a['nft_dropped']}" if a["nft_dropped"] else "nft: no drops"]
        seen += ["tc tbf qdisc" if a["tc_seen"] else "no tc"]
        if a["attack"] == "miner":
            seen += [f"miner reniced: {'yes' if a['miner_reniced'] else 'no'}",
                     f"miner stopped: {'yes' if a['miner_stopped'] else 'no'}"]
        alarm = "-" if not a["detected"] else f"{a['alarm_windows']} windows ({a['alarm_s']:g} s)"
        if not a.get("quiet_before", True):
            alarm += " (actions from before still in place at the start)"
        rev = "-" if a["revert_after_end_s"] is None else (
            f"{a['revert_after_end_s']:g} s ({', '.join(a['revert_reasons'])})"
            + ("" if a.get("reverted_within_wait", a["reverted"]) else f", after the {c['settle_s']:g} s wait"))
        lines.append(f"| {a['attack']} | {a['what']} | {'yes' if a['detected'] else '**no**'} | {alarm} | "
                     f"{a['tiers']} | {'; '.join(seen)} | {rev} | {a['audit']} | {a['incidents_received']} "
                     f"(tiers {a['incident_tiers']}) |")
    n = res.normal
    delays = [a["start_delay_s"] for a in res.attacks if "start_delay_s" in a]
    lines += [
        "",
        *(["First alarm: counted from the attack's start, the line its process prints once its Python interpreter "
           f"is up ({min(delays):g} to {max(delays):g} s after the range spawned it on this machine, a delay no "
           "agent can see); windows are that time over the window's stride, rounded up.", ""] if delays else []),
        "What the attack processes reported: "
        + "; ".join(f"{a['attack']} {json.dumps(a['process_report'])}" for a in res.attacks) + ".",
        "",
        "## Normal period",
        "",
        f"{n['seconds']:.0f} s ({n['seconds'] / 60:.1f} min, {n['windows']} windows) with no attack: "
        f"**{n['false_actions']} false actions** ({n['false_alarm_entries']} tier entries"
        + (f": {', '.join(n['actions'])}" if n["actions"] else "") + ").",
        "",
        *([f"- minute {e['minute']:g}: tier {e['tier']} ({', '.join(e['actions'])}), confidence "
           f"{e['confidence']}, score {e['score_over_threshold']}x the threshold; features (z) "
           f"{json.dumps(e['features_z'])}; the workload started {e['workload_started']['uploads']} uploads, "
           f"{e['workload_started']['config_checks']} config checks ({e['workload_started']['bytes']} B) in the "
           f"{e['workload_started']['seconds']:g} s before"
           + ("; samples beyond the recording's range in the 3 window lengths before: " + (", ".join(
               f"{k} {v[0]:g} to {v[1]:g} (recorded {v[2]:g} to {v[3]:g})" for k, v in e["beyond_recording"].items())
               or "none") if "beyond_recording" in e else "")
           for e in n.get("entries", [])] + [""]
          if n.get("entries") else []),
        f"Final `tinywarden audit verify`: **{res.audit_verdict}**. Broker: {json.dumps(res.broker)}.",
        "",
        "## Routing tables (no route out)",
        "",
        *(f"- `{ns}`: `{r or '(empty)'}`" for ns, r in res.routes.items()),
        *(["", "## Notes", ""] + [f"- {x}" for x in res.notes] if res.notes else []),
        "",
    ]
    return "\n".join(lines)


def calibration_study(recording: Path, fit_rows: int, min_confidence: float = MIN_CONFIDENCE,
                      window: int = 16, stride: int = 4, features: Sequence[str] = ("mean", "std", "max"),
                      target_fpr: float = 0.001) -> dict[str, Any]:
    """The false alarms of a short calibration, measured on a recording of normal alone (no test period): the
    range's earlier model (pca, 8 components, ``features``, ``window``/``stride``) fitted on the first
    ``fit_rows`` rows, scored on the rest, its windows over the threshold and the policy's 2-of-3 alert onsets,
    with the threshold alone and with the tiers' confidence bar (the float pipeline, not the agent's int8)."""
    import numpy as np

    from tinywarden.calibrate import persist
    from tinywarden.detectors.base import make_detector
    from tinywarden.pipeline import Pipeline as Model
    from tinywarden.telemetry.io import read_folder

    series = read_folder(recording)
    fit, rest = series.split(fit_rows / len(series))
    model = Model(make_detector("pca", n_components=8), window, stride, tuple(features), target_fpr, 2, 3).fit(fit)
    scored = model.score(rest)
    conf = model.confidence(scored.scores)
    flags = scored.raw_flags.astype(bool)
    out: dict[str, Any] = {"rows": len(series), "fit_rows": len(fit),
                           "calibration_windows": model.train_summary_["calibration_windows"],
                           "scored_windows": len(scored.scores)}  # fmt: skip
    for name, f in (("threshold", flags), (f"confidence >= {min_confidence:g}", flags & (conf >= min_confidence))):
        alarm = persist(f.astype(np.int64), 2, 3)
        onsets = int(alarm[0]) + int(((alarm[1:] == 1) & (alarm[:-1] == 0)).sum())
        out[name] = {"windows_over": int(f.sum()), "alert_onsets": onsets}
    return out


def cap_study(model_path: Path, seconds: float, workdir: Path, day_s: float = 120.0) -> dict[str, Any]:
    """What the policy's alert action does to the device's own normal: three recordings of the normal workload in a
    fresh range (no agent), ``seconds`` each, without the uplink cap, with it (the ``tc_rate_limit`` actuator's
    qdisc as the range's policy sets it: tbf 2 mbit, burst 32 kbit, latency 400 ms, on the device veth) and without it
    again, each scored by a range run's model (its veth channels renamed to this range's). Per recording: windows,
    the share over the threshold, the 99th percentile and the largest score over the threshold, and the veth's
    99th-percentile packet rates (float pipeline)."""
    import numpy as np

    from tinywarden.modelfile import load_pipeline
    from tinywarden.respond.actuators.tc import TcRateLimit
    from tinywarden.telemetry.io import read_folder
    from tinywarden.telemetry.series import Series as Telemetry

    model = load_pipeline(model_path)
    old_if = next(c.split(".")[0] for c in model.channels_ if c.endswith(".rx_pkts_s"))
    workdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, Any] = {"model": str(model_path), "seconds": seconds, "rows": {}}
    with Range(workdir) as rng:
        start_services(rng, workdir, day_s)
        # the actuator's own command line, run here in the device's network namespace only
        cap = TcRateLimit("cap_uplink", rng.dev_if, "2mbit")._cmd()
        for label, capped in (("without the cap", False), ("with the cap", True), ("without the cap again", False)):
            if capped:
                rng.run_net(rng.device, cap)
            rec = workdir / label.replace(" ", "-")
            rng.run(rng.device, tinywarden_argv("record", "--out", str(rec), "--rate", "10", "--interface",
                                                rng.dev_if, "--duration", f"{seconds:g}s", "--format", "csv",
                                                "--flush", "2s"), timeout=seconds + 120)  # fmt: skip
            if capped:
                rng.run_net(rng.device, ["tc", "qdisc", "del", "dev", rng.dev_if, "root"])
            series = read_folder(rec)
            named = Telemetry(series.timestamps, series.values,
                              tuple(c.replace(rng.dev_if, old_if) for c in series.channels))
            r = model.score(named).scores / model.threshold_
            pk = {c: float(np.percentile(named.values[:, named.channels.index(f"{old_if}.{c}")], 99))
                  for c in ("rx_pkts_s", "tx_pkts_s")}
            out["rows"][label] = {"rows": len(named), "windows": len(r), "over_threshold": float(np.mean(r > 1)),
                                  "p99_over_threshold": float(np.percentile(r, 99)), "max_over_threshold":
                                  float(r.max()), "p99_packets_s": pk}  # fmt: skip
    return out


#: The likelihood variants :func:`tier_study` replays a run's scores through: ``(name, changed attributes of the
#: program's integer likelihood step, learning rule)`` (:mod:`tinywarden.kernels.likelihood_q`). ``gate`` is z in Q12
#: above which a level teaches ``2**slow_shift`` (16) times more slowly (the likelihood's own ``gate`` parameter, off
#: by default, ``tune --likelihood-gate``); ``rate_shift`` 20 all but freezes the fitted distribution (the confidence
#: against the training scores alone); ``gate`` -1 is no gate; ``record`` None drops the attribute, which turns off
#: step 6, the record rule on the score (a score beyond every score seen by 5% of their range reports confidence 1).
#: A learning rule is a proposal the product does not have (:func:`relearned_confidence_q`):
#: ``"clip"`` learns from each level clipped at z 3, ``"below threshold"`` learns only from windows scored at or
#: below the detector's threshold (the adaptation's ``below_threshold`` rule), ``"slow over threshold"`` learns from
#: windows over it ``2**slow_shift`` times more slowly (the gate's rule, keyed on the threshold instead of z, so a
#: lasting change of level is still learned); a window's confidence is still its own level's.
LIKELIHOOD_VARIANTS: tuple[tuple[str, dict[str, int | None], str | None], ...] = (
    ("as run", {}, None),
    ("as run, no score record", {"record": None}, None),
    ("no gate (every level teaches alike)", {"gate": -1}, None),
    ("gate z > 3", {"gate": 3 << 12}, None),
    ("gate z > 5", {"gate": 5 << 12}, None),
    ("learns a level clipped at z 3", {}, "clip"),
    ("learns only windows at or below the threshold", {}, "below threshold"),
    ("windows over the threshold learn 16x slower", {}, "slow over threshold"),
    ("fitted distribution, no learning", {"rate_shift": 20}, None),
)
#: The tier rules :func:`tier_study` compares: no bar, the bar on every window, the bar at an episode's onset.
TIER_RULES = ("no bar", f"bar {MIN_CONFIDENCE:g} every window", f"bar {MIN_CONFIDENCE:g} at the onset")
CLIP_Z = 3


def relearned_confidence_q(op: Any, scores: Any, hits: Any, rule: str, threshold: float) -> Any:
    """Q15 confidences of the integer likelihood step ``op`` (``short`` 1, no hold-off) under a learning ``rule`` of
    :data:`LIKELIHOOD_VARIANTS`: each window's confidence from its own level, then its learning undone (the mean and
    variance from before it) and, for ``"clip"``, redone with its level clipped at :data:`CLIP_Z` standard
    deviations above the running mean; ``"below threshold"`` keeps no learning from a window scored over
    ``threshold``, ``"slow over threshold"`` redoes it at ``rate_shift + slow_shift``. ``hits``: windows whose
    samples set a value record (as :func:`~tinywarden.kernels.likelihood_q.confidence_q` takes them)."""
    import numpy as np

    from tinywarden.kernels.likelihood_q import LikelihoodQStream, log_level_q16

    st = LikelihoodQStream(op)
    if st.short != 1 or st.holdoff:
        raise ValueError("the replay with another learning rule needs a likelihood step with short 1, no hold-off")
    out = []
    for y, score, hit in zip(log_level_q16(op, scores).tolist(), np.asarray(scores).tolist(), hits, strict=True):
        before = (st.ring[:], st.pos, st.count, st.sum, st.mean, st.var, st.rec_lo, st.rec_hi)
        cap = (st.mean >> 16) + CLIP_Z * math.isqrt(st.var)
        st.vnew = int(hit)
        out.append(st.step_log(int(y), int(score)))
        if rule == "clip" and y > cap:
            st.ring, st.pos, st.count, st.sum, st.mean, st.var, st.rec_lo, st.rec_hi = before
            st.step_log(int(cap), int(score))
        elif rule == "below threshold" and score > threshold:
            st.mean, st.var = before[4], before[5]
        elif rule == "slow over threshold" and score > threshold:
            st.ring, st.pos, st.count, st.sum, st.mean, st.var, st.rec_lo, st.rec_hi = before
            st.rate_shift += st.slow_shift
            st.step_log(int(y), int(score))
            st.rate_shift -= st.slow_shift
    return np.array(out, dtype=np.int64)


def onset_confidence(over: Sequence[bool], confidence: Sequence[float], bar: float, gap: int) -> list[float]:
    """The confidence a tier reads when it reads it at an episode's onset only: an episode of windows over the
    threshold (gaps shorter than ``gap`` windows belong to it) that starts at or reaches ``bar`` reads 1 until it
    ends; outside an episode, and before it reaches the bar, each window reads its own confidence.

    >>> onset_confidence([1, 1, 1, 0, 1, 0, 0, 0, 1], [.1, .6, .1, 0, .2, 0, 0, 0, .3], .5, 3)
    [0.1, 0.6, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.3]
    """
    out = [float(c) for c in confidence]
    standing, quiet = False, 0
    for i, o in enumerate(over):
        quiet = 0 if o else quiet + 1
        if standing and quiet >= gap:
            standing = False
        if standing and o:
            out[i] = 1.0
        elif o and out[i] >= bar:
            standing = True
    return out


@dataclass(frozen=True)
class RunTimeline:
    """What replaying a run's windows through its policy takes from its range.json: the window period, the policy's
    timer floor and confidence bar, each attack's (name, start, end) and the normal period's (start, end)."""

    period: float
    floor: float
    bar: float | None
    spans: tuple[tuple[str, float, float], ...]
    normal: tuple[float, float]

    @classmethod
    def of(cls, result: dict[str, Any]) -> RunTimeline:
        n0, n1 = result["normal"]["span"]
        return cls(float(result["pipeline"]["window_s"]), float(result["config"].get("timer_floor_s", 4.0)),
                   result["config"].get("min_confidence"), tuple((a["attack"], *a["span"]) for a in result["attacks"]),
                   (float(n0), float(n1)))


def replay_policy(t: Any, scores: Any, conf: Any, threshold: float, run: RunTimeline
                  ) -> tuple[dict[str, int | None], list[tuple[float, int]]]:
    """A run's windows (times ``t``, ``scores``, confidences ``conf``) through the range policy's response engine at
    ``threshold``: each attack's first alarm in windows from its start (None: not within 3 windows of its end), and
    the (time, tier) of every action applied in the normal period. Windows are counted in the trace, not in
    periods of the clock: on a loaded machine the samples, and so the windows, come further apart than the period,
    and a count of periods would push an alarm the run raised in time out of its attack."""
    import numpy as np

    from tinywarden.respond.engine import ResponseEngine, SimulatedClock
    from tinywarden.respond.policy import parse_policy

    period, spans, normal = run.period, run.spans, run.normal
    engine = ResponseEngine(parse_policy(policy_text("twd0", period, run.bar, run.floor), "range policy"), threshold,
                            clock=SimulatedClock(float(t[0])))
    applies = [(i, e.time, e.action_tier) for i in range(len(t))
               for e in engine.observe(float(scores[i]), at=float(t[i]), confidence=float(conf[i]))
               if e.event == "apply" and e.action]  # fmt: skip
    times = np.asarray(t, dtype=np.float64)
    alarms: dict[str, int | None] = {}
    for a, s0, s1 in spans:
        start = int(np.searchsorted(times, s0))  # the attack's first window
        last = int(np.searchsorted(times, s1, side="right")) - 1 + 3  # its last window, and 3 more
        first = min((i for i, x, _ in applies if i >= start and (x <= s1 or i <= last)), default=None)
        alarms[a] = None if first is None else first - start + 1
    return alarms, [(x, tier) for _, x, tier in applies if normal[0] <= x < normal[1]]


def tier_study(work: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Replay a range run's own windows (``work``'s :data:`WINDOWS_TRACE` and ``model.twb``; ``result`` its
    range.json) through the program's integer likelihood with each of :data:`LIKELIHOOD_VARIANTS` and the
    policy's response engine with each of :data:`TIER_RULES`: per attack the first alarm in windows, and the
    false actions of the normal period. The scores are the run's (the actions it took shaped the telemetry
    after each alarm); value records (a sample beyond every value seen) are the run's too, found where the run
    reported confidence 1 and the same step without them did not: the replay of the run's own step must give
    back every confidence it reported (``exact``)."""
    import numpy as np

    from tinywarden.kernels.base import Op
    from tinywarden.kernels.likelihood_q import CONF_ONE, confidence_q
    from tinywarden.respond.policy import parse_policy
    from tinywarden.runtime import load_model

    model = load_model((work / "model.twb").read_bytes(), str(work / "model.twb"))
    program = getattr(model, "program", None)
    if program is None or program.likelihood is None:
        raise ValueError(f"{work / 'model.twb'}: no int8 program with a likelihood step to replay")
    op = program.likelihood
    rows = [w for w in read_jsonl(work / WINDOWS_TRACE) if math.isfinite(w["score"]) and w["confidence"] is not None]
    t = np.array([w["t"] for w in rows])
    scores = np.array([w["score"] for w in rows], dtype=np.int64)
    ran = np.round(np.array([w["confidence"] for w in rows]) * CONF_ONE).astype(np.int64)
    hits = (ran >= CONF_ONE) & (confidence_q(op, scores) < CONF_ONE)
    exact = bool((confidence_q(op, scores, hits) == ran).all())
    threshold = float(program.threshold)
    run = RunTimeline.of(result)
    period, spans = run.period, run.spans
    gap = parse_policy(policy_text("twd0", period), "range policy").tiers[0].n
    over = scores > threshold
    peak = {a: round(float(scores[(t >= s0) & (t <= s1)].max(initial=0)) / threshold, 1) for a, s0, s1 in spans}
    out: dict[str, Any] = {"windows": len(rows), "exact": exact, "value_record_windows": int(hits.sum()),
                           "threshold": threshold, "peak_over_threshold": peak, "rows": []}  # fmt: skip
    for name, change, rule in LIKELIHOOD_VARIANTS:
        attrs = {k: v for k, v in {**op.attrs, **change}.items() if v is not None}  # None: that step off
        variant = Op(op.kind, op.src, op.dst, attrs, op.consts)
        q = (confidence_q(variant, scores, hits) if rule is None
             else relearned_confidence_q(variant, scores, hits, rule, threshold))
        conf = q / CONF_ONE
        onset = {a: round(float(conf[(t >= s0) & (t <= s0 + 3 * period)].max(initial=0.0)), 3) for a, s0, _ in spans}
        for rule in TIER_RULES:
            bar = None if rule == "no bar" else MIN_CONFIDENCE
            fed = onset_confidence(over, conf, MIN_CONFIDENCE, gap) if rule.endswith("onset") else conf
            alarms, false = replay_policy(t, scores, fed, threshold, replace(run, bar=bar))
            out["rows"].append({"likelihood": name, "tiers": rule, "first_alarm_windows": alarms,
                                "within_3": sum(w is not None and w <= 3 for w in alarms.values()),
                                "false_actions": len(false), "false_entries": len(set(false)),
                                "onset_confidence": onset})  # fmt: skip
    return out


#: The thresholds :func:`threshold_study` replays a run's windows at: (label, tune's target FPR, tail fit allowed).
THRESHOLD_VARIANTS: tuple[tuple[str, float, bool], ...] = (
    ("target 1e-5, tail fit", 1e-5, True),
    ("target 1e-5, highest held-out score (the rule before the tail fit)", 1e-5, False),
    ("target 1e-3", 1e-3, True),
)


def threshold_variants(run_target: float) -> tuple[list[tuple[str, float, bool]], int]:
    """:data:`THRESHOLD_VARIANTS` for a run at ``run_target`` (a row of its own first when none has that target
    with the tail fit, the rule ``tune`` applies), the as-run row's label marked, and that row's index."""
    variants = list(THRESHOLD_VARIANTS)
    if not any(target == run_target and tail for _, target, tail in variants):
        variants.insert(0, (f"target {run_target:g}", run_target, True))
    i = next(k for k, (_, target, tail) in enumerate(variants) if target == run_target and tail)
    variants[i] = (variants[i][0] + " (as run)", *variants[i][1:])
    return variants, i


def threshold_study(work: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Replay a range run's own windows (``work``'s :data:`WINDOWS_TRACE`, with the confidences the run reported)
    through the policy's response engine at each of :data:`THRESHOLD_VARIANTS`' thresholds: the int8 program of
    the run's model (``model.twb``) calibrated again on the run's recording at that target, as ``tune`` calibrated it
    (``exact``: the as-run variant gives back the run's threshold). Per variant: the threshold, its ratio to the
    run's, the first alarm of each attack in windows and the false actions of the normal period. The scores are the
    run's, so where the run took an action the telemetry after it is what that action made."""
    from unittest import mock

    import numpy as np

    from tinywarden import calibrate
    from tinywarden.modelfile import load_pipeline
    from tinywarden.quantize import quantize_pipeline
    from tinywarden.runtime import load_model
    from tinywarden.telemetry.io import read_folder
    from tinywarden.tune.search import select_channels

    ran = load_model((work / "model.twb").read_bytes(), str(work / "model.twb")).program
    pipe = load_pipeline(work / "model.twb")
    series = select_channels(read_folder(work / "recording"), pipe.channels_)  # what tune's refit calibrated on
    rows = [w for w in read_jsonl(work / WINDOWS_TRACE) if math.isfinite(w["score"]) and w["confidence"] is not None]
    t = np.array([w["t"] for w in rows])
    scores = np.array([w["score"] for w in rows], dtype=np.float64)
    conf = np.array([w["confidence"] for w in rows], dtype=np.float64)
    run = RunTimeline.of(result)
    out: dict[str, Any] = {"windows": len(rows), "run_threshold": int(ran.threshold), "rows": []}
    variants, as_run = threshold_variants(float(result["config"]["target_fpr"]))
    for label, target, tail in variants:
        pipe.target_fpr = target
        with mock.patch.object(calibrate, "MIN_TAIL_PEAKS", calibrate.MIN_TAIL_PEAKS if tail else sys.maxsize):
            threshold = float(quantize_pipeline(pipe, series).threshold)
        alarms, false = replay_policy(t, scores, conf, threshold, run)
        normal = (t >= run.normal[0]) & (t < run.normal[1])
        out["rows"].append({"threshold_rule": label, "target_fpr": target, "threshold": threshold,
                            "over_run_threshold": round(threshold / max(float(ran.threshold), 1.0), 3),
                            "normal_windows_over": int((scores[normal] > threshold).sum()),
                            "first_alarm_windows": alarms,
                            "within_3": sum(w is not None and w <= 3 for w in alarms.values()),
                            "false_actions": len(false), "false_entries": len(set(false))})  # fmt: skip
    out["exact"] = out["rows"][as_run]["threshold"] == float(ran.threshold)
    return out


#: The refit study's variants: the floor of a feature's scale (:data:`tinywarden.pipeline.RELATIVE_SCALE_FLOOR`, a
#: fraction of its channel's spread; 0.05 is the product's) and features left out of the run's set.
REFIT_FLOORS = (0.05, 0.1, 0.25, 0.5)
REFIT_DROPS: tuple[tuple[str, ...], ...] = ((), ("min",))
#: ... and longer windows: multiples of the run's (its stride and features, the product's floor).
REFIT_WINDOW_FACTORS = (2, 4)


def refit_study(work: Path, result: dict[str, Any]) -> dict[str, Any]:
    """A range run's own samples (:data:`SAMPLES_TRACE`) rescored by its pipeline refitted on its recording with
    another scale floor or without some features (:data:`REFIT_FLOORS`, :data:`REFIT_DROPS`): the int8 program's
    scores and confidences, through the run's policy (:func:`replay_policy`); also with longer windows
    (:data:`REFIT_WINDOW_FACTORS`). A diagnostic of where a false action
    comes from, chosen after the run was seen: the telemetry after an action the run took is what that action made,
    and the as-run row (floor 0.05, nothing left out) shows whether the replay gives back the run."""
    from unittest import mock

    import numpy as np

    import tinywarden.pipeline as pipeline_mod
    from tinywarden.detectors import make_detector
    from tinywarden.modelfile import load_pipeline
    from tinywarden.program import run_confidence, run_int8
    from tinywarden.quantize import quantize_pipeline
    from tinywarden.runtime import load_model
    from tinywarden.telemetry.io import read_folder
    from tinywarden.tune.search import select_channels

    ran = load_pipeline(work / "model.twb")
    ran_threshold = int(load_model((work / "model.twb").read_bytes(), str(work / "model.twb")).program.threshold)
    series = select_channels(read_folder(work / "recording"), ran.channels_)
    trace = read_jsonl(work / SAMPLES_TRACE)
    names = trace[0]["channels"]
    rows = np.array(trace[1:], dtype=np.float64)
    t, x = rows[:, 0], rows[:, [1 + names.index(c) for c in ran.channels_]]
    run = RunTimeline.of(result)
    out: dict[str, Any] = {"samples": len(t), "run_threshold": ran_threshold, "features": list(ran.features),
                           "run_false_actions": result["normal"]["false_actions"], "rows": []}
    variants = [(scale_floor, drop, ran.window) for drop in REFIT_DROPS for scale_floor in REFIT_FLOORS
                if not drop or any(f in drop for f in ran.features)]
    variants += [(REFIT_FLOORS[0], (), ran.window * k) for k in REFIT_WINDOW_FACTORS]
    for scale_floor, drop, window in variants:
        features = tuple(f for f in ran.features if f not in drop)
        with mock.patch.object(pipeline_mod, "RELATIVE_SCALE_FLOOR", scale_floor):
            det = make_detector(ran.detector.name, **ran.detector.get_params())
            pipe = pipeline_mod.Pipeline(det, window, ran.stride, features, ran.target_fpr, ran.k, ran.n,
                                         likelihood_gate=ran.likelihood_gate).fit(series)
            program = quantize_pipeline(pipe, series)
        scores, _ = run_int8(program, x)
        conf = run_confidence(program, scores, x)
        conf = np.ones(len(scores)) if conf is None else conf.astype(np.float64) / 32768.0
        ends = t[window - 1 + ran.stride * np.arange(len(scores))]
        alarms, false = replay_policy(ends, scores.astype(np.float64), conf, float(program.threshold), run)
        normal = (ends >= run.normal[0]) & (ends < run.normal[1])
        peak = round(float(scores[normal].max()) / program.threshold, 2) if normal.any() else None
        out["rows"].append({"floor": scale_floor, "left_out": list(drop), "window": window,
                            "threshold": int(program.threshold), "normal_peak_over_threshold": peak,
                            "normal_windows_over": int((scores[normal] > program.threshold).sum()),
                            "first_alarm_windows": alarms,
                            "within_3": sum(w is not None and w <= 3 for w in alarms.values()),
                            "false_actions": len(false), "false_entries": len(set(false))})  # fmt: skip
    out["exact"] = bool(out["rows"]) and out["rows"][0]["threshold"] == ran_threshold  # the as-run row
    return out


def refit_study_markdown(study: dict[str, Any], command: str) -> str:
    rows = study["rows"]
    attacks = list(rows[0]["first_alarm_windows"]) if rows else []
    intro = (f"Generated by `{command}`: the run's {study['samples']} samples rescored by its pipeline (features "
             f"{', '.join(study['features'])}) refitted on its recording with another scale floor (a feature's scale "
             "is at least this fraction of its channel's spread; the product's is 0.05), without a feature or with "
             "a longer window, the int8 scores and confidences through the run's policy. The run had "
             f"{study['run_false_actions']} false actions at threshold {study['run_threshold']} (the first row's "
             f"refit gives it back: {'yes' if study['exact'] else '**no**'}). A diagnostic chosen after the run was "
             "seen, not a protocol: after an action the run took, the telemetry is what that action made. First "
             "alarm in windows from the attack's start (- not detected).")
    lines = [intro,
             "", "| scale floor | left out | window | threshold | normal peak / threshold | normal windows over | "
             + " | ".join(attacks) + " | within 3 | false actions (entries) |",
             "|---:|---|---:|---:|---:|---:|" + "---:|" * len(attacks) + "---:|---:|"]
    for r in rows:
        alarm = [("-" if w is None else str(w)) for w in r["first_alarm_windows"].values()]
        peak = r["normal_peak_over_threshold"]
        lines.append(f"| {r['floor']:g} | {', '.join(r['left_out']) or '-'} | {r['window']} | {r['threshold']} | "
                     f"{'-' if peak is None else format(peak, 'g')} | {r['normal_windows_over']} | " + " | ".join(alarm)
                     + f" | {r['within_3']}/{len(attacks)} | {r['false_actions']} ({r['false_entries']}) |")
    return "\n".join(lines) + "\n"


def threshold_study_markdown(study: dict[str, Any], command: str) -> str:
    rows = study["rows"]
    attacks = list(rows[0]["first_alarm_windows"]) if rows else []
    lines = [f"Generated by `{command}`: the run's {study['windows']} windows replayed at other thresholds (the int8 "
             "program recalibrated on the run's recording at each target; the as-run row gives back the run's "
             f"threshold: {'yes' if study['exact'] else '**no**'}), with the confidences the run reported and its "
             "policy. First alarm in windows from the attack's start (- not detected); false actions in the normal "
             "period (tier entries).", "",
             "| threshold | value | / run's | normal windows over | " + " | ".join(attacks)
             + " | within 3 | false actions (entries) |",
             "|---|---:|---:|---:|" + "---:|" * len(attacks) + "---:|---:|"]
    for r in rows:
        alarm = [("-" if w is None else str(w)) for w in r["first_alarm_windows"].values()]
        lines.append(f"| {r['threshold_rule']} | {r['threshold']:.0f} | {r['over_run_threshold']:g} | "
                     f"{r['normal_windows_over']} | " + " | ".join(alarm)
                     + f" | {r['within_3']}/{len(attacks)} | {r['false_actions']} ({r['false_entries']}) |")
    return "\n".join(lines) + "\n"


def tier_study_markdown(study: dict[str, Any], command: str) -> str:
    rows = study["rows"]
    attacks = list(rows[0]["first_alarm_windows"]) if rows else []
    lines = [f"Generated by `{command}`: the run's {study['windows']} windows replayed (the run's own integer "
             f"likelihood step gives back every confidence it reported: {'yes' if study['exact'] else '**no**'}; "
             f"{study['value_record_windows']} windows with a value record). First alarm in windows from the "
             "attack's start (- not detected); false actions in the normal period (tier entries). Highest score "
             "over the threshold in each attack: "
             + ", ".join(f"{a} {v:g}x" for a, v in study["peak_over_threshold"].items()) + ".", "",
             "| likelihood | tiers | " + " | ".join(attacks) + " | within 3 | false actions (entries) | "
             "confidence at onset (" + ", ".join(attacks) + ") |",
             "|---|---|" + "---:|" * len(attacks) + "---:|---:|---|"]
    for r in rows:
        alarm = [("-" if w is None else str(w)) for w in r["first_alarm_windows"].values()]
        lines.append(f"| {r['likelihood']} | {r['tiers']} | " + " | ".join(alarm)
                     + f" | {r['within_3']}/{len(attacks)} | {r['false_actions']} ({r['false_entries']}) | "
                     + ", ".join(f"{v:g}" for v in r["onset_confidence"].values()) + " |")
    return "\n".join(lines) + "\n"


def _opt(value: float | None) -> str:
    """An optional number as the command line takes it (``none`` for None)."""
    return "none" if value is None else f"{value:g}"


def _float_or_none(text: str) -> float | None:
    return None if text.strip().lower() == "none" else float(text)


def _exit_on_sigterm(*_: object) -> None:
    raise SystemExit(128 + signal.SIGTERM)


#: The studies of an earlier run, by subcommand: their arguments (``[...]`` optional, ``...`` repeatable).
STUDIES = {"tiers": "WORKDIR RANGE_JSON [OUT_MD]", "thresholds": "WORKDIR RANGE_JSON [OUT_MD]",
           "refit": "WORKDIR RANGE_JSON [OUT_MD]", "cap": "MODEL SECONDS WORKDIR",
           "study": "RECORDING_FOLDER FIT_ROWS..."}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["role"]:
        role_main(argv[1:])
        return 0
    if argv[:1] == ["traced-agent"]:  # range.py traced-agent TRACE AGENT_ARGS...
        return traced_agent(argv[1], argv[2:])
    if argv[:1] and argv[0] in STUDIES:
        usage = f"usage: range.py {argv[0]} {STUDIES[argv[0]]}"
        if {"-h", "--help"} & set(argv[1:]):
            print(usage)
            return 0
        if len(argv) - 1 < sum(not arg.startswith("[") for arg in STUDIES[argv[0]].split()):
            print(usage, file=sys.stderr)
            return 2
    # SIGTERM (a CI timeout, `kill`) ends the run through its teardown, as Ctrl-C does: without this the default
    # action killed the range outright and left its namespaces, broker and device processes behind
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if argv[:1] == ["tiers"]:  # range.py tiers WORKDIR RANGE_JSON [OUT_MD]
        study = tier_study(Path(argv[1]), json.loads(Path(argv[2]).read_text()))
        md = tier_study_markdown(study, "python benchmarks/range.py " + " ".join(argv))
        if argv[3:]:
            Path(argv[3]).write_text(md)
        print(md)
        return 0
    if argv[:1] == ["thresholds"]:  # range.py thresholds WORKDIR RANGE_JSON [OUT_MD]
        study = threshold_study(Path(argv[1]), json.loads(Path(argv[2]).read_text()))
        md = threshold_study_markdown(study, "python benchmarks/range.py " + " ".join(argv))
        if argv[3:]:
            Path(argv[3]).write_text(md)
            Path(argv[3]).with_suffix(".json").write_text(json.dumps(study, indent=1) + "\n")
        print(md)
        return 0
    if argv[:1] == ["refit"]:  # range.py refit WORKDIR RANGE_JSON [OUT_MD]
        study = refit_study(Path(argv[1]), json.loads(Path(argv[2]).read_text()))
        md = refit_study_markdown(study, "python benchmarks/range.py " + " ".join(argv))
        if argv[3:]:
            Path(argv[3]).write_text(md)
            Path(argv[3]).with_suffix(".json").write_text(json.dumps(study, indent=1) + "\n")
        print(md)
        return 0
    if argv[:1] == ["cap"]:  # range.py cap MODEL SECONDS WORKDIR
        print(json.dumps(cap_study(Path(argv[1]), float(argv[2]), Path(argv[3])), indent=1))
        return 0
    from tinywarden.likelihood import SLOW_SHIFT  # here, not at the top: the roles above start without numpy

    if argv[:1] == ["study"]:  # range.py study RECORDING_FOLDER FIT_ROWS...
        for rows in argv[2:]:
            print(json.dumps(calibration_study(Path(argv[1]), int(rows))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", type=float, default=2400.0,
                    help="seconds of normal to record (default 2400: 20 compressed days)")
    ap.add_argument("--normal", type=float, default=1800.0, help="seconds of normal with the agent (default 1800)")
    ap.add_argument("--rate", type=float, default=10.0, help="sampling rate of record and agent, Hz (default 10)")
    ap.add_argument("--day", type=float, default=120.0, help="length of the compressed day, s (default 120)")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma-separated, from {','.join(ATTACKS)}")
    ap.add_argument("--attack-seconds", type=float, default=20.0, help="length of each attack (default 20)")
    ap.add_argument("--trials", type=int, default=6, help="tune --trials (default 6)")
    ap.add_argument("--target-fpr", type=float, default=TARGET_FPR,
                    help=f"tune --target-fpr (default {TARGET_FPR:g}: see TARGET_FPR)")
    ap.add_argument("--min-confidence", type=_float_or_none, default=MIN_CONFIDENCE,
                    help=f"the tiers' min_confidence, or none (default {MIN_CONFIDENCE:g})")
    ap.add_argument("--likelihood-gate", type=_float_or_none, default=LIKELIHOOD_GATE,
                    help=f"tune --likelihood-gate: levels over this z teach the confidence scale {2**SLOW_SHIFT}x "
                         f"more slowly, or none (default {LIKELIHOOD_GATE:g})")
    ap.add_argument("--keep-host-channels", action="store_true",
                    help=f"keep the host-wide channels {', '.join(HOST_WIDE)} in the recording tune reads")
    ap.add_argument("--settle", type=float, default=90.0, help="longest wait for the revert after an attack, s")
    ap.add_argument("--workdir", type=Path, default=None, help="keep the run's files here (default: a temp dir)")
    ap.add_argument("--out", type=Path, default=RESULTS / "range.md")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    ap.add_argument("--from-json", type=Path, default=None, help="re-render the table of an earlier range.json")
    a = ap.parse_args(argv)
    if a.from_json is not None:
        res = RangeResult(**json.loads(a.from_json.read_text()))
        a.out.write_text(markdown(res))
        print(markdown(res))
        return 0
    reason = unavailable()
    if reason:
        print(f"range: cannot run: {reason}", file=sys.stderr)
        return 2
    cfg = Config(record_s=a.record, normal_s=a.normal, rate=a.rate, day_s=a.day, attack_s=a.attack_seconds,
                 attacks=tuple(x.strip() for x in a.attacks.split(",") if x.strip()), trials=a.trials,
                 target_fpr=a.target_fpr, settle_s=a.settle, min_confidence=a.min_confidence,
                 likelihood_gate=a.likelihood_gate,
                 drop_host_channels=not a.keep_host_channels, workdir=a.workdir)  # fmt: skip
    res = run_range(cfg, log=lambda m: print(m, file=sys.stderr, flush=True))
    md = markdown(res)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(md)
    a.out.with_suffix(".json").write_text(json.dumps(asdict(res), indent=1, sort_keys=True) + "\n")
    print(md)
    if a.json:
        print(json.dumps(asdict(res), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
