"""One device's job on a worker: read its partition, learn its normal, quantize, size, bundle (unsigned), score.

This is what a Dask task runs (:mod:`tinywarden.fleet.run`). It returns the *unsigned* bundle: signing
happens on the machine that holds the key (:mod:`tinywarden.fleet.ledger`), so the private key never
travels to a worker. The learning is the library's own: :class:`~tinywarden.pipeline.Pipeline` (what
``tinywarden train`` fits) or :func:`tinywarden.tune.tune` (what ``tinywarden tune`` searches), then
:func:`~tinywarden.quantize.int8_sections`, :func:`~tinywarden.modelfile.pipeline_to_bytes` and
:func:`~tinywarden.bundle.create_bundle`.

Training data is the device's *attack-free span* from the manifest: the rows before ``train_until``,
passed to the learner without labels. Labels are read only to score the rest of the run for the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinywarden.errors import DataError, TinywardenError
from tinywarden.fleet.dataset import partition_file, read_device
from tinywarden.fleet.manifest import DeviceSpec
from tinywarden.telemetry.series import Series

#: Environment variables that size the thread pools of OpenMP, OpenBLAS and MKL (torch reads the first).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
_threads_limited = False

#: Bin edges of the calibrated confidence histograms: finer towards 1, where a fleet threshold sits.
CONFIDENCE_EDGES = np.concatenate(([0.0], 1.0 - np.logspace(0.0, -5.0, 51)[1:], [1.0]))


@dataclass(frozen=True)
class TrainOptions:
    """How every device of a fleet is trained: plain ``train`` settings, or ``tune`` under a budget."""

    model: str = "pca"
    window: int = 32
    stride: int = 16
    target_fpr: float = 0.01
    k: int = 2
    n: int = 3
    tune: bool = False
    flash: int = 8192
    ram: int = 4096
    target: str = "cortex-m4"
    trials: int | None = 8
    #: profile -> model-file bytes of its cold-start model (``fleet coldstart``): a device with fewer than
    #: ``min_own_rows`` attack-free rows is bundled with its profile's model instead of one of its own
    profile_models: dict[str, bytes] = field(default_factory=dict)
    min_own_rows: int = 8640  # a day of 10 s rows


@dataclass
class DeviceOutcome:
    """What a worker sends back for one device: an unsigned bundle and its summary, or the error."""

    device_id: str
    ok: bool
    error: str = ""
    unsigned: bytes = b""
    summary: dict[str, Any] = field(default_factory=dict)


def attack_free_span(series: Series, spec: DeviceSpec) -> Series:
    """The rows before the manifest's ``train_until``, without labels (training never sees them)."""
    cut = int(np.searchsorted(series.timestamps, spec.train_until, side="left"))
    if cut == 0:
        raise DataError(f"{spec.device_id}: no attack-free rows: the partition starts at "
                        f"{series.timestamps[0]:.0f}, at or after the manifest's train_until {spec.train_until:.0f}")
    return dataclasses.replace(series.slice(0, cut), labels=None, attacks=None)


def one_thread_per_worker() -> None:
    """Limit this process's numeric libraries (BLAS, OpenMP, torch) to one thread each.

    A fleet worker is one single-threaded process per core, so a BLAS or torch pool of its own would put
    ``cores`` threads on every core, and OpenBLAS threads spin while they wait: with the pool at 2 threads
    a device's PCA fit took ten times the CPU (0.6 s instead of 0.06 s, benchmarks/results/fleet.md).
    ``dask worker`` started with its nanny already sets :data:`THREAD_VARIABLES` to 1; a worker started
    otherwise (``--no-nanny``, the in-process cluster, a scheduler of the user's) did not. Pools already
    loaded are limited with threadpoolctl, the variables cover libraries loaded later, torch is told
    directly; the work is done once per process.
    """
    global _threads_limited
    if not _threads_limited:
        for name in THREAD_VARIABLES:
            os.environ[name] = "1"
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
        _threads_limited = True
    torch = sys.modules.get("torch")  # imported by a task since (a torch family): its own pool
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def train_device(root: str, spec: DeviceSpec, options: TrainOptions, policy: bytes) -> DeviceOutcome:
    """Run one device's job; a :class:`TinywardenError` (bad data, too few rows) becomes a failed outcome.

    Anything else (a bug) is also caught and reported with its type, so one device cannot stop the fleet.
    The job runs with one compute thread (:func:`one_thread_per_worker`).
    """
    one_thread_per_worker()
    try:
        return _train(root, spec, options, policy)
    except TinywardenError as exc:
        return DeviceOutcome(spec.device_id, False, str(exc))
    except Exception as exc:  # noqa: BLE001 - a failed device is reported, never the end of the fleet
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return DeviceOutcome(spec.device_id, False,
                             f"{spec.device_id}: {type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})")


def _train(root: str, spec: DeviceSpec, options: TrainOptions, policy: bytes) -> DeviceOutcome:
    from tinywarden.bundle import create_bundle
    from tinywarden.modelfile import pipeline_to_bytes
    from tinywarden.tune.search import measure

    started, cpu0 = time.perf_counter(), _cpu_seconds()
    series = read_device(root, spec.device_id)
    train = attack_free_span(series, spec)
    cold = len(train) < options.min_own_rows and spec.profile in options.profile_models
    if cold:
        model = options.profile_models[spec.profile]
        pipeline, program, size = _load(model, spec.profile)
    else:
        pipeline, program, extra, arrays, size = _fit(train, options)
        model = pipeline_to_bytes(pipeline, extra=extra, extra_arrays=arrays)
    if size is None:
        size = measure(program, options.target)
    data_sha = hashlib.sha256(partition_file(root, spec.device_id).read_bytes()).hexdigest()
    meta = {"model_id": f"{spec.device_id}:{program.model_id}", "profile": spec.profile,
            "device_id": spec.device_id, "training_data_sha256": data_sha}
    unsigned = create_bundle(model, policy, meta)
    summary = {
        "device_id": spec.device_id, "profile": spec.profile, "family": pipeline.detector.name,
        "window": pipeline.window, "stride": pipeline.stride, "channels": list(pipeline.channels_),
        "flash": size.flash, "ram": size.ram_with_state, "target": options.target, "tuned": options.tune,
        "model_bytes": len(model), "train_rows": len(train), "model_id": meta["model_id"], "cold_start": cold,
        "training_data_sha256": data_sha, "attacked": spec.attacked,
        "firmware_update_day": spec.firmware_update_day,
        **score_rest(pipeline, series, len(train)),
    }
    summary |= {"task_seconds": round(time.perf_counter() - started, 3), "cpu_seconds": round(_cpu_seconds() - cpu0, 3)}
    return DeviceOutcome(spec.device_id, True, unsigned=unsigned, summary=summary)


def _cpu_seconds() -> float:
    """CPU time of this process and of the tools it ran and waited for (the compiler that sizes the module)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _load(model: bytes, profile: str) -> tuple[Any, Any, None]:
    """(pipeline, int8 program, None) of a profile's cold-start model file."""
    from tinywarden.modelfile import pipeline_from_bytes
    from tinywarden.quantize.ptq import load_program

    source = f"cold-start model of profile {profile}"
    pipeline = pipeline_from_bytes(model, source)
    return pipeline, load_program(pipeline, source), None


def _fit(train: Series, options: TrainOptions) -> tuple[Any, Any, dict[str, Any], dict[str, np.ndarray], Any]:
    """(pipeline, int8 program, model-file header sections, arrays, measured size or None)."""
    from tinywarden.program import INT8_HEADER_KEY, to_model_file

    if options.tune:
        from tinywarden.tune import Budget, tune

        result = tune(train, Budget(options.flash, options.ram, options.target), max_trials=options.trials,
                      target_fpr=options.target_fpr, k=options.k, n=options.n)
        header, arrays = to_model_file(result.program)
        result.pipeline.train_summary_["tune"] = result.summary()
        return result.pipeline, result.program, {INT8_HEADER_KEY: header}, arrays, result.size
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize.ptq import quantize_pipeline

    pipeline = Pipeline(make_detector(options.model), options.window, options.stride,
                        target_fpr=options.target_fpr, k=options.k, n=options.n)
    pipeline.check_width(train)  # a fleet bundle must carry the int8 program a device runs
    pipeline.fit(train)
    program = quantize_pipeline(pipeline, train)
    header, arrays = to_model_file(program)
    return pipeline, program, {INT8_HEADER_KEY: header}, arrays, None


def score_rest(pipeline: Any, series: Series, skip_rows: int) -> dict[str, Any]:
    """False alarms per day and detection on the rows after training, and confidence histograms.

    Uses the labels of the simulated attacks (the report's ground truth). Confidences are the pipeline's
    calibrated likelihood (:meth:`~tinywarden.pipeline.Pipeline.confidence`), binned on
    :data:`CONFIDENCE_EDGES` separately for normal windows and windows touching an attack.
    """
    from tinywarden.evaluate import WindowScores, evaluate
    from tinywarden.pipeline import normal_window_mask

    scored = pipeline.score(series)
    ws = WindowScores(scored.end_rows, pipeline.window, scored.scores, scored.raw_flags, scored.alarms,
                      scored.threshold)
    ev = evaluate(series, ws, params=pipeline.n_params_, model_bytes=pipeline.model_bytes_,
                  detector=pipeline.detector.name, skip_rows=skip_rows)
    after = scored.end_rows >= skip_rows
    normal = normal_window_mask(series.labels, scored.end_rows, pipeline.window)
    conf = pipeline.confidence(scored.scores, series, scored.end_rows)
    hist: dict[str, list[int]] = {}
    if conf is not None:
        hist = {"normal": np.histogram(conf[after & normal], CONFIDENCE_EDGES)[0].tolist(),
                "attack": np.histogram(conf[after & ~normal], CONFIDENCE_EDGES)[0].tolist()}
    return {"false_alarms_per_day": ev.false_alarms_per_day, "false_alarm_events": ev.false_alarm_events,
            "normal_days": ev.normal_days, "incidents": ev.n_incidents, "detected": ev.n_detected,
            "detection_rate": None if ev.n_incidents == 0 else ev.detection_rate,
            "window_fpr": ev.fpr, "confidence_hist": hist}
