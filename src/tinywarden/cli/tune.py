"""``tinywarden tune``: search the pipeline that detects best within a device's flash and RAM budget."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from tinywarden.cli.app import app, console, err_console, say, show
from tinywarden.cli.core import TARGET_FPR_HELP, DataArg, DropOpt, LikelihoodGateOpt, report_gaps
from tinywarden.errors import ConfigError
from tinywarden.telemetry.series import Series

#: Rows ``tune`` reads at most: it fits every candidate on data held in memory (values, windows and their
#: features), so it reads the first ``MAX_ROWS`` rows of a longer file and says so (2.3 days at 1 Hz).
MAX_ROWS = 200_000


def _bounded(data: str, split: str, max_rows: int, drop_unordered: bool) -> Series:
    """``data``'s first ``max_rows`` rows, with a note when it had more."""
    from tinywarden.telemetry.io import read_head

    if max_rows < 1:
        raise ConfigError(f"--max-rows must be >= 1, got {max_rows}")
    series, more = read_head(data, max_rows, split, drop_unordered)
    if more:
        say("note", f"{series.source}: tune reads the first {max_rows} rows (it holds its "
                    "data in memory); the rest is not used (--max-rows to change)")
    return series


@app.command()
def tune(
    data: DataArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the chosen model file (.twb)")],
    flash: Annotated[str, typer.Option(help="Flash budget of the model module, e.g. 8KB (K = 1024)")] = "8KB",
    ram: Annotated[str, typer.Option(help="RAM budget: static RAM + the caller-owned state, e.g. 4KB")] = "4KB",
    target: Annotated[str, typer.Option(help="Cortex-M core the generated C is compiled and sized for")] = (
        "cortex-m4"),
    families: Annotated[str, typer.Option(
        help="Comma-separated detector families to search (default: every family with an int8 path)")] = "",
    windows: Annotated[str, typer.Option(help=(
        "Comma-separated window lengths to try (default 16,32,64,128, plus 8,4 on data too short for 16)"))] = "",
    trials: Annotated[int | None, typer.Option(help="Stop after this many built-and-measured candidates")] = None,
    time_budget: Annotated[float | None, typer.Option(
        "--time-budget", help="Stop starting new candidates after this many seconds")] = None,
    validate: Annotated[str | None, typer.Option(
        "--validate", help="Labelled data (0/1 label column, or .npz:test) whose ROC AUC joins the quality")] = None,
    target_fpr: Annotated[float, typer.Option(help=TARGET_FPR_HELP)] = 0.01,
    validation_fraction: Annotated[float, typer.Option(
        help="Last fraction of DATA held out (never fitted) to score candidates")] = 0.2,
    plot: Annotated[Path | None, typer.Option(help="Pareto plot PNG (default: next to --out)")] = None,
    count: Annotated[bool, typer.Option(
        "--count/--no-count", help="Count instructions per window under QEMU for the Pareto front")] = True,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic anomalies")] = 0,
    likelihood_gate: LikelihoodGateOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the chosen pipeline as one JSON object")] = False,
    drop_unordered: DropOpt = False,
    max_rows: Annotated[int, typer.Option(
        "--max-rows", help="Read at most this many rows of DATA (and of --validate): tune holds them in memory")
    ] = MAX_ROWS,
) -> None:
    """Search family, window/stride, features and model size under a flash/RAM budget measured on the generated
    C (arm-none-eabi-size); scored without labels on held-out normal data with synthetic anomalies."""
    from tinywarden.modelfile import save_pipeline
    from tinywarden.program import INT8_HEADER_KEY, to_model_file
    from tinywarden.target import get_target
    from tinywarden.tune import Budget, add_instruction_counts, pareto_table, parse_bytes, plot_pareto
    from tinywarden.tune import tune as run_tune
    from tinywarden.tune.search import TOO_WIDE

    budget = Budget(parse_bytes(flash, "--flash"), parse_bytes(ram, "--ram"), get_target(target).name)
    plot_to = plot or out.with_suffix(".pareto.png")
    for path in (out, plot_to):  # written after the search: a path that cannot be a file is refused before it
        if path.is_dir():
            raise ConfigError(f"{path}: is a folder; --out and --plot name files")
    series = _bounded(data, "train", max_rows, drop_unordered)
    report_gaps(series)
    labelled = _bounded(validate, "test", max_rows, drop_unordered) if validate else None
    fams = [f for f in families.split(",") if f.strip()] or None
    try:
        wins = [int(w) for w in windows.split(",") if w.strip()] or None
    except ValueError:
        raise ConfigError(f"--windows {windows!r}: expected comma-separated integers such as 16,32") from None

    with Progress(TextColumn("tuning"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=err_console, transient=True) as bar:
        task = bar.add_task("", total=None)

        def tick(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        result = run_tune(series, budget, families=fams, windows=wins, max_trials=trials, time_budget=time_budget,
                          seed=seed, validation_fraction=validation_fraction, target_fpr=target_fpr, validate=labelled,
                          progress=tick, likelihood_gate=likelihood_gate)
        front = add_instruction_counts(result, series) if count else []
    if not count:
        from tinywarden.tune.pareto import front_trials

        front = front_trials(result)

    header, arrays = to_model_file(result.program)
    result.pipeline.train_summary_["tune"] = result.summary()
    save_pipeline(result.pipeline, out, extra={INT8_HEADER_KEY: header}, extra_arrays=arrays)
    plot_path = plot_pareto(result, front, plot_to)

    summary = result.summary()
    if result.warning:
        say("warning", result.warning, None)
    if as_json:
        print(json.dumps(summary | {"model": str(out), "plot": str(plot_path)}, sort_keys=True))
        return
    console.print(pareto_table(result, front))
    c = result.chosen.candidate
    labels = ("labels used: " + ", ".join(result.labels_used)) if result.labels_used else (
        "no labels used: scored on synthetic anomalies in held-out normal data")
    console.print(
        f"chosen: [bold]{c.label}[/] ({len(result.pipeline.channels_)} channels), "
        f"{result.size.flash} B flash, {result.size.ram_with_state} B RAM "
        f"({result.size.static_ram} static + {result.size.state_bytes} state) measured on {target}; "
        f"validation quality {result.chosen.quality:.3f}, FPR {result.chosen.fpr:.4f}", highlight=False)
    console.print(labels, highlight=False)
    skipped = sum(t.status == "pre-filtered" for t in result.trials)
    wide = sum(t.status.startswith(TOO_WIDE) for t in result.trials)
    over = sum(t.status == "over budget" for t in result.trials)
    failed = [t for t in result.trials if t.status.startswith("failed")]
    console.print(f"{len(result.trials)} candidates: {sum(t.measured for t in result.trials)} built and measured "
                  f"({over} over budget), {skipped} ruled out by their parameter count"
                  + (f", {wide} by their inputs (more than their family's int8 program takes)" if wide else "")
                  + f", {len(failed)} failed"
                  + (f"; stopped early: {result.stopped_early}" if result.stopped_early else ""), highlight=False)
    if result.windows_note:
        show(f"short data: {result.windows_note}")
    for fam, reason in result.unsupported.items():
        show(f"not searched: {fam} ({reason})", style="dim")
    show(f"model saved to {out}; Pareto plot {plot_path}")
