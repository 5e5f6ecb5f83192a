"""Addresses and networks of a response policy in their one normalised form.

Every check (critical addresses never blocked) and every rule an actuator installs (nftables,
iptables) uses :func:`normalize_network`, so two spellings of one address cannot slip past each other.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

__all__ = ["Network", "normalize_network", "normalize_networks", "overlapping"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_DOTTED_OCTETS = re.compile(r"(?:^|:)(\d+)\.(\d+)\.(\d+)\.(\d+)$")


def normalize_network(text: str) -> Network:
    """The one form of an address or network of a policy, which every check and every rule uses.

    * An IPv4-mapped IPv6 address or network (inside ``::ffff:0:0/96``) becomes its IPv4 form: that is the
      traffic it denotes (a dual-stack socket sends IPv4 packets to ``::ffff:a.b.c.d``), and only an IPv4
      rule matches it. Any other IPv6 network matches IPv6 packets only.
    * A single address becomes a /32 or /128 network; IPv6 is written in its compressed form.
    * Refused (``ValueError`` with a one-line reason): zero-padded IPv4 octets (``192.168.010.005``, octal
      to ``inet_aton`` and decimal to others), host bits set (``192.168.10.5/24``: the network or the one
      host? both readings are offered, neither is guessed), a scope (``fe80::1%eth0``, which packet
      filters cannot match), and anything that is not an address.

    >>> normalize_network("::ffff:192.168.10.5"), normalize_network("2001:DB8:0::1")
    (IPv4Network('192.168.10.5/32'), IPv6Network('2001:db8::1/128'))
    """
    addr, _, _ = text.partition("/")
    octets = _DOTTED_OCTETS.search(addr)
    if octets:
        padded = [o for o in octets.groups() if len(o) > 1 and o.startswith("0")]
        if padded:
            fixed = addr[: octets.start(1)] + ".".join(str(int(o)) for o in octets.groups()) + text[len(addr):]
            raise ValueError(
                f"{text!r} has a zero-padded octet ({padded[0]!r}), which some tools read as octal and others "
                f"as decimal; write {fixed} if decimal is meant"
            )
    if "%" in addr:
        raise ValueError(f"{text!r} has a scope (%{addr.split('%', 1)[1]}), which packet filters cannot match")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or network") from exc
        host = ipaddress.ip_interface(text).ip
        raise ValueError(
            f"{text!r} has host bits set: write {loose} for the network or {host}/{loose.max_prefixlen} for "
            "the one host"
        ) from None
    if isinstance(net, ipaddress.IPv6Network) and net.subnet_of(_MAPPED):
        v4 = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((v4, net.prefixlen - 96))
    return net


def normalize_networks(texts: Sequence[str]) -> tuple[str, ...]:
    """:func:`normalize_network` of each of ``texts``, as strings; ``ValueError`` if two denote one network."""
    out: dict[str, str] = {}
    for text in texts:
        net = str(normalize_network(text))
        if net in out:
            raise ValueError(f"lists {net} twice ({out[net]!r} and {text!r})")
        out[net] = text
    return tuple(out)


def overlapping(a: Network, b: Network) -> bool:
    """Whether normalised networks ``a`` and ``b`` share an address (never across IPv4 and IPv6)."""
    return a.version == b.version and a.overlaps(b)  # type: ignore[arg-type]
