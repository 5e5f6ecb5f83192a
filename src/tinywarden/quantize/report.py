"""What int8 costs: float32 vs int8 model size and detection quality on one labelled series."""

from __future__ import annotations

from typing import Any

from tinywarden.pipeline import Pipeline
from tinywarden.program import Program
from tinywarden.quantize.ptq import load_program, score_int8
from tinywarden.telemetry.series import Series


def compare_int8(pipeline: Pipeline, series: Series, program: Program | None = None, skip_rows: int = 0,
                 source: str = "<model>") -> dict[str, Any]:
    """Float and int8 sizes, ROC AUC, detection rate and window FPR of one pipeline on a labelled series.

    ``program`` defaults to the one stored in the pipeline's model file. Sizes: float = the pipeline's
    parameters as float32; int8 = every constant the device stores (:attr:`Program.const_bytes`).
    """
    from tinywarden.evaluate import WindowScores, evaluate

    prog = program if program is not None else load_program(pipeline, source)
    out: dict[str, Any] = {"float_bytes": int(pipeline.model_bytes_), "int8_bytes": int(prog.const_bytes)}
    for name, scored in (("float", pipeline.score(series)), ("int8", score_int8(pipeline, prog, series))):
        ws = WindowScores(scored.end_rows, pipeline.window, scored.scores.astype(float), scored.raw_flags,
                          scored.alarms, float(scored.threshold))
        ev = evaluate(series, ws, params=pipeline.n_params_, model_bytes=out[f"{name}_bytes"],
                      detector=pipeline.detector.name, skip_rows=skip_rows)
        out[f"{name}_roc_auc"] = float(ev.roc_auc)
        out[f"{name}_detection_rate"] = float(ev.detection_rate)
        out[f"{name}_fpr"] = float(ev.fpr)
    return out
