"""Evaluation: metrics of scored windows against labelled data, a rich report and a PNG plot.

``evaluate`` computes the numbers (definitions in :mod:`tinywarden.evaluate.metrics`), ``render`` turns
them into tables for people, ``Evaluation.to_dict`` into JSON for machines, and ``plot_evaluation``
draws score, threshold, attack spans and alarms over time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinywarden.evaluate.metrics import (
    AttackStats,
    Evaluation,
    Incident,
    IncidentScan,
    WindowScores,
    evaluate,
    evaluate_windows,
    find_incidents,
)
from tinywarden.evaluate.report import format_duration, render

if TYPE_CHECKING:
    from tinywarden.evaluate.plot import plot_evaluation

__all__ = [
    "AttackStats",
    "Evaluation",
    "Incident",
    "IncidentScan",
    "WindowScores",
    "evaluate",
    "evaluate_windows",
    "find_incidents",
    "format_duration",
    "plot_evaluation",
    "render",
]


def __getattr__(name: str) -> object:
    # matplotlib takes a noticeable time to import; load it only when a plot is asked for.
    if name == "plot_evaluation":
        from tinywarden.evaluate.plot import plot_evaluation

        return plot_evaluation
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
