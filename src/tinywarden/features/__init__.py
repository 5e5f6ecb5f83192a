"""Windowing and features: one definition serves the streaming and the batch path."""

from tinywarden.features.extract import (
    DEFAULT_FEATURES,
    FEATURE_POWER,
    FEATURE_TABLE,
    FEATURES,
    Feature,
    check_crossings_block,
    check_features,
    crossings,
    crossings_of_level,
    extract,
    feature_names,
)
from tinywarden.features.stream import StreamingFeatures, batch_features
from tinywarden.features.window import (
    MIN_CROSSINGS_BLOCK,
    RingBuffer,
    batch_windows,
    block_size,
    check_window,
    crossings_block,
    window_end_rows,
)

__all__ = [
    "DEFAULT_FEATURES",
    "FEATURES",
    "FEATURE_POWER",
    "FEATURE_TABLE",
    "MIN_CROSSINGS_BLOCK",
    "Feature",
    "RingBuffer",
    "StreamingFeatures",
    "batch_features",
    "batch_windows",
    "block_size",
    "check_crossings_block",
    "check_features",
    "check_window",
    "crossings",
    "crossings_block",
    "crossings_of_level",
    "extract",
    "feature_names",
    "window_end_rows",
]
