"""Print a :class:`~tinywarden.program.Program` as a self-contained C99 module.

The emitter only *prints*: every line of C comes from a template in ``codegen/templates`` (the two
module files, one constant-array template, and one file per kernel under ``templates/kernels`` whose
``//@call:`` line is the call statement and ``//@requires:`` names the helper templates it needs).
The arithmetic itself is the program's; :func:`tinywarden.program.run_int8` interprets the same program
and the test suite compiles this output and requires bit-identical scores and decisions.

>>> sorted(emit_c.__annotations__)
['policy', 'program', 'return']
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np

from tinywarden import __version__
from tinywarden.errors import ConfigError
from tinywarden.program import CTYPES, Program

if TYPE_CHECKING:
    from tinywarden.respond.policy import Policy

GENERATOR_VERSION = 1
GENERATOR = f"tinywarden {__version__} (codegen.c v{GENERATOR_VERSION})"
HEADER_NAME = "tinywarden_model.h"
SOURCE_NAME = "tinywarden_model.c"

#: kind -> (kernel template file, extra substitutions): two kinds may share one template.
KERNEL_TEMPLATES: dict[str, tuple[str, dict[str, str]]] = {
    "features_s16": ("features_s16", {}),
    "requantize_s64_s8": ("requantize_s64", {"suffix": "s8", "ctype": "int8_t"}),
    "requantize_s64_s16": ("requantize_s64", {"suffix": "s16", "ctype": "int16_t"}),
    "requantize_s16_s8": ("requantize_s16_s8", {}),
    "fully_connected_s8": ("fully_connected_s8", {}),
    "convolve_1d_s8": ("convolve_1d_s8", {}),
    "sum_sq_diff_s8": ("sum_sq_diff_s8", {}),
    "sum_sq_s16": ("sum_sq_s16", {}),
    "max_abs_s16": ("max_abs_s16", {}),
    "min_sq_dist_s16": ("min_sq_dist_s16", {}),
    "knn_dist_s16": ("knn_dist_s16", {}),
    "bounds_violation_s16": ("bounds_violation_s16", {}),
    "iforest_path_s16": ("iforest_path_s16", {}),
    "ar_residual_s16": ("ar_residual_s16", {}),
    "rbf_kernel_sum_s16": ("rbf_kernel_sum_s16", {}),
    "pca_residual_s16": ("pca_residual_s16", {}),
    "gru_s8": ("gru_s8", {}),
}
#: helper templates in the order they must appear (a helper may use an earlier one)
HELPERS = ("arith", "isqrt", "score", "round64")


def _template(name: str) -> Template:
    return Template(resources.files("tinywarden.codegen").joinpath("templates", name).read_text())


@dataclass(frozen=True)
class KernelTemplate:
    """One kernel template split into its call line, required helpers and C body."""

    call: Template
    requires: tuple[str, ...]
    body: Template

    @classmethod
    def load(cls, name: str) -> KernelTemplate:
        text = resources.files("tinywarden.codegen").joinpath("templates", "kernels", f"{name}.c.tmpl").read_text()
        call, requires, body = "", (), []
        for line in text.splitlines():
            if line.startswith("//@call:"):
                call = line.removeprefix("//@call:").strip()
            elif line.startswith("//@requires:"):
                requires = tuple(line.removeprefix("//@requires:").split())
            else:
                body.append(line)
        return cls(Template(call), requires, Template("\n".join(body).strip() + "\n"))


def _c_int(v: int, dtype: str) -> str:
    v = int(v)
    if dtype == "int64":
        return f"INT64_C({v})" if v != -(2**63) else "INT64_MIN"
    if dtype == "int32" and v == -(2**31):
        return "INT32_MIN"
    return str(v)


def _c_float(v: float) -> str:
    """Exact C99 hexadecimal float literal of a float32 value."""
    return f"{float(np.float32(v)).hex()}f"


def _array(name: str, arr: np.ndarray) -> str:
    a = np.asarray(arr).ravel()
    if a.dtype == np.float32:
        ctype, vals = "float", [_c_float(v) for v in a]
    else:
        ctype, vals = CTYPES[a.dtype.name], [_c_int(v, a.dtype.name) for v in a]
    per_line = 6 if ctype in ("float", "int64_t") else 12
    lines = ["    " + ", ".join(vals[i : i + per_line]) + "," for i in range(0, len(vals), per_line)]
    return _template("const_array.c.tmpl").substitute(ctype=ctype, name=name, size=max(len(a), 1),
                                                      values="\n".join(lines) if lines else "    0,")


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
    constants = [_array("tw_sample_offset", program.sample_offset), _array("tw_sample_mul", program.sample_mul)]
    kernels: list[str] = []
    calls: list[str] = []
    used_kinds: list[str] = []
    needed: set[str] = set()
    for i, op in enumerate(program.ops):
        if op.kind not in KERNEL_TEMPLATES:
            raise ConfigError(f"the C emitter has no template for kernel {op.kind!r}")
        tmpl_name, subs = KERNEL_TEMPLATES[op.kind]
        kt = KernelTemplate.load(tmpl_name)
        constants.extend(_array(f"tw_op{i}_{c}", np.asarray(a)) for c, a in op.consts.items())
        calls.append("    " + Template(kt.call.safe_substitute(subs)).substitute(_call_fields(program, i)))
        if op.kind not in used_kinds:
            used_kinds.append(op.kind)
            kernels.append(kt.body.substitute(subs))
            needed.update(kt.requires)
    helpers = [KernelTemplate.load(h).body.template for h in HELPERS if h in needed]
    scratch = [f"    {CTYPES[t.dtype]} t_{t.name}[{t.size}];" for t in program.tensors]
    info = program.info
    feats = info.get("features") or []
    common = {
        "generator": GENERATOR,
        "model_id": model_id,
        "detector": info.get("detector", "?"),
    }
    header = _template("tinywarden_model.h.tmpl").substitute(
        common,
        channel_list=", ".join(program.channels),
        window=program.window,
        stride=program.stride,
        feature_line=(f"features per channel: {', '.join(feats)};" if feats else
                      "the model reads the raw window (per-channel rescaled to int8);"),
        n_channels=program.n_channels,
        k=program.k,
        n=program.n,
        threshold=_c_int(program.threshold, "int32"),
        const_bytes=program.const_bytes,
        scratch_fields="\n".join(scratch),
        ring_bytes=2 * program.window * program.n_channels,
    )
    source = _template("tinywarden_model.c.tmpl").substitute(
        common,
        constants="\n".join(constants).rstrip(),
        kernels="\n".join([*helpers, *kernels]).rstrip(),
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
