"""What the likelihood's value record (step 8 of :mod:`tinywarden.kernels.likelihood_q`) adds to the default
pipeline's C module on the microcontroller, measured with ``benchmarks/mcu.py``'s machinery (the demo's camera
pipeline, ``arm-none-eabi-gcc -Os`` sizes, exact instructions per window from QEMU's trace, the emulated Cortex-M4's
decisions against the Python int8 reference): the same program with and without the value record.

    python benchmarks/value_record_mcu.py          # a markdown table on stdout (no results file is written:
                                                   # benchmarks/results/mcu.md is mcu.py's)
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.mcu import TARGETS, default_module, missing_tools, module_figures  # noqa: E402

from tinywarden.kernels import likelihood_q  # noqa: E402
from tinywarden.program import Program  # noqa: E402


def without_value_record(program: Program) -> Program:
    """``program`` with its likelihood step minus the value record (attribute and constants)."""
    lik = program.likelihood
    assert lik is not None and "vrecord" in lik.attrs, "the default program has no value record"
    return dataclasses.replace(program, likelihood=likelihood_q.without_value_record(lik))


def measure() -> dict[str, Any]:
    program, stream = default_module(14.0, 8.0, 7)
    out: dict[str, Any] = {"model_id": program.model_id, "family": program.info.get("detector"), "targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="tw-vrec-") as tmp:
        for label, prog in (("with", program), ("without", without_value_record(program))):
            figs, _ = module_figures(prog, Path(tmp) / label, stream)
            out[label] = {"sizes": {c: {k: v[k] for k in ("flash", "static_ram", "state", "static_ram_with_state")}
                                    | {"libgcc": v["libgcc"]} for c, v in figs["sizes"].items()},
                          "instructions": {c: v["per_window"] for c, v in figs["instructions"].items()},
                          "qemu_check": figs["qemu_check"]}
    return out


def render(r: dict[str, Any]) -> str:
    w, wo = r["with"], r["without"]
    lines = [f"Default pipeline (camera, {r.get('family', 'dense_ae')}, window 128 / stride 64), "
             f"model {r['model_id']}; targets {r['targets']['flash_bytes']} B flash / "
             f"{r['targets']['static_ram_bytes']} B RAM.", "",
             "| core | flash B without / with (+) | RAM B (static + state) without / with (+) | "
             "instr./window without / with (+) | libgcc helpers added |", "|---|---:|---:|---:|---|"]
    for core, s in w["sizes"].items():
        b = wo["sizes"][core]
        i, j = wo["instructions"].get(core), w["instructions"].get(core)
        added = sorted(set(s["libgcc"]) - set(b["libgcc"]))
        ins = f"{i:.0f} / {j:.0f} ({j - i:+.0f})" if i is not None and j is not None else ""
        lines.append(f"| {core} | {b['flash']} / {s['flash']} ({s['flash'] - b['flash']:+d}) | "
                     f"{b['static_ram_with_state']} / {s['static_ram_with_state']} "
                     f"({s['static_ram_with_state'] - b['static_ram_with_state']:+d}) | {ins} | "
                     f"{', '.join(added) or 'none'} |")
    ok = w["qemu_check"]["decisions_equal_reference"]
    lines.append(f"\nEmulated Cortex-M4 decisions equal the Python int8 reference: with {ok}"
                 f", without {wo['qemu_check']['decisions_equal_reference']} ({w['qemu_check']['windows']} windows).")
    return "\n".join(lines)


def main() -> int:
    missing = missing_tools()
    if missing:
        print("cannot run:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 2
    r = measure()
    print(render(r))
    if "--json" in sys.argv:
        print(json.dumps(r, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
