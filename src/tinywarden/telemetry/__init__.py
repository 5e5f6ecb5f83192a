"""Telemetry: the series type, file readers/writers and public-dataset loaders."""

from tinywarden.telemetry.io import iter_series, read_npz, read_series, write_csv, write_parquet
from tinywarden.telemetry.series import Gap, Series

__all__ = ["Gap", "Series", "iter_series", "read_npz", "read_series", "write_csv", "write_parquet"]
