"""The host-native runtime: the generated C module built for this host and called through ctypes.

The same C a microcontroller runs (:mod:`tinywarden.codegen.c`) is compiled here with the host's C compiler
(``$CC``, else ``cc`` or ``gcc``; :func:`compiler_flags`) together with a host-only wrapper,
``native_host.c``, which adds a batch loop over a whole array of raw samples and a few accessors; the MCU
module itself is unchanged. The
shared library goes into a cache directory keyed by the SHA-256 of everything compiled (sources, flags,
compiler), so each module is built once.

* :func:`compile_program` builds (or finds) the library of a :class:`~tinywarden.program.Program`;
  :meth:`NativeLibrary.batch` scores a whole array of raw samples in one C call, :meth:`NativeLibrary.stream`
  gives a one-sample-at-a-time :class:`NativeScorer`. Both equal the Python int8 reference
  (:func:`tinywarden.program.run_int8`, :class:`~tinywarden.program.Int8Stream`) bit for bit.
* The lean agent: :func:`load_native` turns a model file's bytes into a :class:`NativeModel`, which answers
  what the agent asks of a model (as :class:`tinywarden.runtime.Int8Model` does) **without importing numpy**.
  The C is generated and compiled by a short-lived child process (``python -m tinywarden.native prepare``,
  which needs numpy); the agent then loads the library and a small JSON description of the model, both in
  the cache under the SHA-256 of the (signed) model file and the adaptation settings compiled in.

Trust (docs/threat-model.md): the library is a deterministic function of the signed model file and the
installed tinywarden; it is built on the device by its own compiler and never shipped. The cache directory
must belong to the agent's user and be writable by it alone (checked at every load, like ssh's StrictModes);
its description records the library's SHA-256, checked before ``dlopen``.

>>> compiler_flags()[:2]
('-std=c99', '-O3')
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import hashlib
import json
import math
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinywarden.adaptation import AdaptStep
from tinywarden.errors import ConfigError, ModelFileError, TinywardenError

if TYPE_CHECKING:
    import numpy as np

    from tinywarden.adaptation import Adaptation
    from tinywarden.guard import GuardVerdict
    from tinywarden.program import Program

__all__ = ["NativeAdapter", "NativeError", "NativeLibrary", "NativeModel", "NativeScorer", "compile_program",
           "compiler_flags", "find_compiler", "load_native", "native_cache"]

#: Bumped when the library's description (the JSON beside it) or the build changes meaning.
NATIVE_VERSION = 1
HOST_SOURCE = Path(__file__).with_name("native_host.c")
#: what ``twh_abi`` must return (native_host.c's TWH_ABI)
HOST_ABI = 3
#: the adapted state's format (:meth:`NativeAdapter.snapshot`)
STATE_FORMAT = "tinywarden-native-adaptation/1"
LIB_NAME = "libtinywarden_model.so"


class NativeError(TinywardenError):
    """The native runtime cannot be built or loaded here (no compiler, a bad cache, a failed build)."""


def compiler_flags() -> tuple[str, ...]:
    """The flags every native build uses (part of the cache key). A host has flash to spare: ``-O3`` (about 10 %
    faster than ``-O2`` on the default pipeline; the integer arithmetic is the same at any level) and
    ``-fno-semantic-interposition`` (calls between the library's own functions go direct, not through the PLT)."""
    return ("-std=c99", "-O3", "-fno-semantic-interposition", "-fPIC", "-shared")


def find_compiler() -> str:
    """The host C compiler: ``$CC``, else ``cc``, else ``gcc``; a :class:`NativeError` when there is none."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise NativeError("no C compiler found (install gcc, or set CC): the native runtime builds the model's C "
                          "module on this host")
    return cc


def native_cache(root: str | Path | None = None) -> Path:
    """The cache directory (``root``, else ``$TINYWARDEN_NATIVE_CACHE``, else ``~/.cache/tinywarden/native``),
    created with mode 0700; a :class:`NativeError` when it is not owned by this user or others may write it."""
    base = Path(root or os.environ.get("TINYWARDEN_NATIVE_CACHE")
                or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tinywarden" / "native")
    try:
        base.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = base.stat()
    except OSError as exc:
        raise NativeError(f"{base}: cannot create the native cache ({exc.strerror or exc})") from None
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise NativeError(f"{base}: the native cache must belong to this user and be writable by it alone "
                          "(a library there is loaded into the process)")
    return base


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build_library(files: Mapping[str, str], defines: Sequence[str] = (), cache: str | Path | None = None) -> Path:
    """Compile the generated C ``files`` (``{name: text}``) with ``native_host.c`` into a shared library in the
    cache (built once per distinct input); return its path."""
    cc = find_compiler()
    host = HOST_SOURCE.read_text()
    flags = (*compiler_flags(), *(f"-D{d}" for d in defines))
    key = _sha256(json.dumps([NATIVE_VERSION, cc, flags, host, sorted(files.items())]).encode())[:32]
    root = native_cache(cache)
    final = root / "lib" / key
    lib = final / LIB_NAME
    if lib.is_file():
        return lib
    (root / "lib").mkdir(mode=0o700, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=root / "lib"))
    try:
        for name, text in files.items():
            (work / name).write_text(text)
        (work / HOST_SOURCE.name).write_text(host)
        sources = [str(work / n) for n in files if n.endswith(".c")] + [str(work / HOST_SOURCE.name)]
        try:
            res = subprocess.run([cc, *flags, "-I", str(work), *sources, "-o", str(work / LIB_NAME)],
                                 capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NativeError(f"{cc}: cannot run the C compiler ({exc})") from None
        if res.returncode != 0:
            first = next((ln for ln in res.stderr.splitlines() if "error" in ln), res.stderr.strip()[:200])
            raise NativeError(f"{cc} failed to build the native module: {first}")
        if final.exists() and not lib.is_file():  # a damaged entry (its library removed): replace it
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(work, final)  # atomic: a reader sees no library or a whole one
        except OSError as exc:
            if not lib.is_file():  # another process may have won the race; anything else is an error
                raise NativeError(f"{final}: cannot store the built module ({exc.strerror or exc})") from None
        return lib
    finally:
        shutil.rmtree(work, ignore_errors=True)


def features_member(program: Program, adaptation: Adaptation | None, header: str) -> tuple[str, int] | None:
    """``(state member, count)`` holding the window's integer features at the end of a window in the module
    :func:`~tinywarden.codegen.c.emit_c` prints (``header`` is its header), or None: no features op, or a
    later tensor shares that scratch member (:func:`~tinywarden.codegen.c.scratch_homes`)."""
    from tinywarden.codegen.c import adaptation_c, scratch_homes

    op = next((o for o in program.ops if o.src == ("window",) and o.kind.startswith("features")), None)
    if op is None:
        return None
    ad = adaptation_c(program, adaptation)
    home = scratch_homes(program, keep=[program.ops[ad.op_index].src[0]] if ad is not None else [])
    mine = home.get(op.dst)
    if mine is None or any(h == mine for name, h in home.items() if name != op.dst):
        return None
    member = f"t_{mine}"
    if not re.search(rf"\b{member}\[", header):
        return None
    return member, program.tensor(op.dst).size


def _defines(program: Program, features: tuple[str, int] | None = None) -> list[str]:
    """The ``-D`` switches native_host.c needs for optional state members of ``program``'s module."""
    out = [] if features is None else [f"TWH_FEATURES={features[0]}", f"TWH_N_FEATURES={features[1]}"]
    lik = program.likelihood
    if lik is None:
        return out
    return [*out, *(["TWH_LIK_HOLD=1"] if lik.attrs.get("holdoff", 0) else []),
            *(["TWH_LIK_RECORD=1"] if "record" in lik.attrs else []),
            *(["TWH_LIK_VALUES=1"] if "vrecord" in lik.attrs else [])]


def _adaptation_defines(header: str) -> list[str]:
    """The ``-D`` switches for the optional members of the adaptation's state, read off the generated header
    (the rule's ``scale`` and ``settle`` blocks, :mod:`tinywarden.kernels.adapt_q`)."""
    return [*(["TWH_AD_SCALE=1"] if re.search(r"\buint16_t g;", header) else []),
            *(["TWH_AD_SETTLE=1"] if re.search(r"\buint8_t settling;", header) else [])]


def compile_program(program: Program, adaptation: Adaptation | None = None,
                    cache: str | Path | None = None) -> NativeLibrary:
    """The native library of ``program`` (with the baseline adaptation of ``adaptation`` compiled in when it
    is enabled and the program has the step, as :func:`tinywarden.codegen.c.emit_c` does)."""
    from tinywarden.codegen.c import HEADER_NAME, emit_c

    files = emit_c(program, adaptation=adaptation, keep_features=True)  # an incident's summary reads them
    features = features_member(program, adaptation, files[HEADER_NAME])
    defines = [*_defines(program, features), *_adaptation_defines(files[HEADER_NAME])]
    return NativeLibrary(build_library(files, defines, cache))


class NativeLibrary:
    """A loaded native module: its shape (``n_channels``, ``window``, ``stride``, ``k``, ``n``, ``threshold``,
    ``has_likelihood``, ``has_adaptation``), the batch scorer and streaming states."""

    def __init__(self, path: str | Path, model_sha256: str | None = None) -> None:
        self.path = Path(path)
        #: the SHA-256 of the model file the module was built from, when known (:func:`load_native`)
        self.model_sha256 = model_sha256
        try:
            lib = ctypes.CDLL(str(self.path))
        except OSError as exc:
            raise NativeError(f"{self.path}: cannot load the native module ({exc})") from None
        self._lib = lib
        i64, p = ctypes.c_int64, ctypes.c_void_p
        lib.twh_abi.restype = ctypes.c_int32
        if lib.twh_abi() != HOST_ABI:
            raise NativeError(f"{self.path}: built for another version of tinywarden's native wrapper")
        lib.twh_state_size.restype = ctypes.c_size_t
        lib.twh_info.argtypes = [ctypes.POINTER(i64)]
        lib.twh_batch.restype = ctypes.c_long
        lib.twh_batch.argtypes = [p, p, ctypes.c_long, p, p, p, p, ctypes.c_long]
        lib.twh_push.restype = ctypes.c_int
        lib.twh_push.argtypes = [p, p, ctypes.POINTER(ctypes.c_int32)]
        lib.twh_adaptation.argtypes = [p, ctypes.POINTER(i64)]
        lib.twh_rebaseline.argtypes = [p]
        lib.twh_carry.argtypes = [p, p]
        lib.tw_init.argtypes = [p]
        lib.twh_features.restype = ctypes.c_long
        lib.twh_features.argtypes = [p, ctypes.POINTER(i64), ctypes.c_long]
        lib.twh_state_export.restype = ctypes.c_long
        lib.twh_state_export.argtypes = [p, p, ctypes.c_long]
        lib.twh_state_import.restype = ctypes.c_int
        lib.twh_state_import.argtypes = [p, p, ctypes.c_long]
        info = (i64 * 8)()
        lib.twh_info(info)
        (self.n_channels, self.window, self.stride, self.k, self.n, self.threshold, lik, ad) = list(info)
        self.has_likelihood, self.has_adaptation = bool(lik), bool(ad)
        self.state_size = int(lib.twh_state_size())
        #: what decides the state's layout: the build's cache key (the SHA-256 of the sources, flags and compiler)
        self.build_id = self.path.parent.name

    def new_state(self) -> ctypes.Array[ctypes.c_char]:
        """A fresh ``tw_state_t`` (``tw_init``), in memory Python owns."""
        buf = ctypes.create_string_buffer(self.state_size)
        self._lib.tw_init(buf)
        return buf

    def stream(self) -> NativeScorer:
        """A one-sample-at-a-time scorer with its own state."""
        return NativeScorer(self)

    def batch(self, samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(scores int32, flags uint8, anomalies uint8, confidences uint16)`` of every window of the raw
        samples ``(rows, channels)`` (converted to float32, as ``tw_push`` takes them), from a fresh state, in
        one C call: exactly :func:`tinywarden.program.run_int8` and :func:`~tinywarden.program.run_confidence`."""
        import numpy as np

        x = np.ascontiguousarray(samples, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_channels:
            raise NativeError(f"samples must have shape (rows, {self.n_channels}), got {x.shape}")
        rows = len(x)
        n = 0 if rows < self.window else (rows - self.window) // self.stride + 1
        scores, flags = np.empty(n, np.int32), np.empty(n, np.uint8)
        anomalies, conf = np.empty(n, np.uint8), np.empty(n, np.uint16)
        state = self.new_state()
        got = self._lib.twh_batch(state, x.ctypes.data, rows, scores.ctypes.data, flags.ctypes.data,
                                  anomalies.ctypes.data, conf.ctypes.data, n)
        if got != n:
            raise NativeError(f"{self.path}: the batch loop returned {got} windows, expected {n}")
        return scores, flags, anomalies, conf


class NativeScorer:
    """Push raw samples; every ``stride`` samples get ``(score, raw_flag, alarm)`` as
    :class:`tinywarden.runtime.Int8Scorer` does (a window holding a non-finite sample scores NaN, the C having
    read it as 0). ``confidence`` is the C's Q15 confidence of the last window, as a float in [0, 1]."""

    last_input = None  # the integer features stay inside the C state (the agent asks NativeAdapter instead)

    def __init__(self, lib: NativeLibrary) -> None:
        self.lib = lib
        self._fn = lib._lib.twh_push
        self._row = ctypes.c_float * lib.n_channels
        self._out = (ctypes.c_int32 * 4)()
        self.state = lib.new_state()
        self.finite: deque[bool] = deque(maxlen=lib.window)
        self.confidence = 0.0
        self.windows = 0

    def push(self, sample: Sequence[float]) -> tuple[float, bool, bool] | None:
        if len(sample) != self.lib.n_channels:
            raise NativeError(f"a sample has {self.lib.n_channels} channel values, got {len(sample)}")
        self.finite.append(all(math.isfinite(v) for v in sample))  # of the sample given, as Int8Scorer judges it
        row = self._row(*sample)
        got = self._fn(self.state, row, self._out)
        if got != 1:
            if got < 0:
                raise NativeError("tw_push refused its arguments")
            return None
        score, flag, alarm, conf = self._out
        self.windows += 1
        self.confidence = conf / 32768.0
        if not all(self.finite):
            return float("nan"), False, bool(alarm)
        return float(score), bool(flag), bool(alarm)

    def reset(self) -> None:
        self.lib._lib.tw_init(self.state)
        self.finite.clear()

    def rebaseline(self) -> None:
        """The operator's re-baseline (``tw_rebaseline``): the adapted scaling and the likelihood's running
        distribution back to the reference; samples and counts are kept."""
        self.lib._lib.twh_rebaseline(self.state)

    def can_carry_from(self, other: NativeScorer) -> bool:
        """Whether ``other``'s state has this scorer's layout: the same library, or one of the same program
        built with other adaptation settings (the same state members; only compiled-in constants differ)."""
        a, b = self.lib, other.lib
        return a.path == b.path or (a.model_sha256 == b.model_sha256 is not None and a.state_size == b.state_size
                                    and (a.has_likelihood, a.has_adaptation) == (b.has_likelihood, b.has_adaptation))

    def carry_from(self, other: NativeScorer) -> None:
        """Take ``other``'s likelihood and adaptation state, keeping this scorer's samples (:meth:`can_carry_from`
        must hold)."""
        if not self.can_carry_from(other):
            raise NativeError("the likelihood and adaptation state carry over between modules of one program only")
        self.lib._lib.twh_carry(self.state, other.state)

    def export_state(self) -> bytes:
        """The likelihood and adaptation state (what :meth:`carry_from` carries) as ``state_size`` bytes
        (``twh_state_export``), for :meth:`import_state` in a scorer of the same library."""
        out = ctypes.create_string_buffer(self.lib.state_size)
        got = self.lib._lib.twh_state_export(self.state, out, self.lib.state_size)
        if got != self.lib.state_size:
            raise NativeError(f"{self.lib.path}: twh_state_export returned {got}, expected {self.lib.state_size}")
        return out.raw

    def import_state(self, blob: bytes) -> None:
        """Take the likelihood and adaptation state of an :meth:`export_state` blob, keeping this scorer's samples
        (``twh_state_import``); NativeError, nothing changed, when it is not ``state_size`` bytes."""
        if len(blob) != self.lib.state_size:
            raise NativeError(f"a state blob of {len(blob)} bytes, this module's state has {self.lib.state_size}")
        if self.lib._lib.twh_state_import(self.state, blob, len(blob)) != 0:
            raise NativeError(f"{self.lib.path}: twh_state_import refused the blob")

    def features(self) -> list[int]:
        """The integer window features of the last completed window, as the C computed them (empty when the
        module does not keep them to the end of the window: :func:`features_member`)."""
        n = self.lib._lib.twh_features(self.state, None, 0)
        out = (ctypes.c_int64 * max(n, 1))()
        self.lib._lib.twh_features(self.state, out, n)
        return list(out[:n]) if n > 0 else []

    def adaptation(self) -> dict[str, int]:
        """The C state's adaptation counters and the likelihood's running mean (``twh_adaptation``)."""
        out = (ctypes.c_int64 * 7)()
        self.lib._lib.twh_adaptation(self.state, out)
        return dict(zip(("adapted", "flags", "flagged", "drift", "lik_mean", "g_min", "settling"), out, strict=True))


# ---------------------------------------------------------------------------------------------- lean agent


class NativeLikelihood:
    """The agent's likelihood for a native model: the confidence the C computed for the window just scored by
    the scorer that ``scorer()`` returns (``update`` does not use the score, the C having taken it already;
    a non-finite score gives NaN, as the other likelihoods do)."""

    def __init__(self, mean0: int, var0: int, scorer: Callable[[], NativeScorer] | None = None) -> None:
        self.mean0, self.var0 = mean0, var0
        self.scorer = scorer

    def fresh(self) -> NativeLikelihood:
        return NativeLikelihood(self.mean0, self.var0)

    def update(self, score: float, rows: Any = None) -> float:
        """The C's confidence of the window just scored (its value record saw ``rows`` inside ``tw_push``)."""
        if self.scorer is None or not math.isfinite(score):
            return float("nan")
        return self.scorer().confidence

    def drift(self) -> float:
        """How far the running mean has moved from the fitted one, in fitted standard deviations."""
        if self.scorer is None:
            return 0.0
        mean = self.scorer().adaptation()["lik_mean"]
        return abs(mean - self.mean0) / 65536.0 / max(math.sqrt(self.var0), 1.0)


class NativeAdapter:
    """The agent's view of the adaptation compiled into a native module, shaped as
    :class:`tinywarden.runtime.Int8Adapter` (``observe``, ``status``, ``rebind``, ``config``); ``scorer`` is
    asked for the running scorer each time."""

    def __init__(self, scorer: Callable[[], NativeScorer], config: Adaptation, likelihood: NativeLikelihood) -> None:
        self._scorer = scorer
        self.config = config
        self._lik = likelihood
        self._last = self._scorer().adaptation()

    def observe(self, x: Any, confidence: float | None, likelihood: Any = None,
                score: float | None = None) -> AdaptStep:
        s = self._scorer().adaptation()
        step = AdaptStep(s["adapted"] != self._last["adapted"], s["drift"] / 4096.0, self._lik.drift(),
                         s["flags"] != self._last["flags"])
        self._last = s
        return step

    def rebind(self, pipeline: Any) -> None:
        self._last = self._scorer().adaptation()

    def snapshot(self) -> dict[str, Any]:
        """The C state's likelihood and adaptation state (:meth:`NativeScorer.export_state`, base64) with what
        decides its layout (the build, the wrapper's ABI, the state's size) and the windows scored, for a
        restarted agent to carry on from (:meth:`load`); the agent seals it with the device key
        (:mod:`tinywarden.agent.adaptstate`)."""
        scorer = self._scorer()
        lib = scorer.lib
        return {"format": STATE_FORMAT, "build": lib.build_id, "abi": HOST_ABI, "state_bytes": lib.state_size,
                "windows": scorer.windows, "state": base64.b64encode(scorer.export_state()).decode("ascii")}

    def load(self, doc: Mapping[str, Any]) -> None:
        """Carry on from a :meth:`snapshot` of a module with this one's layout. ConfigError, nothing changed
        (the frozen reference for a fresh scorer), when it is of another format or build, or malformed. The C
        does not range-check the blob: its authenticity is the sealed file's (:mod:`tinywarden.agent.adaptstate`),
        and only this module's own export passes that."""
        scorer = self._scorer()
        lib = scorer.lib
        if not isinstance(doc, Mapping) or doc.get("format") != STATE_FORMAT:
            raise ConfigError(f"not an adapted state of format {STATE_FORMAT}")
        if (doc.get("build"), doc.get("abi"), doc.get("state_bytes")) != (lib.build_id, HOST_ABI, lib.state_size):
            raise ConfigError("the adapted state was written by another native module (build, wrapper or layout)")
        windows, text = doc.get("windows"), doc.get("state")
        if type(windows) is not int or windows < 0 or not isinstance(text, str):
            raise ConfigError("the adapted state is malformed")
        try:
            blob = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ConfigError("the adapted state's blob is not base64") from None
        try:
            scorer.import_state(blob)
        except NativeError as exc:
            raise ConfigError(f"the adapted state does not fit this module: {exc}") from None
        scorer.windows = windows
        self._last = scorer.adaptation()

    def status(self) -> dict[str, Any]:
        s, scorer = self._scorer().adaptation(), self._scorer()
        return {
            "enabled": True,
            "runtime": "native (the generated C's integer step, through ctypes)",
            "adapted_windows": s["adapted"],
            "held_windows": max(scorer.windows - s["adapted"], 0),
            "drift": round(s["drift"] / 4096.0, 4),
            "likelihood_drift": round(self._lik.drift(), 4),
            "max_drift": self.config.max_drift,
            "flagged": bool(s["flagged"]),
            "flags": s["flags"],
            "settling": bool(s["settling"]),
            "scale_ratio_max": round(32768 / max(s["g_min"], 1), 4),  # the adapted multiplier's factor is g / 2^15
        }


class NativeModel:
    """What the agent needs of a model, from a prepared native module and its description (module docstring):
    ``channels_``, ``window``, ``stride``, ``threshold_``, :meth:`stream`, :meth:`judge_window`,
    ``likelihood_``, ``guard_``; the same answers as :class:`tinywarden.runtime.Int8Model`, with no numpy."""

    runtime = "native"

    def __init__(self, meta: Mapping[str, Any], lib: NativeLibrary) -> None:
        self.meta, self.lib = dict(meta), lib
        self.channels_: tuple[str, ...] = tuple(meta["channels"])
        self.window, self.stride, self.k, self.n = lib.window, lib.stride, lib.k, lib.n
        self.threshold_ = float(lib.threshold)
        self.features: tuple[str, ...] = tuple(meta["features"])
        self.input_kind = "features" if self.features else "window"
        block, level = meta["crossings_block"], meta.get("crossings_level")
        self.crossings_block = None if block is None else int(block)
        self.crossings_level: list[float] | None = level  # a list, as offset_: incidents convert it
        self.offset_, self.scale_ = meta["offset"], meta["scale"]  # lists; incidents convert them
        self.guard_ = meta["guard"]
        self.guard_note_ = meta["guard_note"]
        lik = meta["likelihood"]
        self.likelihood_ = None if lik is None else NativeLikelihood(int(lik["mean"]), int(lik["var"]))
        self.adaptation_ = meta["adaptation"]  # the policy's [adaptation] compiled in, or None
        #: ``{"a", "b", "names"}``: each window feature is ``a * f + b`` of the C's integer feature ``f``
        #: (:meth:`NativeScorer.features`); None when the module does not keep them
        self.summary_: dict[str, list[Any]] | None = meta.get("summary")

    def stream(self, adaptation: Adaptation | None = None) -> NativeScorer:
        """A one-sample-at-a-time scorer (the adaptation compiled in is the one :func:`load_native` was given)."""
        return self.lib.stream()

    def judge_window(self, window: Any) -> GuardVerdict:
        """The fail-safe guard's verdict on one raw window (:func:`tinywarden.guard.judge_bounds`; imports
        numpy, on a model fault only)."""
        import numpy as np

        from tinywarden.guard import GuardVerdict, judge_bounds

        g = self.guard_
        if g is None:
            return GuardVerdict(None, float("nan"), self.guard_note_ or "this model has no fail-safe guard")
        return judge_bounds(np.asarray(window, dtype=np.float64), self.channels_, np.asarray(g["lo"]),
                            np.asarray(g["hi"]), np.asarray(g["rate"]), (self.window, len(self.channels_)))


def _adaptation_key(adaptation: Adaptation | None) -> dict[str, Any] | None:
    return None if adaptation is None or not adaptation.enabled else asdict(adaptation)


def generator_digest() -> str:
    """SHA-256 of the installed code that decides what C a model becomes (the program, the kernels, the code
    generator and its templates, this wrapper): a changed generator prepares its models anew."""
    pkg = Path(__file__).parent
    h = hashlib.sha256()
    files = [pkg / "program.py", pkg / "arith.py", HOST_SOURCE,
             *sorted((pkg / "kernels").rglob("*.py")), *sorted((pkg / "codegen").rglob("*"))]
    for f in files:
        if f.is_file():
            h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()


def model_key(model: bytes, adaptation: Adaptation | None) -> str:
    """The cache name of a prepared model: the SHA-256 of the model file, the adaptation compiled in and the
    installed generator (:func:`generator_digest`)."""
    extra = json.dumps([NATIVE_VERSION, generator_digest(), _adaptation_key(adaptation)], sort_keys=True).encode()
    return _sha256(_sha256(model).encode() + extra)[:32]


def load_native(model: bytes, adaptation: Adaptation | None = None, source: str = "<model>",
                cache: str | Path | None = None) -> NativeModel:
    """The lean agent's model from model-file bytes (module docstring): prepared once per model, adaptation
    and tinywarden version by a child process, then loaded without numpy. Raises :class:`NativeError` (no
    compiler, a failed build) or :class:`~tinywarden.errors.ModelFileError` (no int8 program)."""
    root = native_cache(cache)
    key = model_key(model, adaptation)
    desc = root / "models" / f"{key}.json"
    if not desc.is_file():
        cmd = [sys.executable, "-m", "tinywarden.native", "prepare", "--cache", str(root), "--source", source,
               "--adaptation", json.dumps(_adaptation_key(adaptation))]
        try:
            res = subprocess.run(cmd, input=model, capture_output=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise NativeError(f"{source}: cannot prepare the native module ({exc})") from None
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip().splitlines()
            raise NativeError(err[-1] if err else f"{source}: preparing the native module failed")
    try:
        meta = json.loads(desc.read_text())
        lib = Path(meta["library"])
        if not lib.is_file():  # the library was removed from the cache: build it again
            desc.unlink()
            return load_native(model, adaptation, source, cache)
        if _sha256(lib.read_bytes()) != meta["library_sha256"]:
            raise NativeError(f"{lib}: the native library does not match its description (changed since it was "
                              "built); remove it to rebuild")
        native_cache(lib.parent.parent.parent)  # the library's own cache passes the ownership check too
    except (OSError, ValueError, KeyError) as exc:
        raise NativeError(f"{desc}: unreadable native model description ({exc})") from None
    return NativeModel(meta, NativeLibrary(lib, meta.get("model_sha256")))


def feature_affine(program: Program) -> tuple[list[float], list[float]]:
    """``(a, b)`` per feature column of ``program`` with ``float feature ~= a * integer feature + b``, by each
    feature's scaling rule in :data:`tinywarden.features.FEATURE_TABLE` and the program's sample
    quantization (what :func:`tinywarden.quantize.ptq.feature_affine` gives the quantizer; computed here
    from the program alone, so that a gateway without the train extra needs no quantizer)."""
    from tinywarden.features import FEATURE_TABLE

    a: list[float] = []
    b: list[float] = []
    for mul, zero in zip(program.sample_mul.tolist(), program.sample_zero.tolist(), strict=True):
        s = 1.0 / mul
        for f in program.info.get("features", ()):
            fa, fb = FEATURE_TABLE[f].scaling(s, zero * s, program.window)
            a.append(float(fa))
            b.append(float(fb))
    return a, b


def prepare(model: bytes, adaptation: Mapping[str, Any] | None, source: str, cache: str | Path | None) -> Path:
    """Generate and build the native module of a model file (the child process of :func:`load_native`); write
    its description beside it and return the description's path."""
    import numpy as np

    from tinywarden.adaptation import Adaptation
    from tinywarden.fileio import atomic_write
    from tinywarden.modelfile import decode
    from tinywarden.program import INT8_HEADER_KEY
    from tinywarden.runtime import Int8Model

    ad = Adaptation(**adaptation) if adaptation is not None else None
    header, arrays = decode(model, source)
    if INT8_HEADER_KEY not in header:
        raise ModelFileError(f"{source}: the model file holds no int8 program (the native runtime runs one)")
    m = Int8Model(header, arrays, source)
    p = m.program
    native = compile_program(p, ad, cache)
    summary = None
    if p.info.get("features") and native._lib.twh_features(native.new_state(), None, 0) > 0:
        from tinywarden.features import feature_names

        a, b = feature_affine(p)
        summary = {"a": a, "b": b, "names": feature_names(m.channels_, m.features)}
    try:  # one window through the library: a model that builds but cannot score fails here (as load_payload)
        native.batch(np.zeros((p.window, p.n_channels)))
    except Exception as exc:
        raise ModelFileError(f"{source}: model cannot score ({type(exc).__name__}: {exc})") from None
    lib = native.path
    g = m.guard_
    lik = p.likelihood
    meta = {
        "version": NATIVE_VERSION, "source": source, "model_sha256": _sha256(model),
        "library": str(lib), "library_sha256": _sha256(lib.read_bytes()),
        "channels": list(m.channels_), "features": list(m.features), "crossings_block": m.crossings_block,
        "crossings_level": None if m.crossings_level is None else [float(v) for v in m.crossings_level],
        "offset": m.offset_.tolist(), "scale": m.scale_.tolist(),
        "guard": None if g is None else {"lo": g.lo_.tolist(), "hi": g.hi_.tolist(), "rate": g.rate_.tolist()},
        "guard_note": m.guard_note_,
        "likelihood": None if lik is None else {"mean": int(lik.attrs["mean"]), "var": int(lik.attrs["var"])},
        "adaptation": adaptation,
        "summary": summary,
    }
    root = native_cache(cache)
    (root / "models").mkdir(mode=0o700, exist_ok=True)
    desc = root / "models" / f"{model_key(model, ad)}.json"
    atomic_write(desc, json.dumps(meta, indent=1), mode=0o600)
    return desc


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tinywarden.native prepare --cache DIR [--adaptation JSON] [--source NAME] < MODEL``."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m tinywarden.native")
    sub = ap.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="build the native module of the model file read from stdin")
    pr.add_argument("--cache", default=None)
    pr.add_argument("--source", default="<stdin>")
    pr.add_argument("--adaptation", default="null", help="the policy's [adaptation] as JSON, or null")
    args = ap.parse_args(argv)
    try:
        print(prepare(sys.stdin.buffer.read(), json.loads(args.adaptation), args.source, args.cache))
    except TinywardenError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
