"""Print a :class:`~tinywarden.program.Program` as a self-contained C99 module.

The emitter only *prints*: every line of C comes from a template, the module files and the constant
array in ``codegen/templates``, each kernel's own in its module of :mod:`tinywarden.kernels` (whose
``//@call:`` line is the call statement, ``//@requires:`` names the helpers of
:data:`tinywarden.arith.C_HELPERS` it needs, and whose limits are emitted as ``#define`` lines).
The arithmetic itself is the program's; :func:`tinywarden.program.run_int8` interprets the same program
and the test suite compiles this output and requires bit-identical scores and decisions.

>>> sorted(emit_c.__annotations__)
['adaptation', 'keep_features', 'policy', 'program', 'return']
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import TYPE_CHECKING, Any

import numpy as np

from tinywarden.arith import C_HELPER_DEPS, C_HELPERS
from tinywarden.calibrate import MAX_PERSIST_N
from tinywarden.codegen import write_export
from tinywarden.codegen.render import (
    GENERATOR,
    GENERATOR_VERSION,
    c_array,
    c_comment,
    c_defines,
    c_literal,
    template,
)
from tinywarden.errors import ConfigError
from tinywarden.features import block_size
from tinywarden.kernels import CTYPES, KERNELS, KernelSpec, Op, StateField, adapt_q, likelihood_q, pca_residual_s16
from tinywarden.kernels.base import FeatureSink
from tinywarden.kernels.features_s16 import EXTREMES_HOOK, MAX_WINDOW
from tinywarden.kernels.fully_connected_s8 import MULT_BITS, packed_requant, packs_requant
from tinywarden.kernels.requantize_s64 import (
    PRE_SHIFT_BITS,
    SHIFT_BITS,
    packed_shifts,
    packed_words,
    packs_words,
    shift_bits,
)
from tinywarden.program import (
    MAX_FRAC_BITS,
    MAX_SAMPLE_ZERO,
    POW2_MULTIPLIER,
    SAMPLE_SATURATION,
    Program,
    adaptation_params,
)

if TYPE_CHECKING:
    from tinywarden.adapt import Adaptation
    from tinywarden.respond.policy import Policy

__all__ = ["GENERATOR", "GENERATOR_VERSION", "HEADER_NAME", "SOURCE_NAME", "emit_c", "export_c", "write_c"]

HEADER_NAME = "tinywarden_model.h"
#: Up to this many channels the float sample conversion is straight-line, one inlined copy per channel with its
#: scaling constants as immediates (about 75 B of Cortex-M4 code each, 7 instructions a sample and channel fewer
#: than the loop); beyond, with the baseline adaptation compiled in, and when tw_push converts its samples straight
#: into the features' buffer (FUSED_FLOAT_PUSH: the copy and call it saves pay for the loop), one copy in a loop
#: (C_CHANNEL_LOOP; the default module: 296 B less flash, 1,728 more Cortex-M4 instructions a window); on Thumb-1
#: cores a loop of the general conversion alone (the template's tw_quantize_sample)
STRAIGHT_LINE_CHANNELS = 8
#: tw_push when the features buffer the samples of a group (``StreamC.row``) and nothing else runs on each sample:
#: the floats are converted into the buffer's row itself (no int16 copy, no call through tw_push_q)
FUSED_FLOAT_PUSH = Template("""    tw_quantize_sample(sample, $row);
    $advance(s);
    return tw_step(s, out);
""")
PLAIN_FLOAT_PUSH = """    tw_quantize_sample(sample, q);
    return tw_push_q(s, q, out);
"""
C_CHANNEL_LOOP = """    int32_t c;
    for (c = 0; c < TW_N_CHANNELS; c++) {
        q[c] = tw_float_to_q(c, sample[c]);
    }
"""
SOURCE_NAME = "tinywarden_model.c"


@dataclass(frozen=True)
class KernelTemplate:
    """A kernel's C template split into its call line, required helpers, C body and the parameter-struct
    constants each call gets (``//@params:`` lines, CMSIS-NN style: one named struct per concern)."""

    call: Template
    requires: tuple[str, ...]
    body: str
    params: Template = Template("")

    @classmethod
    def of(cls, spec: KernelSpec) -> KernelTemplate:
        call: list[str] = []
        requires: tuple[str, ...] = ()
        body = []
        params = []
        for line in spec.c_template.strip("\n").splitlines():
            if line.startswith("//@params:"):
                params.append(line.removeprefix("//@params:").strip())
            elif line.startswith("//@call:"):
                call.append(line.removeprefix("//@call:").strip())
            elif line.startswith("//@+"):
                call.append(line.removeprefix("//@+").strip())
            elif line.startswith("//@requires:"):
                requires = tuple(line.removeprefix("//@requires:").split())
            else:
                body.append(line)
        subs = dict(spec.c_subs)
        return cls(Template(Template(" ".join(call)).safe_substitute(subs)), requires,
                   Template("\n".join(body).strip() + "\n").substitute(subs),
                   Template(Template("\n".join(params)).safe_substitute(subs)))


def narrowed(values: np.ndarray) -> np.ndarray:
    """An int32 table as int16 when its values fit (half the flash); any other table unchanged. For the tables the
    C reads only by indexing (integer promotion gives the same int), and the requantization offsets (``tw_offset_t``
    follows them)."""
    a = np.asarray(values)
    if a.dtype == np.int32 and (a.size == 0 or (int(a.min()) >= -(2**15) and int(a.max()) < 2**15)):
        return a.astype(np.int16)
    return a


def _offsets_fit_int16(program: Program) -> bool:
    """Whether every feature requantization offset of ``program`` fits int16 (``tw_offset_t`` is then int16_t)."""
    return all(narrowed(np.asarray(op.consts["offset"])).dtype == np.int16 for op in program.ops
               if op.kind.startswith("requantize_s64_"))


def _table(op: Op, const: str, values: np.ndarray, offset16: bool) -> str:
    """The C array of one of ``op``'s tables, a requantization's offsets narrowed with ``tw_offset_t``."""
    a = np.asarray(values)
    if op.kind.startswith("requantize_s64_") and const == "offset":
        a = a.astype(np.int16 if offset16 else np.int32)
    return c_array(table_name(op, const), a)


def _only_indexed(name: str, code: str) -> bool:
    """Whether ``code`` uses the table ``name`` only as ``name[...]`` (never its address or pointer)."""
    n = re.escape(name)
    return re.search(rf"\b{n}\b(?!\s*\[)|&\s*{n}\b", code) is None


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
    packed = _fc_packed(program)
    feat_packed = _feat_packed(program)
    for cname, arr in _tables(op, _shift_bits(program), packed, feat_packed).items():
        a = np.asarray(arr)
        fields[f"c_{cname}"] = table_name(op, cname)
        fields[f"{cname}_size"] = a.size
        fields.update({f"{cname}_shape{d}": n for d, n in enumerate(a.shape)})
    if op.kind.startswith("requantize_s64_"):  # tw_feature_requant_params_t's tables
        names = ("requant", "offsets") if feat_packed else ("shifts", "offset", "multiplier")
        fields["rq_tables"] = ", ".join([*(table_name(op, n) for n in names),
                                         *([str(packed_words(op)[2])] if feat_packed else [])])
    if op.kind == "fully_connected_s8":  # tw_fc_layer_t's requantization members
        fields["fc_quant"] = (f"{table_name(op, 'requant')}, {packed_requant(op)[1]}" if packed else
                              f"{{{table_name(op, 'multiplier')}, {table_name(op, 'shift')}}}")
    fields.update({k: int(v) for k, v in op.attrs.items() if isinstance(v, (int, np.integer))})
    return fields


def _tables(op: Op, sbits: int, fc_packed: bool = False, feat_packed: bool = False) -> dict[str, np.ndarray]:
    """The op's constant tables and those its kernel derives for the C form (``KernelSpec.c_tables``); a feature
    requantization's pre-shifts and shifts as one packed table of ``sbits`` bits each
    (:func:`tinywarden.kernels.requantize_s64.packed_shifts`), or with ``feat_packed`` its tables as two
    (:func:`tinywarden.kernels.requantize_s64.packed_words`); with ``fc_packed`` a fully connected layer's
    multipliers and shifts as one (:func:`tinywarden.kernels.fully_connected_s8.packed_requant`)."""
    derive = KERNELS[op.kind].c_tables
    tables = {**op.consts, **(derive(op) if derive is not None else {})}
    if op.kind.startswith("requantize_s64_") and feat_packed:
        words, offsets, _ = packed_words(op)
        tables = {"requant": words, "offsets": offsets,
                  **{k: v for k, v in tables.items() if k not in ("pre_shift", "shift", "multiplier", "offset")}}
    elif op.kind.startswith("requantize_s64_"):
        tables = {"shifts": packed_shifts(op, sbits),
                  **{k: v for k, v in tables.items() if k not in ("pre_shift", "shift")}}
    if op.kind == "fully_connected_s8" and fc_packed:
        tables = {"requant": packed_requant(op)[0],
                  **{k: v for k, v in tables.items() if k not in ("multiplier", "shift")}}
    return tables


def _fc_packed(program: Program) -> bool:
    """Whether every fully connected layer of the module keeps a channel's multiplier and shift in one word
    (``TW_FC_PACKED``, :func:`tinywarden.kernels.fully_connected_s8.packs_requant`)."""
    return all(packs_requant(op) for op in program.ops if op.kind == "fully_connected_s8")


def _feat_packed(program: Program) -> bool:
    """Whether every feature requantization of the module keeps its tables as two words a feature
    (``TW_REQUANT_PACKED``, :func:`tinywarden.kernels.requantize_s64.packs_words`)."""
    return all(packs_words(op) for op in program.ops if op.kind.startswith("requantize_s64_"))


def _shift_bits(program: Program) -> int:
    """The bits each of the module's packed feature shift entries gives a pre-shift and a shift."""
    return shift_bits(op for op in program.ops if op.kind.startswith("requantize_s64_"))


def table_name(op: Op, const: str) -> str:
    """The C name of one of ``op``'s constant tables: named for the tensor the op writes and what the table
    holds (``tw_h0_weights``, ``tw_features_z0``); ops write distinct tensors (``Program.validate``)."""
    return f"tw_{op.dst}_{const}"


#: persistence windows up to which the decision is one bit of a word (:func:`persist_table`) instead of a count
PERSIST_TABLE_MAX_N = 5

POPCOUNT_C = """static int32_t tw_popcount(${history_t} x)
{
    int32_t n = 0;
    while (x != 0u) {
        x &= x - 1u;
        n++;
    }
    return n;
}
"""


def persist_table(k: int, n: int) -> int:
    """The persistence rule as a table of bits, for ``n <= PERSIST_TABLE_MAX_N`` (2^n bits fit a 32-bit word): bit
    ``h`` is set when the history ``h`` (the last ``n`` flags) holds at least ``k`` flags, so the decision is
    ``(table >> history) & 1``, no count."""
    if n > PERSIST_TABLE_MAX_N:
        raise ConfigError(f"a persistence table needs n <= {PERSIST_TABLE_MAX_N}, got {n}")
    return sum(1 << h for h in range(1 << n) if bin(h).count("1") >= k)


def _persist_c(k: int, n: int, history_t: str) -> tuple[str, str]:
    """The persistence rule's C (a definition before tw_step, the anomaly expression): a table of bits over a few
    windows, else the history's popcount."""
    if n <= PERSIST_TABLE_MAX_N:
        return ("/* bit h: the history h holds at least TW_PERSIST_K flags (tinywarden.codegen.c.persist_table) */\n"
                f"#define TW_PERSIST_TABLE UINT32_C({hex(persist_table(k, n))})\n",
                "(uint8_t)((TW_PERSIST_TABLE >> s->history) & 1u)")
    return (Template(POPCOUNT_C).substitute(history_t=history_t),
            "(uint8_t)(tw_popcount(s->history) >= TW_PERSIST_K ? 1u : 0u)")


#: C type -> (bytes, alignment) of the scalar members of the state struct
_SCALARS = {"int8_t": 1, "uint8_t": 1, "int16_t": 2, "uint16_t": 2, "int32_t": 4, "uint32_t": 4, "int64_t": 8,
            "uint64_t": 8}


def _scalar(ctype: str, name: str, *dims: int) -> StateField:
    size = _SCALARS[ctype]
    return StateField(ctype, name, dims, size * int(np.prod(dims, dtype=np.int64)), size)


def state_layout(fields: list[StateField]) -> tuple[str, int]:
    """``(member lines, bytes)`` of the state struct: members by decreasing alignment and an explicit tail pad
    to a multiple of 8, so that ``sizeof`` is the stated number on any ABI whose alignments do not exceed the
    sizes (checked in the C by a static assertion)."""
    ordered = sorted(fields, key=lambda f: -f.align)
    total = sum(f.nbytes for f in ordered)
    pad = -total % 8
    if pad:
        ordered.append(_scalar("uint8_t", "pad", pad))
    lines = [f"    {f.ctype} {f.name}{''.join(f'[{d}]' for d in f.dims)};" for f in ordered]
    return "\n".join(lines), total + pad


@dataclass(frozen=True)
class LikelihoodC:
    """The likelihood step's part of the module (:mod:`tinywarden.kernels.likelihood_q`), or its absence."""

    constants: list[str]
    limits: dict[str, int]
    fields: list[StateField]
    body: str
    init: str
    post_score: str
    confidence: str
    invariant: str
    #: C run on every pushed sample (the value record), after the ring store
    per_sample: str = ""
    #: C that precedes every kernel (the value record's hook into the features' group fold)
    prelude: str = ""


def scratch_homes(program: Program, keep: Iterable[str] = (), unstored: Iterable[str] = ()) -> dict[str, str]:
    """Each tensor's home: the tensor whose ``t_<name>`` state member holds it. A tensor moves into the member of a
    tensor of its type that no later op reads (the member grows to the larger of the two), so the scratch holds
    what the window's widest moment needs; the score, read after the window, keeps its own member, and so does
    each tensor named in ``keep`` (read after the window too, e.g. by the baseline adaptation). A tensor named in
    ``unstored`` (never held in the state, :func:`fused_requant`) lends its member to no other.
    """
    last: dict[str, int] = {}
    for i, op in enumerate(program.ops):
        last.update({src: i for src in op.src})
    kept = {program.ops[-1].dst if program.ops else "", *keep}
    skip = set(unstored)
    dtype = {t.name: t.dtype for t in program.tensors}
    home: dict[str, str] = {}
    free: list[str] = []  # members whose current tensor no later op reads
    living: dict[str, str] = {}  # member -> the tensor in it
    for i, op in enumerate(program.ops):
        for member, name in list(living.items()):
            if name not in kept and last.get(name, -1) < i:
                free.append(member)
                del living[member]
        if op.dst not in dtype or op.dst in home or op.dst in skip:
            continue
        fits = [m for m in free if dtype[m] == dtype[op.dst]] if op.dst not in kept else []
        member = fits[0] if fits else op.dst
        if fits:
            free.remove(member)
        home[op.dst] = member
        living[member] = op.dst
    home.update({t.name: t.name for t in program.tensors if t.name not in home})
    return home


def _readers(program: Program) -> dict[str, int]:
    """How many ops read each tensor."""
    readers: dict[str, int] = {}
    for op in program.ops:
        for src in op.src:
            readers[src] = readers.get(src, 0) + 1
    return readers


def fused_requant(program: Program, adapted: int | None = None) -> set[int]:
    """Indices of the streamed window ops whose output only the next op reads, a ``requantize_s64_*`` op (the
    features' requantization into the model's input): the stream kernel requantizes each channel's values as it
    combines them, so the int64 features take no state. Not the op ``adapted`` (the baseline adaptation's, which
    reads the stored features after the window)."""
    readers = _readers(program)
    out = set()
    for i, op in enumerate(program.ops[:-1]):
        nxt = program.ops[i + 1]
        if (KERNELS[op.kind].stream is not None and op.src == ("window",) and nxt.kind.startswith("requantize_s64_")
                and nxt.src == (op.dst,) and readers.get(op.dst) == 1 and adapted != i + 1
                and op.dst != program.ops[-1].dst):
            out.add(i)
    return out


def projected_in_stream(program: Program, fused: set[int]) -> set[int]:
    """Indices of the fused streamed window ops (:func:`fused_requant`) whose requantized output only the op after
    it reads, a ``pca_residual_s16`` score (PCA's or the Gaussian's): the stream hands each channel's requantized
    features straight to the projections, so the model's input takes no state either."""
    readers = _readers(program)
    out = set()
    for i in fused:
        if i + 2 >= len(program.ops):
            continue
        rq, nxt = program.ops[i + 1], program.ops[i + 2]
        per_channel = len(program.ops[i].consts["codes"])  # the stream hands on each channel's features in turn
        if (nxt.kind == "pca_residual_s16" and nxt.src == (rq.dst,) and readers.get(rq.dst) == 1
                and rq.dst != program.ops[-1].dst
                and int(nxt.consts["weights"].shape[1]) == per_channel * program.n_channels):
            out.add(i)
    return out


def scored_as_computed(program: Program) -> set[int]:
    """Indices of the ``fully_connected_s8`` ops whose output only the next op reads, a ``sum_sq_diff_s8`` score
    (an autoencoder's reconstruction): the layer adds each output's squared difference to the score's total as it
    computes it, so the reconstruction takes no state."""
    readers = _readers(program)
    out = set()
    for i, op in enumerate(program.ops[:-1]):
        nxt = program.ops[i + 1]
        if (op.kind == "fully_connected_s8" and nxt.kind == "sum_sq_diff_s8" and op.dst in nxt.src
                and nxt.src[0] != nxt.src[1] and readers.get(op.dst) == 1 and op.dst != program.ops[-1].dst):
            out.add(i)
    return out


def likelihood_c(program: Program, grouped: bool = False, ring_rows: int = 0) -> LikelihoodC:
    """What the program's likelihood step adds to the C module (nothing but ``tw_confidence() == 0``
    without one). ``grouped``: the features' fold hands each completed group's block extremes to
    :data:`~tinywarden.kernels.features_s16.EXTREMES_HOOK`, so the value record checks groups, not every push;
    else ``ring_rows`` (> 1: the module keeps the raw sample ring, and windows start and end on multiples of it)
    has the value record check each completed group of that many ring rows
    (:data:`~tinywarden.kernels.likelihood_q.C_VALUE_ROWS`); else it checks every push."""
    op = program.likelihood
    if op is None:
        return LikelihoodC([], {}, [], "", "", "", "0u", "")
    a = op.attrs
    table = np.asarray(op.consts["conf_table"])
    limits = {"TW_LIK_SHORT": int(a["short"]), "TW_LIK_LO": int(a["lo"]), "TW_LIK_K": int(a["k"]),
              "TW_LIK_SPREAD": int(a["spread"]), "TW_LIK_MEAN0": int(a["mean"]), "TW_LIK_VAR0": int(a["var"]),
              "TW_LIK_VAR_FLOOR": int(a["var_floor"]), "TW_LIK_RATE_SHIFT": int(a["rate_shift"]),
              "TW_LIK_SLOW_SHIFT": int(a["slow_shift"]), "TW_LIK_GATE": int(a["gate"]),
              "TW_LIK_TABLE_N": int(table.size), "TW_LIK_HOLDOFF": int(a.get("holdoff", 0)),
              "TW_LIK_RECORD": int(a.get("record", -1)), "TW_LIK_REC_LO0": int(a.get("rec_lo", 0)),
              "TW_LIK_REC_HI0": int(a.get("rec_hi", 0)), "TW_LIK_VRECORD": int(a.get("vrecord", -1)),
              **likelihood_q.LIMITS}
    fields = [_scalar("int64_t", "lik_mean"), _scalar("int64_t", "lik_var"), _scalar("int32_t", "lik_sum"),
              _scalar("int32_t", "lik_y", int(a["short"])), _scalar("uint8_t", "lik_pos"),
              _scalar("uint16_t", "lik_count"), _scalar("uint16_t", "confidence")]
    if a.get("holdoff", 0):
        fields.append(_scalar("uint16_t", "lik_hold"))
    init = "    s->lik_mean = TW_LIK_MEAN0;\n    s->lik_var = TW_LIK_VAR0;\n"
    if "record" in a:
        fields += [_scalar("int32_t", "lik_rec_lo"), _scalar("int32_t", "lik_rec_hi")]
        init += "    s->lik_rec_lo = TW_LIK_REC_LO0;\n    s->lik_rec_hi = TW_LIK_REC_HI0;\n"
    constants = [c_array("tw_log2_table", likelihood_q.LOG2_TABLE), c_array("tw_confidence_table", table)]
    body, per_sample, invariant, prelude = likelihood_q.C_TEMPLATE.strip("\n") + "\n", "", "", ""
    if "vrecord" in a:
        n = program.n_channels
        fields += [_scalar("int16_t", "lik_vlo", n), _scalar("int16_t", "lik_vhi", n), _scalar("uint8_t", "lik_vnew")]
        constants += [c_array("tw_value_lo0", op.consts["value_lo"]), c_array("tw_value_hi0", op.consts["value_hi"])]
        init += ("    for (i = 0; i < (size_t)TW_N_CHANNELS; i++) {\n        s->lik_vlo[i] = tw_value_lo0[i];\n"
                 "        s->lik_vhi[i] = tw_value_hi0[i];\n    }\n")
        if grouped:  # checked on each completed group, by the block extremes the features keep
            value = likelihood_q.C_VALUE_TEMPLATE + likelihood_q.C_VALUE_GROUP
            prelude = likelihood_q.C_VALUE_GROUP_DECL.substitute(hook=EXTREMES_HOOK).strip("\n") + "\n"
        elif ring_rows > 1:  # checked on each completed group of ring rows, after the ring store
            value = likelihood_q.C_VALUE_TEMPLATE + likelihood_q.value_rows_c(program.n_channels, ring_rows)
            limits["TW_VALUE_ROWS"] = ring_rows
            per_sample = likelihood_q.C_VALUE_ROWS_CALL
        else:
            value = likelihood_q.C_VALUE_TEMPLATE + likelihood_q.C_VALUE_SAMPLE
            per_sample = "    tw_value_record_q(s, sample);"
        body = value.strip("\n") + "\n\n" + body
        invariant = "; with the value record lik_vlo[c] <= lik_vhi[c] span every sample of channel c seen (int16)"
    return LikelihoodC(
        constants, limits, fields, body, init,
        "    s->confidence = tw_likelihood_q(s, score);\n", "s->confidence",
        "lik_y[(lik_pos + i) mod TW_LIK_SHORT] holds the Q16 log-scores of the last lik_count windows, "
        "lik_sum their sum; lik_mean (Q32) and lik_var (Q32, >= TW_LIK_VAR_FLOOR) are the running log-score "
        "distribution; confidence is the last window's (Q15); with the record rule lik_rec_lo <= lik_rec_hi span "
        "every score seen; with a hold-off lik_hold <= TW_LIK_HOLDOFF windows remain silenced" + invariant,
        per_sample, prelude)


@dataclass(frozen=True)
class AdaptationC:
    """The baseline adaptation's part of the module (:mod:`tinywarden.kernels.adapt_q`), when compiled in."""

    op_index: int
    call: str
    constants: list[str]
    limits: dict[str, int]
    fields: list[StateField]
    body: str
    init: str
    post_score: str
    header: str
    invariant: str
    typedef: str = ""
    #: the C helpers (tinywarden.arith) its body calls; it runs the adapted op in its own loop (the op's kernel is
    #: left out of the module unless another op calls it)
    requires: tuple[str, ...] = ("params", "requant32")


def channel_features(program: Program, adapted: int, keep_features: bool = False) -> int:
    """Features per channel when the adapted op (index ``adapted``) reads a streamed ``features_s16`` op's int64
    values alone, so that the baseline adaptation computes them a channel at a time whenever it reads them
    (:attr:`~tinywarden.kernels.base.FeatureSink.channel`: twice a window, the same integers) instead of keeping
    them in the state (8 B an input); 0 otherwise (or with ``keep_features``, whose reader is the host)."""
    if keep_features or adapted < 1:
        return 0
    op, target = program.ops[adapted - 1], program.ops[adapted]
    if (op.kind != "features_s16" or op.src != ("window",) or target.src != (op.dst,)
            or _readers(program).get(op.dst) != 1 or op.dst == program.ops[-1].dst):
        return 0
    per = len(op.consts["codes"])
    return per if per * program.n_channels == int(np.asarray(target.consts["offset"]).size) else 0


def adaptation_c(program: Program, adaptation: Adaptation | None, keep_features: bool = False) -> AdaptationC | None:
    """What baseline adaptation adds to the C module: None when the policy's ``[adaptation]`` is off (or
    absent) or the program has no adaptation step (:func:`tinywarden.program.adaptation_params`). Only the
    code, state and limits the policy's rule needs are emitted (:func:`tinywarden.kernels.adapt_q.c_features`)."""
    params = adaptation_params(program, adaptation)
    op = program.adaptation
    if params is None or op is None or adaptation is None:
        return None
    j = int(op.attrs["op"])
    target = program.ops[j]
    n = int(np.asarray(target.consts["offset"]).size)
    zmul, zshift = np.asarray(op.consts["zmul"]), np.asarray(op.consts["zshift"])
    on = adapt_q.c_features(params, op)
    per_channel = channel_features(program, j, keep_features)
    if per_channel:
        on = on | {"perchannel"}
    if zmul.size and not np.any(zmul.astype(np.int64) & ((1 << adapt_q.ZMUL_DROP) - 1)):
        # every multiplier a multiple of 2^16 (adapt_q.zmul_pair): its top bits alone, half the flash
        zmul_c = [c_array("tw_adapt_zmul", (zmul.astype(np.int64) >> adapt_q.ZMUL_DROP).astype(np.int16)),
                  f"/* input i's z multiplier (tinywarden.kernels.adapt_q.zmul_pair: its low {adapt_q.ZMUL_DROP} bits "
                  f"are zero) */\n#define TW_AD_ZMUL(i) ((int32_t)tw_adapt_zmul[(i)] << {adapt_q.ZMUL_DROP})\n"]
    else:  # a program lowered before zmul_pair: the int32 multipliers as they are
        zmul_c = [c_array("tw_adapt_zmul", zmul), "#define TW_AD_ZMUL(i) (tw_adapt_zmul[(i)])\n"]
    frac = int(op.attrs["frac"])
    frac_i, xmax_i = "TW_AD_FRAC", "TW_AD_X_MAX"
    fracs = np.asarray(op.consts["fracs"]).astype(np.int64) if "fracs" in op.consts else None
    zs = zshift.astype(np.int64)
    zbase = int(zs.min()) if zs.size else 0
    if fracs is not None and zs.size == n and int(fracs.max()) - frac < 16 and int(zs.max()) - zbase < 16:
        # each input's fractional bits and z shift share a byte (their spans fit 4 bits each): one table, not two
        constants = [*zmul_c, c_array("tw_adapt_fz", (((fracs - frac) << 4) | (zs - zbase)).astype(np.uint8)),
                     "/* input i's fractional bits (TW_AD_FRAC plus the high nibble) and z shift (TW_AD_ZSHIFT_BASE "
                     "plus the low nibble) */\n"
                     "#define TW_AD_FRAC_OF(i) (TW_AD_FRAC + (int32_t)(tw_adapt_fz[(i)] >> 4))\n"
                     "#define TW_AD_ZSHIFT(i) (TW_AD_ZSHIFT_BASE + (int32_t)(tw_adapt_fz[(i)] & 15u))\n"]
        frac_i, xmax_i = "TW_AD_FRAC_OF(i)", "(((int32_t)1 << (TW_AD_MEAN_BITS - TW_AD_FRAC_OF(i))) - 1)"
    else:
        constants = [*zmul_c, c_array("tw_adapt_zshift", zshift), "#define TW_AD_ZSHIFT(i) (tw_adapt_zshift[(i)])\n"]
        if fracs is not None:  # inputs of very different ranges: each its own fractional bits
            constants.append(c_array("tw_adapt_fracs", np.asarray(op.consts["fracs"])))
            frac_i, xmax_i = "tw_adapt_fracs[i]", "(((int32_t)1 << (TW_AD_MEAN_BITS - tw_adapt_fracs[i])) - 1)"
    fold = ""
    if "fold" in op.consts:
        constants.append(c_array("tw_adapt_fold", np.asarray(op.consts["fold"])))
        fold = " - tw_adapt_fold[i]"
    limits = {"TW_AD_N": n, "TW_AD_FRAC": frac, "TW_AD_E": adapt_q.E_BITS, "TW_AD_Z_MAX": adapt_q.Z_MAX,
              "TW_AD_X_MAX": int(adapt_q.x_max(frac)), "TW_AD_Z_BITS": adapt_q.Z_BITS,
              "TW_AD_VAR_BITS": adapt_q.VAR_BITS, "TW_AD_MEAN_BITS": adapt_q.MEAN_BITS,
              "TW_AD_RATE_SHIFT": params.rate_shift, "TW_AD_BELOW": params.below_q15,
              "TW_AD_DRIFT": params.drift_q12, "TW_AD_REARM": params.rearm_q12,
              "TW_AD_LIK_LIMIT": params.lik_limit, "TW_AD_LIK_REARM": params.lik_rearm, "TW_AD_ZSHIFT_BASE": zbase}
    per_input = 4  # bytes of tw_adapt_input_t: mu, and smu, wmu as the rule needs them (svar in mu and smu)
    extra = 0  # bytes per input after in[]: the adapted scale's (its low byte in wmu's word with the watch)
    if "scale" in on:
        limits.update({"TW_AD_G_ONE": adapt_q.G_ONE, "TW_AD_G_MAX": adapt_q.G_MAX, "TW_AD_VAR_ONE": adapt_q.VAR_ONE,
                       "TW_AD_SD_BITS": adapt_q.SD_BITS, "TW_AD_SD_ONE": adapt_q.SD_ONE, "TW_AD_SD_MAX": adapt_q.SD_MAX,
                       "TW_AD_ADAPT_SCALE": int(params.adapt_scale)})
        extra = 1 if "sd_split" in on else 2
    head = 4 + 4 + 4 + 1
    if "settle" in on:
        limits.update({"TW_AD_SETTLE_N": params.settle_n, "TW_AD_SETTLE_SHIFT": params.settle_shift,
                       "TW_AD_SVAR_DROP": adapt_q.SVAR_DROP, "TW_AD_SVAR_MAX": adapt_q.SVAR_MAX,
                       "TW_AD_SETTLE_SPREAD": adapt_q.SETTLE_SPREAD_Q8, "TW_AD_SHADOW_SHIFT": params.shadow_shift})
        per_input += 4
        head += 4 + 1 + 1
    if "watch" in on:
        limits.update({"TW_AD_WATCH": params.watch_q12, "TW_AD_WATCH_REARM": params.watch_rearm_q12,
                       "TW_AD_WATCH_SHIFT": params.settle_shift})
        per_input += 4
    if per_channel:
        limits["TW_AD_PER_CHANNEL"] = per_channel
    distance: dict[str, Any] = {}
    if "distance" in on:  # the watch's level scored by the pca_residual_s16 op after the adapted one
        limits.update({"TW_AD_DIST": params.distance_bound, "TW_AD_DIST_REARM": params.distance_rearm})
        f = _call_fields(program, j + 1)
        distance = {"dk": f["weights_shape0"], "dweights": f["c_weights"], "dmultiplier": f["c_multiplier"],
                    "dshift": f["c_shift"], "dgram": f["c_gram"], "dgram_shift": f["gram_shift"],
                    "dscore_shift": f["shift"]}
    head += -head % 4
    size = head + per_input * n + extra * n
    fields = [StateField("tw_adapt_t", "ad", (), size + -size % 4, 4)]
    subs = {"params": f"tw_{target.dst}_requant_params", "ctype": CTYPES[program.tensor(target.dst).dtype],
            "zi": "i" if zmul.size > 1 else "0", "fold": fold, "src": target.src[0], "frac": frac_i, "xmax": xmax_i,
            "dst": target.dst, "fwd_feature": "fi" if per_channel else "in[i]",
            "obs_feature": "fi" if per_channel else f"s->t_{target.src[0]}[i]", **distance}
    body = Template(adapt_q.c_blocks(adapt_q.C_TEMPLATE, on)).substitute(subs).strip("\n") + "\n"
    header = Template(adapt_q.C_HEADER).substitute(
        policy=(f"rate_shift {adaptation.rate_shift}, below_confidence {adaptation.below_confidence}, max_drift "
                f"{adaptation.max_drift}, below_threshold {str(adaptation.below_threshold).lower()}, adapt_scale "
                f"{str(adaptation.adapt_scale).lower()}, settle_s {adaptation.settle_s:g} (TW_AD_SETTLE_N "
                f"{params.settle_n} windows), settle_rate_shift {adaptation.settle_rate_shift}, watch_drift "
                f"{adaptation.watch_drift:g}, watch_distance {adaptation.watch_distance if 'distance' in on else 0:g}"),
        gate=" and its score at most TW_THRESHOLD" if params.gate else "",
        settling=("\n/* The settling rule is compiled in: s->ad.elevated and s->ad.settling are its state. */\n"
                  "#define TW_HAS_SETTLING 1" if params.settle_n else ""),
        what="mean and variance" if params.adapt_scale else "mean (offsets only)",
        watch=(" or (the slow-drift watch, tinywarden.level_watch) the level of the windows under the threshold, "
               "at 2^-TW_AD_WATCH_SHIFT, more than TW_AD_WATCH" if "watch" in on else "")
        + (" or that level's score by the model itself more than TW_AD_DIST" if "distance" in on else ""),
        settle=(" a shift that keeps TW_AD_SETTLE_N more windows over the threshold than under it is adopted (the "
                "shadow mean and variance, which learn from every window at 2^-TW_AD_SHADOW_SHIFT) when the shadow's "
                "spread is at most TW_AD_SETTLE_SPREAD (Q8 reference variances) in every input, and learned from every "
                "window at 2^-TW_AD_SETTLE_SHIFT until the count is empty again;" if params.settle_n else ""))
    invariant = "ad is the baseline adaptation's state (tw_adapt_t, whose members say their ranges)"
    return AdaptationC(
        j, (f"    tw_adapt_forward(s, s->t_{target.dst});" if per_channel else
            f"    tw_adapt_forward(s, s->t_{target.src[0]}, s->t_{target.dst});"), constants, limits, fields,
        body, "    tw_rebaseline(s);\n", "    tw_adapt_observe(s, score);\n", header, invariant,
        Template(adapt_q.c_blocks(adapt_q.C_TYPEDEF, on)).substitute(n=n))


def emit_c(program: Program, policy: Policy | None = None, adaptation: Adaptation | None = None,
           keep_features: bool = False) -> dict[str, str]:
    """``{file name: text}`` of the C module (``tinywarden_model.h`` and ``tinywarden_model.c``).

    With ``policy``, both files also get the response state machine (:mod:`tinywarden.codegen.respond`),
    and the baseline adaptation of its ``[adaptation]`` table when that is enabled (``adaptation``, if given,
    takes its place); without either they are exactly the detector loop. ``keep_features`` keeps the window's
    integer features in the state instead of requantizing them as they are combined (:func:`fused_requant`):
    the same integers, more RAM; the host library (:mod:`tinywarden.native`) reads them for an incident's
    summary.
    """
    program.validate()
    if adaptation is None and policy is not None:
        adaptation = policy.adaptation
    ad = adaptation_c(program, adaptation, keep_features)
    # the adapted op's int64 features computed a channel at a time by the adaptation itself (channel_features)
    per_channel = channel_features(program, ad.op_index, keep_features) if ad is not None else 0
    model_id = program.model_id
    multiplier, shift = program.sample_requant
    pow2 = bool(np.all(multiplier == POW2_MULTIPLIER))  # then the multipliers are implied, not stored
    constants = [*([] if pow2 else [c_array("tw_sample_multiplier", multiplier)]),
                 c_array("tw_sample_shift", shift.astype(np.int8)),
                 c_array("tw_sample_zero", narrowed(program.sample_zero))]  # read by indexing only
    offset16 = _offsets_fit_int16(program)
    sbits = _shift_bits(program)
    fc_packed = _fc_packed(program)
    feat_packed = _feat_packed(program)
    kernels: list[tuple[str, str]] = []
    calls: list[str] = []
    limits: dict[str, int] = {"TW_MAX_WINDOW": MAX_WINDOW, "TW_MAX_PERSIST_N": MAX_PERSIST_N,
                              # 1: every sample multiplier is a power of two, the conversion a shift
                              "TW_SAMPLE_POW2": int(pow2),
                              "TW_SAMPLE_SATURATION_LOG2": SAMPLE_SATURATION.bit_length() - 1,
                              # the sample conversion's product splits into 32-bit words
                              "TW_WORD_BITS": 32,
                              # bits of each half of a feature's packed pre-shift and shift
                              "TW_SHIFT_BITS": sbits,
                              # 1: a fully connected layer's multiplier and shift share a word
                              "TW_FC_PACKED": int(fc_packed), "TW_MULT_BITS": MULT_BITS,
                              # 1: a feature requantization's tables are two words a feature
                              "TW_REQUANT_PACKED": int(feat_packed), "TW_PRE_SHIFT_BITS": PRE_SHIFT_BITS}
    needed: set[str] = set()
    needs_ring = any("window" in op.src and (KERNELS[op.kind].stream_ring is None
                                             or KERNELS[op.kind].stream_ring(op, program)) for op in program.ops)
    typedefs: list[str] = []
    folds: list[str] = []
    rows: list[tuple[str, str]] = []  # each fold's buffer row and advance function (StreamC.row)
    extremes_hook = False  # a window kernel's fold hands on each group's block extremes
    history_t = "uint32_t" if program.n <= 32 else "uint64_t"
    fields: list[StateField] = [_scalar("uint16_t", "filled"), _scalar("uint16_t", "phase"),
                                # the last n flags: 32-bit arithmetic when they fit a word
                                _scalar(history_t, "history")]
    invariants: list[str] = []
    fused = set() if keep_features else fused_requant(program, ad.op_index if ad is not None else None)
    scored = scored_as_computed(program)
    projected = projected_in_stream(program, fused)
    for i, op in enumerate(program.ops):
        spec = KERNELS[op.kind]  # validate() has checked the kind is registered

        call_fields = _call_fields(program, i)
        if i - 1 in fused or i - 1 in scored or i - 2 in projected:
            continue  # done by an op before it (requantized or projected in the stream kernel, scored as computed)
        if spec.stream is not None and op.src == ("window",):
            sink = None
            if i in fused:
                rq = program.ops[i + 1]
                rkt = KernelTemplate.of(KERNELS[rq.kind])
                rfields = _call_fields(program, i + 1)
                constants.extend(_table(rq, c, a, offset16)
                                 for c, a in _tables(rq, sbits, fc_packed, feat_packed).items())
                constants.append(rkt.params.substitute(rfields))
                kernels.append((rq.kind, rkt.body))
                needed.update(rkt.requires)
                limits.update(KERNELS[rq.kind].limits)
                sink = FeatureSink(f"tw_{rq.dst}_requant_params", rq.kind.rsplit("_", 1)[1],
                                   CTYPES[program.tensor(rq.dst).dtype])
                call_fields = {**call_fields, "dst": rq.dst}
            if i in projected:  # the features go on into the PCA projections: the input is never stored
                pop = program.ops[i + 2]
                pkt = KernelTemplate.of(KERNELS[pop.kind])
                pfields = _call_fields(program, i + 2)
                constants.extend(_table(pop, c, a, offset16)
                                 for c, a in _tables(pop, sbits, fc_packed, feat_packed).items())
                kernels.append((pop.kind, pkt.body))
                needed.update(pkt.requires)
                limits.update({**KERNELS[pop.kind].limits, "TW_PCA_IN_STREAM": 1})
                n_in, k = (int(d) for d in pop.consts["weights"].shape[::-1])
                sink = dataclasses.replace(sink, consume=pca_residual_s16.in_stream_call(
                    pfields["c_weights"], n_in, k, len(op.consts["codes"])),
                    consume_params=pca_residual_s16.IN_STREAM_PARAMS)
            if per_channel and ad is not None and i == ad.op_index - 1:
                sink = FeatureSink("", "", "", channel=True)
            sc = spec.stream(op, program, f"tw_{op.dst}", needs_ring, sink)
            # only the tables the generated code reads (a feature list is compiled into the code itself)
            constants.extend(c_array(table_name(op, c), narrowed(a) if _only_indexed(table_name(op, c), sc.body)
                                     else np.asarray(a)) for c, a in op.consts.items() if table_name(op, c) in sc.body)
            typedefs.append(sc.typedefs)
            fields.extend(sc.fields)
            folds.append(f"    {sc.fold_fn}(s, sample);")
            rows.append((sc.row, sc.advance_fn))
            extremes_hook = extremes_hook or sc.extremes_hook
            if i in projected:
                calls.append(pca_residual_s16.in_stream_block(_call_fields(program, i + 2), sc.finish_fn))
            elif sink is not None and sink.channel:
                pass  # the adaptation's forward computes the features as it reads them
            else:
                calls.append("    " + Template(sc.call).substitute(call_fields))
            kernels.append((op.kind, sc.body))
            needed.update(sc.requires)
            limits.update(sc.limits)
            invariants.append(sc.doc)
            continue
        kt = KernelTemplate.of(spec)
        try:
            call = kt.call.substitute(call_fields)
            params = kt.params.substitute(call_fields) if kt.params.template else ""
        except (KeyError, ValueError) as exc:
            raise ConfigError(f"kernel {op.kind!r}: its C call line names an unknown field ({exc})") from None
        # the tables the call reads (a kernel may read derived tables in place of some of the op's)
        constants.extend(_table(op, c, a, offset16) for c, a in _tables(op, sbits, fc_packed, feat_packed).items()
                         if re.search(rf"\b{table_name(op, c)}\b", call + params))
        constants.extend([params] if params else [])
        if i in scored:  # the reconstruction goes straight into its score: the output is never stored
            score_op = program.ops[i + 1]
            ref = score_op.src[1] if score_op.src[0] == op.dst else score_op.src[0]
            call = (call.replace(f"s->t_{op.dst}, NULL, NULL);", f"NULL, s->t_{ref}, &total);")
                    .replace("\n", "\n    "))
            call = (f"{{\n        int64_t total = 0;\n        {call}\n        s->t_{score_op.dst}[0] = "
                    f"tw_score_from_total(total, {int(score_op.attrs['shift'])});\n    }}")
            needed.add("score")
        # the adapted op: its tables still serve it, through tw_adapt_forward
        calls.append(ad.call if ad is not None and i == ad.op_index else "    " + call)
        adapted_only = ad is not None and all(o.kind != op.kind for k, o in enumerate(program.ops) if k != ad.op_index)
        if not adapted_only and not any(k == op.kind for k, _ in kernels):  # the adapted op runs in tw_adapt_forward
            kernels.append((op.kind, kt.body))
            needed.update(kt.requires)
            limits.update(spec.limits)
    for kind in dict.fromkeys(op.kind for op in program.ops):  # limits sized to the model (KernelSpec.op_limits)
        hook = KERNELS[kind].op_limits
        if hook is not None:
            per_op = [hook(op) for op in program.ops if op.kind == kind]
            limits.update({name: max(int(d[name]) for d in per_op) for name in per_op[0]})
    if needs_ring:
        fields += [_scalar("int16_t", "ring", program.window, program.n_channels), _scalar("uint16_t", "head")]
        invariants.insert(0, "ring rows [head, TW_WINDOW) then [0, head) are the window, oldest first, once "
                             "filled == TW_WINDOW")
    lik = likelihood_c(program, grouped=extremes_hook,
                       ring_rows=block_size(program.window, program.stride) if needs_ring else 0)
    constants.extend(lik.constants)
    limits.update(lik.limits)
    fields.extend(lik.fields)
    if lik.invariant:
        invariants.append(lik.invariant)
    if ad is not None:
        typedefs.append(ad.typedef)
        constants.extend(ad.constants)
        needed.update(ad.requires)
        limits.update(ad.limits)
        fields.extend(ad.fields)
        invariants.append(ad.invariant)
    # the adaptation reads its op's input after the window (tw_adapt_observe): that tensor keeps its member
    # requantized as they are combined, or scored as they are computed: never stored
    unstored = {program.ops[i].dst for i in fused | scored} | {program.ops[i + 1].dst for i in projected}
    if per_channel and ad is not None:  # computed again where read (channel_features): never stored
        unstored.add(program.ops[ad.op_index].src[0])
    home = scratch_homes(program, keep=[program.ops[ad.op_index].src[0]] if ad is not None and not per_channel
                         else [], unstored=unstored)
    slots: dict[str, tuple[str, int]] = {}
    for t in program.tensors:
        if t.name in unstored:
            continue
        ctype, size = slots.get(home[t.name], (CTYPES[t.dtype], 0))
        slots[home[t.name]] = (ctype, max(size, t.size))
    scratch = [_scalar(ctype, f"t_{name}", size) for name, (ctype, size) in slots.items()]
    moved = {name: h for name, h in home.items() if name != h}
    if moved:
        pattern = re.compile(r"\bs->t_(" + "|".join(map(re.escape, moved)) + r")\b")
        calls = [pattern.sub(lambda m: f"s->t_{moved[m.group(1)]}", line) for line in calls]
    state_fields, state_bytes = state_layout(fields + scratch)
    scratch_bytes = sum(f.nbytes for f in scratch)
    needed.update(dep for name in list(needed) for dep in C_HELPER_DEPS.get(name, ()))
    helpers = [text.strip("\n") + "\n" for name, text in C_HELPERS.items() if name in needed]
    dims = [n for t in program.tensors for n in t.shape] + [n for op in program.ops for a in op.consts.values()
                                                           for n in np.shape(a)]
    limit_block = [f"/* limits of the kernels (tinywarden.kernels) */\n{c_defines(sorted(limits.items()))}\n",
                   "/* the types of the feature requantization offsets and of the shapes: int16_t when the module's "
                   "values fit\n * (tinywarden.codegen.c.narrowed); of the packed feature shifts: uint8_t when "
                   "TW_SHIFT_BITS bits each fit a byte */\n"
                   f"typedef {'int16_t' if offset16 else 'int32_t'} tw_offset_t;\n"
                   f"typedef {'uint8_t' if sbits == SHIFT_BITS[0] else 'uint16_t'} tw_shifts_t;\n"
                   f"typedef {'int16_t' if max(dims, default=0) < 2**15 else 'int32_t'} tw_dim_t;\n"]
    info = program.info
    feats = info.get("features") or []
    common = {
        "generator": GENERATOR,
        "model_id": model_id,
        "detector": c_comment(info.get("detector", "?")),  # names from the model file: data, never C
    }
    per_sample = []
    ring_loop = needs_ring and program.n_channels > STRAIGHT_LINE_CHANNELS
    if needs_ring:  # the sample's row stored straight-line over a few channels (no loop count and branch per channel)
        per_sample += ["    for (c = 0; c < TW_N_CHANNELS; c++) {", "        s->ring[s->head][c] = sample[c];",
                       "    }"] if ring_loop else [f"    s->ring[s->head][{c}] = sample[{c}];"
                                                   for c in range(program.n_channels)]
        per_sample += ["    s->head = (uint16_t)((s->head + 1u == TW_WINDOW) ? 0u : s->head + 1u);"]
    per_sample += folds  # after the ring store: a completed block is read from the ring
    per_sample += [lik.per_sample] if lik.per_sample else []
    fused_push = not needs_ring and len(rows) == 1 and bool(rows[0][0]) and not lik.per_sample
    header = template("tinywarden_model.h.tmpl").substitute(
        common,
        channel_list=c_comment(", ".join(program.channels)),
        window=program.window,
        stride=program.stride,
        feature_line=(f"features per channel: {c_comment(', '.join(map(str, feats)))};" if feats else
                      "the model reads the raw window (per-channel rescaled to int8);"),
        n_channels=program.n_channels,
        k=program.k,
        n=program.n,
        threshold=c_literal(program.threshold, "int32"),
        const_bytes=program.const_bytes,
        typedefs="\n".join(typedefs),
        state_fields=state_fields,
        state_bytes=state_bytes,
        scratch_bytes=scratch_bytes,
        invariants="\n * ".join(textwrap.wrap("; ".join(invariants), 100)) if invariants else "-",
        max_frac_bits=MAX_FRAC_BITS,
        sample_saturation=SAMPLE_SATURATION,
        max_sample_zero=MAX_SAMPLE_ZERO,
        has_likelihood=int(program.likelihood is not None),
    )
    persist_rule, persist_decision = _persist_c(program.k, program.n, history_t)
    source = template("tinywarden_model.c.tmpl").substitute(
        common,
        constants="\n".join(constants).rstrip(),
        helpers="\n".join([*limit_block, *helpers]).rstrip(),
        kernels="\n".join([*([lik.prelude] if lik.prelude else []), *(body for _, body in kernels), lik.body,
                           ad.body if ad else ""]).rstrip(),
        calls="\n".join(calls),
        per_sample="\n".join(per_sample),
        channel_index="    int32_t c;\n" if ring_loop else "",
        history_mask=f"UINT{history_t[4:6]}_C({hex((1 << program.n) - 1)})",
        persist_rule=persist_rule,
        persist_decision=persist_decision,
        likelihood_init=lik.init + (ad.init if ad else ""),
        likelihood_step=lik.post_score + (ad.post_score if ad else ""),
        confidence=lik.confidence,
        quantize_channels=("".join(f"    q[{c}] = tw_float_to_q({c}, sample[{c}]);\n"
                                   for c in range(program.n_channels))
                           if program.n_channels <= STRAIGHT_LINE_CHANNELS and ad is None and not fused_push
                           else C_CHANNEL_LOOP),
        push_float_decl="" if fused_push else "    int16_t q[TW_N_CHANNELS];\n",
        push_float=(FUSED_FLOAT_PUSH.substitute(row=rows[0][0], advance=rows[0][1]) if fused_push
                    else PLAIN_FLOAT_PUSH),
    )
    if ad is not None:
        header += ad.header
    if policy is not None:
        from tinywarden.codegen.respond import emit_respond

        section = emit_respond(program, policy)
        header, source = header + section.header, source + section.source
    return {HEADER_NAME: header, SOURCE_NAME: source}


def write_c(program: Program, out_dir: str | Path, policy: Policy | None = None,
            adaptation: Adaptation | None = None) -> list[Path]:
    """Write the C module (with the response machine of ``policy``, if given, and baseline adaptation as
    :func:`emit_c` says) into ``out_dir`` (created if needed); return the written paths."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return [write_export(out / name, text) for name, text in emit_c(program, policy, adaptation).items()]


def export_c(pipeline: Any, out_dir: Path, source: str = "<model>", policy: Policy | None = None) -> list[Path]:
    """The ``c`` target of ``tinywarden export``: the int8 program stored in the model file, as C (with the
    response machine of ``policy``, if given)."""
    from tinywarden.quantize import load_program

    return write_c(load_program(pipeline, source), out_dir, policy)
