"""Pareto front of a search (validation quality vs flash bytes vs instructions per window), its table and plot.

The front is taken on quality (higher is better) and measured flash (lower is better) over the candidates
that fit the budget; instructions per window are then counted exactly, under QEMU, for the front's
members only (counting is slow), and a member dominated on all three objectives is dropped.

>>> pareto_front([(0.9, 100), (0.8, 50), (0.85, 120), (0.95, 300)])
[1, 0, 3]
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.table import Table

from tinywarden.codegen.c import write_c
from tinywarden.errors import ConfigError
from tinywarden.fileio import atomic_open
from tinywarden.program import Program
from tinywarden.target import run_on_qemu
from tinywarden.telemetry.series import Series
from tinywarden.tune.search import Trial, TuneResult, select_channels

#: Windows of a stream counted under QEMU per front member: the first fills the ring, the rest are steady.
COUNT_WINDOWS = 3


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated ``(quality, cost)`` points (max quality, min cost), cheapest first."""
    order = sorted(range(len(points)), key=lambda i: (points[i][1], -points[i][0]))
    front, best = [], -math.inf
    for i in order:
        q = points[i][0]
        if q > best:
            front.append(i)
            best = q
    return front


def dominated(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Is ``a`` = (quality, cost, cost ...) dominated by ``b``: no worse everywhere, better somewhere?"""
    no_worse = b[0] >= a[0] and all(y <= x for x, y in zip(a[1:], b[1:], strict=True))
    return no_worse and b != a


def count_instructions(program: Program, samples: np.ndarray, target: str = "cortex-m4") -> float:
    """Exact mean instructions per window of ``program`` on the emulated ``target`` over ``samples``."""
    need = program.window + COUNT_WINDOWS * program.stride
    stream = np.asarray(samples[:need], dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="tw-tune-count-") as tmp:
        write_c(program, tmp)
        run = run_on_qemu(Path(tmp), stream, target=target, count=True)
    assert run.instructions is not None
    return run.instructions.steady_per_window


def front_trials(result: TuneResult) -> list[Trial]:
    """The measured, in-budget trials on the quality/flash front, cheapest first.

    Only trials within the false-positive limit compete (when there are any), as in the choice itself, so
    the chosen pipeline is always on the front.
    """
    ok = [t for t in result.trials if t.status == "ok" and math.isfinite(t.quality)]
    if any(t.fpr_ok for t in ok):
        ok = [t for t in ok if t.fpr_ok]
    idx = pareto_front([(t.quality, float(t.flash or 0)) for t in ok])
    return [ok[i] for i in idx]


def add_instruction_counts(result: TuneResult, series: Series) -> list[Trial]:
    """Count instructions for the front members and the chosen trial on the first rows of ``series``;
    return the front without members dominated on all three objectives."""
    front = front_trials(result)
    members = front if result.chosen in front else [*front, result.chosen]
    for t in members:
        if t.instructions is None and t.program is not None:
            values = select_channels(series, t.program.channels).values
            t.instructions = count_instructions(t.program, values, result.budget.target)
    objs = {id(t): (t.quality, float(t.flash or 0), t.instructions or 0.0) for t in front}
    return [t for t in front if not any(dominated(objs[id(t)], objs[id(o)]) for o in front if o is not t)]


def pareto_table(result: TuneResult, front: Sequence[Trial]) -> Table:
    """Rich table of the front: quality, synthetic/labelled AUC, FPR, flash, RAM, instructions per window."""
    labelled = any(t.labelled_auc is not None for t in front)
    table = Table(title=f"Pareto front ({result.budget.flash} B flash / {result.budget.ram} B RAM, "
                        f"{result.budget.target} -Os, measured)")
    cols = ["", "pipeline", "quality", "synthetic AUC", *(["labelled AUC"] if labelled else []), "val. FPR",
            "flash B", "RAM B", "instr./window"]
    for c in cols:
        table.add_column(c, justify="left" if c in ("", "pipeline") else "right")
    for t in front:
        mark = "*" if t is result.chosen else ""
        row = [mark, t.candidate.label, f"{t.quality:.3f}", f"{t.synthetic_auc:.3f}"]
        if labelled:
            row.append("-" if t.labelled_auc is None else f"{t.labelled_auc:.3f}")
        fpr = f"{t.fpr:.4f}" + ("" if t.fpr_ok else " (over)")
        row += [fpr, str(t.flash), str(t.ram), "-" if t.instructions is None else f"{t.instructions:,.0f}"]
        table.add_row(*row)
    if result.chosen not in front:
        t = result.chosen
        table.add_row("*", t.candidate.label, f"{t.quality:.3f}", f"{t.synthetic_auc:.3f}",
                      *(["-" if t.labelled_auc is None else f"{t.labelled_auc:.3f}"] if labelled else []),
                      f"{t.fpr:.4f}", str(t.flash), str(t.ram),
                      "-" if t.instructions is None else f"{t.instructions:,.0f}")
    return table


def plot_pareto(result: TuneResult, front: Sequence[Trial], path: str | Path) -> Path:
    """PNG: quality vs measured flash for every in-budget trial, the front, the budget line, the choice."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [t for t in result.trials if t.status == "ok" and math.isfinite(t.quality)]
    over = [t for t in result.trials if t.status == "over budget"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    families = sorted({t.candidate.family for t in ok})
    cmap = plt.get_cmap("tab20")  # one colour per family (there are more than ten)
    for i, fam in enumerate(families):
        colour = cmap((2 * i) % 20 + (2 * i) // 20)
        for within, style in ((True, {"color": colour}), (False, {"facecolors": "none", "edgecolors": colour})):
            pts = [t for t in ok if t.candidate.family == fam and t.fpr_ok == within]
            if pts:
                ax.scatter([t.flash for t in pts], [t.quality for t in pts], s=22, alpha=0.8,
                           label=fam if within or not any(t.fpr_ok for t in ok if t.candidate.family == fam)
                           else None, **style)
    if any(not t.fpr_ok for t in ok):
        ax.scatter([], [], s=22, facecolors="none", edgecolors="0.3",
                   label=f"hollow: FPR over {result.fpr_limit:g} (ranked below)")
    if over:
        ax.scatter([t.flash for t in over], [0.5] * len(over), marker="x", color="0.6", s=18,
                   label="over budget (not scored)")
    fr = sorted(front, key=lambda t: t.flash or 0)
    ax.plot([t.flash for t in fr], [t.quality for t in fr], "-", color="black", lw=1, label="Pareto front")
    c = result.chosen
    ax.scatter([c.flash], [c.quality], s=140, facecolors="none", edgecolors="red", linewidths=2, label="chosen")
    ax.axvline(result.budget.flash, color="red", ls="--", lw=1)
    ax.text(result.budget.flash, ax.get_ylim()[0], " flash budget", color="red", va="bottom", fontsize=8)
    ax.set_xlabel(f"flash bytes (measured, {result.budget.target} -Os)")
    ax.set_ylabel("validation quality (mean ROC AUC)")
    ax.set_title("tinywarden tune: quality vs flash")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = Path(path)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(out, "wb") as fh:  # never torn, and a link at ``out`` is replaced, not written through
            fig.savefig(fh, dpi=120, format="png")
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the plot ({exc.strerror or exc})") from None
    finally:
        plt.close(fig)
    return out
