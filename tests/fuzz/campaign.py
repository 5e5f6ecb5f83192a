"""Run one fuzz target for a number of inputs in a subprocess and report what it tried and found.

Both kinds of target speak libFuzzer: a Python target runs as ``python -m fuzz.run NAME`` (atheris), a C
target is a libFuzzer binary built by :mod:`fuzz.native`. :func:`run_campaign` passes the run budget,
a fixed ``-seed``, a per-input ``-timeout`` (an input slower than that is a *hang*) and a memory limit,
and parses libFuzzer's status lines for the coverage (``cov:`` edges/lines, ``ft:`` features) and
the final statistics. A Python target records its findings in ``TW_FUZZ_FINDINGS`` and goes on; a
process that dies (a C sanitizer report, a hang, an interpreter crash) leaves a ``crash-``/``timeout-``
artifact, which is recorded as a finding, and the campaign resumes from its corpus with the runs left.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fuzz.targets import FINDINGS_ENV

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"

# Tokens libFuzzer splices into inputs: the values that break number and structure handling.
JSON_DICT = ['"NaN"', '"Infinity"', '"-Infinity"', '"1e400"', '"-1e400"', f'"{"9" * 400}"', '"-0"', '"null"',
             '"true"', '"[]"', '"{}"', '"[[[[[[[[[[[[[[[[[[[["', '"\\"\\\\ud800\\""', '"\\"\\\\u0000\\""', '"\\x00"']
TOML_DICT = ['"inf"', '"-inf"', '"nan"', '"1e400"', f'"{"9" * 400}"', '"0x7fffffffffffffff"', '"\\"\\"\\""',
             '"[["', '"]]"', '"= {}"', '"= []"', '"1979-05-27T07:32:00Z"', '"\\"::/0\\""', '"\\"0.0.0.0/0\\""',
             '"\\"eth0\\""', '"type = \\"log\\""', '"consecutive = "', '"k = 33"', '"n = 0"', '"[critical]"']
CSV_DICT = ['"nan"', '"inf"', '"-inf"', '"1e400"', '"NaN"', '"9999-12-31T23:59:59-23:59"',
            '"0001-01-01T00:00:00+23:59"', '"timestamp"', '"label"', '"attack"', '"\\x00"', '"\\""', '"\\x0d\\x0a"']
DICTS = {"bundle": JSON_DICT, "bundle_signed": JSON_DICT, "modelfile": JSON_DICT, "spool": JSON_DICT,
         "audit": JSON_DICT, "policy": TOML_DICT, "csv": CSV_DICT, "parquet": CSV_DICT}

_STATUS = re.compile(r"^#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+)(?: corp: (\d+)/\S+)?.*?exec/s: (\d+)", re.M)
_DONE = re.compile(r"Done (\d+) (?:runs )?in (\d+) second")
_STAT = re.compile(r"^stat::(\w+):\s+(\d+)", re.M)
_ARTIFACT = re.compile(r"Test unit written to (\S+)")


@dataclass
class Result:
    """One campaign: inputs executed, rate, coverage, and every finding (crashes, hangs, tracebacks)."""

    target: str
    kind: str  # "python" (atheris) or "c" (libFuzzer)
    inputs: int = 0
    seconds: float = 0.0
    cov: int = 0  # atheris: instrumented lines/branches; libFuzzer: covered edges
    features: int = 0
    corpus: int = 0
    crashes: int = 0  # processes that died: sanitizer reports, signals, uncaught errors
    hangs: int = 0
    tracebacks: int = 0  # Python findings recorded by the oracle (distinct places)
    #: Python processes that died after libFuzzer's "Done" line, every run complete, with an artifact that a fresh
    #: process runs through the harness cleanly: the interpreter's exit (a native library's threads torn down),
    #: not an input. Kept apart from the findings and reported, with the artifact, in ``exit_notes``.
    exit_crashes: int = 0
    exit_notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)
    restarts: int = 0

    @property
    def exec_per_s(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "exec_per_s": round(self.exec_per_s, 1)}


def _env(findings: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env[FINDINGS_ENV] = str(findings)
    env.setdefault("TINYWARDEN_DATA", str(TESTS.parent.parent / "shared" / "data"))
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = "1"
    env["ASAN_OPTIONS"] = "detect_leaks=0:abort_on_error=0:allocator_may_return_null=1"
    env["UBSAN_OPTIONS"] = "print_stacktrace=1:halt_on_error=1"
    return env


def run_campaign(
    target: str,
    seeds: Path,
    work: Path,
    *,
    runs: int,
    max_time: int = 0,
    seed: int = 1,
    timeout_s: int = 10,
    max_len: int = 16384,
    command: list[str] | None = None,
    max_restarts: int = 5,
) -> Result:
    """Fuzz ``target`` (a Python target name, or a C target whose binary is ``command``) for ``runs`` inputs.

    ``max_time`` (seconds, 0 = none) bounds the whole campaign: a long run reports how far it got. The
    new corpus goes to ``work/corpus``, findings and artifacts to ``work/findings``.
    """
    kind = "c" if command else "python"
    corpus, findings, artifacts = work / "corpus", work / "findings", work / "artifacts"
    for d in (corpus, findings, artifacts):
        d.mkdir(parents=True, exist_ok=True)
    base = command or [sys.executable, "-m", "fuzz.run", target]
    flags = [f"-timeout={timeout_s}", "-rss_limit_mb=3072", f"-max_len={max_len}", "-print_final_stats=1",
             f"-artifact_prefix={artifacts}/"]
    if target in DICTS:
        dict_file = work / "tokens.dict"
        dict_file.write_text("\n".join(DICTS[target]) + "\n")
        flags.append(f"-dict={dict_file}")
    res = Result(target, kind)
    seen_artifacts: set[str] = set()
    start = time.monotonic()
    log = (work / "fuzz.log").open("w")
    while res.inputs < runs:
        left = runs - res.inputs
        budget = [f"-atheris_runs={left + 1}" if kind == "python" else f"-runs={left}"]
        if max_time:
            remaining = int(max_time - (time.monotonic() - start))
            if remaining <= 0:
                break
            budget.append(f"-max_total_time={remaining}")
        proc = subprocess.run([*base, *flags, *budget, f"-seed={seed + res.restarts}", str(corpus), str(seeds)],
                              env=_env(findings), cwd=work, capture_output=True, text=True, errors="replace")
        out = proc.stdout + proc.stderr
        log.write(out[-200_000:])
        statuses = _STATUS.findall(out)
        stats = dict(_STAT.findall(out))
        done = _DONE.search(out)
        if "number_of_executed_units" in stats:
            executed = int(stats["number_of_executed_units"])
        elif done:
            executed = int(done.group(1))
        elif statuses:
            executed = int(statuses[-1][0])
        else:
            executed = 0
        res.inputs += executed
        if statuses:
            res.cov = max(res.cov, int(statuses[-1][1]))
            res.features = max(res.features, int(statuses[-1][2]))
            res.corpus = max(res.corpus, int(statuses[-1][3] or 0))
        for path in _ARTIFACT.findall(out):
            if path in seen_artifacts:
                continue
            seen_artifacts.add(path)
            name = Path(path).name
            is_hang = name.startswith("timeout-") or "ALARM: working on the last Unit" in out
            if not is_hang and kind == "python" and died_after_done(out) and not reproduces(target, Path(path),
                                                                                            _env(findings)):
                res.exit_crashes += 1
                res.exit_notes.append(f"died at exit after every run, input does not reproduce: {path}")
                continue
            res.hangs += is_hang
            res.crashes += not is_hang
            headline = _headline(out, proc.returncode)
            res.findings.append(f"{'hang' if is_hang else 'crash'}: {headline[:300]} (reproducer {path})")
        if proc.returncode == -signal.SIGALRM and done and not _ARTIFACT.search(out):
            # atheris only: libFuzzer's timeout alarm can fire while the interpreter exits after "Done"; a real
            # hang prints "ALARM: working on the last Unit" and leaves a timeout- artifact instead.
            break
        if proc.returncode == 0 or executed == 0 or res.restarts >= max_restarts:
            if proc.returncode != 0 and not _ARTIFACT.search(out):
                res.crashes += 1
                res.findings.append(f"crash: exit {proc.returncode} without an artifact: {out[-500:]!r}")
            break
        res.restarts += 1
    log.close()
    res.seconds = time.monotonic() - start
    for txt in sorted(findings.glob("*.txt")):
        head = txt.read_text().splitlines()
        sig = next((ln.split(": ", 1)[1] for ln in head if ln.startswith("signature: ")), "?")
        err = next((ln.split(": ", 1)[1] for ln in head if ln.startswith("error: ")), "?")
        res.tracebacks += 1
        res.findings.append(f"traceback: {sig}: {err} (reproducer {txt.with_suffix('.bin')})")
    return res


def died_after_done(out: str) -> bool:
    """Did the process die (libFuzzer's "deadly signal") only after its "Done N runs" line, every run complete?

    >>> died_after_done("#2 pulse\nDone 2001 in 1 second(s)\nterminate called\n==1== ERROR: libFuzzer: deadly signal")
    True
    >>> died_after_done("#2 pulse\n==1== ERROR: libFuzzer: deadly signal\nDone 2001 in 1 second(s)")
    False
    """
    done, dead = _DONE.search(out), out.find("ERROR: libFuzzer: deadly signal")
    return done is not None and dead > done.end()


def reproduces(target: str, artifact: Path, env: dict[str, str], timeout_s: float = 60.0) -> bool:
    """Does ``artifact`` kill, hang or break the oracle of Python ``target``'s harness in a fresh process?"""
    code = ("import sys; from fuzz.targets import TARGETS; "
            "TARGETS[sys.argv[1]].harness(open(sys.argv[2], 'rb').read())")
    strict = {k: v for k, v in env.items() if k != FINDINGS_ENV}  # a broken oracle raises instead of recording
    try:
        proc = subprocess.run([sys.executable, "-c", code, target, str(artifact)], env=strict, capture_output=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return True
    return proc.returncode != 0


def _headline(out: str, returncode: int) -> str:
    """The most telling line of a dead process's output: the broken contract, UB or sanitizer report."""
    for marker in ("contract broken:", "runtime error:", "ERROR: AddressSanitizer", "Finding:",
                   "Uncaught Python exception", "ERROR:"):
        for line in out.splitlines():
            if marker in line:
                return line.strip()
    return f"exit {returncode}"
