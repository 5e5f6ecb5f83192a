"""Signed bundles: encoding, tamper detection, anti-rollback state and key rotation."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bundle_fixtures import POLICY, model_bytes
from tinywarden import bundle as tb
from tinywarden.errors import TinywardenError

TINY = {"model": b"\x00model-bytes\xff", "policy": b"[tier.alert]\n"}  # for byte-level tests: verify only
META = {"model_id": "gw-ewma", "profile": "rpi-gateway", "training_data_sha256": "ab" * 32}


@pytest.fixture(scope="module")
def k1():
    return tb.generate_key()


@pytest.fixture(scope="module")
def k2():
    return tb.generate_key()


def signed(key, version: int, model: bytes | None = None, policy: bytes = POLICY, **kw) -> bytes:
    """A signed bundle with a real model (install loads it) unless ``model`` is given."""
    raw = tb.create_bundle(model_bytes() if model is None else model, policy, META)
    return tb.sign_bundle(raw, key, version=version, **kw)


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_round_trip_keeps_every_field(k1):
    b = tb.verify_bundle(signed(k1, 7, b"\x00model-bytes\xff", b"[tier.alert]\n"), tb.public_key_of(k1))
    assert b.model == b"\x00model-bytes\xff"
    assert b.policy == b"[tier.alert]\n"
    assert (b.model_id, b.version, b.profile) == ("gw-ewma", 7, "rpi-gateway")
    assert b.metadata["training_data_sha256"] == "ab" * 32
    assert b.signer == tb.public_key_of(k1)
    assert b.rotate_to is None


def test_encoding_is_deterministic_and_documented_layout(k1):
    raw = tb.create_bundle(b"M", b"P", {**META, "created_at": "2024-01-01T00:00:00+00:00"})
    assert raw == tb.create_bundle(b"M", b"P", {**META, "created_at": "2024-01-01T00:00:00+00:00"})
    assert raw[:8] == b"TWBUNDLE" and struct.unpack(">H", raw[8:10]) == (1,)
    tag, n = struct.unpack(">4sI", raw[10:18])
    assert tag == b"META"
    assert json.loads(raw[18 : 18 + n]) == {**META, "created_at": "2024-01-01T00:00:00+00:00", "version": 0}
    s = tb.sign_bundle(raw, k1, version=1)
    assert s[-104:-96] == b"SIGN" + struct.pack(">I", 96)


def test_every_single_bit_flip_is_refused(k1):
    data = signed(k1, 3, **TINY)
    pub = tb.public_key_of(k1)
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(tb.BundleError):
                tb.verify_bundle(bytes(bad), pub)


def test_every_truncation_and_any_trailing_byte_is_refused(k1):
    data = signed(k1, 3, **TINY)
    pub = tb.public_key_of(k1)
    for n in range(len(data)):
        with pytest.raises(tb.BundleError):
            tb.verify_bundle(data[:n], pub)
    with pytest.raises(tb.BundleError, match="after the signature"):
        tb.verify_bundle(data + b"\x00", pub)


def test_wrong_key_and_missing_signature_are_refused(k1, k2):
    with pytest.raises(tb.BundleError, match="not by the trusted key"):
        tb.verify_bundle(signed(k1, 1), tb.public_key_of(k2))
    raw = tb.create_bundle(b"m", b"p", META)
    with pytest.raises(tb.BundleError, match="not signed"):
        tb.verify_bundle(raw, tb.public_key_of(k1))


def test_signature_from_another_key_with_the_trusted_key_spliced_in_is_refused(k1, k2):
    data = bytearray(signed(k2, 1))
    data[-96:-64] = tb.public_key_of(k1)  # claim to be k1, keep k2's signature
    with pytest.raises(tb.BundleError, match="signature does not match"):
        tb.verify_bundle(bytes(data), tb.public_key_of(k1))


def test_resigning_replaces_version_and_signature(k1, k2):
    first = signed(k1, 1)
    again = tb.sign_bundle(first, k2, version=5)
    b = tb.verify_bundle(again, tb.public_key_of(k2))
    assert b.version == 5
    assert b.model == tb.parse_bundle(first).model


@pytest.mark.parametrize("version", [0, -1, True, 1.5, 2**63, 10**23])
def test_sign_refuses_bad_versions(k1, version):
    # 2**63 and 10**23 were signed and installed: one typo spent the version space, and no 64-bit hardware counter
    # could hold it
    with pytest.raises(tb.BundleError, match=r"version must be an integer in \[1, 9223372036854775807\]"):
        tb.sign_bundle(tb.create_bundle(b"m", b"p", META), k1, version=version)
    largest = tb.sign_bundle(tb.create_bundle(b"m", b"p", META), k1, version=2**63 - 1)
    assert tb.parse_bundle(largest).version == 2**63 - 1


def test_a_signed_bundle_past_the_largest_version_is_refused_on_verify(k1, monkeypatch):
    monkeypatch.setattr(tb, "MAX_VERSION", 2**64)  # a signer without the bound
    data = tb.sign_bundle(tb.create_bundle(b"m", b"p", META), k1, version=2**63)
    monkeypatch.undo()
    with pytest.raises(tb.BundleError, match=r"'version' must be an integer in \[0, 9223372036854775807\]"):
        tb.verify_bundle(data, tb.public_key_of(k1))


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"profile": "p"}, "model_id"),
        ({"model_id": "", "profile": "p"}, "model_id"),
        ({"model_id": "m"}, "profile"),
        ({"model_id": "m", "profile": "p", "created_at": "yesterday"}, "created_at"),
        ({"model_id": "m", "profile": "p", "training_data_sha256": "xyz"}, "training_data_sha256"),
        ({"model_id": "m", "profile": "p", "version": -2}, "version"),
    ],
)
def test_create_refuses_bad_metadata_naming_the_field(meta, field):
    with pytest.raises(tb.BundleError, match=field):
        tb.create_bundle(b"m", b"p", meta)


def test_non_canonical_metadata_is_refused(k1):
    raw = tb.create_bundle(b"m", b"p", META)
    n = struct.unpack(">I", raw[14:18])[0]
    meta = json.loads(raw[18 : 18 + n])
    pretty = json.dumps(meta, indent=1).encode()  # same content, other whitespace
    forged = raw[:14] + struct.pack(">I", len(pretty)) + pretty + raw[18 + n :]
    with pytest.raises(tb.BundleError, match="canonical"):
        tb.parse_bundle(forged)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_never_crash_the_parser(data):
    with contextlib.suppress(tb.BundleError):  # structurally valid input may parse; nothing else may escape
        tb.parse_bundle(tb.MAGIC + b"\x00\x01" + data)
    with pytest.raises(tb.BundleError):
        tb.parse_bundle(data[:7])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_random_splices_of_a_valid_bundle_are_refused(k1, data):
    good = signed(k1, 2, **TINY)
    i = data.draw(st.integers(0, len(good) - 1))
    j = data.draw(st.integers(i, len(good)))
    junk = data.draw(st.binary(max_size=40))
    bad = good[:i] + junk + good[j:]
    if bad == good:
        return
    with pytest.raises(tb.BundleError):
        tb.verify_bundle(bad, tb.public_key_of(k1))


# ---------------------------------------------------------------------------------- device state


def test_install_records_version_and_refuses_rollback_leaving_state_untouched(tmp_path, k1):
    pub, state = tb.public_key_of(k1), tmp_path / "state"
    b, s = tb.install_bundle(write(tmp_path, "v5", signed(k1, 5)), pub, state)
    assert s.accepted_version == 5 and tb.read_state(state).accepted_version == 5
    before = (state / "trust.json").read_bytes()
    with pytest.raises(tb.BundleError, match="version 4 is older than version 5"):
        tb.install_bundle(write(tmp_path, "v4", signed(k1, 4)), pub, state)
    assert (state / "trust.json").read_bytes() == before
    assert tb.load_installed_bundle(state, pub).digest == b.digest
    # the accepted bundle itself loads, and installing it again changes nothing
    assert tb.load_verified_bundle(tmp_path / "v5", pub, state).version == 5
    assert tb.install_bundle(tmp_path / "v5", pub, state)[1] == s
    assert (state / "trust.json").read_bytes() == before
    # a different bundle signed with the accepted version is refused (issue 12, item 2)
    other = write(tmp_path, "v5b", signed(k1, 5, model_bytes(seed=1)))
    for op in (tb.load_verified_bundle, tb.install_bundle):
        with pytest.raises(tb.BundleError, match="version 5 is already accepted .* different bundle"):
            op(other, pub, state)
    assert (state / "trust.json").read_bytes() == before
    tb.install_bundle(write(tmp_path, "v6", signed(k1, 6)), pub, state)
    assert tb.read_state(state).accepted_version == 6
    assert sorted(p.name for p in state.iterdir()) == [".lock", "current.twbundle", "trust.json"]


def test_refused_install_keeps_the_current_bundle_loadable(tmp_path, k1, k2):
    pub, state = tb.public_key_of(k1), tmp_path / "state"
    tb.install_bundle(write(tmp_path, "v3", signed(k1, 3)), pub, state)
    current = tb.load_installed_bundle(state, pub)
    bad = bytearray(signed(k1, 9))
    bad[40] ^= 0x10
    for path in (write(tmp_path, "flip", bytes(bad)), write(tmp_path, "k2", signed(k2, 9))):
        with pytest.raises(tb.BundleError):
            tb.install_bundle(path, pub, state)
    assert tb.load_installed_bundle(state, pub) == current


def test_corrupted_state_refuses_everything_and_is_not_overwritten(tmp_path, k1):
    pub, state = tb.public_key_of(k1), tmp_path / "state"
    tb.install_bundle(write(tmp_path, "v3", signed(k1, 3)), pub, state)
    (state / "trust.json").write_text('{"format": 1, "accepted_version": "three"')
    with pytest.raises(tb.BundleError, match="trust state is corrupted"):
        tb.install_bundle(write(tmp_path, "v9", signed(k1, 9)), pub, state)
    assert (state / "trust.json").read_text() == '{"format": 1, "accepted_version": "three"'


@pytest.mark.parametrize("text", ["[" * 100_000, '{"format": 1, "accepted_version": 1e400}'], ids=["nested", "1e400"])
def test_a_state_nested_too_deeply_or_out_of_range_is_corrupted_not_a_traceback(tmp_path, k1, text):
    """json.loads raised RecursionError on deep nesting, which read_state let out: install, the agent's start
    and its bundle poll died with a traceback instead of refusing in one line."""
    pub, state = tb.public_key_of(k1), tmp_path / "state"
    tb.install_bundle(write(tmp_path, "v3", signed(k1, 3)), pub, state)
    (state / "trust.json").write_text(text)
    with pytest.raises(tb.BundleError, match="trust state is corrupted") as info:
        tb.install_bundle(write(tmp_path, "v9", signed(k1, 9)), pub, state)
    assert "\n" not in str(info.value) and len(str(info.value)) < 400
    assert (state / "trust.json").read_text() == text


def test_state_with_a_tampered_key_chain_is_refused(tmp_path, k1, k2):
    pub, state = tb.public_key_of(k1), tmp_path / "state"
    tb.install_bundle(write(tmp_path, "v3", signed(k1, 3)), pub, state)
    d = json.loads((state / "trust.json").read_text())
    d["key_chain"] = [tb.public_key_of(k2).hex()]  # swapped key, fingerprint left as it was
    (state / "trust.json").write_text(json.dumps(d))
    with pytest.raises(tb.BundleError, match="key_fingerprint"):
        tb.read_state(state)


def test_key_rotation_hands_trust_to_the_new_key(tmp_path, k1, k2):
    old, new, state = tb.public_key_of(k1), tb.public_key_of(k2), tmp_path / "state"
    tb.install_bundle(write(tmp_path, "v1", signed(k1, 1)), old, state)
    rot = write(tmp_path, "rot", signed(k1, 2, rotate_to=new))
    b, s = tb.install_bundle(rot, old, state)
    assert b.rotate_to == new and s.trusted_key == new and s.key_chain == (old, new)
    # the rotation bundle itself stays loadable; the old key cannot sign anything newer
    assert tb.load_installed_bundle(state, old).version == 2
    with pytest.raises(tb.BundleError, match="not by the trusted key"):
        tb.load_verified_bundle(write(tmp_path, "old3", signed(k1, 3)), old, state)
    # bundles from the new key load whether the operator names the provisioned or the new key
    new3 = write(tmp_path, "new3", signed(k2, 3))
    assert tb.load_verified_bundle(new3, old, state).version == 3
    assert tb.load_verified_bundle(new3, new, state).version == 3
    stranger = tb.public_key_of(tb.generate_key())
    with pytest.raises(tb.BundleError, match="not in this device's key chain"):
        tb.load_verified_bundle(new3, stranger, state)


def test_rotation_endorsement_must_come_from_the_signer(k1, k2):
    data = bytearray(signed(k1, 2, rotate_to=tb.public_key_of(k2)))
    # forge: keep the bundle signature valid by re-signing, but with a bogus endorsement inside
    b = tb.parse_bundle(bytes(data))
    bogus = b.rotate_to + bytes(64)
    unsigned = bytes(data[: len(data) - 104 - 104]) + b"ROTK" + struct.pack(">I", 96) + bogus
    sig = k1.sign(tb.SIGN_DOMAIN + hashlib.sha256(unsigned).digest())
    forged = unsigned + b"SIGN" + struct.pack(">I", 96) + tb.public_key_of(k1) + sig
    with pytest.raises(tb.BundleError, match="rotation endorsement"):
        tb.verify_bundle(forged, tb.public_key_of(k1))


def test_missing_files_and_bad_keys_give_clear_errors(tmp_path, k1):
    with pytest.raises(tb.BundleError, match="not found"):
        tb.load_verified_bundle(tmp_path / "nope", tb.public_key_of(k1))
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(tb.BundleError, match="junk.pub: not a PEM public key"):
        tb.load_public_key(tmp_path / "junk.pub")
    priv, pub = tb.write_keypair(tmp_path / "dev")
    assert tb.load_public_key(pub) == tb.public_key_of(tb.load_private_key(priv))
    assert priv.stat().st_mode & 0o077 == 0
    with pytest.raises(tb.BundleError, match="already exists"):
        tb.write_keypair(tmp_path / "dev")
    with pytest.raises(tb.BundleError, match="dev.pub: not an unencrypted PEM private key"):
        tb.load_private_key(pub)
    assert issubclass(tb.BundleError, TinywardenError)


def test_keygen_never_replaces_a_key_that_appears_while_it_runs(tmp_path, monkeypatch):
    # write_keypair checked that PREFIX.key was absent, then renamed its new key over whatever was there by then:
    # a key another keygen (or the operator) wrote meanwhile was silently replaced
    real = tb.generate_key

    def racing() -> Ed25519PrivateKey:
        (tmp_path / "dev.key").write_text("someone else's key\n")
        return real()

    monkeypatch.setattr(tb, "generate_key", racing)
    with pytest.raises(tb.BundleError, match=r"dev\.key: already exists"):
        tb.write_keypair(tmp_path / "dev")
    assert (tmp_path / "dev.key").read_text() == "someone else's key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.key"]  # no new .pub without its .key, no temp file




@pytest.mark.parametrize("failing", [".key", ".pub"])
def test_keygen_force_that_fails_halfway_leaves_the_old_pair_whole(tmp_path, monkeypatch, failing):
    # --force replaced the private key first: a public key that could not be written then left a new private key
    # beside the old public one, and the old private key was gone
    old_priv, old_pub = tb.write_keypair(tmp_path / "dev")
    before = (old_priv.read_bytes(), old_pub.read_bytes())
    real = tb.write_file

    def write_file(path, data, **kw):  # noqa: ANN001, ANN003, ANN202
        if str(path).endswith(failing):
            raise tb.BundleError(f"{path}: cannot write (No space left on device)")
        return real(path, data, **kw)

    monkeypatch.setattr(tb, "write_file", write_file)
    with pytest.raises(tb.BundleError, match="No space left"):
        tb.write_keypair(tmp_path / "dev", force=True)
    assert (old_priv.read_bytes(), old_pub.read_bytes()) == before
    assert tb.public_key_of(tb.load_private_key(old_priv)) == tb.load_public_key(old_pub)

def test_keygen_refuses_a_folder_as_the_prefix(tmp_path):
    # `keygen --out keys/` wrote keys.key and keys.pub beside the folder, not in it
    (tmp_path / "keys").mkdir()
    with pytest.raises(tb.BundleError, match=r"keys: is a folder"):
        tb.write_keypair(tmp_path / "keys")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]
    assert list((tmp_path / "keys").iterdir()) == []


def _large_forgery(tmp_path: Path, signer: bytes, signature: bytes, model_mib: int = 64) -> Path:
    """A well-formed bundle of ``model_mib`` MiB whose SIGN section names ``signer`` (a public key: anyone can
    write it there) with ``signature``, made over something else (any bundle ever published has one). The model
    section is a hole, so writing it is cheap."""
    meta = tb._canonical_json({"model_id": "m", "profile": "p", "version": 9, "created_at": "2026-01-01T00:00:00"})
    size = model_mib * 2**20
    path = tmp_path / "big.twbundle"
    with open(path, "wb") as f:
        f.write(tb._HEADER.pack(tb.MAGIC, tb.FORMAT_VERSION) + tb._SECTION.pack(b"META", len(meta)) + meta)
        f.write(tb._SECTION.pack(b"MODL", size))
        f.seek(size, 1)
        f.write(tb._SECTION.pack(b"POLI", 0) + tb._SECTION.pack(b"SIGN", 96) + signer + signature)
    return path


@pytest.mark.parametrize("how", ["load", "install"])
def test_a_large_bundle_with_a_forged_signature_is_refused_without_holding_it_in_memory(tmp_path, k1, how):
    """Anyone who can drop a file where the agent looks for bundles (the update channel: the network attacker)
    made it hold the file three times over before the signature was checked (the file, the model section and
    the signed prefix: 777 MB peak for a 250 MB file), so the agent was OOM-killed, and again at each restart.
    A bundle over 8 MiB now proves its signature from a constant-size stream before it is read whole."""
    import tracemalloc

    pub, state = tb.public_key_of(k1), tmp_path / "state"
    tb.install_bundle(write(tmp_path, "v3", signed(k1, 3)), pub, state)
    path = _large_forgery(tmp_path, pub, k1.sign(b"a published bundle"))
    tracemalloc.start()
    try:
        with pytest.raises(tb.BundleError, match="signature does not match") as info:
            if how == "load":
                tb.load_verified_bundle(path, pub, state)
            else:
                tb.install_bundle(path, pub, state)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 64 MiB forgery"
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert tb.read_state(state).accepted_version == 3


def test_a_large_bundle_signed_by_a_key_this_device_does_not_trust_is_refused_as_before(tmp_path, k1, k2):
    pub = tb.public_key_of(k1)
    path = _large_forgery(tmp_path, tb.public_key_of(k2), k2.sign(b"x"), model_mib=16)
    with pytest.raises(tb.BundleError, match="not by the trusted key"):
        tb.load_verified_bundle(path, pub, tmp_path / "state")


def test_a_large_genuine_bundle_still_verifies(tmp_path, k1):
    pub = tb.public_key_of(k1)
    data = signed(k1, 4, model=b"\0" * (9 * 2**20))
    b = tb.load_verified_bundle(write(tmp_path, "big", data), pub, tmp_path / "state")
    assert b.version == 4 and len(b.model) == 9 * 2**20 and b.digest == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o757])
def test_a_state_directory_others_can_write_is_refused(tmp_path, k1, mode):
    """trust.json is the anti-rollback record and current.twbundle what the agent runs: in a folder anyone may
    write (``--state-dir /tmp/tw``), any local user replaced both with an older signed pair and the agent, which
    watches trust.json, swapped to it. Refused in one line, as the native cache and the audit key's folder are."""
    pub, state = tb.public_key_of(k1), tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    with pytest.raises(tb.BundleError, match=r"state.*others may write.*chmod o-w") as info:
        tb.install_bundle(write(tmp_path, "v3", signed(k1, 3)), pub, state)
    assert "\n" not in str(info.value) and not (state / "trust.json").exists()
    with pytest.raises(tb.BundleError, match="others may write"):
        tb.load_verified_bundle(write(tmp_path, "v3", signed(k1, 3)), pub, state)


def test_a_state_directory_another_user_owns_is_refused_except_to_root(tmp_path, k1, monkeypatch):
    pub, state = tb.public_key_of(k1), tmp_path / "state"
    tb.install_bundle(write(tmp_path, "v3", signed(k1, 3)), pub, state)
    if os.geteuid() != 0:
        pytest.skip("needs root to give the folder away")
    os.chown(state, 4242, -1)
    assert tb.load_installed_bundle(state, pub).version == 3  # root in the service user's folder: sudo install
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # another unprivileged user
    with pytest.raises(tb.BundleError, match="belongs to uid 4242"):
        tb.load_installed_bundle(state, pub)


def test_a_new_state_directory_is_made_for_this_user_alone(tmp_path, k1):
    state = tmp_path / "new" / "state"
    tb.install_bundle(write(tmp_path, "v3", signed(k1, 3)), tb.public_key_of(k1), state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
