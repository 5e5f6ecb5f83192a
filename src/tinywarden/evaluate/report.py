"""Human-readable rendering of an :class:`~tinywarden.evaluate.metrics.Evaluation` (rich tables).

The machine form is :meth:`Evaluation.to_dict`; this module is for people reading a terminal.

>>> format_duration(250.0), format_duration(0.25), format_duration(float("nan"))
('4m10s', '0.25s', '-')
"""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table

from tinywarden.evaluate.metrics import Evaluation

__all__ = ["format_bytes", "format_duration", "render"]

MISSING = "-"


def format_duration(seconds: float) -> str:
    """Seconds as a short human string: ``0.25s``, ``42s``, ``4m10s``, ``2h05m``, ``3d04h``."""
    if seconds is None or math.isnan(seconds):
        return MISSING
    if seconds < 10:
        return f"{seconds:.2f}".rstrip("0").rstrip(".") + "s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def format_bytes(n: int) -> str:
    """A byte count as ``812 B``, ``3.4 KiB`` or ``1.2 MiB``."""
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def _num(value: float, digits: int = 3) -> str:
    return MISSING if math.isnan(value) else f"{value:.{digits}f}"


def _pct(value: float) -> str:
    return MISSING if math.isnan(value) else f"{100 * value:.1f}%"


def render(evaluation: Evaluation) -> Group:
    """A summary table and a per-attack table, ready for ``console.print``."""
    ev = evaluation
    title = f"Evaluation of {ev.detector}" if ev.detector else "Evaluation"
    summary = Table(title=title, show_header=False, title_justify="left")
    summary.add_column("metric", style="bold")
    summary.add_column("value", justify="right")
    rows = [
        ("detection rate", f"{_pct(ev.detection_rate)} ({ev.n_detected}/{ev.n_incidents} incidents)"),
        ("mean detection latency", format_duration(ev.mean_detection_latency_s)),
        ("median detection latency", format_duration(ev.median_detection_latency_s)),
        ("false-positive rate (alarms)", _pct(ev.fpr)),
        ("false-positive rate (raw flags)", _pct(ev.raw_fpr)),
        ("false alarms per device-day", _num(ev.false_alarms_per_day, 2)),
        ("precision / recall / F1", f"{_num(ev.precision)} / {_num(ev.recall)} / {_num(ev.f1)}"),
        ("best F1 over thresholds", _num(ev.best_f1)),
        ("ROC AUC / PR AUC", f"{_num(ev.roc_auc)} / {_num(ev.pr_auc)}"),
        ("windows (anomalous)", f"{ev.n_windows} ({ev.n_anomalous_windows})"),
        ("threshold", f"{ev.threshold:.6g}"),
        ("model", f"{ev.params} params, {format_bytes(ev.model_bytes)}"),
    ]
    for name, value in rows:
        summary.add_row(name, value)

    per_attack = Table(title="Per attack type", title_justify="left")
    per_attack.add_column("attack", style="bold")
    per_attack.add_column("incidents", justify="right")
    per_attack.add_column("detected", justify="right")
    per_attack.add_column("rate", justify="right")
    per_attack.add_column("mean latency", justify="right")
    per_attack.add_column("median latency", justify="right")
    for a in ev.per_attack:
        per_attack.add_row(
            a.attack,
            str(a.incidents),
            str(a.detected),
            _pct(a.detection_rate),
            format_duration(a.mean_latency_s),
            format_duration(a.median_latency_s),
        )
    if not ev.per_attack:
        per_attack.add_row("(no labelled incidents)", "0", "0", MISSING, MISSING, MISSING)
    return Group(summary, per_attack)
