"""The fleet manifest: which devices a simulated fleet holds, how each was made, who was attacked and when.

``manifest.json`` sits at the root of a fleet dataset (:mod:`tinywarden.fleet.dataset`). Each device has
its own seed, profile, rhythm shift, weekly firmware-update slot, an optional firmware update that changes
its normal for good (the ``firmware_update`` regime change of :mod:`tinywarden.simulate.scenarios`,
labelled normal), and for the attacked ones the incidents injected. ``train_until`` is the end of the
device's *attack-free span*: no attack is placed before it, and ``fleet train`` learns from the rows
before it and nothing else (it never reads the label column; the labels are only for ``fleet report``).

>>> m = plan_fleet(4, days=2.0, seed=7)
>>> [d.device_id for d in m.devices], m.devices[0].train_until - m.start
(['dev-00000', 'dev-00001', 'dev-00002', 'dev-00003'], 103680.0)
>>> parse_manifest(m.to_json(), "<mem>") == m
True
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.errors import DataError
from tinywarden.simulate.attacks import ATTACKS
from tinywarden.simulate.profiles import PROFILES
from tinywarden.simulate.simulator import DEFAULT_START

MANIFEST_FILE = "manifest.json"
FORMAT = 1
TRAIN_SHARE = 0.6  # of the run: the attack-free span every device is trained on
ATTACKED_SHARE = 0.3  # of the devices: the ones with attacks after their attack-free span
UPDATED_SHARE = 0.4  # of the devices: the ones whose firmware update changes their normal during the run
MAX_RHYTHM_SHIFT_H = 3
#: Devices a plan holds at most: their ids are ``dev-00000`` .. ``dev-99999`` (five digits, so they sort in
#: plan order), and the whole plan is built in memory before the first device is simulated.
MAX_DEVICES = 100_000
#: A device id or profile name: it becomes a file and folder name (``OUT/<device_id>.twbundle``,
#: ``device_id=<device_id>/``, ``profile-<name>.twb``), so one plain name, never a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class FleetIncident:
    """One injected attack: its name and its span in epoch seconds, ``[start, end)``."""

    attack: str
    start: float
    end: float


@dataclass(frozen=True)
class DeviceSpec:
    """How one device of the fleet was simulated, and where its attack-free span ends."""

    device_id: str
    profile: str
    seed: int
    rhythm_shift_h: int  # the profile's daily rhythm moved this many hours (a shop that opens later)
    fw_update_weekday: int  # the weekly firmware-update slot (Monday = 0) ...
    fw_update_hour: float  # ... and its local hour
    firmware_update_day: float | None  # a firmware update that changes normal for good, this many days in
    attacks: tuple[str, ...]
    train_until: float  # end of the attack-free span (epoch seconds): training rows are before it
    incidents: tuple[FleetIncident, ...] = ()
    rows: int = 0

    @property
    def attacked(self) -> bool:
        return bool(self.attacks)

    @property
    def partition(self) -> str:
        """The device's folder in the hive-partitioned dataset."""
        return f"device_id={self.device_id}"


@dataclass(frozen=True)
class Manifest:
    """Every device of a simulated fleet, plus the run's shape."""

    days: float
    period_s: float
    start: float
    seed: int
    devices: tuple[DeviceSpec, ...] = field(default_factory=tuple)

    def device(self, device_id: str) -> DeviceSpec:
        for d in self.devices:
            if d.device_id == device_id:
                return d
        raise DataError(f"{MANIFEST_FILE}: no device {device_id!r}")

    def to_json(self) -> str:
        doc = {"format": FORMAT, "generator": "tinywarden simulate --fleet", **asdict(self)}
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def plan_fleet(n: int, days: float, seed: int = 0, period_s: float = 10.0, start: float = DEFAULT_START,
               attacked_share: float = ATTACKED_SHARE) -> Manifest:
    """A fleet of ``n`` devices of mixed profiles, each with its own seed, rhythm and firmware schedule.

    The same arguments give the same plan. About ``attacked_share`` of the devices get one or two attacks
    after their attack-free span (the first :data:`TRAIN_SHARE` of the run).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"--fleet: expected a number of devices >= 1, got {n!r}")
    if n > MAX_DEVICES:
        raise DataError(f"--fleet: {n} devices is more than {MAX_DEVICES:,}, the most a fleet plan names (dev-00000 .. "
                        f"dev-{MAX_DEVICES - 1:05d})")
    if not math.isfinite(days) or days <= 0:
        raise DataError(f"--days: expected a positive number of days, got {days!r}")
    if not 0.0 <= attacked_share <= 1.0:
        raise DataError(f"attacked share must be in [0, 1], got {attacked_share!r}")
    rng = np.random.default_rng([int(seed), 18])
    names = sorted(PROFILES)
    train_until = start + TRAIN_SHARE * days * 86400.0
    devices = []
    for i in range(n):
        attacked = rng.random() < attacked_share
        chosen = rng.choice(ATTACKS, size=int(rng.integers(1, 3)), replace=False) if attacked else ()
        updated = rng.random() < UPDATED_SHARE
        devices.append(DeviceSpec(
            device_id=f"dev-{i:05d}",
            profile=names[i % len(names)],
            seed=int(rng.integers(0, 2**31 - 1)),
            rhythm_shift_h=int(rng.integers(-MAX_RHYTHM_SHIFT_H, MAX_RHYTHM_SHIFT_H + 1)),
            fw_update_weekday=int(rng.integers(0, 7)),
            fw_update_hour=float(rng.integers(0, 6)),
            firmware_update_day=round(float(rng.uniform(0.25, 0.9) * days), 3) if updated else None,
            attacks=tuple(sorted(str(a) for a in chosen)),
            train_until=train_until,
        ))
    return Manifest(float(days), float(period_s), float(start), int(seed), tuple(devices))


def parse_manifest(text: str, source: str) -> Manifest:
    """A :class:`Manifest` from its JSON text; a one-line :class:`DataError` naming ``source`` otherwise."""
    try:
        doc = json.loads(text)
        if doc.get("format") != FORMAT:
            raise DataError(f"{source}: manifest format {doc.get('format')!r}, expected {FORMAT}")
        devices = tuple(_device(d, source) for d in doc["devices"])
        seen: set[str] = set()
        for d in devices:
            if d.device_id in seen:  # one bundle file, one Dask task key: a second entry would never be its own
                raise DataError(f"{source}: device_id {d.device_id!r} listed twice")
            seen.add(d.device_id)
        return Manifest(_float(doc, "days", source), _float(doc, "period_s", source), _float(doc, "start", source),
                        _int(doc, "seed", source), devices)
    except DataError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{source}: not a fleet manifest ({type(exc).__name__}: {exc})") from None


def _name(value: Any, key: str, source: str) -> str:
    if not isinstance(value, str) or NAME.fullmatch(value) is None:
        raise DataError(f"{source}: {key} {value!r}: expected a plain name of letters, digits, "
                        "'.', '_' or '-' (at most 128, not starting with '.'), not a path")
    return value


def _device(d: dict[str, Any], source: str) -> DeviceSpec:
    incidents = tuple(FleetIncident(str(i["attack"]), _float(i, "start", source), _float(i, "end", source))
                      for i in d["incidents"])
    return DeviceSpec(_name(d["device_id"], "device_id", source), _name(d["profile"], "profile", source),
                      _int(d, "seed", source), _int(d, "rhythm_shift_h", source), _int(d, "fw_update_weekday", source),
                      _float(d, "fw_update_hour", source),
                      None if d["firmware_update_day"] is None else _float(d, "firmware_update_day", source),
                      tuple(str(a) for a in d["attacks"]), _float(d, "train_until", source), incidents,
                      _int(d, "rows", source))


def _float(d: dict[str, Any], key: str, source: str) -> float:
    """``d[key]`` as a finite float (JSON as Python reads it takes NaN and Infinity, and integers of any size)."""
    try:
        value = float(d[key])
    except OverflowError:
        value = math.inf
    if not math.isfinite(value):
        raise DataError(f"{source}: {key} {str(d[key])[:20]}: expected a finite number")
    return value


def _int(d: dict[str, Any], key: str, source: str) -> int:
    value = d[key]
    if isinstance(value, float) and not math.isfinite(value):
        raise DataError(f"{source}: {key} {value}: expected a whole number")
    return int(value)


def read_manifest(root: str | Path) -> Manifest:
    """The manifest of the fleet dataset at ``root``."""
    path = Path(root) / MANIFEST_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the fleet manifest ({getattr(exc, 'strerror', None) or exc}); "
                        "write a fleet with `tinywarden simulate --fleet N --out DIR`") from None
    return parse_manifest(text, str(path))
