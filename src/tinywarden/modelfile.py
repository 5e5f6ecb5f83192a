"""The ``.twb`` model file: everything needed to score, in a versioned, checksummed, pickle-free format.

Layout (all integers little-endian)::

    offset  size  content
    0       8     magic  b"TWMODEL\\n"
    8       2     uint16 format version (this module writes FORMAT_VERSION)
    10      4     uint32 header length H
    14      H     header: UTF-8 JSON object (see below)
    14+H    A     array blob: the raw bytes of every array, in header order
    end-32  32    SHA-256 of every byte before it

The header holds ``format``, ``tinywarden_version``, ``created``, ``pipeline`` (window, stride,
features, target_fpr, k, n, calibration_fraction, channels, threshold, offset/scale array names),
``detector`` (``name`` and ``params``), ``train`` (a summary of the training data, never the data)
and ``arrays``: a list of ``{"name", "dtype", "shape", "offset", "nbytes"}`` into the blob.
Extra top-level keys may be added by later stages (e.g. ``int8``) within the same format version.

The fail-safe guard (the rule-based bounds the response engine falls back on when the model path
faults, see :meth:`tinywarden.pipeline.Pipeline.judge_window`) is the optional ``guard`` header key
(``name`` and ``params``) with its arrays stored as ``guard/<name>`` sections. A file written before
the guard existed still loads: its pipeline has ``guard_ = None`` and ``guard_note_`` says why.

A file with the wrong magic, an unknown format version, a bad checksum, or an inconsistent header is
refused with a :class:`~tinywarden.errors.ModelFileError` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinywarden import __version__
from tinywarden.errors import ModelFileError, TinywardenError
from tinywarden.fileio import atomic_write
from tinywarden.likelihood import AnomalyLikelihood

if TYPE_CHECKING:  # the float pipeline and the detector families load only when a pipeline is built
    from tinywarden.detectors.bounds import BoundsDetector
    from tinywarden.pipeline import Pipeline

MAGIC = b"TWMODEL\n"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<8sHI")
GUARD_HEADER_KEY = "guard"
#: Header key of the calibrated anomaly likelihood (:mod:`tinywarden.likelihood`): params and state.
LIKELIHOOD_HEADER_KEY = "likelihood"
_GUARD_PREFIX = "guard/"
#: The model-file array holding the per-channel level the crossings feature counts the crossings of.
CROSSINGS_LEVEL = "crossings/level"
_ALLOWED_DTYPES = {"float64", "float32", "int64", "int32", "int16", "int8", "uint32", "uint16", "uint8"}


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """Serialise a header and named arrays into model-file bytes."""
    specs, blobs, offset = [], [], 0
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.name not in _ALLOWED_DTYPES:
            raise TinywardenError(f"array {name!r} has unsupported dtype {a.dtype}")
        data = a.astype(a.dtype.newbyteorder("<")).tobytes()
        specs.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": offset,
                      "nbytes": len(data)})
        blobs.append(data)
        offset += len(data)
    head = json.dumps({**header, "arrays": specs}, sort_keys=True, separators=(",", ":")).encode()
    body = _PREFIX.pack(MAGIC, FORMAT_VERSION, len(head)) + head + b"".join(blobs)
    return body + hashlib.sha256(body).digest()


def decode(data: bytes, source: str = "<bytes>") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Parse and verify model-file bytes; return ``(header, arrays)``."""
    if len(data) < _PREFIX.size + 32:
        raise ModelFileError(f"{source}: not a tinywarden model file (only {len(data)} bytes)")
    magic, version, head_len = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise ModelFileError(f"{source}: not a tinywarden model file (bad magic)")
    if version != FORMAT_VERSION:
        raise ModelFileError(
            f"{source}: model file format version {version} is not supported (this tinywarden reads "
            f"version {FORMAT_VERSION}); retrain or upgrade tinywarden"
        )
    body, digest = data[:-32], data[-32:]
    if hashlib.sha256(body).digest() != digest:
        raise ModelFileError(f"{source}: checksum mismatch: the model file is corrupted or truncated")
    start = _PREFIX.size
    try:
        header = json.loads(body[start : start + head_len].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{source}: unreadable header ({exc})") from None
    except RecursionError:
        raise ModelFileError(f"{source}: unreadable header (JSON nested too deeply)") from None
    if not isinstance(header, dict) or not isinstance(header.get("arrays", []), list):
        raise ModelFileError(f"{source}: header is not a JSON object with a list of arrays")
    blob = body[start + head_len :]
    arrays: dict[str, np.ndarray] = {}
    for spec in header.get("arrays", []):
        try:
            name, dtype, shape = spec["name"], spec["dtype"], tuple(operator.index(d) for d in spec["shape"])
            off, nbytes = int(spec["offset"]), int(spec["nbytes"])
            if not isinstance(name, str) or not isinstance(dtype, str):
                raise TypeError
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ModelFileError(f"{source}: malformed array entry {spec!r}") from None
        if dtype not in _ALLOWED_DTYPES or off < 0 or nbytes < 0 or off + nbytes > len(blob):
            raise ModelFileError(f"{source}: array {name!r} lies outside the file or has dtype {dtype!r}")
        size = np.dtype(dtype).itemsize
        if any(d < 0 for d in shape) or nbytes != size * math.prod(shape):
            raise ModelFileError(f"{source}: array {name!r} has {nbytes} bytes, header says {shape} of {dtype}")
        arr = np.frombuffer(blob[off : off + nbytes], dtype=np.dtype(dtype).newbyteorder("<"))
        arrays[name] = arr.reshape(shape).astype(np.dtype(dtype))
    return header, arrays


def _tuples(params: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; detector parameters that were tuples come back as tuples."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}


def pipeline_to_bytes(pipeline: Pipeline, extra: dict[str, Any] | None = None,
                      extra_arrays: dict[str, np.ndarray] | None = None) -> bytes:
    """Model-file bytes for a fitted pipeline (``extra`` header keys and arrays from later stages)."""
    pipeline._check_fitted()
    det = pipeline.detector
    arrays = {"scaler/offset": pipeline.offset_, "scaler/scale": pipeline.scale_}
    if getattr(pipeline, "crossings_level_", None) is not None:
        arrays[CROSSINGS_LEVEL] = pipeline.crossings_level_
    arrays.update({f"detector/{k}": v for k, v in det.state().items()})
    arrays.update(extra_arrays or {})
    guard = getattr(pipeline, "guard_", None)
    guard_header: dict[str, Any] = {}
    if guard is not None:
        arrays.update({f"{_GUARD_PREFIX}{k}": v for k, v in guard.state().items()})
        guard_header = {GUARD_HEADER_KEY: {"name": guard.name, "params": guard.get_params()}}
    header = {
        "format": FORMAT_VERSION,
        "tinywarden_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pipeline": {**pipeline.config(), "channels": list(pipeline.channels_),
                     "threshold": pipeline.threshold_},
        "detector": {"name": det.name, "params": det.get_params(), "n_params": det.n_params_},
        "train": pipeline.train_summary_,
        **(extra or {}),
        **guard_header,
    }
    likelihood = getattr(pipeline, "likelihood_", None)
    if likelihood is not None:
        header[LIKELIHOOD_HEADER_KEY] = {"params": likelihood.get_params(), "state": likelihood.state()}
    return encode(header, arrays)


def pipeline_from_bytes(data: bytes, source: str = "<bytes>") -> Pipeline:
    """Rebuild a fitted :class:`Pipeline` from model-file bytes."""
    from tinywarden.detectors.base import REGISTRY
    from tinywarden.pipeline import Pipeline

    header, arrays = decode(data, source)
    try:
        cfg = header["pipeline"]
        det_name = header["detector"]["name"]
        params = _tuples(header["detector"]["params"])
    except (KeyError, TypeError, AttributeError):
        raise ModelFileError(f"{source}: header lacks the pipeline or detector section") from None
    if det_name not in REGISTRY:
        raise ModelFileError(f"{source}: unknown detector {det_name!r} (known: {', '.join(sorted(REGISTRY))})")
    det_arrays = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("detector/")}
    try:
        det = REGISTRY[det_name].from_state(params, det_arrays)
    except TinywardenError as exc:
        raise ModelFileError(f"{source}: {exc}") from None
    try:
        # a file written before crossings were counted per block counted them over the whole window; one counting
        # the crossings of the trained mean stores the level
        trained = bool(cfg.get("crossings_trained", False))
        p = Pipeline(det, cfg["window"], cfg["stride"], cfg["features"], cfg["target_fpr"], cfg["k"], cfg["n"],
                     cfg["calibration_fraction"], None if trained else cfg.get("crossings_block", cfg["window"]),
                     trained, cfg.get("likelihood_gate"))
        p.crossings_level_ = arrays.get(CROSSINGS_LEVEL) if p.crossings_block is None else None
        p.channels_ = tuple(cfg["channels"])
        p.threshold_ = float(cfg["threshold"])
        p.offset_ = arrays["scaler/offset"]
        p.scale_ = arrays["scaler/scale"]
    except (KeyError, TypeError) as exc:
        raise ModelFileError(f"{source}: incomplete pipeline section (missing {exc})") from None
    except ValueError:
        raise ModelFileError(f"{source}: field pipeline.threshold is {cfg['threshold']!r}, expected a number") from None
    except TinywardenError as exc:
        raise ModelFileError(f"{source}: invalid pipeline configuration: {exc}") from None
    _check_scoring_fields(p, source)
    p.train_summary_ = header.get("train", {})
    p.header_ = header
    p.extra_arrays_ = {k: v for k, v in arrays.items()
                       if not k.startswith(("detector/", "scaler/", _GUARD_PREFIX)) and k != CROSSINGS_LEVEL}
    p.guard_, p.guard_note_ = _load_guard(header, arrays, source)
    p.likelihood_ = load_likelihood(header.get(LIKELIHOOD_HEADER_KEY), source)
    return p


def load_likelihood(section: Any, source: str) -> AnomalyLikelihood | None:
    """A likelihood stored as ``{"params", "state"}`` (a model file's or an int8 program's); ``None`` when
    ``section`` is (a file written before likelihoods existed)."""
    if section is None:
        return None
    try:
        return AnomalyLikelihood.from_state(dict(section["params"]), dict(section["state"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: likelihood section is malformed: {exc}") from None
    except TinywardenError as exc:
        raise ModelFileError(f"{source}: likelihood: {exc}") from None


def _check_scoring_fields(p: Pipeline, source: str) -> None:
    """Refuse a threshold or scaler that would silently change every verdict.

    The checksum only proves the file is what its writer wrote: a file edited and re-checksummed, or
    written by a faulty tool, could carry a NaN threshold (``score > nan`` is never true, so nothing is
    ever flagged) or an infinite one, or a scaler that turns every window into NaN.
    """
    if not np.isfinite(p.threshold_):
        raise ModelFileError(f"{source}: field pipeline.threshold is {p.threshold_!r}, expected a finite number")
    c = len(p.channels_)
    for name, arr in (("scaler/offset", p.offset_), ("scaler/scale", p.scale_)):
        if arr.ndim != 1 or arr.size == 0 or arr.size % c:
            raise ModelFileError(f"{source}: array {name!r} has shape {arr.shape}, expected one value per input "
                                 f"of {c} channel(s)")
        if not np.isfinite(arr).all():
            raise ModelFileError(f"{source}: array {name!r} holds NaN or infinity")
    level = getattr(p, "crossings_level_", None)
    if p.crossings_block is None and "crossings" in p.features and (
            level is None or level.shape != (c,) or not np.isfinite(level).all()):
        raise ModelFileError(f"{source}: array {CROSSINGS_LEVEL!r} must hold one finite value per channel ({c}): the "
                             "crossings feature counts the crossings of it")
    if p.offset_.shape != p.scale_.shape:
        raise ModelFileError(f"{source}: arrays 'scaler/offset' {p.offset_.shape} and 'scaler/scale' "
                             f"{p.scale_.shape} differ in shape")
    if (p.scale_ <= 0).any():
        raise ModelFileError(f"{source}: array 'scaler/scale' holds a value <= 0")
    want = (p.offset_.size,) if p.input_kind == "features" else (p.window, c)
    if tuple(p.detector.input_shape_) != want:
        raise ModelFileError(f"{source}: array 'detector/input_shape_' is {tuple(p.detector.input_shape_)}, the "
                             f"pipeline makes model inputs of shape {want}")


def _load_guard(header: dict[str, Any], arrays: dict[str, np.ndarray],
                source: str) -> tuple[BoundsDetector | None, str]:
    """The fail-safe guard stored in a model file, or ``None`` and a note saying what that means."""
    from tinywarden.detectors.bounds import BoundsDetector

    spec = header.get(GUARD_HEADER_KEY)
    if spec is None:
        return None, (
            f"{source}: model file has no fail-safe guard (written before tinywarden stored one); a model "
            "fault falls back to the policy's fault_tolerance/fail_safe_tier rules; retrain to add it"
        )
    try:
        name, params = spec["name"], _tuples(spec["params"])
    except (KeyError, TypeError, AttributeError):
        raise ModelFileError(f"{source}: malformed {GUARD_HEADER_KEY!r} section {spec!r}") from None
    if name != BoundsDetector.name:
        raise ModelFileError(f"{source}: unknown fail-safe guard {name!r} (known: {BoundsDetector.name})")
    state = {k[len(_GUARD_PREFIX):]: v for k, v in arrays.items() if k.startswith(_GUARD_PREFIX)}
    try:
        guard = BoundsDetector.from_state(params, state)
    except ModelFileError as exc:
        raise ModelFileError(f"{source}: fail-safe guard: {exc}") from None
    c = len(header["pipeline"]["channels"])
    window = header["pipeline"]["window"]
    if guard.input_shape_ != (window, c) or any(np.shape(getattr(guard, a)) != (c,) for a in guard.state_arrays):
        raise ModelFileError(
            f"{source}: fail-safe guard was stored for windows {guard.input_shape_}, the model has ({window}, {c})"
        )
    return guard, ""


def save_pipeline(pipeline: Pipeline, path: str | Path, extra: dict[str, Any] | None = None,
                  extra_arrays: dict[str, np.ndarray] | None = None) -> int:
    """Write a model file atomically (temp file, fsync, rename); return its size in bytes."""
    data = pipeline_to_bytes(pipeline, extra, extra_arrays)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(p, data)
    except OSError as exc:  # its own message would name the temporary file
        raise ModelFileError(f"{p}: cannot write the model file ({exc.strerror or exc})") from None
    return len(data)


def load_pipeline(path: str | Path) -> Pipeline:
    """Read and verify a model file written by :func:`save_pipeline`."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(f"{p}: no such model file") from None
    except IsADirectoryError:
        raise ModelFileError(f"{p}: is a directory, expected a model file") from None
    return pipeline_from_bytes(data, str(p))
