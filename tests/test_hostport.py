"""[HOST:]PORT parsing: every form people type, and one clear sentence for each mistake."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import require_peer
from oscsync.net.hostport import (
    AddressError,
    HostPort,
    allow_mismatch,
    framing_conflict,
    is_own_address,
    parse_hostport,
    parse_network,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("9000", HostPort("127.0.0.1", 9000)),
        ("127.0.0.1:9000", HostPort("127.0.0.1", 9000)),
        ("0.0.0.0:9001", HostPort("0.0.0.0", 9001)),
        ("[::1]:9000", HostPort("::1", 9000)),
        ("localhost:9000", HostPort("127.0.0.1", 9000)),
        (" 239.1.2.3:7000 ", HostPort("239.1.2.3", 7000)),
    ],
)
def test_valid_forms(text: str, expected: HostPort) -> None:
    assert parse_hostport(text) == expected


def test_str_round_trips() -> None:
    for text in ("127.0.0.1:9000", "[::1]:9000"):
        assert str(parse_hostport(text)) == text


def test_multicast_is_recognised() -> None:
    assert parse_hostport("239.1.2.3:7000").is_multicast
    assert not parse_hostport("127.0.0.1:7000").is_multicast


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "empty"),
        ("127.0.0.1:", "not a number"),
        ("127.0.0.1:70000", "out of range"),
        ("127.0.0.1:0", "out of range"),
        ("127.0.0.1:abc", "not a number"),
        ("::1:9000", "brackets"),
        ("[::1]9000", "[ADDRESS]:PORT"),
        (":9000", "host part is empty"),
        ("no-such-host.invalid:9000", "cannot resolve"),
    ],
)
def test_mistakes_are_one_sentence(text: str, needle: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_hostport(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_bare_port_needs_default_host_when_asked() -> None:
    with pytest.raises(AddressError, match="host is needed"):
        parse_hostport("9000", default_host=None)


def test_port_zero_only_where_allowed() -> None:
    assert parse_hostport("0", allow_port_zero=True).port == 0


def test_networks() -> None:
    assert str(parse_network("192.168.1.7/24")) == "192.168.1.0/24"
    assert str(parse_network("127.0.0.2")) == "127.0.0.2/32"
    with pytest.raises(AddressError):
        parse_network("300.1.1.1/8")


@pytest.mark.parametrize(
    ("text", "default_host", "expected"),
    [
        ("127.0.0.1", None, "'127.0.0.1' has no port: add a port, e.g. 127.0.0.1:9000"),
        ("0.0.0.0", "127.0.0.1", "'0.0.0.0' has no port: add a port, e.g. 0.0.0.0:9000"),
        ("localhost", None, "'localhost' has no port: add a port, e.g. localhost:9000"),
    ],
)
def test_a_forgotten_port_says_add_a_port(
    text: str, default_host: str | None, expected: str
) -> None:
    with pytest.raises(AddressError) as caught:
        parse_hostport(text, default_host=default_host)
    assert str(caught.value) == expected


def test_allow_that_can_never_match_the_loopback_listener_is_explained() -> None:
    loopback = HostPort("127.0.0.1", 9001)
    reason = allow_mismatch(loopback, [parse_network("192.168.1.0/24")])
    assert reason is not None and "--listen 0.0.0.0:9001" in reason
    assert allow_mismatch(loopback, [parse_network("127.0.0.1")]) is None
    assert allow_mismatch(HostPort("0.0.0.0", 9001), [parse_network("192.168.1.0/24")]) is None
    assert "IPv4" in (allow_mismatch(HostPort("0.0.0.0", 9001), [parse_network("::1")]) or "")


def test_own_address_is_the_listener_itself() -> None:
    assert is_own_address(HostPort("127.0.0.1", 9411), HostPort("127.0.0.1", 9411))
    assert is_own_address(HostPort("0.0.0.0", 9411), HostPort("127.0.0.1", 9411))
    assert not is_own_address(HostPort("127.0.0.1", 9411), HostPort("127.0.0.1", 9000))
    # TEST-NET-1 is nobody's address: sending there leaves the machine, it does not loop.
    assert not is_own_address(HostPort("0.0.0.0", 9411), HostPort("192.0.2.1", 9411))


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="a private network namespace needs Linux and root",
)
def test_a_bridge_to_this_machines_lan_address_is_refused_as_a_loop() -> None:
    """``bridge -l 0.0.0.0:P --to <this machine's LAN IP>:P`` forwarded to itself for ever: only
    loopback was known as its own. In a network namespace of its own (unshare -n), 10.77.0.1
    is added to lo as this machine's "LAN" address."""
    require_peer("unshare")
    require_peer("ip")
    run = [sys.executable, "-m", "oscsync", "bridge", "-l", "0.0.0.0:9411"]
    script = 'ip link set lo up && ip addr add 10.77.0.1/32 dev lo && exec "$@"'
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", script, "own", *run, "--to", "10.77.0.1:9411"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "Error: Invalid value for '--to': 10.77.0.1:9411 reaches the bridge's own --listen "
        "0.0.0.0:9411: forwarding there would loop"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:9000", HostPort("127.0.0.1", 9000, "tcp")),
        # liblo's clients frame TCP with a size prefix, so osc.tcp:// does too (issue 28).
        ("osc.tcp://localhost:9000", HostPort("127.0.0.1", 9000, "tcp", "size")),
        ("osc.tcp://localhost:9000/", HostPort("127.0.0.1", 9000, "tcp", "size")),  # liblo's form
        ("OSC.TCP://[::1]:9000", HostPort("::1", 9000, "tcp", "size")),
        ("tcp://9000", HostPort("127.0.0.1", 9000, "tcp")),
        ("osc.tcp://:9000", HostPort("127.0.0.1", 9000, "tcp", "size")),  # "this machine"
        ("tcp+size://127.0.0.1:57110", HostPort("127.0.0.1", 57110, "tcp", "size")),
        ("TCP+SLIP://[::1]:9000", HostPort("::1", 9000, "tcp", "slip")),
        ("udp://127.0.0.1:9000", HostPort("127.0.0.1", 9000)),
        ("osc.udp://239.1.2.3:7000", HostPort("239.1.2.3", 7000)),
        ("osc.udp://:9000/", HostPort("127.0.0.1", 9000)),
    ],
)
def test_transport_urls(text: str, expected: HostPort) -> None:
    assert parse_hostport(text) == expected


def test_a_bare_address_is_udp_and_prints_as_before() -> None:
    assert parse_hostport("127.0.0.1:9000").protocol == "udp"
    assert str(parse_hostport("udp://127.0.0.1:9000")) == "127.0.0.1:9000"


def test_tcp_prints_as_a_url_that_parses_back() -> None:
    for text in (
        "tcp://127.0.0.1:9000",
        "tcp://[::1]:9000",
        "tcp+size://[::1]:1",
        "tcp+slip://1.2.3.4:5",
    ):
        assert str(parse_hostport(text)) == text
        assert parse_hostport(str(parse_hostport(text))) == parse_hostport(text)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("http://127.0.0.1:9000", "unknown transport 'http://'"),
        ("tcp+cobs://127.0.0.1:9000", "use udp://, tcp://, tcp+size://, tcp+slip://"),
        ("udp+size://127.0.0.1:9000", "unknown transport"),
        ("tcp+size://239.1.2.3:9000", "multicast"),
        ("osc.sctp://127.0.0.1:9000", "unknown transport"),
        ("tcp://", "the address is missing"),
        ("tcp://127.0.0.1:9000/chat", "has no path"),
        ("tcp://udp://127.0.0.1:9000", "has no path"),
        ("tcp://239.1.2.3:9000", "multicast"),
        ("tcp://127.0.0.1:x", "not a number"),
        ("tcp://127.0.0.1", "has no port"),
    ],
)
def test_url_mistakes_are_one_sentence(text: str, needle: str) -> None:
    with pytest.raises(AddressError) as info:
        parse_hostport(text)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_a_peer_url_without_a_host_needs_one() -> None:
    with pytest.raises(AddressError, match="a host is needed"):
        parse_hostport("osc.tcp://:9000", default_host=None)


def test_udp_and_tcp_ports_are_not_the_same_listener() -> None:
    listen = parse_hostport("127.0.0.1:9000")
    assert is_own_address(listen, parse_hostport("127.0.0.1:9000"))
    assert not is_own_address(listen, parse_hostport("tcp://127.0.0.1:9000"))


def test_one_tcp_peer_with_two_framings_is_a_conflict_two_peers_are_not() -> None:
    slip, size = parse_hostport("tcp://127.0.0.1:9000"), parse_hostport("tcp+size://127.0.0.1:9000")
    assert framing_conflict([slip, size]) == (
        "tcp://127.0.0.1:9000 and tcp+size://127.0.0.1:9000 are one peer given twice with two "
        "framings: give it once, with the framing it reads"
    )
    assert framing_conflict([slip, slip, parse_hostport("tcp+size://127.0.0.1:9001")]) is None
    assert framing_conflict([parse_hostport("127.0.0.1:9000"), size]) is None  # UDP and TCP
