"""The trust commands end to end, through the ``tinywarden`` entry point (in this process: tests/inprocess.py)."""

from __future__ import annotations

import json

from bundle_fixtures import POLICY, model_bytes
from conftest import CAPPED_CAMERA_POLICY
from inprocess import run_tinywarden as tw


def test_keygen_bundle_sign_verify_install_and_refusals(tmp_path):
    (tmp_path / "m.twb").write_bytes(model_bytes())
    (tmp_path / "p.toml").write_bytes(POLICY)
    (tmp_path / "data.json").write_text('{"rows": 100}')
    assert tw("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    assert tw("keygen", "--out", "k2", cwd=tmp_path).returncode == 0
    r = tw("bundle", "m.twb", "--policy", "p.toml", "--out", "b", "--model-id", "gw1", "--profile", "rpi",
           "--data", "data.json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr

    r = tw("verify", "b", "--pubkey", "k.pub", cwd=tmp_path)
    assert r.returncode == 2 and "not signed" in r.stderr and "Traceback" not in r.stderr

    assert tw("sign", "b", "--key", "k.key", "--version", "3", cwd=tmp_path).returncode == 0
    r = tw("verify", "b", "--pubkey", "k.pub", cwd=tmp_path)
    assert r.returncode == 0 and "gw1" in r.stdout
    assert tw("verify", "b", "--pubkey", "k2.pub", cwd=tmp_path).returncode == 2

    r = tw("install", "b", "--pubkey", "k.pub", "--state-dir", "st", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "st" / "trust.json").read_text())["accepted_version"] == 3

    assert tw("sign", "b", "--key", "k.key", "--version", "2", "--out", "old", cwd=tmp_path).returncode == 0
    assert tw("verify", "old", "--pubkey", "k.pub", cwd=tmp_path).returncode == 0
    r = tw("verify", "old", "--pubkey", "k.pub", "--state-dir", "st", cwd=tmp_path)
    assert r.returncode == 2 and "rollback refused" in r.stderr

    data = bytearray((tmp_path / "b").read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "flip").write_bytes(bytes(data))
    r = tw("install", "flip", "--pubkey", "k.pub", "--state-dir", "st", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert json.loads((tmp_path / "st" / "trust.json").read_text())["accepted_version"] == 3


def test_rotation_through_the_cli(tmp_path):
    (tmp_path / "m").write_bytes(model_bytes())
    (tmp_path / "p").write_bytes(POLICY)
    for prefix in ("old", "new"):
        assert tw("keygen", "--out", prefix, cwd=tmp_path).returncode == 0
    tw("bundle", "m", "--policy", "p", "--out", "b", "--model-id", "x", "--profile", "y", cwd=tmp_path)
    r = tw("sign", "b", "--key", "old.key", "--version", "1", "--rotate-to", "new.pub", "--out", "rot",
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert tw("install", "rot", "--pubkey", "old.pub", "--state-dir", "st", cwd=tmp_path).returncode == 0
    tw("sign", "b", "--key", "old.key", "--version", "2", "--out", "by_old", cwd=tmp_path)
    tw("sign", "b", "--key", "new.key", "--version", "2", "--out", "by_new", cwd=tmp_path)
    assert tw("verify", "by_old", "--pubkey", "old.pub", "--state-dir", "st", cwd=tmp_path).returncode == 2
    assert tw("verify", "by_new", "--pubkey", "old.pub", "--state-dir", "st", cwd=tmp_path).returncode == 0


def test_bundle_checks_the_policy_before_packing_it(tmp_path):
    # it packed any bytes: a policy every device refuses could be signed and shipped, found only at install
    (tmp_path / "m").write_bytes(model_bytes())
    (tmp_path / "bad.toml").write_text(POLICY.decode().replace('type = "log"', 'type = "nuke"', 1))
    r = tw("bundle", "m", "--policy", "bad.toml", "--out", "b", "--model-id", "x", "--profile", "y", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "bad.toml" in r.stderr, r.stderr
    assert not (tmp_path / "b").exists()
    (tmp_path / "latin1.toml").write_bytes(POLICY.replace(b'name = "', b'name = "\xe9', 1))
    r = tw("bundle", "m", "--policy", "latin1.toml", "--out", "b", "--model-id", "x", "--profile", "y", cwd=tmp_path)
    assert r.returncode == 2 and "not UTF-8" in r.stderr and not (tmp_path / "b").exists(), r.stderr


def test_bundle_and_install_pass_on_the_policy_advice(tmp_path):
    (tmp_path / "m").write_bytes(model_bytes())
    (tmp_path / "plain.toml").write_bytes(POLICY)
    (tmp_path / "capped.toml").write_text(CAPPED_CAMERA_POLICY)
    assert tw("keygen", "--out", "k", cwd=tmp_path).returncode == 0
    r = tw("bundle", "m", "--policy", "plain.toml", "--out", "b0", "--model-id", "x", "--profile", "y", cwd=tmp_path)
    assert r.returncode == 0 and "advice" not in r.stderr, r.stderr
    r = tw("bundle", "m", "--policy", "capped.toml", "--out", "b", "--model-id", "x", "--profile", "y", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "b").exists(), r.stderr  # advice, not a refusal
    assert "advice: capped.toml: tiers.alert.actions: cap (tc_rate_limit) reshapes" in r.stderr, r.stderr
    assert tw("sign", "b", "--key", "k.key", "--version", "1", cwd=tmp_path).returncode == 0
    r = tw("install", "b", "--pubkey", "k.pub", "--state-dir", "st", cwd=tmp_path)
    assert r.returncode == 0 and "tiers.alert.actions: cap (tc_rate_limit) reshapes" in r.stderr, r.stderr


def test_bundle_checks_the_model_before_packing_it(tmp_path):
    # it packed any bytes as the model (a CSV, a policy): every device refuses such a bundle, found only at install
    (tmp_path / "p.toml").write_bytes(POLICY)
    (tmp_path / "data.csv").write_text("timestamp,cpu\n0,1\n")
    for model in ("data.csv", "p.toml"):
        r = tw("bundle", model, "--policy", "p.toml", "--out", "b", "--model-id", "x", "--profile", "y", cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "not a tinywarden model file" in r.stderr and model in r.stderr, r.stderr
        assert not (tmp_path / "b").exists()


def test_paths_holding_markup_are_shown_as_they_are(tmp_path):
    """stdout lines that show a path went through rich markup: ``keygen --out 'keys[/]k'`` wrote the keys and then
    died with a MarkupError traceback, and a path holding ``[bold]`` was reported without those characters. They go
    through cli.app.show, say's stdout twin, as text."""
    (tmp_path / "keys[").mkdir()
    r = tw("keygen", "--out", "keys[/]k", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "wrote keys[/]k.key (keep secret) and keys[/]k.pub;" in r.stdout and "Traceback" not in r.stderr
    r = tw("keygen", "--out", "[bold]k", cwd=tmp_path)
    assert r.returncode == 0 and "wrote [bold]k.key (keep secret) and [bold]k.pub;" in r.stdout, r.stdout
    assert (tmp_path / "[bold]k.key").exists()
