"""Running the generated module on an emulated Cortex-M4 (QEMU mps2-an386) and on the host.

Both runs link the same harness (``embedded/harness.c``) around ``tinywarden_model.c`` and feed it the
same sample stream, compiled into the image as ``tw_stream.h``; each window's decision comes back as a
``w <sample index> <score> <anomaly>`` line (semihosting on the target, stdout on the host), so the two
can be compared exactly.

With ``count=True`` QEMU runs one instruction per translation block and logs every
executed block (``-d exec,nochain``): one trace line per instruction, tagged with its function name.
The harness brackets every ``tw_push`` between calls to ``tw_mark_begin``/``tw_mark_end``, so counting
the lines in between gives the exact number of instructions of each push, repeatable on a noisy machine.
This is slow (a few million instructions per second), so count over a short stream.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinywarden.errors import DataError
from tinywarden.target.build import COMMON_CFLAGS, MODEL_STEM, CpuTarget, get_target, model_source
from tinywarden.target.toolchain import (
    TargetRunError,
    check_newlib,
    embedded_dir,
    find_tool,
    one_insn_per_tb_args,
    run_tool,
)

STREAM_HEADER = "tw_stream.h"
STARTUP_SOURCES = ("startup.c", "semihost.c")
HOST_CFLAGS = ("-O2", "-DTW_HOST", "-D_POSIX_C_SOURCE=199309L")


@dataclass(frozen=True)
class Decisions:
    """One row per completed window: the sample that closed it, its integer score and its decision."""

    end_index: np.ndarray  # int64, index into the stream of the sample whose push closed the window
    score: np.ndarray  # int32
    anomaly: np.ndarray  # uint8
    #: uint16, the likelihood's Q15 confidence (``tw_result_t.confidence``, 0 without a likelihood step); None when
    #: the harness did not print it
    confidence: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.end_index)

    def differences(self, other: Decisions, limit: int = 5) -> list[str]:
        """Human-readable differences from ``other`` (empty when both are identical)."""
        if len(self) != len(other):
            return [f"{len(self)} windows vs {len(other)}"]
        out = []
        conf = (self.confidence != other.confidence if self.confidence is not None and other.confidence is not None
                else np.zeros(len(self), dtype=bool))
        for k in np.flatnonzero((self.end_index != other.end_index) | (self.score != other.score)
                                | (self.anomaly != other.anomaly) | conf)[:limit]:
            out.append(f"window {k}: (sample {self.end_index[k]}, score {self.score[k]}, anomaly "
                       f"{self.anomaly[k]}) vs (sample {other.end_index[k]}, score {other.score[k]}, "
                       f"anomaly {other.anomaly[k]})" + (f", confidence {self.confidence[k]} vs "
                                                         f"{other.confidence[k]}" if conf[k] else ""))
        return out


@dataclass(frozen=True)
class InstructionCount:
    """Exact executed-instruction counts of ``tw_push`` calls on the emulated core.

    ``per_push[i]`` counts everything between the harness's marks around push ``i`` (the call itself
    with its argument set-up, a handful of instructions, plus all of ``tw_push`` and its callees,
    including libgcc helpers). ``per_window[k]`` sums the pushes since the previous window closed, so
    the first window includes filling the whole window and later ones one stride of samples.
    """

    per_push: np.ndarray  # int64, one per sample of the stream
    window_pushes: np.ndarray  # int64, index of each push that closed a window
    per_window: np.ndarray  # int64
    #: instructions inside the pushes by the function executing them, summed over the whole stream
    by_function: dict[str, int] = field(default_factory=dict)

    @property
    def steady_per_window(self) -> float:
        """Mean instructions per window once the window is full (every window after the first)."""
        w = self.per_window[1:] if len(self.per_window) > 1 else self.per_window
        return float(np.mean(w)) if len(w) else float("nan")

    @property
    def max_push(self) -> int:
        """The longest single push: the latency of a window's computation."""
        return int(self.per_push.max()) if len(self.per_push) else 0


@dataclass(frozen=True)
class TargetRun:
    """Decisions printed by the emulated core, with the instruction counts when they were asked for."""

    decisions: Decisions
    instructions: InstructionCount | None
    image_bytes: int  # size of the linked image's flash part (harness + stream + module + libs)


@dataclass(frozen=True)
class HostRun:
    """Decisions of the same harness compiled for the build machine, and its time per window."""

    decisions: Decisions
    ns_per_window: float | None


def write_stream_header(stream: np.ndarray, path: Path) -> Path:
    """Write ``stream`` (samples x channels) as the C array the harness feeds through ``tw_push``.

    Values are rounded to float32 and written as exact hexadecimal float literals, so the target sees
    bit-for-bit the floats the host reference sees; NaN and infinities become GCC built-ins, so a
    stream can exercise the module's handling of bad samples.
    """
    x = np.asarray(stream)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise DataError(f"sample stream must be a non-empty (samples, channels) array, got shape {x.shape}")
    x = x.astype(np.float32)

    def lit(v: np.float32) -> str:
        if np.isnan(v):
            return "__builtin_nanf(\"\")"
        if np.isinf(v):
            return "__builtin_inff()" if v > 0 else "-__builtin_inff()"
        return float(v).hex() + "f"

    rows = ",\n".join("    {" + ", ".join(lit(v) for v in row) + "}" for row in x)
    path.write_text(
        "/* Sample stream fed to tw_push by harness.c; generated by tinywarden.target.qemu. */\n"
        f"#define TW_STREAM_LEN {x.shape[0]}\n#define TW_STREAM_CHANNELS {x.shape[1]}\n"
        f"static const float tw_stream[TW_STREAM_LEN][TW_STREAM_CHANNELS] = {{\n{rows}\n}};\n"
    )
    return path


def parse_decisions(text: str, source: str) -> Decisions:
    """Decisions from the harness's output; :class:`TargetRunError` on faults or truncated output."""
    ends, scores, flags, confs = [], [], [], []
    end_count = None
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "fault:":
            raise TargetRunError(f"{source}: the target stopped with {line.strip()!r}")
        try:
            if parts[0] == "w" and len(parts) in (4, 5):
                ends.append(int(parts[1]))
                scores.append(int(parts[2]))
                flags.append(int(parts[3]))
                confs += [int(parts[4])] if len(parts) == 5 else []
                continue
            if parts[0] == "end" and len(parts) == 2:
                end_count = int(parts[1])
                continue
        except ValueError:
            pass
        raise TargetRunError(f"{source}: line {no}: unexpected output {line[:120]!r}")
    if end_count is None or end_count != len(ends):
        raise TargetRunError(f"{source}: output ended early ({len(ends)} window lines, end marker "
                             f"{'missing' if end_count is None else end_count})")
    return Decisions(np.array(ends, dtype=np.int64), np.array(scores, dtype=np.int32),
                     np.array(flags, dtype=np.uint8),
                     np.array(confs, dtype=np.uint16) if len(confs) == len(ends) and confs else None)


def count_marked(trace: Path) -> tuple[np.ndarray, dict[str, int]]:
    """Instructions between each ``tw_mark_begin``/``tw_mark_end`` pair of a QEMU ``-d exec`` trace, and
    their split by function name."""
    per_call: list[int] = []
    by_fn: Counter[bytes] = Counter()
    inside, count = False, 0
    with open(trace, "rb") as fh:
        for line in fh:
            fn = line[line.rfind(b" ") + 1 :].rstrip()
            if fn == b"tw_mark_begin":
                inside, count = True, 0
            elif fn == b"tw_mark_end":
                if inside:
                    per_call.append(count)
                inside = False
            elif inside:
                count += 1
                by_fn[fn] += 1
    return (np.array(per_call, dtype=np.int64),
            {k.decode(errors="replace"): v for k, v in by_fn.most_common()})


def count_instructions(trace: Path, decisions: Decisions) -> InstructionCount:
    """Instructions per push and per window from a QEMU ``-d exec`` trace of the harness."""
    pushes, by_fn = count_marked(trace)
    closing = decisions.end_index
    if len(closing) and (len(pushes) <= closing[-1]):
        raise TargetRunError(f"{trace}: trace holds {len(pushes)} pushes, fewer than the "
                             f"{closing[-1] + 1} the decisions imply (is the image built with symbols?)")
    starts = np.concatenate(([0], closing[:-1] + 1)) if len(closing) else np.zeros(0, dtype=np.int64)
    per_window = np.array([pushes[a : b + 1].sum() for a, b in zip(starts, closing, strict=True)],
                          dtype=np.int64)
    return InstructionCount(pushes, closing.astype(np.int64), per_window, by_fn)


def _link_target(cpu: CpuTarget, sources: Sequence[Path], includes: Sequence[Path], elf: Path) -> Path:
    if cpu.machine is None or cpu.linker_script is None:
        raise TargetRunError(f"{cpu.name}: no QEMU board is configured for this core (size only)")
    check_newlib()
    emb = embedded_dir()
    argv = [find_tool("arm-none-eabi-gcc"), *cpu.cflags, *COMMON_CFLAGS, *[f"-I{d}" for d in includes],
            f"-I{emb}", "-nostartfiles", f"-T{emb / cpu.linker_script}", "-Wl,--gc-sections",
            *[str(emb / f) for f in STARTUP_SOURCES], *[str(f) for f in sources], "-lm", "-o", str(elf)]
    run_tool(argv, f"linking the {cpu.name} image")
    return elf


def build_image(model_dir: Path, stream: np.ndarray, workdir: Path, target: str = "cortex-m4") -> Path:
    """Link harness + startup + module + ``stream`` into an ELF image for ``target``'s QEMU board."""
    cpu = get_target(target)
    src = model_source(model_dir)
    write_stream_header(stream, workdir / STREAM_HEADER)
    return _link_target(cpu, [embedded_dir() / "harness.c", src], [workdir, src.parent],
                        workdir / f"{MODEL_STEM}_{cpu.name}.elf")


def _image_flash(elf: Path) -> int:
    out = run_tool([find_tool("arm-none-eabi-size"), str(elf)], f"sizing {elf.name}")
    text, data = out.splitlines()[1].split()[:2]
    return int(text) + int(data)


def run_image(elf: Path, machine: str, timeout: float = 60.0, trace: Path | None = None) -> str:
    """Boot ``elf`` on QEMU board ``machine``; the harness's semihosting output."""
    out_file = elf.with_suffix(".out")
    out_file.unlink(missing_ok=True)
    # Semihosting output goes to a file chardev so QEMU's own diagnostics (stderr) stay separate.
    argv = [find_tool("qemu-system-arm"), "-M", machine, "-nographic", "-no-reboot",
            "-chardev", f"file,id=twout,path={out_file}",
            "-semihosting-config", "enable=on,target=native,chardev=twout", "-kernel", str(elf)]
    if trace is not None:
        argv += [*one_insn_per_tb_args(), "-d", "exec,nochain", "-D", str(trace)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise TargetRunError(f"{elf.name}: QEMU ({machine}) did not finish within {timeout:g} s") from exc
    text = out_file.read_text() if out_file.exists() else ""
    if proc.returncode != 0:
        # A fault line says more than the exit status.
        fault = next((line for line in text.splitlines() if line.startswith("fault:")), None)
        if fault is not None:
            raise TargetRunError(f"{elf.name} on {machine}: the target stopped with {fault.strip()!r}")
        raise TargetRunError(f"{elf.name}: QEMU ({machine}) exited with status {proc.returncode}: "
                             f"{proc.stderr.strip()[-500:]}")
    return text


def run_on_qemu(model_dir: Path, stream: np.ndarray, *, target: str = "cortex-m4", timeout: float = 60.0,
                count: bool = False) -> TargetRun:
    """Build the image for ``stream``, run it on the emulated ``target`` and parse its decisions.

    ``count=True`` also traces every instruction to count them per push and per window (slow: keep the
    stream to a few windows).
    """
    cpu: CpuTarget = get_target(target)
    with tempfile.TemporaryDirectory(prefix="tw-qemu-") as tmp:
        work = Path(tmp)
        elf = build_image(model_dir, stream, work, target)
        trace = work / "trace.log" if count else None
        text = run_image(elf, cpu.machine or "", timeout, trace)
        decisions = parse_decisions(text, f"{elf.name} on {cpu.machine}")
        counts = count_instructions(trace, decisions) if trace is not None else None
        return TargetRun(decisions, counts, _image_flash(elf))


def _run_host(sources: Sequence[Path], includes: Sequence[Path], workdir: Path, repeats: int,
              timeout: float) -> tuple[str, float | None]:
    """Compile ``sources`` for the build machine, run with ``repeats``; (output, ns per window)."""
    exe = workdir / "harness"
    run_tool([find_tool("cc"), *COMMON_CFLAGS, *HOST_CFLAGS, *[f"-I{d}" for d in includes],
              f"-I{embedded_dir()}", *[str(f) for f in sources], "-lm", "-o", str(exe)],
             "compiling the host harness")
    try:
        proc = subprocess.run([str(exe), str(int(repeats))], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise TargetRunError(f"host harness did not finish within {timeout:g} s") from exc
    if proc.returncode != 0:
        raise TargetRunError(
            f"host harness exited with status {proc.returncode}: {proc.stderr.strip()[-500:]}"
        )
    lines = proc.stdout.splitlines()
    ns = None
    if lines and lines[-1].startswith("host_ns_per_window "):
        ns = float(lines.pop().split()[1])
    return "\n".join(lines), ns


def run_on_host(model_dir: Path, stream: np.ndarray, *, repeats: int = 0, timeout: float = 120.0) -> HostRun:
    """Compile the same harness for the build machine and run it on ``stream``.

    ``repeats > 0`` re-runs the whole stream that many times without printing and reports the mean
    wall-clock nanoseconds per window (all pushes of the stream divided by the windows they close).
    """
    src = model_source(model_dir)
    with tempfile.TemporaryDirectory(prefix="tw-host-") as tmp:
        work = Path(tmp)
        write_stream_header(stream, work / STREAM_HEADER)
        text, ns = _run_host([embedded_dir() / "harness.c", src], [work, src.parent], work, repeats, timeout)
    return HostRun(parse_decisions(text, "host harness"), ns)


# -- inference-only runs (peer models) -------------------------------------------------------------
@dataclass(frozen=True)
class InferenceRun:
    """Outputs of ``tw_infer`` for every input vector, with per-call instructions or host time."""

    outputs: np.ndarray  # float32 (n_inputs, n_out)
    per_call: np.ndarray | None  # int64 instructions of each call (emulated runs with count=True)
    ns_per_call: float | None  # host runs with repeats > 0
    image_bytes: int | None = None


def write_inputs_header(inputs: np.ndarray, path: Path) -> Path:
    """Write float input vectors ``(n, width)`` as ``tw_inputs.h`` for ``infer_harness.c``."""
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim != 2 or not len(x) or not np.isfinite(x).all():
        raise DataError(f"inference inputs must be a non-empty finite (n, width) array, got shape {x.shape}")
    rows = ",\n".join("    {" + ", ".join(float(v).hex() + "f" for v in row) + "}" for row in x)
    path.write_text(f"#define TW_INPUTS_LEN {x.shape[0]}\n#define TW_INPUTS_WIDTH {x.shape[1]}\n"
                    f"static const float tw_inputs[TW_INPUTS_LEN][TW_INPUTS_WIDTH] = {{\n{rows}\n}};\n")
    return path


def parse_outputs(text: str, source: str) -> np.ndarray:
    """Float outputs from ``infer_harness.c``'s ``y`` lines (exact: they carry the float bit patterns)."""
    rows, end = [], None
    for no, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        try:
            if parts and parts[0] == "y" and len(parts) >= 2 and int(parts[1]) == len(rows):
                rows.append([int(v) for v in parts[2:]])
                continue
            if parts and parts[0] == "end" and len(parts) == 2:
                end = int(parts[1])
                continue
        except ValueError:
            pass
        if parts:
            raise TargetRunError(f"{source}: line {no}: unexpected output {line[:120]!r}")
    if end is None or end != len(rows):
        raise TargetRunError(f"{source}: output ended early after {len(rows)} results")
    return np.array(rows, dtype=np.int64).astype(np.int32).view(np.float32)


def run_inference(sources: Sequence[Path], includes: Sequence[Path], inputs: np.ndarray, *,
                  target: str | None = "cortex-m4", count: bool = False, repeats: int = 0,
                  timeout: float = 120.0) -> InferenceRun:
    """Run a peer model's ``tw_infer`` (declared in a ``tw_infer.h`` among ``includes``) on ``inputs``.

    ``target=None`` builds for the host (``repeats`` times the calls); otherwise the image runs on the
    target's QEMU board, with exact instructions per call when ``count`` is set.
    """
    harness = embedded_dir() / "infer_harness.c"
    with tempfile.TemporaryDirectory(prefix="tw-infer-") as tmp:
        work = Path(tmp)
        write_inputs_header(inputs, work / "tw_inputs.h")
        if target is None:
            text, ns = _run_host([harness, *sources], [work, *includes], work, repeats, timeout)
            return InferenceRun(parse_outputs(text, "host inference harness"), None, ns)
        cpu = get_target(target)
        elf = _link_target(cpu, [harness, *sources], [work, *includes], work / f"infer_{cpu.name}.elf")
        trace = work / "trace.log" if count else None
        outputs = parse_outputs(run_image(elf, cpu.machine or "", timeout, trace), f"{elf.name} on {cpu.machine}")
        per_call = count_marked(trace)[0] if trace is not None else None
        return InferenceRun(outputs, per_call, None, _image_flash(elf))
