"""Embedded-path commands: export a model for a device, and report what int8 quantization costs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tinywarden.cli.app import app, console
from tinywarden.cli.core import DataArg, ModelArg, report_gaps


@app.command()
def export(
    model: ModelArg,
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the exported files into")],
    target: Annotated[str, typer.Option(help="What to export for: c (C99 module of the int8 program), "
                                        "tflite (fully-integer .tflite), onnx (float + QDQ int8 .onnx)")] = "c",
    policy: Annotated[Path | None, typer.Option(help="Response policy TOML: with --target c, the module also "
                                                "gets the response state machine (tw_respond)")] = None,
) -> None:
    """Export MODEL for a device: `--target c` writes tinywarden_model.h/.c (no malloc, integer only)."""
    from tinywarden.codegen import export as export_model
    from tinywarden.modelfile import load_pipeline

    if policy is not None and target != "c":
        from tinywarden.errors import ConfigError

        raise ConfigError(f"--policy {policy}: only --target c can carry the response machine (got {target!r})")
    pipeline = load_pipeline(str(model))
    if policy is not None:
        from tinywarden.codegen.c import export_c
        from tinywarden.respond.policy import load_policy

        pol = load_policy(policy)
        paths = export_c(pipeline, out, source=str(model), policy=pol)
    else:
        paths = export_model(pipeline, target, out, source=str(model))
    for p in paths:
        console.print(f"wrote {p} ({p.stat().st_size} B)")


@app.command("quantize-report")
def quantize_report(model: ModelArg, data: DataArg) -> None:
    """Float32 vs int8 on labelled DATA: model size, ROC AUC and detection rate at the calibrated thresholds."""
    from tinywarden.errors import ConfigError
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
    t.add_row("ROC AUC", f"{rep['float_roc_auc']:.4f}", f"{rep['int8_roc_auc']:.4f}",
              f"{rep['int8_roc_auc'] - rep['float_roc_auc']:+.4f}")
    t.add_row("detection rate", f"{rep['float_detection_rate']:.0%}", f"{rep['int8_detection_rate']:.0%}",
              f"{rep['int8_detection_rate'] - rep['float_detection_rate']:+.0%}")
    t.add_row("window FPR", f"{rep['float_fpr']:.4f}", f"{rep['int8_fpr']:.4f}",
              f"{rep['int8_fpr'] - rep['float_fpr']:+.4f}")
    console.print(t)
