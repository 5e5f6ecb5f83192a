"""Shared helpers of the benchmark scripts: the datasets and their protocol, metrics, machine facts.

Everything here reads the public data in ``$TINYWARDEN_DATA`` (default ``<repo>/../shared/data``) and
never writes into it. The protocol (which span trains, which is scored, which windows) is defined once,
in :data:`PROTOCOLS`, and printed at the top of every results table.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def single_core() -> None:
    """Pin numpy/BLAS and torch to one thread, so timings mean "one core" for every detector.

    Must run before numpy does its first BLAS call; the scripts call it at the top.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = "1"
    import torch

    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # threadpoolctl comes with scikit-learn; without it the env vars still apply
        pass


def data_dir() -> Path:
    """``$TINYWARDEN_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("TINYWARDEN_DATA", REPO.parent / "shared" / "data"))


# -- the protocol ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """How one dataset is windowed and split.

    ``train_stride`` only thins the (highly overlapping) training windows to keep fitting time sane;
    ``test_stride`` 1 scores every row by the trailing window ending at it, so per-row AUC is defined.
    """

    dataset: str
    window: int
    train_stride: int
    test_stride: int
    train_span: str
    test_span: str


PROTOCOLS: dict[str, Protocol] = {
    "smd": Protocol("smd", 32, 4, 1, "`train` split (unlabelled, mostly normal)",
                    "`test` split, each row scored by the window ending at it (w-1 train rows as context)"),
    "asd": Protocol("asd", 32, 2, 1, "`train` split (unlabelled, mostly normal)",
                    "`test` split, each row scored by the window ending at it (w-1 train rows as context)"),
    "nab": Protocol("nab", 16, 1, 1, "first 15% of rows (NAB probationary period), labelled windows left out",
                    "the remaining 85%, each row scored by the window ending at it"),
    "sim": Protocol("sim", 128, 64, 64, "the attack-free days (4 of 8 days, 10 s sampling)",
                    "the 4 attack days, all five attacks (default pipeline windows 128/64)"),
}
DATASETS: tuple[str, ...] = tuple(PROTOCOLS)

SIM_PROFILES: tuple[str, ...] = ("camera", "valve", "thermostat")


@dataclass(frozen=True)
class Entity:
    """One train/score unit: a machine, a NAB file or a simulated device.

    ``train`` is the normal training span (rows labelled 1, if any, are left out of training);
    ``stream`` is what gets scored, and only windows ending at or after ``skip_rows`` count.
    """

    dataset: str
    name: str
    train: Any  # tinywarden.telemetry.Series
    stream: Any  # tinywarden.telemetry.Series with labels
    skip_rows: int

    @property
    def protocol(self) -> Protocol:
        return PROTOCOLS[self.dataset]


def _smd_asd_entity(path: Path, dataset: str, limit: int | None) -> Entity:
    from tinywarden.telemetry import Series
    from tinywarden.telemetry.io import read_npz

    train, test = read_npz(path, "train"), read_npz(path, "test")
    if limit is not None:
        train, test = train.slice(0, min(limit, len(train))), test.slice(0, min(limit, len(test)))
    ctx = PROTOCOLS[dataset].window - 1
    period = train.period
    values = np.vstack([train.values[-ctx:], test.values])
    assert test.labels is not None
    labels = np.concatenate([np.zeros(ctx, dtype=np.int8), test.labels])
    stream = Series(np.arange(len(values)) * period, values, test.channels, labels, None,
                    f"{path}:test", {"dataset": path.stem})
    return Entity(dataset, path.stem, train, stream, ctx)


def _nab_entity(path: Path) -> Entity:
    from tinywarden.telemetry import read_series

    # NAB repeats clock hours at DST changes: drop the out-of-order rows like `tinywarden train` does
    series = read_series(path, drop_unordered=True)
    cut = int(len(series) * 0.15)
    return Entity("nab", f"{path.parent.name}/{path.stem}", series.slice(0, cut), series, cut)


def _sim_entity(profile: str, seed: int, days: float) -> Entity:
    from tinywarden.simulate import simulate

    free = days / 2
    series = simulate(profile, days=days, attacks="all", seed=seed, attack_free_days=free)
    cut = int(math.ceil(free * 86400.0 / series.period))
    return Entity("sim", f"{profile}-seed{seed}", series.slice(0, cut), series, cut)


def entities(dataset: str, quick: bool = False) -> Iterator[Entity]:
    """The entities of ``dataset`` in a fixed order; ``quick`` keeps one small one.

    Raises FileNotFoundError naming the folder when the public data is absent.
    """
    root = data_dir()
    if dataset in ("smd", "asd"):
        folder = root / "smd_asd" / "npz"
        prefix = "machine-" if dataset == "smd" else "omi-"
        paths = sorted(folder.glob(f"{prefix}*.npz"), key=lambda p: [int(v) for v in p.stem.split("-")[1:]])
        if not paths:
            raise FileNotFoundError(f"no {prefix}*.npz in {folder} (set TINYWARDEN_DATA)")
        for p in paths[:1] if quick else paths:
            yield _smd_asd_entity(p, dataset, 3000 if quick else None)
    elif dataset == "nab":
        folder = root / "nab" / "data"
        paths = sorted(folder.glob("*/*.csv"))
        if not paths:
            raise FileNotFoundError(f"no NAB csv files under {folder} (set TINYWARDEN_DATA)")
        for p in paths[:1] if quick else paths:
            yield _nab_entity(p)
    elif dataset == "sim":
        for i, profile in enumerate(SIM_PROFILES[:1] if quick else SIM_PROFILES):
            yield _sim_entity(profile, seed=i, days=4.0 if quick else 8.0)
    else:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")


def context_values(entity: Entity, window: int) -> tuple[np.ndarray, int]:
    """``entity.stream``'s values preceded by enough earlier training rows for ``window``-row models.

    Every entity's stream begins with the last ``skip_rows`` rows of its training span (SMD/ASD: the
    ``w - 1`` context rows; NAB/sim: the whole training span), so a model with a longer window than the
    protocol's can take its extra context from the rows of ``entity.train`` before them, where there are
    any. Returns ``(values, lead)``: stream row ``r`` is row ``r + lead`` of ``values``.
    """
    values = np.asarray(entity.stream.values)
    train = np.asarray(entity.train.values)
    skip = entity.skip_rows
    need = min(max(0, window - 1 - skip), len(train) - skip)  # NAB/sim: no training row precedes the stream
    if need <= 0 or not np.array_equal(train[len(train) - skip :], values[:skip], equal_nan=True):
        return values, 0
    return np.vstack([train[len(train) - skip - need : len(train) - skip], values]), need


def timed_with_children(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Like :func:`timed`, but also counting the CPU time of child processes that ended meanwhile.

    ``tinywarden.tune`` compiles every candidate with ``arm-none-eabi-gcc`` in a child process; that work
    is part of the search's cost, and ``time.process_time`` would not see it.
    """
    t0 = os.times()
    out = fn()
    t1 = os.times()
    spent = sum(getattr(t1, k) - getattr(t0, k) for k in ("user", "system", "children_user", "children_system"))
    return out, spent


# -- metrics --------------------------------------------------------------------------------------
FPR_POINTS: tuple[float, ...] = (0.001, 0.01)


def threshold_at_test_fpr(normal_scores: np.ndarray, fpr: float) -> float:
    """The smallest threshold with at most ``floor(fpr * n)`` normal scores strictly above it."""
    s = np.sort(np.asarray(normal_scores, dtype=np.float64))[::-1]
    k = int(math.floor(fpr * len(s)))
    return float(s[min(k, len(s) - 1)])


def quality_metrics(entity: Entity, end_rows: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Every quality number of one detector on one entity (definitions in the results table header).

    ``scores`` are the windows ending at ``end_rows`` of ``entity.stream`` (higher = more anomalous).
    """
    from tinywarden.evaluate import WindowScores, evaluate
    from tinywarden.evaluate.metrics import window_labels

    s = entity.stream
    w = entity.protocol.window
    scores = np.asarray(scores, dtype=np.float64)
    keep = end_rows >= entity.skip_rows
    y = window_labels(s.labels, end_rows[keep], w).astype(bool)
    normal = scores[keep][~y]
    out: dict[str, float] = {}
    for fpr in FPR_POINTS:
        t = threshold_at_test_fpr(normal, fpr) if len(normal) else math.inf
        flags = (scores > t).astype(np.uint8)
        ev = evaluate(s, WindowScores(end_rows, w, scores, flags, flags, t), params=0, model_bytes=0,
                      skip_rows=entity.skip_rows)
        tag = f"{fpr * 100:g}".replace(".", "_")
        out[f"det_rate_fpr{tag}"] = ev.detection_rate
        out[f"latency_s_fpr{tag}"] = ev.mean_detection_latency_s
        if fpr == FPR_POINTS[-1]:
            out.update(roc_auc=ev.roc_auc, pr_auc=ev.pr_auc, best_f1=ev.best_f1, n_incidents=ev.n_incidents,
                       n_windows=ev.n_windows, n_anomalous_windows=ev.n_anomalous_windows)
    out["row_roc_auc"] = row_roc_auc(entity, end_rows, scores)
    return out


def row_roc_auc(entity: Entity, end_rows: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC with each row scored by the window ending at it (needs stride 1; else nan)."""
    from sklearn.metrics import roc_auc_score

    if entity.protocol.test_stride != 1:
        return math.nan
    keep = end_rows >= entity.skip_rows
    y = entity.stream.labels[end_rows[keep]]
    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)[keep]))


# -- timing and provenance ------------------------------------------------------------------------
def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``, seconds of CPU time of this process (``time.process_time``).

    The benchmarks run single-threaded (see :func:`single_core`), so CPU time is one core's time, and
    other programs competing for the machine do not inflate it the way they inflate wall-clock time.
    """
    t0 = time.process_time()
    out = fn()
    return out, time.process_time() - t0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_info() -> dict[str, str]:
    """Where and with what the numbers were measured (printed under every results table)."""
    versions = {}
    for pkg in ("tinywarden", "numpy", "scikit-learn", "torch", "pyod", "river", "emlearn"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{_cpu_model()}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "commit": _git_commit(),
        "versions": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, nan/None as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def json_safe(value: Any) -> Any:
    """Plain Python values for ``json.dump`` (nan/inf become None)."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return None if not math.isfinite(float(value)) else float(value)
    return value
