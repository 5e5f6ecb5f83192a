"""Drift and poisoning on the simulator: does the deployed pipeline follow normal change and not the attacker?

Protocol (issue 14, goals in :data:`GOALS`). For each device profile (seed :data:`SEED`), the default
pipeline (``Pipeline(make_detector(detector))``, window 128, stride 64, 2-of-3 persistence) is fitted on
the first :data:`TRAIN_DAYS` attack-free days; it is the same model for every scenario of that profile
(the scenarios leave those days untouched). Each scenario starts at day :data:`CHANGE_DAY` and the run
ends at day :data:`DAYS`. The rows after training are replayed one sample at a time through
:func:`tinywarden.replay.replay` (streaming scorer, calibrated likelihood and, with adaptation, the
agent's :class:`~tinywarden.adapt.BaselineAdapter` with the default ``[adaptation]`` policy), three times:
adaptation off, on without the slow-drift watch (``watch_drift`` 0) and on with it (the default policy,
``watch_drift`` 1). An alarm is the pipeline's k-of-n alarm; a false alarm is its rising edge.

- Legitimate regime changes (label 0): false alarms per device-day in the 24 h after the change, in
  the 24 h after that, and on the day before the change, with the share of windows in alarm (a
  standing alarm is one rising edge however long it lasts); baseline-drift flags raised. The goal
  (<= 1 within 24 h) is met when the first 24 h hold at most one false alarm and no alarm is still
  standing at their end.
- Poisoning ramps (three days to full rate): caught when an alarm or a baseline-drift flag comes
  before the ramp reaches its full rate (goal: all), with the fraction of the ramp done at that point, and
  what each ramp does to the model inputs (why a window or the adapted baseline does or does not see it).
- The slow-drift watch (:mod:`tinywarden.level_watch`, part of the default ``[adaptation]``): its false flags
  on the training days and on the held-out attack-free days; a drift flag also counts, beside the k-of-n
  definition, in what reaches the operator after a regime change and in a demo run.
- The demo's attacks (``tinywarden demo``: camera, 14 days, 8 attack-free, seed 7): incident detection
  rate and false alarms per device-day on the held-out days (goal >= 95 % at <= 1/day); the batch
  scorer's figure (what the demo prints) is shown beside the replays.

    python benchmarks/drift.py                 # writes benchmarks/results/drift.md
    python benchmarks/drift.py --quick --no-write
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, json_safe, machine_info, single_core  # noqa: E402

from tinywarden.detectors import DEFAULT_FAMILY  # noqa: E402

PROFILES = ("camera", "valve", "thermostat")
SEED = 11
TRAIN_DAYS = 8.0
CHANGE_DAY = 9.0
DAYS = 13.0
DEMO = {"profile": "camera", "days": 14.0, "train_days": 8.0, "seed": 7}
#: The oracle's simulation (:func:`regime_oracle`): the same device (seed) with the change in force from this day,
#: its model fitted on the rows from ORACLE_FROM_DAY to TRAIN_DAYS (days the scored rows never include).
ORACLE_CHANGE_DAY = 0.1
ORACLE_FROM_DAY = 0.25
GOALS = {"regime_fa_per_day": 1.0, "demo_detection_rate": 0.95, "demo_fa_per_day": 1.0}
DAY_S = 86400.0
#: How each default of :class:`tinywarden.adapt.Adaptation` was chosen (printed in the results file).
PARAMETER_NOTES = (
    "- `rate_shift` 8, `below_confidence` 0.2, `max_drift` 3: the first version's, unchanged.",
    "- `below_threshold` true: stated a priori (a window the model calls anomalous never teaches the slow path; "
    "the likelihood learns every level, so after an anomaly its confidence alone lets the next moderately "
    "anomalous windows teach).",
    "- `settle_s` 12 h: stated a priori, twice the longest incident the simulator's attack models last (6 h) "
    "and half the 24 h the goal allows.",
    "- `adapt_scale` false (the slow path moves the offsets only; the scale is learned only while a shift "
    "settles, then relaxes back to the reference): **chosen by looking at SMD/ASD labels** "
    "(`benchmarks/adapt_quality.py`: on SMD machine-1-6 with ewma, learning the scale lost 0.21 ROC AUC and "
    "offsets only gained 0.04), not on this benchmark.",
    "- `settle_rate_shift` 7 (about a day at stride 64 and 10 s sampling): **chosen by looking at this "
    "benchmark** (camera firmware update, false alarms in the second 24 h: without the shadow baseline, settling "
    "at 4 / 5 / 6 gave 4 / 11 / 8 (57 / 33 / 12 % of the time in alarm); with it, 6 / 7 gave 6 / 3 (9 / 4 %); all with "
    "`adapt_scale` true).",
    "- `watch_drift` 1 by default, as in the 'on + watch' rows; 0 in the 'on' rows (the slow-drift watch, "
    "`tinywarden.level_watch`: "
    "the drift flag also rises when a "
    "day-long level, at 2^-`settle_rate_shift`, of every window under the threshold is 1 reference standard "
    "deviation from the frozen reference, on any model input): **stated a priori**, before any run (a day-long level "
    "that has moved by a feature's whole training spread, which holds the daily rhythm; 11 times the day-long "
    "level's own spread for independent windows); not tuned on these scenarios. Its false flags on the training "
    "days and on the held-out attack-free days are in the table above. Its horizon is the settling rate "
    "(`settle_rate_shift` 7, chosen on this benchmark, above), its re-arm at half the limit the `max_drift` flag's. "
    "A first version read the settling rule's shadow (every window, also those over the threshold): same ramps "
    "caught (8 of 9; it never flagged camera sensor_drift_ramp, which this one flags at 0.15), same regime goals "
    "and false flags; it was changed because in a unit test a 30-minute alarmed step raised a drift flag (a burst "
    "is an alarm, not drift), not because of a figure here. It was off by default while the adapting default "
    "module had no flash for it under 8 KB on Cortex-M4; on by default since it fits on every core (findings).",
    "- `watch_distance` 0.2 by default, in the 'on + watch' rows (off in the 'on' rows with the watch): the watch's "
    "day-long level scored by the model itself (PCA, Gaussian), flagged over 0.2 of its threshold. **Added after this "
    "page showed the valve's sensor drift caught only at 1.17 of its ramp**; its bound was fixed on the development "
    "seeds 101 to 104 (`benchmarks/level_distance.py`, results/level_distance.md: about twice the largest level of "
    "their unchanged runs, 0.09) and committed before seed 11 (this page's) was run with it "
    "(results/level_distance_test.md).",
)


#: How each variant is named in the tables: adaptation off, the default policy with the watch off, the default policy.
LABELS = {"off": "off", "on": "on", "watch": "on + watch"}


def flag_windows(r: Any) -> np.ndarray:
    """Per window of ``r``: 1 where a baseline-drift flag was raised (the flag as a one-window alarm)."""
    return np.isin(r.windows.end_rows, r.drift_flag_rows).astype(np.uint8)


def event_onsets(r: Any, lo: int, hi: int) -> int:
    """Rising edges of the k-of-n alarm or a drift flag (what reaches the operator) on windows ending in ``lo:hi``."""
    a = r.windows.alarms.astype(bool) | flag_windows(r).astype(bool)
    rising = a & ~np.concatenate(([False], a[:-1]))
    ends = r.windows.end_rows
    return int(rising[(ends >= lo) & (ends < hi)].sum())


FINDINGS = (
    "## Findings (issue 14, items 1 to 3)",
    "",
    "- *The default family is `gaussian`* since 2026-12-03 (results/default_family.md: chosen by a rule fixed "
    "beforehand on development seeds 101 to 104 of the three profiles, where it found 294 of 336 incidents at 0.43 "
    "false alarms per device-day against the dense autoencoder's 285 at 0.57; this page's seeds, 7 and 11, were "
    "not used to choose). Here it changed: the demo from 26/28 to **28/28** incidents at the same 0.69 false alarms "
    "per day (sensor drift 1/3 to 3/3: the tampered power's window scores reach 3.47, 1.07 and 3.39 times the "
    "threshold, against 1.26, 0.70 and 0.85 with the dense autoencoder; the Mahalanobis distance weighs power "
    "against CPU and traffic, so a reading that stays in its own range but stops following them stands out); "
    "the ramps stayed at 8 of 9 (valve sensor_drift_ramp still missed: alarm at 1.22 and flag at 1.17 of the ramp, "
    "after full rate; caught since, below); the regime changes stay at 6 of 7, but another one misses: camera "
    "new_routine is now met (1 false alarm in its first 24 h, 2 before) and camera firmware_update is not (2 in the "
    "first 24 h, the first standing 52 % of them, and 5 short ones in the next 24 h; without adaptation one alarm "
    "stands for both days).",
    "- *Why camera firmware_update misses with it*: the update changes how the channels move together, not only "
    "their levels; the adapted baseline moves offsets only (`adapt_scale` false), which the dense autoencoder's "
    "reconstruction tolerated and a covariance model does not. An operator's signed re-baseline (the documented "
    "path for an update) clears it; learning the covariance while a shift settles would be the device-side fix, "
    "not built.",
    "- *What learning the new regime would reach, measured* (2026-12-03, the table 'A missed change against a model "
    "of its own regime'): the default's alarms after the update come at 0.4 h (the change, standing until it "
    "settles at 12 h), 15.5, 28.3, 29.0, 34.3, 35.4 and 40.5 h. The same model on the unchanged series raises 15.5, "
    "19.2, 28.3 and 29.0 (adaptation off): three of the seven are the device's own false alarms in those hours, "
    "with or without the update. A model of the new regime (the same device's days 0.25 to 8 with the update in "
    "force) raises 0.4, 28.3 and 29.0: 1 in the first 24 h, the goal met. So a baseline that learned the new "
    "covariance would close this row; what offsets-only adaptation leaves is the 15.5 h alarm and three in the "
    "second day. Tried in float and not kept (a replay script, not this benchmark): learning the variances of the "
    "model's 16 axes while a shift settles (rates 2^-7 and 2^-5) left the same seven alarms; keeping the per-input "
    "scales learned while settling gave 10 in 48 h, learning no scale at all 9. A per-input scale bends the "
    "relations between inputs that the covariance holds; the change is in those relations.",
    "- *The valve's sensor drift is caught since the watch also scores its level with the model itself* "
    "(`watch_distance`, 2026-12-03): 9 of 9 ramps, its flag at 0.77 of the ramp (1.17 with the per-input watch "
    "alone). Its 40 kPa are one reference sd of the pressure features (their spread holds the valve's whole "
    "travel), but off the line pressure keeps with the position they are many residual sd, which the Gaussian's "
    "distance weighs. It also flags the valve's miner and exfiltration ramps earlier (0.34 and 0.54, were 0.71 and "
    "0.83); the regime changes, the held-out false flags and the training flags are unchanged (the firmware "
    "updates, which it passes, were flagged already). The bound, 0.2 of the threshold, was set on development seeds "
    "(results/level_distance.md) and committed before this page's seed ran with it (results/level_distance_test.md "
    "had given 0.77 for this ramp in the float replay, as here). On the device it costs 28 B of flash on Cortex-M4 "
    "(12 B less on M0+, with a helper it brought that the other readings share) and 7,744 instructions a window on "
    "M4, 26,918 on M0+ (results/mcu_adaptation.md).",
    "",
    "Earlier findings, with the dense autoencoder (the default family until 2026-12-03; their figures are its):",
    "",
    "- *Why the ramps were missed before the watch* (the 'what each ramp does' table): their windows are not "
    "anomalous to the model (thermostat 0.5 % over the threshold, valve 2.2 %: as many as without the ramp) and "
    "most of them *taught* the adapted baseline, which followed them at 2^-8 (about two days behind): the baseline "
    "was quietly poisoned, not held. The `max_drift` flag needs 3 reference sd; at full rate these ramps move their "
    "inputs by 1.8 sd (thermostat temp_c; exfiltration: cpu_pct:diff_abs_mean, distinct_dst) and 1.0 sd (valve "
    "pressure_kpa), so it never rose, and nothing else compared the slow level with the reference. The watch does, "
    "at 1 sd on a day-long level (whose normal spread is far smaller than a window's).",
    "- *valve sensor_drift_ramp stays missed*: its 40 kPa move the pressure window mean by 1.0 reference sd at full "
    "rate and the watch's level reaches 0.8; on the held-out attack-free days the normal pressure level already "
    "wanders to 0.95 (a one-off diagnosis, the level of all windows). A level alone cannot separate them; it would "
    "take the relation between pressure and valve position, which the window model does not weigh enough at this size.",
    "- *The watch's false flags* come from the simulator's benign memory leak between boots (mem_pct creeps "
    "0.3 to 1.2 %/day), which moves mem_pct's day-long level by 1.0 to 1.4 reference sd on some normal days: 4 "
    "flags in 39 device-days over the three profiles, at most one in 5 on any (table above), inside the <= 1 "
    "false alarm per device-day budget but not zero. "
    "A flag is latched until every level is back under half the limit, so while a leak holds it a ramp on another "
    "input raises no new flag (camera exfiltration_ramp: the watch's level reached 2.85 at full rate, but the flag "
    "had risen before the ramp, at the same window as in the unchanged run, so it does not count; its alarm did).",
    "- *On the device, on by default* (a one-off run of `benchmarks/mcu.py`'s `adaptation_cost` with `watch_drift` 0 "
    "and 1 at 7170d19; results/mcu_adaptation.md measures the default, watch included): the watch adds 92 B of "
    "flash on Cortex-M4 (7,218 -> 7,310 B with adaptation, module alone; 7,030 -> 7,122 B in a firmware link), 92 B "
    "on M4F (7,236 -> 7,328), 98 B on M0+ (7,934 -> 8,032), 264 B of RAM (its level, one int32 for each of the 66 "
    "inputs: 3,112 -> 3,376 B) and 2,942 instructions a window on M4 (67,017 -> 69,959; 6,547 on M0+); the emulated "
    "decisions equal the integer reference. It was off by default while the adapting default module was at 8,180 B "
    "of the 8 KB Cortex-M4 budget; since the codegen's flash cuts it fits 8 KB of flash and 4 KB of RAM on every "
    "core (test `test_adapting_default_module_fits_8kb_on_every_core...`), so it is on; `watch_drift = 0` in the "
    "policy turns it off and compiles it out.",
    "- *The demo's sensor_drift (item 2) is not this mechanism*: its incidents are 1 to 5 h ramps (table above), far "
    "shorter than the watch's day; the missed ones stay under the window threshold (largest score 0.70 and 0.85 of "
    "it; their power window mean reaches +1.1 and -2.9 reference sd only in their last windows, the ramp's shape). "
    "Catching them would take a sharper window model of how power follows CPU, not a slower watch. The watch does "
    "not change the demo (26/28 with "
    "or without counting drift flags).",
    "- *camera new_routine (item 3)*, from a one-off diagnosis replaying that scenario window by window: each false "
    "alarm in the first 24 h is a window whose power_mw level is 2.5 to 3.7 reference sd from the training mean "
    "(the rhythm moved 4 h meets fixed-clock parts of the schedule at hours training never saw them together), "
    "scored 1.1 to 1.25 times the threshold. With adaptation on, two more borderline windows (1.10 and "
    "1.22 times) cross: the adapted offsets had moved 0.6 to 1.0 sd from the reference by then. Not fixed: raising "
    "the threshold or freezing the adaptation would weaken detection; the watch adds one flag to that day.",
)


def regime_figures(r: Any, change_row: int, rows_per_day: int, cut: int) -> dict[str, Any]:
    day = rows_per_day
    before = max(cut, change_row - day)
    flags = r.drift_flag_rows
    return {
        "flags_first_24h": int(((flags >= change_row) & (flags < change_row + day)).sum()),
        "events_first_24h": event_onsets(r, change_row, change_row + day),
        "events_next_24h": event_onsets(r, change_row + day, change_row + 2 * day),
        "alarm_time_first_24h": r.alarm_share(change_row, change_row + day),
        "alarm_time_next_24h": r.alarm_share(change_row + day, change_row + 2 * day),
        "standing_after_24h": r.alarm_standing(change_row + day),
        "fa_day_before": r.alarm_onsets(before, change_row) * day / max(change_row - before, 1),
        "fa_first_24h": float(r.alarm_onsets(change_row, change_row + day)),
        "fa_next_24h": float(r.alarm_onsets(change_row + day, change_row + 2 * day)),
        "drift_flags": int(len(r.drift_flag_rows)),
        "adapted_windows": r.adapted,
        "conf_alarms_first_24h": confidence_onsets(r, change_row, change_row + day),
        "conf_one_first_24h": int(((r.confidences == 1.0) & (r.windows.end_rows >= change_row)
                                   & (r.windows.end_rows < change_row + day)).sum()),
    }


def regime_met(row: dict[str, Any]) -> bool:
    """The regime goal: at most one false alarm in the 24 h after the change and none standing at their end."""
    return row["fa_first_24h"] <= GOALS["regime_fa_per_day"] and not row["standing_after_24h"]


def regime_stays(row: dict[str, Any]) -> bool:
    """The stricter reading ("back to <= 1 a day"): the goal met and at most one false alarm in the next 24 h."""
    return regime_met(row) and row["fa_next_24h"] <= GOALS["regime_fa_per_day"]


def onset_hours(r: Any, change_row: int, rows_per_day: int, days: float = 2.0) -> list[float]:
    """Hours after ``change_row`` of the alarms raised (rising edges) in the ``days`` after it."""
    a = r.windows.alarms.astype(bool)
    ends = r.windows.end_rows[a & ~np.concatenate(([False], a[:-1]))]
    return [round(float(e - change_row) * 24.0 / rows_per_day, 1) for e in ends
            if change_row <= e < change_row + days * rows_per_day]


def regime_oracle(detector: str, profile: str, scenario: str, sim: Any, base: Any, pipeline: Any, start: int,
                  change_row: int, rows_per_day: int, cut: int, value_record: float | None) -> list[dict[str, Any]]:
    """What a model of the changed regime itself does on a missed change: the default pipeline fitted on the same
    device's simulation (seed :data:`SEED`) with the change in force from day :data:`ORACLE_CHANGE_DAY`, on the rows
    from :data:`ORACLE_FROM_DAY` to :data:`TRAIN_DAYS` (what learning the new covariance, not only the new level,
    would give), scoring the scenario's series from the change on, without and with the default adaptation; beside
    it the trained pipeline scoring the unchanged series over the same hours (the false alarms of the right regime's
    model anyway)."""
    from tinywarden.replay import aligned_start, replay
    from tinywarden.respond.policy import Adaptation
    from tinywarden.simulate import simulate_detailed

    changed = simulate_detailed(profile, TRAIN_DAYS, "none", seed=SEED, scenario=scenario,
                                change_day=ORACLE_CHANGE_DAY).series
    oracle = _fit(detector, changed.slice(int(ORACLE_FROM_DAY * rows_per_day), int(TRAIN_DAYS * rows_per_day)),
                  value_record)
    new, trained, unchanged = "the new regime's", "the trained one", "the trained one, unchanged series (control)"
    runs = [(trained, pipeline, sim, "watch", Adaptation(), start),
            (new, oracle, sim, "off", None, aligned_start(oracle, change_row)),
            (new, oracle, sim, "watch", Adaptation(), aligned_start(oracle, change_row)),
            (unchanged, pipeline, base, "off", None, start), (unchanged, pipeline, base, "watch", Adaptation(), start)]
    out = []
    for model, p, series, variant, cfg, row0 in runs:
        r = replay(p, series, row0, cfg)
        f = regime_figures(r, change_row, rows_per_day, cut)
        out.append({"profile": profile, "scenario": scenario, "model": model, "adaptation": variant,
                    "onsets_h": onset_hours(r, change_row, rows_per_day),
                    **{k: f[k] for k in ("fa_first_24h", "standing_after_24h", "fa_next_24h", "alarm_time_first_24h")}})
        print(out[-1], flush=True)
    return out


def poison_figures(r: Any, unchanged: Any, start_row: int, full_row: int) -> dict[str, Any]:
    """When the ramp was first seen: the first alarm (or drift flag) at or after its start that the same
    device without the ramp (``unchanged``, the same replay of the attack-free run) did not raise, so a
    normal false alarm that happens to fall inside the ramp does not count as catching it."""
    ends = r.windows.end_rows
    own = r.windows.alarms.astype(bool) & ~np.isin(ends, unchanged.windows.end_rows[
        unchanged.windows.alarms.astype(bool)])
    alarm_rows = ends[own & (ends >= start_row)]
    flag_rows = r.drift_flag_rows[(r.drift_flag_rows >= start_row) & ~np.isin(r.drift_flag_rows,
                                                                               unchanged.drift_flag_rows)]
    first_alarm = int(alarm_rows[0]) if len(alarm_rows) else None
    first_flag = int(flag_rows[0]) if len(flag_rows) else None
    first = min((x for x in (first_alarm, first_flag) if x is not None), default=None)

    def done(row: int | None) -> float | None:
        return None if row is None else round((row - start_row) / (full_row - start_row), 3)

    return {
        "alarm_at_ramp": done(first_alarm),
        "flag_at_ramp": done(first_flag),
        "caught_before_full": first is not None and first < full_row,
    }


def pipeline_input_name(pipeline: Any, i: int) -> str:
    """The name of model input ``i`` (``channel:feature``, or the channel of a raw-window family)."""
    from tinywarden.features.extract import feature_names

    names = (feature_names(pipeline.channels_, pipeline.features) if pipeline.input_kind == "features"
             else list(pipeline.channels_))
    return names[i] if 0 <= i < len(names) else str(i)


def why_missed(pipeline: Any, base: Any, series: Any, r: Any, change: Any, cfg: Any) -> dict[str, Any]:
    """What a ramp does to the model inputs, in reference standard deviations (z), and why neither the window score
    nor the adapted baseline's ``max_drift`` flag saw it: the inputs it moves most (mean z over the last day before
    full rate, less the unchanged run's), the share of its windows over the threshold and of those that taught the
    baseline, and the watch's day-long level (windows under the threshold) at full rate."""
    ends, x = pipeline.window_inputs(series)
    _, x0 = pipeline.window_inputs(base)
    z = (x - pipeline.offset_) / pipeline.scale_
    dz = z - (x0 - pipeline.offset_) / pipeline.scale_
    day = int(round(DAY_S / series.period))
    last = (ends >= change.full_row - day) & (ends < change.full_row)
    moved = dz[last].mean(axis=0)
    top = np.argsort(-np.abs(moved))[:3]
    rate = 2.0**-cfg.settle_rate_shift
    w = r.windows
    under = dict(zip(w.end_rows.tolist(), (w.scores <= w.threshold).tolist(), strict=True))
    level = np.zeros(z.shape[1])
    at_full = level
    for e, row in zip(ends, z, strict=True):
        if under.get(int(e), False):
            level = level + rate * (row - level)
        if e < change.full_row:
            at_full = level
    ramp = (w.end_rows >= change.start_row) & (w.end_rows < change.full_row)
    conf = np.nan_to_num(r.confidences[ramp], nan=1.0)
    taught = (conf < cfg.below_confidence) & (w.scores[ramp] <= w.threshold)
    return {"moved": [(pipeline_input_name(pipeline, int(i)), round(float(moved[i]), 2)) for i in top],
            "over_threshold": float((w.scores[ramp] > w.threshold).mean()),
            "taught": float(taught.mean()),
            "level_at_full": round(float(np.abs(at_full).max()), 2),
            "level_input": pipeline_input_name(pipeline, int(np.argmax(np.abs(at_full))))}


def sensor_drift_incidents(pipeline: Any, series: Any, incidents: Sequence[Any], r: Any) -> list[dict[str, Any]]:
    """The demo's sensor_drift incidents (item 2 of issue 14): how long, how far the tampered channel's window
    mean went (reference z), the largest window score over the threshold, and the windows in alarm (adaptation on)."""
    ends, x = pipeline.window_inputs(series)
    z = (x - pipeline.offset_) / pipeline.scale_
    scores = pipeline.score_inputs(x)
    out = []
    for inc in incidents:
        if inc.attack != "sensor_drift":
            continue
        name = f"{inc.detail['channel']}:mean"
        col = [pipeline_input_name(pipeline, i) for i in range(z.shape[1])].index(name)
        inside = (ends >= inc.start_row) & (ends < inc.stop_row + pipeline.window)
        alarms = r.windows.alarms[np.isin(r.windows.end_rows, ends[inside])]
        out.append({"hours": (inc.stop_row - inc.start_row) * series.period / 3600.0, "detail": dict(inc.detail),
                    "z_min": float(z[inside, col].min()), "z_max": float(z[inside, col].max()),
                    "score_max": float(scores[inside].max() / pipeline.threshold_),
                    "alarm_windows": int(alarms.sum()), "windows": int(inside.sum())})
    return out


def _fit(detector: str, series: Any, value_record: float | None) -> Any:
    """The default pipeline fitted on ``series``, its likelihood's value record at tolerance ``value_record``
    (None: off)."""
    from tinywarden.detectors import make_detector
    from tinywarden.pipeline import Pipeline

    p = Pipeline(make_detector(detector)).fit(series)
    if p.likelihood_ is not None and p.likelihood_.values_ is not None:
        if value_record is None:
            p.likelihood_.values_ = None
        else:
            p.likelihood_.values_.tolerance = p.likelihood_.value_record = value_record
        p.likelihood_.reset()
    return p


def confidence_onsets(r: Any, lo: int, hi: int) -> int:
    """Alarms on the confidence (rising edges of a confidence >= 0.5, HTM's 'red') on windows ending in ``lo:hi``."""
    ends, c = r.windows.end_rows, np.nan_to_num(r.confidences) >= 0.5
    rising = c & ~np.concatenate(([False], c[:-1]))
    return int(rising[(ends >= lo) & (ends < hi)].sum())


def scenario_runs(profile: str, seed: int, channels: Sequence[str]) -> Iterator[tuple[str, Any, Any, Any]]:
    """``(name, spec, simulation, change)`` of every scenario the profile (with ``channels``) can run, at ``seed``:
    :data:`DAYS` simulated, the change at :data:`CHANGE_DAY`."""
    from tinywarden.simulate import SCENARIO_SPECS, simulate_detailed

    for name, spec in SCENARIO_SPECS.items():
        if name == "seasonal" and "temp_c" not in channels:
            continue
        sim = simulate_detailed(profile, DAYS, "none", seed=seed, scenario=name, change_day=CHANGE_DAY)
        (change,) = sim.changes
        yield name, spec, sim, change


def run(detector: str, profiles: Sequence[str], overrides: dict[str, Any] | None = None,
        value_record: float | None = 0.05) -> dict[str, Any]:
    from tinywarden.evaluate import evaluate
    from tinywarden.level_watch import watch_record
    from tinywarden.replay import aligned_start, replay
    from tinywarden.respond.policy import Adaptation
    from tinywarden.simulate import simulate, simulate_detailed

    variants = {"off": None, "on": Adaptation(**{**(overrides or {}), "watch_drift": 0.0}),
                "watch": Adaptation(**(overrides or {}))}
    rows: list[dict[str, Any]] = []
    watch: list[dict[str, Any]] = []
    oracle: list[dict[str, Any]] = []
    for profile in profiles:
        base = simulate(profile, DAYS, "none", seed=SEED)
        rows_per_day = int(round(DAY_S / base.period))
        cut = int(TRAIN_DAYS * rows_per_day)
        pipeline = _fit(detector, base.slice(0, cut), value_record)
        start = aligned_start(pipeline, cut)
        unchanged = {variant: replay(pipeline, base, start, cfg) for variant, cfg in variants.items()}
        trained = watch_record(pipeline, base.slice(0, cut), variants["watch"])
        held_days = (len(base) - start) / rows_per_day
        watch.append({"profile": profile, "train_flags": len(trained.flag_rows), "train_days": trained.days,
                      "train_peak": trained.peak,
                      "train_peak_input": pipeline_input_name(pipeline, trained.peak_input),
                      "held_out_flags": int(len(unchanged["watch"].drift_flag_rows)), "held_out_days": held_days,
                      "held_out_flags_default": int(len(unchanged["on"].drift_flag_rows)),
                      "held_out_alarms": unchanged["watch"].alarm_onsets(start, len(base))})
        print(watch[-1], flush=True)
        for name, spec, sim, change in scenario_runs(profile, SEED, base.channels):
            for variant, cfg in variants.items():
                r = replay(pipeline, sim.series, start, cfg)
                figs = (poison_figures(r, unchanged[variant], change.start_row, change.full_row) if change.is_attack
                        else regime_figures(r, change.start_row, rows_per_day, cut))
                if change.is_attack and variant == "watch":
                    figs["why"] = why_missed(pipeline, base, sim.series, r, change, cfg)
                rows.append({"profile": profile, "scenario": name, "kind": spec.kind, "adaptation": variant, **figs})
                print(rows[-1], flush=True)
            if not change.is_attack and not regime_met(rows[-1]):  # the default (watch) row misses: why
                oracle += regime_oracle(detector, profile, name, sim.series, base, pipeline, start, change.start_row,
                                        rows_per_day, cut, value_record)

    demo_sim = simulate_detailed(DEMO["profile"], DEMO["days"], "all", seed=DEMO["seed"],
                                 attack_free_days=DEMO["train_days"])
    s = demo_sim.series
    cut = int(np.searchsorted(s.timestamps, s.timestamps[0] + DEMO["train_days"] * DAY_S))
    pipeline = _fit(detector, s.slice(0, cut), value_record)
    demo: list[dict[str, Any]] = []

    def demo_row(label: str, windows: Any) -> None:
        ev = evaluate(s, windows, params=pipeline.n_params_, model_bytes=pipeline.model_bytes_, skip_rows=cut)
        demo.append({"run": label, "detected": ev.n_detected, "incidents": ev.n_incidents,
                     "detection_rate": ev.detection_rate, "fa_per_day": ev.false_alarms_per_day,
                     "per_attack": {a.attack: f"{a.detected}/{a.incidents}" for a in ev.per_attack}})
        print(demo[-1], flush=True)

    from tinywarden.evaluate import WindowScores

    scored = pipeline.score(s)
    demo_row("batch (what the demo prints)", WindowScores(scored.end_rows, pipeline.window, scored.scores,
                                                          scored.raw_flags, scored.alarms, scored.threshold))
    r_watch: Any = None
    for variant, cfg in variants.items():
        r = replay(pipeline, s, aligned_start(pipeline, cut), cfg)
        label = LABELS[variant]
        demo_row(f"replay, adaptation {label}", r.windows)
        w = r.windows
        if variant == "watch":  # what reaches the operator: the k-of-n alarm or a drift flag (one window)
            r_watch = r
            both = w.alarms | flag_windows(r)
            demo_row(f"replay, adaptation {label}: alarm or drift flag", WindowScores(
                w.end_rows, w.window, w.scores, both, both, w.threshold))
        if variant != "watch":  # the watch does not change the confidence
            red = (np.nan_to_num(r.confidences) >= 0.5).astype(np.uint8)  # the confidence as the alarm
            demo_row(f"replay, adaptation {label}: confidence >= 0.5 as the alarm",
                     WindowScores(w.end_rows, w.window, w.scores, red, red, w.threshold))
    return {"detector": detector, "rows": rows, "demo": demo, "watch": watch, "oracle": oracle,
            "sensor_drift": sensor_drift_incidents(pipeline, s, demo_sim.incidents, r_watch),
            "machine": machine_info(),
            "adaptation": repr(variants["on"]), "watch_adaptation": repr(variants["watch"]),
            "value_record": value_record}


def _fmt(v: Any) -> str:
    if v is None:
        return "never"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def render(result: dict[str, Any]) -> str:
    regime = [r for r in result["rows"] if r["kind"] == "regime"]
    poison = [r for r in result["rows"] if r["kind"] == "poisoning"]
    lines = [
        "# Drift and poisoning on the simulator (issue 14)",
        "",
        f"Produced by `python benchmarks/drift.py`. Default pipeline (`{result['detector']}`, window 128, stride 64, "
        f"2-of-3 persistence) fitted on {TRAIN_DAYS:g} attack-free days per profile (seed {SEED}); each scenario "
        f"starts at day {CHANGE_DAY:g} of {DAYS:g}; the rows after training are replayed sample by sample through "
        "`tinywarden.replay` (streaming scorer, likelihood and, with adaptation, the agent's `BaselineAdapter`, "
        "default `[adaptation]` policy, whose slow-drift watch is on, `watch_drift` 1: the 'on + watch' rows; 'on': "
        "the same with the watch off, `watch_drift` 0). A false alarm is the rising "
        "edge of a k-of-n alarm. The likelihood's value "
        f"record (tolerance {result.get('value_record')}; None = off) is fed each window's new rows; it changes the "
        "confidence (which gates the adaptation), not the k-of-n alarms. 'confidence alarms' = rising edges of a "
        "confidence >= 0.5 (HTM's red); 'confidence 1' = windows reporting 1 (a score record or a value record).",
        "",
        "## Legitimate regime changes (labelled normal): false alarms per device-day",
        "",
        f"Goal: <= {GOALS['regime_fa_per_day']:g} in the 24 h after the change.",
        "",
        "| profile | scenario | adaptation | day before | first 24 h (time in alarm) | alarm standing at 24 h | "
        "next 24 h (time in alarm) | goal | drift flags (first 24 h) | alarms or flags, first / next 24 h | "
        "windows adapted | confidence alarms, first 24 h | windows at confidence 1, first 24 h |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in regime:
        lines.append(f"| {r['profile']} | {r['scenario']} | {LABELS[r['adaptation']]} | {r['fa_day_before']:.0f} | "
                     f"{r['fa_first_24h']:.0f} ({r['alarm_time_first_24h']:.0%}) | "
                     f"{'yes' if r['standing_after_24h'] else 'no'} | "
                     f"{r['fa_next_24h']:.0f} ({r['alarm_time_next_24h']:.0%}) | "
                     f"{'met' if regime_met(r) else '**missed**'} | "
                     f"{r['drift_flags']} ({r.get('flags_first_24h', '')}) | "
                     f"{r.get('events_first_24h', '')} / {r.get('events_next_24h', '')} | {r['adapted_windows']} | "
                     f"{r.get('conf_alarms_first_24h', '')} | {r.get('conf_one_first_24h', '')} |")
    for variant in LABELS:
        sel = [r for r in regime if r["adaptation"] == variant]
        if sel:
            met = sum(regime_met(r) for r in sel)
            stays = sum(regime_stays(r) for r in sel)
            lines.append(f"\nAdaptation {LABELS[variant]}: goal met on {met} of {len(sel)} changes ({stays} "
                         f"also with <= 1 in "
                         "the next 24 h); mean "
                         f"{np.mean([r['fa_first_24h'] for r in sel]):.1f} false alarms in the first 24 h, "
                         f"{np.mean([r['fa_next_24h'] for r in sel]):.1f} in the next.")
    lines += [
        "",
        "'alarms or flags' counts what reaches the operator: rising edges of the k-of-n alarm or a baseline-drift flag "
        "(a flag raised while an alarm stands adds nothing). The goal column keeps the k-of-n definition.",
    ]
    if result.get("oracle"):
        lines += ["", "### A missed change against a model of its own regime", "",
                  "For each change the default misses: the default pipeline fitted on the same device's simulation "
                  f"(seed {SEED}) with the change in force from day {ORACLE_CHANGE_DAY:g}, on days "
                  f"{ORACLE_FROM_DAY:g} to {TRAIN_DAYS:g} (what learning the new regime's covariance, not only its "
                  "level, would reach), scoring the scenario's series from the change on, without and with the default "
                  "adaptation; beside it the trained pipeline on the scenario (the main table's row) and, as a "
                  "control, on the unchanged series over the same hours (the false alarms a model of the right regime "
                  "raises there anyway). The first 24 h include the change itself (its ten-minute transition). "
                  "*alarms at*: hours after the change of each alarm's onset, over 48 h.", "",
                  "| profile | scenario | model | adaptation | first 24 h (time in alarm) | alarm standing at 24 h | "
                  "next 24 h | goal | alarms at (h) |", "|---|---|---|---|---|---|---|---|---|"]
        for o in result["oracle"]:
            lines.append(f"| {o['profile']} | {o['scenario']} | {o['model']} | "
                         f"{LABELS[o['adaptation']]} | {o['fa_first_24h']:.0f} ({o['alarm_time_first_24h']:.0%}) | "
                         f"{'yes' if o['standing_after_24h'] else 'no'} | {o['fa_next_24h']:.0f} | "
                         f"{'met' if regime_met(o) else '**missed**'} | {', '.join(map(str, o['onsets_h']))} |")
    lines += [
        "",
        "## The slow-drift watch's false flags",
        "",
        "The watch alone (`tinywarden.level_watch.watch_record`: nothing learned, no window over the threshold) over "
        "the training days the reference was fitted on, and the full adapter (adaptation on + watch) over the "
        "held-out attack-free days of the unchanged run (every drift flag there is false; adaptation on without "
        "the watch, and the k-of-n alarms for comparison).",
        "",
        "| profile | training: watch flags (days) | largest level on training (input) | held-out: drift flags (days) "
        "| held-out: drift flags without the watch | held-out: k-of-n alarms |",
        "|---|---|---|---|---|---|",
    ]
    for w in result.get("watch", []):
        lines.append(f"| {w['profile']} | {w['train_flags']} ({w['train_days']:.1f}) | {w['train_peak']:.2f} "
                     f"({w['train_peak_input']}) | {w['held_out_flags']} ({w['held_out_days']:.1f}) | "
                     f"{w.get('held_out_flags_default', '')} | {w['held_out_alarms']} |")
    lines += [
        "",
        "## Poisoning ramps (three days to full rate): caught before full rate?",
        "",
        "Fraction of the ramp done at the first alarm / first baseline-drift flag after it starts that the same "
        "device without the ramp (the same replay of its unchanged run) did not raise (1.00 = full rate; a normal "
        "false alarm inside the ramp does not count). Goal: every ramp caught (alarm or flag) before full rate.",
        "",
        "| profile | scenario | adaptation | first alarm | first drift flag | caught before full rate |",
        "|---|---|---|---|---|---|",
    ]
    for r in poison:
        lines.append(f"| {r['profile']} | {r['scenario']} | {LABELS[r['adaptation']]} | {_fmt(r['alarm_at_ramp'])} | "
                     f"{_fmt(r['flag_at_ramp'])} | {_fmt(r['caught_before_full'])} |")
    for variant in LABELS:
        sel = [r for r in poison if r["adaptation"] == variant]
        if sel:
            lines.append(f"\nAdaptation {LABELS[variant]}: {sum(r['caught_before_full'] for r in sel)} of "
                         f"{len(sel)} ramps "
                         "caught before full rate.")
    why = [r for r in poison if r.get("why")]
    if why:
        lines += [
            "",
            "What each ramp does (adaptation on + watch), in reference standard deviations (z) of the model "
            "inputs: the "
            "inputs it moves most (mean z over the last day before full rate, less the unchanged run's); the share "
            "of its windows over the threshold (the k-of-n alarm needs 2 of 3) and of those that taught the adapted "
            "baseline (confidence < `below_confidence` and under the threshold: it follows them at 2^-8, about two "
            "days, and flags only past `max_drift` 3 sd); the watch's day-long level (windows under the threshold, "
            "largest |z|) at full rate.",
            "",
            "| profile | scenario | inputs moved most (z) | windows over threshold | windows that taught | "
            "watch's level at full rate (input) |",
            "|---|---|---|---|---|---|",
        ]
        for r in why:
            w = r["why"]
            moved = ", ".join(f"{n} {v:+.2f}" for n, v in w["moved"])
            lines.append(f"| {r['profile']} | {r['scenario']} | {moved} | {w['over_threshold']:.1%} | "
                         f"{w['taught']:.1%} | {w['level_at_full']:.2f} ({w['level_input']}) |")
    lines += [
        "",
        "## The demo's attacks",
        "",
        f"`tinywarden demo` data ({DEMO['profile']}, {DEMO['days']:g} days, {DEMO['train_days']:g} attack-free, "
        f"seed {DEMO['seed']}). Goal: >= {GOALS['demo_detection_rate']:.0%} of incidents at <= "
        f"{GOALS['demo_fa_per_day']:g} false alarm per device-day.",
        "",
        "| run | incidents detected | rate | false alarms / day | per attack |",
        "|---|---|---|---|---|",
    ]
    for d in result["demo"]:
        per = ", ".join(f"{k} {v}" for k, v in d["per_attack"].items())
        lines.append(f"| {d['run']} | {d['detected']}/{d['incidents']} | {d['detection_rate']:.1%} | "
                     f"{d['fa_per_day']:.2f} | {per} |")
    sd = result.get("sensor_drift", [])
    if sd:
        lines += ["", "The demo's sensor_drift incidents (adaptation on + watch): the tampered channel's "
                  "window mean in "
                  "reference z (lowest / highest inside the incident), the largest window score over the threshold, "
                  "and the windows in alarm.", "",
                  "| incident | hours | variant, magnitude | window mean z (min / max) | score / threshold (max) | "
                  "windows in alarm |", "|---|---|---|---|---|---|"]
        for i, d in enumerate(sd, 1):
            det = d["detail"]
            what = f"{det.get('variant', '')}, {det.get('magnitude', det.get('value', ''))} ({det.get('channel', '')})"
            lines.append(f"| {i} | {d['hours']:.1f} | {what} | {d['z_min']:.2f} / {d['z_max']:.2f} | "
                         f"{d['score_max']:.2f} | {d['alarm_windows']} of {d['windows']} |")
    lines += ["", *FINDINGS]
    lines += ["", "## Parameters of the `[adaptation]` policy and how they were chosen", "",
              f"`{result.get('watch_adaptation', '')}` (the default, 'on + watch'; 'on': "
              f"`{result.get('adaptation', '')}`)", "",
              *PARAMETER_NOTES]
    m = result["machine"]
    lines += ["", f"Measured {m['date']} on {m['machine']}, Python {m['python']}, commit {m['commit']}."]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default=DEFAULT_FAMILY, help="the family of the default pipeline")
    ap.add_argument("--quick", action="store_true", help="camera only; writes nothing")
    ap.add_argument("--json", type=Path, help="also write the figures as JSON here")
    ap.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/drift.md")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="an [adaptation] field for the adapting runs (repeatable; e.g. settle_s=21600; the 'on' "
                         "runs keep watch_drift 0); with it "
                         "nothing is written unless --json")
    ap.add_argument("--value-record", default="0.05", help="the likelihood's value-record tolerance, or 'off' "
                    "(with anything but the product's 0.05 nothing is written unless --json)")
    args = ap.parse_args(argv)
    value_record = None if args.value_record == "off" else float(args.value_record)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    single_core()
    result = run(args.detector, PROFILES[:1] if args.quick else PROFILES, overrides, value_record)
    text = render(result)
    print(text)
    if not (args.quick or args.no_write or overrides or value_record != 0.05):
        (RESULTS / "drift.md").write_text(text)
    if args.json:
        args.json.write_text(json.dumps(json_safe(result), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
