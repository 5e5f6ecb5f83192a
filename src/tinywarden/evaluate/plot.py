"""A PNG of one evaluation: anomaly score over time, threshold, labelled attack spans and alarms.

Draws on a bare :class:`matplotlib.figure.Figure` rendered by the Agg canvas, never through
``pyplot``: no GUI backend is needed, no global figure registry fills up, and the process-wide
matplotlib backend is left as the caller set it.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from tinywarden.errors import ConfigError
from tinywarden.evaluate.metrics import Evaluation, WindowScores, find_incidents
from tinywarden.fileio import atomic_open
from tinywarden.telemetry.series import Series

__all__ = ["FIGSIZE_IN", "DPI", "plot_evaluation"]

FIGSIZE_IN = (12.0, 4.5)
DPI = 100
LOG_SPAN_DECADES = 3.0


def _as_datetimes(ts: np.ndarray) -> np.ndarray:
    return np.round(ts * 1000.0).astype(np.int64).astype("datetime64[ms]")


def _y_scale(scores: np.ndarray) -> tuple[str, dict[str, float]]:
    """``linear``, or a log scale when the positive scores span more than three decades."""
    positive = scores[scores > 0]
    if positive.size == 0 or positive.max() / positive.min() <= 10**LOG_SPAN_DECADES:
        return "linear", {}
    if (scores > 0).all():
        return "log", {}
    # Zero or negative scores cannot sit on a log axis; symlog stays linear below the smallest positive.
    return "symlog", {"linthresh": float(positive.min())}


def plot_evaluation(
    series: Series, ws: WindowScores, evaluation: Evaluation, path: str | Path, title: str = ""
) -> Path:
    """Save the score-over-time plot of ``ws`` on ``series`` as a PNG at ``path`` and return the path.

    The x axis is wall-clock time (UTC) of each window's end row; the threshold is a dashed line;
    labelled incidents are shaded, one colour per attack type; windows that raised an alarm are marked;
    rows before ``evaluation.skip_rows`` are hatched as not evaluated. ``ws`` must be the windows
    ``evaluation`` was computed from (:func:`~tinywarden.evaluate.evaluate` has checked them).
    """
    path = Path(path)
    ends = np.asarray(ws.end_rows, dtype=np.int64)
    scores = np.asarray(ws.scores, dtype=np.float64)
    alarms = np.asarray(ws.alarms).astype(bool)
    when = _as_datetimes(series.timestamps)
    x = when[ends]
    period_ms = np.timedelta64(max(1, int(round(series.period * 1000))), "ms")

    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    handles: list[object] = []

    if evaluation.skip_rows > 0:
        skip_end = when[min(evaluation.skip_rows, len(when) - 1)]
        ax.axvspan(when[0], skip_end, facecolor="none", edgecolor="0.7", hatch="//", linewidth=0)
        handles.append(Patch(facecolor="none", edgecolor="0.7", hatch="//", label="not evaluated"))

    # Every labelled span is drawn, including those in the skipped part that the metrics leave out.
    spans = find_incidents(series)
    attacks = sorted({attack for _, _, attack in spans})
    palette = colormaps["tab10"]
    colours = {a: palette(i % 10) for i, a in enumerate(attacks)}
    for onset_row, end_row, attack in spans:
        # A span reaches to the end of its last row's sampling period, so one-row incidents stay visible.
        ax.axvspan(when[onset_row], when[end_row] + period_ms, color=colours[attack], alpha=0.25, lw=0)
    handles.extend(Patch(color=colours[a], alpha=0.25, label=a) for a in attacks)

    (line,) = ax.plot(x, scores, color="0.2", linewidth=0.8, label="score")
    handles.insert(0, line)
    if np.isfinite(ws.threshold):
        thr = ax.axhline(ws.threshold, color="tab:red", linestyle="--", linewidth=1.0, label="threshold")
        handles.insert(1, thr)
    if alarms.any():
        marks = ax.scatter(
            x[alarms], scores[alarms], marker="v", s=14, color="tab:red", zorder=3, label="alarm"
        )
        handles.insert(handles.index(line) + 1, marks)

    shown = np.append(scores, ws.threshold) if np.isfinite(ws.threshold) else scores
    scale, kwargs = _y_scale(shown)
    ax.set_yscale(scale, **kwargs)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlim(when[0], when[-1] + period_ms)
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("anomaly score")
    default_title = " - ".join(t for t in (evaluation.detector, series.source) if t)
    ax.set_title(title or default_title)
    # Below the axes, so the legend never hides the score line.
    fig.legend(handles=handles, loc="outside lower center", fontsize="small", ncols=min(len(handles), 7))

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "wb") as fh:  # never torn, and a link at ``path`` is replaced, not written through
            fig.savefig(fh, format="png")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the plot ({exc.strerror or exc})") from exc
    finally:
        fig.clear()
    return path
