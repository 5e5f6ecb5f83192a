"""Telemetry: the series type, file readers/writers and public-dataset loaders.

The names below load on first use (PEP 562), so that importing :mod:`tinywarden.telemetry.live` alone (the
lean agent's sampler) does not import numpy through the readers.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tinywarden.telemetry.io import iter_series, read_npz, read_series, write_csv, write_parquet
    from tinywarden.telemetry.series import Gap, Series

__all__ = ["Gap", "Series", "iter_series", "read_npz", "read_series", "write_csv", "write_parquet"]

_HOME = {"Gap": "series", "Series": "series", "iter_series": "io", "read_npz": "io", "read_series": "io",
         "write_csv": "io", "write_parquet": "io"}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
    globals()[name] = value
    return value
