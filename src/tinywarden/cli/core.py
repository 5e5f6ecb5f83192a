"""Core pipeline commands: train, score, evaluate, demo."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
import typer.core
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from tinywarden.cli.app import app, console, err_console, say, show
from tinywarden.errors import ConfigError
from tinywarden.likelihood import SLOW_SHIFT
from tinywarden.telemetry.series import GapWatch, Series, dropped_note, gap_note, time_unit_note

if TYPE_CHECKING:
    from tinywarden.respond.policy import Policy


class FamilyHelp(typer.core.TyperCommand):
    """A command whose family option (``--model``, ``--detector``) help lists the registered detector families
    and names the default, both read from the registry when the help is shown (importing the detectors at
    start-up would slow every command down)."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        from tinywarden.detectors import DEFAULT_FAMILY, REGISTRY

        for param in self.params:
            if param.name in FAMILY_OPTIONS and param.param_type_name == "option":
                param.help = (f"{FAMILY_OPTIONS[param.name]}: {', '.join(REGISTRY)} "  # type: ignore[attr-defined]
                              f"(default {DEFAULT_FAMILY})")
        super().format_help(ctx, formatter)


#: The options that name a detector family, and the start of their help.
FAMILY_OPTIONS = {"model": "Detector family", "detector": "Detector shown in the full report, exported and responded "
                  "with"}


def family_or_default(name: str | None) -> str:
    """``name``, or the default pipeline's family when no family was given."""
    from tinywarden.detectors import DEFAULT_FAMILY

    return DEFAULT_FAMILY if name is None else name


DataArg = Annotated[str, typer.Argument(help="Telemetry file: .csv, .parquet, or a shared-data .npz[:train|:test]")]
ModelArg = Annotated[Path, typer.Argument(help="Model file (.twb) written by `tinywarden train`")]
DropOpt = Annotated[bool, typer.Option(
    "--drop-unordered", help="Drop rows whose timestamp is not later than every row before them")]
LikelihoodGateOpt = Annotated[float | None, typer.Option(
    "--likelihood-gate", help=f"Confidence scale: levels over this z teach it {2**SLOW_SHIFT}x more slowly, so one "
    "anomaly does not widen the scale the next is judged on (default: none, every level teaches alike)")]

TARGET_FPR_HELP = ("Window false-positive rate to calibrate for; one rarer than 1 in the held-out normal windows is "
                   "extrapolated from their tail (a peaks-over-threshold fit)")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["hidden=16,4", "lr=0.01"]`` -> ``{"hidden": (16, 4), "lr": 0.01}`` (JSON values, commas make tuples)."""
    params: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE")

        def one(tok: str) -> Any:
            try:
                return json.loads(tok)
            except json.JSONDecodeError:
                return tok

        params[key.strip()] = tuple(one(t) for t in text.split(",") if t) if "," in text else one(text)
    return params


def note_time_unit(source: str, unit: str) -> None:
    """Tell the user, on stderr, that numeric times of ``source`` were not epoch seconds but ``unit``."""
    note = time_unit_note(unit)
    if note:
        say("note", f"{source}: {note}")


def report_gaps(series: Series) -> None:
    """Tell the user, on stderr, what the data had that was not used as it is."""
    note_time_unit(series.source, series.meta.get("time_unit", "s"))
    if series.meta.get("skipped_files"):
        say("warning", f"{series.source}: skipped unreadable file(s): {series.meta['skipped_files']}")
    note = dropped_note(int(series.meta.get("dropped_rows", 0) or 0))
    if note:
        say("note", f"{series.source}: {note}")
    note = gap_note(series.gaps())
    if note:
        say("note", f"{series.source}: {note}")


def report_channels(pipeline: Any, series: Series) -> None:
    """Say which columns of ``series`` a fitted model scores, and warn about those it leaves out.

    Silent when the file has exactly the model's channels; a missing one is the DataError of scoring.
    """
    ignored = pipeline.ignored_channels(series)
    if not ignored and series.channels == tuple(pipeline.channels_):
        return
    say("note", f"{series.source}: scoring the model's {len(pipeline.channels_)} channel(s) "
                f"by name: {', '.join(pipeline.channels_)}")
    if ignored:
        say("warning", f"{series.source}: ignoring {len(ignored)} channel(s) the model was "
                       f"not trained on: {', '.join(ignored)}")


def training_progress(label: str) -> Progress:
    return Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                    console=err_console, transient=True)


def fit_with_progress(pipeline: Any, series: Series, label: str) -> Any:
    with training_progress(label) as bar:
        task = bar.add_task(label, total=1)

        def tick(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        pipeline.fit(series, progress=tick)
        bar.update(task, completed=1, total=1)
    return pipeline


@app.command(cls=FamilyHelp)
def train(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the model file")],
    model: Annotated[str | None, typer.Option(help="Detector family (the list and the default are filled in when "
                                                   "help is shown)")] = None,
    window: Annotated[int, typer.Option(help="Samples per window")] = 128,
    stride: Annotated[int, typer.Option(help="Samples between window starts")] = 64,
    features: Annotated[str, typer.Option(help="Comma-separated feature names (default: all)")] = "",
    target_fpr: Annotated[float, typer.Option(help=TARGET_FPR_HELP)] = 0.01,
    k: Annotated[int, typer.Option(help="Persistence: alarms need k of the last n windows over threshold")] = 2,
    n: Annotated[int, typer.Option(help="Persistence window length")] = 3,
    train_fraction: Annotated[float, typer.Option(
        help="Use only the first fraction of rows (train + calibrate) when one file holds train and test")] = 1.0,
    param: Annotated[list[str], typer.Option(help="Detector parameter KEY=VALUE (repeatable)")] = [],  # noqa: B006
    likelihood_gate: LikelihoodGateOpt = None,
    drop_unordered: DropOpt = False,
) -> None:
    """Learn normal behaviour from DATA (rows labelled 1 are left out) and save a calibrated model."""
    from tinywarden.detectors import make_detector
    from tinywarden.features import DEFAULT_FEATURES
    from tinywarden.modelfile import save_pipeline
    from tinywarden.pipeline import Pipeline
    from tinywarden.telemetry import read_series

    model = family_or_default(model)
    series = read_series(data, split="train", drop_unordered=drop_unordered)
    if not 0.0 < train_fraction <= 1.0:
        raise ConfigError(f"--train-fraction must be in (0, 1], got {train_fraction}")
    if train_fraction < 1.0:
        series, _ = series.split(train_fraction)
    report_gaps(series)
    feats = tuple(f.strip() for f in features.split(",") if f.strip()) or DEFAULT_FEATURES
    pipeline = Pipeline(make_detector(model, **parse_params(param)), window, stride, feats, target_fpr, k, n,
                        likelihood_gate=likelihood_gate)
    pipeline.check_width(series)
    fit_with_progress(pipeline, series, f"training {model}")
    pipeline.train_summary_["train_fraction"] = train_fraction
    from tinywarden.quantize import int8_sections

    extra, extra_arrays, int8_note = int8_sections(pipeline, series)
    size = save_pipeline(pipeline, out, extra=extra, extra_arrays=extra_arrays)
    t = Table(title=Text(f"trained {model} -> {out}"), show_header=False)  # a path: never markup
    s = pipeline.train_summary_
    for key, val in [
        ("training rows", f"{s['rows']}"),
        ("normal windows (fit / calibrate)", f"{s['fit_windows']} / {s['calibration_windows']}"),
        ("threshold", f"{pipeline.threshold_:.6g} (target FPR {target_fpr:g}, {s['calibration_rule']}, held-out "
                      f"{s['calibration_fpr']:.4f})"),
        ("persistence", f"{k} of {n} windows"),
        ("parameters", f"{pipeline.n_params_} ({pipeline.model_bytes_} B as float32)"),
        ("model file", f"{size} B"),
        ("int8", int8_note),
    ]:
        t.add_row(key, val)
    console.print(t)


def _skip_rows(pipeline: Any, n_rows: int, source: str, skip_fraction: float | None) -> int:
    """Rows not to evaluate: an explicit fraction, or the part the model was trained on when DATA is
    the file it was trained from with --train-fraction."""
    if skip_fraction is not None:
        if not 0.0 <= skip_fraction < 1.0:
            raise ConfigError(f"--skip-fraction must be in [0, 1), got {skip_fraction}")
        return int(round(n_rows * skip_fraction))
    summary = pipeline.train_summary_
    frac = float(summary.get("train_fraction", 1.0))
    if summary.get("source") == source and frac < 1.0:
        return int(round(n_rows * frac))
    return 0


@app.command()
def score(
    model: ModelArg,
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV of per-window scores")],
    drop_unordered: DropOpt = False,
    int8: Annotated[bool, typer.Option("--int8", help=(
        "Run the int8 reference (the numbers the exported C returns): integer scores"))] = False,
    chunk_rows: Annotated[int, typer.Option(hidden=True, help="Rows read at a time")] = 0,
) -> None:
    """Score every window of DATA: writes window_end, score, anomaly, threshold, confidence (and label when DATA
    has one).

    The file is what `tinywarden respond --scores` reads; its threshold column tells float scores from int8 ones.
    confidence is the calibrated anomaly likelihood in [0, 1] (same meaning for every model; absent with
    --int8 and for model files written before it existed). A CSV or Parquet file (or a recording folder) is
    read and scored in chunks, so memory does not grow with its length; OUT is replaced only when all is done.
    """
    from tinywarden.chunked_score import score_chunks
    from tinywarden.fileio import atomic_open
    from tinywarden.modelfile import load_pipeline
    from tinywarden.telemetry import iter_series
    from tinywarden.telemetry.io import CHUNK_ROWS

    pipeline = load_pipeline(str(model))
    program = None
    if int8:
        from tinywarden.quantize import load_program

        program = load_program(pipeline, str(model))
    gaps = ChunkGaps()
    chunks = gaps.watch(iter_series(data, chunk_rows or CHUNK_ROWS, drop_unordered), pipeline)
    windows = alarms = 0
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(out, newline="", fsync=False) as fh:
        w = csv.writer(fh)
        for part in score_chunks(pipeline, chunks, program):
            if windows == 0:
                w.writerow(["window_end", "score", "anomaly", "threshold",
                            *(["confidence"] if part.confidence is not None else []),
                            *(["label"] if part.labels is not None else [])])
            threshold = int(part.threshold) if int8 else repr(float(part.threshold))
            for i in range(len(part.scores)):
                value = int(part.scores[i]) if int8 else repr(float(part.scores[i]))
                row = [repr(float(part.end_times[i])), value, int(part.alarms[i]), threshold]
                row += [f"{part.confidence[i]:.6f}"] if part.confidence is not None else []
                w.writerow(row + ([int(part.labels[i])] if part.labels is not None else []))
            windows += len(part.scores)
            alarms += int(part.alarms.sum())
    gaps.report()
    show(f"wrote {windows} windows to {out} ({alarms} in alarm)")


class ChunkGaps:
    """What :func:`report_gaps` and :func:`report_channels` say of a whole series, gathered chunk by chunk.

    Gaps are a :class:`~tinywarden.telemetry.series.GapWatch`'s: measured against the first chunk's usual period.
    """

    def __init__(self) -> None:
        self.first: Series | None = None
        self.gaps = GapWatch()

    def watch(self, chunks: Any, pipeline: Any) -> Any:
        """Pass ``chunks`` through, noting their gaps; the first one's channels are reported at once."""
        for chunk in chunks:
            if self.first is None:
                self.first = chunk
                note_time_unit(chunk.source, chunk.meta.get("time_unit", "s"))
                report_channels(pipeline, chunk)
            self.gaps.add(chunk)
            yield chunk

    def report(self) -> None:
        if self.first is None:
            return
        for note in (dropped_note(self.gaps.dropped), gap_note(self.gaps.gaps)):  # the time unit: said at once
            if note:
                say("note", f"{self.first.source}: {note}")


def evaluate_pipeline(pipeline: Any, series: Series, skip_rows: int) -> tuple[Any, Any]:
    """Score ``series`` and compute its :class:`~tinywarden.evaluate.Evaluation`."""
    from tinywarden.evaluate import WindowScores, evaluate

    scored = pipeline.score(series)
    ws = WindowScores(scored.end_rows, pipeline.window, scored.scores, scored.raw_flags, scored.alarms,
                      scored.threshold)
    ev = evaluate(series, ws, params=pipeline.n_params_, model_bytes=pipeline.model_bytes_,
                  detector=pipeline.detector.name, skip_rows=skip_rows)
    return ws, ev


@app.command("evaluate")
def evaluate_cmd(
    model: ModelArg,
    data: DataArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables")] = False,
    plot: Annotated[Path | None, typer.Option(help=(
        "Save a PNG of score over time, threshold, attacks (reads DATA whole: the plot draws every row)"))] = None,
    skip_fraction: Annotated[float | None, typer.Option(
        help="Leave out the first fraction of rows (default: the training part when DATA is the training file)")
    ] = None,
    drop_unordered: DropOpt = False,
    chunk_rows: Annotated[int, typer.Option(hidden=True, help="Rows read at a time")] = 0,
) -> None:
    """Per-window and per-incident metrics of MODEL on labelled DATA.

    A CSV or Parquet file (or a recording folder) is read and scored in chunks, so memory grows with the
    number of windows, not with the file (except with --plot); the metrics equal those of the whole file.
    """
    from tinywarden.evaluate import render
    from tinywarden.modelfile import load_pipeline

    pipeline = load_pipeline(str(model))
    if plot is None:
        from tinywarden.chunked_score import evaluate_chunks
        from tinywarden.telemetry import iter_series
        from tinywarden.telemetry.io import CHUNK_ROWS

        gaps = ChunkGaps()
        chunks = gaps.watch(iter_series(data, chunk_rows or CHUNK_ROWS, drop_unordered), pipeline)

        def skip(n_rows: int) -> int:  # a folder is named as read_series names it, each chunk by its file
            assert gaps.first is not None
            source = str(Path(data)) if Path(data).is_dir() else gaps.first.source
            return _skip_rows(pipeline, n_rows, source, skip_fraction)

        _, ev = evaluate_chunks(pipeline, chunks, skip)
        gaps.report()
    else:
        from tinywarden.evaluate import plot_evaluation
        from tinywarden.telemetry import read_series

        series = read_series(data, split="test", drop_unordered=drop_unordered)
        if series.labels is None:
            raise ConfigError(f"{series.source}: evaluate needs a label column (0 normal / 1 anomalous)")
        report_gaps(series)
        report_channels(pipeline, series)
        ws, ev = evaluate_pipeline(pipeline, series, _skip_rows(pipeline, len(series), series.source, skip_fraction))
        plot_evaluation(series, ws, ev, plot, title=f"{pipeline.detector.name} on {Path(series.source).name}")
    if as_json:
        print(json.dumps(ev.to_dict(), sort_keys=True))
        return
    console.print(render(ev))
    if plot is not None:
        show(f"plot saved to {plot}")


EXAMPLE_POLICY = Path(__file__).resolve().parents[3] / "examples" / "policy.toml"
#: Marks a folder as a demo's output, which the next demo may overwrite.
DEMO_MARK = ".tinywarden-demo"


@app.command(cls=FamilyHelp)
def demo(
    profile: Annotated[str, typer.Option(help="Simulated device profile")] = "camera",
    days: Annotated[float, typer.Option(help="Days of telemetry to simulate")] = 14.0,
    train_days: Annotated[float, typer.Option(
        help="Leading attack-free days used to learn normal (at least a week covers the weekly schedule)")] = 8.0,
    detector: Annotated[str | None, typer.Option(help="Detector shown in the full report, exported and responded "
                                                      "with (default: the default pipeline's family)")] = None,
    seed: Annotated[int, typer.Option(help="Simulator seed")] = 7,
    policy: Annotated[Path, typer.Option(help="Response policy replayed on the detections")] = EXAMPLE_POLICY,
    out_dir: Annotated[Path, typer.Option(help="Where the data, models, plot and report go: a new or empty folder, or "
                                                  "an earlier demo's")] = Path("demo-out"),
) -> None:
    """End to end: simulate a device, learn its normal days, detect every attack type on held-out days,
    quantize to int8 and export C, and replay the detections through the response engine."""
    from tinywarden.detectors import REGISTRY, make_detector
    from tinywarden.evaluate import plot_evaluation, render
    from tinywarden.modelfile import save_pipeline
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import int8_sections
    from tinywarden.simulate import simulate
    from tinywarden.telemetry import write_csv

    if not 0 < train_days < days:
        raise ConfigError(f"--train-days must be between 0 and --days ({days}), got {train_days}")
    detector = family_or_default(detector)
    if detector not in REGISTRY:
        raise ConfigError(f"unknown detector {detector!r}; known: {', '.join(sorted(REGISTRY))}")
    if not policy.exists():
        raise ConfigError(f"{policy}: no such policy file (pass --policy)")
    from tinywarden.respond import load_policy

    pol = load_policy(policy)  # before any work: a bad policy is refused with nothing written
    _check_demo_folder(out_dir)
    series = simulate(profile, days, "all", seed=seed, attack_free_days=train_days)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DEMO_MARK).touch()
    write_csv(series, out_dir / "telemetry.csv")
    cut = int(np.searchsorted(series.timestamps, series.timestamps[0] + train_days * 86400.0))
    train_part = series.slice(0, cut)
    console.print(
        f"[bold]tinywarden demo[/]: {profile}, {days:g} days x {series.n_channels} channels "
        f"({len(series)} samples every {series.period:g} s); learning normal from the first {train_days:g} days, "
        f"testing on {days - train_days:g} days with attacks {', '.join(sorted(set(series.attacks) - {''}))}"
    )
    order = [detector, *[d for d in ("ewma", "kmeans", "dense_ae", "conv_ae") if d != detector]]
    summary = Table(title="all detectors on the held-out days (window 128, stride 64, 2-of-3 persistence)")
    for col in ("detector", "params", "bytes", "ROC AUC", "PR AUC", "detected", "latency", "FPR raw", "FA/day"):
        summary.add_column(col, justify="right" if col != "detector" else "left")
    reports: dict[str, Any] = {}
    main: tuple[Any, Any, Any] | None = None
    for name in order:
        pipeline = fit_with_progress(Pipeline(make_detector(name)), train_part, f"training {name}")
        extra, extra_arrays, _ = int8_sections(pipeline, train_part)
        save_pipeline(pipeline, out_dir / f"{name}.twb", extra=extra, extra_arrays=extra_arrays)
        ws, ev = evaluate_pipeline(pipeline, series, skip_rows=cut)
        reports[name] = ev.to_dict()
        if name == detector:
            main = (pipeline, ws, ev)
        lat = ev.mean_detection_latency_s
        summary.add_row(name, str(ev.params), str(ev.model_bytes), f"{ev.roc_auc:.3f}", f"{ev.pr_auc:.3f}",
                        f"{ev.n_detected}/{ev.n_incidents}", "-" if lat != lat else f"{lat / 60:.0f} min",
                        f"{ev.raw_fpr:.4f}", f"{ev.false_alarms_per_day:.2f}")
    assert main is not None
    pipeline, ws, ev = main
    console.print(f"\n[bold]{detector}[/] in detail")  # a detector family's name: one of a fixed list
    console.print(render(ev))
    console.print(summary)
    plot = plot_evaluation(series, ws, ev, out_dir / f"{detector}.png",
                           title=f"tinywarden demo: {detector} on simulated {profile}")
    reports["int8"] = _demo_int8(pipeline, out_dir / f"{detector}.twb", series, cut, out_dir / "c")
    reports["response"] = _demo_response(pipeline, ws, series, cut, pol, out_dir / "audit.log")
    reports["adaptation"] = _demo_adaptation(pipeline, profile, seed, train_days)
    (out_dir / "report.json").write_text(json.dumps(reports, indent=2, sort_keys=True, allow_nan=False))
    show(f"data, models (*.twb), plot ({plot.name}), C module (c/), audit.log and report.json are in {out_dir}/")


def _check_demo_folder(out_dir: Path) -> None:
    """Refuse an ``out_dir`` holding files that are not a demo's: the demo replaces its files and deletes every
    ``audit.log*`` in it. A new or empty folder is fine, and so is one an earlier demo wrote (its mark, or the
    report.json of a demo from before the mark)."""
    if not out_dir.is_dir() or (out_dir / DEMO_MARK).exists() or (out_dir / "report.json").exists():
        return
    if any(out_dir.iterdir()):
        raise ConfigError(f"{out_dir}: not empty and not a demo's output folder (the demo replaces its files and "
                          "deletes its audit.log*); pass a new --out-dir")


def _demo_int8(pipeline: Any, model_path: Path, series: Series, cut: int, c_dir: Path) -> dict[str, Any]:
    """Float vs int8 on the held-out days, and the generated C module for the device."""
    from tinywarden.codegen.c import write_c
    from tinywarden.modelfile import load_pipeline
    from tinywarden.quantize import compare_int8, load_program

    pipeline = load_pipeline(str(model_path))  # what a device would be given: the saved model file
    program = load_program(pipeline, str(model_path))
    cmp = compare_int8(pipeline, series, program, skip_rows=cut)
    write_c(program, c_dir)
    t = Table(title="on the microcontroller: int8 program (bit-exact with the generated C)")
    for col in ("", "model bytes", "ROC AUC", "detection rate", "window FPR"):
        t.add_column(col, justify="right" if col else "left")
    for kind in ("float", "int8"):
        t.add_row(kind, str(cmp[f"{kind}_bytes"]), f"{cmp[f'{kind}_roc_auc']:.3f}",
                  f"{cmp[f'{kind}_detection_rate']:.0%}", f"{cmp[f'{kind}_fpr']:.4f}")
    console.print(t)
    show(f"C99 module for the whole on-device loop written to {c_dir}/ (tinywarden_model.h/.c)")
    return cmp


def _demo_adaptation(pipeline: Any, profile: str, seed: int, train_days: float) -> dict[str, Any]:
    """Before/after of baseline adaptation on a legitimate firmware update a day after training.

    The same device (seed) without attacks; the model is the one trained above (those days are the same).
    """
    from tinywarden.replay import aligned_start, replay
    from tinywarden.respond.policy import Adaptation
    from tinywarden.simulate import simulate_detailed

    change_day = train_days + 1.0
    sim = simulate_detailed(profile, change_day + 2.0, "none", seed=seed, scenario="firmware_update",
                            change_day=change_day)
    (change,) = sim.changes
    day = int(round(86400.0 / sim.series.period))
    start = aligned_start(pipeline, int(round(train_days * day)))
    out: dict[str, Any] = {"change_day": change_day}
    parts = []
    for label, cfg in (("off", None), ("on", Adaptation())):
        r = replay(pipeline, sim.series, start, cfg)
        figs = {"false_alarms_24h": r.alarm_onsets(change.start_row, change.start_row + day),
                "in_alarm_24h": round(r.alarm_share(change.start_row, change.start_row + day), 4),
                "standing_at_24h": r.alarm_standing(change.start_row + day),
                "false_alarms_next_24h": r.alarm_onsets(change.start_row + day, change.start_row + 2 * day),
                "in_alarm_next_24h": round(r.alarm_share(change.start_row + day, change.start_row + 2 * day), 4),
                "drift_flags": int(len(r.drift_flag_rows))}
        out[label] = figs
        parts.append(f"{label} {figs['false_alarms_24h']} false alarm(s), in alarm {figs['in_alarm_24h']:.0%} of the "
                     f"time, {'still' if figs['standing_at_24h'] else 'not'} in alarm at 24 h, then "
                     f"{figs['false_alarms_next_24h']} ({figs['in_alarm_next_24h']:.0%}) in the next 24 h"
                     + (f", {figs['drift_flags']} baseline-drift flag(s)" if cfg is not None else ""))
    console.print(f"adaptation on a legitimate firmware update at day {change_day:g} (48 h after, labelled normal): "
                  + "; ".join(parts))
    return out


def _demo_response(pipeline: Any, ws: Any, series: Series, cut: int, pol: Policy,
                   audit_path: Path) -> dict[str, Any]:
    """Replay the held-out windows' scores through the response engine (dry run) with an audit log."""
    from tinywarden.audit import AuditLog, load_key, verify
    from tinywarden.respond import ResponseEngine, SimulatedClock
    from tinywarden.respond.actuators import build_actuators

    for old in audit_path.parent.glob(audit_path.name + "*"):
        old.unlink()  # a fresh chain for each demo run
    key = load_key(audit_path.parent / "keys" / "audit.key", create=True)  # apart from the log's folder
    engine = ResponseEngine(pol, float(pipeline.threshold_), actuators=build_actuators(pol, dry_run=True),
                            clock=SimulatedClock(), audit=AuditLog(audit_path, key=key),
                            model_id=pipeline.detector.name)
    test = ws.end_rows >= cut
    events = []
    for t, score in zip(series.timestamps[ws.end_rows[test]], ws.scores[test], strict=True):
        events += engine.observe(float(score), at=float(t))
    applied = [e for e in events if e.event == "apply"]
    counts = {tier: sum(1 for e in applied if e.action_tier == tier) for tier in (1, 2, 3)}
    reverts = sum(1 for e in events if e.event == "revert")
    dead_man = sum(1 for e in events if e.event == "revert" and e.reason_code == "dead_man")
    report = verify(audit_path, key=key)
    show(
        f"response ({pol.name} v{pol.version}, dry run): {counts[1]} alert, {counts[2]} constrain and {counts[3]} "
        f"harden actions applied, {reverts} reverted ({dead_man} by the dead-man timer); final tier {engine.tier}; "
        f"keyed audit chain {'intact' if report.verdict == 'intact' else 'BROKEN'} ({report.records} records)"
    )
    return {"applied": counts, "reverted": reverts, "dead_man_reverts": dead_man, "final_tier": engine.tier,
            "audit_records": report.records, "audit_ok": report.verdict == "intact"}
