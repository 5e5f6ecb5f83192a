"""The one exception family of tinywarden.

Every error a user can cause (a bad file, a bad option, a tampered model) is a
:class:`TinywardenError`; its message names the file, row, column, field or key at fault, so the CLI
can print it as one line and exit non-zero without a traceback.
"""

from __future__ import annotations


class TinywardenError(Exception):
    """Base class of every error tinywarden raises on purpose."""


class DataError(TinywardenError):
    """Telemetry input that cannot be used as it is (malformed cell, NaN, bad timestamps, ...)."""


class ConfigError(TinywardenError):
    """An invalid parameter, option or configuration value."""


class ModelFileError(TinywardenError):
    """A model file that is corrupted, truncated or of an unknown format version."""


class NotFittedError(TinywardenError):
    """A detector or pipeline used before it was fitted."""
