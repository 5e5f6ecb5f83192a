"""A small real model and policy for bundle tests: install now loads both, so opaque bytes no longer do."""

from __future__ import annotations

import functools

from conftest import CAMERA_POLICY, make_series
from tinywarden.detectors import make_detector
from tinywarden.modelfile import pipeline_to_bytes
from tinywarden.pipeline import Pipeline

POLICY = CAMERA_POLICY.encode()


@functools.cache
def model_bytes(seed: int = 0) -> bytes:
    """A fitted two-channel ewma pipeline as ``.twb`` bytes (``seed`` gives a different model)."""
    p = Pipeline(make_detector("ewma"), window=16, stride=8).fit(make_series(1200, 2, seed=seed))
    return pipeline_to_bytes(p)
