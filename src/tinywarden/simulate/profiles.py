"""Device profiles: which channels a simulated device reports and how they behave when all is well.

Every profile shares one telemetry model, driven by a latent *activity* (the daily rhythm of people
or production, plus correlated noise and short bursts) and by the operating :class:`~.modes.Mode`
of each row, and differs only in its parameters and in its physical sensors:

- CPU follows activity; memory creeps up slowly between boots (a benign leak, reset by each boot);
- packets are Poisson counts per sampling period (an industrial poller sends at a near-fixed cadence);
  bytes are small control packets plus bulk packets, so bytes per packet moves with activity;
- power follows CPU and traffic (and, on the camera, the night-time IR illuminator);
- sensors follow their set points through first-order lags.

Channels are coupled on purpose (power ~ CPU + traffic, pressure ~ valve position, humidity ~
temperature) so an attack that moves one channel alone breaks a relation a multichannel detector
can learn, while a single-channel threshold sees nothing unusual.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from tinywarden.simulate.modes import Mode, Schedule, ScheduleSpec, hour_of_day, weekday
from tinywarden.simulate.noise import ar1, lag, pulses, rows_for

COUNTER_CHANNELS = frozenset({"tx_pkts", "rx_pkts", "tx_bytes", "distinct_dst"})
MIN_PKT_BYTES = 40  # an IPv4 + TCP header: no packet is smaller


class SensorContext(NamedTuple):
    """What a profile's sensor model sees: the clock, the daily rhythm and the schedule."""

    timestamps: np.ndarray
    period_s: float
    hour: np.ndarray
    rhythm: np.ndarray
    schedule: Schedule


class SensorReadings(NamedTuple):
    """Sensor channels by name, plus the extra power the sensor hardware draws per row (mW)."""

    values: dict[str, np.ndarray]
    extra_power_mw: np.ndarray


SensorModel = Callable[[SensorContext, np.random.Generator], SensorReadings]


@dataclass(frozen=True)
class DeviceProfile:
    """One kind of device: its channels, its daily rhythm and the parameters of its normal behaviour.

    Rates are per second and become counts per sampling period; percentages are of the device's
    capacity. ``drift_channel`` is the channel the ``sensor_drift`` attack tampers with.

    >>> PROFILES["camera"].channels
    ('cpu_pct', 'mem_pct', 'power_mw', 'tx_pkts', 'tx_bytes', 'distinct_dst')
    """

    name: str
    description: str
    channels: tuple[str, ...]
    weekday_rhythm: tuple[float, ...]  # 24 hourly activity levels in [0, 1], Monday to Friday
    weekend_rhythm: tuple[float, ...]
    cpu_idle_pct: float
    cpu_active_pct: float  # added at full activity
    cpu_noise_pct: float
    mem_base_pct: float
    mem_active_pct: float
    mem_leak_pct_per_day: float
    power_idle_mw: float
    power_mw_per_cpu_pct: float
    power_mw_per_pkt_s: float
    power_noise_mw: float
    tx_base_pkt_s: float  # control/keep-alive traffic, always there
    tx_active_pkt_s: float  # bulk traffic at full activity
    small_pkt_bytes: float
    bulk_pkt_bytes: float
    dst_fixed: int  # destinations every period talks to (cloud, DNS, SCADA master ...)
    dst_active: float  # extra destinations per 10 s at full activity
    max_pkt_s: float  # what the NIC and CPU can push; bounds a flood
    bursts_per_hour: float  # short normal activity bursts (motion events, app sessions)
    burst_s: tuple[float, float]
    burst_gain: tuple[float, float]
    schedule: ScheduleSpec
    drift_channel: str
    drift_range: tuple[float, float]  # magnitude of a sensor_drift ramp, in the channel's unit
    tx_regular: bool = False  # control traffic at a fixed polling cadence instead of Poisson
    rx_per_tx: float = 0.0  # received packets per sent packet (ACKs, responses)
    rx_base_pkt_s: float = 0.0
    night_power_mw: float = 0.0  # drawn from dusk to dawn (the camera's IR illuminator)
    sensors: SensorModel | None = field(default=None, compare=False)

    @property
    def has_rx(self) -> bool:
        return "rx_pkts" in self.channels

    def rhythm(self, timestamps: np.ndarray) -> np.ndarray:
        """The noise-free daily activity level (0..1) at each timestamp, interpolated between hours."""
        hour = hour_of_day(timestamps)
        weekend = weekday(timestamps) >= 5
        knots = np.arange(25.0)
        wd = np.interp(hour, knots, [*self.weekday_rhythm, self.weekday_rhythm[0]])
        we = np.interp(hour, knots, [*self.weekend_rhythm, self.weekend_rhythm[0]])
        return np.where(weekend, we, wd)

    def boot(self, phase: np.ndarray, period_s: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Telemetry of a boot at progress ``phase`` (0..1) per row, for the non-sensor channels.

        The kernel loads first (high CPU, no network), then services start and connect (DHCP, DNS,
        NTP, TLS to the cloud): a burst of small packets to a handful of destinations. Shared by the
        scheduled boots and by the reboot that follows a memory-corruption crash.
        """
        k = len(phase)
        online = phase >= 0.3
        cpu = 90.0 - 35.0 * phase + rng.normal(0.0, 4.0, k)
        mem = self.mem_base_pct * (0.35 + 0.65 * phase) + rng.normal(0.0, 0.5, k)
        connect_rate = 3.0 * self.tx_base_pkt_s + 8.0
        tx = rng.poisson(connect_rate * period_s, k) * online
        out = {
            "cpu_pct": cpu,
            "mem_pct": mem,
            "tx_pkts": tx.astype(np.float64),
            "tx_bytes": tx * rng.normal(1.5 * self.small_pkt_bytes, 15.0, k),
            "distinct_dst": np.minimum(tx, self.dst_fixed + 2 + rng.poisson(2.0, k)).astype(np.float64),
        }
        inrush = np.where(phase < 0.2, 0.25 * self.power_idle_mw, 0.0)
        out["power_mw"] = (
            self.power_idle_mw
            + inrush
            + self.power_mw_per_cpu_pct * cpu
            + self.power_mw_per_pkt_s * tx / period_s
            + rng.normal(0.0, self.power_noise_mw, k)
        )
        if self.has_rx:
            out["rx_pkts"] = rng.poisson(1.2 * connect_rate * period_s, k) * online * 1.0
        return out


def normal_telemetry(
    profile: DeviceProfile,
    timestamps: np.ndarray,
    period_s: float,
    rhythm: np.ndarray,
    schedule: Schedule,
    rng: np.random.Generator,
) -> dict[str, np.ndarray]:
    """Attack-free telemetry for ``profile`` at ``timestamps``, one float array per channel.

    Values are not yet clipped or rounded (see :func:`finalize`), so attack injectors can add to them.
    Draws a fixed sequence from ``rng`` for a given length, whatever the attacks will be later.
    """
    n = len(timestamps)
    p = period_s
    modes = schedule.modes
    boot = modes == Mode.BOOT
    check = modes == Mode.FW_CHECK
    update = modes == Mode.FW_UPDATE
    maint = modes == Mode.MAINTENANCE

    burst_rate = profile.bursts_per_hour * p / 3600.0 * (0.2 + rhythm)
    burst_rows = (rows_for(profile.burst_s[0], p), rows_for(profile.burst_s[1], p))
    bursts = pulses(rng, burst_rate, n, burst_rows, profile.burst_gain)
    activity = np.clip(rhythm + 0.08 * ar1(rng, n, p, 900.0) + bursts, 0.0, 1.5)
    activity = np.where(maint, 0.1 * activity, activity)  # services are stopped

    # Hourly housekeeping (log rotation, health report): a short, perfectly periodic CPU blip.
    cron = np.mod(timestamps, 3600.0) < max(30.0, p)
    cpu = (
        profile.cpu_idle_pct
        + profile.cpu_active_pct * activity
        + profile.cpu_noise_pct * (0.7 * ar1(rng, n, p, 60.0) + 0.7 * rng.standard_normal(n))
        + 8.0 * cron
        + 12.0 * check
        + np.where(update, rng.uniform(40.0, 55.0), 0.0)
    )
    mem = (
        profile.mem_base_pct
        + profile.mem_active_pct * np.clip(activity, 0.0, 1.0)
        + profile.mem_leak_pct_per_day * schedule.since_boot_s / 86400.0
        + 0.4 * rng.standard_normal(n)
        + 8.0 * update  # the firmware image is staged in RAM
        - 4.0 * maint
    )

    tx_base = profile.tx_base_pkt_s * p
    if profile.tx_regular:
        control = np.round(tx_base * (1.0 + 0.02 * rng.standard_normal(n)))
    else:
        control = rng.poisson(tx_base, n).astype(np.float64)
    control = np.where(maint, np.round(0.2 * control), control)
    bulk_rate = profile.tx_active_pkt_s * activity + 2.0 * check + 30.0 * update  # update: ACKs
    bulk = rng.poisson(bulk_rate * p).astype(np.float64)
    tx_pkts = control + bulk
    tx_bytes = (
        control * profile.small_pkt_bytes
        + bulk * profile.bulk_pkt_bytes
        + np.sqrt(tx_pkts) * 0.15 * profile.bulk_pkt_bytes * rng.standard_normal(n)
    )
    dst_scale = np.sqrt(p / 10.0)
    distinct = (
        profile.dst_fixed * (control > 0)
        + rng.poisson(dst_scale * (0.3 + profile.dst_active * activity))
        + (check | update)  # the update server
    )

    out = {"cpu_pct": cpu, "mem_pct": mem, "tx_pkts": tx_pkts, "tx_bytes": tx_bytes,
           "distinct_dst": distinct.astype(np.float64)}
    rx_pkts = np.zeros(n)
    if profile.has_rx:
        rx_rate = profile.rx_base_pkt_s + 3.0 * check + 120.0 * update  # the firmware download
        rx_pkts = np.round(profile.rx_per_tx * tx_pkts) + rng.poisson(rx_rate * p).astype(np.float64)
        out["rx_pkts"] = rx_pkts

    extra_power = np.zeros(n)
    if profile.sensors is not None:
        hour = hour_of_day(timestamps)
        readings = profile.sensors(SensorContext(timestamps, p, hour, rhythm, schedule), rng)
        out.update(readings.values)
        extra_power = readings.extra_power_mw
    if profile.night_power_mw:
        hour = hour_of_day(timestamps)
        # Dusk around 19:00, dawn around 07:00, with half-hour transitions.
        night = np.interp(hour, [0, 6.75, 7.25, 18.75, 19.25, 24], [1, 1, 0, 0, 1, 1])
        extra_power = extra_power + profile.night_power_mw * night
    out["power_mw"] = (
        profile.power_idle_mw
        + profile.power_mw_per_cpu_pct * cpu
        + profile.power_mw_per_pkt_s * (tx_pkts + rx_pkts) / p
        + extra_power
        + profile.power_noise_mw * rng.standard_normal(n)
    )

    if boot.any():
        booted = profile.boot(schedule.boot_phase[boot], p, rng)
        for name, values in booted.items():
            out[name][boot] = values
    return {name: out[name] for name in profile.channels}


def finalize(values: dict[str, np.ndarray]) -> None:
    """Make channels physically valid, in place, row by row.

    Percentages land in [0, 100]; counters become non-negative integers; a period that sent no packet
    sent no bytes and reached no destination; continuous channels are rounded to a sensor's resolution
    (0.01), which also keeps CSV round trips exact. Row-local on purpose: rows an attack did not touch
    come out the same as in an attack-free run.
    """
    for name, x in values.items():
        if name.endswith("_pct"):
            np.clip(x, 0.0, 100.0, out=x)
        elif name == "power_mw":
            np.maximum(x, 0.0, out=x)
        if name in COUNTER_CHANNELS:
            np.maximum(np.round(x), 0.0, out=x)
        else:
            np.round(x, 2, out=x)
    pkts = values["tx_pkts"]
    np.clip(values["tx_bytes"], MIN_PKT_BYTES * pkts, None, out=values["tx_bytes"])
    values["tx_bytes"][pkts == 0] = 0.0
    np.minimum(values["distinct_dst"], pkts, out=values["distinct_dst"])


def _valve_sensors(ctx: SensorContext, rng: np.random.Generator) -> SensorReadings:
    """A flow-control valve on a pumped line: the set point steps with production demand.

    Downstream pressure rises with the valve opening and carries a slow pump ripple; the actuator
    motor draws power only while the valve moves. The valve closes (fails safe) during maintenance
    and stays closed until its controller has booted.
    """
    n, p = len(ctx.timestamps), ctx.period_s
    change = rng.random(n) < p / 3600.0 * (0.5 + 2.5 * ctx.rhythm)
    segment = np.cumsum(change)
    levels = rng.uniform(25.0, 85.0, size=int(segment[-1]) + 1)
    setpoint = levels[segment] * (0.3 + 0.7 * ctx.rhythm)
    held = ctx.schedule.mask(Mode.MAINTENANCE) | ctx.schedule.mask(Mode.BOOT)
    setpoint = np.where(held, 0.0, setpoint)
    position = lag(setpoint, p, 20.0) + 0.3 * rng.standard_normal(n)
    ripple_phase = rng.uniform(0.0, 2.0 * np.pi)
    pressure = (
        180.0
        + 2.4 * position
        + 6.0 * np.sin(2.0 * np.pi * ctx.timestamps / 1800.0 + ripple_phase)
        + 1.5 * ar1(rng, n, p, 120.0)
    )
    moving = np.abs(np.diff(position, prepend=position[0]))
    motor = 350.0 * np.minimum(1.0, moving / 5.0)
    return SensorReadings({"valve_pos_pct": position, "pressure_kpa": pressure}, motor)


def _thermostat_sensors(ctx: SensorContext, rng: np.random.Generator) -> SensorReadings:
    """A room under a heating thermostat: comfort set point when occupied, set-back at night.

    Room temperature follows the set point with a 45-minute lag, plus the outdoor daily swing and
    the on/off ripple of the heater; humidity falls as the air warms and jumps with showers and
    cooking. The display backlight is on while people are around.
    """
    n, p = len(ctx.timestamps), ctx.period_s
    night = (ctx.hour < 6.0) | (ctx.hour >= 23.0)
    setpoint = np.where(ctx.rhythm >= 0.5, 21.0, np.where(night, 17.5, 19.0))
    ripple_phase = rng.uniform(0.0, 2.0 * np.pi)
    temp = (
        lag(setpoint, p, 2700.0)
        + 0.4 * np.sin(2.0 * np.pi * (ctx.hour - 15.0) / 24.0)
        + 0.2 * np.sin(2.0 * np.pi * ctx.timestamps / 1200.0 + ripple_phase)
        + 0.05 * rng.standard_normal(n)
    )
    steam = pulses(rng, 0.3 * p / 3600.0 * ctx.rhythm, n, (rows_for(600, p), rows_for(1800, p)), (6.0, 14.0))
    humidity = (
        45.0
        + 6.0 * np.sin(2.0 * np.pi * (ctx.hour - 6.0) / 24.0)
        - 1.5 * (temp - 20.0)
        + lag(steam, p, 600.0)
        + 1.0 * ar1(rng, n, p, 1800.0)
    )
    backlight = 120.0 * (ctx.rhythm >= 0.6)
    return SensorReadings({"temp_c": temp, "humidity_pct": humidity}, backlight)


_CORE = ("cpu_pct", "mem_pct", "power_mw", "tx_pkts")

PROFILES: dict[str, DeviceProfile] = {
    "camera": DeviceProfile(
        name="camera",
        description="Smart IP camera at a shop entrance: uploads motion clips, IR light at night.",
        channels=(*_CORE, "tx_bytes", "distinct_dst"),
        # fmt: off
        weekday_rhythm=(0.06, 0.05, 0.05, 0.05, 0.05, 0.08, 0.2, 0.55, 0.8, 0.65, 0.5, 0.5,
                        0.6, 0.55, 0.5, 0.5, 0.6, 0.85, 0.9, 0.7, 0.45, 0.3, 0.15, 0.08),
        weekend_rhythm=(0.08, 0.06, 0.05, 0.05, 0.05, 0.05, 0.08, 0.15, 0.3, 0.5, 0.6, 0.65,
                        0.7, 0.7, 0.65, 0.6, 0.6, 0.55, 0.5, 0.45, 0.35, 0.25, 0.15, 0.1),
        # fmt: on
        cpu_idle_pct=8.0,
        cpu_active_pct=42.0,
        cpu_noise_pct=2.5,
        mem_base_pct=38.0,
        mem_active_pct=6.0,
        mem_leak_pct_per_day=1.2,
        power_idle_mw=2400.0,
        power_mw_per_cpu_pct=18.0,
        power_mw_per_pkt_s=2.5,
        power_noise_mw=40.0,
        tx_base_pkt_s=4.0,
        tx_active_pkt_s=50.0,
        small_pkt_bytes=200.0,
        bulk_pkt_bytes=1200.0,
        dst_fixed=2,
        dst_active=2.5,
        max_pkt_s=2000.0,
        bursts_per_hour=4.0,
        burst_s=(20.0, 180.0),
        burst_gain=(0.3, 0.7),
        schedule=ScheduleSpec(boot_s=120.0),
        drift_channel="power_mw",  # no physical sensor: a tampered power monitor / failing supply
        drift_range=(250.0, 600.0),
        night_power_mw=600.0,
    ),
    "valve": DeviceProfile(
        name="valve",
        description="Industrial valve controller (Linux PLC gateway) polled by SCADA, two-shift plant.",
        channels=(*_CORE, "rx_pkts", "tx_bytes", "distinct_dst", "valve_pos_pct", "pressure_kpa"),
        # fmt: off
        weekday_rhythm=(0.15, 0.15, 0.15, 0.15, 0.15, 0.2, 0.6, 0.75, 0.85, 0.85, 0.8, 0.75,
                        0.6, 0.75, 0.85, 0.85, 0.8, 0.75, 0.7, 0.7, 0.65, 0.6, 0.3, 0.15),
        weekend_rhythm=(0.15,) * 6 + (0.2,) * 12 + (0.15,) * 6,
        # fmt: on
        cpu_idle_pct=12.0,
        cpu_active_pct=18.0,
        cpu_noise_pct=1.5,
        mem_base_pct=52.0,
        mem_active_pct=3.0,
        mem_leak_pct_per_day=0.5,
        power_idle_mw=4200.0,
        power_mw_per_cpu_pct=10.0,
        power_mw_per_pkt_s=1.0,
        power_noise_mw=25.0,
        tx_base_pkt_s=8.0,
        tx_active_pkt_s=12.0,
        small_pkt_bytes=90.0,
        bulk_pkt_bytes=300.0,
        dst_fixed=2,
        dst_active=1.0,
        max_pkt_s=1000.0,
        bursts_per_hour=1.0,
        burst_s=(60.0, 600.0),
        burst_gain=(0.1, 0.3),
        schedule=ScheduleSpec(boot_s=90.0, fw_update_weekday=5, fw_update_hour=1.0, maintenance_hour=2.0),
        drift_channel="pressure_kpa",
        drift_range=(15.0, 40.0),
        tx_regular=True,
        rx_per_tx=0.9,
        rx_base_pkt_s=0.5,
        sensors=_valve_sensors,
    ),
    "thermostat": DeviceProfile(
        name="thermostat",
        description="Wi-Fi home thermostat: reports every ~30 s, app sessions when people are home.",
        channels=(*_CORE, "rx_pkts", "tx_bytes", "distinct_dst", "temp_c", "humidity_pct"),
        # fmt: off
        weekday_rhythm=(0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.8, 0.9, 0.6, 0.3, 0.3, 0.3,
                        0.3, 0.3, 0.3, 0.3, 0.4, 0.7, 0.9, 0.9, 0.85, 0.8, 0.6, 0.3),
        weekend_rhythm=(0.2, 0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.5, 0.8, 0.9, 0.8, 0.7,
                        0.7, 0.6, 0.6, 0.7, 0.8, 0.9, 0.9, 0.85, 0.8, 0.7, 0.5, 0.3),
        # fmt: on
        cpu_idle_pct=4.0,
        cpu_active_pct=12.0,
        cpu_noise_pct=1.0,
        mem_base_pct=30.0,
        mem_active_pct=2.0,
        mem_leak_pct_per_day=0.3,
        power_idle_mw=900.0,
        power_mw_per_cpu_pct=8.0,
        power_mw_per_pkt_s=3.0,
        power_noise_mw=10.0,
        tx_base_pkt_s=0.3,
        tx_active_pkt_s=2.5,
        small_pkt_bytes=150.0,
        bulk_pkt_bytes=400.0,
        dst_fixed=1,
        dst_active=0.8,
        max_pkt_s=200.0,
        bursts_per_hour=1.0,
        burst_s=(30.0, 120.0),
        burst_gain=(0.3, 0.6),
        schedule=ScheduleSpec(boot_s=45.0, fw_update_weekday=3, fw_update_hour=3.5, maintenance_weekday=0),
        drift_channel="temp_c",
        drift_range=(1.0, 3.0),
        rx_per_tx=0.8,
        rx_base_pkt_s=0.3,
        sensors=_thermostat_sensors,
    ),
}
