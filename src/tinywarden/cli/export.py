"""Embedded-path commands: export a model for a device, and report what int8 quantization costs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tinywarden.cli.app import app, console, show
from tinywarden.cli.core import DataArg, ModelArg, report_gaps


@app.command()
def export(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the exported files into")],
    target: Annotated[str, typer.Option(help="What to export for: c (C99 module of the int8 program), "
                                        "tflite (fully-integer .tflite, dense_ae), "
                                        "onnx (float .onnx; + QDQ int8 for dense_ae)")] = "c",
    policy: Annotated[Path | None, typer.Option(help="Response policy TOML: with --target c, the module also "
                                                "gets the response state machine (tw_respond)")] = None,
    flash: Annotated[str | None, typer.Option(
        help="With --target c: the device's flash budget for the module, e.g. 8KB; a module over it is not "
             "written")] = None,
    ram: Annotated[str | None, typer.Option(
        help="With --target c: the RAM budget (static RAM + the caller-owned state), e.g. 4KB")] = None,
    core: Annotated[str, typer.Option(help="With --target c: the Cortex-M core the module is sized for")] = (
        "cortex-m4"),
) -> None:
    """Export MODEL for a device: `--target c` writes tinywarden_model.h/.c (no malloc, integer only) and, where
    the ARM toolchain is installed, prints the module's flash and RAM on --core (checked against --flash/--ram)."""
    from tinywarden.codegen import export as export_model
    from tinywarden.errors import ConfigError
    from tinywarden.modelfile import load_pipeline

    if policy is not None and target != "c":
        raise ConfigError(f"--policy {policy}: only --target c can carry the response machine (got {target!r})")
    budget = (flash, ram) != (None, None)
    if budget and target != "c":
        raise ConfigError(f"--flash/--ram: only --target c is sized here (got {target!r})")
    pipeline = load_pipeline(str(model))
    if target != "c":
        paths = export_model(pipeline, target, out, source=str(model))
    else:
        paths = _export_c_sized(pipeline, model, out, policy, flash, ram, core)
    for p in paths:
        show(f"wrote {p} ({p.stat().st_size} B)")
    if target == "onnx" and len(paths) == 1:
        console.print(f"[dim]no QDQ int8 model: the {pipeline.detector.name} int8 program runs int16 kernels, which "
                      "ONNX's QDQ form does not hold; its device path is --target c[/dim]")


def _export_c_sized(pipeline: object, model: Path, out: Path, policy: Path | None, flash: str | None,
                    ram: str | None, core: str) -> list[Path]:
    """Generate the C module in a scratch folder, measure it on ``core`` (when the toolchain is there) and move it
    to ``out`` unless it is over a given budget: then nothing is written and the error names both figures."""
    import tempfile

    from tinywarden.codegen import write_export
    from tinywarden.codegen.c import export_c
    from tinywarden.errors import ConfigError
    from tinywarden.target import get_target, missing_tools, module_size
    from tinywarden.tune import parse_bytes

    limits = (parse_bytes(flash, "--flash") if flash is not None else None,
              parse_bytes(ram, "--ram") if ram is not None else None)
    cpu = get_target(core).name
    pol = None
    if policy is not None:
        from tinywarden.respond.policy import load_policy

        pol = load_policy(policy)
    missing = missing_tools(("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm"))
    if missing and limits != (None, None):
        raise ConfigError(f"--flash/--ram: cannot size the module without the ARM toolchain: {missing[0]}")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory")
    with tempfile.TemporaryDirectory(prefix="tw-export-") as tmp:
        made = export_c(pipeline, Path(tmp), source=str(model), policy=pol)
        if missing:
            show(f"not sized: {missing[0]}", style="yellow")
        else:
            size = module_size(Path(tmp), cpu)
            over = [f"{what} {need:,} B > {have:,} B" for what, need, have in
                    (("flash", size.flash, limits[0]), ("RAM", size.ram_with_state, limits[1]))
                    if have is not None and need > have]
            if over:
                raise ConfigError(f"{model}: the module is over the budget on {cpu} ({'; '.join(over)}); nothing "
                                  "written: `tinywarden tune` searches a pipeline that fits")
            console.print(f"module on {cpu} (-Os): {size.flash:,} B flash, {size.ram_with_state:,} B RAM "
                          f"({size.static_ram:,} static + {size.state_bytes:,} state)")
        out.mkdir(parents=True, exist_ok=True)
        return [write_export(out / p.name, p.read_bytes()) for p in made]


@app.command("quantize-report")
def quantize_report(model: ModelArg, data: DataArg) -> None:
    """Float32 vs int8 on labelled DATA: model size, ROC AUC and detection rate at the calibrated thresholds."""
    from tinywarden.errors import ConfigError
    from tinywarden.evaluate.report import MISSING
    from tinywarden.modelfile import load_pipeline
    from tinywarden.quantize.report import compare_int8
    from tinywarden.telemetry import read_series

    pipeline = load_pipeline(str(model))
    series = read_series(data, split="test")
    if series.labels is None:
        raise ConfigError(f"{series.source}: quantize-report needs a label column (0 normal / 1 anomalous)")
    report_gaps(series)
    rep = compare_int8(pipeline, series, source=str(model))
    t = Table(title=f"float32 vs int8: {pipeline.detector.name} on {Path(series.source).name}")
    for col in ("", "float32", "int8", "delta"):
        t.add_column(col, justify="right" if col else "left")
    t.add_row("model bytes", str(rep["float_bytes"]), str(rep["int8_bytes"]),
              f"{rep['float_bytes'] / max(rep['int8_bytes'], 1):.2f}x smaller")
    for name, key, spec in (("ROC AUC", "roc_auc", ".4f"), ("detection rate", "detection_rate", ".0%"),
                            ("window FPR", "fpr", ".4f")):
        # undefined on one class of labels (no anomaly: no detection rate; no normal window: no FPR): "-" as in
        # evaluate, never "nan"
        a, b = rep[f"float_{key}"], rep[f"int8_{key}"]
        t.add_row(name, *(MISSING if math.isnan(v) else format(v, spec) for v in (a, b)),
                  MISSING if math.isnan(b - a) else format(b - a, "+" + spec))
    console.print(t)
