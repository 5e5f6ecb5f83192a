"""What a kernel is: an op of the on-device program, and the one registry of kernels.

A kernel lives in one module of :mod:`tinywarden.kernels` holding its numpy integer reference (the ground
truth), its argument checks (TFLite Micro's *prepare*: the C has no checks in its loops), its C template
and the limits it exports. The limits are the one definition of a bound both sides rely on: Python uses the
module constant, and the generated C gets it as a named ``#define`` (never a bare number in a template).

A C template is text with two header lines, ``//@call: <statement>`` (how the module's ``tw_push`` calls the
kernel) and ``//@requires: <helpers>`` (names of :data:`tinywarden.arith.C_HELPERS`), then the C body;
``${name}`` placeholders are filled by the C emitter (``${src0}``, ``${dst}``, ``${c_<const>}``,
``${<const>_size}``, every integer attribute ...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from tinywarden.arith import C_HELPERS, INT32_MAX, score_from_total
from tinywarden.errors import ConfigError

#: C types of the tensor and constant dtypes a kernel may use.
CTYPES = {"int8": "int8_t", "int16": "int16_t", "int32": "int32_t", "int64": "int64_t", "uint8": "uint8_t",
          "uint16": "uint16_t"}
#: Opens the C of a Thumb-1 core (Cortex-M0/M0+), where flash is the tighter budget: there the kernels take their
#: rolled loops (one element a pass), elsewhere the unrolled ones; the code of every other core is unchanged.
C_IF_THUMB1 = "#if defined(__ARM_ARCH_ISA_THUMB) && __ARM_ARCH_ISA_THUMB == 1"


@dataclass(frozen=True)
class TensorSpec:
    """A named integer buffer of the program (a scratch array in the C state struct)."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass(frozen=True)
class Op:
    """One kernel call: ``kind`` (a key of :data:`KERNELS`), input tensor names, output tensor name,
    integer/string attributes and constant integer arrays (weights, multipliers, shifts ...)."""

    kind: str
    src: tuple[str, ...]
    dst: str
    attrs: Mapping[str, Any] = field(default_factory=dict)
    consts: Mapping[str, np.ndarray] = field(default_factory=dict)


class ProgramView(Protocol):
    """What a kernel's argument check may ask of the program (:class:`tinywarden.program.Program`)."""

    @property
    def window(self) -> int: ...

    @property
    def stride(self) -> int: ...

    @property
    def n_channels(self) -> int: ...

    def tensor(self, name: str) -> TensorSpec: ...


Kernel = Callable[[list[np.ndarray], Op], np.ndarray]
Check = Callable[[Op, ProgramView], None]


@dataclass(frozen=True)
class StateField:
    """A member of the generated ``tw_state_t``: ``<ctype> <name><dims>``, ``nbytes`` bytes, aligned to
    ``align`` (the emitter orders members by alignment, so the struct has no padding it does not state)."""

    ctype: str
    name: str
    dims: tuple[int, ...]
    nbytes: int
    align: int


@dataclass(frozen=True)
class StreamC:
    """A window kernel in its streaming C form: every pushed sample is folded into ``fields`` of the state
    (``fold``, a function ``static void <fold_fn>(tw_state_t *s, const int16_t q[TW_N_CHANNELS])``), and a
    completed window's result is combined from them by ``call`` (a statement, as a template's ``//@call:``).
    ``typedefs`` precede the state struct in the header (whether it also reads the raw sample ring is the
    kernel's ``stream_ring``)."""

    typedefs: str
    fields: tuple[StateField, ...]
    fold_fn: str
    body: str
    call: str
    requires: tuple[str, ...] = ()
    limits: Mapping[str, int] = field(default_factory=dict)
    #: how the state holds the window, for the header's invariant comment
    doc: str = ""
    #: the fold calls features_s16.EXTREMES_HOOK with each channel's block extremes after each group
    extremes_hook: bool = False
    #: when the fold buffers samples: the C row (an ``int16_t *`` lvalue expression) the next sample is copied into,
    #: and ``static void <advance_fn>(tw_state_t *s)``, the fold after that copy (so an entry point that converts
    #: samples can write them straight into the row)
    row: str = ""
    advance_fn: str = ""
    #: the function ``call`` calls to combine the window: with a sink's ``consume`` it takes the state and the
    #: sink's ``consume_params`` (:class:`FeatureSink`), and the op that consumes calls it
    finish_fn: str = ""


@dataclass(frozen=True)
class FeatureSink:
    """Where a streaming window kernel's values go instead of an int64 tensor in the state: a
    ``requantize_s64_*`` op that alone reads them (``params``, the C name of its parameter struct; ``suffix``,
    its kind's ``s8``/``s16``; ``ctype``, its output's C type), so each channel's values are requantized as they
    are combined. With ``consume``, the op after that one alone reads the requantized values too: ``consume`` is
    the C statement that takes one channel's values ``v`` (channel ``c``), and ``consume_params`` the finish
    function's parameters after the state, what it accumulates into (e.g. ``int32_t *acc, int64_t *total``):
    the model's input is not stored either."""

    params: str
    suffix: str
    ctype: str
    consume: str = ""
    consume_params: str = ""
    #: the values are not requantized here: the finish function computes one channel's int64 values into its
    #: caller's ``int64_t f[]`` (``tw_features_finish(s, c, f)``), called by their one reader (the baseline
    #: adaptation, which reads them twice a window) whenever it needs them, so they take no state
    channel: bool = False


#: ``(op, program, table prefix, the module keeps the raw sample ring, sink) -> StreamC``; ``sink``, when not
#: None, is where the values go instead of the int64 scratch (:class:`FeatureSink`)
StreamKernel = Callable[[Op, ProgramView, str, bool, "FeatureSink | None"], StreamC]


@dataclass(frozen=True)
class KernelSpec:
    """A kernel: its numpy reference and contract, its C template and the limits it exports."""

    kind: str
    fn: Kernel
    src_dtypes: tuple[str, ...]
    dst_dtype: str
    consts: Mapping[str, str]
    doc: str
    c_template: str
    #: extra ``${...}`` substitutions of the template (two kinds may share one template)
    c_subs: Mapping[str, str] = field(default_factory=dict)
    #: ``TW_*`` name -> value: emitted as ``#define`` before the kernels, used by name in the template
    limits: Mapping[str, int] = field(default_factory=dict)
    #: ``TW_*`` limits that follow an op's own sizes (a stack array's length, sized to the model rather than to
    #: the kernel's limit): the C emitter defines each as its largest value over the module's ops of this kind,
    #: in place of the same name in ``limits``
    op_limits: Callable[[Op], Mapping[str, int]] | None = None
    #: Raises ConfigError when an op's attributes or constant shapes would take the C kernel out of its
    #: arrays or its documented ranges (e.g. a tampered model file).
    check: Check | None = None
    #: score kernels: the int64 total before the final right shift (the quantizer chooses that shift)
    total: Kernel | None = None
    #: window kernels that can be computed from per-sample running aggregates: their C form
    #: (:data:`StreamKernel`); the C emitter then folds each sample once instead of re-reading the ring
    stream: StreamKernel | None = None
    #: for a streaming kernel: whether its C form reads the raw sample ring for ``(op, program)``
    stream_ring: Callable[[Op, ProgramView], bool] | None = None
    #: constant tables only the C form reads, computed from the op when the C is generated (CMSIS-NN's prepare
    #: step, e.g. a layer's kernel sums): name -> array, named and substituted like ``op.consts``
    c_tables: Callable[[Op], Mapping[str, np.ndarray]] | None = None


#: Every kernel a program may use, by kind; filled by :func:`register_kernel` as kernel modules load.
KERNELS: dict[str, KernelSpec] = {}


def register_kernel(spec: KernelSpec) -> KernelSpec:
    """Add ``spec`` to :data:`KERNELS` (a kind may be registered once; registering the same spec again is a
    no-op, so re-importing a module is harmless)."""
    old = KERNELS.get(spec.kind)
    if old is not None and old != spec:
        raise ConfigError(f"kernel {spec.kind!r} is already registered (by {old.fn.__module__})")
    _check_template(spec)
    KERNELS[spec.kind] = spec
    return spec


def _check_template(spec: KernelSpec) -> None:
    lines = spec.c_template.splitlines()
    if not any(line.startswith("//@call:") for line in lines):
        raise ConfigError(f"kernel {spec.kind!r}: its C template has no //@call: line")
    for line in lines:
        if line.startswith("//@requires:"):
            unknown = [h for h in line.removeprefix("//@requires:").split() if h not in C_HELPERS]
            if unknown:
                raise ConfigError(f"kernel {spec.kind!r} requires unknown C helper(s) {', '.join(unknown)}")
    bad = [name for name in spec.limits if not name.startswith("TW_") or not name.isidentifier()]
    if bad:
        raise ConfigError(f"kernel {spec.kind!r}: limit name(s) {', '.join(bad)} must be TW_ identifiers")


def score_kernel(kind: str, total: Kernel, src_dtypes: tuple[str, ...], consts: Mapping[str, str], doc: str,
                 c_template: str, **kwargs: Any) -> KernelSpec:
    """Register a score kernel: ``score = sat32(total >> shift)`` into the int32 ``(1,)`` tensor."""

    def fn(srcs: list[np.ndarray], op: Op) -> np.ndarray:
        return score_from_total(total(srcs, op), int(op.attrs["shift"]))[:, None]

    fn.__name__ = fn.__qualname__ = f"{kind}_score"
    fn.__module__ = total.__module__
    return register_kernel(KernelSpec(kind, fn, src_dtypes, "int32", consts, doc, c_template, total=total,
                                      **kwargs))


def score_total(srcs: list[np.ndarray], op: Op) -> np.ndarray:
    """The int64 total a score kernel computes before its right shift (used to choose that shift)."""
    spec = KERNELS[op.kind]
    if spec.total is None:
        raise ConfigError(f"kernel {op.kind!r} is not a score kernel")
    return spec.total(srcs, op)


# -- argument checks shared by the kernels ---------------------------------------------------------
def require(ok: bool, what: str) -> None:
    if not ok:
        raise ConfigError(what)


def const_shape(op: Op, name: str) -> tuple[int, ...]:
    return tuple(np.asarray(op.consts[name]).shape)


#: The shifts :func:`tinywarden.arith.quantize_multiplier` produces; ``tw_requantize`` shifts by them, so any other
#: value is undefined behaviour in the C.
REQUANT_SHIFT_MIN, REQUANT_SHIFT_MAX = -31, 30


def per_output(op: Op, n: int, names: tuple[str, ...] = ("multiplier", "shift")) -> None:
    """Constants ``names`` hold one value per output (``(n,)``); the one named ``shift`` lies in the
    requantization shift range (:func:`requant_shifts`), the one named ``multiplier`` in the multiplier range
    (:func:`requant_multipliers`)."""
    bad = [c for c in names if const_shape(op, c) != (n,)]
    require(not bad, f"constant(s) {', '.join(bad)} must hold {n} value(s)")
    if "shift" in names:
        requant_shifts(op, "shift")
    if "multiplier" in names:
        requant_multipliers(op, "multiplier")


def requant_shifts(op: Op, *names: str) -> None:
    """The constants ``names``, shifts that ``tw_requantize`` applies, lie in its defined range."""
    for c in names:
        a = np.asarray(op.consts[c]).astype(np.int64)
        require(not a.size or (int(a.min()) >= REQUANT_SHIFT_MIN and int(a.max()) <= REQUANT_SHIFT_MAX),
                f"constant {c!r} must lie in [{REQUANT_SHIFT_MIN}, {REQUANT_SHIFT_MAX}]")


def requant_multipliers(op: Op, *names: str) -> None:
    """The constants ``names``, Q31 multipliers that ``tw_requantize`` and ``tw_requantize32`` apply, lie in their
    defined range ``[0, INT32_MAX]`` (:func:`tinywarden.arith.quantize_multiplier`'s): ``tw_requantize32`` leaves out
    the one saturating product, ``INT32_MIN * INT32_MIN``, that a negative multiplier would meet."""
    for c in names:
        a = np.asarray(op.consts[c]).astype(np.int64)
        require(not a.size or (int(a.min()) >= 0 and int(a.max()) <= INT32_MAX),
                f"constant {c!r} must lie in [0, {INT32_MAX}]")


def activation(op: Op, dtype: str, zero_point: str) -> None:
    """The attribute ``zero_point`` and ``act_min <= act_max`` lie in the range of ``dtype``."""
    info = np.iinfo(dtype)
    int_attr(op, zero_point, int(info.min), int(info.max))
    lo = int_attr(op, "act_min", int(info.min), int(info.max))
    int_attr(op, "act_max", lo, int(info.max))


def int_attr(op: Op, name: str, lo: int, hi: int) -> int:
    """The integer attribute ``name`` of ``op``, required in ``[lo, hi]``."""
    v = op.attrs.get(name)
    require(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and lo <= int(v) <= hi,
            f"attribute {name!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return int(v)  # type: ignore[arg-type]
