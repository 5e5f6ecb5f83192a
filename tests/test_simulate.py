"""Tests of the device simulator library: reproducibility, labels, schedule, attacks, channel validity."""

from __future__ import annotations

import numpy as np
import pytest

import tinywarden.simulate as sim_pkg
from tinywarden.errors import ConfigError
from tinywarden.simulate import (
    ATTACKS,
    DEFAULT_START,
    PROFILES,
    Mode,
    simulate,
    simulate_detailed,
    targets,
)
from tinywarden.simulate import attacks as attacks_mod
from tinywarden.simulate import profiles as profiles_mod

COUNTERS = ("tx_pkts", "rx_pkts", "tx_bytes", "distinct_dst")


@pytest.fixture(scope="module", params=sorted(PROFILES))
def week(request: pytest.FixtureRequest) -> sim_pkg.Simulation:
    """Eight days per profile, the first three attack-free."""
    return simulate_detailed(request.param, days=8, attacks="all", seed=11, attack_free_days=3)


def test_public_names() -> None:
    assert ATTACKS == ("cryptominer", "botnet_flood", "exfiltration", "memory_exploit", "sensor_drift")
    camera = ("cpu_pct", "mem_pct", "power_mw", "tx_pkts", "tx_bytes", "distinct_dst")
    assert PROFILES["camera"].channels == camera
    assert {"rx_pkts", "valve_pos_pct", "pressure_kpa"} <= set(PROFILES["valve"].channels)
    assert {"rx_pkts", "temp_c", "humidity_pct"} <= set(PROFILES["thermostat"].channels)
    assert DEFAULT_START == 1767225600.0  # 2026-01-01T00:00:00Z


def test_same_arguments_give_identical_arrays() -> None:
    a = simulate("valve", days=2, attacks="all", seed=7, attack_free_days=0.5)
    b = simulate("valve", days=2, attacks="all", seed=7, attack_free_days=0.5)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.attacks.tolist() == b.attacks.tolist()
    assert a.meta == b.meta


def test_different_seed_gives_different_data() -> None:
    a = simulate("camera", days=1, attacks="all", seed=1)
    b = simulate("camera", days=1, attacks="all", seed=2)
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert not np.array_equal(a.values, b.values)
    assert not np.array_equal(a.labels, b.labels)


def test_attack_list_forms_agree() -> None:
    by_text = simulate("thermostat", days=1, attacks="exfiltration, cryptominer", seed=4)
    by_seq = simulate("thermostat", days=1, attacks=["cryptominer", "exfiltration"], seed=4)
    np.testing.assert_array_equal(by_text.values, by_seq.values)
    assert set(by_text.attacks) == {"", "cryptominer", "exfiltration"}


def test_labels_sit_exactly_on_incident_rows(week: sim_pkg.Simulation) -> None:
    s = week.series
    expected = np.zeros(len(s), dtype=np.int8)
    names = np.full(len(s), "", dtype=object)
    for inc in week.incidents:
        assert inc.attack in ATTACKS
        assert inc.start == s.timestamps[inc.start_row]
        assert inc.end == pytest.approx(s.timestamps[inc.stop_row - 1] + s.period)
        expected[inc.rows] = 1
        names[inc.rows] = inc.attack
    np.testing.assert_array_equal(s.labels, expected)
    assert s.attacks.tolist() == names.tolist()
    np.testing.assert_array_equal(s.labels == 1, s.attacks != "")


def test_every_attack_type_appears_several_times(week: sim_pkg.Simulation) -> None:
    counts = {a: sum(i.attack == a for i in week.incidents) for a in ATTACKS}
    assert all(c >= 2 for c in counts.values()), counts
    assert 0.02 < week.series.labels.mean() < 0.5


def test_incidents_do_not_overlap_and_avoid_scheduled_windows(week: sim_pkg.Simulation) -> None:
    rows = sorted((i.start_row, i.stop_row) for i in week.incidents)
    gap = attacks_mod.GAP_BETWEEN_INCIDENTS_S / week.series.period
    for (_, stop), (start, _) in zip(rows, rows[1:], strict=False):
        assert start - stop >= gap
    scheduled = np.isin(week.modes, [Mode.BOOT, Mode.FW_UPDATE, Mode.MAINTENANCE, Mode.FW_CHECK])
    assert not (scheduled & (week.series.labels == 1)).any()


def test_attack_free_days_are_free_and_attacks_follow(week: sim_pkg.Simulation) -> None:
    s = week.series
    free_end = s.timestamps[0] + 3 * 86400
    assert not s.labels[s.timestamps < free_end].any()
    assert s.labels[s.timestamps >= free_end].any()
    assert min(i.start for i in week.incidents) >= free_end


def test_channel_values_are_physically_valid(week: sim_pkg.Simulation) -> None:
    s = week.series
    assert np.isfinite(s.values).all()
    for j, name in enumerate(s.channels):
        x = s.values[:, j]
        if name.endswith("_pct"):
            assert x.min() >= 0.0 and x.max() <= 100.0, name
        if name in COUNTERS:
            assert (x >= 0).all() and np.array_equal(x, np.round(x)), name
        if name == "power_mw":
            assert (x > 0).all()
    col = {name: s.values[:, j] for j, name in enumerate(s.channels)}
    assert (col["distinct_dst"] <= col["tx_pkts"]).all()
    assert (col["tx_bytes"] >= profiles_mod.MIN_PKT_BYTES * col["tx_pkts"]).all()
    assert (col["tx_bytes"][col["tx_pkts"] == 0] == 0).all()


def test_scheduled_normal_modes_happen_and_are_unlabelled(week: sim_pkg.Simulation) -> None:
    present = set(np.unique(week.modes).tolist())
    assert {Mode.BOOT, Mode.FW_CHECK, Mode.FW_UPDATE, Mode.MAINTENANCE, Mode.IDLE, Mode.PEAK} <= present
    assert week.modes[0] == Mode.BOOT
    # Boot after each update and each maintenance window, plus power-on.
    boots = np.sum(np.diff((week.modes == Mode.BOOT).astype(int)) == 1) + 1
    updates = np.sum(np.diff((week.modes == Mode.FW_UPDATE).astype(int)) == 1)
    maints = np.sum(np.diff((week.modes == Mode.MAINTENANCE).astype(int)) == 1)
    assert updates >= 1 and maints >= 1
    assert boots == 1 + updates + maints


def test_firmware_update_is_a_normal_cpu_plateau() -> None:
    sim = simulate_detailed("camera", days=8, attacks="none", seed=3)
    cpu = sim.series.values[:, 0]
    update = sim.modes == Mode.FW_UPDATE
    idle = sim.modes == Mode.IDLE
    assert cpu[update].mean() > cpu[idle].mean() + 30
    assert not sim.series.labels.any()


def test_daily_rhythm_shows_in_normal_traffic() -> None:
    s = simulate("camera", days=7, attacks="none", seed=5)
    hour = (s.timestamps % 86400) / 3600
    tx = s.values[:, s.channels.index("tx_pkts")]
    assert tx[(hour >= 17) & (hour < 19)].mean() > 3 * tx[(hour >= 1) & (hour < 4)].mean()


def test_normal_power_is_higher_at_night_on_the_camera() -> None:
    # The IR illuminator: power rises while CPU falls, a relation a detector has to learn.
    s = simulate("camera", days=7, attacks="none", seed=5)
    hour = (s.timestamps % 86400) / 3600
    night, noon = (hour >= 1) & (hour < 4), (hour >= 11) & (hour < 14)
    cpu, power = s.values[:, 0], s.values[:, 2]
    assert cpu[night].mean() < cpu[noon].mean()
    assert power[night].mean() > power[noon].mean()


@pytest.mark.parametrize("profile", sorted(PROFILES))
@pytest.mark.parametrize("attack", ATTACKS)
def test_attack_changes_only_its_rows_and_shifts_its_targets(profile: str, attack: str) -> None:
    base = simulate(profile, days=3, attacks="none", seed=21)
    sim = simulate_detailed(profile, days=3, attacks=attack, seed=21)
    s = sim.series
    hit = s.labels == 1
    assert hit.any() and set(s.attacks[hit]) == {attack}
    np.testing.assert_array_equal(s.values[~hit], base.values[~hit])
    for inc in sim.incidents:
        for channel in targets(attack, PROFILES[profile]):
            j = s.channels.index(channel)
            after, before = s.values[inc.rows, j], base.values[inc.rows, j]
            if attack == "memory_exploit":
                assert after.max() > max(before.max() + 20, 85), (channel, inc)
            elif attack == "sensor_drift":
                assert np.abs(after - before).mean() > 0, (channel, inc)
                if inc.detail["variant"] == "ramp":
                    end = after[-3:] - before[-3:]
                    assert np.all(np.sign(end) == np.sign(inc.detail["magnitude"]))
                    assert np.abs(end).mean() > 0.5 * abs(float(inc.detail["magnitude"]))
            else:
                assert after.mean() > before.mean(), (channel, inc)


def test_subtle_attacks_hide_inside_the_normal_range_and_loud_ones_do_not() -> None:
    flagged: dict[str, list[float]] = {a: [] for a in ATTACKS}
    for profile in PROFILES:
        s = simulate(profile, days=10, attacks="all", seed=2, attack_free_days=5)
        normal = s.labels == 0
        lo = np.percentile(s.values[normal], 0.5, axis=0)
        hi = np.percentile(s.values[normal], 99.5, axis=0)
        outside = ((s.values < lo) | (s.values > hi)).any(axis=1)
        for a in ATTACKS:
            flagged[a].append(float(outside[s.attacks == a].mean()))
    mean = {a: float(np.mean(v)) for a, v in flagged.items()}
    # A per-channel range check catches floods, crashes and miners but not low-and-slow attacks.
    assert mean["memory_exploit"] > 0.8 and mean["botnet_flood"] > 0.6 and mean["cryptominer"] > 0.6, mean
    assert mean["exfiltration"] < 0.4 and mean["sensor_drift"] < 0.4, mean


def test_longer_period_scales_counts_per_sample() -> None:
    fine = simulate("valve", days=2, attacks="none", seed=9, period_s=10)
    coarse = simulate("valve", days=2, attacks="none", seed=9, period_s=60)
    assert len(coarse) * 6 == len(fine)
    j = fine.channels.index("tx_pkts")
    ratio = coarse.values[:, j].mean() / fine.values[:, j].mean()
    assert 5.0 < ratio < 7.0
    assert coarse.period == 60.0


def test_start_sets_the_clock() -> None:
    s = simulate("thermostat", days=0.5, attacks="none", seed=0, start=1_000_000.0)
    assert s.timestamps[0] == 1_000_000.0
    assert np.all(np.diff(s.timestamps) == 10.0)


def test_attack_free_days_may_cover_everything_without_attacks() -> None:
    s = simulate("camera", days=1, attacks="none", seed=0, attack_free_days=5)
    assert not s.labels.any()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"profile": "toaster"}, "profile"),
        ({"attacks": "cryptominer,rowhammer"}, "attacks"),
        ({"attacks": ["nope"]}, "attacks"),
        ({"days": 0}, "days"),
        ({"days": -2}, "days"),
        ({"days": float("nan")}, "days"),
        ({"period_s": 0}, "period_s"),
        ({"period_s": float("inf")}, "period_s"),
        ({"days": 0.0001, "period_s": 60}, "days"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"attack_free_days": -1}, "attack_free_days"),
        ({"attack_free_days": 2}, "attack_free_days"),
        ({"days": 0.05}, "attacks"),  # 72 minutes: no room for a miner
    ],
)
def test_bad_arguments_raise_config_error(kwargs: dict[str, object], field: str) -> None:
    args: dict[str, object] = {"profile": "camera", "days": 2, "attacks": "all", "seed": 0}
    args.update(kwargs)
    with pytest.raises(ConfigError) as err:
        simulate(**args)  # type: ignore[arg-type]
    assert str(err.value).startswith(field)
    assert "\n" not in str(err.value)
