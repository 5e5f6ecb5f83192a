"""Reproducers of what the fuzz campaigns found: ``{name: (target, harness input)}``.

Each input once made its parser fail with something other than a one-line TinywardenError (the
exception and place are in the name's comment); ``tests/test_fuzz.py`` runs each through its harness.
Inputs are built from small readable pieces where that is practical; binary inputs that are not (a mutated
Parquet file) are stored as ``regressions/<target>-<exception>-<file>-<line>.bin``, each about 1 KB.

``regressions_c/<target>-<what>.bin`` are the C campaigns' findings, each replayed by
``tests/test_fuzz.py::test_c_regression`` through the ``<target>`` harness built under ASan + UBSan:
``c_state_memory-overflow.bin`` (a corrupt ``tw_response_t`` that drove tw_respond into a signed overflow before
it checked the state's invariants).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from fuzz.targets import SEGMENT_SEP

_GENESIS = "0" * 64


def bundle(meta: bytes, model: bytes = b"", policy: bytes = b"") -> bytes:
    """An unsigned bundle with these raw sections (``tinywarden.bundle``'s layout, no validation)."""
    out = b"TWBUNDLE" + struct.pack(">H", 1)
    for tag, body in ((b"META", meta), (b"MODL", model), (b"POLI", policy)):
        out += tag + struct.pack(">I", len(body)) + body
    return out


def twb_body(header: object, blob: bytes = b"") -> bytes:
    """A ``.twb`` body (the modelfile harness appends the SHA-256) with this header (JSON, or raw bytes) and blob."""
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return b"TWMODEL\n" + struct.pack("<HI", 1, len(head)) + head + blob


def audit_line(seq: object, time: str = "1.0", prev: str = _GENESIS) -> bytes:
    """One audit record with raw JSON for ``time`` (e.g. ``NaN``); its hash is not valid."""
    return (f'{{"seq":{seq},"time":{time},"kind":"x","data":{{}},"prev":"{prev}","hash":"{"1" * 64}"}}\n').encode()


def incident(**override: str) -> bytes:
    """An incident record with raw JSON values replaced (e.g. ``score="1" * 400``)."""
    fields = {"confidence": "0.9", "created_at": "1.0", "device_id": '"gw-1"', "features": "{}",
              "incident_id": '"i"', "model_id": '"m"', "model_version": "1", "score": "2.0", "threshold": "1.0",
              "tier": "1", "tier_name": '""', "window": '{"start":1.0,"end":2.0}', **override}
    return ("{" + ",".join(f'"{k}":{v}' for k, v in fields.items()) + "}").encode()


_ARR = {"name": "scaler/offset", "dtype": "float64", "offset": 0}

REGRESSIONS: dict[str, tuple[str, bytes]] = {
    # RecursionError at bundle.py _decode_metadata (json.loads of deeply nested META)
    "bundle-deep-meta": ("bundle", bundle(b"[" * 100_000)),
    "bundle-signed-deep-meta": ("bundle_signed", bundle(b"[" * 100_000)),
    # UnicodeDecodeError at policy.py load_policy (read_text of a non-UTF-8 file)
    "policy-not-utf8": ("policy", b'[policy]\nname = "\xc9"\n'),
    # TypeError at policy.py _Validator.action (an array as the action type: unhashable in the type table)
    "policy-type-array": ("policy", b'[policy]\nname = "p"\nversion = "1"\n[actions.a]\ntype = ["log"]\n'),
    # OverflowError at escalate.py Incident.__post_init__ (math.isfinite of an int beyond float range)
    "spool-huge-int-score": ("spool", incident(score="9" * 400)),
    "spool-huge-int-feature": ("spool", incident(features='{"x":' + "9" * 400 + "}")),
    # quarantine reason with a line break (escalate.py Incident.from_json echoed an unknown key as it is)
    "spool-key-newline": ("spool", incident(**{"confid\\nence": "0.9"})),
    # RecursionError at escalate.py Incident.from_json (deeply nested JSON)
    "spool-deep-json": ("spool", b"[" * 100_000),
    # ValueError at audit.py verify -> record_hash (NaN in a record cannot be re-encoded canonically)
    "audit-nan-time": ("audit", audit_line(0, time="NaN")),
    # the same through a number that overflows to infinity (found by the long audit campaign after the fix above)
    "audit-overflowing-time": ("audit", audit_line(0, time="1e400")),
    # OverflowError at audit.py _check_head (int(Infinity) of the head's seq)
    "audit-infinite-head-seq": ("audit", audit_line(0) + SEGMENT_SEP + b'{"seq":Infinity,"hash":"x"}'),
    # OverflowError at audit.py AuditLog._recover (int(Infinity) of the last record's seq)
    "audit-infinite-seq": ("audit", audit_line("Infinity")),
    # RecursionError at audit.py verify (deeply nested line)
    "audit-deep-line": ("audit", b"[" * 100_000 + b"\n"),
    # DataError with a newline at io.py _columns: a quoted header cell holding a line break, echoed as it is
    "csv-newline-in-header": ("csv", b'"cpu\nmem",x\n1,2\n'),
    # DataError with a newline at io.py _read_parquet: Arrow's thrift error text ends in a line break
    "parquet-bad-footer": ("parquet", b"PAR1" + b"\xff" * 8 + struct.pack("<I", 8) + b"PAR1"),
    # ValueError at modelfile.py decode (array bytes not a multiple of the dtype's size)
    "modelfile-ragged-array": ("modelfile", twb_body({"arrays": [{**_ARR, "shape": [1], "nbytes": 3}]}, b"abc")),
    # Found by reading the modelfile target's path while its campaign ran (mutating JSON text blindly, the
    # fuzzer reaches these rarely): AttributeError / TypeError / UFuncTypeError / ValueError in decode and
    # pipeline_from_bytes for a header or array entry of the wrong JSON type or an impossible shape.
    "modelfile-header-list": ("modelfile", twb_body([])),
    "modelfile-arrays-not-list": ("modelfile", twb_body({"arrays": 5})),
    "modelfile-shape-str": ("modelfile", twb_body({"arrays": [{**_ARR, "shape": ["a"], "nbytes": 8}]}, bytes(8))),
    "modelfile-shape-negative": ("modelfile", twb_body({"arrays": [{**_ARR, "shape": [-1, 0], "nbytes": 0}]})),
    "modelfile-shape-huge": ("modelfile", twb_body({"arrays": [{**_ARR, "shape": [2**32, 2**32], "nbytes": 0}]})),
    "modelfile-shape-nested": ("modelfile", twb_body({"arrays": [{**_ARR, "shape": [[1]], "nbytes": 8}]}, bytes(8))),
    "modelfile-name-list": ("modelfile", twb_body({"arrays": [{**_ARR, "name": [1], "shape": [1], "nbytes": 8}]},
                                                  bytes(8))),
    "modelfile-params-list": ("modelfile", twb_body({"pipeline": {}, "detector": {"name": "ewma", "params": [1]}})),
    "modelfile-deep-header": ("modelfile", twb_body(b"[" * 100_000)),
    # ModelFileError with a line break (found by the long campaign): a detector parameter name echoed as it is
    # (detectors/base.py from_state); the feature-name case is test_fuzz.py::test_feature_name_with_newline
    "modelfile-param-newline": ("modelfile", twb_body({"pipeline": {}, "detector": {"name": "kmeans",
                                                                                    "params": {"n_clust\rs": 2}}})),
}

# The Parquet campaign's findings: Arrow errors other than ArrowInvalid (ArrowNotImplementedError for an
# integer column wider than 64 bits) and UnicodeDecodeError for a column name or string cell that is not
# UTF-8 (io.py _read_parquet), all raised outside the try around read_table; a 3.1 KB file whose row group claims
# 488,394,126,936 rows, for which Arrow's reader asked for 1 TiB (arrowmemoryerror; tests/test_telemetry_io.py also
# reads it under a 1 GiB address-space cap); and a footer whose size-statistics histogram is corrupt, on which
# pyarrow's ColumnChunkMetaData aborts the process (found while bounding the footer: the check must not touch it).
for _f in sorted((Path(__file__).parent / "regressions").glob("*.bin")):
    REGRESSIONS[_f.stem] = (_f.stem.split("-", 1)[0], _f.read_bytes())
