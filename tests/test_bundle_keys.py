"""Ed25519 key and signature hygiene: small-order and non-canonical points never enter trust.

The attack these tests reproduce (issue 12, item 1): a rotation to a small-order public key, endorsed
by the fleet key, used to be accepted; afterwards a bundle "signed" by that key with an all-zero
signature verified for about a quarter of all messages, so varying one metadata field forged a newer
version without any private key.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import struct

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from bundle_fixtures import POLICY, model_bytes
from tinywarden import bundle as tb

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493

# The 8 points of edwards25519 whose order divides 8, in canonical encoding: the identity, the point of
# order 2, the two of order 4 and the four of order 8 (x sign bit clear and set).
SMALL_ORDER = [
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",  # (0, 1), order 1
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  # (0, -1), order 2
        "0000000000000000000000000000000000000000000000000000000000000000",  # (sqrt(-1), 0), order 4
        "0000000000000000000000000000000000000000000000000000000000000080",  # (-sqrt(-1), 0), order 4
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",  # order 8
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",  # order 8
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",  # order 8
    )
]


def _enc(y: int, sign: int = 0) -> bytes:
    return (y | sign << 255).to_bytes(32, "little")


# Encodings that are not canonical but decode (in lenient decoders) to the same small-order points:
# y >= p (y = p is 0, y = p + 1 is 1), and "x = -0" for the two points with x = 0.
NON_CANONICAL = [_enc(P), _enc(P, 1), _enc(P + 1), _enc(P + 1, 1), _enc(1, 1), _enc(P - 1, 1)]

META = {"model_id": "gw", "profile": "rpi", "created_at": "2024-01-01T00:00:00+00:00"}


def forge(model: bytes, version: int, signer: bytes, signature: bytes, nonce: int) -> bytes:
    """A bundle "signed" by ``signer`` with a given signature, no private key involved."""
    unsigned = tb.create_bundle(model, b"", {**META, "nonce": nonce, "version": version})
    return unsigned + b"SIGN" + struct.pack(">I", 96) + signer + signature


def message_of(bundle: bytes) -> bytes:
    return tb.SIGN_DOMAIN + hashlib.sha256(bundle[:-104]).digest()


def library_accepts(key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(signature, message)
    except InvalidSignature:
        return False
    return True


def zero_signature_forgery(version: int) -> bytes:
    """Vary a metadata field until the all-zero signature "verifies" under the all-zero key."""
    for nonce in range(200):
        data = forge(b"evil model", version, bytes(32), bytes(64), nonce)
        if library_accepts(bytes(32), bytes(64), message_of(data)):
            return data
    raise AssertionError("no nonce in 200 gave a forgery; the premise of the attack changed")


def test_the_table_lists_exactly_the_keys_anyone_can_sign_for():
    # Independent of tinywarden: for each listed key A and S = 0, [S]B - [k]A = -[k]A is a small-order
    # point, so some listed R makes the raw library accept (R, 0) within a few messages (k depends on R
    # and the message, and hits R with probability 1/order). For a real key this never happens.
    def forgeable(key: bytes) -> bool:
        return any(library_accepts(key, r + bytes(32), b"m%d" % i) for i in range(32) for r in SMALL_ORDER)

    assert all(forgeable(key) for key in SMALL_ORDER)
    assert not forgeable(tb.public_key_of(tb.generate_key()))
    # The all-zero key and signature alone verify for roughly a quarter of messages.
    hits = sum(library_accepts(bytes(32), bytes(64), b"m%d" % i) for i in range(400))
    assert 50 < hits < 150


def test_the_all_zero_forgery_after_a_rotation_is_refused(tmp_path):
    fleet = tb.generate_key()
    pub, state = tb.public_key_of(fleet), tmp_path / "state"
    (tmp_path / "v1").write_bytes(tb.sign_bundle(tb.create_bundle(model_bytes(), POLICY, META), fleet, version=1))
    tb.install_bundle(tmp_path / "v1", pub, state)
    # The attack step the fleet key holder could be tricked into: a rotation to the zero key.
    with pytest.raises(tb.BundleError, match="small-order"):
        tb.sign_bundle(tb.create_bundle(model_bytes(), POLICY, META), fleet, version=2, rotate_to=bytes(32))
    # Hand-built (bypassing sign_bundle's check): still refused by the device.
    unsigned = tb.create_bundle(model_bytes(), POLICY, {**META, "version": 2})
    rotk = bytes(32) + fleet.sign(tb.ROTATE_DOMAIN + bytes(32))
    rotation = unsigned + b"ROTK" + struct.pack(">I", 96) + rotk
    rotation += b"SIGN" + struct.pack(">I", 96) + pub + fleet.sign(tb.SIGN_DOMAIN + hashlib.sha256(rotation).digest())
    (tmp_path / "rot").write_bytes(rotation)
    before = (state / "trust.json").read_bytes()
    with pytest.raises(tb.BundleError, match="rotation key .*small-order") as err:
        tb.install_bundle(tmp_path / "rot", pub, state)
    assert "\n" not in str(err.value)
    assert (state / "trust.json").read_bytes() == before
    # The forged bundle itself, whatever key the device is told to trust.
    (tmp_path / "forged").write_bytes(zero_signature_forgery(3))
    for trusted in (pub, bytes(32)):
        with pytest.raises(tb.BundleError, match="small-order"):
            tb.install_bundle(tmp_path / "forged", trusted, state)
    assert (state / "trust.json").read_bytes() == before
    assert tb.read_state(state).trusted_key == pub


def test_a_zero_key_smuggled_into_the_state_file_is_refused(tmp_path):
    fleet = tb.generate_key()
    state = tmp_path / "state"
    (tmp_path / "v1").write_bytes(tb.sign_bundle(tb.create_bundle(model_bytes(), POLICY, META), fleet, version=1))
    tb.install_bundle(tmp_path / "v1", tb.public_key_of(fleet), state)
    text = (state / "trust.json").read_text()
    zero, fp = bytes(32), tb.fingerprint(bytes(32))
    real = tb.public_key_of(fleet)
    (state / "trust.json").write_text(
        text.replace(f'"{real.hex()}"', f'"{real.hex()}", "{zero.hex()}"').replace(tb.fingerprint(real), fp)
    )
    with pytest.raises(tb.BundleError, match="small-order"):
        tb.read_state(state)


@pytest.mark.parametrize("key", SMALL_ORDER + NON_CANONICAL, ids=lambda k: k.hex()[:8] + "…" + k.hex()[-2:])
def test_every_small_order_or_non_canonical_key_is_refused_wherever_it_enters_trust(tmp_path, key):
    fleet = tb.generate_key()
    raw = tb.create_bundle(model_bytes(), POLICY, META)
    # rotation, when signing
    with pytest.raises(tb.BundleError, match="small-order|non-canonical"):
        tb.sign_bundle(raw, fleet, version=2, rotate_to=key)
    # provisioning: a PEM public key file, and a raw key handed to the API
    pem = tmp_path / "k.pub"
    pem.write_bytes(
        b"-----BEGIN PUBLIC KEY-----\n"
        + base64.b64encode(bytes.fromhex("302a300506032b6570032100") + key)
        + b"\n-----END PUBLIC KEY-----\n"
    )
    with pytest.raises(tb.BundleError, match=r"k\.pub: .*(small-order|non-canonical)") as err:
        tb.load_public_key(pem)
    assert "\n" not in str(err.value)
    signed = tmp_path / "b"
    signed.write_bytes(tb.sign_bundle(raw, fleet, version=1))
    with pytest.raises(tb.BundleError, match="small-order|non-canonical"):
        tb.install_bundle(signed, key, tmp_path / "state")
    assert not (tmp_path / "state" / "trust.json").exists()
    # the signer field, with every small-order R and S = 0
    for r in SMALL_ORDER:
        with pytest.raises(tb.BundleError, match="small-order|non-canonical"):
            tb.verify_bundle(forge(b"m", 1, key, r + bytes(32), 0), key)


def test_signatures_with_a_small_order_r_or_s_not_below_l_are_refused():
    fleet = tb.generate_key()
    pub = tb.public_key_of(fleet)
    good = tb.sign_bundle(tb.create_bundle(model_bytes(), POLICY, META), fleet, version=1)
    r, s = good[-64:-32], int.from_bytes(good[-32:], "little")
    # S + L is the same scalar mod L; the library refuses it already, and so do we, naming it
    high = good[:-32] + (s + L).to_bytes(32, "little")
    assert not library_accepts(pub, high[-64:], message_of(good))
    with pytest.raises(tb.BundleError, match="S >= L"):
        tb.verify_bundle(high, pub)
    for bad_r in SMALL_ORDER + NON_CANONICAL:
        with pytest.raises(tb.BundleError, match="small-order|non-canonical"):
            tb.verify_bundle(good[:-64] + bad_r + good[-32:], pub)
    assert tb.verify_bundle(good[:-64] + r + good[-32:], pub).version == 1


def test_real_keys_pass_the_check(tmp_path):
    for key in itertools.islice(iter(tb.generate_key, None), 50):
        raw = tb.public_key_of(key)
        assert tb.check_public_key(raw, "k") == raw
    _, pub = tb.write_keypair(tmp_path / "k")
    assert len(tb.load_public_key(pub)) == 32


def test_forgery_against_the_cli_install_is_one_line(tmp_path):
    from test_bundle_cli import tw

    assert tw("keygen", "--out", "fleet", cwd=tmp_path).returncode == 0
    (tmp_path / "forged").write_bytes(zero_signature_forgery(9))
    r = tw("install", "forged", "--pubkey", "fleet.pub", "--state-dir", "st", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "small-order" in r.stderr, r.stderr
    assert not (tmp_path / "st" / "trust.json").exists()
