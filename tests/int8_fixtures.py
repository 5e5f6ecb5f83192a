"""Shared, cached fitted pipelines and int8 programs for the quantize / program / codegen tests."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest

from tinywarden.detectors import REGISTRY, make_detector
from tinywarden.pipeline import Pipeline
from tinywarden.program import Program
from tinywarden.quantize import quantize_pipeline
from tinywarden.simulate import simulate
from tinywarden.telemetry.io import read_series
from tinywarden.telemetry.series import Series

TRAIN_DAYS = 1.5
#: Smaller training budgets for the slow families; every other registered family runs at its defaults.
SMALL = {"dense_ae": {"epochs": 8, "max_steps": 300}, "conv_ae": {"epochs": 4, "max_steps": 200},
         "ewma": {}, "kmeans": {"n_init": 1}, "pca": {}, "knn": {}, "bounds": {}, "iforest": {}, "ar": {}, "ocsvm": {},
         "gru_ae": {"epochs": 4, "max_steps": 200}}
#: Every registered family with an int8 path: the parametrisation of the int8, C and model-file tests.
INT8_FAMILIES = [name for name, cls in REGISTRY.items() if cls.has_int8_path()]


def data_dir() -> Path:
    return Path(os.environ.get("TINYWARDEN_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))


@functools.cache
def camera() -> tuple[Series, Series]:
    """(whole simulated camera series, its attack-free training part)."""
    s = simulate("camera", 3.0, "all", seed=11, attack_free_days=TRAIN_DAYS)
    cut = int(np.searchsorted(s.timestamps, s.timestamps[0] + TRAIN_DAYS * 86400.0))
    return s, s.slice(0, cut)


@functools.cache
def fitted(detector: str) -> tuple[Pipeline, Program]:
    """A small fitted pipeline on the simulated camera and its int8 program."""
    _, train = camera()
    p = Pipeline(make_detector(detector, **SMALL.get(detector, {}))).fit(train)
    return p, quantize_pipeline(p, train)


def shared_entity(which: str, smd_detector: str = "dense_ae", **smd_params: object) -> tuple[Program, np.ndarray]:
    """A program fitted on a real entity of the shared data and the first 12,000 rows to run it on: SMD
    machine-1-6 (``smd_detector``, window 64 / stride 32, on its train split) or NAB machine_temperature
    (kmeans, window 32 / stride 8, fitted on its first 15 %). Skips the test when the data is not there."""
    root = data_dir()
    if which == "smd":
        path = root / "smd_asd" / "npz" / "machine-1-6.npz"
    else:
        path = root / "nab" / "data" / "realKnownCause" / "machine_temperature_system_failure.csv"
    if not path.exists():
        pytest.skip(f"shared data not found at {path} (set TINYWARDEN_DATA)")
    if which == "smd":
        train, test = read_series(f"{path}:train"), read_series(f"{path}:test")
        pipe = Pipeline(make_detector(smd_detector, **smd_params), window=64, stride=32).fit(train)
    else:
        test = read_series(path)
        train, _ = test.split(0.15)
        pipe = Pipeline(make_detector("kmeans", n_init=1), window=32, stride=8).fit(train)
    return quantize_pipeline(pipe, train), test.values[:12000]
