"""fleet train on Dask: per-device bundles that verify and install, bad devices reported, resume, versions,
a worker killed mid-task, and the report."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import cloudpickle
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import spy_fits
from tinywarden import bundle as tb
from tinywarden.cli import app
from tinywarden.errors import DataError, TinywardenError
from tinywarden.fileio import atomic_write
from tinywarden.fleet.dataset import partition_file, read_device, write_fleet
from tinywarden.fleet.device import THREAD_VARIABLES, DeviceOutcome, TrainOptions, train_device
from tinywarden.fleet.ledger import bundle_path, is_done, summary_path
from tinywarden.fleet.manifest import MANIFEST_FILE, read_manifest
from tinywarden.fleet.report import write_report
from tinywarden.fleet.run import fleet_client, run_fleet
from tinywarden.telemetry.io import write_parquet
from tinywarden.telemetry.series import Series

distributed = pytest.importorskip("distributed")
runner = CliRunner()
POLICY = (Path(__file__).resolve().parents[1] / "examples" / "policy.toml").read_bytes()
BAD = {"dev-corrupt": "not a readable Parquet file", "dev-short": "0 normal windows of 32 rows",
       "dev-late": "no attack-free rows"}


def make_fleet(root: Path) -> None:
    """Three simulated devices (one attacked) plus three bad ones: a corrupt file, too few rows, no normal rows."""
    m = write_fleet(root, 3, 0.5, seed=5, period_s=30.0)
    first = m.devices[0]
    s = read_device(root, first.device_id)
    corrupt = dataclasses.replace(first, device_id="dev-corrupt")
    partition_file(root, corrupt.device_id).parent.mkdir()
    partition_file(root, corrupt.device_id).write_bytes(b"PAR1" + os.urandom(200) + b"PAR1")
    short = dataclasses.replace(first, device_id="dev-short", rows=20)
    write_parquet(s.slice(0, 20), partition_file(root, short.device_id))
    cut = int(np.searchsorted(s.timestamps, first.train_until))
    late = dataclasses.replace(first, device_id="dev-late", rows=len(s) - cut)
    write_parquet(s.slice(cut, len(s)), partition_file(root, late.device_id))
    full = dataclasses.replace(m, devices=(*m.devices, corrupt, short, late))
    atomic_write(root / MANIFEST_FILE, full.to_json())


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path, dict[str, bytes]]:
    """The fleet trained once through the CLI (a local cluster of one worker process)."""
    tmp = tmp_path_factory.mktemp("fleet")
    make_fleet(tmp / "fleet")
    priv, pub = tb.write_keypair(tmp / "signing")  # PREFIX.key and .pub (keygen refuses a folder as the prefix)
    res = runner.invoke(app, ["fleet", "train", str(tmp / "fleet"), "--out", str(tmp / "bundles"),
                              "--key", str(priv), "--workers", "1"])
    assert res.exit_code == 1, res.output  # some devices failed: the fleet finished anyway
    first = {p.name: p.read_bytes() for p in (tmp / "bundles").iterdir()}
    return tmp / "fleet", tmp / "bundles", pub, first


def test_every_good_device_is_signed_and_installs(trained: tuple[Path, Path, Path, dict[str, bytes]],
                                                  tmp_path: Path) -> None:
    root, out, pub, _ = trained
    key = tb.load_public_key(pub)
    good = [d for d in read_manifest(root).devices if d.device_id not in BAD]
    for d in good:
        b = tb.load_verified_bundle(bundle_path(out, d.device_id), key)
        assert (b.version, b.profile, b.metadata["device_id"]) == (1, d.profile, d.device_id)
        assert b.metadata["training_data_sha256"] == hashlib.sha256(
            partition_file(root, d.device_id).read_bytes()).hexdigest()
        tb.install_bundle(bundle_path(out, d.device_id), key, tmp_path / d.device_id)
        summary = json.loads(summary_path(out, d.device_id).read_text())
        assert summary["train_rows"] == int(np.sum(read_device(root, d.device_id).timestamps < d.train_until))
        assert summary["flash"] > 0 and summary["ram"] > 0 and summary["family"] == "pca"
        assert is_done(out, d.device_id)


def test_bad_devices_are_reported_in_one_line_and_do_not_stop_the_fleet(
        trained: tuple[Path, Path, Path, dict[str, bytes]]) -> None:
    _, out, _, _ = trained
    run = json.loads((out / "fleet-run.json").read_text())
    assert sorted(run["done"]) == ["dev-00000", "dev-00001", "dev-00002"]
    assert sorted(run["failed"]) == sorted(BAD)
    for device_id, words in BAD.items():
        message = run["failed"][device_id]
        assert words in message and "\n" not in message and "Traceback" not in message
        assert not bundle_path(out, device_id).exists()


def test_rerun_skips_done_devices_and_changes_nothing(trained: tuple[Path, Path, Path, dict[str, bytes]]) -> None:
    root, out, pub, first = trained
    key = tb.load_private_key(pub.with_suffix(".key"))
    calls = []

    def progress(done: int, failed: int, remaining: int, device_id: str) -> None:
        calls.append(device_id)

    with fleet_client(workers=1, processes=False) as client:
        run = run_fleet(root, out, key, POLICY, client, progress=progress)
    assert sorted(run.skipped) == ["dev-00000", "dev-00001", "dev-00002"]
    assert sorted(run.failed) == sorted(BAD) and run.done == []  # failed ones were tried again
    for name, data in first.items():
        if name.endswith((".twbundle", ".json")) and name != "fleet-run.json":
            assert (out / name).read_bytes() == data, name


def test_retraining_never_reuses_a_signed_version(trained: tuple[Path, Path, Path, dict[str, bytes]],
                                                  tmp_path: Path) -> None:
    """A bundle written but its summary lost (a crash between the two): the new bundle is version 2."""
    root, out, pub, _ = trained
    key = tb.load_private_key(pub.with_suffix(".key"))
    out2 = tmp_path / "b"
    out2.mkdir()
    device = "dev-00001"
    old = bundle_path(out, device).read_bytes()
    bundle_path(out2, device).write_bytes(old)
    manifest = read_manifest(root)
    sub = tmp_path / "fleet"
    sub.mkdir()
    atomic_write(sub / MANIFEST_FILE, dataclasses.replace(manifest, devices=(manifest.device(device),)).to_json())
    partition_file(sub, device).parent.mkdir()
    partition_file(sub, device).write_bytes(partition_file(root, device).read_bytes())
    with fleet_client(workers=1, processes=False) as client:
        run = run_fleet(sub, out2, key, POLICY, client)
    assert run.done == [device]
    new = tb.verify_bundle(bundle_path(out2, device).read_bytes(), tb.public_key_of(key))
    assert new.version == 2 and bundle_path(out2, device).read_bytes() != old


def _killer(marker: str) -> object:
    """A per-device task that kills its own worker process the first time it runs (a worker lost mid-run)."""

    def task(root: str, spec: object, options: TrainOptions, policy: bytes) -> DeviceOutcome:
        if spec.device_id == "dev-00002" and not os.path.exists(marker):  # type: ignore[attr-defined]
            Path(marker).write_text("killed")
            os._exit(1)
        with open(marker + ".runs", "a") as fh:
            fh.write(spec.device_id + "\n")  # type: ignore[attr-defined]
        return train_device(root, spec, options, policy)  # type: ignore[arg-type]

    return task


def test_a_worker_killed_mid_run_has_its_device_retried(trained: tuple[Path, Path, Path, dict[str, bytes]],
                                                         tmp_path: Path) -> None:
    root, _, pub, _ = trained
    key = tb.load_private_key(pub.with_suffix(".key"))
    good = tmp_path / "fleet"
    manifest = read_manifest(root)
    devices = tuple(d for d in manifest.devices if d.device_id == "dev-00002")
    good.mkdir()
    atomic_write(good / MANIFEST_FILE, dataclasses.replace(manifest, devices=devices).to_json())
    for d in devices:
        partition_file(good, d.device_id).parent.mkdir()
        partition_file(good, d.device_id).write_bytes(partition_file(root, d.device_id).read_bytes())
    marker = str(tmp_path / "killed")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    with fleet_client(workers=1) as client:
        run = run_fleet(good, tmp_path / "out", key, POLICY, client, task=_killer(marker))
    assert Path(marker).read_text() == "killed"  # the worker did die in dev-00002's task
    assert run.done == ["dev-00002"] and not run.failed
    assert Path(marker + ".runs").read_text().split() == ["dev-00002"]  # the retry, on the restarted worker
    b = tb.verify_bundle(bundle_path(tmp_path / "out", "dev-00002").read_bytes(), tb.public_key_of(key))
    assert b.version == 1


def test_report_is_one_self_contained_page_and_a_json_summary(
        trained: tuple[Path, Path, Path, dict[str, bytes]], tmp_path: Path) -> None:
    root, out, _, _ = trained
    res = runner.invoke(app, ["fleet", "report", str(out), "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "r.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "http" not in page.replace("data:image", "")  # nothing to fetch
    summary = json.loads((tmp_path / "r.json").read_text())
    m = read_manifest(root)
    good = [d for d in m.devices if d.device_id not in BAD]
    assert summary["devices"] == len(good) and summary["failed"] == len(BAD)
    assert summary["incidents"] == sum(len(d.incidents) for d in good) > 0
    assert summary["total_bundle_bytes"] == sum(bundle_path(out, d.device_id).stat().st_size for d in good)
    for row in summary["per_device"]:
        assert row["device_id"] in page and row["flash"] > 0
    t = summary["fleet_threshold"]
    assert t["normal_windows"] > t["normal_over"] >= 0
    # a lower fleet threshold can only put more windows over it
    lower = write_report(out, tmp_path / "l.html", tmp_path / "l.json", confidence=0.9)["fleet_threshold"]
    assert lower["normal_over"] >= t["normal_over"] and lower["attack_over"] >= t["attack_over"]


def test_a_report_written_into_the_bundle_folder_is_not_read_as_a_device(
        trained: tuple[Path, Path, Path, dict[str, bytes]], tmp_path: Path) -> None:
    _, out, _, _ = trained
    copy = tmp_path / "b"
    shutil.copytree(out, copy)
    first = write_report(copy, copy / "report.html", copy / "report.json")
    assert write_report(copy, copy / "report.html", copy / "report.json") == first  # once failed: "no device_id"
    bundle_path(copy, "dev-00000").with_suffix(".json").unlink()
    assert "interrupted" in write_report(copy, tmp_path / "r.html", tmp_path / "r.json")["failures"]["dev-00000"]


def test_tune_under_a_budget_per_device(trained: tuple[Path, Path, Path, dict[str, bytes]], tmp_path: Path) -> None:
    root, _, pub, _ = trained
    key = tb.load_private_key(pub.with_suffix(".key"))
    manifest = read_manifest(root)
    one = tmp_path / "fleet"
    one.mkdir()
    atomic_write(one / MANIFEST_FILE, dataclasses.replace(manifest, devices=manifest.devices[:1]).to_json())
    os.symlink(root / manifest.devices[0].partition, one / manifest.devices[0].partition)
    options = TrainOptions(tune=True, trials=2, flash=6 * 1024, ram=2 * 1024)
    with fleet_client(workers=1, processes=False) as client:
        run = run_fleet(one, tmp_path / "b", key, POLICY, client, options)
    assert run.done == ["dev-00000"], run.failed
    s = json.loads(summary_path(tmp_path / "b", "dev-00000").read_text())
    assert s["tuned"] and s["flash"] <= 6 * 1024 and s["ram"] <= 2 * 1024
    tb.load_verified_bundle(bundle_path(tmp_path / "b", "dev-00000"), tb.public_key_of(key))


SEEN: list[int] = []


def _count_tasks(root: str, spec: object, options: TrainOptions, policy: bytes) -> DeviceOutcome:
    """A stand-in task that records how many tasks the (in-process) scheduler holds while it runs."""
    SEEN.append(len(SCHEDULER[0].tasks))
    return DeviceOutcome(spec.device_id, False, f"{spec.device_id}: counted")  # type: ignore[attr-defined]


SCHEDULER: list[object] = []


def test_tasks_in_flight_are_bounded_whatever_the_fleet_size(tmp_path: Path) -> None:
    from tinywarden.fleet.manifest import plan_fleet
    from tinywarden.fleet.run import IN_FLIGHT_PER_THREAD

    m = plan_fleet(40, 1.0)
    tmp_path.joinpath(MANIFEST_FILE).write_text(m.to_json())
    SEEN.clear()
    with fleet_client(workers=1, processes=False) as client:
        SCHEDULER[:] = [client.cluster.scheduler]
        run = run_fleet(tmp_path, tmp_path / "b", tb.generate_key(), POLICY, client, task=_count_tasks)
    assert len(run.failed) == 40 and len(SEEN) == 40
    assert max(SEEN) <= IN_FLIGHT_PER_THREAD


def test_a_bundle_signed_with_another_key_is_done_again(trained: tuple[Path, Path, Path, dict[str, bytes]],
                                                       tmp_path: Path) -> None:
    root, out, _, _ = trained
    manifest = read_manifest(root)
    one = tmp_path / "fleet"
    one.mkdir()
    atomic_write(one / MANIFEST_FILE, dataclasses.replace(manifest, devices=manifest.devices[:1]).to_json())
    os.symlink(root / manifest.devices[0].partition, one / manifest.devices[0].partition)
    out2 = tmp_path / "b"
    shutil.copytree(out, out2)
    new_key = tb.generate_key()
    with fleet_client(workers=1, processes=False) as client:
        run = run_fleet(one, out2, new_key, POLICY, client)
    assert run.done == ["dev-00000"] and run.skipped == []
    b = tb.verify_bundle(bundle_path(out2, "dev-00000").read_bytes(), tb.public_key_of(new_key))
    assert b.version == 2  # version 1 was signed by the old key: never signed again


def _profile_samples_kept(dask_worker: Any) -> int:
    """Stack samples a worker's statistical profiler holds: its per-second history, per task prefix too."""
    w = dask_worker
    kept = w.profile_recent["count"] + sum(p["count"] for p in w.profile_keys.values())
    kept += sum(p["count"] for _, p in w.profile_history)
    return kept + sum(p["count"] for _, keys in w.profile_keys_history for p in keys.values())


def test_a_worker_keeps_no_profile_history_whatever_the_run_length(
        trained: tuple[Path, Path, Path, dict[str, bytes]], tmp_path: Path) -> None:
    """Dask's worker profiler samples the running task's stack every 10 ms and keeps one tree per second for
    the last 1,000 seconds (plus the source lines in linecache): ~40 MB after 114 s of device jobs, so a
    worker's peak memory grew with the length of the run, i.e. with the fleet size. Fleet workers run
    without it: after real device jobs, over many profile cycles, a worker holds no stack sample."""
    import dask

    root, _, _, _ = trained
    good = [d for d in read_manifest(root).devices if d.device_id not in BAD]
    with dask.config.set({"distributed.worker.profile.cycle": "20ms"}), \
            fleet_client(workers=1, processes=False) as client:
        run = run_fleet(root, tmp_path / "b", tb.generate_key(), POLICY, client)
        kept = client.run(_profile_samples_kept)
    assert sorted(run.done) == sorted(d.device_id for d in good)
    assert list(kept.values()) == [0]


THREADS_PROBE = """
import sys, torch, threadpoolctl
from pathlib import Path
from tinywarden.fleet.device import TrainOptions, train_device
from tinywarden.fleet.manifest import read_manifest
root = sys.argv[1]
spec = read_manifest(root).devices[0]
before = [i["num_threads"] for i in threadpoolctl.threadpool_info()] + [torch.get_num_threads()]
out = train_device(root, spec, TrainOptions(), Path(sys.argv[2]).read_bytes())
after = [i["num_threads"] for i in threadpoolctl.threadpool_info()] + [torch.get_num_threads()]
print(out.ok, out.error, max(before), max(after))
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every thread pool has one thread already")
def test_a_device_job_runs_with_one_thread_per_pool_outside_a_nanny(tmp_path: Path) -> None:
    """A worker started without dask's nanny (which sets OMP/OPENBLAS/MKL_NUM_THREADS=1) had BLAS and torch
    pools of one thread per core, and OpenBLAS threads spin: the PCA fit took ~10x the CPU."""
    import subprocess

    write_fleet(tmp_path / "fleet", 1, 0.5, seed=5, period_s=30.0)
    (tmp_path / "policy.toml").write_bytes(POLICY)
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    res = subprocess.run([sys.executable, "-c", THREADS_PROBE, str(tmp_path / "fleet"), str(tmp_path / "policy.toml")],
                         capture_output=True, text=True, env=env, timeout=300, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    ok, *_, before, after = res.stdout.split()
    assert ok == "True" and int(before) > 1  # the pools really started with more than one thread
    assert int(after) == 1


@pytest.mark.parametrize("hostile", ["../escaped", "ABSOLUTE"])
def test_a_manifest_device_id_cannot_write_outside_the_output_folder(tmp_path: Path, hostile: str) -> None:
    """A device id is a file name in --out (and a folder name in the fleet): one that climbs out ("../x") or is
    an absolute path had its signed bundle and summary written wherever it pointed."""
    src = tmp_path / "src"
    m = write_fleet(src, 1, 0.5, seed=5, period_s=30.0)
    device_id = str(tmp_path / "abs" / "escaped") if hostile == "ABSOLUTE" else hostile
    root = tmp_path / "fleet"
    partition_file(root, device_id).parent.mkdir(parents=True)
    partition_file(root, device_id).write_bytes(partition_file(src, m.devices[0].device_id).read_bytes())
    atomic_write(root / MANIFEST_FILE, dataclasses.replace(
        m, devices=(dataclasses.replace(m.devices[0], device_id=device_id),)).to_json())
    (tmp_path / "abs").mkdir()
    out = tmp_path / "out" / "bundles"
    with pytest.raises(DataError, match="device_id"), fleet_client(workers=1, processes=False) as client:
        run_fleet(root, out, tb.generate_key(), POLICY, client)
    assert sorted(p.name for p in tmp_path.rglob("*.twbundle")) == []


def test_an_interrupted_run_is_not_reported_as_the_last_one_and_loses_nothing(
        trained: tuple[Path, Path, Path, dict[str, bytes]], tmp_path: Path) -> None:
    """An interrupted fleet train left the previous run's fleet-run.json in place: fleet report read that run's
    failures as the current ones, beside device results partly written by the interrupted run."""
    root, out, pub, _ = trained
    key = tb.load_private_key(pub.with_suffix(".key"))
    copy = tmp_path / "b"
    shutil.copytree(out, copy)  # the fixture's finished run, its record naming the failed devices
    again = "dev-00001"
    bundle_path(copy, again).unlink()
    summary_path(copy, again).unlink()
    records: list[dict[str, Any]] = []

    def interrupt(done: int, failed: int, remaining: int, device_id: str) -> None:
        if device_id == again:
            records.append(json.loads((copy / "fleet-run.json").read_text()))
            raise KeyboardInterrupt  # Ctrl-C right after the device's new bundle and summary were written

    with pytest.raises(KeyboardInterrupt), fleet_client(workers=1, processes=False) as client:
        run_fleet(root, copy, key, POLICY, client, progress=interrupt)
    assert records and records[0].get("status") == "running"  # marked before any device's result changed
    assert is_done(copy, again)  # what the interrupted run computed is kept
    res = runner.invoke(app, ["fleet", "report", str(copy), "--out", str(tmp_path / "r.html")])
    message = str(res.exception)
    assert isinstance(res.exception, DataError) and "\n" not in message, res.output
    assert f"{copy / 'fleet-run.json'}: " in message and "has not finished" in message
    assert not (tmp_path / "r.html").exists()
    # run again, it finishes (skipping the device done meanwhile), and the report is of that run alone
    with fleet_client(workers=1, processes=False) as client:
        run = run_fleet(root, copy, key, POLICY, client)
    assert again in run.skipped and sorted(run.failed) == sorted(BAD)
    summary = write_report(copy, tmp_path / "r.html", tmp_path / "r.json")
    assert summary["devices"] == 3 and sorted(summary["failures"]) == sorted(BAD)


GOOD_SUMMARY = {"device_id": "dev-00000", "profile": "camera", "family": "pca", "flash": 5000, "ram": 900,
                "version": 1, "bundle_bytes": 100, "false_alarms_per_day": 0.5, "normal_days": 2.0, "incidents": 1,
                "detected": 1, "detection_rate": 1.0, "attacked": True,
                "confidence_hist": {"normal": [1] * 51, "attack": [0] * 51}}


@pytest.mark.parametrize(("name", "change"), [
    ("run record of a list", lambda s, r: (s, {"failed": [1, 2]})),
    ("no profile", lambda s, r: ({k: v for k, v in s.items() if k != "profile"}, r)),
    ("flash not a number", lambda s, r: (s | {"flash": "big"}, r)),
    ("short histogram", lambda s, r: (s | {"confidence_hist": {"normal": [1, 2]}}, r)),
    ("histogram of text", lambda s, r: (s | {"confidence_hist": {"normal": ["x"] * 51}}, r)),
    ("incidents of text", lambda s, r: (s | {"incidents": "many"}, r)),
    ("flash of 400 digits", lambda s, r: (s | {"flash": 10**400}, r)),  # JSON's integers have no bound
])
def test_a_malformed_summary_or_run_record_is_a_one_line_report_error(tmp_path: Path, name: str, change: Any) -> None:
    """fleet report reads files anyone with the folder could edit: each of these died with a traceback
    (TypeError, KeyError, a numpy broadcast ValueError) instead of naming the file."""
    summary, run = change(dict(GOOD_SUMMARY), {"failed": {}})
    (tmp_path / "dev-00000.twbundle").write_bytes(b"b")
    (tmp_path / "dev-00000.json").write_text(json.dumps(summary))
    (tmp_path / "fleet-run.json").write_text(json.dumps(run))
    res = runner.invoke(app, ["fleet", "report", str(tmp_path), "--out", str(tmp_path / "r.html")])
    assert isinstance(res.exception, DataError), (name, res.exception)
    assert str(tmp_path) in str(res.exception) and not (tmp_path / "r.html").exists()


def test_a_wellformed_summary_still_reports(tmp_path: Path) -> None:
    (tmp_path / "dev-00000.twbundle").write_bytes(b"b")
    (tmp_path / "dev-00000.json").write_text(json.dumps(GOOD_SUMMARY))
    summary = write_report(tmp_path, tmp_path / "r.html", tmp_path / "r.json")
    assert summary["devices"] == 1 and summary["incidents"] == 1



def test_a_device_the_last_run_failed_is_reported_from_its_earlier_bundle_and_says_so(tmp_path: Path) -> None:
    # the report showed the earlier bundle's figures as the device's and dropped the last run's failure without a word
    (tmp_path / "dev-00000.twbundle").write_bytes(b"b")
    (tmp_path / "dev-00000.json").write_text(json.dumps(GOOD_SUMMARY))
    (tmp_path / "fleet-run.json").write_text(json.dumps({"failed": {"dev-00000": "dev-00000: disk full"}}))
    summary = write_report(tmp_path, tmp_path / "r.html", tmp_path / "r.json")
    assert summary["devices"] == 1 and summary["failed"] == 0
    assert summary["stale"] == {"dev-00000": "dev-00000: disk full"}
    assert summary["per_device"][0]["last_run_failed"] == "dev-00000: disk full"
    page = (tmp_path / "r.html").read_text()
    assert "earlier run" in page and "dev-00000: disk full" in page
    res = runner.invoke(app, ["fleet", "report", str(tmp_path), "--out", str(tmp_path / "r2.html")])
    assert res.exit_code == 0 and "1 from an earlier run's bundle" in " ".join(res.output.split()), res.output

def test_a_device_wider_than_its_family_int8_program_fails_before_fitting(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # fleet train (and coldstart) fitted such a device, then failed to quantize it: a fleet bundle must carry an int8
    # program, which no such model has
    from tinywarden.detectors import PCAReconstruction
    from tinywarden.features import DEFAULT_FEATURES
    from tinywarden.fleet.coldstart import train_profile_model
    from tinywarden.kernels.pca_residual_s16 import PCA_MAX_INPUTS

    fitted = spy_fits(monkeypatch, PCAReconstruction)
    root = tmp_path / "fleet"
    spec = write_fleet(root, 1, 0.5, seed=5, period_s=30.0).devices[0]
    s = read_device(root, spec.device_id)
    n_ch = PCA_MAX_INPUTS // len(DEFAULT_FEATURES) + 1
    rng = np.random.default_rng(0)
    write_parquet(Series(s.timestamps, rng.normal(size=(len(s), n_ch)), tuple(f"c{i}" for i in range(n_ch))),
                  partition_file(root, spec.device_id))
    outcome = train_device(str(root), spec, TrainOptions(), POLICY)
    n_in = n_ch * len(DEFAULT_FEATURES)
    want = f"{n_ch} channels x {len(DEFAULT_FEATURES)} features = {n_in} model inputs, more than the {PCA_MAX_INPUTS}"
    assert not outcome.ok and want in outcome.error and "\n" not in outcome.error
    with pytest.raises(TinywardenError, match=want):
        train_profile_model(str(root), [spec], TrainOptions())
    assert fitted == []
