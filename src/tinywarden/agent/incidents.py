"""Incidents: what the agent tells the fleet when the response engine enters a tier.

An :class:`~tinywarden.agent.escalate.Incident` carries the device, the model's id and version, the tier,
the score, the threshold, a confidence, the window's time span, the most deviating scaled features of
that window (never raw samples) and the audit log's head (the anchor the fleet keeps).

Confidence: the window's calibrated likelihood (:mod:`tinywarden.likelihood`, the one scale of the
product: 0.5 is a tail probability of 1e-5 with the default 10 decades) when the model has one; a fail-safe
entry (a fault) or a fail-safe bounds detection, 1. A model file without a likelihood falls back to the
fraction of that tier's last ``n`` scores above its bar (at least ``k / n``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tinywarden.agent.bundles import ModelRunner
from tinywarden.agent.escalate import Incident
from tinywarden.native import NativeModel, NativeScorer
from tinywarden.respond import ActionEvent, ResponseEngine
from tinywarden.respond.engine import REASON_FAILSAFE_BOUNDS

if TYPE_CHECKING:  # not at run time: the agent's int8 runtime must not load the training stack, and the
    # summary's feature extraction (numpy) loads with the first incident only (never for the native runtime
    # until then)
    import numpy as np

    from tinywarden.pipeline import Pipeline
    from tinywarden.runtime import Int8Model

__all__ = ["IncidentBuilder", "entered_tiers", "native_summary", "window_summary"]


def entered_tiers(events: Sequence[ActionEvent]) -> list[tuple[int, str]]:
    """``(tier, reason code)`` of each tier above 0 that ``events`` entered, once each, in order."""
    entered: list[tuple[int, str]] = []
    for e in events:
        if e.event == "apply" and e.action_tier > 0 and all(e.action_tier != x for x, _ in entered):
            entered.append((e.action_tier, e.reason_code))
    return entered


def window_summary(p: Pipeline | Int8Model | NativeModel, win: np.ndarray, top: int) -> dict[str, float]:
    """The ``top`` most deviating scaled values of window ``win``, by name (z relative to training)."""
    import numpy as np

    from tinywarden.features import extract, feature_names

    offset: Any = np.asarray(p.offset_, dtype=np.float64)
    scale: Any = np.asarray(p.scale_, dtype=np.float64)
    if p.input_kind == "features":
        level = None if p.crossings_level is None else np.asarray(p.crossings_level, dtype=np.float64)
        z = (extract(win[None], p.features, p.crossings_block, level)[0] - offset) / scale
        names = feature_names(p.channels_, p.features)
    else:
        scaled = (win - offset) / scale
        z = scaled[np.argmax(np.abs(scaled), axis=0), np.arange(scaled.shape[1])]
        names = [f"{c}:peak_z" for c in p.channels_]
    order = np.argsort(-np.abs(z), kind="stable")[:top]
    return {names[i]: round(float(z[i]), 4) for i in order if math.isfinite(z[i])}


def native_summary(p: NativeModel, runner: ModelRunner, top: int) -> dict[str, float] | None:
    """:func:`window_summary` for the native runtime, in plain Python: a feature model's z from the integer
    features the C computed for the window (``a * f + b``, :attr:`~tinywarden.native.NativeModel.summary_`),
    a raw-window model's per-channel peak z from the raw rows; None when the module keeps no features."""
    if p.input_kind == "features":
        s = p.summary_
        f = runner.scorer.features() if s is not None and isinstance(runner.scorer, NativeScorer) else []
        if s is None or not f or len(f) != len(s["names"]):
            return None
        z = [(a * v + b - o) / c for v, a, b, o, c in zip(f, s["a"], s["b"], p.offset_, p.scale_, strict=True)]
        names = list(s["names"])
    else:
        z = [max(((row[c] - o) / sc for row in runner.rows), key=abs)
             for c, (o, sc) in enumerate(zip(p.offset_, p.scale_, strict=True))]
        names = [f"{c}:peak_z" for c in p.channels_]
    order = sorted(range(len(z)), key=lambda i: -abs(z[i]))[:top]  # stable, as window_summary's argsort
    return {names[i]: round(float(z[i]), 4) for i in order if math.isfinite(z[i])}


class IncidentBuilder:
    """Builds the incident of one tier entry of ``device_id``, with ``summary_features`` features."""

    def __init__(self, device_id: str, summary_features: int) -> None:
        self.device_id = device_id
        self.summary_features = summary_features

    def build(
        self,
        tier: int,
        code: str,
        t: float,
        score: float | None,
        runner: ModelRunner,
        engine: ResponseEngine,
        tier_name: str,
        audit_head: tuple[int, str] | None,
        likelihood: float | None = None,
    ) -> Incident:
        """The incident for entering ``tier`` (reason ``code``) at ``t``; raises EscalationError if invalid."""
        recent = list(engine.recent)
        value = score if score is not None and math.isfinite(score) else (recent[-1] if recent else engine.threshold)
        start, end = runner.span(t)
        return Incident(
            device_id=self.device_id,
            model_id=runner.loaded.bundle.model_id,
            model_version=runner.loaded.bundle.version,
            tier=tier,
            tier_name=tier_name,
            score=float(value),
            threshold=engine.threshold,
            confidence=min(1.0, self.confidence(engine, tier, code, likelihood)),
            window_start=start,
            window_end=end,
            features=self.summary(runner),
            created_at=t,
            audit_head=audit_head,
        )

    @staticmethod
    def confidence(engine: ResponseEngine, tier: int, code: str, likelihood: float | None = None) -> float:
        """See the module docstring."""
        if code.startswith("fault_") or code == REASON_FAILSAFE_BOUNDS:
            return 1.0
        if likelihood is not None and math.isfinite(likelihood):
            return max(0.0, float(likelihood))
        n, k = engine.tables.n[tier], engine.tables.k[tier]
        above = sum(1 for s in list(engine.recent)[-n:] if s > engine.tables.bar[tier])
        return max(above / n, k / n)

    def summary(self, runner: ModelRunner) -> dict[str, float]:
        """The most deviating features of the runner's current window; empty if it is not full or fails."""
        p = runner.loaded.pipeline
        if len(runner.rows) < p.window:
            return {}
        try:
            if isinstance(p, NativeModel):  # no numpy in the lean agent, where it can be helped
                got = native_summary(p, runner, self.summary_features)
                if got is not None:
                    return got
            return window_summary(p, runner.window_rows(), self.summary_features)
        except Exception:  # the model path may be what failed; an incident without a summary still goes out
            return {}
