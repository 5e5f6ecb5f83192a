"""Scenarios of lasting change: regime changes stay normal (label 0), poisoning ramps are attacks (label 1)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tinywarden.cli import main
from tinywarden.errors import ConfigError
from tinywarden.simulate import SCENARIO_SPECS, SCENARIOS, simulate, simulate_detailed
from tinywarden.telemetry import read_series

DAY_ROWS = 8640  # 10 s sampling


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_rows_before_the_change_equal_the_unchanged_run_and_labels_follow_the_kind(scenario: str) -> None:
    base = simulate("thermostat", 6, "none", seed=4)
    sim = simulate_detailed("thermostat", 6, "none", seed=4, scenario=scenario, change_day=2)
    (change,) = sim.changes
    s = sim.series
    assert change.start_row == 2 * DAY_ROWS
    np.testing.assert_array_equal(s.values[: change.start_row], base.values[: change.start_row])
    assert not np.array_equal(s.values[change.start_row :], base.values[change.start_row :])
    if SCENARIO_SPECS[scenario].kind == "regime":
        assert not change.is_attack and int(s.labels.sum()) == 0 and set(s.attacks) == {""}
    else:
        assert change.is_attack
        assert s.labels[: change.start_row].sum() == 0 and s.labels[change.start_row :].all()
        assert set(s.attacks[change.start_row :]) == {scenario}
        assert change.full_row - change.start_row == 3 * DAY_ROWS
    assert s.meta["scenario"] == scenario
    again = simulate("thermostat", 6, "none", seed=4, scenario=scenario, change_day=2)
    np.testing.assert_array_equal(s.values, again.values)


def _added(scenario: str, channel: str) -> np.ndarray:
    base = simulate("camera", 6, "none", seed=5)
    s = simulate("camera", 6, "none", seed=5, scenario=scenario, change_day=1)
    i = s.channels.index(channel)
    return s.values[:, i] - base.values[:, i]


@pytest.mark.parametrize(("scenario", "channel"), [("miner_ramp", "cpu_pct"), ("exfiltration_ramp", "tx_bytes"),
                                                     ("sensor_drift_ramp", "power_mw")])
def test_poisoning_ramps_up_over_three_days_slower_than_any_window_sees(scenario: str, channel: str) -> None:
    added = _added(scenario, channel)
    start, full = DAY_ROWS, 4 * DAY_ROWS
    first_hour = np.abs(added[start : start + 360]).mean()
    day_two = np.abs(added[start + DAY_ROWS : start + 2 * DAY_ROWS]).mean()
    at_full = np.abs(added[full:]).mean()
    assert at_full > 0
    assert first_hour < 0.03 * at_full  # a window of an hour sees almost nothing
    assert 0.2 * at_full < day_two < 0.7 * at_full  # still ramping on day two


def test_firmware_update_permanently_raises_cpu_memory_and_traffic() -> None:
    base = simulate("valve", 5, "none", seed=6)
    s = simulate("valve", 5, "none", seed=6, scenario="firmware_update", change_day=2)
    after = slice(3 * DAY_ROWS, None)  # a day after the change, to the end
    for channel, least in (("cpu_pct", 3.0), ("mem_pct", 5.0), ("tx_pkts", 20.0), ("distinct_dst", 0.5)):
        i = s.channels.index(channel)
        assert s.values[after, i].mean() - base.values[after, i].mean() > least, channel


def test_new_routine_moves_the_daily_rhythm_later() -> None:
    base = simulate("camera", 6, "none", seed=8)
    s = simulate("camera", 6, "none", seed=8, scenario="new_routine", change_day=1)
    i = s.channels.index("cpu_pct")
    hour = (np.arange(len(s)) * 10 // 3600) % 24

    weekdays = slice(4 * DAY_ROWS, 6 * DAY_ROWS)  # 2026-01-05 and -06: Monday and Tuesday

    def hourly(values: np.ndarray) -> np.ndarray:
        return np.array([values[weekdays, i][hour[weekdays] == h].mean() for h in range(24)])

    new, old = hourly(s.values), hourly(base.values)
    lags = [float(np.corrcoef(np.roll(old, k), new)[0, 1]) for k in range(24)]
    assert int(np.argmax(lags)) == 4


def test_seasonal_warms_the_thermostat_room_and_needs_a_temperature() -> None:
    base = simulate("thermostat", 5, "none", seed=9)
    s = simulate("thermostat", 5, "none", seed=9, scenario="seasonal", change_day=1)
    i = s.channels.index("temp_c")
    warming = s.values[4 * DAY_ROWS :, i].mean() - base.values[4 * DAY_ROWS :, i].mean()
    assert warming == pytest.approx(2.5, abs=0.1)
    with pytest.raises(ConfigError, match="temperature"):
        simulate("camera", 5, "none", scenario="seasonal")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"scenario": "meteor"}, "unknown scenario"),
    ({"scenario": "miner_ramp", "change_day": 9.0}, "outside the run"),
    ({"scenario": "miner_ramp", "change_day": float("nan")}, "not finite"),
])
def test_bad_scenario_arguments_are_one_line_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        simulate("camera", 2, "none", **kwargs)  # type: ignore[arg-type]


def test_cli_writes_the_ground_truth(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "m.csv"
    monkeypatch.setattr(sys, "argv", ["tinywarden", "simulate", "--profile", "camera", "--days", "2",
                                      "--attacks", "botnet_flood", "--attack-free-days", "1",
                                      "--scenario", "exfiltration_ramp", "--change-day", "0.5", "--out", str(out)])
    with pytest.raises(SystemExit) as done:
        main()
    assert (done.value.code or 0) == 0
    back = read_series(out)
    assert set(back.attacks) == {"", "exfiltration_ramp", "botnet_flood"}
    assert back.labels[: DAY_ROWS // 2].sum() == 0 and back.labels[DAY_ROWS // 2 :].all()
    monkeypatch.setattr(sys, "argv", ["tinywarden", "simulate", "--profile", "camera", "--scenario", "seasonal",
                                      "--out", str(out)])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
