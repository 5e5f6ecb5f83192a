"""Install loads what it accepts (issue 12, item 2) and the rollback counter hook (item 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bundle_fixtures import POLICY, model_bytes
from test_bundle_cli import tw
from tinywarden import bundle as tb
from tinywarden.payload import load_payload

META = {"model_id": "gw", "profile": "rpi"}
README = b"# tinywarden\n\nOn-device anomaly detection for IoT telemetry.\n"
CSV = b"timestamp,cpu_pct,mem_pct\n0,1.5,20\n10,1.7,21\n"


@pytest.fixture(scope="module")
def key():
    return tb.generate_key()


def bundle(path: Path, key, version: int, model: bytes | None = None, policy: bytes = POLICY) -> Path:
    raw = tb.create_bundle(model_bytes() if model is None else model, policy, META)
    path.write_bytes(tb.sign_bundle(raw, key, version=version))
    return path


def snapshot(state: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(state.iterdir()) if p.is_file()}


# -------------------------------------------------------------------------------- item 2: payload


JUNK = {
    "csv-model-readme-policy": (CSV, README, "model section"),
    "csv-model": (CSV, POLICY, "model section"),
    "readme-policy": (None, README, "policy section"),
    "binary-policy": (None, b"\xff\xfe\x00junk", "policy section.*UTF-8"),
    "truncated-model": (model_bytes()[:-9], POLICY, "model section"),
    "empty-model": (b"", POLICY, "model section"),
}


@pytest.mark.parametrize("case", JUNK, ids=list(JUNK))
def test_a_signed_bundle_with_a_junk_payload_changes_nothing(tmp_path, key, case):
    model, policy, where = JUNK[case]
    pub, state = tb.public_key_of(key), tmp_path / "state"
    good = bundle(tmp_path / "v3", key, 3)
    tb.install_bundle(good, pub, state)
    before = snapshot(state)
    junk = bundle(tmp_path / "junk", key, 9, model, policy)
    with pytest.raises(tb.TinywardenError, match=where) as err:
        tb.install_bundle(junk, pub, state)
    assert "\n" not in str(err.value) and "junk" in str(err.value)
    assert snapshot(state) == before, "a refused install must leave counter and current bundle byte-identical"
    # the device is not locked out: the current bundle loads and a good newer one installs
    assert tb.load_installed_bundle(state, pub).version == 3
    assert tb.install_bundle(bundle(tmp_path / "v4", key, 4), pub, state)[1].accepted_version == 4


def test_install_and_the_agent_share_one_payload_check():
    payload = load_payload(model_bytes(), POLICY, source="b")
    assert payload.pipeline.channels_ == ("c0", "c1") and payload.policy.name == "camera-test"
    # a policy whose tiers cannot compile against the model's threshold is refused too
    bad_margin = POLICY.replace(b"margin = 0.5", b"margin = -1e308")
    with pytest.raises(tb.TinywardenError, match="policy section"):
        load_payload(model_bytes(), bad_margin, source="b")


def test_junk_payload_through_the_cli_is_one_line_and_keeps_state(tmp_path):
    (tmp_path / "m.twb").write_bytes(model_bytes())
    (tmp_path / "p.toml").write_bytes(POLICY)
    (tmp_path / "model.csv").write_bytes(CSV)
    (tmp_path / "README.md").write_bytes(README)
    assert tw("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    tw("bundle", "m.twb", "--policy", "p.toml", "--out", "good", "--model-id", "gw", "--profile", "rpi", cwd=tmp_path)
    r = tw("bundle", "model.csv", "--policy", "README.md", "--out", "junk", "--model-id", "gw", "--profile", "rpi",
           cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "README.md" in r.stderr  # the CLI checks the policy before packing it ...
    (tmp_path / "junk").write_bytes(tb.create_bundle(CSV, README, {"model_id": "gw", "profile": "rpi"}))  # ... a
    # bundle made another way is still checked by install
    for name, version in (("good", "2"), ("junk", "3")):
        assert tw("sign", name, "--key", "k.key", "--version", version, cwd=tmp_path).returncode == 0
    assert tw("install", "good", "--pubkey", "k.pub", "--state-dir", "st", cwd=tmp_path).returncode == 0
    before = snapshot(tmp_path / "st")
    r = tw("install", "junk", "--pubkey", "k.pub", "--state-dir", "st", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "junk (model section)" in r.stderr, r.stderr
    assert snapshot(tmp_path / "st") == before
    # re-installing the accepted bundle is a no-op; the same version re-signed over other content is refused
    r = tw("install", "good", "--pubkey", "k.pub", "--state-dir", "st", cwd=tmp_path)
    assert r.returncode == 0 and "already installed" in r.stdout
    assert snapshot(tmp_path / "st") == before
    tw("bundle", "m.twb", "--policy", "p.toml", "--out", "other", "--model-id", "gw2", "--profile", "rpi",
       cwd=tmp_path)  # fmt: skip
    tw("sign", "other", "--key", "k.key", "--version", "2", cwd=tmp_path)
    r = tw("install", "other", "--pubkey", "k.pub", "--state-dir", "st", cwd=tmp_path)
    assert r.returncode == 2 and "different bundle" in r.stderr, r.stderr
    assert snapshot(tmp_path / "st") == before


def test_reinstalling_the_accepted_bundle_restores_a_lost_copy_only(tmp_path, key):
    pub, state = tb.public_key_of(key), tmp_path / "state"
    good = bundle(tmp_path / "v2", key, 2)
    tb.install_bundle(good, pub, state)
    trust = (state / "trust.json").read_bytes()
    (state / "current.twbundle").write_bytes(b"damaged")
    with pytest.raises(tb.BundleError):
        tb.load_installed_bundle(state, pub)
    tb.install_bundle(good, pub, state)
    assert (state / "trust.json").read_bytes() == trust
    assert tb.load_installed_bundle(state, pub).version == 2


# ------------------------------------------------------------------------------ item 8: counter


class PlatformCounter(tb.MonotonicCounter):
    """Stands in for a TPM NV counter: its count lives outside the state directory and never goes down."""

    name = "test-nv"

    def __init__(self, store: Path) -> None:
        self.store = store

    def read(self) -> int:
        return int(self.store.read_text()) if self.store.exists() else 0

    def advance(self, version: int) -> None:
        self.store.write_text(str(max(self.read(), version)))


def test_a_platform_counter_refuses_rollback_after_trust_json_is_deleted_or_edited(tmp_path, key):
    pub, state = tb.public_key_of(key), tmp_path / "state"
    nv = PlatformCounter(tmp_path / "nv")
    v2, v3, v4 = (bundle(tmp_path / f"v{v}", key, v) for v in (2, 3, 4))
    tb.install_bundle(v3, pub, state, counter=nv)
    assert nv.read() == 3
    (state / "trust.json").unlink()
    with pytest.raises(tb.BundleError, match="version 2 is older than version 3 on rollback counter 'test-nv'"):
        tb.install_bundle(v2, pub, state, counter=nv)
    for same_version in (v3, bundle(tmp_path / "v3b", key, 3, model_bytes(seed=1))):
        with pytest.raises(tb.BundleError, match="version 3 is on rollback counter 'test-nv'.*does not record"):
            tb.install_bundle(same_version, pub, state, counter=nv)
    assert not (state / "trust.json").exists()
    tb.install_bundle(v4, pub, state, counter=nv)
    assert nv.read() == 4
    # an edited trust.json (an older copy put back) cannot lower the floor either
    d = json.loads((state / "trust.json").read_text())
    d["accepted_version"] = 1
    (state / "trust.json").write_text(json.dumps(d))
    with pytest.raises(tb.BundleError, match="rollback refused"):
        tb.load_verified_bundle(v2, pub, state, counter=nv)
    with pytest.raises(tb.BundleError, match="trust.json does not record this bundle"):
        tb.load_installed_bundle(state, pub, counter=nv)


def test_the_file_backend_has_no_anchor_as_documented(tmp_path, key):
    # The limit docs/threat-model.md states: deleting trust.json resets the file counter.
    pub, state = tb.public_key_of(key), tmp_path / "state"
    tb.install_bundle(bundle(tmp_path / "v3", key, 3), pub, state)
    (state / "trust.json").unlink()
    assert tb.install_bundle(bundle(tmp_path / "v2", key, 2), pub, state)[1].accepted_version == 2


def test_a_failing_counter_fails_closed_and_changes_nothing(tmp_path, key):
    class Broken(PlatformCounter):
        def read(self) -> int:
            raise OSError("TPM not responding")

    pub, state = tb.public_key_of(key), tmp_path / "state"
    tb.install_bundle(bundle(tmp_path / "v1", key, 1), pub, state)
    before = snapshot(state)
    with pytest.raises(tb.BundleError, match="rollback counter 'test-nv': read failed .*TPM not responding"):
        tb.install_bundle(bundle(tmp_path / "v2", key, 2), pub, state, counter=Broken(tmp_path / "nv"))
    assert snapshot(state) == before


def test_load_counter_by_env_reference_and_its_errors(tmp_path, monkeypatch):
    assert isinstance(tb.load_counter(None, tmp_path), tb.FileCounter)
    monkeypatch.setenv(tb.COUNTER_ENV, "test_bundle_install:make_counter")
    assert tb.load_counter(None, tmp_path).name == "test-nv"
    assert isinstance(tb.load_counter("file", tmp_path), tb.FileCounter)
    for spec, message in (
        ("no-such-plugin", "no entry point of that name"),
        ("no_such_module:f", "cannot load .*ModuleNotFoundError"),
        ("test_bundle_install:PLATFORM_NOT_A_FACTORY", "cannot load"),
        ("test_bundle_install:snapshot", "cannot load|not a MonotonicCounter"),
    ):
        with pytest.raises(tb.BundleError, match=message) as err:
            tb.load_counter(spec, tmp_path)
        assert "\n" not in str(err.value)


def make_counter(state_dir: Path) -> PlatformCounter:
    """A factory as a plugin would provide it; the count lives beside, not inside, the state directory."""
    return PlatformCounter(state_dir.parent / f"{state_dir.name}.nv")


PLATFORM_NOT_A_FACTORY = 42


def test_counter_option_through_the_cli(tmp_path):
    (tmp_path / "nvplugin.py").write_text(
        "from pathlib import Path\n"
        "from tinywarden.bundle import MonotonicCounter\n"
        "class NV(MonotonicCounter):\n"
        "    name = 'nv'\n"
        "    def __init__(self, d):\n"
        "        self.p = Path(d).parent / 'nv.count'\n"
        "    def read(self):\n"
        "        return int(self.p.read_text()) if self.p.exists() else 0\n"
        "    def advance(self, v):\n"
        "        self.p.write_text(str(max(self.read(), v)))\n"
    )
    (tmp_path / "m.twb").write_bytes(model_bytes())
    (tmp_path / "p.toml").write_bytes(POLICY)
    assert tw("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    tw("bundle", "m.twb", "--policy", "p.toml", "--out", "b", "--model-id", "gw", "--profile", "rpi", cwd=tmp_path)
    for v in ("2", "3"):
        tw("sign", "b", "--key", "k.key", "--version", v, "--out", f"v{v}", cwd=tmp_path)
    opts = ["--pubkey", "k.pub", "--state-dir", "st", "--counter", "nvplugin:NV"]

    def tw_plugin(*args: str) -> subprocess.CompletedProcess[str]:  # a real process, the plugin on its path
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
        return subprocess.run([sys.executable, "-m", "tinywarden", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)  # fmt: skip

    assert tw_plugin("install", "v3", *opts).returncode == 0
    assert (tmp_path / "nv.count").read_text() == "3"
    (tmp_path / "st" / "trust.json").unlink()
    r = tw_plugin("install", "v2", *opts)
    assert r.returncode == 2 and "rollback counter 'nv'" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    r = tw_plugin("verify", "v2", *opts)
    assert r.returncode == 2 and "rollback refused" in r.stderr
    r = tw("install", "v2", "--pubkey", "k.pub", "--state-dir", "st", "--counter", "nope", cwd=tmp_path)
    assert r.returncode == 2 and "no entry point" in r.stderr


def test_the_environment_names_the_counter_for_callers_that_pass_none(tmp_path, key, monkeypatch):
    # The agent calls install/load without a counter; $TINYWARDEN_COUNTER reaches it that way.
    monkeypatch.setenv(tb.COUNTER_ENV, "test_bundle_install:make_counter")
    pub, state = tb.public_key_of(key), tmp_path / "state"
    tb.install_bundle(bundle(tmp_path / "v3", key, 3), pub, state)
    assert (tmp_path / "state.nv").read_text() == "3"
    (state / "trust.json").unlink()
    with pytest.raises(tb.BundleError, match="rollback counter 'test-nv'"):
        tb.load_verified_bundle(bundle(tmp_path / "v2", key, 2), pub, state)
