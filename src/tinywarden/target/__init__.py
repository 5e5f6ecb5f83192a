"""Real-target measurement of the generated C: cross-compile for Cortex-M, size it, run it under QEMU.

``toolchain`` finds the tools (and says which Debian package provides a missing one), ``build`` compiles
the module alone for its flash/RAM footprint, ``qemu`` runs a compiled-in sample stream on an emulated
Cortex-M4 and on the host, optionally counting executed instructions per window.
"""

from tinywarden.target.build import (
    FIRMWARE_ENTRIES,
    CpuTarget,
    ModuleSize,
    firmware_flash,
    get_target,
    module_size,
    object_size,
    targets,
)
from tinywarden.target.qemu import (
    Decisions,
    HostRun,
    InferenceRun,
    InstructionCount,
    TargetRun,
    count_instructions,
    run_inference,
    run_on_host,
    run_on_qemu,
    write_stream_header,
)
from tinywarden.target.stack import STACK_ENTRIES, StackUsage, stack_usage
from tinywarden.target.toolchain import (
    BuildError,
    TargetError,
    TargetRunError,
    ToolMissingError,
    embedded_dir,
    missing_tools,
)

__all__ = [
    "FIRMWARE_ENTRIES",
    "STACK_ENTRIES",
    "BuildError",
    "CpuTarget",
    "Decisions",
    "HostRun",
    "InferenceRun",
    "InstructionCount",
    "ModuleSize",
    "StackUsage",
    "TargetError",
    "TargetRun",
    "TargetRunError",
    "ToolMissingError",
    "count_instructions",
    "embedded_dir",
    "firmware_flash",
    "get_target",
    "missing_tools",
    "module_size",
    "object_size",
    "run_inference",
    "run_on_host",
    "run_on_qemu",
    "stack_usage",
    "targets",
    "write_stream_header",
]
