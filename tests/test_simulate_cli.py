"""Tests of ``tinywarden simulate``: files it writes read back, bad arguments give one line and exit 2."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tinywarden.cli import main
from tinywarden.simulate import simulate
from tinywarden.telemetry import read_series


def run_cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run the real entry point in-process and return its exit status."""
    monkeypatch.setattr(sys, "argv", ["tinywarden", *args])
    with pytest.raises(SystemExit) as done:
        main()
    return int(done.value.code or 0)


def test_csv_reads_back_as_the_simulated_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "cam.csv"
    rc = run_cli(
        monkeypatch, "simulate", "--profile", "camera", "--days", "2", "--attacks", "all",
        "--seed", "3", "--attack-free-days", "0.5", "--out", str(out),
    )
    assert rc == 0
    back = read_series(out)
    ref = simulate("camera", days=2, attacks="all", seed=3, attack_free_days=0.5)
    assert back.channels == ref.channels
    np.testing.assert_array_equal(back.timestamps, ref.timestamps)
    # write_csv keeps 6 significant digits: exact for the 0.01 resolution up to 9999.99, relative beyond.
    np.testing.assert_allclose(back.values, ref.values, rtol=5e-6, atol=0)
    np.testing.assert_array_equal(back.labels, ref.labels)
    assert back.attacks.tolist() == ref.attacks.tolist()
    assert set(back.attacks) - {""} == {"cryptominer", "botnet_flood", "exfiltration", "memory_exploit",
                                         "sensor_drift"}
    header = out.read_text().splitlines()[0]
    assert header == "timestamp,cpu_pct,mem_pct,power_mw,tx_pkts,tx_bytes,distinct_dst,label,attack"


def test_parquet_round_trip_is_exact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "valve.parquet"
    rc = run_cli(
        monkeypatch, "simulate", "--profile", "valve", "--days", "1",
        "--attacks", "exfiltration,sensor_drift", "--seed", "8", "--period", "30",
        "--start", "2026-03-02T00:00:00Z", "--out", str(out),
    )
    assert rc == 0
    back = read_series(out)
    ref = simulate("valve", days=1, attacks="exfiltration,sensor_drift", seed=8, period_s=30,
                   start=1772409600.0)
    np.testing.assert_array_equal(back.timestamps, ref.timestamps)
    np.testing.assert_array_equal(back.values, ref.values)
    np.testing.assert_array_equal(back.labels, ref.labels)
    assert back.attacks.tolist() == ref.attacks.tolist()


def test_same_seed_writes_the_same_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    for path, seed in ((a, "5"), (b, "5"), (c, "6")):
        args = ("simulate", "--profile", "thermostat", "--days", "1", "--seed", seed, "--out", str(path))
        assert run_cli(monkeypatch, *args) == 0
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_attacks_none_writes_an_unlabelled_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "clean.csv"
    rc = run_cli(monkeypatch, "simulate", "--profile", "camera", "--days", "0.5", "--attacks", "none",
                 "--out", str(out))
    assert rc == 0
    back = read_series(out)
    assert not back.labels.any() and set(back.attacks) == {""}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--profile", "toaster"), "profile"),
        (("--profile", "camera", "--attacks", "rowhammer"), "rowhammer"),
        (("--profile", "camera", "--days", "-1"), "days"),
        (("--profile", "camera", "--period", "0"), "period"),
        (("--profile", "camera", "--start", "yesterday"), "--start"),
        (("--profile", "camera", "--attack-free-days", "9"), "attack_free_days"),
        (("--profile", "camera", "--seed", "-4"), "seed"),
        # a start past the year 9999 gave "duplicate timestamp np.float64(1e+20)"; "," silently meant no attacks
        (("--profile", "camera", "--start", "1e20"), "--start: 1e20: the run would end after the year 9999"),
        (("--profile", "camera", "--start", "-1e20"), "--start: -1e20: the run would start before the year 1"),
        (("--profile", "camera", "--attacks", ","), "attacks: ',' names no attack"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    needle: str,
) -> None:
    out = tmp_path / "x.csv"
    # A repeated option takes its last value, so "--days -1" in ``args`` overrides the default "2".
    rc = run_cli(monkeypatch, "simulate", "--days", "2", *args, "--out", str(out))
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error:") and needle in err
    assert "\n" not in err and "Traceback" not in err
    assert not out.exists()


def test_unknown_output_suffix_is_refused_before_simulating(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.json"
    rc = run_cli(monkeypatch, "simulate", "--profile", "camera", "--days", "1", "--out", str(out))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "x.json" in err and ".json" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("--fleet", "2", "--scenario", "seasonal"),
        ("--fleet", "2", "--scenario", "nope"),
        ("--fleet", "2", "--attacks", "none"),
        ("--fleet", "2", "--attacks", "nope"),
        ("--fleet", "2", "--start", "nope"),
        ("--fleet", "2", "--attack-free-days", "0.5"),
        ("--fleet", "2", "--change-day", "0.5"),
        ("--profile", "thermostat", "--change-day", "1"),
        ("--profile", "thermostat", "--change-day", "5"),
    ],
)
def test_an_option_the_run_would_ignore_is_refused_not_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    # a fleet places its own attacks, updates and start; --change-day places a --scenario: each was dropped without
    # a word (the file written as if the option had not been given), an invalid value too
    out = tmp_path / ("fleet" if "--fleet" in args else "x.csv")
    rc = run_cli(monkeypatch, "simulate", "--days", "2", *args, "--out", str(out))
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("error:") and args[2] in err and "\n" not in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("n", ["100001", "1000000000", "99999999999999999999999"])
def test_a_fleet_too_large_to_name_is_refused_before_planning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], n: str
) -> None:
    # the plan of 10**9 devices was built in memory before the first was written: the command never returned
    out = tmp_path / "fleet"
    rc = run_cli(monkeypatch, "simulate", "--fleet", n, "--days", "1", "--out", str(out))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "--fleet" in err and "\n" not in err, err
    assert not out.exists()
