"""The README's command sequences, run as a user pastes them, one after the other, in a fresh directory.

The fenced ``bash`` blocks of four README sections are read from README.md itself (so a changed command is
tested as changed), and every line is run with ``tinywarden`` on PATH. Three things differ from a user's
shell, each for a stated reason:

- ``model.twb`` and ``data.csv`` are the README's placeholders for "your model" and "your telemetry": they
  are the ``valve.twb`` and ``valve.csv`` the first section makes.
- ``/var/lib/tinywarden`` (the device's state directory) becomes a directory inside the test's own.
- ``tinywarden agent ... --mqtt broker:8883 --tls-ca ca.pem`` needs a real MQTT broker with TLS and runs until
  stopped: it is the one line not run (tests/test_agent_mqtt.py runs the agent against a local broker).

"Protecting a Linux gateway" runs on its own, in a fresh directory, every line (the live ``agent`` too, dry
run), shortened through the commands' own flags: ``--duration 2h`` of recording becomes
:data:`GATEWAY_SHORTER`'s, at ``--rate 10`` for both ``record`` and ``agent`` (so the short recording still has
rows enough to tune on), ``tune`` stops after :data:`GATEWAY_ADDED`'s count of candidates (its
``--time-budget`` is kept: a count, unlike a time, does the same work on any machine), and the agent, which
runs until stopped, gets ``--max-samples``. ``eth0`` is kept when the host has it, else it becomes an
interface the host has. The unit file the section points to is checked by tests/test_examples_service.py.
"""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTIONS = ("Using it on your own telemetry", "On the microcontroller", "Responding on the device",
            "Signed bundles and the agent")
GATEWAY = "Protecting a Linux gateway"
#: The gateway section's long-running values, by option, and what the test runs instead.
GATEWAY_SHORTER = {"--duration": "20s", "--rate": "10"}
#: What the test adds to a gateway line, by command: ``tune`` stops after a count of candidates, not a time, so
#: the work done (and the verdict) does not depend on how fast or loaded the machine is.
GATEWAY_ADDED = {"tune": ["--trials", "4"]}
GATEWAY_AGENT_SAMPLES = "40"
NOT_RUN = {"agent": "needs an MQTT broker with TLS at broker:8883 and runs until stopped"}
PLACEHOLDERS = {"model.twb": "valve.twb", "data.csv": "valve.csv"}
DEVICE_STATE_DIR = "/var/lib/tinywarden"


def readme_blocks(text: str) -> dict[str, list[str]]:
    """The commands of the first fenced ``bash`` block under each ``##``/``###`` heading, by heading."""
    blocks: dict[str, list[str]] = {}
    for match in re.finditer(r"^#{2,3} (.+?)\n(.*?)(?=^#{2,3} |\Z)", text, re.S | re.M):
        fence = re.search(r"^```bash\n(.*?)^```", match.group(2), re.S | re.M)
        if fence:
            joined = re.sub(r"\\\n\s*", " ", fence.group(1))  # a trailing backslash continues the line
            blocks[match.group(1).strip()] = [ln for ln in joined.splitlines() if ln.strip()]
    return blocks


def test_readme_blocks_are_found() -> None:
    blocks = readme_blocks(README.read_text())
    for section in (*SECTIONS, GATEWAY):
        assert blocks.get(section), f"README section {section!r} has no bash block"
        assert all(shlex.split(line, comments=True)[0] == "tinywarden" for line in blocks[section])


def _tinywarden_on_path(bin_dir: Path) -> dict[str, str]:
    """An environment whose ``tinywarden`` is this interpreter running this checkout's package."""
    bin_dir.mkdir()
    exe = bin_dir / "tinywarden"
    exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m tinywarden "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": src if not path else f"{src}{os.pathsep}{path}", "COLUMNS": "200"}


@pytest.mark.slow
def test_readme_sequences_run_as_written(tmp_path: Path) -> None:
    blocks = readme_blocks(README.read_text())
    work = tmp_path / "user"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    env = _tinywarden_on_path(tmp_path / "bin")
    state_dir = tmp_path / "device-state"
    ran: dict[str, subprocess.CompletedProcess[str]] = {}
    for section in SECTIONS:
        if section == "On the microcontroller":
            for placeholder, made in PLACEHOLDERS.items():
                shutil.copy(work / made, work / placeholder)
        for line in blocks[section]:
            argv = shlex.split(line, comments=True)
            if argv[1] in NOT_RUN:
                continue
            argv = [str(state_dir) if a == DEVICE_STATE_DIR else a for a in argv]
            r = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"README line failed: {line}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
            assert "Traceback" not in r.stderr, line
            ran[argv[1]] = r
    assert {"respond", "sign", "install"} <= set(ran)  # the flow reached its end
    # scores.csv last came from `score --int8`: respond must compare it with the integer threshold, not the float
    assert "holds int8 scores: replaying against model.twb's integer threshold" in ran["respond"].stderr
    # what the sequences leave behind, checked where a silent wrong answer would hide
    rows = list(csv.DictReader((work / "scores.csv").open()))
    assert rows and {"window_end", "score", "anomaly", "threshold"} <= set(rows[0])
    assert (work / "fw" / "tinywarden_model.c").exists() and (work / "logs" / "audit.log").stat().st_size > 0
    assert (work / "cam.twbundle").exists() and any(state_dir.iterdir())


def _an_interface() -> str:
    """``eth0`` when this host has it, else another non-loopback interface (``lo`` when there is none)."""
    import psutil

    names = sorted(psutil.net_io_counters(pernic=True))
    return "eth0" if "eth0" in names else next((n for n in names if n != "lo"), "lo")


@pytest.mark.slow
def test_protecting_a_linux_gateway_runs_as_written(tmp_path: Path) -> None:
    lines = readme_blocks(README.read_text())[GATEWAY]
    assert [shlex.split(ln, comments=True)[1] for ln in lines] == [
        "record", "tune", "keygen", "bundle", "sign", "install", "agent"]  # record -> tune -> sign -> install -> agent
    work = tmp_path / "user"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    env = _tinywarden_on_path(tmp_path / "bin")
    state_dir = tmp_path / "device-state"
    iface = _an_interface()
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    for line in lines:
        argv = shlex.split(line, comments=True)
        for i, a in enumerate(argv[:-1]):
            if a in GATEWAY_SHORTER:
                argv[i + 1] = GATEWAY_SHORTER[a]
        argv = [str(state_dir) if a == DEVICE_STATE_DIR else iface if a == "eth0" else a for a in argv]
        argv += GATEWAY_ADDED.get(argv[1], [])
        if argv[1] == "agent":
            argv += ["--max-samples", GATEWAY_AGENT_SAMPLES]
        r = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, f"README line failed: {line}\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
        assert "Traceback" not in r.stderr, line
        out[argv[1]] = r
    assert any((work / "rec").iterdir()) and (work / "gw.twb").exists() and any(state_dir.iterdir())
    agent = out["agent"].stdout
    assert f"{GATEWAY_AGENT_SAMPLES} / " in agent and "gw1 v1" in agent  # the signed bundle ran on live samples
