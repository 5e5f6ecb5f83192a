"""One fuzz harness per parser of untrusted input, and the oracle they share.

A harness takes the fuzzer's bytes, turns them into what the parser reads (a file, a string, bytes with
a fixed-up checksum or signature so mutations reach past it) and calls the parser. The oracle: the
parser returns a valid object or raises a :class:`~tinywarden.errors.TinywardenError` whose message is
one non-empty line. Any other exception, and a multi-line or empty message, is a *finding*.

Findings raise :class:`Finding`; with ``TW_FUZZ_FINDINGS`` set to a directory a harness instead records
each distinct finding there (the shortest input per exception type and raising line) and returns, so a
long campaign counts every input instead of stopping at the first finding.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tinywarden.errors import TinywardenError

FINDINGS_ENV = "TW_FUZZ_FINDINGS"
SEGMENT_SEP = b"\x00\x00SEG\x00\x00"  # audit harness: splits the input into LOG.N ... LOG, LOG.head


class Finding(Exception):
    """A parser answered bad input with something other than a one-line TinywardenError."""


@dataclass(frozen=True)
class Target:
    """A fuzz target: its harness (bytes -> None, raising :class:`Finding`) and the parser it drives."""

    name: str
    harness: Callable[[bytes], None]
    parser: str


_SCRATCH: Path | None = None


def scratch() -> Path:
    """A per-process directory (in RAM when /dev/shm exists) for harnesses whose parser reads files."""
    global _SCRATCH
    if _SCRATCH is None:
        base = "/dev/shm" if os.path.isdir("/dev/shm") else None
        _SCRATCH = Path(tempfile.mkdtemp(prefix="twfuzz-", dir=base))
    return _SCRATCH


def _fresh(name: str) -> Path:
    d = scratch() / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir()
    return d


def signature(exc: BaseException) -> str:
    """Exception type and the innermost tinywarden frame it escaped through: one finding per place."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "tinywarden" in f.filename] or frames
    where = f"{Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else "?"
    return f"{type(exc).__name__} at {where}"


def _record(target: str, exc: BaseException, data: bytes) -> None:
    out = Path(os.environ[FINDINGS_ENV])
    out.mkdir(parents=True, exist_ok=True)
    sig = signature(exc)
    key = hashlib.sha1(f"{target}|{sig}".encode()).hexdigest()[:12]
    inp = out / f"{target}-{key}.bin"
    if inp.exists() and inp.stat().st_size <= len(data):
        return
    inp.write_bytes(data)
    (out / f"{target}-{key}.txt").write_text(
        f"target: {target}\nsignature: {sig}\nerror: {type(exc).__name__}: {str(exc)[:500]!r}\n\n"
        + "".join(traceback.format_exception(exc))
    )


_STRICT = False  # seeds_accepted(): a rejection is a finding too


def check(target: str, call: Callable[[], object], data: bytes) -> None:
    """Run ``call`` under the oracle; a finding raises :class:`Finding` or is recorded (see the module doc)."""
    try:
        try:
            call()
        except TinywardenError as exc:
            msg = str(exc)
            if not msg.strip() or "\n" in msg or "\r" in msg:
                raise Finding(f"{type(exc).__name__} message is not one line: {msg[:300]!r}") from exc
            if _STRICT:
                raise Finding(f"valid input rejected: {msg[:300]}") from exc
        except Finding:
            raise
        except RecursionError as exc:  # kept apart: re-raising it from deep inside would recurse again
            raise Finding(f"RecursionError: {exc}") from exc
        except Exception as exc:
            raise Finding(f"{type(exc).__name__}: {str(exc)[:300]}") from exc
    except Finding as finding:
        if FINDINGS_ENV not in os.environ:
            raise
        _record(target, finding.__cause__ or finding, data)


# ------------------------------------------------------------------------------------------- bundles

_KEY_SEED = bytes(range(32))  # a fixed key: inputs and reproducers stay valid across runs


def signing_key():  # noqa: ANN201 - cryptography's key type, imported lazily
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.from_private_bytes(_KEY_SEED)


def _bundle(data: bytes) -> None:
    from tinywarden.bundle import parse_bundle, public_key_of, verify_bundle

    def call() -> None:
        parse_bundle(data, source="fuzz.twbundle")
        verify_bundle(data, public_key_of(signing_key()), source="fuzz.twbundle")

    check("bundle", call, data)


def resign(unsigned: bytes) -> bytes:
    """``unsigned`` followed by a valid SIGN section by :func:`signing_key` (as :func:`sign_bundle` writes)."""
    from tinywarden.bundle import SIGN_DOMAIN, public_key_of

    key = signing_key()
    sig = key.sign(SIGN_DOMAIN + hashlib.sha256(unsigned).digest())
    return unsigned + b"SIGN" + (96).to_bytes(4, "big") + public_key_of(key) + sig


def _bundle_signed(data: bytes) -> None:
    """The input as everything before SIGN, signed by the trusted key: mutations reach past the signature."""
    from tinywarden.bundle import public_key_of, verify_bundle

    signed = resign(data)
    check("bundle_signed", lambda: verify_bundle(signed, public_key_of(signing_key()), source="fuzz"), signed)


# ---------------------------------------------------------------------------------------- model files


def _modelfile(data: bytes) -> None:
    """The input as a ``.twb`` body; the harness appends its SHA-256 so mutations reach the header."""
    from tinywarden.modelfile import pipeline_from_bytes

    whole = data + hashlib.sha256(data).digest()
    check("modelfile", lambda: pipeline_from_bytes(whole, "fuzz.twb"), whole)


# ------------------------------------------------------------------------------------------ policies


def _policy(data: bytes) -> None:
    from tinywarden.codegen.respond import c_tables
    from tinywarden.respond.engine import compile_tables
    from tinywarden.respond.policy import load_policy

    path = scratch() / "policy.toml"
    path.write_bytes(data)

    def call() -> None:
        p = load_policy(path)
        # What a device does next with a policy it accepted: its tables, its C tables, its critical networks.
        compile_tables(p, 1.0)
        c_tables(p, 1000)
        p.critical.networks()

    check("policy", call, data)


# -------------------------------------------------------------------------------------------- spool


def _spool(data: bytes) -> None:
    """A spooled incident file read back by :class:`Spool` (peek quarantines what it cannot read)."""
    from tinywarden.agent.escalate import Incident, Spool

    def call() -> None:
        d = _fresh("spool")
        (d / "000000000001-t002.json").write_bytes(data)
        corrupt: list[str] = []
        spool = Spool(d, on_corrupt=lambda _p, reason: corrupt.append(reason))
        got = spool.peek()
        for reason in corrupt:
            if "\n" in reason:
                raise Finding(f"quarantine reason is not one line: {reason[:300]!r}")
        if got is not None and Incident.from_json(got[1].to_json()) != got[1]:
            raise Finding("incident does not survive to_json/from_json")

    check("spool", call, data)


# ---------------------------------------------------------------------------------------- audit log


def _audit(data: bytes) -> None:
    """Pieces split at :data:`SEGMENT_SEP`: rotated files oldest first, the live log, then ``LOG.head``."""
    from tinywarden.audit import AuditLog, verify

    def call() -> None:
        d = _fresh("audit")
        log = d / "audit.log"
        parts = data.split(SEGMENT_SEP)
        head = parts.pop() if len(parts) > 1 else None
        for i, part in enumerate(parts):
            n = len(parts) - 1 - i
            (d / (log.name if n == 0 else f"{log.name}.{n}")).write_bytes(part)
        if head is not None:
            (d / f"{log.name}.head").write_bytes(head)
        report = verify(log)
        for problem in report.problems:
            if "\n" in str(problem):
                raise Finding(f"verify problem is not one line: {str(problem)[:300]!r}")
        # The agent opens the log it finds (recovering a crash's partial line) and appends to it.
        AuditLog(log, fsync=False).append("fuzz", {"ok": True}, time=1.0)

    check("audit", call, data)


# -------------------------------------------------------------------------------------------- telemetry


def _telemetry(suffix: str) -> Callable[[bytes], None]:
    def harness(data: bytes) -> None:
        from tinywarden.telemetry.io import read_series

        path = scratch() / f"telemetry{suffix}"
        path.write_bytes(data)
        check(suffix.lstrip("."), lambda: read_series(path), data)

    return harness


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("bundle", _bundle, "tinywarden.bundle.parse_bundle / verify_bundle"),
        Target("bundle_signed", _bundle_signed, "tinywarden.bundle.verify_bundle (validly signed input)"),
        Target("modelfile", _modelfile, "tinywarden.modelfile.pipeline_from_bytes (.twb)"),
        Target("policy", _policy, "tinywarden.respond.policy.load_policy (+ engine/C tables)"),
        Target("spool", _spool, "tinywarden.agent.escalate.Spool.peek / Incident.from_json"),
        Target("audit", _audit, "tinywarden.audit.verify / AuditLog open+append"),
        Target("csv", _telemetry(".csv"), "tinywarden.telemetry.io.read_series (.csv)"),
        Target("parquet", _telemetry(".parquet"), "tinywarden.telemetry.io.read_series (.parquet)"),
    )
}


def seeds_accepted(target: str, inputs: list[bytes]) -> None:
    """Raise :class:`Finding` unless every input passes ``target``'s harness *and* its parser accepts it."""
    global _STRICT
    saved, env = _STRICT, os.environ.pop(FINDINGS_ENV, None)
    _STRICT = True
    try:
        for data in inputs:
            TARGETS[target].harness(data)
    finally:
        _STRICT = saved
        if env is not None:
            os.environ[FINDINGS_ENV] = env
