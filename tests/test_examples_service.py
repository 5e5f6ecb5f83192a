"""examples/tinywarden-agent.service: the hardening the README promises, a command line the agent accepts, and a
unit systemd itself accepts (``systemd-analyze verify``, when the machine has it)."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tinywarden.agent.command import build_parser

UNIT = Path(__file__).resolve().parents[1] / "examples" / "tinywarden-agent.service"


def unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",), comment_prefixes=("#", ";"))
    cp.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    cp.read_string(UNIT.read_text())
    return cp


def test_the_unit_is_hardened_as_the_readme_says() -> None:
    s = unit()["Service"]
    assert s["User"] == "tinywarden" and s["User"] != "root"
    assert s["CapabilityBoundingSet"].split() == ["CAP_NET_ADMIN", "CAP_KILL"]
    assert set(s["AmbientCapabilities"].split()) <= set(s["CapabilityBoundingSet"].split())
    assert s["NoNewPrivileges"] == "yes" and s["ProtectSystem"] == "strict" and s["Restart"] == "on-failure"
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectControlGroups", "RestrictSUIDSGID", "LockPersonality"):
        assert s[key] == "yes", key
    argv = shlex.split(s["ExecStart"])
    state_dir = argv[argv.index("--state-dir") + 1]
    # the one writable place is the agent's state directory, which systemd creates for the service's user
    assert s["ReadWritePaths"].split() == [state_dir] and state_dir == f"/var/lib/{s['StateDirectory']}"
    assert unit()["Install"]["WantedBy"] == "multi-user.target"


def test_the_unit_runs_a_command_line_the_agent_accepts() -> None:
    argv = shlex.split(unit()["Service"]["ExecStart"])
    assert Path(argv[0]).name == "tinywarden" and argv[1] == "agent"
    args = build_parser().parse_args(argv[2:])  # the agent command's own parser: parses every option, runs nothing
    assert args.real_actuators is True and args.replay is None  # live, with real actions
    assert str(args.pubkey).startswith("/etc/") and args.rate == 1.0


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    """In a root of its own: systemd's own unit files, the unit installed, and an executable at ExecStart."""
    system = Path("/usr/lib/systemd/system")
    if not (system / "multi-user.target").exists():
        pytest.skip("systemd's unit files are not installed here")
    root = tmp_path / "root"
    shutil.copytree(system, root / "usr/lib/systemd/system", symlinks=True)
    exe = root / shlex.split(unit()["Service"]["ExecStart"])[0].lstrip("/")
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    installed = root / "etc/systemd/system" / UNIT.name
    installed.parent.mkdir(parents=True)
    shutil.copy(UNIT, installed)
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", f"--root={root}", f"/etc/systemd/system/{UNIT.name}"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr
