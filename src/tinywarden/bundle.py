"""Signed model bundles and the device's anti-rollback state.

A bundle is the one file a device installs: the fitted model (an opaque ``.twb`` payload that holds the
float and int8 forms), its response policy (TOML bytes) and metadata, signed with Ed25519. A device loads
a bundle only through :func:`load_verified_bundle`, which refuses anything tampered with, signed by a
key the device does not trust, unsigned, or older than the last version it accepted. Refusal raises
:class:`BundleError` and changes nothing on disk, so the device keeps running its current bundle.

Canonical encoding (format version 1; every integer big-endian)::

    offset  size  field
    0       8     magic  b"TWBUNDLE"
    8       2     format version, u16 = 1
    10      ...   sections, in this fixed order, each  tag (4 ASCII bytes) | length (u32) | payload
                    META  metadata as canonical JSON (UTF-8, keys sorted, separators "," ":", no
                          whitespace, ASCII-only); it must re-encode to exactly the same bytes
                    MODL  model payload (opaque)
                    POLI  response policy (opaque TOML bytes)
                    ROTK  optional key rotation: new Ed25519 public key (32 raw bytes) followed by
                          an Ed25519 signature (64 bytes) by the signing key over
                          b"tinywarden-key-rotation-v1\\0" + new key
                    SIGN  signer's Ed25519 public key (32 raw bytes) followed by an Ed25519
                          signature (64 bytes) over b"tinywarden-bundle-v1\\0" + SHA-256(every byte
                          before the SIGN tag)
    end           nothing may follow SIGN

An unsigned bundle (from :func:`create_bundle`) stops before SIGN; :func:`sign_bundle` sets the version
in META and appends SIGN. Metadata keys: ``model_id`` (non-empty str), ``version`` (int >= 0, 0 while
unsigned), ``created_at`` (ISO-8601 UTC), ``training_data_sha256`` (64 lowercase hex digits or null),
``profile`` (target device profile, non-empty str); other JSON keys are kept as they are.

Device state (``state_dir/trust.json``, replaced atomically: temp file, fsync, ``os.replace``, fsync of
the directory) records the accepted version, the bundle digest, the trusted key and the chain of key
fingerprints the device has rotated through. A rotation bundle (one carrying ROTK), once installed,
makes the new key the only trusted one: later bundles signed by an earlier key are refused. A state
file that cannot be read is never reset silently: every load and install is refused until an operator
repairs or removes it, because resetting it would re-open the door to rollback.

>>> priv = generate_key()
>>> raw = create_bundle(b"model", b"[policy]\\n", {"model_id": "m1", "profile": "gw"})
>>> signed = sign_bundle(raw, priv, version=3)
>>> b = verify_bundle(signed, public_key_of(priv))
>>> b.model_id, b.version, b.model
('m1', 3, b'model')
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tinywarden.errors import TinywardenError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "Bundle",
    "BundleError",
    "TrustState",
    "atomic_write",
    "create_bundle",
    "fingerprint",
    "generate_key",
    "install_bundle",
    "load_installed_bundle",
    "load_private_key",
    "load_public_key",
    "load_verified_bundle",
    "parse_bundle",
    "public_key_of",
    "read_file",
    "read_state",
    "sign_bundle",
    "verify_bundle",
    "write_keypair",
]

MAGIC = b"TWBUNDLE"
FORMAT_VERSION = 1
SIGN_DOMAIN = b"tinywarden-bundle-v1\0"
ROTATE_DOMAIN = b"tinywarden-key-rotation-v1\0"
STATE_FILE = "trust.json"
INSTALLED_FILE = "current.twbundle"
MAX_BUNDLE_BYTES = 256 * 1024 * 1024  # far above any MCU/gateway model; stops a hostile file early

_HEADER = struct.Struct(">8sH")
_SECTION = struct.Struct(">4sI")
_KEY_LEN = 32
_SIG_LEN = 64
_ORDER = (b"META", b"MODL", b"POLI", b"ROTK", b"SIGN")
_OPTIONAL = {b"ROTK", b"SIGN"}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(TinywardenError):
    """A bundle, key or trust state that cannot be accepted; the message names the file and the fault."""


@dataclass(frozen=True)
class Bundle:
    """A parsed bundle. ``signer`` is the raw public key that signed it (``None`` when unsigned).

    ``digest`` is the SHA-256 of the whole file; ``rotate_to`` is the raw new public key a rotation
    bundle hands trust to.
    """

    model: bytes
    policy: bytes
    metadata: dict[str, Any]
    digest: str
    signer: bytes | None = None
    rotate_to: bytes | None = None
    source: str = "<memory>"
    _signed_prefix: bytes = field(default=b"", repr=False, compare=False)
    _signature: bytes = field(default=b"", repr=False, compare=False)
    _rotation_sig: bytes = field(default=b"", repr=False, compare=False)

    @property
    def model_id(self) -> str:
        return str(self.metadata["model_id"])

    @property
    def version(self) -> int:
        return int(self.metadata["version"])

    @property
    def profile(self) -> str:
        return str(self.metadata["profile"])

    @property
    def created_at(self) -> str:
        return str(self.metadata["created_at"])

    @property
    def signer_fingerprint(self) -> str | None:
        return None if self.signer is None else fingerprint(self.signer)


@dataclass(frozen=True)
class TrustState:
    """What a device has accepted: the anti-rollback counter and the key it trusts now.

    ``key_chain`` lists the raw public keys from the provisioned one to the trusted one (last).
    """

    accepted_version: int
    bundle_sha256: str
    model_id: str
    key_chain: tuple[bytes, ...]
    installed_at: str

    @property
    def trusted_key(self) -> bytes:
        return self.key_chain[-1]

    @property
    def key_fingerprint(self) -> str:
        return fingerprint(self.trusted_key)


# ----------------------------------------------------------------------------------------------- keys


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key."""
    return Ed25519PrivateKey.generate()


def public_key_of(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of a private key."""
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key: bytes) -> str:
    """SHA-256 of the raw public key, hex; what the state file and messages name a key by."""
    return hashlib.sha256(public_key).hexdigest()


def write_keypair(prefix: str | os.PathLike[str], *, force: bool = False) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (PKCS#8 PEM, mode 0600) and ``PREFIX.pub`` (SubjectPublicKeyInfo PEM)."""
    base = Path(prefix)
    priv_path, pub_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for p in (priv_path, pub_path):
        if p.exists() and not force:
            raise BundleError(f"{p}: already exists (pass --force to overwrite)")
    key = generate_key()
    priv_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    pub_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_write(priv_path, priv_pem, mode=0o600)
    atomic_write(pub_path, pub_pem, mode=0o644)
    return priv_path, pub_path


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read an Ed25519 private key written by :func:`write_keypair` (PKCS#8 PEM, unencrypted)."""
    data = read_file(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: private key is {type(key).__name__}, expected Ed25519")
    return key


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """Read an Ed25519 public key (PEM) and return its raw 32 bytes."""
    data = read_file(path, "public key")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{path}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{path}: public key is {type(key).__name__}, expected Ed25519")
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# ------------------------------------------------------------------------------------------ encoding


def create_bundle(model: bytes, policy: bytes, metadata: Mapping[str, Any]) -> bytes:
    """Encode an unsigned bundle; ``created_at`` defaults to now and ``version`` to 0.

    >>> raw = create_bundle(b"m", b"", {"model_id": "x", "profile": "p"})
    >>> parse_bundle(raw).signer is None
    True
    """
    meta = dict(metadata)
    meta.setdefault("created_at", _now())
    meta.setdefault("version", 0)
    meta.setdefault("training_data_sha256", None)
    _check_metadata(meta, "<metadata>")
    return _encode(meta, bytes(model), bytes(policy), None)


def sign_bundle(
    data: bytes,
    key: Ed25519PrivateKey,
    *,
    version: int,
    rotate_to: bytes | None = None,
    source: str = "<memory>",
) -> bytes:
    """Set ``version`` and sign; an existing signature (and rotation) is replaced.

    ``rotate_to`` (raw 32-byte public key) makes this a rotation bundle: installing it hands the
    device's trust from ``key`` to the new key.
    """
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BundleError(f"{source}: version must be an integer >= 1, got {version!r}")
    if rotate_to is not None and len(rotate_to) != _KEY_LEN:
        raise BundleError(f"{source}: rotation key must be {_KEY_LEN} raw bytes, got {len(rotate_to)}")
    b = parse_bundle(data, source=source)
    meta = dict(b.metadata)
    meta["version"] = version
    rotation = None
    if rotate_to is not None:
        if rotate_to == public_key_of(key):
            raise BundleError(f"{source}: rotation key is the signing key itself")
        rotation = rotate_to + key.sign(ROTATE_DOMAIN + rotate_to)
    unsigned = _encode(meta, b.model, b.policy, rotation)
    signature = key.sign(SIGN_DOMAIN + hashlib.sha256(unsigned).digest())
    return unsigned + _SECTION.pack(b"SIGN", _KEY_LEN + _SIG_LEN) + public_key_of(key) + signature


def parse_bundle(data: bytes, *, source: str = "<memory>") -> Bundle:
    """Decode a bundle's structure without checking its signature (use :func:`verify_bundle`)."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{source}: {len(data)} bytes is larger than the {MAX_BUNDLE_BYTES} byte limit")
    if len(data) < _HEADER.size:
        raise BundleError(f"{source}: truncated: {len(data)} bytes, not even a header")
    magic, fmt = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise BundleError(f"{source}: not a tinywarden bundle (magic {magic!r}, expected {MAGIC!r})")
    if fmt != FORMAT_VERSION:
        raise BundleError(
            f"{source}: bundle format version {fmt} is not supported (this reads {FORMAT_VERSION})"
        )
    sections: dict[bytes, bytes] = {}
    sign_offset = None
    pos, last = _HEADER.size, -1
    while pos < len(data):
        if len(data) - pos < _SECTION.size:
            raise BundleError(f"{source}: truncated section header at byte {pos}")
        tag, length = _SECTION.unpack_from(data, pos)
        if tag not in _ORDER:
            raise BundleError(f"{source}: unknown section {tag!r} at byte {pos}")
        idx = _ORDER.index(tag)
        if idx <= last:
            raise BundleError(f"{source}: section {tag.decode()} at byte {pos} is repeated or out of order")
        body_start = pos + _SECTION.size
        if length > len(data) - body_start:
            raise BundleError(
                f"{source}: section {tag.decode()} at byte {pos} claims {length} bytes, "
                f"only {len(data) - body_start} remain (truncated file?)"
            )
        if tag == b"SIGN":
            sign_offset = pos
        sections[tag] = data[body_start : body_start + length]
        pos, last = body_start + length, idx
        if tag == b"SIGN" and pos != len(data):
            raise BundleError(f"{source}: {len(data) - pos} unexpected bytes after the signature")
    for tag in _ORDER:
        if tag not in sections and tag not in _OPTIONAL:
            raise BundleError(f"{source}: section {tag.decode()} is missing")
    meta = _decode_metadata(sections[b"META"], source)

    rotate_to, rotation_sig = None, b""
    if b"ROTK" in sections:
        rot = sections[b"ROTK"]
        if len(rot) != _KEY_LEN + _SIG_LEN:
            raise BundleError(f"{source}: ROTK section is {len(rot)} bytes, expected {_KEY_LEN + _SIG_LEN}")
        rotate_to, rotation_sig = rot[:_KEY_LEN], rot[_KEY_LEN:]
    signer, signature, prefix = None, b"", b""
    if sign_offset is not None:
        sig = sections[b"SIGN"]
        if len(sig) != _KEY_LEN + _SIG_LEN:
            raise BundleError(f"{source}: SIGN section is {len(sig)} bytes, expected {_KEY_LEN + _SIG_LEN}")
        signer, signature, prefix = sig[:_KEY_LEN], sig[_KEY_LEN:], data[:sign_offset]
    return Bundle(
        model=sections[b"MODL"],
        policy=sections[b"POLI"],
        metadata=meta,
        digest=hashlib.sha256(data).hexdigest(),
        signer=signer,
        rotate_to=rotate_to,
        source=source,
        _signed_prefix=prefix,
        _signature=signature,
        _rotation_sig=rotation_sig,
    )


def verify_bundle(data: bytes, public_key: bytes, *, source: str = "<memory>") -> Bundle:
    """Parse and check the signature against ``public_key`` (raw 32 bytes); no rollback check."""
    b = parse_bundle(data, source=source)
    if b.signer is None:
        raise BundleError(f"{source}: bundle is not signed (no SIGN section)")
    if b.version < 1:
        raise BundleError(f"{source}: signed bundle has version {b.version}, expected >= 1")
    if b.signer != public_key:
        raise BundleError(
            f"{source}: signed by key {fingerprint(b.signer)[:16]}…, "
            f"not by the trusted key {fingerprint(public_key)[:16]}…"
        )
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            b._signature, SIGN_DOMAIN + hashlib.sha256(b._signed_prefix).digest()
        )
    except InvalidSignature:
        raise BundleError(
            f"{source}: signature does not match the contents (corrupted or tampered)"
        ) from None
    if b.rotate_to is not None:
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                b._rotation_sig, ROTATE_DOMAIN + b.rotate_to
            )
            Ed25519PublicKey.from_public_bytes(b.rotate_to)
        except (InvalidSignature, ValueError):
            raise BundleError(f"{source}: key rotation endorsement is invalid") from None
    return b


# -------------------------------------------------------------------------------------- device state


def read_state(state_dir: str | os.PathLike[str]) -> TrustState | None:
    """The device's trust state, or ``None`` before the first install."""
    path = Path(state_dir) / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: cannot read trust state ({exc})") from None
    try:
        d = json.loads(text)
        if d.get("format") != 1:
            raise ValueError(f"unknown state format {d.get('format')!r}")
        version = d["accepted_version"]
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"accepted_version {version!r} is not an integer >= 1")
        chain = tuple(bytes.fromhex(x) for x in d["key_chain"])
        if not chain or any(len(k) != _KEY_LEN for k in chain):
            raise ValueError("key_chain must list 32-byte public keys")
        if d.get("key_fingerprint") != fingerprint(chain[-1]):
            raise ValueError("key_fingerprint does not match the last key of key_chain")
        return TrustState(
            accepted_version=version,
            bundle_sha256=str(d["bundle_sha256"]),
            model_id=str(d["model_id"]),
            key_chain=chain,
            installed_at=str(d["installed_at"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(
            f"{path}: trust state is corrupted ({exc}); refusing every bundle until it is repaired "
            "(deleting it would reset the anti-rollback counter)"
        ) from None


def load_verified_bundle(
    path: str | os.PathLike[str], pubkey: bytes, state_dir: str | os.PathLike[str] | None = None
) -> Bundle:
    """Load a bundle for use: authentic, signed by the key this device trusts now, not rolled back.

    ``pubkey`` is the device's provisioned key; after rotations it may be any key of the recorded
    chain, and the bundle must be signed by the newest one, except the accepted bundle itself (same
    digest), which stays loadable though a rotation bundle was signed by the previous key. Raises
    :class:`BundleError`; nothing is written.
    """
    source = str(path)
    data = read_file(path, "bundle")
    state = read_state(state_dir) if state_dir is not None else None
    trusted = pubkey
    if state is not None:
        if pubkey not in state.key_chain:
            raise BundleError(
                f"{source}: public key {fingerprint(pubkey)[:16]}… is not in this device's key chain "
                f"(trusted key is {state.key_fingerprint[:16]}…)"
            )
        trusted = state.trusted_key
        if hashlib.sha256(data).hexdigest() == state.bundle_sha256:
            signer = parse_bundle(data, source=source).signer
            if signer in state.key_chain:
                trusted = signer
    b = verify_bundle(data, trusted, source=source)
    if state is not None and b.version < state.accepted_version:
        raise BundleError(
            f"{source}: version {b.version} is older than version {state.accepted_version} "
            "already accepted on this device (rollback refused)"
        )
    return b


def install_bundle(
    path: str | os.PathLike[str], pubkey: bytes, state_dir: str | os.PathLike[str]
) -> tuple[Bundle, TrustState]:
    """Verify, then keep a copy in ``state_dir`` and record its version as the accepted one.

    The state is replaced atomically under an exclusive lock, so a crash or a concurrent install
    leaves either the old or the new state, never a mix.
    """
    sdir = Path(state_dir)
    try:
        sdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"{sdir}: cannot create state directory ({exc})") from None
    with _locked(sdir):
        b = load_verified_bundle(path, pubkey, sdir)
        old = read_state(sdir)
        chain = old.key_chain if old is not None else (pubkey,)
        if b.rotate_to is not None and b.rotate_to not in chain:
            chain = (*chain, b.rotate_to)
        state = TrustState(
            accepted_version=b.version,
            bundle_sha256=b.digest,
            model_id=b.model_id,
            key_chain=chain,
            installed_at=_now(),
        )
        # The copy goes first: if we crash before the state, the old state still accepts it.
        atomic_write(sdir / INSTALLED_FILE, read_file(path, "bundle"))
        atomic_write(sdir / STATE_FILE, _encode_state(state))
    return b, state


def load_installed_bundle(state_dir: str | os.PathLike[str], pubkey: bytes) -> Bundle:
    """Load (and verify) the bundle last installed into ``state_dir``."""
    path = Path(state_dir) / INSTALLED_FILE
    if read_state(state_dir) is None:
        raise BundleError(f"{state_dir}: no bundle installed yet")
    b = load_verified_bundle(path, pubkey, state_dir)
    state = read_state(state_dir)
    if state is not None and b.digest != state.bundle_sha256:
        raise BundleError(f"{path}: installed copy does not match the digest recorded in {STATE_FILE}")
    return b


# ------------------------------------------------------------------------------------------- helpers


def _encode(meta: Mapping[str, Any], model: bytes, policy: bytes, rotation: bytes | None) -> bytes:
    parts = [_HEADER.pack(MAGIC, FORMAT_VERSION)]
    for tag, body in (
        (b"META", _canonical_json(meta)),
        (b"MODL", model),
        (b"POLI", policy),
        (b"ROTK", rotation),
    ):
        if body is None:
            continue
        if len(body) > 0xFFFFFFFF:
            raise BundleError(f"section {tag.decode()} is {len(body)} bytes, above the u32 limit")
        parts.append(_SECTION.pack(tag, len(body)))
        parts.append(body)
    return b"".join(parts)


def _canonical_json(meta: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(
            meta, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
        ).encode()
    except (TypeError, ValueError) as exc:
        raise BundleError(f"metadata is not plain JSON ({exc})") from None


def _decode_metadata(raw: bytes, source: str) -> dict[str, Any]:
    try:
        meta = json.loads(raw.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"{source}: META section is not valid JSON ({exc})") from None
    except RecursionError:
        raise BundleError(f"{source}: META section is not valid JSON (nested too deeply)") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{source}: META section is not a JSON object")
    try:
        canonical = _canonical_json(meta)
    except BundleError:
        raise BundleError(f"{source}: META section is not canonical JSON") from None
    if canonical != raw:
        raise BundleError(f"{source}: META section is not in canonical form (keys sorted, no whitespace)")
    _check_metadata(meta, source)
    return meta


def _check_metadata(meta: Mapping[str, Any], source: str) -> None:
    for key in ("model_id", "profile"):
        v = meta.get(key)
        if not isinstance(v, str) or not v.strip():
            raise BundleError(f"{source}: metadata field {key!r} must be a non-empty string, got {v!r}")
    v = meta.get("version")
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise BundleError(f"{source}: metadata field 'version' must be an integer >= 0, got {v!r}")
    created = meta.get("created_at")
    try:
        if not isinstance(created, str):
            raise ValueError
        _dt.datetime.fromisoformat(created)
    except ValueError:
        raise BundleError(
            f"{source}: metadata field 'created_at' is not an ISO-8601 time: {created!r}"
        ) from None
    h = meta.get("training_data_sha256")
    if h is not None and not (isinstance(h, str) and _HEX64.fullmatch(h)):
        raise BundleError(
            f"{source}: metadata field 'training_data_sha256' must be 64 lowercase hex digits "
            f"or null, got {h!r}"
        )


def _encode_state(s: TrustState) -> bytes:
    d = {
        "format": 1,
        "accepted_version": s.accepted_version,
        "bundle_sha256": s.bundle_sha256,
        "model_id": s.model_id,
        "key_fingerprint": s.key_fingerprint,
        "key_chain": [k.hex() for k in s.key_chain],
        "installed_at": s.installed_at,
    }
    return (json.dumps(d, indent=2, sort_keys=True) + "\n").encode()


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


def read_file(path: str | os.PathLike[str], what: str) -> bytes:
    """Read a whole file (bundle, key, model, policy) or raise a :class:`BundleError` naming it."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path}: {what} is larger than {MAX_BUNDLE_BYTES} bytes")
    return data


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write ``data`` so that ``path`` holds the old or the new content after any crash."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise BundleError(f"{path}: cannot write ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise BundleError(f"{path}: cannot write ({exc.strerror or exc})") from None


@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[None]:
    try:
        fd = os.open(state_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise BundleError(f"{state_dir}: cannot lock state directory ({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
