"""Response commands: ``respond`` (replay scores through a policy) and ``audit verify`` (see docs/audit.md).

With ``--model`` and ``--telemetry``, ``respond`` also replays the fail-safe guard: a window whose score is
missing (NaN: the model path faulted) is judged by the model file's rule-based bounds on its raw samples.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table
from rich.text import Text

from tinywarden.cli.app import app, console, print_advice, say, show
from tinywarden.cli.core import note_time_unit
from tinywarden.errors import ConfigError

if TYPE_CHECKING:
    from tinywarden.pipeline import GuardVerdict, Pipeline
    from tinywarden.respond.engine import ActionEvent, ResponseEngine

audit_app = typer.Typer(help="Inspect the tamper-evident audit log.", no_args_is_help=True)
app.add_typer(audit_app, name="audit")

TIER_LABELS = ("none", "alert", "constrain", "harden")


def _when(t: float) -> str:
    """Epoch seconds as UTC ISO time; small values (a relative clock) stay as seconds."""
    if t < 1e8:
        return f"{t:.6g} s"
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@app.command()
def respond(
    policy: Path = typer.Option(..., "--policy", help="Response policy (TOML, see docs/policy.md)."),
    scores: Path = typer.Option(
        ..., "--scores", help="CSV written by `tinywarden score`, or any with columns timestamp (s) and score."
    ),
    threshold: float | None = typer.Option(None, "--threshold", help="Detector threshold."),
    model: Path | None = typer.Option(None, "--model", help="Model file (.twb) whose threshold to use."),
    telemetry: Path | None = typer.Option(
        None,
        "--telemetry",
        help="With --model: the raw telemetry the scores came from; a window with no score (NaN) is judged "
        "by the model's fail-safe bounds instead of counting as a fault.",
    ),
    audit: Path | None = typer.Option(None, "--audit", help="Append the reasons for every event here."),
    audit_key: Path | None = typer.Option(
        None,
        "--audit-key",
        envvar="TINYWARDEN_AUDIT_KEY",
        help="With --audit: the key file that keys the log (made, mode 0600, if missing); keep it outside "
        "the log's folder.",
    ),
    state: Path | None = typer.Option(
        None, "--state", help="Engine state file: resume a replay after a crash, keep state after it."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per event instead of a table."),
    notes: bool = typer.Option(False, "--notes", help="Also show faults, recoveries and clock jumps."),
    real: bool = typer.Option(
        False,
        "--real",
        help="Carry actions out on this machine (default: dry run, records what it would do).",
    ),
    netns: str | None = typer.Option(
        None, "--netns", help="With --real: run commands in this network namespace."
    ),
) -> None:
    """Replay a score stream through the response engine in simulated time and print the action timeline."""
    from tinywarden.audit import AuditLog, load_key
    from tinywarden.respond.actuators import CommandRunner, actuator_for, build_actuators
    from tinywarden.respond.engine import ResponseEngine, SimulatedClock
    from tinywarden.respond.policy import load_policy
    from tinywarden.respond.replay import read_scores, replay

    if (threshold is None) == (model is None):
        raise ConfigError("give exactly one of --threshold or --model")
    if netns is not None and not real:
        raise ConfigError("--netns only applies with --real")
    if telemetry is not None and model is None:
        raise ConfigError("--telemetry needs --model (the fail-safe bounds live in the model file)")
    if audit is not None and audit_key is None:
        raise ConfigError(
            "--audit needs --audit-key (or TINYWARDEN_AUDIT_KEY): the key file that makes the log tamper-evident, "
            "kept outside the log's folder"
        )
    pol = load_policy(policy)
    print_advice(pol)
    scored = read_scores(scores)
    rows = scored.rows
    note_time_unit(str(scores), scored.time_unit)
    pipeline = None
    if model is not None:
        from tinywarden.modelfile import load_pipeline  # only the CLI knows about models; the engine does not

        pipeline = load_pipeline(str(model))
        threshold = scores_threshold(pipeline, model, scores, scored.threshold)
        model_id = hashlib.sha256(model.read_bytes()).hexdigest()[:16]
    else:
        model_id = "none"
        if scored.threshold is not None and scored.threshold != threshold:
            say("note", f"{scores} was scored against threshold {scored.threshold:.10g}; "
                        f"replaying with --threshold {threshold:.10g}")
    assert threshold is not None
    prefix = ["ip", "netns", "exec", netns] if netns else []
    engine = ResponseEngine(
        pol,
        threshold,
        actuators=build_actuators(pol, dry_run=not real, prefix=prefix),
        clock=SimulatedClock(),
        audit=AuditLog(audit, key=load_key(audit_key, create=True)) if audit and audit_key else None,
        model_id=model_id,
        state_path=state,
        # an action of a replaced policy still to revert that the state file names, built as the actuators are
        rebuild=lambda spec, critical: actuator_for(spec, critical, CommandRunner(prefix), dry_run=not real),
    )
    if telemetry is not None:
        assert pipeline is not None
        if pipeline.guard_ is None:
            say("", pipeline.guard_note_)
        timeline = guarded_replay(engine, rows, RawWindows(pipeline, telemetry), resume=state is not None)
    else:
        timeline = replay(engine, rows, resume=state is not None)
    events = [e for e in timeline if notes or e.event != "note"]
    if as_json:
        for e in events:
            typer.echo(json.dumps(e.to_dict(), allow_nan=False))
        return
    # the policy's name and version, and the reasons and statuses (a command's stderr), are text, never markup
    table = Table(title=Text(f"{pol.name} v{pol.version}: {len(rows)} windows, threshold {threshold:.6g}"))
    for col in ("time", "tier", "event", "action", "reason", "status"):
        table.add_column(col, overflow="fold")
    for e in events:
        style = "dim" if e.event == "note" else ("red" if e.event == "apply" else "green")
        table.add_row(_when(e.time), f"{e.tier} {TIER_LABELS[e.tier]}", e.event, e.action or "-", Text(e.reason),
                      Text(e.status), style=style)  # fmt: skip
    console.print(table)
    show(f"final tier: {engine.tier} ({TIER_LABELS[engine.tier]})" + (f"; audit: {audit}" if audit else ""))


def scores_threshold(pipeline: Pipeline, model: Path, scores: Path, recorded: float | None) -> float:
    """The model's threshold for the scores in ``scores``: its float one, or its int8 program's when the file
    records that it holds the integer scores of ``score --int8``. A file scored against some other threshold
    (another model, an older training) is refused rather than replayed against the wrong scale."""
    if recorded is None or recorded == float(pipeline.threshold_):
        return float(pipeline.threshold_)
    from tinywarden.errors import TinywardenError
    from tinywarden.quantize import load_program

    try:
        int8_threshold: float | None = float(load_program(pipeline, str(model)).threshold)
    except TinywardenError:
        int8_threshold = None
    if recorded == int8_threshold:
        say("note", f"{scores} holds int8 scores: replaying against {model}'s integer "
                    f"threshold {int8_threshold:.10g}")
        return int8_threshold
    int8_text = "" if int8_threshold is None else f" (int8: {int8_threshold:.10g})"
    raise ConfigError(f"{scores} was scored against threshold {recorded:.10g} but {model} has threshold "
                      f"{float(pipeline.threshold_):.10g}{int8_text}: score the telemetry with this model again")


class RawWindows:
    """The raw windows of a telemetry file, found by the timestamp of their last row (a scores file's rows)."""

    def __init__(self, pipeline: Pipeline, path: Path) -> None:
        from tinywarden.telemetry import read_series

        series = read_series(str(path))
        self.pipeline = pipeline
        self.values = pipeline.select_channels(series)
        self.source = series.source
        self.row_at = {float(t): i for i, t in enumerate(series.timestamps)}

    def judge(self, t: float) -> GuardVerdict:
        """The fail-safe guard's verdict on the window ending at time ``t``."""
        from tinywarden.pipeline import GuardVerdict

        i = self.row_at.get(float(t))
        w = self.pipeline.window
        if i is None:
            return GuardVerdict(None, math.nan, f"{self.source} has no row at time {t!r}")
        if i < w - 1:
            return GuardVerdict(None, math.nan, f"{self.source}: only {i + 1} rows up to time {t!r}, window is {w}")
        return self.pipeline.judge_window(self.values[i - w + 1 : i + 1])


def guarded_replay(
    engine: ResponseEngine, rows: list[tuple[float, float]], windows: RawWindows, resume: bool = False
) -> list[ActionEvent]:
    """Like :func:`tinywarden.respond.replay.replay`, but a NaN score's window goes to the fail-safe bounds."""
    events: list[ActionEvent] = []
    skip = engine.windows if resume else 0
    for i, (t, score) in enumerate(rows):
        if i < skip:
            continue
        if math.isfinite(score):
            events += engine.observe(score, at=t)
            continue
        v = windows.judge(t)
        events += engine.observe_guarded(v.violation, f"non-finite score {score!r}", at=t, detail=v.reason,
                                         score_fault=True)  # fmt: skip
    return events


@audit_app.command("verify")
def audit_verify(
    log: Path = typer.Argument(..., help="The audit log (rotated files LOG.1 ... are found)."),
    key: Path | None = typer.Option(
        None, "--key", envvar="TINYWARDEN_AUDIT_KEY", help="The log's key file: check every MAC, not only the links."
    ),
    anchor: list[str] = typer.Option(  # noqa: B008
        [], "--anchor", help="SEQ:HASH the fleet holds (an incident's audit_head): a rewound log fails (repeatable)."
    ),
) -> None:
    """Check the keyed chain; name every forged, edited, reordered, removed or truncated record.

    Exit 0: keyed and intact; 1: tampered; 3: nothing found, but nothing proven (an unkeyed log, or no --key).
    """
    from tinywarden.audit import load_key, parse_anchor, verify

    anchors = [parse_anchor(a) for a in anchor]
    report = verify(log, key=load_key(key) if key is not None else None, anchors=anchors)
    for p in report.problems:
        colour = {"tamper": "red", "crash": "yellow"}.get(p.severity, "dim")
        say("", p, colour)
    span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "no records"
    what = f"{report.records} records ({span}) in {len(report.files)} file(s)"
    checked = f"; {len(anchors)} anchor(s) held" if anchors else ""
    verdict = report.verdict
    if verdict == "intact":
        show(f"OK: {what}; keyed chain intact (key id {report.key_id}){checked}")
        return
    if verdict == "tampered":
        show(f"TAMPERED: {what}")
        raise typer.Exit(1)
    if verdict == "unkeyed":
        show(f"UNKEYED: {what}; no damage found, but integrity only against accidents{checked}")
    else:
        show(f"UNVERIFIED: {what}; links hold but MACs not checked: pass --key{checked}")
    raise typer.Exit(3)
