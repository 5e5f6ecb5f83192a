"""Cold start: a model per profile from some of its devices, measured against the own models of the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tinywarden import bundle as tb
from tinywarden.errors import DataError
from tinywarden.fleet.coldstart import cold_start, profile_training_series, split_profile
from tinywarden.fleet.dataset import read_device, write_fleet
from tinywarden.fleet.device import TrainOptions, attack_free_span
from tinywarden.fleet.ledger import bundle_path, read_summary, summary_path
from tinywarden.fleet.run import fleet_client, run_fleet
from tinywarden.modelfile import pipeline_from_bytes

pytest.importorskip("distributed")
POLICY = (Path(__file__).resolve().parents[1] / "examples" / "policy.toml").read_bytes()


def test_profile_model_is_measured_only_on_devices_that_did_not_train_it(tmp_path: Path) -> None:
    m = write_fleet(tmp_path / "fleet", 4, 0.5, seed=1, period_s=60.0)  # camera x2, thermostat, valve
    key = tb.generate_key()
    with fleet_client(workers=1, processes=False) as client:
        run = run_fleet(tmp_path / "fleet", tmp_path / "b", key, POLICY, client)
        assert not run.failed
        # a hand-edited summary without the figures compared is a one-line error naming it (was a KeyError)
        cams = [summary_path(tmp_path / "b", d.device_id) for d in m.devices if d.profile == "camera"]
        kept = [p.read_text() for p in cams]
        for p in cams:
            p.write_text(p.read_text().replace('"detected"', '"was_detected"'))
        with pytest.raises(DataError, match=r"dev-0000[03]\.json: device summary without 'detected'"):
            cold_start(tmp_path / "fleet", tmp_path / "b", m, client, max_devices=8)
        for p, text in zip(cams, kept, strict=True):
            p.write_text(text)
        # the own models must all be the last run's: an unfinished run is refused, a device it failed not compared
        record = tmp_path / "b" / "fleet-run.json"
        ended = record.read_text()
        record.write_text(json.dumps({"status": "running", "started": 0, "to_train": 4}))
        with pytest.raises(DataError, match="has not finished"):
            cold_start(tmp_path / "fleet", tmp_path / "b", m, client, max_devices=8)
        record.write_text(ended)
        result, models = cold_start(tmp_path / "fleet", tmp_path / "b", m, client, max_devices=8)
        (compared,) = [d["device_id"] for d in result["profiles"]["camera"]["devices"]]
        record.write_text(json.dumps({**json.loads(ended), "failed": {compared: f"{compared}: disk full"}}))
        stale, _ = cold_start(tmp_path / "fleet", tmp_path / "b", m, client, max_devices=8)
        assert stale["not_compared"] == {compared: f"{compared}: disk full"}
        assert stale["profiles"]["camera"]["devices"] == []  # its bundle is an earlier run's: not compared
        record.write_text(ended)
        # a device with too little own normal is bundled with its profile's model; the others get their own
        cold = run_fleet(tmp_path / "fleet", tmp_path / "cold", key, POLICY, client,
                         TrainOptions(profile_models=models, min_own_rows=10**6))
    assert not cold.failed
    for d in m.devices:
        b = tb.verify_bundle(bundle_path(tmp_path / "cold", d.device_id).read_bytes(), tb.public_key_of(key))
        assert (b.model == models["camera"]) == (d.profile == "camera")
        assert read_summary(tmp_path / "cold", d.device_id)["cold_start"] == (d.profile == "camera")
    assert "1 device(s)" in result["profiles"]["valve"]["skipped"] and "valve" not in models
    for profile in ("camera",):
        r = result["profiles"][profile]
        trained = set(r["trained_on"])
        compared = {d["device_id"] for d in r["devices"]}
        assert len(trained) == 1 and len(compared) == 1 and not trained & compared
        for d in r["devices"]:  # the own numbers are the device's own summary from fleet train
            own = read_summary(tmp_path / "b", d["device_id"])
            assert d["own_false_alarms_per_day"] == own["false_alarms_per_day"]
            assert d["own_detected"] == own["detected"]
        p = pipeline_from_bytes(models[profile])
        specs = [s for s in m.devices if s.device_id in trained]
        assert p.train_summary_["rows"] == len(profile_training_series(tmp_path / "fleet", specs))
        assert "int8" in p.header_


def test_profile_series_lays_spans_end_to_end(tmp_path: Path) -> None:
    m = write_fleet(tmp_path, 4, 0.25, seed=2, period_s=60.0)
    cams = [d for d in m.devices if d.profile == "camera"]
    s = profile_training_series(tmp_path, cams)
    spans = [attack_free_span(read_device(tmp_path, d.device_id), d) for d in cams]
    assert len(s) == sum(len(x) for x in spans) and s.labels is None
    assert (s.values[: len(spans[0])] == spans[0].values).all()
    with pytest.raises(DataError, match="needs 2 or more"):
        split_profile(m, "valve")
