"""Valid inputs the campaigns start from, generated at run time (no binary corpus lives in the repository).

:func:`write_seeds` writes ``<dir>/<target>/<name>`` for every target of :mod:`fuzz.targets`; each seed
is what that target's harness takes (a ``.twb`` body without its checksum, a bundle before its SIGN
section for ``bundle_signed``, audit-log pieces joined by :data:`~fuzz.targets.SEGMENT_SEP`).
"""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fuzz.targets import SEGMENT_SEP, TARGETS, seeds_accepted, signing_key

REPO = Path(__file__).resolve().parents[2]

# Cheap families cover most of the model-file reader; dense_ae adds the torch state path.
MODEL_FAMILIES = {"ewma": {}, "bounds": {}, "pca": {}, "kmeans": {"n_init": 1}, "knn": {}, "ar": {},
                  "iforest": {"n_estimators": 8}, "dense_ae": {"epochs": 1, "max_steps": 20}}

SMALL_POLICY = textwrap.dedent("""
    [policy]
    name = "fuzz-seed"
    version = "1"
    fail_safe_tier = "alert"
    fault_tolerance = 2
    telemetry_timeout_s = 30.5
    [critical]
    addresses = ["10.0.0.0/8", "::1"]
    [tiers.alert]
    actions = ["notify", "beep"]
    consecutive = 2
    deescalate_after_s = 15
    [tiers.constrain]
    actions = ["block"]
    k = 20
    n = 32
    margin = 0.25
    dead_man_s = 45.5
    [actions.notify]
    type = "log"
    [actions.beep]
    type = "log"
    message = "beep"
    [actions.block]
    type = "nft_block_address"
    addresses = ["203.0.113.7", "2001:db8::1"]
    """)


def _series(n: int = 1500, channels: int = 3, seed: int = 0):  # noqa: ANN202
    from tinywarden.telemetry.series import Series

    rng = np.random.default_rng(seed)
    t = 1_700_000_000.0 + np.arange(n) * 10.0
    vals = 10.0 + np.sin(2 * np.pi * t / 3600.0)[:, None] * np.arange(1, channels + 1)
    vals = vals + rng.normal(scale=0.3, size=(n, channels))
    labels = (np.arange(n) % 97 == 0).astype(np.int8)
    attacks = np.where(labels == 1, "scan", "").astype(object)
    return Series(t, vals, tuple(f"c{i}" for i in range(channels)), labels, attacks)


def model_files() -> dict[str, bytes]:
    """``.twb`` bytes of small fitted pipelines, one per family in :data:`MODEL_FAMILIES`, and one with int8."""
    from tinywarden.detectors import make_detector
    from tinywarden.modelfile import pipeline_to_bytes
    from tinywarden.pipeline import Pipeline
    from tinywarden.quantize import int8_sections

    s = _series()
    out = {}
    for name, params in MODEL_FAMILIES.items():
        p = Pipeline(make_detector(name, **params), window=32, stride=16).fit(s)
        out[name] = pipeline_to_bytes(p)
        if name == "ewma":
            extra, arrays, _ = int8_sections(p, s)
            out["ewma-int8"] = pipeline_to_bytes(p, extra, arrays)
    return out


def policies() -> dict[str, bytes]:
    return {"example": (REPO / "examples" / "policy.toml").read_bytes(), "small": SMALL_POLICY.encode()}


def bundles(model: bytes) -> dict[str, bytes]:
    """Signed bundles (by the harness's fixed key): a plain one, a rotation, one with empty sections."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tinywarden.bundle import create_bundle, sign_bundle
    from tinywarden.bundle import public_key_of as pub

    meta = {"model_id": "fuzz", "profile": "gateway", "created_at": "2026-01-01T00:00:00+00:00",
            "training_data_sha256": hashlib.sha256(b"train").hexdigest(), "note": "seed"}
    raw = create_bundle(model, SMALL_POLICY.encode(), meta)
    new_key = pub(Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33))))
    return {
        "signed": sign_bundle(raw, signing_key(), version=3),
        "rotation": sign_bundle(raw, signing_key(), version=4, rotate_to=new_key),
        "tiny": sign_bundle(create_bundle(b"", b"", {"model_id": "m", "profile": "p"}), signing_key(), version=1),
    }


def _unsigned_part(signed: bytes) -> bytes:
    return signed[: len(signed) - 8 - 96]


def incidents() -> dict[str, bytes]:
    from tinywarden.agent.escalate import Incident

    a = Incident("gw-1", "m1", 3, tier=2, score=9.5, threshold=4.0, confidence=0.9, window_start=100.0,
                 window_end=116.0, features={"cpu_pct.max": 97.0, "net.tx.mean": 1e-3}, tier_name="constrain",
                 incident_id="0" * 32, created_at=1_700_000_000.0)
    b = Incident("cam.7", "m", 0, tier=0, score=0.0, threshold=0.0, confidence=0.0, window_start=0.0,
                 window_end=0.0, incident_id="x", created_at=0.0)
    return {"full": a.to_json(), "minimal": b.to_json()}


def audit_logs(tmp: Path) -> dict[str, bytes]:
    """A live log with its head; a rotated chain (LOG.2, LOG.1, LOG, head); a log with a crash's partial line."""
    from tinywarden.audit import AuditLog

    out = {}
    for name, max_bytes, n in (("plain", 1_000_000, 5), ("rotated", 1024, 14)):
        d = tmp / f"audit-{name}"
        d.mkdir(parents=True)
        log = AuditLog(d / "a.log", max_bytes=max_bytes, keep=2, fsync=False)
        for i in range(n):
            log.append("action", {"tier": i % 3, "score": 0.5 + i, "reason": "seed", "nan": float("nan")},
                       time=10.0 * i)
        files = sorted((p for p in d.iterdir() if p.name.startswith("a.log.") and p.suffix[1:].isdigit()),
                       key=lambda p: -int(p.suffix[1:]))
        pieces = [p.read_bytes() for p in files] + [(d / "a.log").read_bytes(), (d / "a.log.head").read_bytes()]
        out[name] = SEGMENT_SEP.join(pieces)
    plain = out["plain"].split(SEGMENT_SEP)[0]
    out["partial"] = plain + b'{"seq":5,"ti'
    return out


def csv_files(tmp: Path) -> dict[str, bytes]:
    from tinywarden.telemetry.io import write_csv

    s = _series(n=40)
    write_csv(s, tmp / "s.csv")
    iso = "timestamp,cpu,mem\n2026-01-01T00:00:00Z,1.5,2\n2026-01-01T00:00:10+00:00,1e3,-4.25\n"
    return {"series": (tmp / "s.csv").read_bytes(), "iso": iso.encode()}


def parquet_files(tmp: Path) -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tinywarden.telemetry.io import write_parquet

    tmp.mkdir(parents=True, exist_ok=True)
    s = _series(n=40)
    write_parquet(s, tmp / "s.parquet")
    out = {"series": (tmp / "s.parquet").read_bytes()}
    tables = {
        "timestamp-type": pa.table({"timestamp": pa.array(np.arange(5) * 1_000_000, pa.timestamp("us", tz="UTC")),
                                    "cpu": pa.array([1, 2, 3, 4, 5], pa.int32()), "label": [0, 1, 0, 0, 1]}),
        "string-time": pa.table({"timestamp": ["2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z"],
                                 "x": pa.array([1.0, 2.0], pa.float32()), "attack": [None, "scan"]}),
    }
    for name, table in tables.items():
        pq.write_table(table, tmp / f"{name}.parquet")
        out[name] = (tmp / f"{name}.parquet").read_bytes()
    return out


def seed_sets(tmp: Path) -> dict[str, Callable[[], dict[str, bytes]]]:
    """Per target, a function that builds its seeds (model files are fitted only once)."""
    models: dict[str, bytes] = {}

    def twb() -> dict[str, bytes]:
        if not models:
            models.update(model_files())
        return models

    return {
        "bundle": lambda: bundles(twb()["ewma"]),
        "bundle_signed": lambda: {k: _unsigned_part(v) for k, v in bundles(twb()["ewma"]).items()},
        "modelfile": lambda: {k: v[:-32] for k, v in twb().items()},
        "policy": policies,
        "spool": incidents,
        "audit": lambda: audit_logs(tmp / "audit"),
        "csv": lambda: csv_files(tmp / "csv"),
        "parquet": lambda: parquet_files(tmp / "parquet"),
    }


def write_seeds(out: Path, targets: list[str] | None = None) -> dict[str, Path]:
    """Write the seeds of ``targets`` (default: all) under ``out``; return ``{target: its seed dir}``."""
    work = out / "_work"
    sets = seed_sets(work)
    dirs = {}
    for name in targets or list(TARGETS):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for seed_name, data in sets[name]().items():
            (d / seed_name).write_bytes(data)
        dirs[name] = d
    return dirs


def check_seeds_are_valid(seed_dirs: dict[str, Path]) -> None:
    """Every seed is a valid file its parser accepts (a seed that is already a finding would hide real ones)."""
    for name, d in seed_dirs.items():
        seeds_accepted(name, [f.read_bytes() for f in sorted(d.iterdir())])


__all__ = ["check_seeds_are_valid", "write_seeds"]
