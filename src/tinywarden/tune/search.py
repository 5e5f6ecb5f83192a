"""Budget-aware search for the best on-device anomaly pipeline: family, window/stride, features, model size.

The search runs in two stages, each candidate a full ``Pipeline`` fit, int8 quantization, C generation
and an ``arm-none-eabi-size`` measurement of the generated module for the target core:

1. *input stage*: every window (16, 32, 64, 128) x feature set x channel choice (all channels, or only
   those that vary in the normal data), each with a probe detector (PCA, the floor; EWMA when PCA is not
   searched), ranks the ways of looking at the data;
2. *model stage*: for the best input choices, every family and model size;
3. *ensembles*: the best candidate fused with the next best one or two other feature families on its input
   (:func:`ensemble_candidates`, the ``ensemble`` family), measured and ranked like any other.

A candidate is measured only if a lower bound on its flash (the int8 program's constant bytes, known from
its parameter count before fitting) and on its RAM (the int16 ring buffer) fits the budget; every number
reported for a candidate that passed is the measured one. Quality needs no labels: the normal data is
split in time into a fit part (the pipeline's own fit/calibration split) and a validation part; the
candidate's int8 program (bit-exact with the C) scores the clean validation windows (false-positive rate
at its calibrated threshold) and copies of them with synthetic anomalies (:mod:`tinywarden.tune.synthetic`)
injected (ROC AUC per anomaly type). When that part holds fewer than :data:`TAIL_MIN_WINDOWS` windows (short
recordings, long windows), the candidate is refitted with each of :data:`FOLDS` folds of the normal data held
out in turn and scored on all of them instead. A candidate far over the target FPR ranks last. When labelled
data is available, its ROC AUC chooses among the :data:`SHORTLIST` best by that label-free rank (:func:`choose`)
and the result says so.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from tinywarden.calibrate import check_target_fpr
from tinywarden.codegen.c import write_c
from tinywarden.detectors import REGISTRY, make_detector
from tinywarden.detectors.ensemble import member_spec
from tinywarden.errors import ConfigError, DataError, TinywardenError
from tinywarden.features import DEFAULT_FEATURES, window_end_rows
from tinywarden.likelihood import check_gate
from tinywarden.pipeline import Pipeline, model_inputs, too_wide
from tinywarden.program import Program, run_int8
from tinywarden.quantize import quantize_pipeline
from tinywarden.target import ModuleSize, module_size
from tinywarden.telemetry.series import Series
from tinywarden.tune.synthetic import ANOMALY_TYPES, inject

#: Windows the search tries; the stride is a fixed fraction of the window (see STRIDE_DIVISOR).
WINDOWS: tuple[int, ...] = (16, 32, 64, 128)
#: Windows added (default windows only) when the data is too short for the smallest of WINDOWS: a few
#: minutes of a device's normal at 1 Hz (60 to 300 rows) still gets a pipeline.
SHORT_WINDOWS: tuple[int, ...] = (8, 4)
#: Clean windows the validation part must hold for a candidate to be scored.
MIN_VALIDATION_WINDOWS = 4
#: Windows the held-out tail must hold for a candidate's false-positive rate and synthetic AUC to be read from
#: it alone. With fewer (minutes of data, or a long window on a short series) a handful of windows from the
#: recording's last stretch decides, and one quieter or busier stretch there makes every candidate look like it
#: alarms on all of normal: the candidate is then refitted on the normal data with each of :data:`FOLDS`
#: contiguous folds held out in turn, and scored on every fold (pooled on the calibrated scale).
TAIL_MIN_WINDOWS = 80
FOLDS = 5
#: A candidate whose false-positive rate on held-out normal windows is more than this many times the calibrated
#: target is never chosen: it would alarm (and mitigate) on normal traffic. Candidates between the FPR limit
#: and this are ranked after every candidate within the limit, lowest FPR first.
FAR_FPR_FACTOR = 20
#: stride = window // STRIDE_DIVISOR: four scores per window length keeps detection latency at a quarter
#: window while the device runs the model four times less often than at stride 1.
STRIDE_DIVISOR = 4
#: Named feature sets: the README's compact per-channel summary, a smaller one, and the full default.
FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "compact": ("last", "mean", "std", "min", "max"),
    "small": ("mean", "std", "max"),
    "default": DEFAULT_FEATURES,
}
CHANNEL_CHOICES: tuple[str, ...] = ("all", "varying")
#: Detector used in the input stage to rank the ways of looking at the data: PCA, the floor every family
#: has to clear (it sees how the features move together, cheap to fit); EWMA when PCA is not searched.
PROBE: tuple[str, dict[str, Any]] = ("pca", {"n_components": 8})
FALLBACK_PROBE: tuple[str, dict[str, Any]] = ("ewma", {"aggregate": "rms"})
#: How many of the best input choices the model stage explores (at most one per feature set, so a
#: smaller feature set that leaves room for bigger models is among them).
TOP_INPUTS = 3
#: With labelled data (``validate``), the labelled ROC AUC chooses among this many of the best candidates by the
#: label-free rank: one to three labelled incidents are too few to rank every candidate on, but enough to pick
#: among the few the synthetic check already trusts (benchmarks/results/tune_smd.md, issue 17 item 4).
SHORTLIST = 5
#: Members of the ensembles the search adds after its model stage: the best candidate by the label-free rank and
#: the next best of other feature families on the same input (see :func:`ensemble_candidates`).
ENSEMBLE_SIZES: tuple[int, ...] = (2, 3)
#: Rows of synthetic-anomaly segments, in windows (a slow drift needs longer to show).
SEGMENT_WINDOWS = {"slow_drift": 3}
#: The status (before ``": "`` and the reason) of a candidate with more inputs than its family's int8 program takes
#: (:func:`~tinywarden.pipeline.too_wide`): ruled out before fitting, like one over the flash bound.
TOO_WIDE = "too wide"

Progress = Callable[[int, int, str], None]


# -- budget ------------------------------------------------------------------------------------------
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kib": 1024, "m": 1024**2, "mb": 1024**2, "mib": 1024**2}


def parse_bytes(text: str, what: str = "size") -> int:
    """``"8KB"`` -> 8192 (K = 1024, as in a microcontroller's datasheet); plain digits are bytes.

    >>> parse_bytes("8KB"), parse_bytes("4k"), parse_bytes("1500")
    (8192, 4096, 1500)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConfigError(f"{what} {text!r}: expected a size such as 8KB, 4096 or 0.5MB")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value):  # hundreds of digits: a float cannot hold it, no device has it
        raise ConfigError(f"{what} {text!r}: expected a size such as 8KB, 4096 or 0.5MB")
    value = int(value)
    if value <= 0:
        raise ConfigError(f"{what} {text!r} must be positive")
    return value


@dataclass(frozen=True)
class Budget:
    """The device's budget for the model module: flash (code + constants) and RAM (static + state)."""

    flash: int
    ram: int
    target: str = "cortex-m4"

    def fits(self, size: ModuleSize) -> bool:
        return size.flash <= self.flash and size.ram_with_state <= self.ram


class BudgetError(ConfigError):
    """No candidate pipeline fits the device budget."""


# -- candidates --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One point of the search space."""

    family: str
    params: tuple[tuple[str, Any], ...]
    window: int
    stride: int
    feature_set: str
    features: tuple[str, ...]
    channels: str  # "all" or "varying"

    @property
    def label(self) -> str:
        size = ",".join(f"{k}={_fmt(v)}" for k, v in self.params) or "defaults"
        return f"{self.family}({size}) w={self.window}/{self.stride} {self.feature_set} {self.channels}"

    def pipeline(self, target_fpr: float, k: int, n: int, likelihood_gate: float | None = None) -> Pipeline:
        det = make_detector(self.family, **dict(self.params))
        return Pipeline(det, self.window, self.stride, self.features, target_fpr, k, n,
                        likelihood_gate=likelihood_gate)

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "params": {k: _jsonable(v) for k, v in self.params},
                "window": self.window, "stride": self.stride, "feature_set": self.feature_set,
                "features": list(self.features), "channels": self.channels}


def _fmt(v: Any) -> str:
    return "x".join(str(i) for i in v) if isinstance(v, tuple) else str(v)


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def flash_lower_bound(c: Candidate, n_channels: int) -> int:
    """Bytes of constants the int8 program of ``c`` needs at least (code not counted).

    Counted from the parameters alone, before fitting: per channel the float32 sample offset and
    multiplier; per model input (a feature, or a channel for a family reading the raw window) at least its
    Q31 requantization multiplier; then what the family declares for its model
    (``Detector.flash_lower_bound``: weights at one byte each for int8, two for int16 ...). The quantizer may
    store more (shifts, offsets, biases), never less, so a candidate whose bound exceeds the flash budget
    cannot fit and is not built.
    """
    family = REGISTRY[c.family]
    n_in = model_inputs(family, n_channels, c.features)
    return 8 * n_channels + 4 * n_in + family.flash_lower_bound(dict(c.params), n_in, n_channels)


def search_space(family: str) -> tuple[dict[str, Any], ...]:
    """The model sizes ``tune`` tries for ``family``, smallest first (the family's own declaration)."""
    return REGISTRY[family].search_space


def ram_lower_bound(c: Candidate, n_channels: int) -> int:
    """Bytes of the int16 ring buffer holding one window: RAM the module needs at least."""
    return 2 * c.window * n_channels


# -- results -----------------------------------------------------------------------------------------
@dataclass
class Trial:
    """What happened to one candidate. ``status`` is ``"ok"`` when it was built, measured and scored."""

    candidate: Candidate
    stage: str
    status: str = "pending"
    flash_bound: int = 0
    ram_bound: int = 0
    flash: int | None = None
    ram: int | None = None  # static RAM plus the caller-owned state, measured
    quality: float = float("nan")
    synthetic_auc: float = float("nan")
    auc_by_type: dict[str, float] = field(default_factory=dict)
    labelled_auc: float | None = None
    fpr: float = float("nan")
    fpr_ok: bool = False
    fpr_far: bool = False  # FPR more than FAR_FPR_FACTOR times the target: never chosen
    folds: int = 0  # 0: scored on the held-out tail; else on this many folds of the normal data
    seconds: float = 0.0
    data_problem: bool = False  # failed because the data holds too few windows, not for its size
    instructions: float | None = None
    program: Program | None = field(default=None, repr=False)
    pipeline: Pipeline | None = field(default=None, repr=False)
    size: ModuleSize | None = field(default=None, repr=False)

    @property
    def measured(self) -> bool:
        return self.flash is not None

    def to_dict(self) -> dict[str, Any]:
        return {**self.candidate.to_dict(), "stage": self.stage, "status": self.status,
                "flash": self.flash, "ram": self.ram, "flash_lower_bound": self.flash_bound,
                "quality": _finite(self.quality), "synthetic_auc": _finite(self.synthetic_auc),
                "auc_by_type": {k: _finite(v) for k, v in self.auc_by_type.items()},
                "labelled_auc": self.labelled_auc, "fpr": _finite(self.fpr), "fpr_ok": self.fpr_ok,
                "fpr_far": self.fpr_far, "folds": self.folds, "instructions_per_window": self.instructions,
                "seconds": round(self.seconds, 2)}


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@dataclass
class TuneResult:
    """The search's outcome: every trial, the chosen one, and the chosen pipeline refitted on all the data."""

    budget: Budget
    trials: list[Trial]
    chosen: Trial
    pipeline: Pipeline
    program: Program
    size: ModuleSize
    fit_series: Series  # the (channel-selected) series the final pipeline was fitted and quantized on
    labels_used: list[str]
    unsupported: dict[str, str]
    fpr_limit: float
    stopped_early: str | None = None
    windows_note: str | None = None  # what short data changed in the windows/strides tried
    warning: str | None = None  # set when even the chosen pipeline alarms far too often on held-out normal data

    def summary(self) -> dict[str, Any]:
        """The chosen pipeline's family, window, flash, RAM and validation scores (``tune --json``)."""
        c, t = self.chosen.candidate, self.chosen
        return {
            "family": c.family, "params": {k: _jsonable(v) for k, v in c.params}, "window": c.window,
            "stride": c.stride, "features": list(c.features), "channels": list(self.pipeline.channels_),
            "flash": self.size.flash, "ram": self.size.ram_with_state, "static_ram": self.size.static_ram,
            "state_bytes": self.size.state_bytes, "target": self.budget.target,
            "budget": {"flash": self.budget.flash, "ram": self.budget.ram},
            "instructions_per_window": t.instructions,
            "validation": {"quality": _finite(t.quality), "synthetic_auc": _finite(t.synthetic_auc),
                           "auc_by_type": {k: _finite(v) for k, v in t.auc_by_type.items()},
                           "labelled_auc": t.labelled_auc, "fpr": _finite(t.fpr), "fpr_limit": self.fpr_limit,
                           "labels_used": self.labels_used, "folds": t.folds},
            "trials": len(self.trials), "measured": sum(tr.measured for tr in self.trials),
            "stopped_early": self.stopped_early, "windows_note": self.windows_note, "warning": self.warning,
        }


# -- the search --------------------------------------------------------------------------------------
def select_channels(series: Series, names: Sequence[str]) -> Series:
    """``series`` restricted to the channels ``names`` (in that order)."""
    idx = [series.channels.index(n) for n in names]
    return dataclasses.replace(series, values=series.values[:, idx], channels=tuple(names))


def int8_support(family: str) -> str | None:
    """``None`` when ``family`` has an int8 path, else the quantizer's reason (tried on a tiny series)."""
    rng = np.random.default_rng(0)
    s = Series(np.arange(600.0), rng.normal(size=(600, 2)), ("a", "b"))
    try:
        p = Pipeline(make_detector(family, **dict(search_space(family)[0])), 16, 8,
                     FEATURE_SETS["small"]).fit(s)
        quantize_pipeline(p, s)
    except TinywardenError as exc:
        return str(exc)
    except (ValueError, ArithmeticError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


class _Validator:
    """Scores int8 programs on held-out normal windows and their synthetic-anomaly copies (cached per window).

    The held-out tail (``validation``) when it holds :data:`TAIL_MIN_WINDOWS` windows of the candidate's
    window/stride; otherwise :data:`FOLDS` contiguous folds of ``train``, each scored by the candidate refitted
    with that fold held out (:meth:`score_folds`). Synthetic anomalies go into held-out rows only.
    """

    def __init__(self, validation: Series, spread: np.ndarray, seed: int,
                 labelled: list[tuple[str, Series]], train: Series, held_out_rows: int) -> None:
        self.validation = validation
        self.spread = spread
        self.seed = seed
        self.labelled = labelled
        self.train = train
        self.held_out_rows = held_out_rows
        self._injected: dict[tuple[int, str, bool], Any] = {}

    def injected(self, window: int, kind: str, whole: bool = False) -> Any:
        """Synthetic ``kind`` anomalies for ``window`` in the validation part, or in all of ``train`` (folds)."""
        key = (window, kind, whole)
        if key not in self._injected:
            seg = window * SEGMENT_WINDOWS.get(kind, 1)
            values = self.train.values if whole else self.validation.values
            self._injected[key] = inject(values, kind, seg, self.spread, seed=self.seed)
        return self._injected[key]

    def needs_folds(self, window: int, stride: int) -> bool:
        return _windows_in(self.held_out_rows, window, stride) < TAIL_MIN_WINDOWS

    def score(self, program: Program, channels: Sequence[str]) -> tuple[float, dict[str, float], float,
                                                                        float | None]:
        """``(synthetic mean AUC, AUC per type, FPR on clean windows, labelled AUC or None)``."""
        idx = [self.validation.channels.index(c) for c in channels]
        w, s = program.window, program.stride
        clean, _ = run_int8(program, self.validation.values[:, idx])
        if len(clean) < MIN_VALIDATION_WINDOWS:
            raise DataError(f"validation part has {len(clean)} windows of {w} rows (stride {s}); "
                            f"need at least {MIN_VALIDATION_WINDOWS} to score")
        fpr = float(np.mean(clean > program.threshold))
        aucs = {}
        for kind in ANOMALY_TYPES:
            inj = self.injected(w, kind)
            scores, _ = run_int8(program, inj.values[:, idx])
            hit = _windows_touching(inj.rows, len(inj.rows), w, s)
            if hit.any():
                y = np.r_[np.zeros(len(clean)), np.ones(int(hit.sum()))]
                aucs[kind] = float(roc_auc_score(y, np.r_[clean, scores[hit]]))
        synth = float(np.mean(list(aucs.values()))) if aucs else float("nan")
        return synth, aucs, fpr, self.score_labelled(program, channels)

    def score_labelled(self, program: Program, channels: Sequence[str]) -> float | None:
        """Mean ROC AUC over the labelled series (``--validate``, labelled rows of the tail), or ``None``."""
        w, s = program.window, program.stride
        vals = []
        for _, series in self.labelled:
            ls = select_channels(series, channels)
            sc, _ = run_int8(program, ls.values)
            assert ls.labels is not None
            y = _windows_touching(ls.labels.astype(bool), len(ls), w, s)
            if 0 < y.sum() < len(y):
                vals.append(float(roc_auc_score(y, sc)))
        return float(np.mean(vals)) if vals else None

    def score_folds(self, c: Candidate, channels: Sequence[str], target_fpr: float, k: int, n: int
                    ) -> tuple[float, dict[str, float], float, int]:
        """``(synthetic mean AUC, AUC per type, FPR, folds scored)`` of ``c`` refitted once per fold.

        Fold ``i`` is held out by labelling its rows anomalous for the fit (the pipeline leaves out every
        window touching one, so no fit window spans the fold's edges and no held-out row is learned from).
        Each fold's int8 scores are divided by its own integer threshold, so the folds pool on one calibrated
        scale (1 = at threshold). Raises :class:`DataError` when fewer than two folds could be fitted.
        """
        series = select_channels(self.train, channels)
        idx = [self.train.channels.index(ch) for ch in channels]
        known = np.zeros(len(series), dtype=bool) if series.labels is None else series.labels.astype(bool)
        bounds = np.linspace(0, len(series), FOLDS + 1).round().astype(int)
        clean: list[np.ndarray] = []
        hits: dict[str, list[np.ndarray]] = {kind: [] for kind in ANOMALY_TYPES}
        over = folds = 0
        w, s = c.window, c.stride
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            held = np.zeros(len(series), dtype=bool)
            held[a:b] = True
            fold_fit = dataclasses.replace(series, labels=(held | known).astype(np.int8))
            try:
                pipe = c.pipeline(target_fpr, k, n).fit(fold_fit)
                program = quantize_pipeline(pipe, fold_fit)
            except DataError:
                continue
            normal = ~_windows_touching(known[a:b], b - a, w, s)
            scores, _ = run_int8(program, series.values[a:b])
            scores = scores[normal]
            if not len(scores):
                continue
            folds += 1
            over += int((scores > program.threshold).sum())
            unit = float(max(program.threshold, 1))
            clean.append(scores / unit)
            for kind in ANOMALY_TYPES:
                inj = self.injected(w, kind, whole=True)
                sc, _ = run_int8(program, inj.values[a:b][:, idx])
                hit = _windows_touching(inj.rows[a:b], b - a, w, s) & normal
                hits[kind].append(sc[hit] / unit)
        neg = np.concatenate(clean) if clean else np.zeros(0)
        if folds < 2 or len(neg) < MIN_VALIDATION_WINDOWS:
            raise DataError(f"{len(series)} rows: only {folds} of {FOLDS} folds could be fitted and scored with "
                            f"window {w} (stride {s}), {len(neg)} held-out windows; need at least 2 folds and "
                            f"{MIN_VALIDATION_WINDOWS} windows")
        aucs = {}
        for kind, parts in hits.items():
            pos = np.concatenate(parts)
            if len(pos):
                aucs[kind] = float(roc_auc_score(np.r_[np.zeros(len(neg)), np.ones(len(pos))], np.r_[neg, pos]))
        synth = float(np.mean(list(aucs.values()))) if aucs else float("nan")
        return synth, aucs, over / len(neg), folds


def _windows_touching(rows: np.ndarray, n: int, window: int, stride: int) -> np.ndarray:
    """For each window of a stream of ``n`` rows: does it contain a True row?"""
    ends = window_end_rows(n, window, stride)
    c = np.concatenate(([0], np.cumsum(rows.astype(np.int64))))
    return (c[ends + 1] - c[ends + 1 - window]) > 0


def default_stride(window: int) -> int:
    """The stride the search pairs with ``window`` on data long enough for it: a quarter window."""
    return max(1, window // STRIDE_DIVISOR)


def _windows_in(rows: int, window: int, stride: int) -> int:
    """``len(window_end_rows(rows, window, stride))``, counted (no array: a window may be any length)."""
    return 0 if rows < window else (rows - window) // stride + 1


def _fit_ok(window: int, stride: int, n_windows: int) -> bool:
    """Does the pipeline's own fit/calibration split accept ``n_windows`` normal windows?"""
    try:
        Pipeline(make_detector("ewma"), window, stride, FEATURE_SETS["small"]).split_index(n_windows)
    except DataError:
        return False
    return True


def min_rows(window: int, stride: int, validation_fraction: float) -> int:
    """The fewest rows of normal data on which a ``window``/``stride`` candidate can be fitted, calibrated
    and scored: the fit part (the first ``1 - validation_fraction``, as ``Series.split`` cuts it) needs
    enough windows for the pipeline's fit/calibration split, the held-out part
    :data:`MIN_VALIDATION_WINDOWS`.

    >>> min_rows(16, 4, 0.2), min_rows(4, 1, 0.2)
    (138, 33)
    """
    fit_windows = next(m for m in range(1, 10_000) if _fit_ok(window, stride, m))

    def enough(rows: int) -> bool:
        cut = int(round(rows * (1.0 - validation_fraction)))
        return (_windows_in(cut, window, stride) >= fit_windows
                and _windows_in(rows - cut, window, stride) >= MIN_VALIDATION_WINDOWS)

    # both parts only grow with the rows: bisect (one row at a time took hours for a window of 100000)
    low, high = window - 1, window
    while not enough(high):
        low, high = high, 2 * high
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def synthetic_fits(n_rows: int, window: int, validation_fraction: float) -> bool:
    """Can the held-out part of ``n_rows`` rows take one synthetic anomaly of ``window`` rows?

    :func:`~tinywarden.tune.synthetic.inject` starts its first segment one segment plus its two-segment gap
    in, and the segment must end before the last row: the part needs more than four segments.
    """
    held_out = n_rows - int(round(n_rows * (1.0 - validation_fraction)))
    return held_out > 4 * window


def window_plan(n_rows: int, windows: Sequence[int] | None, validation_fraction: float
                ) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
    """``({window: stride} the data is long enough for, [(window, 1, rows it needs at stride 1)] it is not)``.

    Each window gets its default stride, or on short data the largest smaller stride the rows allow.
    ``windows=None`` means :data:`WINDOWS`, plus :data:`SHORT_WINDOWS` when the held-out part is too short
    for a synthetic anomaly at the smallest of them (:func:`synthetic_fits`; it then could not rank them).
    """
    wins = list(WINDOWS if windows is None else windows)
    if windows is None and not synthetic_fits(n_rows, min(WINDOWS), validation_fraction):
        wins += list(SHORT_WINDOWS)
    plan: dict[int, int] = {}
    short: list[tuple[int, int, int]] = []
    for w in dict.fromkeys(wins):
        need = min_rows(w, 1, validation_fraction)  # the least it could do with
        if n_rows < need:
            short.append((w, 1, need))
            continue
        # a longer stride needs more rows: bisect for the longest, up to the default, that the rows allow
        low, high = 1, default_stride(w) + 1
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if n_rows >= min_rows(w, mid, validation_fraction) else (low, mid)
        plan[w] = low
    # windows the synthetic check can score first, so a trial limit does not spend itself on unranked ones
    plan = dict(sorted(plan.items(), key=lambda ws: not synthetic_fits(n_rows, ws[0], validation_fraction)))
    return plan, short


def measure(program: Program, target: str, cache: dict[str, ModuleSize] | None = None) -> ModuleSize:
    """Generate the C for ``program`` and size it with ``arm-none-eabi-size`` (cached by model id)."""
    key = f"{program.model_id}:{target}"
    if cache is not None and key in cache:
        return cache[key]
    with tempfile.TemporaryDirectory(prefix="tw-tune-") as tmp:
        write_c(program, tmp)
        size = module_size(Path(tmp), target)
    if cache is not None:
        cache[key] = size
    return size


def input_candidates(families: Sequence[str], n_all: int, n_varying: int,
                     windows: Sequence[int] = WINDOWS, strides: dict[int, int] | None = None) -> list[Candidate]:
    """The input stage: every window x feature set x channel choice with the probe detector.

    The stride of window ``w`` is ``strides[w]`` when given (see :func:`window_plan`), else
    ``w // STRIDE_DIVISOR``.
    """
    strides = strides or {}
    fam, first = next((f, p) for f, p in (PROBE, FALLBACK_PROBE, (families[0], search_space(families[0])[0]))
                      if f in families)
    params = tuple(sorted(first.items()))
    out = []
    for w in windows:
        for name, feats in FEATURE_SETS.items():
            for ch in CHANNEL_CHOICES:
                if ch == "varying" and n_varying == n_all:
                    continue  # the same candidate as "all"
                out.append(Candidate(fam, params, w, strides.get(w, default_stride(w)), name, feats, ch))
    return out


def model_candidates(families: Sequence[str], inputs: Sequence[Candidate], done: set[Candidate]) -> list[Candidate]:
    """The model stage: every family and size on each of the chosen input choices."""
    out = []
    for base in inputs:
        for fam in families:
            for params in search_space(fam):
                c = dataclasses.replace(base, family=fam, params=tuple(sorted(params.items())))
                if c not in done:
                    out.append(c)
    return out


def rank_key(t: Trial) -> tuple[bool, bool, float, float, int]:
    """Best first: not far over the target FPR, within the FPR limit, then (over the limit) the lowest FPR, then
    quality, then smaller flash; a trial with ``fpr_far`` (see :data:`FAR_FPR_FACTOR`) after every other."""
    q = t.quality if math.isfinite(t.quality) else -1.0
    return (not t.fpr_far, t.fpr_ok, 0.0 if t.fpr_ok else -t.fpr, q, -(t.flash or 0))


def label_free_key(t: Trial) -> tuple[bool, bool, float, float, int]:
    """:func:`rank_key` with the quality read from the synthetic anomalies alone (labels left out)."""
    return rank_key(dataclasses.replace(t, quality=t.synthetic_auc))


def choose(ok: Sequence[Trial]) -> Trial:
    """The trial ``tune`` returns: the best by :func:`rank_key` when no candidate has a labelled AUC; with labels,
    the highest labelled AUC among the :data:`SHORTLIST` best by :func:`label_free_key` (not far over the FPR
    target when any such candidate exists)."""
    if not any(t.labelled_auc is not None for t in ok):
        return max(ok, key=rank_key)
    ranked = sorted(ok, key=label_free_key, reverse=True)
    short = [t for t in ranked if not t.fpr_far][:SHORTLIST] or ranked[:SHORTLIST]
    return max(short, key=lambda t: (t.labelled_auc if t.labelled_auc is not None else -1.0, label_free_key(t)))


def ensemble_candidates(trials: Sequence[Trial], families: Sequence[str], done: set[Candidate]) -> list[Candidate]:
    """Ensembles of the best scored candidate (by :func:`label_free_key`) and the next best of other feature
    families with an int8 path on the same input, :data:`ENSEMBLE_SIZES` members each (none when the
    ``ensemble`` family is not searched or the best reads the raw window)."""
    if "ensemble" not in families:
        return []
    ranked = sorted((t for t in trials if t.status == "ok" and not t.fpr_far), key=label_free_key, reverse=True)
    if not ranked or REGISTRY[ranked[0].candidate.family].input_kind != "features":
        return []
    base = ranked[0].candidate
    members: list[Candidate] = []
    for t in ranked:
        c = t.candidate
        if ((c.window, c.features, c.channels) == (base.window, base.features, base.channels)
                and c.family != "ensemble" and REGISTRY[c.family].input_kind == "features"
                and c.family not in {m.family for m in members}):
            members.append(c)
    out = []
    for m in ENSEMBLE_SIZES:
        if len(members) >= m:
            spec = member_spec([(c.family, dict(c.params)) for c in members[:m]])
            cand = dataclasses.replace(base, family="ensemble", params=(("members", spec),))
            if cand not in done:
                out.append(cand)
    return out


def tune(
    train: Series,
    budget: Budget,
    *,
    families: Sequence[str] | None = None,
    windows: Sequence[int] | None = None,
    max_trials: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    validation_fraction: float = 0.2,
    target_fpr: float = 0.01,
    k: int = 2,
    n: int = 3,
    fpr_limit: float | None = None,
    validate: Series | None = None,
    progress: Progress | None = None,
    likelihood_gate: float | None = None,
) -> TuneResult:
    """Search pipelines for ``train`` (normal telemetry) whose generated C fits ``budget``; refit the best.

    ``fpr_limit`` (default ``5 * target_fpr``) is the highest false-positive rate on the validation part,
    at the calibrated threshold, a candidate may have to rank above those that exceed it. ``validate`` is
    optional labelled data (0 normal / 1 anomalous rows) whose ROC AUC is averaged into the quality.
    ``likelihood_gate`` is every candidate's :attr:`Pipeline.likelihood_gate` (it changes no score, so no ranking).
    ``windows=None`` tries :data:`WINDOWS`, and :data:`SHORT_WINDOWS` too when the data is too short for
    the smallest of them; on short data a window's stride shrinks to what the rows allow
    (:func:`window_plan`, said in ``TuneResult.windows_note``).
    A candidate whose validation FPR is more than :data:`FAR_FPR_FACTOR` times ``target_fpr`` ranks last; when
    only such candidates were scored, the lowest-FPR one is returned with ``TuneResult.warning`` saying so.
    When no channel varies in the fitting part nothing can rank candidates: the result is
    :data:`CONSTANT_DATA_FAMILY`'s rule at the smallest window, with ``warning`` saying so.
    Raises :class:`DataError` when the data is too short for every window (naming the rows the smallest
    needs) or every candidate failed for a data reason, :class:`BudgetError` when candidates were over budget.
    """
    start = time.monotonic()
    fams = _check_families(families)
    if windows is not None and (not windows or any(not isinstance(w, int) or w < 4 for w in windows)):
        raise ConfigError(f"windows must be integers >= 4, got {list(windows)}")
    if not 0.05 <= validation_fraction <= 0.5:
        raise ConfigError(f"validation fraction must be in [0.05, 0.5], got {validation_fraction}")
    if max_trials is not None and max_trials < 1:
        raise ConfigError(f"--trials must be >= 1, got {max_trials}")
    if time_budget is not None and not time_budget > 0:  # NaN too: it would never stop the search
        raise ConfigError(f"time budget must be a positive number of seconds, got {time_budget}")
    # Checked here, not left to each candidate: every one would fail the same way and the search would end
    # blaming the budget.
    check_target_fpr(target_fpr)
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ConfigError(f"seed: must be a non-negative integer, got {seed!r}")
    limit = 5 * target_fpr if fpr_limit is None else fpr_limit
    check_gate(likelihood_gate)

    unsupported = {}
    for fam in fams:
        reason = int8_support(fam)
        if reason is not None:
            unsupported[fam] = reason
    fams = [f for f in fams if f not in unsupported]
    if not fams:
        raise ConfigError("none of the families has an int8 path: "
                          + "; ".join(f"{f}: {r}" for f, r in unsupported.items()))

    plan, too_short = window_plan(len(train), windows, validation_fraction)
    if not plan:
        w, st, need = min(too_short)
        raise DataError(f"{train.source}: {len(train)} rows are too few to tune: the smallest window tried, {w} rows "
                        f"at stride {st}, needs at least {need} rows of normal data (its fit and calibration windows "
                        f"plus {MIN_VALIDATION_WINDOWS} held-out windows at validation fraction "
                        f"{validation_fraction:g}); record longer or pass smaller --windows")
    windows_note = _windows_note(len(train), windows, plan, too_short)
    fit_part, val_part = train.split(1.0 - validation_fraction)
    normal = fit_part.values if fit_part.labels is None else fit_part.values[fit_part.labels == 0]
    spread = normal.std(axis=0) if len(normal) else np.zeros(train.n_channels)
    varying = tuple(c for c, sd in zip(train.channels, spread, strict=True) if sd > 0)
    channel_sets = {"all": tuple(train.channels), "varying": varying}
    if not varying:
        return _constant_data(train, fams, plan, budget, channel_sets, target_fpr, k, n, validation_fraction,
                              unsupported, limit, windows_note, likelihood_gate)

    labelled: list[tuple[str, Series]] = []
    labels_used: list[str] = []
    if validate is not None:
        if validate.labels is None or not validate.labels.any():
            raise DataError(f"{validate.source}: --validate data needs a label column with anomalous rows")
        labelled.append((validate.source, validate))
        labels_used.append(validate.source)
    if val_part.labels is not None and val_part.labels.any():
        labelled.append((f"{train.source} (validation part)", val_part))
        labels_used.append(f"{train.source} (labelled rows of its last {validation_fraction:.0%})")
    clean_val = val_part
    if val_part.labels is not None and val_part.labels.any():
        # Synthetic anomalies go into normal rows only; filling the labelled rows in would invent data,
        # so the synthetic check uses the longest stretch without a labelled row.
        clean_val = _longest_normal_stretch(val_part)
    validator = _Validator(clean_val, spread, seed, labelled, train, len(val_part))

    trials: list[Trial] = []
    size_cache: dict[str, ModuleSize] = {}
    stopped: str | None = None

    def run_stage(cands: list[Candidate], stage: str) -> None:
        nonlocal stopped
        for i, c in enumerate(cands):
            if max_trials is not None and sum(t.measured for t in trials) >= max_trials:
                stopped = stopped or f"trial limit {max_trials} reached"
                return
            if time_budget is not None and time.monotonic() - start > time_budget:
                stopped = stopped or f"time budget {time_budget:g} s reached"
                return
            if progress is not None:
                progress(len(trials), len(trials) + len(cands) - i, c.label)
            if any(_smaller_over_budget(c, t) for t in trials):
                trials.append(Trial(c, stage, status="skipped: a smaller size was over budget"))
                continue
            trials.append(_run_trial(c, stage, channel_sets[c.channels], fit_part, budget, validator,
                                     target_fpr, k, n, limit, size_cache, likelihood_gate))

    first = input_candidates(fams, len(channel_sets["all"]), len(varying), list(plan), plan)
    run_stage(first, "inputs")
    # An input choice on which the probe itself does not fit (e.g. PCA on many features) still gets
    # ranked, by the fallback probe: the smaller families may fit it.
    fallback, fb_params = FALLBACK_PROBE
    if first and first[0].family != fallback and fallback in fams:
        too_big = [dataclasses.replace(t.candidate, family=fallback, params=tuple(sorted(fb_params.items())))
                   for t in trials if t.stage == "inputs" and (t.status in ("over budget", "pre-filtered")
                                                               or t.status.startswith(TOO_WIDE))]
        run_stage(too_big, "inputs")
    done = {t.candidate for t in trials}
    best_inputs: list[Candidate] = []
    for t in sorted((t for t in trials if t.status == "ok"), key=rank_key, reverse=True):
        if len(best_inputs) < TOP_INPUTS and t.candidate.feature_set not in {b.feature_set for b in best_inputs}:
            best_inputs.append(t.candidate)
    run_stage(model_candidates(fams, best_inputs, done), "models")
    run_stage(ensemble_candidates(trials, fams, {t.candidate for t in trials}), "ensembles")
    if progress is not None:
        progress(len(trials), len(trials), "done")

    ok = [t for t in trials if t.status == "ok"]
    if not ok and stopped:
        # the search did not finish: nothing scored yet is not proof that nothing fits
        tried = sum(t.status in ("over budget", "pre-filtered") for t in trials)
        raise ConfigError(f"{train.source}: {stopped} before any candidate was built and scored within budget "
                          f"({tried} tried were over it); allow more time with --time-budget or more --trials")
    if not ok:
        data_failed = [t for t in trials if t.data_problem]
        if data_failed:
            raise DataError(_data_refusal(data_failed, trials, train, validation_fraction))
        raise BudgetError(_nothing_fits(trials, budget, train))
    chosen = choose(ok)
    warning = _all_alarm(ok, chosen, train, target_fpr, stopped) if chosen.fpr_far else None
    pipeline, program, size, fit_series = _refit(chosen, train, channel_sets, budget, target_fpr, k, n, size_cache,
                                                 likelihood_gate)
    if not budget.fits(size):
        # Refitting on all rows changed a size-relevant constant (a shift folded into code): keep the
        # model that was measured within budget rather than ship one that is not.
        assert chosen.pipeline is not None and chosen.program is not None and chosen.size is not None
        pipeline, program, size = chosen.pipeline, chosen.program, chosen.size
        fit_series = select_channels(fit_part, channel_sets[chosen.candidate.channels])
    return TuneResult(budget, trials, chosen, pipeline, program, size, fit_series, labels_used, unsupported,
                      limit, stopped, windows_note, warning)


#: What tune returns when no channel varies in the fitting part: nothing can rank candidates there (synthetic
#: anomalies are scaled to a channel's spread), so the rule family with the smallest window: any value off
#: the trained one alarms (the first family asked for when ``bounds`` is not among them).
CONSTANT_DATA_FAMILY = "bounds"


def _constant_data(train: Series, fams: Sequence[str], plan: dict[int, int], budget: Budget,
                   channel_sets: dict[str, tuple[str, ...]], target_fpr: float, k: int, n: int,
                   validation_fraction: float, unsupported: dict[str, str], fpr_limit: float,
                   windows_note: str | None, likelihood_gate: float | None = None) -> TuneResult:
    """The pipeline for data in which no channel varies (a sensor that held one value while it was recorded):
    :data:`CONSTANT_DATA_FAMILY` at the smallest window the rows allow, fitted on all of them, with a warning
    that says why nothing was searched. Raises :class:`BudgetError` when even that does not fit."""
    fam = CONSTANT_DATA_FAMILY if CONSTANT_DATA_FAMILY in fams else fams[0]
    window = min(plan)
    cand = Candidate(fam, tuple(sorted(search_space(fam)[0].items())), window, plan[window], "small",
                     FEATURE_SETS["small"], "all")
    trial = Trial(cand, "constant data", flash_bound=flash_lower_bound(cand, train.n_channels),
                  ram_bound=ram_lower_bound(cand, train.n_channels))
    cache: dict[str, ModuleSize] = {}
    pipeline, program, size, fit_series = _refit(trial, train, channel_sets, budget, target_fpr, k, n, cache,
                                                 likelihood_gate)
    trial.flash, trial.ram = size.flash, size.ram_with_state
    if not budget.fits(size):
        trial.status = "over budget"
        raise BudgetError(_nothing_fits([trial], budget, train))
    trial.status, trial.program, trial.pipeline, trial.size = "ok", program, pipeline, size
    warning = (f"{train.source}: no channel varies in the first {1 - validation_fraction:.0%} of its rows, so "
               f"nothing can rank candidates; returned {cand.label}, which alarms on any value off the recorded "
               "one: record the device while it works normally for a learned model")
    return TuneResult(budget, [trial], trial, pipeline, program, size, fit_series, [], unsupported, fpr_limit,
                      None, windows_note, warning)


def _smaller_over_budget(c: Candidate, t: Trial) -> bool:
    """Was ``t`` a smaller size of ``c``'s family on the same inputs, and over budget? (sizes grow along
    the family's search space, so ``c`` cannot fit either)."""
    o = t.candidate
    if t.status != "over budget" or o.family != c.family or (o.window, o.features, o.channels) != (
            c.window, c.features, c.channels):
        return False
    sizes = [tuple(sorted(p.items())) for p in search_space(c.family)]
    return o.params in sizes and c.params in sizes and sizes.index(o.params) < sizes.index(c.params)


def _check_families(families: Sequence[str] | None) -> list[str]:
    if families is None:
        return list(REGISTRY)
    fams = [f.strip() for f in families if f.strip()]
    unknown = [f for f in fams if f not in REGISTRY]
    if unknown or not fams:
        raise ConfigError(f"unknown family {', '.join(unknown) or '(none given)'}; "
                          f"known: {', '.join(sorted(REGISTRY))}")
    return list(dict.fromkeys(fams))


def _longest_normal_stretch(series: Series) -> Series:
    assert series.labels is not None
    best, cur_start, best_span = (0, 0), 0, 0
    for i, lab in enumerate(np.r_[series.labels, 1]):
        if lab:
            if i - cur_start > best_span:
                best, best_span = (cur_start, i), i - cur_start
            cur_start = i + 1
    return series.slice(*best)


def _run_trial(c: Candidate, stage: str, channels: tuple[str, ...], fit_part: Series, budget: Budget,
               validator: _Validator, target_fpr: float, k: int, n: int, fpr_limit: float,
               cache: dict[str, ModuleSize], likelihood_gate: float | None = None) -> Trial:
    t = Trial(c, stage)
    wide = too_wide(make_detector(c.family, **dict(c.params)), len(channels), c.features)
    if wide is not None:
        t.status = f"{TOO_WIDE}: {wide}"
        return t
    t.flash_bound, t.ram_bound = flash_lower_bound(c, len(channels)), ram_lower_bound(c, len(channels))
    if t.flash_bound > budget.flash or t.ram_bound > budget.ram:
        t.status = "pre-filtered"
        return t
    began = time.monotonic()
    try:
        series = select_channels(fit_part, channels)
        pipe = c.pipeline(target_fpr, k, n, likelihood_gate).fit(series)
        program = quantize_pipeline(pipe, series)
        size = measure(program, budget.target, cache)
        t.flash, t.ram = size.flash, size.ram_with_state
        if not budget.fits(size):
            t.status = "over budget"
            return t
        if validator.needs_folds(c.window, c.stride):
            t.synthetic_auc, t.auc_by_type, t.fpr, t.folds = validator.score_folds(c, channels, target_fpr, k, n)
            t.labelled_auc = validator.score_labelled(program, channels)
        else:
            t.synthetic_auc, t.auc_by_type, t.fpr, t.labelled_auc = validator.score(program, channels)
    except DataError as exc:
        t.status = f"failed: {exc}"
        t.data_problem = True
        return t
    except TinywardenError as exc:
        t.status = f"failed: {exc}"
        return t
    except (ValueError, ArithmeticError) as exc:
        # a numerical library giving up on this candidate's data must not end the whole search
        t.status = f"failed: {type(exc).__name__}: {exc}"
        return t
    finally:
        t.seconds = time.monotonic() - began
    t.quality = t.synthetic_auc if t.labelled_auc is None else (t.synthetic_auc + t.labelled_auc) / 2.0
    t.fpr_ok = t.fpr <= fpr_limit
    t.fpr_far = t.fpr > FAR_FPR_FACTOR * target_fpr
    t.program, t.pipeline, t.size = program, pipe, size
    t.status = "ok"
    return t


def _refit(chosen: Trial, train: Series, channel_sets: dict[str, tuple[str, ...]], budget: Budget,
           target_fpr: float, k: int, n: int, cache: dict[str, ModuleSize], likelihood_gate: float | None = None
           ) -> tuple[Pipeline, Program, ModuleSize, Series]:
    """The chosen candidate fitted (and int8-calibrated) on all the training rows, measured again."""
    series = select_channels(train, channel_sets[chosen.candidate.channels])
    pipe = chosen.candidate.pipeline(target_fpr, k, n, likelihood_gate)
    pipe.check_width(series)  # the constant-data rule was not a trial
    pipe.fit(series)
    program = quantize_pipeline(pipe, series)
    return pipe, program, measure(program, budget.target, cache), series


def _windows_note(n_rows: int, windows: Sequence[int] | None, plan: dict[int, int],
                  too_short: list[tuple[int, int, int]]) -> str | None:
    """One sentence on what the data's length changed in the windows/strides tried, or ``None``."""
    changed = [f"{w}/{s}" for w, s in plan.items() if s != default_stride(w) or (windows is None and w not in WINDOWS)]
    if not changed and not too_short:
        return None
    parts = [f"{n_rows} rows: tried window/stride {', '.join(f'{w}/{s}' for w, s in plan.items())}"]
    if changed:
        parts.append(f"short-data choices {', '.join(changed)}")
    if too_short:
        parts.append("skipped " + ", ".join(f"{w} (needs {need} rows)" for w, _, need in too_short))
    return "; ".join(parts)


def _data_refusal(failed: list[Trial], trials: list[Trial], train: Series, validation_fraction: float) -> str:
    """One line for a search in which no candidate could be scored because the data holds too few windows."""
    small = min(failed, key=lambda t: (t.candidate.window, t.candidate.stride))
    c = small.candidate
    need = min_rows(c.window, c.stride, validation_fraction)
    over = sum(t.status in ("over budget", "pre-filtered") for t in trials)
    return (f"{train.source}: {len(train)} rows hold too few windows to fit and validate any candidate; the smallest "
            f"window tried, {c.window} rows at stride {c.stride}, needs at least {need} rows of normal data "
            f"(e.g. {small.status.removeprefix('failed: ')})"
            + (f"; {over} other candidate(s) were also over budget" if over else "")
            + "; record longer or pass smaller --windows")


def _all_alarm(ok: list[Trial], chosen: Trial, train: Series, target_fpr: float, stopped: str | None) -> str:
    """One line for a search in which every scored candidate alarms far too often on held-out normal data."""
    return (f"{train.source}: every candidate scored ({len(ok)}) alarms on held-out normal windows far more often "
            f"than the target {target_fpr:g}; the chosen one, the lowest, on {chosen.fpr:.0%} of them: the normal "
            "data does not look the same from one part of the recording to another"
            + (f" ({stopped}: allow more --trials or --time-budget)" if stopped else "")
            + "; record a longer stretch of normal operation covering its usual modes before deploying it")


def _nothing_fits(trials: list[Trial], budget: Budget, train: Series) -> str:
    wide = [t for t in trials if t.status.startswith(TOO_WIDE)]
    wide_example = f"{wide[0].candidate.label}: {wide[0].status.removeprefix(f'{TOO_WIDE}: ')}" if wide else ""
    if wide and len(wide) == len(trials):
        return (f"{train.source}: every candidate has more inputs than its family's int8 program takes, e.g. "
                f"{wide_example}; nothing was fitted: select fewer channels")
    bounds = [t for t in trials if t.status == "pre-filtered"]
    measured = [t for t in trials if t.flash is not None]
    parts = [f"no pipeline for {train.source} ({train.n_channels} channels) fits {budget.flash} B flash / "
             f"{budget.ram} B RAM on {budget.target}"]
    if measured:
        small = min(measured, key=lambda t: (t.flash or 0) + (t.ram or 0))
        parts.append(f"the smallest built, {small.candidate.label}, measures {small.flash} B flash / {small.ram} B RAM")
    elif bounds:
        small = min(bounds, key=lambda t: t.flash_bound + t.ram_bound)
        parts.append(f"even {small.candidate.label} needs at least {small.flash_bound} B flash / "
                     f"{small.ram_bound} B RAM")
    failed = [t for t in trials if t.status.startswith("failed")]
    if failed:
        parts.append(f"{len(failed)} candidate(s) failed, e.g. {failed[0].candidate.label}: {failed[0].status}")
    if wide:
        parts.append(f"{len(wide)} had more inputs than their family's int8 program takes, e.g. {wide_example}")
    if measured or bounds:
        parts.append("raise --flash/--ram or use fewer channels")
    return "; ".join(parts)
