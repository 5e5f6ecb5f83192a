"""Policy validation: the shipped example loads, and every mistake is refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinywarden.respond.engine import compile_tables
from tinywarden.respond.policy import PolicyError, load_policy, parse_policy

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "policy.toml"

BASE = """
[policy]
name = "t"
version = "1"
fail_safe_tier = "constrain"

[critical]
processes = ["plc-bridge"]
interfaces = ["eth1"]
addresses = ["192.168.10.0/24"]

[tiers.alert]
actions = ["notify"]
k = 2
n = 3

[tiers.constrain]
actions = ["cap"]
consecutive = 3
margin = 0.5
dead_man_s = 60

[actions.notify]
type = "log"
message = "hi"

[actions.cap]
type = "tc_rate_limit"
interface = "eth0"
rate = "128kbit"
"""


def test_example_policy_loads_with_all_three_tiers() -> None:
    p = load_policy(EXAMPLE)
    assert [t.name for t in p.tiers] == ["alert", "constrain", "harden"]
    assert all(t.actions for t in p.tiers)
    assert p.fail_safe_tier == 2
    assert [t.margin for t in p.tiers] == sorted(t.margin for t in p.tiers)
    assert all(t.dead_man_s > 0 for t in p.tiers[1:])


def test_base_policy_parses_and_compiles() -> None:
    p = parse_policy(BASE)
    assert (p.tiers[1].k, p.tiers[1].n) == (3, 3)  # consecutive = k-of-k
    assert p.tiers[2].actions == ()
    tables = compile_tables(p, 2.0)
    assert tables.bar == (2.0, 2.0, 3.0, 2.0)
    assert tables.tier_actions == ((), (0,), (1,), ())
    assert tables.top_tier == 2


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('name = "t"', 'name = "t"\nmystery = 1', "policy.mystery: unknown key"),
        ('version = "1"', "", "policy.version: is required"),
        ('fail_safe_tier = "constrain"', 'fail_safe_tier = "panic"', "policy.fail_safe_tier: must be one of"),
        ('fail_safe_tier = "constrain"', 'fail_safe_tier = "harden"', "cannot be the fail-safe"),
        ("k = 2\nn = 3", "k = 4\nn = 3", "tiers.alert.k: must be <= n (3)"),
        ("k = 2\nn = 3", "k = 2\nn = 40", "tiers.alert.n: must be an integer in 1..32"),
        ("consecutive = 3", "consecutive = 3\nk = 2", "tiers.constrain.consecutive: give either"),
        ("dead_man_s = 60", "", "tiers.constrain.dead_man_s: must be > 0"),
        ("margin = 0.5", "margin = 0.0", "tiers.constrain.margin: must be > tiers.alert.margin"),
        ('actions = ["cap"]', 'actions = ["nope"]', "tiers.constrain.actions: names undefined action 'nope'"),
        ('interface = "eth0"', 'interface = "eth1"', "actions.cap.interface: 'eth1' is a critical interface"),
        ('rate = "128kbit"', 'rate = "fast"', "actions.cap.rate: must be a tc rate"),
        ('type = "tc_rate_limit"', 'type = "explode"', "actions.cap.type: must be one of"),
        ('message = "hi"', 'message = "hi"\n[actions.extra]\ntype = "log"', "actions.extra: is defined but no tier"),
        ('addresses = ["192.168.10.0/24"]', 'addresses = ["300.1.1.1"]', "critical.addresses: '300.1.1.1' is not"),
        ("[tiers.alert]", "[tiers.panic]\n[tiers.alert]", "tiers.panic: unknown key"),
    ],
)
def test_invalid_policies_name_the_key(old: str, new: str, message: str) -> None:
    assert old in BASE
    with pytest.raises(PolicyError) as err:
        parse_policy(BASE.replace(old, new, 1), source="p.toml")
    assert str(err.value).startswith("p.toml: ")
    assert message in str(err.value)


def test_actions_touching_critical_functions_are_refused() -> None:
    extra = """
[tiers.harden]
actions = ["{name}"]
margin = 1.0
dead_man_s = 60
[actions.{name}]
{body}
"""
    cases = {
        "stop_plc": ('type = "process_suspend"\nprocess = "plc-bridge"', "'plc-bridge' is a critical process"),
        "down": ('type = "interface_down"\ninterface = "eth1"', "'eth1' is a critical interface"),
        "block": ('type = "nft_block_address"\naddresses = ["192.168.10.5"]', "overlaps critical address"),
    }
    for name, (body, msg) in cases.items():
        with pytest.raises(PolicyError, match=msg):
            parse_policy(BASE + extra.format(name=name, body=body))


def test_tier_gap_and_margin_order_are_refused() -> None:
    no_constrain = BASE.replace("[tiers.constrain]", "[tiers.harden]")
    with pytest.raises(PolicyError, match="tiers.harden: needs tiers.constrain"):
        parse_policy(no_constrain)
    harden = '\n[tiers.harden]\nactions = ["cap2"]\nmargin = 0.2\ndead_man_s = 5\n[actions.cap2]\n'
    harden += 'type = "tc_rate_limit"\ninterface = "eth2"\nrate = "1mbit"\n'
    with pytest.raises(PolicyError, match="tiers.harden.margin: must be >= tiers.constrain.margin"):
        parse_policy(BASE + harden)


def test_bad_toml_and_missing_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="p.toml: not valid TOML"):
        parse_policy("[policy\n", source="p.toml")
    with pytest.raises(PolicyError, match="cannot read policy"):
        load_policy(tmp_path / "missing.toml")
    with pytest.raises(PolicyError, match="define at least one of tiers"):
        parse_policy('[policy]\nname = "x"\nversion = "1"\n')


def test_zero_threshold_with_margins_is_refused() -> None:
    from tinywarden.errors import ConfigError

    with pytest.raises(ConfigError, match="threshold of 0"):
        compile_tables(parse_policy(BASE), 0.0)


DURATION_KEYS = [
    ("policy", "telemetry_timeout_s"),
    ("policy", "watchdog_timeout_s"),
    ("tiers.constrain", "min_dwell_s"),
    ("tiers.constrain", "deescalate_after_s"),
    ("tiers.constrain", "dead_man_s"),
]


def _with(table: str, key: str, value: object) -> str:
    """BASE with ``table.key = value`` (BASE's own ``dead_man_s`` dropped when that is the key)."""
    text = BASE.replace("dead_man_s = 60\n", "") if key == "dead_man_s" else BASE
    return text.replace(f"[{table}]", f"[{table}]\n{key} = {value}", 1)


@pytest.mark.parametrize(("table", "key"), DURATION_KEYS)
def test_every_duration_has_the_one_limit_the_c_export_uses(table: str, key: str) -> None:
    """Issue 12 item 7: ``dead_man_s = 1e300`` was accepted by the loader and refused only by the C export."""
    from tinywarden.codegen.respond import c_tables
    from tinywarden.respond.policy import MAX_DURATION_S

    with pytest.raises(PolicyError, match=rf"p\.toml: {table}\.{key}: must be <= {MAX_DURATION_S}"):
        parse_policy(_with(table, key, "1e300"), source="p.toml")
    with pytest.raises(PolicyError, match=rf"{table}\.{key}: must be <= "):
        parse_policy(_with(table, key, MAX_DURATION_S + 0.5))  # would round up past the limit in C
    at_limit = parse_policy(_with(table, key, MAX_DURATION_S))  # the loader and the C export agree on it
    tables = c_tables(at_limit, 1000)
    assert MAX_DURATION_S in (tables.telemetry_timeout, tables.watchdog_timeout, *tables.min_dwell,
                              *tables.deescalate_after, *tables.dead_man)


def test_huge_margin_is_refused_rather_than_breaking_the_c_export() -> None:
    """A margin of 1e306 loaded, then made an infinite bar that the C export failed on with a traceback."""
    from tinywarden.codegen.respond import c_tables
    from tinywarden.respond.policy import MAX_MARGIN

    with pytest.raises(PolicyError, match=r"tiers\.constrain\.margin: must be <= 1000000 \(got 1e\+306\)"):
        parse_policy(BASE.replace("margin = 0.5", "margin = 1e306"))
    at_limit = parse_policy(BASE.replace("margin = 0.5", f"margin = {MAX_MARGIN}"))
    assert c_tables(at_limit, 2**31 - 1).bar[2] == 2**31 - 1  # clamped: no int32 score is above it


MAPPED_CRITICAL = BASE.replace('addresses = ["192.168.10.0/24"]', 'addresses = ["::ffff:192.168.10.5"]')
HARDEN = """
[tiers.harden]
actions = ["{name}"]
margin = 1.0
dead_man_s = 60
[actions.{name}]
type = "{kind}"
{key} = {value}
"""


def _harden(kind: str, key: str, value: str, name: str = "act", base: str = MAPPED_CRITICAL) -> str:
    return base + HARDEN.format(name=name, kind=kind, key=key, value=value)


def test_ipv4_mapped_critical_address_protects_the_ipv4_host() -> None:
    """Issue 12 item 4: ``::ffff:192.168.10.5`` loaded as an IPv6 network that no IPv4 block overlapped."""
    p = parse_policy(MAPPED_CRITICAL)
    assert p.critical.addresses == ("192.168.10.5/32",)
    for target in ('["192.168.10.5"]', '["192.168.10.0/24"]', '["::ffff:192.168.10.5"]', '["0.0.0.0/0"]'):
        with pytest.raises(PolicyError, match=r"actions\.act\.addresses: \S+ overlaps critical address "
                                              r"192\.168\.10\.5/32; it must never be blocked"):
            parse_policy(_harden("nft_block_address", "addresses", target))


def test_ipv4_mapped_critical_address_is_allowed_in_its_ipv4_form() -> None:
    from tinywarden.respond.actuators import build_actuators
    from tinywarden.respond.actuators.nftables import nft_script

    p = parse_policy(_harden("nft_egress_allowlist", "allow", '["::ffff:10.20.0.0/112", "2001:db8::1"]'))
    fence = build_actuators(p, dry_run=False, backend="nft")[p.action_index("act")]
    assert fence.rules.allow == ("10.20.0.0/16", "2001:db8::1/128", "192.168.10.5/32")
    script = nft_script("tw_act", fence.rules)
    assert "ip daddr { 10.20.0.0/16, 192.168.10.5/32 } accept" in script
    assert "ip6 daddr { 2001:db8::1/128 } accept" in script and "ffff" not in script


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("192.168.010.005", r"'192\.168\.010\.005' has a zero-padded octet \('010'\).*write 192\.168\.10\.5"),
        ("::ffff:192.168.010.5/128", r"'::ffff:192\.168\.010\.5/128' has a zero-padded octet \('010'\).*"
                                     r"write ::ffff:192\.168\.10\.5/128 if"),
        ("192.168.10.5/24", r"'192\.168\.10\.5/24' has host bits set: write 192\.168\.10\.0/24 for the network "
                            r"or 192\.168\.10\.5/32 for the one host"),
        ("fe80::1%eth0", r"'fe80::1%eth0' has a scope \(%eth0\)"),
        ("300.1.1.1", r"'300\.1\.1\.1' is not an IP address or network"),
    ],
)
def test_ambiguous_addresses_are_refused_everywhere(text: str, message: str) -> None:
    fields = [
        ("critical.addresses", BASE.replace('"192.168.10.0/24"', f'"{text}"')),
        ("actions.act.addresses", _harden("nft_block_address", "addresses", f'["{text}"]', base=BASE)),
        ("actions.act.allow", _harden("nft_egress_allowlist", "allow", f'["{text}"]', base=BASE)),
    ]
    for key, policy in fields:
        with pytest.raises(PolicyError, match=rf"p\.toml: {key}: {message}"):
            parse_policy(policy, source="p.toml")


def test_one_address_written_two_ways_is_a_duplicate() -> None:
    twice = BASE.replace('["192.168.10.0/24"]', '["192.168.10.5", "::ffff:192.168.10.5"]')
    with pytest.raises(PolicyError, match=r"critical\.addresses: lists 192\.168\.10\.5/32 twice"):
        parse_policy(twice)
    mapped = parse_policy(_harden("nft_block_address", "addresses", '["::ffff:203.0.113.7", "2001:DB8:0::7"]'))
    assert mapped.actions[-1].params["addresses"] == ("203.0.113.7/32", "2001:db8::7/128")


def test_a_tier_adding_no_action_of_its_own_is_refused() -> None:
    """An action may be listed by several tiers (it is held while any of them is active), but a tier whose
    every action a lower tier already runs would change nothing when entered."""
    shared = BASE + '\n[tiers.harden]\nactions = ["cap", "notify"]\nmargin = 1.0\ndead_man_s = 60\n'
    with pytest.raises(PolicyError, match=r"tiers\.harden\.actions: every action is already run by a lower tier"):
        parse_policy(shared)
    p = parse_policy(shared.replace('["cap", "notify"]', '["cap", "stop"]') + STOP)
    assert p.tiers[2].actions == ("cap", "stop")


STOP = '[actions.stop]\ntype = "process_suspend"\nprocess = "telnetd"\n'


def test_a_traffic_shaping_action_in_the_alert_tier_is_advised_against() -> None:
    # the range's alert tier capped the uplink: the device's own capped normal then scored over the threshold
    # (benchmarks/results/range-cap.json) and a false alert escalated on windows it had shaped
    assert parse_policy(BASE).advice == ()  # the cap in constrain
    assert load_policy(EXAMPLE).advice == ()
    shaped = BASE.replace('actions = ["notify"]', 'actions = ["notify", "cap"]').replace(
        'actions = ["cap"]', 'actions = ["down"]') + '[actions.down]\ntype = "interface_down"\ninterface = "eth0"\n'
    (line,) = parse_policy(shaped.replace("k = 2", "dead_man_s = 30\nk = 2"), "p.toml").advice
    assert line.startswith("p.toml: tiers.alert.actions: cap (tc_rate_limit) reshapes the device's own traffic")
    renice = BASE.replace('actions = ["notify"]', 'actions = ["notify", "slow"]').replace(
        "k = 2", "dead_man_s = 30\nk = 2") + '[actions.slow]\ntype = "process_renice"\nprocess = "x"\n'
    assert parse_policy(renice).advice == ()  # a named process, not the traffic


def _escalating(first: str, second: str) -> str:
    """A policy whose constrain tier runs action ``first`` and whose harden tier runs ``second`` (TOML bodies)."""
    return f"""
[policy]
name = "t"
version = "1"
[tiers.alert]
actions = ["notify"]
[tiers.constrain]
actions = ["a"]
margin = 0.5
dead_man_s = 60
[tiers.harden]
actions = ["b"]
margin = 1.0
dead_man_s = 60
[actions.notify]
type = "log"
[actions.a]
{first}
[actions.b]
{second}
"""


@pytest.mark.parametrize(
    ("first", "second", "names", "message"),
    [
        # escalating caps: harden's 64kbit found constrain's qdisc "applied" and did nothing; its dead-man then
        # deleted constrain's cap while constrain was still active
        ('type = "tc_rate_limit"\ninterface = "eth0"\nrate = "1mbit"',
         'type = "tc_rate_limit"\ninterface = "eth0"\nrate = "64kbit"', ("a", "b"), "the root qdisc of interface eth0"),
        # "block-c2" and "block_c2" are one nftables table, tw_block_c2: harden's allow-list was never installed
        ('type = "nft_block_address"\naddresses = ["203.0.113.7"]',
         'type = "nft_egress_allowlist"\nallow = ["10.0.0.0/8"]', ("block-c2", "block_c2"),
         "nftables table inet tw_block_c2"),
        # iptables chains keep 22 characters of the name: TW-block_egress_to_the_c2-O for both
        ('type = "nft_block_address"\naddresses = ["203.0.113.7"]',
         'type = "nft_block_address"\naddresses = ["198.51.100.9"]',
         ("block_egress_to_the_c2_a", "block_egress_to_the_c2_b"), "iptables chains TW-block_egress_to_the_c2"),
        # harden's SIGCONT on leaving resumed the process constrain still holds stopped
        ('type = "process_suspend"\nprocess = "telnetd"', 'type = "process_suspend"\nprocess = "telnetd"', ("a", "b"),
         "the stopped state of process 'telnetd'"),
    ],
    ids=["tc", "nft-table", "iptables-chain", "suspend"],
)
def test_two_actions_holding_one_thing_on_the_device_are_refused(
    first: str, second: str, names: tuple[str, str], message: str
) -> None:
    text = _escalating(first, second).replace('actions = ["a"]', f'actions = ["{names[0]}"]')
    text = text.replace('actions = ["b"]', f'actions = ["{names[1]}"]')
    text = text.replace("[actions.a]", f"[actions.{names[0]}]").replace("[actions.b]", f"[actions.{names[1]}]")
    with pytest.raises(PolicyError, match=f"actions.{names[1]}: would hold {message}.*'{names[0]}'"):
        parse_policy(text)


def test_one_action_listed_by_two_tiers_and_distinct_targets_still_load() -> None:
    parse_policy(_escalating('type = "tc_rate_limit"\ninterface = "eth0"\nrate = "1mbit"',
                             'type = "tc_rate_limit"\ninterface = "wlan0"\nrate = "64kbit"'))
    parse_policy(_escalating('type = "process_renice"\nprocess = "telnetd"\nnice = 10',
                             'type = "process_renice"\nprocess = "telnetd"\nnice = 19'))  # nested restores are right
    shared = _escalating('type = "tc_rate_limit"\ninterface = "eth0"\nrate = "1mbit"', 'type = "log"')
    parse_policy(shared.replace('actions = ["b"]', 'actions = ["a", "b"]'))


@pytest.mark.parametrize("value", ["[" * 100_000 + "]" * 100_000, "{b=" * 5_000 + "1" + "}" * 5_000],
                         ids=["arrays", "inline-tables"])
def test_a_policy_nested_too_deeply_is_a_policy_error_not_a_recursion_error(tmp_path: Path, value: str) -> None:
    """tomllib parses nesting recursively: a RecursionError left parse_policy, so `respond --policy`, `bundle`
    and the agent's --policy died with a traceback, and install with a signed bundle holding such a policy."""
    path = tmp_path / "deep.toml"
    path.write_text(f"a = {value}\n")
    with pytest.raises(PolicyError, match="deep.toml: not a policy .*nested too deeply"):
        load_policy(path)


@pytest.mark.parametrize(
    ("rate", "burst", "message"),
    [
        ("0bit", "32kbit", "actions.cap.rate: must be at least 8bit"),  # tc: "the rate parameter is mandatory"
        ("7bit", "32kbit", "actions.cap.rate: must be at least 8bit"),
        ("1e23gbit", "32kbit", "actions.cap.rate: must be a tc rate"),
        ("-1mbit", "32kbit", "actions.cap.rate: must be a tc rate"),  # tc read it as 18446744 Tbit
        ("99999999999999999999gbit", "32kbit", "actions.cap.rate: '99999999999999999999gbit' queues"),
        ("86gbit", "1mb", "over tc's 32-bit queue limit"),
        ("1mbit", "32kbps", "actions.cap.burst: must be a tc size"),  # tc: illegal value for "burst"
        ("1mbit", "100bit", "actions.cap.burst: must be a tc size"),
        ("1mbit", "0b", "actions.cap.burst: must be at least 1514 bytes"),  # tc: "burst" parameter is mandatory
        ("1mbit", "1kbit", "actions.cap.burst: must be at least 1514 bytes"),  # the kernel drops every frame over 128 B
        ("1mbit", "4gb", "actions.cap.burst: must be under 4 GiB"),
        ("1mbit", 32, "actions.cap.burst: must be a tc size"),
    ],
)
def test_tc_rates_and_bursts_are_held_to_what_tc_installs(rate: str, burst: object, message: str) -> None:
    """A cap tc refuses, or one the kernel installs as a block of full-size packets, is refused when the policy loads
    (one line, the key named), not when the cap is applied mid-attack."""
    text = BASE.replace('rate = "128kbit"', f'rate = "{rate}"\nburst = {burst!r}'.replace("'", '"'))
    with pytest.raises(PolicyError) as err:
        parse_policy(text, source="p.toml")
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(("rate", "burst"), [("8bit", "32kbit"), ("256kbit", "1514"), ("85gbit", "32kbit"),
                                             ("1.5mbit", "4kb"), ("10mbps", "1mbit")])
def test_caps_tc_installs_load(rate: str, burst: str) -> None:
    p = parse_policy(BASE.replace('rate = "128kbit"', f'rate = "{rate}"\nburst = "{burst}"'))
    assert dict(p.actions[1].params)["burst"] == burst


def test_a_tc_rate_limit_built_outside_a_policy_is_held_to_the_same_bounds() -> None:
    from tinywarden.respond.actuators import ActuatorError, TcRateLimit

    with pytest.raises(ActuatorError, match="cap: rate: must be at least 8bit"):
        TcRateLimit("cap", "eth0", "0bit")
