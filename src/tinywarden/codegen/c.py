"""Print a :class:`~tinywarden.program.Program` as a self-contained C99 module.

The emitter only *prints*: every line of C comes from a template, the module files and the constant
array in ``codegen/templates``, each kernel's own in its module of :mod:`tinywarden.kernels` (whose
``//@call:`` line is the call statement, ``//@requires:`` names the helpers of
:data:`tinywarden.arith.C_HELPERS` it needs, and whose limits are emitted as ``#define`` lines).
The arithmetic itself is the program's; :func:`tinywarden.program.run_int8` interprets the same program
and the test suite compiles this output and requires bit-identical scores and decisions.

>>> sorted(emit_c.__annotations__)
['policy', 'program', 'return']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np

from tinywarden.arith import C_HELPERS
from tinywarden.codegen.render import GENERATOR, GENERATOR_VERSION, c_array, c_defines, c_literal, template
from tinywarden.errors import ConfigError
from tinywarden.kernels import CTYPES, KERNELS, KernelSpec
from tinywarden.program import MAX_FRAC_BITS, SAMPLE_SATURATION, Program

if TYPE_CHECKING:
    from tinywarden.respond.policy import Policy

__all__ = ["GENERATOR", "GENERATOR_VERSION", "HEADER_NAME", "SOURCE_NAME", "emit_c", "export_c", "write_c"]

HEADER_NAME = "tinywarden_model.h"
SOURCE_NAME = "tinywarden_model.c"


@dataclass(frozen=True)
class KernelTemplate:
    """A kernel's C template split into its call line, required helpers and C body."""

    call: Template
    requires: tuple[str, ...]
    body: str

    @classmethod
    def of(cls, spec: KernelSpec) -> KernelTemplate:
        call: list[str] = []
        requires: tuple[str, ...] = ()
        body = []
        for line in spec.c_template.strip("\n").splitlines():
            if line.startswith("//@call:"):
                call.append(line.removeprefix("//@call:").strip())
            elif line.startswith("//@+"):
                call.append(line.removeprefix("//@+").strip())
            elif line.startswith("//@requires:"):
                requires = tuple(line.removeprefix("//@requires:").split())
            else:
                body.append(line)
        subs = dict(spec.c_subs)
        return cls(Template(Template(" ".join(call)).safe_substitute(subs)), requires,
                   Template("\n".join(body).strip() + "\n").substitute(subs))


def _call_fields(program: Program, i: int) -> dict[str, Any]:
    op = program.ops[i]
    fields: dict[str, Any] = {"window": program.window, "n_channels": program.n_channels, "dst": op.dst}
    for j, src in enumerate(op.src):
        t = program.tensor(src)
        fields[f"src{j}"] = src
        fields[f"src{j}_size"] = t.size
        fields.update({f"src{j}_shape{d}": n for d, n in enumerate(t.shape)})
    dst = program.tensor(op.dst)
    fields["dst_size"] = dst.size
    fields.update({f"dst_shape{d}": n for d, n in enumerate(dst.shape)})
    for cname, arr in op.consts.items():
        a = np.asarray(arr)
        fields[f"c_{cname}"] = f"tw_op{i}_{cname}"
        fields[f"{cname}_size"] = a.size
        fields.update({f"{cname}_shape{d}": n for d, n in enumerate(a.shape)})
    fields.update({k: int(v) for k, v in op.attrs.items() if isinstance(v, (int, np.integer))})
    return fields


def emit_c(program: Program, policy: Policy | None = None) -> dict[str, str]:
    """``{file name: text}`` of the C module (``tinywarden_model.h`` and ``tinywarden_model.c``).

    With ``policy``, both files also get the response state machine (:mod:`tinywarden.codegen.respond`);
    without it they are exactly the detector loop.
    """
    program.validate()
    model_id = program.model_id
    multiplier, shift = program.sample_requant
    constants = [c_array("tw_sample_multiplier", multiplier), c_array("tw_sample_shift", shift.astype(np.int8)),
                 c_array("tw_sample_zero", program.sample_zero)]
    kernels: list[tuple[str, str]] = []
    calls: list[str] = []
    limits: dict[str, int] = {}
    needed: set[str] = set()
    for i, op in enumerate(program.ops):
        spec = KERNELS[op.kind]  # validate() has checked the kind is registered
        kt = KernelTemplate.of(spec)
        constants.extend(c_array(f"tw_op{i}_{c}", np.asarray(a)) for c, a in op.consts.items())
        try:
            calls.append("    " + kt.call.substitute(_call_fields(program, i)))
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"kernel {op.kind!r}: its C call line names an unknown field ({exc})") from None
        if not any(k == op.kind for k, _ in kernels):
            kernels.append((op.kind, kt.body))
            needed.update(kt.requires)
            limits.update(spec.limits)
    helpers = [text.strip("\n") + "\n" for name, text in C_HELPERS.items() if name in needed]
    limit_block = ([f"/* limits of the kernels below (tinywarden.kernels) */\n{c_defines(sorted(limits.items()))}\n"]
                   if limits else [])
    scratch = [f"    {CTYPES[t.dtype]} t_{t.name}[{t.size}];" for t in program.tensors]
    info = program.info
    feats = info.get("features") or []
    common = {
        "generator": GENERATOR,
        "model_id": model_id,
        "detector": info.get("detector", "?"),
    }
    header = template("tinywarden_model.h.tmpl").substitute(
        common,
        channel_list=", ".join(program.channels),
        window=program.window,
        stride=program.stride,
        feature_line=(f"features per channel: {', '.join(feats)};" if feats else
                      "the model reads the raw window (per-channel rescaled to int8);"),
        n_channels=program.n_channels,
        k=program.k,
        n=program.n,
        threshold=c_literal(program.threshold, "int32"),
        const_bytes=program.const_bytes,
        scratch_fields="\n".join(scratch),
        ring_bytes=2 * program.window * program.n_channels,
        max_frac_bits=MAX_FRAC_BITS,
        sample_saturation=SAMPLE_SATURATION,
    )
    source = template("tinywarden_model.c.tmpl").substitute(
        common,
        constants="\n".join(constants).rstrip(),
        kernels="\n".join([*limit_block, *helpers, *(body for _, body in kernels)]).rstrip(),
        calls="\n".join(calls),
        history_mask=f"UINT64_C({hex((1 << program.n) - 1)})",
    )
    if policy is not None:
        from tinywarden.codegen.respond import emit_respond

        section = emit_respond(program, policy)
        header, source = header + section.header, source + section.source
    return {HEADER_NAME: header, SOURCE_NAME: source}


def write_c(program: Program, out_dir: str | Path, policy: Policy | None = None) -> list[Path]:
    """Write the C module (with the response machine of ``policy``, if given) into ``out_dir`` (created if
    needed); return the written paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in emit_c(program, policy).items():
        p = out / name
        p.write_text(text)
        paths.append(p)
    return paths


def export_c(pipeline: Any, out_dir: Path, source: str = "<model>", policy: Policy | None = None) -> list[Path]:
    """The ``c`` target of ``tinywarden export``: the int8 program stored in the model file, as C (with the
    response machine of ``policy``, if given)."""
    from tinywarden.quantize import load_program

    return write_c(load_program(pipeline, source), out_dir, policy)
