"""Cold start: one model per profile, learned across that profile's devices, for a device with too little
normal of its own, and what using it costs against the device's own model.

A new camera has no attack-free history yet; until it has ``min_own_rows`` rows of its own normal
(:class:`~tinywarden.fleet.device.TrainOptions`; ``fleet train --cold-start DIR``) it runs the *profile
model*: a pipeline (same family, window and stride as ``fleet train``) fitted on the attack-free spans of up
to ``max_devices`` other devices of its profile. Those spans are laid end to end (each device's times moved
after the previous one's, with a gap), so the few windows that straddle two devices are the only ones that
mix them (under 1% at a day of 10 s rows and a 32-row window).

The cost is measured on devices that did *not* train the profile model: each is scored over the same
post-training rows as its own model was (:func:`~tinywarden.fleet.device.score_rest`), and false alarms per
day and detection of the simulated attacks are compared with the device's own summary from ``fleet train``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tinywarden.errors import DataError
from tinywarden.fleet.dataset import read_device
from tinywarden.fleet.device import TrainOptions, attack_free_span, score_rest
from tinywarden.fleet.ledger import check_summary, last_run_failures, read_summary, summary_path
from tinywarden.fleet.manifest import DeviceSpec, Manifest
from tinywarden.telemetry.series import Series

MAX_DEVICES = 8  # per profile model: its training memory is this many devices' spans


def profile_training_series(root: str | Path, specs: list[DeviceSpec]) -> Series:
    """The attack-free spans of ``specs`` laid end to end in time (unlabelled)."""
    parts, offset, channels = [], 0.0, None
    for spec in specs:
        span = attack_free_span(read_device(root, spec.device_id), spec)
        if channels is None:
            channels = span.channels
        elif span.channels != channels:
            raise DataError(f"{spec.device_id}: channels {span.channels} differ from its profile's {channels}")
        ts = span.timestamps - span.timestamps[0] + offset
        parts.append((ts, span.values))
        offset = ts[-1] + 10.0 * max(span.period, 1.0)
    assert channels is not None
    return Series(np.concatenate([t for t, _ in parts]), np.concatenate([v for _, v in parts]), channels,
                  source=f"profile:{specs[0].profile}:{len(specs)} devices")


def split_profile(manifest: Manifest, profile: str, max_devices: int = MAX_DEVICES
                  ) -> tuple[list[DeviceSpec], list[DeviceSpec]]:
    """(devices that train the profile model, devices it is measured on): at most half train it."""
    mine = [d for d in manifest.devices if d.profile == profile]
    k = min(max_devices, len(mine) // 2)
    if k < 1:
        raise DataError(f"profile {profile}: {len(mine)} device(s); a profile model needs 2 or more "
                        "(one to train it, one to measure it on)")
    return mine[:k], mine[k:]


def train_profile_model(root: str, specs: list[DeviceSpec], options: TrainOptions) -> bytes:
    """Model-file bytes (with the int8 program) of the profile model trained on ``specs`` (a Dask task)."""
    from tinywarden.detectors import make_detector
    from tinywarden.modelfile import pipeline_to_bytes
    from tinywarden.pipeline import Pipeline
    from tinywarden.program import INT8_HEADER_KEY, to_model_file
    from tinywarden.quantize.ptq import quantize_pipeline

    series = profile_training_series(root, specs)
    pipeline = Pipeline(make_detector(options.model), options.window, options.stride,
                        target_fpr=options.target_fpr, k=options.k, n=options.n)
    pipeline.check_width(series)
    pipeline.fit(series)
    header, arrays = to_model_file(quantize_pipeline(pipeline, series))
    return pipeline_to_bytes(pipeline, extra={INT8_HEADER_KEY: header}, extra_arrays=arrays)


def measure_on_device(root: str, spec: DeviceSpec, model: bytes) -> dict[str, Any]:
    """The profile model's false alarms per day and detection on ``spec``'s post-training rows (a Dask task)."""
    from tinywarden.modelfile import pipeline_from_bytes

    pipeline = pipeline_from_bytes(model, f"profile model {spec.profile}")
    series = read_device(root, spec.device_id)
    train_rows = len(attack_free_span(series, spec))
    out = score_rest(pipeline, series, train_rows)
    out.pop("confidence_hist")
    return {"device_id": spec.device_id, **out}


def cold_start(root: str | Path, bundles: str | Path, manifest: Manifest, client: Any,
               options: TrainOptions | None = None, max_devices: int = MAX_DEVICES
               ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Train one model per profile and compare it, device by device, with the devices' own models.

    Returns the comparison (JSON-ready) and each profile's model-file bytes.
    """
    options = options or TrainOptions()
    root_s = str(Path(root).resolve())
    # the devices' own models must all be the last run's: refused while it has not ended, and a device it failed
    # (which may still hold an earlier run's bundle) is not compared
    failed = last_run_failures(bundles)
    result: dict[str, Any] = {"profiles": {}, "not_compared": failed}
    models: dict[str, bytes] = {}
    for profile in sorted({d.profile for d in manifest.devices}):
        try:
            train, held = split_profile(manifest, profile, max_devices)
        except DataError as exc:
            result["profiles"][profile] = {"skipped": str(exc)}
            continue
        model = models[profile] = client.submit(train_profile_model, root_s, train, options, pure=False).result()
        measured = client.gather([client.submit(measure_on_device, root_s, d, model, pure=False) for d in held])
        rows = []
        for m in measured:
            own = None if m["device_id"] in failed else read_summary(bundles, m["device_id"])
            if own is None:
                continue  # the device has no own model of the last run (it failed or was not trained)
            check_summary(own, summary_path(bundles, m["device_id"]), ("false_alarms_per_day", "detected"))
            rows.append({"device_id": m["device_id"],
                         "own_false_alarms_per_day": own["false_alarms_per_day"],
                         "profile_false_alarms_per_day": m["false_alarms_per_day"],
                         "incidents": m["incidents"], "own_detected": own["detected"],
                         "profile_detected": m["detected"]})
        incidents = sum(r["incidents"] for r in rows)

        def mean(key: str, rows: list[dict[str, Any]] = rows) -> float | None:
            return float(np.mean([r[key] for r in rows])) if rows else None

        result["profiles"][profile] = {
            "trained_on": [d.device_id for d in train], "model_bytes": len(model), "devices_compared": len(rows),
            "own_false_alarms_per_day": mean("own_false_alarms_per_day"),
            "profile_false_alarms_per_day": mean("profile_false_alarms_per_day"),
            "incidents": incidents,
            "own_detected": sum(r["own_detected"] for r in rows),
            "profile_detected": sum(r["profile_detected"] for r in rows),
            "devices": rows,
        }
    return result, models

