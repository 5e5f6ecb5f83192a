"""``tinywarden agent`` through the real entry point: replay to a real broker, live sampling of this host,
and one-line errors (exit 2) for bundles, policies and telemetry it cannot use."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import CAPPED_CAMERA_POLICY
from inprocess import run_tinywarden
from mosquitto import Mosquitto
from test_agent import CRITICAL_POLICY, POLICY, Kit, build_kit
from test_escalate_mqtt import Subscriber
from tinywarden import bundle as tb
from tinywarden.agent.status import read_status
from tinywarden.audit import verify
from tinywarden.cli import main
from tinywarden.detectors import make_detector
from tinywarden.modelfile import pipeline_to_bytes, save_pipeline
from tinywarden.pipeline import Pipeline
from tinywarden.telemetry import Series, write_csv
from tinywarden.telemetry.live import LiveSampler


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tinywarden", "agent", *map(str, args)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def run_here(monkeypatch, capsys, *args: str | Path) -> tuple[int, str]:
    """The same entry point in this process (exit status, stderr): cheaper for the error cases."""
    monkeypatch.setattr(sys, "argv", ["tinywarden", "agent", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return int(exit_.value.code or 0), capsys.readouterr().err


@pytest.fixture(scope="module")
def kit() -> Kit:
    return build_kit()


@pytest.fixture(scope="module")
def files(kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A key pair on disk (the device holds only the .pub), a signed bundle and the stream as CSV."""
    d = tmp_path_factory.mktemp("agent-cli")
    priv, pub = tb.write_keypair(d / "fleet")
    key = tb.load_private_key(priv)
    bundle = d / "cam.twbundle"
    bundle.write_bytes(kit.signed(kit.m1, 1, key=key))
    data = d / "cam.csv"
    write_csv(Series(kit.stream.timestamps[:6000], kit.stream.values[:6000], kit.stream.channels), data)
    return {"pub": pub, "priv": priv, "bundle": bundle, "data": data, "dir": d}


def test_replay_escalates_to_a_real_broker_and_writes_status(files, tmp_path):
    with Mosquitto(tmp_path / "broker") as broker:
        sub = Subscriber(broker.port)
        state = tmp_path / "state"
        r = run("--bundle", files["bundle"], "--pubkey", files["pub"], "--state-dir", state,
                "--replay", files["data"], "--mqtt", f"127.0.0.1:{broker.port}", "--device-id", "cam-9",
                "--escalate-tier", "1")  # fmt: skip
        assert r.returncode == 0, r.stderr
        st = read_status(state / "status.json")
        assert st["incidents"] > 0 and st["escalation"]["spooled"] == 0
        got = sub.wait_for_id(json.loads(sub.payloads[-1])["incident_id"]) if sub.payloads else []
        sub.close()
    assert len(got) == st["incidents"] == st["escalation"]["delivered"]
    assert {json.loads(p)["device_id"] for p in sub.payloads} == {"cam-9"}
    assert st["samples_seen"] == 6000 and st["mode"] == "replay" and st["model"]["version"] == 1
    assert "incidents" in r.stdout and verify(state / "audit.log").ok


def test_live_sampling_of_this_host(tmp_path, files):
    channels = LiveSampler(1.0, interfaces=["lo"]).channels
    rng = np.random.default_rng(0)
    train = Series(np.arange(400.0), rng.normal(10.0, 1.0, size=(400, len(channels))), channels)
    model = pipeline_to_bytes(Pipeline(make_detector("ewma"), window=8, stride=4).fit(train))
    raw = tb.create_bundle(model, POLICY.encode(), {"model_id": "host", "profile": "gateway"})
    bundle = tmp_path / "host.twbundle"
    bundle.write_bytes(tb.sign_bundle(raw, tb.load_private_key(files["priv"]), version=1))
    state = tmp_path / "state"
    r = run("--bundle", bundle, "--pubkey", files["pub"], "--state-dir", state, "--rate", "50",
            "--interface", "lo", "--max-samples", "24", "--device-id", "gw-1")  # fmt: skip
    assert r.returncode == 0, r.stderr
    st = read_status(state / "status.json")
    assert st["mode"] == "live" and st["samples_seen"] == 24 and st["windows_scored"] == (24 - 8) // 4 + 1
    assert st["model"]["channels"] == list(channels)
    assert list(state.glob("engine-*.json")), "a live agent keeps its engine state to resume after a restart"
    assert verify(state / "audit.log").ok


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("tampered", "signature does not match|canonical|not valid JSON"),
        ("critical-policy", "critical process"),
        ("missing-channel", "distinct_dst"),
        ("bad-mqtt", "--mqtt"),
    ],
)
def test_unusable_inputs_are_one_line_errors(files, tmp_path, kit, monkeypatch, capsys, case, message):
    bundle, data, extra = files["bundle"], files["data"], []
    if case == "tampered":
        raw = bytearray(files["bundle"].read_bytes())
        raw[120] ^= 0x01
        bundle = tmp_path / "tampered.twbundle"
        bundle.write_bytes(bytes(raw))
    elif case == "critical-policy":
        (tmp_path / "bad.toml").write_text(CRITICAL_POLICY)
        extra = ["--policy", tmp_path / "bad.toml"]
    elif case == "missing-channel":
        data = tmp_path / "short.csv"
        s = kit.stream
        write_csv(Series(s.timestamps[:100], s.values[:100, :5], s.channels[:5]), data)
    else:
        extra = ["--mqtt", "127.0.0.1:notaport"]
    code, err = run_here(monkeypatch, capsys, "--bundle", bundle, "--pubkey", files["pub"], "--state-dir",
                         tmp_path / "state", "--replay", data, *extra)  # fmt: skip
    assert code == 2, err
    assert "Traceback" not in err and err.startswith("error:")
    assert re.search(message, " ".join(err.split())), err



@pytest.mark.parametrize("rate", ["1e300", "1e-320", "nan", "0"])
def test_a_live_rate_out_of_range_names_the_option(files, tmp_path, monkeypatch, capsys, rate):
    # 1e300 Hz had no bound (the sampler ran in a busy loop) and 1e-320 Hz was refused naming period_s; record
    # bounded its own --rate by another rule
    code, err = run_here(monkeypatch, capsys, "--bundle", files["bundle"], "--pubkey", files["pub"], "--state-dir",
                         tmp_path / "state", "--rate", rate, "--max-samples", "1")  # fmt: skip
    assert code == 2 and err.startswith("error: --rate must be a number of Hz in (0, 1000]"), err
    rc = subprocess.run([sys.executable, "-m", "tinywarden", "record", "--out", str(tmp_path / "rec"), "--rate", rate,
                         "--duration", "1s"], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert rc.returncode == 2 and "--rate must be a number of Hz in (0, 1000]" in " ".join(rc.stderr.split()), rc

def test_a_replay_out_of_time_order_names_an_option_the_agent_has(files, tmp_path, kit, monkeypatch, capsys):
    # the reader's error said "pass --drop-unordered", which the agent did not have
    s = kit.stream
    data = tmp_path / "dup.csv"
    write_csv(Series(s.timestamps[:300], s.values[:300], s.channels), data)
    lines = data.read_text().splitlines()
    lines[151] = lines[150].split(",", 1)[0] + "," + lines[151].split(",", 1)[1]  # row 151 repeats row 150's time
    data.write_text("\n".join(lines) + "\n")
    args = ("--bundle", files["bundle"], "--pubkey", files["pub"], "--replay", data)
    code, err = run_here(monkeypatch, capsys, *args, "--state-dir", tmp_path / "s1")
    assert code == 2 and "duplicate timestamp" in err and "--drop-unordered" in err, err
    code, err = run_here(monkeypatch, capsys, *args, "--state-dir", tmp_path / "s2", "--drop-unordered")
    assert code == 0, err
    assert read_status(tmp_path / "s2" / "status.json")["samples_seen"] == 299  # the duplicate row dropped
    code, err = run_here(monkeypatch, capsys, "--pubkey", files["pub"], "--state-dir", tmp_path / "s3",
                         "--drop-unordered")  # fmt: skip
    assert code == 2 and "--drop-unordered needs --replay" in err, err


@pytest.mark.parametrize(
    ("maps", "message"),
    [
        (["nope=cpu_pct"], r"--map 'nope=cpu_pct': model cam-ewma v1 has no channel nope \(its channels: cpu_pct, "
                           r"mem_pct, power_mw, tx_pkts, tx_bytes, distinct_dst\)"),
        (["cpu_pct=nope"], r"cpu_pct \(mapped to nope\) that the telemetry source does not provide"),
        (["cpu_pct=mem_pct"], r"--map 'cpu_pct=mem_pct': model channels cpu_pct and mem_pct would both read source "
                              r"channel mem_pct"),
        (["cpu_pct=mem_pct", "cpu_pct=power_mw"], r"--map 'cpu_pct=power_mw': cpu_pct is already mapped to mem_pct"),
    ],
    ids=["unknown-model-channel", "unknown-source-channel", "two-read-one-source-channel", "mapped-twice"],
)
def test_a_map_the_model_or_the_source_cannot_follow_is_a_one_line_error(files, tmp_path, kit, monkeypatch, capsys,
                                                                         maps, message):
    # all but the unknown source channel were accepted silently: a map entry for no model channel did nothing, two
    # model channels fed one source column, and a channel mapped twice kept its last source
    s = kit.stream
    data = tmp_path / "short.csv"
    write_csv(Series(s.timestamps[:100], s.values[:100], s.channels), data)
    code, err = run_here(monkeypatch, capsys, "--bundle", files["bundle"], "--pubkey", files["pub"], "--state-dir",
                         tmp_path / "state", "--replay", data, *(a for m in maps for a in ("--map", m)))
    assert code == 2 and "Traceback" not in err, err
    last = err.strip().splitlines()[-1]  # after any warning line of the runtime's (logged)
    assert last.startswith("error:") and re.search(message, last), err


def test_a_replay_with_a_gap_in_time_says_so_as_score_does(files, tmp_path, kit, monkeypatch, capsys):
    # train and score print a note on a gap in time; agent --replay said nothing
    s = kit.stream
    ts = s.timestamps[:300].copy()
    ts[150:] += 3600.0  # an hour missing after the 150th row
    data = tmp_path / "gap.csv"
    write_csv(Series(ts, s.values[:300], s.channels), data)

    def gap_note(text: str) -> str | None:
        m = re.search(r"note: (.*?gap\(s\) in time.*?interpolated\))", " ".join(text.split()))
        return m and m.group(1)

    save_pipeline(kit.p1, tmp_path / "m.twb")
    scored = run_tinywarden("score", tmp_path / "m.twb", data, "--out", tmp_path / "scores.csv")
    assert scored.returncode == 0 and gap_note(scored.stderr) is not None, scored.stderr
    args = ("--bundle", files["bundle"], "--pubkey", files["pub"], "--replay", data)
    code, err = run_here(monkeypatch, capsys, *args, "--state-dir", tmp_path / "s1")
    assert code == 0 and gap_note(err) == gap_note(scored.stderr), err
    assert "after row 151;" in gap_note(err)
    code, err = run_here(monkeypatch, capsys, *args, "--state-dir", tmp_path / "s2", "--max-samples", "120")
    assert code == 0 and gap_note(err) is None, err  # the gap lies past the rows replayed



def test_a_replay_says_what_score_says_of_dropped_rows_and_of_times_in_milliseconds(files, tmp_path, kit, monkeypatch,
                                                                                      capsys):
    # agent --replay said nothing of rows --drop-unordered dropped, nor of times read as milliseconds; score does
    s = kit.stream
    data = tmp_path / "ms.csv"
    write_csv(Series(s.timestamps[:300] * 1000.0, s.values[:300], s.channels), data)  # epoch milliseconds
    lines = data.read_text().splitlines(keepends=True)
    lines[101] = lines[100].split(",", 1)[0] + "," + lines[101].split(",", 1)[1]  # a duplicate time
    data.write_text("".join(lines))

    def notes(text: str) -> list[str]:
        flat = " ".join(text.split())
        return sorted(m for m in re.findall(r"note: \S+: (dropped [^;]*?timestamps|times read as epoch [a-z]+)", flat))

    save_pipeline(kit.p1, tmp_path / "m.twb")
    scored = run_tinywarden("score", tmp_path / "m.twb", data, "--drop-unordered", "--out", tmp_path / "s.csv")
    assert scored.returncode == 0 and len(notes(scored.stderr)) == 2, scored.stderr
    code, err = run_here(monkeypatch, capsys, "--bundle", files["bundle"], "--pubkey", files["pub"], "--replay", data,
                         "--drop-unordered", "--state-dir", tmp_path / "s1")
    assert code == 0 and notes(err) == notes(scored.stderr), err

def test_the_agent_passes_on_the_policy_advice(files, tmp_path):
    # an alert tier that caps the uplink shapes the traffic the model scores (benchmarks/results/range-cap.json)
    (tmp_path / "capped.toml").write_text(CAPPED_CAMERA_POLICY)
    args = ("--bundle", files["bundle"], "--pubkey", files["pub"], "--replay", files["data"], "--max-samples",
            "200", "--runtime", "int8")  # fmt: skip
    r = run(*args, "--state-dir", tmp_path / "s1", "--policy", tmp_path / "capped.toml")
    assert r.returncode == 0, r.stderr
    assert "advice: " in r.stdout and "tiers.alert.actions: cap (tc_rate_limit) reshapes" in r.stdout, r.stdout
    r = run(*args, "--state-dir", tmp_path / "s2")
    assert r.returncode == 0 and "advice" not in r.stdout, (r.stdout, r.stderr)


@pytest.mark.parametrize("given", [["--tls-cert", "c.pem", "--tls-key", "k.pem"], ["--tls-key", "k.pem"],
                                   ["--tls-ca", "ca.pem", "--tls-key", "k.pem"]])
def test_a_client_certificate_without_tls_is_refused_not_dropped(tmp_path, monkeypatch, capsys, given):
    # --tls-cert/--tls-key without --tls-ca were ignored: the agent talked plaintext MQTT to port 1883, so a
    # device configured for mutual TLS sent its incidents in clear to whoever answered
    from tinywarden.agent import command, loop

    _, pub = tb.write_keypair(tmp_path / "fleet")
    data = tmp_path / "d.csv"
    write_csv(Series(np.arange(4.0), np.ones((4, 1)), ("cpu_pct",)), data)
    seen = []

    def no_session(config, *_a, **_k):
        seen.append(config.escalation.broker)
        raise SystemExit(0)

    monkeypatch.setattr(loop, "session", no_session)
    code = command.main(["--pubkey", str(pub), "--state-dir", str(tmp_path / "s"), "--replay", str(data),
                         "--mqtt", "127.0.0.1", *given])  # fmt: skip
    err = capsys.readouterr().err
    assert not seen, f"the agent was started with {seen}"
    assert code == 2 and err.startswith("error:") and "--tls-" in err and err.count("\n") == 1, err


STOP_AT_FIRST_ACTION = """
import os, signal, sys
from tinywarden.agent import command
from tinywarden.respond import machine, ResponseEngine
real, sent = ResponseEngine._carry_out, []
def carry_out(self, e):
    if e.kind == machine.EVENT_APPLY and not sent:  # the signal lands between the machine's step and its action
        sent.append(1)
        os.kill(os.getpid(), signal.{sig})
    return real(self, e)
ResponseEngine._carry_out = carry_out
sys.exit(command.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", ["SIGINT", "SIGHUP", "SIGTERM"])
def test_a_stop_signal_mid_response_finishes_the_sample_and_audits_it(files, tmp_path, sig):
    """SIGHUP (a closed terminal) killed the agent outright: no agent_stop, no final status; SIGINT raised
    KeyboardInterrupt wherever it landed, here after the engine's step entered tier 1 but before its action ran
    or was audited, so the log said tier 1 with no apply. Every stop signal now ends the loop after the sample."""
    state = tmp_path / "state"
    r = subprocess.run([sys.executable, "-c", STOP_AT_FIRST_ACTION.format(sig=sig), "--bundle", files["bundle"],
                        "--pubkey", files["pub"], "--state-dir", str(state), "--replay", files["data"]],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]
    applied = [x for x in recs if x["kind"] == "action" and x["data"]["event"] == "apply"]
    stop = [x for x in recs if x["kind"] == "agent_stop"]
    assert len(applied) == 1 and applied[0]["data"]["status"] == "done"
    assert len(stop) == 1 and stop[0]["data"]["tier"] == 1 and recs[-1]["kind"] == "agent_stop"
    st = read_status(state / "status.json")
    assert st["tier"] == 1 and st["samples_seen"] == stop[0]["data"]["samples"] < 6000
    assert verify(state / "audit.log").ok
