"""The simulated fleet: plan, Parquet dataset partitioned by device_id, manifest, attack-free spans."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pytest
from typer.testing import CliRunner

from tinywarden.cli import app
from tinywarden.errors import DataError
from tinywarden.fleet.dataset import device_profile, fleet_dataset, read_device, write_fleet
from tinywarden.fleet.device import attack_free_span
from tinywarden.fleet.manifest import parse_manifest, plan_fleet, read_manifest
from tinywarden.simulate import PROFILES

runner = CliRunner()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fleet")
    write_fleet(root, 6, 1.0, seed=3, period_s=30.0)
    return root


def test_plan_mixes_profiles_with_own_seeds_and_is_reproducible() -> None:
    m = plan_fleet(30, days=7.0, seed=1)
    assert {d.profile for d in m.devices} == set(PROFILES)
    assert len({d.seed for d in m.devices}) == 30
    assert len({(d.rhythm_shift_h, d.fw_update_weekday, d.fw_update_hour) for d in m.devices}) > 5
    assert 0 < sum(d.attacked for d in m.devices) < 30
    assert 0 < sum(d.firmware_update_day is not None for d in m.devices) < 30
    assert plan_fleet(30, days=7.0, seed=1) == m
    assert plan_fleet(30, days=7.0, seed=2) != m


def test_plan_refuses_bad_sizes() -> None:
    with pytest.raises(DataError, match="--fleet"):
        plan_fleet(0, days=1.0)
    with pytest.raises(DataError, match="--days"):
        plan_fleet(3, days=float("nan"))


def test_device_profile_moves_rhythm_and_firmware_slot() -> None:
    spec = dataclasses.replace(plan_fleet(1, 1.0).devices[0], rhythm_shift_h=2, fw_update_weekday=5)
    prof, base = device_profile(spec), PROFILES[spec.profile]
    assert prof.weekday_rhythm[2:] == base.weekday_rhythm[:-2]
    assert prof.schedule.fw_update_weekday == 5


def test_dataset_is_hive_partitioned_by_device_with_a_manifest(fleet: Path) -> None:
    m = read_manifest(fleet)
    table = fleet_dataset(fleet).to_table()
    ids = sorted(set(table.column("device_id").to_pylist()))
    assert ids == [d.device_id for d in m.devices]
    # the plain pyarrow reader agrees on the layout: a device's rows are where the manifest says
    one = ds.dataset(fleet / m.devices[1].partition, format="parquet").to_table()
    assert one.num_rows == m.devices[1].rows == 2880
    for d in m.devices:
        s = read_device(fleet, d.device_id)
        assert s.channels == PROFILES[d.profile].channels
        assert len(s) == d.rows


def test_attacks_are_where_the_manifest_says_and_after_the_attack_free_span(fleet: Path) -> None:
    m = read_manifest(fleet)
    assert any(d.incidents for d in m.devices)
    for d in m.devices:
        s = read_device(fleet, d.device_id)
        attacked = s.labels.astype(bool)
        expected = np.zeros(len(s), dtype=bool)
        for inc in d.incidents:
            assert inc.start >= d.train_until
            expected |= (s.timestamps >= inc.start) & (s.timestamps < inc.end)
        assert np.array_equal(attacked, expected)


def test_attack_free_span_is_the_rows_before_train_until_without_labels(fleet: Path) -> None:
    d = read_manifest(fleet).devices[0]
    s = read_device(fleet, d.device_id)
    span = attack_free_span(s, d)
    assert span.labels is None and span.attacks is None
    assert span.timestamps[-1] < d.train_until <= s.timestamps[len(span)]


def test_no_attack_free_rows_is_a_one_line_data_error(fleet: Path) -> None:
    d = read_manifest(fleet).devices[0]
    s = read_device(fleet, d.device_id)
    late = s.slice(int(np.searchsorted(s.timestamps, d.train_until)), len(s))
    with pytest.raises(DataError, match=f"{d.device_id}: no attack-free rows"):
        attack_free_span(late, d)


def test_manifest_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": 1, "devices": [{}]}')
    with pytest.raises(DataError, match="manifest.json: not a fleet manifest"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="cannot read the fleet manifest"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(DataError, match="manifest format 2"):
        parse_manifest(json.dumps({"format": 2}), "m.json")


def test_cli_simulate_fleet(tmp_path: Path) -> None:
    out = tmp_path / "fleet"
    res = runner.invoke(app, ["simulate", "--fleet", "3", "--days", "0.5", "--period", "60", "--out", str(out)])
    assert res.exit_code == 0, res.output
    m = read_manifest(out)
    assert [p.name for p in sorted(out.glob("device_id=*"))] == [d.partition for d in m.devices]
    res = runner.invoke(app, ["simulate", "--fleet", "3", "--profile", "camera", "--out", str(out)])
    assert res.exit_code != 0 and "leave --profile out" in str(res.exception)


def test_a_device_listed_twice_is_refused(tmp_path: Path) -> None:
    """Two manifest entries with one device id were both trained as one Dask task key: the second got the first's
    result (its own spec never trained), both were counted as done and signed in turn over one bundle file."""
    m = plan_fleet(2, 1.0)
    twin = dataclasses.replace(m.devices[1], device_id=m.devices[0].device_id)
    (tmp_path / "manifest.json").write_text(dataclasses.replace(m, devices=(m.devices[0], twin)).to_json())
    with pytest.raises(DataError, match=f"manifest.json: device_id '{twin.device_id}' listed twice"):
        read_manifest(tmp_path)


@pytest.mark.parametrize(("key", "value"), [("seed", "Infinity"), ("rows", "-Infinity"), ("train_until", "NaN"),
                                            ("train_until", "Infinity"), ("days", "NaN"), ("days", "9" * 400),
                                            ("train_until", "9" * 400)])  # an integer no float can hold
def test_a_manifest_number_that_is_not_finite_is_a_one_line_error(tmp_path: Path, key: str, value: str) -> None:
    """JSON as Python reads it takes NaN and Infinity: an infinite integer field died in int() with an
    OverflowError traceback; a NaN or infinite train_until put every row, attacks included, in the attack-free
    span that fleet train learns as normal."""
    doc = json.loads(plan_fleet(1, 1.0).to_json())
    target = doc if key in doc else doc["devices"][0]
    target[key] = "@@"
    (tmp_path / "manifest.json").write_text(json.dumps(doc).replace('"@@"', value))
    with pytest.raises(DataError, match=f"manifest.json: .*{key}"):
        read_manifest(tmp_path)


def test_a_manifest_that_is_not_utf8_is_a_one_line_error(tmp_path: Path) -> None:
    """A binary file (or one saved as UTF-16) named manifest.json died in read_text with a UnicodeDecodeError."""
    (tmp_path / "manifest.json").write_bytes(b"\xff\xfe{\x00}\x00")
    with pytest.raises(DataError, match="manifest.json: cannot read the fleet manifest"):
        read_manifest(tmp_path)
