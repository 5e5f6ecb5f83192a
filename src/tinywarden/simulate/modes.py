"""Operating modes of a simulated device and the schedule that puts them on the clock.

Every mode here is NORMAL behaviour that a detector has to accept: a boot looks like a CPU and
traffic burst, a weekly firmware update like a CPU plateau with a download and a reboot, a maintenance
window like the device going quiet. They are what makes a simulated normal week hard to tell from an
attack by thresholds alone. Clock times are device-local and the simulator treats local time as UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from tinywarden.simulate.noise import rows_for

DAY_S = 86400.0


class Mode(IntEnum):
    """What the device is doing in a row; stored per row as ``int8``."""

    NORMAL = 0
    IDLE = 1  # quiet hours: the daily rhythm is low
    PEAK = 2  # busy hours: the daily rhythm is high
    BOOT = 3  # power-on, after maintenance, after a firmware update
    FW_CHECK = 4  # nightly update-server poll
    FW_UPDATE = 5  # weekly download + flash, followed by a BOOT
    MAINTENANCE = 6  # services stopped by an operator, followed by a BOOT


MODES: tuple[str, ...] = tuple(m.name.lower() for m in Mode)


@dataclass(frozen=True)
class ScheduleSpec:
    """When a profile's scheduled modes happen. Weekdays count from Monday = 0; hours are local time."""

    boot_s: float = 120.0
    fw_check_hour: float = 3.0  # plus up to 30 min of jitter
    fw_check_s: float = 45.0
    fw_update_weekday: int = 1
    fw_update_hour: float = 2.0  # plus up to 60 min of jitter
    fw_update_s: tuple[float, float] = (600.0, 1200.0)
    maintenance_weekday: int = 6
    maintenance_hour: float = 4.0  # plus up to 30 min of jitter
    maintenance_s: tuple[float, float] = (1200.0, 2700.0)
    peak_level: float = 0.7  # daily-rhythm level at or above which a row is PEAK
    idle_level: float = 0.25  # ... and below which it is IDLE


@dataclass(frozen=True)
class Window:
    """A scheduled stretch of rows ``start:stop`` in one mode."""

    mode: Mode
    start: int
    stop: int


@dataclass(frozen=True)
class Schedule:
    """The mode of every row plus the scheduled windows behind it.

    ``boot_phase`` is the progress 0..1 through a boot on BOOT rows and NaN elsewhere;
    ``since_boot_s`` is the time since the last scheduled boot began (drives slow memory growth).
    """

    modes: np.ndarray
    windows: tuple[Window, ...]
    boot_phase: np.ndarray
    since_boot_s: np.ndarray

    def mask(self, mode: Mode) -> np.ndarray:
        """Boolean per row: is the device in ``mode``."""
        return self.modes == int(mode)


def weekday(timestamps: np.ndarray) -> np.ndarray:
    """Day of week per timestamp, Monday = 0 (1970-01-01 was a Thursday).

    >>> weekday(np.array([0.0, 4 * 86400.0])).tolist()
    [3, 0]
    """
    return ((np.floor(timestamps / DAY_S).astype(np.int64) + 3) % 7).astype(np.int8)


def hour_of_day(timestamps: np.ndarray) -> np.ndarray:
    """Local hour as a float in [0, 24)."""
    return np.mod(timestamps, DAY_S) / 3600.0


def build_schedule(
    timestamps: np.ndarray,
    period_s: float,
    rhythm: np.ndarray,
    spec: ScheduleSpec,
    rng: np.random.Generator,
) -> Schedule:
    """Lay out boots, firmware checks and updates and maintenance windows over ``timestamps``.

    ``rhythm`` is the noise-free daily activity level (0..1) per row; it decides IDLE/NORMAL/PEAK.
    Scheduled windows never overlap: a later, lower-priority window that would collide is dropped
    (the nightly check is skipped on a firmware-update night, for example).
    """
    n = len(timestamps)
    t0 = float(timestamps[0])
    modes = np.full(n, int(Mode.NORMAL), dtype=np.int8)
    modes[rhythm >= spec.peak_level] = int(Mode.PEAK)
    modes[rhythm < spec.idle_level] = int(Mode.IDLE)

    boot_rows = rows_for(spec.boot_s, period_s)
    wanted: list[tuple[int, list[Window]]] = [(0, [Window(Mode.BOOT, 0, boot_rows)])]

    def rows_at(t: float, seconds: float) -> tuple[int, int]:
        start = int(np.ceil((t - t0) / period_s))
        return start, start + rows_for(seconds, period_s)

    first_day = int(np.floor(t0 / DAY_S))
    last_day = int(np.floor(float(timestamps[-1]) / DAY_S))
    for day in range(first_day, last_day + 1):
        midnight = day * DAY_S
        dow = (day + 3) % 7
        # Draw every jitter each day, used or not, so one window's presence never shifts another's.
        check_t = midnight + spec.fw_check_hour * 3600 + rng.uniform(0, 1800)
        update_t = midnight + spec.fw_update_hour * 3600 + rng.uniform(0, 3600)
        update_s = rng.uniform(*spec.fw_update_s)
        maint_t = midnight + spec.maintenance_hour * 3600 + rng.uniform(0, 1800)
        maint_s = rng.uniform(*spec.maintenance_s)
        if dow == spec.fw_update_weekday:
            a, b = rows_at(update_t, update_s)
            wanted.append((1, [Window(Mode.FW_UPDATE, a, b), Window(Mode.BOOT, b, b + boot_rows)]))
        if dow == spec.maintenance_weekday:
            a, b = rows_at(maint_t, maint_s)
            wanted.append((2, [Window(Mode.MAINTENANCE, a, b), Window(Mode.BOOT, b, b + boot_rows)]))
        a, b = rows_at(check_t, spec.fw_check_s)
        wanted.append((3, [Window(Mode.FW_CHECK, a, b)]))

    taken = np.zeros(n, dtype=bool)
    accepted: list[Window] = []
    for _, group in sorted(wanted, key=lambda item: item[0]):
        lo, hi = group[0].start, group[-1].stop
        if lo >= n or hi <= 0:
            continue
        lo, hi = max(lo, 0), min(hi, n)
        if taken[lo:hi].any():
            continue
        taken[lo:hi] = True
        for w in group:
            if w.start < n:
                accepted.append(Window(w.mode, max(w.start, 0), min(w.stop, n)))
    accepted.sort(key=lambda w: w.start)

    boot_phase = np.full(n, np.nan)
    boot_starts = np.zeros(n, dtype=np.int64)
    for w in accepted:
        modes[w.start : w.stop] = int(w.mode)
        if w.mode == Mode.BOOT:
            boot_phase[w.start : w.stop] = np.arange(w.stop - w.start) / boot_rows
            boot_starts[w.start] = w.start
    last_boot = np.maximum.accumulate(boot_starts)
    since_boot_s = (np.arange(n) - last_boot) * period_s
    return Schedule(modes, tuple(accepted), boot_phase, since_boot_s)
