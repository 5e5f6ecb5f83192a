"""Windowing and features: one definition serves the streaming and the batch path."""

from tinywarden.features.extract import (
    DEFAULT_FEATURES,
    FEATURE_POWER,
    FEATURE_TABLE,
    FEATURES,
    Feature,
    check_features,
    extract,
    feature_names,
)
from tinywarden.features.stream import StreamingFeatures, batch_features
from tinywarden.features.window import RingBuffer, batch_windows, check_window, window_end_rows

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURES",
    "FEATURE_POWER",
    "FEATURE_TABLE",
    "Feature",
    "RingBuffer",
    "StreamingFeatures",
    "batch_features",
    "batch_windows",
    "check_features",
    "check_window",
    "extract",
    "feature_names",
    "window_end_rows",
]
