"""Signed model bundles and the device's anti-rollback state.

A bundle is the one file a device installs: the fitted model (an opaque ``.twb`` payload that holds the
float and int8 forms), its response policy (TOML bytes) and metadata, signed with Ed25519. A device loads
a bundle only through :func:`load_verified_bundle`, which refuses anything tampered with, signed by a
key the device does not trust, unsigned, older than the last version it accepted, or a different bundle
with that same version. :func:`install_bundle` also loads the model and policy as the agent will run
them (:func:`tinywarden.payload.load_payload`) before it moves anything. Refusal raises
:class:`BundleError` and changes nothing on disk, so the device keeps running its current bundle.

Keys and signatures. A small-order or non-canonically encoded Ed25519 point is refused wherever a key
enters trust (a provisioned key, the state file's key chain, a rotation key, a bundle's signer) and as a
signature's R, and a signature's S must be below the group order (:func:`point_fault`): OpenSSL's
verify accepts the all-zero key with the all-zero signature for a quarter of all messages.

Rollback counter. The accepted version lives in ``trust.json`` (:class:`FileCounter`), which has no
anchor if the file is deleted or edited; a platform with a monotonic counter plugs it in as a
:class:`MonotonicCounter` (:func:`load_counter`, ``$TINYWARDEN_COUNTER``, ``--counter``). See
``docs/threat-model.md``.

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
in META and appends SIGN. Metadata keys: ``model_id`` (non-empty str), ``version`` (int in [0,
:data:`MAX_VERSION`], 0 while unsigned: any anti-rollback counter, a 64-bit hardware one too, can hold it),
``created_at`` (ISO-8601 UTC), ``training_data_sha256`` (64 lowercase hex digits or null),
``profile`` (target device profile, non-empty str), optional ``rebaseline`` (bool: an operator's order to reset
the adapted baseline to this bundle's reference); other JSON keys are kept as they are.

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
import stat
import struct
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tinywarden.errors import TinywardenError
from tinywarden.fileio import atomic_write

__all__ = [
    "COUNTER_ENV",
    "COUNTER_GROUP",
    "FORMAT_VERSION",
    "MAGIC",
    "SMALL_ORDER_POINTS",
    "Bundle",
    "BundleError",
    "FileCounter",
    "MonotonicCounter",
    "TrustState",
    "check_public_key",
    "create_bundle",
    "fingerprint",
    "generate_key",
    "install_bundle",
    "load_counter",
    "load_installed_bundle",
    "load_private_key",
    "load_public_key",
    "load_verified_bundle",
    "parse_bundle",
    "point_fault",
    "public_key_of",
    "read_file",
    "read_state",
    "sign_bundle",
    "verify_bundle",
    "write_file",
    "write_keypair",
]

MAGIC = b"TWBUNDLE"
FORMAT_VERSION = 1
#: The largest bundle version (2^63 - 1): a signed 64-bit counter, the widest a hardware anti-rollback counter
#: (a TPM's NV counter, an MCU's OTP) commonly offers, holds every version; one typo past it cannot spend the range.
MAX_VERSION = 2**63 - 1
SIGN_DOMAIN = b"tinywarden-bundle-v1\0"
ROTATE_DOMAIN = b"tinywarden-key-rotation-v1\0"
STATE_FILE = "trust.json"
COUNTER_ENV = "TINYWARDEN_COUNTER"
COUNTER_GROUP = "tinywarden.counters"
INSTALLED_FILE = "current.twbundle"
MAX_BUNDLE_BYTES = 256 * 1024 * 1024  # far above any MCU/gateway model; stops a hostile file early
#: A bundle larger than this proves its signature from a constant-size stream before it is read whole
#: (:func:`read_bundle`), so a forged file costs a device no memory; smaller ones are read and checked at once.
STREAM_CHECK_BYTES = 8 * 1024 * 1024
_CHUNK = 1024 * 1024

_HEADER = struct.Struct(">8sH")
_SECTION = struct.Struct(">4sI")
_KEY_LEN = 32
_SIG_LEN = 64
_ORDER = (b"META", b"MODL", b"POLI", b"ROTK", b"SIGN")
_OPTIONAL = {b"ROTK", b"SIGN"}
_HEX64 = re.compile(r"[0-9a-f]{64}")

# Ed25519 point hygiene. A public key or signature R that is a small-order point of edwards25519 lets
# anyone "sign": with A of order <= 8 and S = 0 the verification equation [S]B = R + [k]A holds for a
# fixed share of messages (1/4 for the all-zero key), and OpenSSL's verify does not refuse such keys.
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # order of the prime subgroup; S must be below it
#: The canonical encodings of the 8 points whose order divides 8 (RFC 8032 point encoding, little
#: endian y with the sign of x in the top bit), and the two "x = -0" encodings of the points with x = 0.
SMALL_ORDER_POINTS = frozenset(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # (0, 1): identity
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # (0, -1): order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # (+-sqrt(-1), 0): order 4
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "0100000000000000000000000000000000000000000000000000000000000080",  # identity, x = -0
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",  # order 2, x = -0
    )
)


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
    def rebaseline(self) -> bool:
        """An operator's re-baseline order (metadata ``rebaseline: true``, covered by the signature): the device
        resets its adapted baseline to this bundle's reference when it installs it."""
        return self.metadata.get("rebaseline") is True

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


def point_fault(encoded: bytes) -> str | None:
    """Why a 32-byte Ed25519 point encoding must not be trusted, or ``None`` when it may be.

    Refused: a non-canonical encoding (y >= p; an encoder never writes one, and lenient decoders map
    it onto another point) and the small-order points (:data:`SMALL_ORDER_POINTS`).

    >>> point_fault(bytes(32))
    'a small-order Ed25519 point'
    >>> point_fault(public_key_of(generate_key())) is None
    True
    """
    if len(encoded) != _KEY_LEN:
        return f"{len(encoded)} bytes, not an Ed25519 point ({_KEY_LEN} bytes)"
    if int.from_bytes(encoded, "little") & ((1 << 255) - 1) >= _P:
        return "a non-canonical Ed25519 encoding (y >= p)"
    if encoded in SMALL_ORDER_POINTS:
        return "a small-order Ed25519 point"
    return None


def check_public_key(key: bytes, source: str, what: str = "public key") -> bytes:
    """Return ``key`` if it may be trusted, else raise a one-line :class:`BundleError` naming ``source``.

    Every place a key enters trust calls this: provisioning (:func:`load_public_key`, the ``pubkey``
    of :func:`load_verified_bundle` and :func:`install_bundle`, the state file), rotation and the
    signer field of a bundle.
    """
    fault = point_fault(key)
    if fault is not None:
        raise BundleError(
            f"{source}: {what} {key.hex()[:16]}… is {fault}; signatures for it can be forged "
            "without a private key, refused"
        )
    return key


def _check_signature(sig: bytes, source: str, what: str) -> None:
    """Refuse an Ed25519 signature whose R is a small-order or non-canonical point, or whose S >= L."""
    fault = point_fault(sig[:_KEY_LEN])
    if fault is not None:
        raise BundleError(f"{source}: {what} has R = {fault}, refused")
    if int.from_bytes(sig[_KEY_LEN:], "little") >= _L:
        raise BundleError(f"{source}: {what} has S >= L (non-canonical signature scalar), refused")


def write_keypair(prefix: str | os.PathLike[str], *, force: bool = False) -> tuple[Path, Path]:
    """Write ``PREFIX.key`` (PKCS#8 PEM, mode 0600) and ``PREFIX.pub`` (SubjectPublicKeyInfo PEM)."""
    base = Path(prefix)
    if base.is_dir() or base.name in ("", ".."):  # PREFIX.key would land beside the folder, not in it
        raise BundleError(f"{prefix}: is a folder, not a path prefix; name the key in it, e.g. {base / 'fleet'}")
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
    if not force:
        # each file is only created, never renamed over one that appeared after the check above
        write_file(priv_path, priv_pem, mode=0o600, exclusive=True)
        try:
            write_file(pub_path, pub_pem, mode=0o644, exclusive=True)
        except BundleError:
            priv_path.unlink()  # ours, made just above: no private key without its public half
            raise
        return priv_path, pub_path
    # Replacing a pair: the public half first, put back if the private one cannot be written, so a failure leaves
    # the old pair whole (the old private key is never lost for a new one without its public half).
    try:
        old_pub = pub_path.read_bytes() if pub_path.is_file() else None
    except OSError as exc:
        raise BundleError(f"{pub_path}: cannot read the public key it would replace ({exc.strerror or exc})") from None
    write_file(pub_path, pub_pem, mode=0o644)
    try:
        write_file(priv_path, priv_pem, mode=0o600)
    except BundleError:
        if old_pub is None:
            pub_path.unlink(missing_ok=True)
        else:
            write_file(pub_path, old_pub, mode=0o644)
        raise
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
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return check_public_key(raw, str(path))


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
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= MAX_VERSION:
        raise BundleError(f"{source}: version must be an integer in [1, {MAX_VERSION}] (a 64-bit hardware "
                          f"counter holds it), got {version!r}")
    if rotate_to is not None:
        check_public_key(rotate_to, source, "rotation key")
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
    """Parse and check the signature against ``public_key`` (raw 32 bytes); no rollback check.

    Keys and signatures that are small-order or non-canonical Ed25519 points are refused before the
    signature is checked (see :func:`point_fault`).
    """
    b = parse_bundle(data, source=source)
    if b.signer is None:
        raise BundleError(f"{source}: bundle is not signed (no SIGN section)")
    if b.version < 1:
        raise BundleError(f"{source}: signed bundle has version {b.version}, expected >= 1")
    check_public_key(b.signer, source, "signer key")
    check_public_key(public_key, source, "trusted key")
    if b.signer != public_key:
        raise BundleError(
            f"{source}: signed by key {fingerprint(b.signer)[:16]}…, "
            f"not by the trusted key {fingerprint(public_key)[:16]}…"
        )
    _check_signature(b._signature, source, "signature")
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(
            b._signature, SIGN_DOMAIN + hashlib.sha256(b._signed_prefix).digest()
        )
    except InvalidSignature:
        raise BundleError(
            f"{source}: signature does not match the contents (corrupted or tampered)"
        ) from None
    if b.rotate_to is not None:
        check_public_key(b.rotate_to, source, "rotation key")
        _check_signature(b._rotation_sig, source, "key rotation endorsement")
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                b._rotation_sig, ROTATE_DOMAIN + b.rotate_to
            )
        except InvalidSignature:
            raise BundleError(f"{source}: key rotation endorsement is invalid") from None
    return b


# ---------------------------------------------------------------------------------- rollback counter


class MonotonicCounter(ABC):
    """Where a device keeps its anti-rollback counter: the highest bundle version it has accepted.

    The default, :class:`FileCounter`, is the ``accepted_version`` in ``state_dir/trust.json``, which
    anyone who can write that directory can reset (see ``docs/threat-model.md``). A platform with a
    monotonic counter that software cannot lower (a TPM NV counter, a secure element, eFuses) plugs it
    in by subclassing this and naming the factory (see :func:`load_counter`). Bundle versions below
    :meth:`read` are refused as rollbacks, and so is a different bundle at the same version, even when
    ``trust.json`` has been deleted or edited.

    >>> class Ram(MonotonicCounter):
    ...     name = "ram"
    ...     def __init__(self) -> None:
    ...         self.value = 0
    ...     def read(self) -> int:
    ...         return self.value
    ...     def advance(self, version: int) -> None:
    ...         self.value = max(self.value, version)
    >>> c = Ram(); c.advance(4); c.read()
    4
    """

    #: What messages call the backend ("file", "tpm-nv", ...).
    name: str = "counter"

    @abstractmethod
    def read(self) -> int:
        """The highest version accepted so far, 0 before the first install. Raise on a fault."""

    @abstractmethod
    def advance(self, version: int) -> None:
        """Make :meth:`read` return at least ``version`` (never lower it). Raise on a fault.

        :func:`install_bundle` calls it last, after ``trust.json`` is written, with the version it just
        accepted; a crash before it leaves the counter one install behind, and the next install
        advances it again.
        """


class FileCounter(MonotonicCounter):
    """The default counter: the version recorded in ``state_dir/trust.json`` (no anchor off the file)."""

    name = "file"

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)

    def read(self) -> int:
        state = read_state(self.state_dir)
        return 0 if state is None else state.accepted_version

    def advance(self, version: int) -> None:
        # Writing trust.json, which install_bundle has just done, is this backend's advance.
        if self.read() < version:
            raise BundleError(f"{self.state_dir / STATE_FILE}: does not record version {version} after install")


def load_counter(spec: str | None, state_dir: str | os.PathLike[str]) -> MonotonicCounter:
    """The rollback counter named by ``spec``, else by ``$TINYWARDEN_COUNTER``, else :class:`FileCounter`.

    ``spec`` is ``file``, the name of an entry point in the ``tinywarden.counters`` group, or an object
    reference ``package.module:factory``. The factory is called with ``state_dir`` and returns a
    :class:`MonotonicCounter`. Name the counter where an attacker who can write ``state_dir`` cannot
    change it: the service unit or the read-only root file system.

    >>> load_counter(None, "/nonexistent").name
    'file'
    """
    spec = spec or os.environ.get(COUNTER_ENV) or "file"
    if spec == "file":
        return FileCounter(state_dir)
    import importlib.metadata  # only for a plugin counter: the agent's default path stays light

    found = importlib.metadata.entry_points(group=COUNTER_GROUP, name=spec)
    ep = next(iter(found), None)
    if ep is None:
        if ":" not in spec:
            known = sorted(e.name for e in importlib.metadata.entry_points(group=COUNTER_GROUP))
            raise BundleError(
                f"rollback counter {spec!r}: no entry point of that name in group {COUNTER_GROUP!r} "
                f"(installed: {', '.join(['file', *known])}) and not a module:factory reference"
            )
        ep = importlib.metadata.EntryPoint(name=spec, value=spec, group=COUNTER_GROUP)
    try:
        counter = ep.load()(Path(state_dir))
    except TinywardenError as exc:
        raise BundleError(f"rollback counter {spec!r}: {exc}") from None
    except Exception as exc:  # a plugin's own failure must still be one line naming the plugin
        raise BundleError(f"rollback counter {spec!r}: cannot load ({type(exc).__name__}: {exc})") from None
    if not isinstance(counter, MonotonicCounter):
        raise BundleError(f"rollback counter {spec!r}: factory returned {type(counter).__name__}, "
                          "not a MonotonicCounter")  # fmt: skip
    return counter


def _counter_value(counter: MonotonicCounter, op: str, version: int = 0) -> int:
    """Call the counter (``read`` or ``advance``), turning any fault into a one-line :class:`BundleError`."""
    try:
        if op == "advance":
            counter.advance(version)
        value = counter.read()
    except BundleError:
        raise
    except Exception as exc:  # a platform backend fails closed: no counter, no install
        raise BundleError(
            f"rollback counter {counter.name!r}: {op} failed ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BundleError(f"rollback counter {counter.name!r}: read gave {value!r}, not an integer >= 0")
    if op == "advance" and value < version:
        raise BundleError(f"rollback counter {counter.name!r}: still at {value} after advancing to {version}")
    return value


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
        for k in chain:
            check_public_key(k, str(path), "key_chain entry")
        if d.get("key_fingerprint") != fingerprint(chain[-1]):
            raise ValueError("key_fingerprint does not match the last key of key_chain")
        return TrustState(
            accepted_version=version,
            bundle_sha256=str(d["bundle_sha256"]),
            model_id=str(d["model_id"]),
            key_chain=chain,
            installed_at=str(d["installed_at"]),
        )
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else exc
        raise BundleError(
            f"{path}: trust state is corrupted ({why}); refusing every bundle until it is repaired "
            "(deleting it would reset the anti-rollback counter)"
        ) from None


def load_verified_bundle(
    path: str | os.PathLike[str],
    pubkey: bytes,
    state_dir: str | os.PathLike[str] | None = None,
    *,
    counter: MonotonicCounter | None = None,
) -> Bundle:
    """Load a bundle for use: authentic, signed by the key this device trusts now, not rolled back.

    ``pubkey`` is the device's provisioned key; after rotations it may be any key of the recorded
    chain, and the bundle must be signed by the newest one, except the accepted bundle itself (same
    digest), which stays loadable though a rotation bundle was signed by the previous key. With
    ``state_dir``, a version below the rollback counter (``counter``, default :func:`load_counter`)
    is refused, and so is a bundle at the accepted version that is not the accepted bundle. Raises
    :class:`BundleError`; nothing is written.
    """
    sdir = Path(state_dir) if state_dir is not None else None
    return _verify_for_device(read_bundle(path, _signers(pubkey, sdir)), str(path), pubkey, sdir, counter)


def install_bundle(
    path: str | os.PathLike[str],
    pubkey: bytes,
    state_dir: str | os.PathLike[str],
    *,
    counter: MonotonicCounter | None = None,
    check: Callable[[Bundle], object] | None = None,
) -> tuple[Bundle, TrustState]:
    """Verify, load its model and policy, then keep a copy in ``state_dir`` and accept its version.

    The model and policy are loaded and checked exactly as the agent will run them
    (:func:`tinywarden.payload.load_payload`) before anything is written, so a signed bundle the device
    cannot run never advances the counter nor replaces the current bundle. Installing the accepted
    bundle again is a no-op (it only restores a missing or damaged copy); a different bundle with the
    accepted version is refused. The state is replaced atomically under an exclusive lock, so a crash
    or a concurrent install leaves either the old or the new state, never a mix; the counter is
    advanced last (see :meth:`MonotonicCounter.advance`). ``check`` takes the place of that load when the
    caller has its own way to run the bundle (the agent's native runtime: :mod:`tinywarden.native`); it
    raises a :class:`TinywardenError` for a bundle that cannot run.
    """
    from tinywarden.payload import load_payload  # model and policy code: loaded only by an install

    sdir = Path(state_dir)
    try:
        sdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise BundleError(f"{sdir}: cannot create state directory ({exc})") from None
    check_state_dir(sdir)
    with _locked(sdir):
        counter = counter or load_counter(None, sdir)
        data = read_bundle(path, _signers(pubkey, sdir))  # read once: what is verified is what is copied
        b = _verify_for_device(data, str(path), pubkey, sdir, counter)
        old = read_state(sdir)
        if old is not None and b.digest == old.bundle_sha256:
            copy = sdir / INSTALLED_FILE
            if not copy.is_file() or hashlib.sha256(copy.read_bytes()).hexdigest() != b.digest:
                write_file(copy, data)
            return b, old
        try:
            if check is None:
                load_payload(b.model, b.policy, source=b.source)
            else:
                check(b)
        except TinywardenError as exc:
            raise BundleError(str(exc)) from None
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
        write_file(sdir / INSTALLED_FILE, data)
        write_file(sdir / STATE_FILE, _encode_state(state))
        _counter_value(counter, "advance", b.version)
    return b, state


def load_installed_bundle(
    state_dir: str | os.PathLike[str], pubkey: bytes, *, counter: MonotonicCounter | None = None
) -> Bundle:
    """Load (and verify) the bundle last installed into ``state_dir``."""
    path = Path(state_dir) / INSTALLED_FILE
    if read_state(state_dir) is None:
        raise BundleError(f"{state_dir}: no bundle installed yet")
    b = load_verified_bundle(path, pubkey, state_dir, counter=counter)
    state = read_state(state_dir)
    if state is not None and b.digest != state.bundle_sha256:
        raise BundleError(f"{path}: installed copy does not match the digest recorded in {STATE_FILE}")
    return b


def check_state_dir(state_dir: str | os.PathLike[str]) -> None:
    """Refuse a state directory that another user owns or that others may write (:class:`BundleError`, one line).
    Root may use a folder its service user owns (the unit's ``StateDirectory``), as ``sudo tinywarden install`` does.

    Its ``trust.json`` is the anti-rollback record and ``current.twbundle`` what the agent runs: whoever may write
    the folder can put back an older signed pair, which the agent (it watches ``trust.json``) then swaps to. The
    threat model's local user "cannot write the state directory"; this holds it, as ssh's StrictModes does for
    ``~/.ssh``. A folder that does not exist yet passes (install creates it, mode 0700).
    """
    path = Path(state_dir)
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BundleError(f"{path}: cannot read state directory ({exc.strerror or exc})") from None
    me = os.geteuid()
    if me != 0 and st.st_uid not in (me, 0):  # root may act in the agent user's folder (`sudo tinywarden install`)
        raise BundleError(f"{path}: the state directory belongs to uid {st.st_uid}, not to this user or root; "
                          "whoever owns it can roll the device back to an older bundle")
    if st.st_mode & stat.S_IWOTH:
        raise BundleError(f"{path}: others may write the state directory (mode {stat.S_IMODE(st.st_mode):04o}), so "
                          "any local user could roll the device back to an older bundle; chmod o-w it")


def _verify_for_device(
    data: bytes, source: str, pubkey: bytes, state_dir: Path | None, counter: MonotonicCounter | None
) -> Bundle:
    check_public_key(pubkey, source, "provisioned key")
    if state_dir is not None:
        check_state_dir(state_dir)
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
    if state_dir is None:
        return b
    counter = counter or load_counter(None, state_dir)
    recorded = state.accepted_version if state is not None else 0
    floor = max(recorded, _counter_value(counter, "read"))
    where = "already accepted on this device" if floor == recorded else f"on rollback counter {counter.name!r}"
    if b.version < floor:
        raise BundleError(f"{source}: version {b.version} is older than version {floor} {where} (rollback refused)")
    if b.version == floor:
        if state is None or recorded != floor:
            raise BundleError(
                f"{source}: version {b.version} is {where}, but {STATE_FILE} does not record this bundle at "
                "that version (deleted or edited?); refused, a new bundle needs a higher version"
            )
        if b.digest != state.bundle_sha256:
            raise BundleError(
                f"{source}: version {b.version} is {where} as bundle {state.bundle_sha256[:16]}…, and this "
                "is a different bundle (a new bundle needs a higher version)"
            )
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
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_VERSION:
        raise BundleError(f"{source}: metadata field 'version' must be an integer in [0, {MAX_VERSION}], got {v!r}")
    created = meta.get("created_at")
    try:
        if not isinstance(created, str):
            raise ValueError
        _dt.datetime.fromisoformat(created)
    except ValueError:
        raise BundleError(
            f"{source}: metadata field 'created_at' is not an ISO-8601 time: {created!r}"
        ) from None
    r = meta.get("rebaseline")
    if r is not None and not isinstance(r, bool):
        raise BundleError(f"{source}: metadata field 'rebaseline' must be true or false, got {r!r}")
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


def _signers(pubkey: bytes, state_dir: Path | None) -> tuple[bytes, ...]:
    """Every key a bundle for this device may be signed by: the state's key chain, else the provisioned key."""
    if state_dir is not None:
        check_state_dir(state_dir)  # before anything in it is read
    state = read_state(state_dir) if state_dir is not None else None
    return state.key_chain if state is not None else (pubkey,)


def read_bundle(path: str | os.PathLike[str], signers: Sequence[bytes]) -> bytes:
    """The bytes of the bundle file at ``path``, read once (what is verified is what is used).

    A file over :data:`STREAM_CHECK_BYTES` is first checked from a stream, in constant memory: its last section
    must be a signature by one of ``signers`` over the rest. Only then is it read whole (and checked again, in
    full, by the caller). Without this, a forged file of :data:`MAX_BUNDLE_BYTES` made the reader hold three
    copies of it before the signature was looked at. Raises :class:`BundleError` naming the file.
    """

    def precheck(f: BinaryIO) -> None:
        size = os.fstat(f.fileno()).st_size
        if STREAM_CHECK_BYTES < size <= MAX_BUNDLE_BYTES:
            _check_stream(f, size, signers, str(path))
            f.seek(0)

    return read_file(path, "bundle", precheck)


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 (hex) of the bundle file at ``path``, read as a stream (how :attr:`Bundle.digest` is made);
    :class:`BundleError` naming the file if it cannot be read."""
    try:
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except FileNotFoundError:
        raise BundleError(f"{path}: bundle file not found") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read bundle ({exc.strerror or exc})") from None


def _check_stream(f: BinaryIO, size: int, signers: Sequence[bytes], source: str) -> None:
    """:func:`read_bundle`'s first pass: the trailing SIGN section names a key of ``signers`` and its signature
    holds over the SHA-256 of every byte before it, read in chunks."""
    tail = _SECTION.size + _KEY_LEN + _SIG_LEN
    f.seek(size - tail)
    end = f.read(tail)
    tag, length = _SECTION.unpack_from(end, 0)
    if tag != b"SIGN" or length != _KEY_LEN + _SIG_LEN:
        raise BundleError(f"{source}: {size} bytes that do not end in a signature section; a bundle this large is "
                          "refused unless it is signed")
    signer, sig = end[_SECTION.size : _SECTION.size + _KEY_LEN], end[_SECTION.size + _KEY_LEN :]
    if signer not in signers:
        raise BundleError(f"{source}: signed by key {fingerprint(signer)[:16]}…, not by the trusted key "
                          f"{fingerprint(signers[-1])[:16]}…")
    check_public_key(signer, source, "signer key")
    _check_signature(sig, source, "signature")
    h = hashlib.sha256()
    f.seek(0)
    left = size - tail
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            raise BundleError(f"{source}: truncated while it was being read")
        h.update(chunk)
        left -= len(chunk)
    try:
        Ed25519PublicKey.from_public_bytes(signer).verify(sig, SIGN_DOMAIN + h.digest())
    except InvalidSignature:
        raise BundleError(f"{source}: signature does not match the contents (corrupted or tampered)") from None


def read_file(
    path: str | os.PathLike[str], what: str, precheck: Callable[[BinaryIO], None] | None = None
) -> bytes:
    """Read a whole file (bundle, key, model, policy) or raise a :class:`BundleError` naming it; ``precheck`` sees
    the open file first (and must leave it at its start), as :func:`read_bundle`'s signature check does."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_BUNDLE_BYTES:
                raise BundleError(f"{path}: {what} is larger than {MAX_BUNDLE_BYTES} bytes")
            if precheck is not None:
                precheck(f)
            data = f.read(MAX_BUNDLE_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"{path}: {what} file not found") from None
    except OSError as exc:
        raise BundleError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"{path}: {what} is larger than {MAX_BUNDLE_BYTES} bytes")
    return data


def write_file(path: str | Path, data: bytes, *, mode: int = 0o644, exclusive: bool = False) -> None:
    """Replace ``path`` with ``data`` crash-safely (:func:`tinywarden.fileio.atomic_write`; with ``exclusive``, only
    create it); :class:`BundleError` naming the file if it cannot be written."""
    try:
        atomic_write(path, data, mode=mode, exclusive=exclusive)
    except FileExistsError:
        raise BundleError(f"{path}: already exists (pass --force to overwrite)") from None
    except OSError as exc:
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
