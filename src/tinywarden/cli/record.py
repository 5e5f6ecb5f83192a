"""The ``record`` command: sample this host's live telemetry, as the agent does, into a folder to train on."""

from __future__ import annotations

import signal
from pathlib import Path

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tinywarden.cli.app import app, console, show


@app.command()
def record(
    out: Path = typer.Option(..., "--out", help="Folder of the recording (created; a second run appends files)."),
    rate: float = typer.Option(1.0, "--rate", help="Sampling rate in Hz (the agent's --rate)."),
    interface: list[str] = typer.Option(  # noqa: B008
        [], "--interface", help="Network interface to sample (repeatable; default: every non-loopback one)."
    ),
    duration: str | None = typer.Option(None, "--duration", help="How long to record, e.g. 90s, 15m, 2h, 1d "
                                        "(default: until Ctrl-C or SIGTERM)."),
    fmt: str = typer.Option("parquet", "--format", help="File format: parquet or csv."),
    rotate: str = typer.Option("1h", "--rotate", help="Start a new file after this long."),
    flush: str = typer.Option("10s", "--flush", help="Write to disk this often (a crash loses at most this)."),
) -> None:
    """Record live telemetry with the agent's sampler; `train`, `tune`, `evaluate` and `agent --replay` read
    the folder as one series. One recorder a folder: a second one on the same folder is refused."""
    from tinywarden.telemetry.live import LiveSampler, sampling_period
    from tinywarden.telemetry.record import Recorder, RecordStats, parse_duration

    period = sampling_period(rate)
    seconds = parse_duration(duration) if duration is not None else None
    sampler = LiveSampler(period, list(interface) or None)
    recorder = Recorder(sampler, out, fmt=fmt, rotate_s=parse_duration(rotate, "--rotate"),
                        flush_s=parse_duration(flush, "--flush"))
    st = recorder.stats
    if st.resumed_after is not None:
        show(f"{out}: continuing the recording already there (new files only)")
    stop = False

    def request_stop(*_: object) -> None:
        nonlocal stop
        stop = True

    previous = signal.signal(signal.SIGTERM, request_stop)
    columns = [SpinnerColumn(), TextColumn("{task.description}")]
    if seconds is not None:
        columns += [BarColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("recording", total=seconds * rate if seconds else None)

        shown = 0

        def progress(s: RecordStats) -> None:
            nonlocal shown
            for text in s.notes[shown:]:
                show(text, label="note", style="yellow", out=bar.console)
            shown = len(s.notes)
            bar.update(task, completed=s.rows, description=(
                f"recording {len(s.channels)} channels at {rate:g} Hz: {s.rows} rows, {s.rows_flushed} on disk, "
                f"{s.gaps} gap(s), {len(s.files)} file(s)"))

        try:
            recorder.run(seconds, progress=progress, should_stop=lambda: stop)
        except KeyboardInterrupt:
            pass  # run() has flushed what it had
        finally:
            signal.signal(signal.SIGTERM, previous)
            recorder.close()
    for text in st.notes[shown:]:
        show(text, label="note", style="yellow")
    t = Table(title=Text(f"recording {out}"), show_header=False)  # a path, never markup
    t.add_row("rows", f"{st.rows_flushed} written ({st.rows} sampled)")
    t.add_row("gaps", f"{st.gaps} (spacing > 2 sampling periods{', counting the resume' if st.resumed_after else ''})")
    t.add_row("channels", Text(f"{len(st.channels)}: {', '.join(st.channels)}"))
    t.add_row("files", Text(", ".join(f.name for f in st.files) or "none"))
    if st.notes:
        t.add_row("notes", f"{len(st.notes) + st.notes_dropped} (clock steps, interfaces gone or back; listed above)")
    console.print(t)
    if st.stopped is not None:
        show(st.stopped, label="stopped", style="bold red")
        raise typer.Exit(1)
