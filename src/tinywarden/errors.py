"""The one exception family of tinywarden.

Every error a user can cause (a bad file, a bad option, a tampered model) is a
:class:`TinywardenError`; its message names the file, row, column, field or key at fault, so the CLI
can print it as one line and exit non-zero without a traceback.
"""

from __future__ import annotations


class TinywardenError(Exception):
    """Base class of every error tinywarden raises on purpose."""


class DataError(TinywardenError, ValueError):
    """Telemetry input that cannot be used as it is (malformed cell, NaN, bad timestamps, ...).

    Also a :class:`ValueError`, which is what scikit-learn's conventions (and its ``check_estimator``)
    expect a detector to raise on bad input.
    """


class DataTypeError(DataError, TypeError):
    """Input of a kind that cannot hold telemetry (a sparse matrix, cells that are not numbers).

    Also a :class:`TypeError`, as scikit-learn raises for the same input.
    """


class ConfigError(TinywardenError):
    """An invalid parameter, option or configuration value."""


class ModelFileError(TinywardenError):
    """A model file that is corrupted, truncated or of an unknown format version."""


class NotFittedError(TinywardenError):
    """A detector or pipeline used before it was fitted."""


#: Modules of the ``train`` extra (pyproject.toml); a runtime-only install (a gateway) has none of them.
TRAIN_EXTRA = ("sklearn", "torch", "matplotlib")


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line message for a module of the ``train`` extra missing on a runtime-only install, or None
    when ``exc`` is about another module (a real defect, to be raised as it is)."""
    top = (exc.name or "").split(".")[0]
    if top not in TRAIN_EXTRA:
        return None
    return (f"this command needs {top}, part of the train extra that a runtime-only install leaves out: "
            "pip install 'tinywarden[train]'")
