"""A simulated fleet on disk: one Parquet file per device in a hive-partitioned dataset, plus the manifest.

Layout (``pyarrow.dataset.dataset(root, partitioning="hive")`` reads it as one table with a
``device_id`` column)::

    fleet/manifest.json
    fleet/device_id=dev-00000/part-0.parquet   timestamp, the profile's channels, label, attack
    fleet/device_id=dev-00001/part-0.parquet
    ...

Profiles report different channels, so partitions differ in columns; :func:`fleet_dataset` unifies the
schemas (a channel a device lacks reads as null). A training task reads one partition only
(:func:`read_device`), so its memory is one device's telemetry whatever the fleet size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.errors import DataError
from tinywarden.fileio import atomic_write
from tinywarden.fleet.manifest import MANIFEST_FILE, DeviceSpec, FleetIncident, Manifest, plan_fleet
from tinywarden.simulate.profiles import PROFILES, DeviceProfile
from tinywarden.simulate.simulator import simulate_detailed
from tinywarden.telemetry.io import read_series, write_parquet
from tinywarden.telemetry.series import Series

PART_FILE = "part-0.parquet"


def device_profile(spec: DeviceSpec) -> DeviceProfile:
    """The device's own variant of its profile: rhythm moved by ``rhythm_shift_h``, its firmware-update slot."""
    base = PROFILES[spec.profile]
    shift = spec.rhythm_shift_h
    schedule = dataclasses.replace(base.schedule, fw_update_weekday=spec.fw_update_weekday,
                                   fw_update_hour=spec.fw_update_hour)
    return dataclasses.replace(base, weekday_rhythm=tuple(np.roll(base.weekday_rhythm, shift).tolist()),
                               weekend_rhythm=tuple(np.roll(base.weekend_rhythm, shift).tolist()),
                               schedule=schedule)


def simulate_device(spec: DeviceSpec, manifest: Manifest) -> tuple[Series, DeviceSpec]:
    """The device's labelled telemetry, and its spec completed with the incidents placed and the row count."""
    free_days = (spec.train_until - manifest.start) / 86400.0
    update = spec.firmware_update_day is not None
    sim = simulate_detailed(device_profile(spec), manifest.days, list(spec.attacks) or "none", spec.seed,
                            manifest.period_s, manifest.start, free_days,
                            "firmware_update" if update else None, spec.firmware_update_day)
    incidents = tuple(FleetIncident(i.attack, i.start, i.end) for i in sim.incidents)
    series = dataclasses.replace(sim.series, source=f"{spec.device_id}:{spec.profile}")
    return series, dataclasses.replace(spec, incidents=incidents, rows=len(series))


def partition_file(root: str | Path, device_id: str) -> Path:
    return Path(root) / f"device_id={device_id}" / PART_FILE


def write_device(root: str, spec: DeviceSpec, manifest: Manifest) -> DeviceSpec:
    """Simulate one device and write its partition; its completed spec (incidents, rows)."""
    series, full = simulate_device(spec, manifest)
    write_parquet(series, partition_file(root, spec.device_id))
    return full


def write_fleet(root: str | Path, n: int, days: float, seed: int = 0, period_s: float = 10.0,
                progress: Callable[[int, int], None] | None = None, client: Any = None) -> Manifest:
    """Simulate a fleet of ``n`` devices over ``days`` and write it under ``root`` (see the module docstring).

    With a ``distributed.Client`` the devices are simulated on its workers (which must see ``root``).
    The manifest is written last, so a folder without one is an unfinished fleet.
    """
    plan = plan_fleet(n, days, seed, period_s)
    out = Path(root).resolve()
    out.mkdir(parents=True, exist_ok=True)
    done: dict[str, DeviceSpec] = {}
    if client is None:
        results: Any = (write_device(str(out), spec, plan) for spec in plan.devices)
    else:
        from distributed import as_completed

        results = (f.result() for f in as_completed(
            [client.submit(write_device, str(out), spec, plan, pure=False) for spec in plan.devices]))
    for full in results:
        done[full.device_id] = full
        if progress is not None:
            progress(len(done), n)
    manifest = dataclasses.replace(plan, devices=tuple(done[d.device_id] for d in plan.devices))
    atomic_write(out / MANIFEST_FILE, manifest.to_json())
    return manifest


def read_device(root: str | Path, device_id: str) -> Series:
    """One device's telemetry, read from its own partition only (a clear :class:`DataError` if unreadable)."""
    path = partition_file(root, device_id)
    if not path.is_file():
        raise DataError(f"{path}: the device's partition is missing")
    return read_series(path)


def fleet_dataset(root: str | Path) -> Any:
    """The whole fleet as one ``pyarrow.dataset.Dataset`` (hive partitioning on ``device_id``).

    Schemas are unified across partitions, so channels a profile lacks read as null for its devices.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds

    files = sorted(str(p) for p in Path(root).glob("device_id=*/*.parquet"))
    if not files:
        raise DataError(f"{root}: no device partitions (device_id=*/*.parquet)")
    part = ds.partitioning(pa.schema([("device_id", pa.string())]), flavor="hive")
    schemas = [ds.dataset(f, format="parquet").schema for f in files]
    schema = pa.unify_schemas([*schemas, pa.schema([("device_id", pa.string())])])
    return ds.dataset(files, schema=schema, format="parquet", partitioning=part, partition_base_dir=str(root))
