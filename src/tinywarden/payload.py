"""What a bundle carries, loaded and checked the way the agent runs it: the fitted pipeline and its policy.

One function, :func:`load_payload`, used both by :func:`tinywarden.bundle.install_bundle` (before the
anti-rollback counter moves) and by the agent (before it swaps models), so a signed bundle whose model
or policy the agent cannot use is refused at install instead of locking the device out of every older
version. It checks everything that does not depend on the device's telemetry source: the model file
decodes into a fitted pipeline whose streaming scorer runs a window, the policy is UTF-8 TOML that
parses, its actions build and its tiers compile against the model's threshold. The mapping of the
model's channels onto the source's channels can only be checked by the agent, which knows the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinywarden.errors import ModelFileError, TinywardenError
from tinywarden.respond import Policy, PolicyError, compile_tables, parse_policy
from tinywarden.respond.actuators import build_actuators

if TYPE_CHECKING:  # the model's runtime (numpy) loads in load_payload only: check_policy needs none
    from tinywarden.pipeline import Pipeline
    from tinywarden.runtime import Int8Model

__all__ = ["Payload", "check_model", "check_policy", "load_payload"]


@dataclass(frozen=True)
class Payload:
    """A bundle's model and policy, ready to run: ``pipeline`` is the int8 runtime when the model file holds
    an int8 program (:func:`tinywarden.runtime.load_model`), else the float pipeline."""

    pipeline: Int8Model | Pipeline
    policy: Policy


def load_payload(model: bytes, policy: bytes, *, source: str, prefer_int8: bool = True) -> Payload:
    """Load a bundle's model and policy sections; a :class:`TinywardenError` names ``source`` and the section.

    >>> load_payload(b"model,csv\\n1,2\\n", b"", source="b.twbundle")
    Traceback (most recent call last):
    ...
    tinywarden.errors.ModelFileError: b.twbundle (model section): not a tinywarden model file ...
    """
    pipeline = check_model(model, f"{source} (model section)", prefer_int8=prefer_int8)
    return Payload(pipeline, check_policy(policy, float(pipeline.threshold_), source=source))


def check_model(model: bytes, where: str, *, prefer_int8: bool = True) -> Int8Model | Pipeline:
    """A model file's bytes, loaded as :func:`load_payload` loads a bundle's model section and run through one
    window; a :class:`ModelFileError` starts with ``where``.

    >>> check_model(b"model,csv\\n1,2\\n", "data.csv")
    Traceback (most recent call last):
    ...
    tinywarden.errors.ModelFileError: data.csv: not a tinywarden model file ...
    """
    import numpy as np

    from tinywarden.runtime import load_model

    pipeline = load_model(model, where, prefer_int8=prefer_int8)
    try:
        # One window through the streaming scorer: a model that decodes but cannot score fails here,
        # not after it has become the accepted version. Only exceptions count; the score may be anything.
        scorer = pipeline.stream()
        zeros = np.zeros(len(pipeline.channels_))
        for _ in range(pipeline.window):
            scorer.push(zeros)
    except TinywardenError as exc:
        raise ModelFileError(f"{where}: model cannot score ({exc})") from None
    except Exception as exc:  # a hostile model file may fail in any numpy call
        raise ModelFileError(f"{where}: model cannot score ({type(exc).__name__}: {exc})") from None
    return pipeline


def check_policy(policy: bytes, threshold: float, *, source: str) -> Policy:
    """A bundle's policy section, parsed and checked against the model's ``threshold`` as
    :func:`load_payload` checks it (UTF-8 TOML that parses, tiers that compile, actions that build)."""
    where = f"{source} (policy section)"
    try:
        text = policy.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    parsed = parse_policy(text, source=where)
    try:
        compile_tables(parsed, threshold)
        build_actuators(parsed, dry_run=True)
    except TinywardenError as exc:
        raise PolicyError(f"{where}: {exc}") from None
    return parsed
