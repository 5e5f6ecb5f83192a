"""Cross-compiling the generated module alone and reading its footprint with ``arm-none-eabi-size``.

Flash is ``text + data`` (code, constants and the initial values of initialised variables), static RAM
is ``data + bss`` of the module's object file: the figures a firmware team adds to its own map file.
The caller-owned state (``tw_state_t``, ``TW_STATE_BYTES``) is reported next to them, measured with the
target's own ``sizeof``, because it is RAM the firmware must reserve for the model wherever it puts it.
"""

from __future__ import annotations

import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tinywarden.errors import ConfigError
from tinywarden.target.toolchain import TargetError, embedded_dir, find_tool, run_tool

MODEL_STEM = "tinywarden_model"
#: flags every build adds to the core's own: C99 as the generator promises, sections per function for
#: --gc-sections, and no float contraction so a fused multiply-add on one core cannot change a decision.
COMMON_CFLAGS = (
    "-std=c99", "-Wall", "-Wextra", "-ffunction-sections", "-fdata-sections", "-ffp-contract=off",
)


@dataclass(frozen=True)
class CpuTarget:
    """One Cortex-M core: its compiler flags and, when QEMU can run it, the board and linker script."""

    name: str
    cflags: tuple[str, ...]
    machine: str | None = None
    linker_script: str | None = None


def load_targets(path: Path | None = None) -> dict[str, CpuTarget]:
    """The cores described in ``embedded/targets.toml``."""
    path = path or embedded_dir() / "targets.toml"
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TargetError(f"{path}: cannot read target table: {exc}") from exc
    out = {}
    for name, spec in raw.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("cflags"), list):
            raise TargetError(f"{path}: [{name}] needs a cflags list")
        out[name] = CpuTarget(name, tuple(spec["cflags"]), spec.get("machine"), spec.get("linker_script"))
    return out


@cache
def targets() -> dict[str, CpuTarget]:
    """name -> :class:`CpuTarget` for the repository's ``embedded/targets.toml`` (read once)."""
    return load_targets()


def get_target(name: str) -> CpuTarget:
    """The :class:`CpuTarget` called ``name``; :class:`ConfigError` listing the known ones otherwise."""
    known = targets()
    if name not in known:
        raise ConfigError(f"unknown Cortex-M target {name!r}; known: {', '.join(sorted(known))}")
    return known[name]


def model_source(model_dir: Path) -> Path:
    """``model_dir/tinywarden_model.c``, checked to exist with its header."""
    src = Path(model_dir) / f"{MODEL_STEM}.c"
    for p in (src, src.with_suffix(".h")):
        if not p.is_file():
            raise TargetError(
                f"{p}: not found (write it with `tinywarden export MODEL --target c --out DIR`)"
            )
    return src


@dataclass(frozen=True)
class ModuleSize:
    """Footprint of the generated module alone on one core, in bytes."""

    target: str
    text: int
    data: int
    bss: int
    state_bytes: int  # sizeof(tw_state_t) on the target: RAM the caller reserves
    #: symbols the module needs from libgcc/libc (soft-float helpers, memset ...): their code is not counted above
    undefined: tuple[str, ...] = ()
    #: the module's own symbols, name -> size, largest first
    symbols: dict[str, int] = field(default_factory=dict)

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def static_ram(self) -> int:
        return self.data + self.bss

    @property
    def ram_with_state(self) -> int:
        """Static RAM plus the caller-owned state: what the model costs in RAM wherever the state lives."""
        return self.static_ram + self.state_bytes


def _size_of_object(obj: Path) -> tuple[int, int, int]:
    out = run_tool([find_tool("arm-none-eabi-size"), "-A", "-d", str(obj)], f"sizing {obj.name}")
    # -A (System V format) lists every section, so .rodata is counted as flash even in a relocatable
    # object, where the Berkeley format's "text" column would already include it but hides the split.
    text = data = bss = 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[1].isdigit():
            continue
        name, size = parts[0], int(parts[1])
        if name.startswith((".text", ".rodata")):
            text += size
        elif name.startswith(".data"):
            data += size
        elif name.startswith((".bss", "COMMON")):
            bss += size
    return text, data, bss


def _symbols(obj: Path) -> tuple[dict[str, int], tuple[str, ...]]:
    """(defined symbol -> size, largest first; undefined symbols, sorted) from one ``nm -S`` listing.

    One process per object, not two: a fleet sizes one module per device, and each tool start counts.
    """
    listing = run_tool([find_tool("arm-none-eabi-nm"), "-S", str(obj)], f"listing symbols of {obj.name}")
    sized: list[tuple[str, int]] = []
    undefined: set[str] = set()
    for line in listing.splitlines():
        parts = line.split()
        if len(parts) == 4:  # value size type name
            sized.append((parts[3], int(parts[1], 16)))
        elif len(parts) == 2 and parts[0] in ("U", "w", "v"):  # undefined (weak undefined too, as nm -u)
            undefined.add(parts[1])
    sizes = dict(sorted(sized, key=lambda ns: (-ns[1], ns[0])))  # ties by name
    return sizes, tuple(sorted(undefined))


def compile_object(source: Path, target: CpuTarget, out: Path, include: list[Path]) -> Path:
    """``arm-none-eabi-gcc -c`` of one file with the target's flags; returns the object path."""
    argv = [find_tool("arm-none-eabi-gcc"), *target.cflags, *COMMON_CFLAGS,
            *[f"-I{d}" for d in include], "-c", str(source), "-o", str(out)]
    run_tool(argv, f"compiling {source.name} for {target.name}")
    return out


def object_size(source: Path, includes: list[Path], target: str = "cortex-m4") -> ModuleSize:
    """Footprint of any one C file compiled alone for ``target`` (e.g. a peer's generated model);
    ``state_bytes`` is 0 because such code keeps its working memory in static buffers."""
    cpu = get_target(target)
    with tempfile.TemporaryDirectory(prefix="tw-size-") as tmp:
        obj = compile_object(Path(source), cpu, Path(tmp) / "object.o", includes)
        text, data, bss = _size_of_object(obj)
        sizes, undefined = _symbols(obj)
    return ModuleSize(target, text, data, bss, 0, undefined, sizes)


def module_size(model_dir: Path, target: str = "cortex-m4") -> ModuleSize:
    """Cross-compile ``model_dir/tinywarden_model.c`` alone for ``target`` and measure it.

    Example (needs the cross toolchain and a generated module)::

        sz = module_size(Path("out"), "cortex-m0plus")
        print(sz.flash, sz.static_ram, sz.state_bytes)
    """
    cpu = get_target(target)
    src = model_source(model_dir)
    with tempfile.TemporaryDirectory(prefix="tw-size-") as tmp:
        obj = compile_object(src, cpu, Path(tmp) / f"{MODEL_STEM}.o", [src.parent])
        text, data, bss = _size_of_object(obj)
        sizes, undefined = _symbols(obj)
        # The state size as the target compiler lays it out (padding, int widths), not the host's.
        probe = Path(tmp) / "state_probe.c"
        probe.write_text(f'#include "{MODEL_STEM}.h"\nunsigned char tw_state_probe[sizeof(tw_state_t)];\n')
        probe_obj = compile_object(probe, cpu, Path(tmp) / "state_probe.o", [src.parent])
        state = _symbols(probe_obj)[0].get("tw_state_probe")
        if state is None:
            raise TargetError(f"{src.with_suffix('.h')}: could not measure sizeof(tw_state_t)")
    return ModuleSize(target, text, data, bss, state, undefined, sizes)


#: The entry points of a firmware that pushes float samples (tinywarden_model.h): tw_init and tw_push. What its link
#: keeps of the module is what they reach.
FIRMWARE_ENTRIES = ("tw_init", "tw_push")


def firmware_flash(model_dir: Path, target: str = "cortex-m4", entries: Sequence[str] = FIRMWARE_ENTRIES) -> int:
    """Flash (text + data) of ``model_dir``'s module as a firmware build links it: compiled as :func:`module_size`
    compiles it (a section per function and datum) and linked relocatably with ``--gc-sections`` from ``entries``,
    so an entry point the firmware does not call (``tw_push_q``, ``tw_push_fixed``, the size queries ...) and what
    only it reaches cost nothing, as in the firmware's own map file."""
    cpu = get_target(target)
    src = model_source(model_dir)
    with tempfile.TemporaryDirectory(prefix="tw-size-") as tmp:
        obj = compile_object(src, cpu, Path(tmp) / f"{MODEL_STEM}.o", [src.parent])
        kept = Path(tmp) / "kept.o"
        run_tool([find_tool("arm-none-eabi-gcc"), *cpu.cflags, "-nostdlib", "-r", "-Wl,--gc-sections",
                  *(f"-Wl,--undefined={e}" for e in entries), f"-Wl,--entry={entries[0]}", str(obj), "-o", str(kept)],
                 f"linking {src.name} for {target} with --gc-sections")
        text, data, _ = _size_of_object(kept)
    return text + data
