"""Finding and checking the cross toolchain, QEMU and the host C compiler.

Every lookup failure is a :class:`ToolMissingError` whose message names the Debian package that
provides the tool, so a fresh machine's fix is one ``apt-get install`` (``scripts/install-toolchain.sh``
does it idempotently).

>>> sorted(DEBIAN_PACKAGES)[:2]
['arm-none-eabi-gcc', 'arm-none-eabi-nm']
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from tinywarden.errors import TinywardenError

#: tool -> Debian package that installs it
DEBIAN_PACKAGES: dict[str, str] = {
    "arm-none-eabi-gcc": "gcc-arm-none-eabi",
    "arm-none-eabi-size": "binutils-arm-none-eabi",
    "arm-none-eabi-nm": "binutils-arm-none-eabi",
    "arm-none-eabi-objdump": "binutils-arm-none-eabi",
    "newlib": "libnewlib-arm-none-eabi",
    "qemu-system-arm": "qemu-system-arm",
    "cc": "gcc",
}
INSTALL_HINT = "scripts/install-toolchain.sh installs all of them"


class TargetError(TinywardenError):
    """Base class of the embedded-target errors."""


class ToolMissingError(TargetError):
    """A compiler, binutils program, C library or emulator that is not installed."""


class BuildError(TargetError):
    """The C compiler or linker rejected the generated module or the harness."""


class TargetRunError(TargetError):
    """The emulated (or host) run failed: fault, timeout, non-zero exit or malformed output."""


def _missing(tool: str) -> ToolMissingError:
    return ToolMissingError(
        f"{tool} not found: install the Debian package {DEBIAN_PACKAGES[tool]} "
        f"(apt-get install -y {DEBIAN_PACKAGES[tool]}; {INSTALL_HINT})"
    )


def find_tool(tool: str) -> str:
    """Absolute path of ``tool`` on ``PATH``; :class:`ToolMissingError` naming its package otherwise."""
    if tool not in DEBIAN_PACKAGES or tool == "newlib":
        raise ValueError(f"unknown tool {tool!r}")
    path = shutil.which(tool)
    if path is None:
        raise _missing(tool)
    return path


@cache
def check_newlib() -> None:
    """Raise :class:`ToolMissingError` unless the cross compiler can find newlib's ``libc.a``."""
    gcc = find_tool("arm-none-eabi-gcc")
    out = subprocess.run([gcc, "-print-file-name=libc.a"], capture_output=True, text=True, check=False)
    # gcc echoes the bare name back when the library is not in any of its search directories.
    if out.returncode != 0 or not os.path.isabs(out.stdout.strip()):
        raise _missing("newlib")


@cache
def qemu_version() -> tuple[int, int]:
    """(major, minor) of ``qemu-system-arm``."""
    out = subprocess.run([find_tool("qemu-system-arm"), "--version"], capture_output=True, text=True,
                         check=False)
    m = re.search(r"version (\d+)\.(\d+)", out.stdout)
    if m is None:
        raise ToolMissingError(f"qemu-system-arm --version gave no version: {out.stdout.strip()[:200]!r}")
    return int(m.group(1)), int(m.group(2))


def one_insn_per_tb_args() -> list[str]:
    """QEMU options making every translation block a single instruction (renamed in QEMU 8.1)."""
    return ["-accel", "tcg,one-insn-per-tb=on"] if qemu_version() >= (8, 1) else ["-singlestep"]


def missing_tools(tools: Sequence[str] = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm",
                                          "newlib", "qemu-system-arm", "cc")) -> list[str]:
    """One message per tool of ``tools`` that is absent (empty when everything is installed)."""
    problems = []
    for tool in tools:
        try:
            if tool == "newlib":
                check_newlib()
            else:
                find_tool(tool)
        except ToolMissingError as exc:
            problems.append(str(exc))
    return problems


def embedded_dir() -> Path:
    """The repository's ``embedded/`` folder (linker script, startup, harness); ``$TINYWARDEN_EMBEDDED``
    overrides it."""
    env = os.environ.get("TINYWARDEN_EMBEDDED")
    d = Path(env) if env else Path(__file__).resolve().parents[3] / "embedded"
    if not (d / "harness.c").is_file():
        raise ToolMissingError(
            f"embedded harness not found in {d}: run from a tinywarden source checkout or set "
            "TINYWARDEN_EMBEDDED to its embedded/ folder"
        )
    return d


def run_tool(argv: Sequence[str], what: str, cwd: Path | None = None, timeout: float = 120.0) -> str:
    """Run a compiler/binutils command; its stdout, or :class:`BuildError` quoting its diagnostics."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, cwd=cwd, timeout=timeout,
                             check=False)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"{what}: {Path(argv[0]).name} did not finish within {timeout:g} s") from exc
    if out.returncode != 0:
        diag = (out.stderr or out.stdout).strip()
        raise BuildError(f"{what} failed ({Path(argv[0]).name} exit {out.returncode}):\n{diag[-4000:]}")
    return out.stdout
