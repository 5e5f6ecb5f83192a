"""The agent-path replay (``tinywarden.replay``) and the drift benchmark's figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from benchmarks.drift import onset_hours, poison_figures, regime_figures, regime_met, render

from tinywarden.detectors import EWMAZScore
from tinywarden.errors import ConfigError
from tinywarden.evaluate import WindowScores
from tinywarden.pipeline import Pipeline
from tinywarden.replay import Replay, aligned_start, replay
from tinywarden.respond.policy import Adaptation
from tinywarden.telemetry.series import Series

REPO = Path(__file__).resolve().parent.parent
MACHINE = {"date": "2026-12-03", "machine": "test", "python": "3.11", "commit": "0000000"}


def _fitted(n: int = 6000) -> tuple[Pipeline, Series]:
    rng = np.random.default_rng(3)
    s = Series(np.arange(float(n)), rng.normal(size=(n, 2)), ("a", "b"))
    return Pipeline(EWMAZScore(), window=32, stride=16).fit(s.slice(0, n // 2)), s


def test_replay_without_adaptation_equals_the_batch_scorer_on_aligned_windows() -> None:
    p, s = _fitted()
    start = aligned_start(p, 3000)
    r = replay(p, s, start)
    batch = p.score(s)
    keep = batch.end_rows >= start + p.window - 1
    np.testing.assert_array_equal(r.windows.end_rows, batch.end_rows[keep])
    np.testing.assert_allclose(r.windows.scores, batch.scores[keep], rtol=1e-12)
    assert r.adapted == 0 and len(r.drift_flag_rows) == 0
    after = s.slice(start, len(s))  # the replay's first window adds every row from start
    np.testing.assert_allclose(r.confidences, p.confidence(batch.scores[keep], after, batch.end_rows[keep] - start),
                               rtol=1e-12)


def test_replay_adapts_a_copy_and_follows_a_level_shift() -> None:
    p, s = _fitted()
    shifted = Series(s.timestamps, s.values + np.where(np.arange(len(s)) >= 4000, 1.0, 0.0)[:, None], s.channels)
    offset = p.offset_.copy()
    off = replay(p, shifted, 3008)
    on = replay(p, shifted, 3008, Adaptation(rate_shift=4))
    np.testing.assert_array_equal(p.offset_, offset)  # the pipeline passed in is left alone
    late = off.windows.end_rows >= 5000
    assert on.adapted > 0
    assert on.windows.scores[late].mean() < 0.5 * off.windows.scores[late].mean()
    with pytest.raises(ConfigError, match="outside"):
        replay(p, s, len(s))


def _replay(ends: list[int], alarms: list[int], flags: tuple[int, ...] = ()) -> Replay:
    e = np.array(ends, dtype=np.int64)
    w = WindowScores(e, 8, np.zeros(len(e)), np.array(alarms, np.uint8), np.array(alarms, np.uint8), 1.0)
    return Replay(w, np.zeros(len(e)), np.array(flags, dtype=np.int64), 0, len(e))


def test_a_ramp_is_caught_only_by_an_alarm_the_unchanged_device_would_not_raise() -> None:
    ends = list(range(0, 100, 10))
    unchanged = _replay(ends, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    coincidence = _replay(ends, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    assert poison_figures(coincidence, unchanged, 20, 60)["caught_before_full"] is False
    late = _replay(ends, [0, 0, 0, 1, 0, 0, 0, 1, 0, 0])
    figs = poison_figures(late, unchanged, 20, 60)
    assert figs["alarm_at_ramp"] == 1.25 and figs["caught_before_full"] is False
    flagged = _replay(ends, [0] * 10, flags=(50,))
    figs = poison_figures(flagged, unchanged, 20, 60)
    assert figs["flag_at_ramp"] == 0.75 and figs["alarm_at_ramp"] is None and figs["caught_before_full"] is True


def test_regime_false_alarms_count_rising_edges_per_day() -> None:
    ends = list(range(0, 400, 10))
    alarms = [0] * 40
    alarms[11:14] = [1, 1, 1]  # one episode in the first "day" after the change at row 100
    alarms[16] = 1
    alarms[25] = 1  # one in the next
    figs = regime_figures(_replay(ends, alarms), change_row=100, rows_per_day=100, cut=0)
    assert (figs["fa_day_before"], figs["fa_first_24h"], figs["fa_next_24h"]) == (0.0, 2.0, 1.0)


def test_a_standing_alarm_misses_the_regime_goal_though_it_is_one_rising_edge() -> None:
    ends = list(range(0, 400, 10))
    alarms = [0] * 10 + [1] * 30  # on from the change to the end
    figs = regime_figures(_replay(ends, alarms), change_row=100, rows_per_day=100, cut=0)
    assert figs["fa_first_24h"] == 1.0 and figs["standing_after_24h"] and figs["alarm_time_first_24h"] == 1.0
    assert not regime_met(figs)
    alarms = [0] * 10 + [1] * 3 + [0] * 27
    assert regime_met(regime_figures(_replay(ends, alarms), change_row=100, rows_per_day=100, cut=0))


def test_onset_hours_are_the_rising_edges_in_the_two_days_after_the_change() -> None:
    # 100 rows a day, the change at row 100: a standing alarm counts once, at its onset; before and after 48 h: none
    r = _replay([50, 100, 110, 120, 175, 180, 250, 310, 320], [1, 1, 1, 0, 1, 0, 1, 1, 0])
    assert onset_hours(r, change_row=100, rows_per_day=100) == [18.0, 36.0]
    assert onset_hours(_replay([100, 110], [1, 0]), change_row=100, rows_per_day=100) == [0.0]


def test_the_oracle_section_renders_its_rows_and_onset_hours() -> None:
    row = {"profile": "camera", "scenario": "firmware_update", "kind": "regime", "adaptation": "watch",
           "fa_day_before": 1.0, "fa_first_24h": 2.0, "alarm_time_first_24h": 0.5, "standing_after_24h": False,
           "fa_next_24h": 5.0, "alarm_time_next_24h": 0.1, "drift_flags": 1, "adapted_windows": 10}
    oracle = [{"profile": "camera", "scenario": "firmware_update", "model": "the new regime's", "adaptation": "off",
               "onsets_h": [0.4, 28.3], "fa_first_24h": 1.0, "standing_after_24h": False, "fa_next_24h": 1.0,
               "alarm_time_first_24h": 0.01}]
    md = render({"detector": "gaussian", "rows": [row], "demo": [], "watch": [], "oracle": oracle, "sensor_drift": [],
                 "machine": MACHINE, "adaptation": "", "watch_adaptation": "", "value_record": 0.05})
    assert "### A missed change against a model of its own regime" in md
    assert "| camera | firmware_update | the new regime's | off | 1 (1%) | no | 1 | met | 0.4, 28.3 |" in md
    without = render({"detector": "gaussian", "rows": [row], "demo": [], "watch": [], "sensor_drift": [],
                      "machine": MACHINE, "adaptation": "", "watch_adaptation": "", "value_record": 0.05})
    assert "### A missed change against" not in without


@pytest.mark.slow
def test_drift_benchmark_quick_run_renders_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "drift.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "drift.py"), "--quick", "--detector", "ewma",
                           "--json", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    kinds = {(r["scenario"], r["adaptation"]) for r in result["rows"]}
    assert kinds == {(s, a) for s in ("firmware_update", "new_routine", "miner_ramp", "exfiltration_ramp",
                                      "sensor_drift_ramp") for a in ("off", "on", "watch")}  # camera: no seasonal
    assert [d["run"] for d in result["demo"]][1:] == [
        "replay, adaptation off", "replay, adaptation off: confidence >= 0.5 as the alarm",
        "replay, adaptation on", "replay, adaptation on: confidence >= 0.5 as the alarm",
        "replay, adaptation on + watch", "replay, adaptation on + watch: alarm or drift flag"]
    assert result["value_record"] == 0.05
    assert {"conf_alarms_first_24h", "conf_one_first_24h", "flags_first_24h", "events_first_24h"} <= set(
        result["rows"][0])
    assert [w["profile"] for w in result["watch"]] == ["camera"] and result["watch"][0]["train_days"] > 7.9
    whys = [r["why"] for r in result["rows"] if r["kind"] == "poisoning" and r["adaptation"] == "watch"]
    assert len(whys) == 3 and all(0.0 <= w["over_threshold"] + w["taught"] <= 1.0 for w in whys)
    assert len(result["sensor_drift"]) >= 1
    for section in ("## Poisoning ramps", "## The demo's attacks", "## The slow-drift watch's false flags",
                    "What each ramp does", "## Findings", "`watch_drift` 1 by default"):
        assert section in proc.stdout, section
