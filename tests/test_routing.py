"""The address registry and the receive core (issue #12, items 3 and 4)."""

from __future__ import annotations

import queue
import socket

import pytest

from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import FakeClock
from oscsync.net.core import ReceiveCore, Transport
from oscsync.net.hostport import HostPort, parse_network
from oscsync.net.udp import Endpoint
from oscsync.osc import codec
from oscsync.osc.routing import AddressRegistry, Method, Received, is_pattern, matches, no_route
from oscsync.sync.ping import PING, SERVICE_METHODS, encode_ping

WAIT = 5.0  # generous bound for a loopback datagram to arrive; never a timing assertion


@pytest.mark.parametrize(
    ("pattern", "address", "expected"),
    [
        ("/tick", "/tick", True),
        ("/ti?k", "/tick", True),
        ("/t*", "/tick", True),
        ("/*", "/oscsync/clock/ping", False),  # * never crosses a /
        ("/*/*/ping", "/oscsync/clock/ping", True),
        ("/seq/[a-c]", "/seq/b", True),
        ("/seq/[!a-c]", "/seq/b", False),
        ("/seq/[!a-c]", "/seq/d", True),
        ("/{chat,tick}", "/tick", True),
        ("/{chat,tick}", "/tock", False),
        ("/a*b*c", "/aXbYc", True),
        ("/a*b*c", "/aXbY", False),
        ("/[abc", "/a", False),  # malformed: matches nothing
        ("/a}", "/a", False),
    ],
)
def test_osc_1_0_pattern_matching(pattern: str, address: str, expected: bool) -> None:
    assert matches(pattern, address) is expected


def test_a_hostile_pattern_is_matched_in_linear_steps() -> None:
    # A backtracking regex would take ages on this; the position-set matcher does not.
    assert not matches("/" + "*a" * 500 + "!", "/" + "a" * 60)


def test_exact_addresses_are_one_dict_lookup_and_unknown_ones_go_to_no_route() -> None:
    registry = AddressRegistry()
    seen: list[str] = []
    registry.add("/chat", lambda r: seen.append("chat"), "s", "one chat line")
    assert registry.resolved["/chat"] is registry.lookup("/chat")
    assert registry.lookup("/other") is no_route
    assert registry.methods() == (Method("/chat", "s", "one chat line"),)


def test_incoming_pattern_reaches_every_registered_address_it_matches() -> None:
    registry = AddressRegistry()
    seen: list[str] = []
    registry.add("/seq/kick", lambda r: seen.append("kick"))
    registry.add("/seq/snare", lambda r: seen.append("snare"))
    registry.add("/chat", lambda r: seen.append("chat"))
    registry.lookup("/seq/*")(_received("/seq/*"))
    assert sorted(seen) == ["kick", "snare"]


def test_registered_pattern_answers_plain_addresses_and_exact_wins() -> None:
    registry = AddressRegistry()
    seen: list[str] = []
    registry.add("/seq/*", lambda r: seen.append("any"))
    registry.add("/seq/kick", lambda r: seen.append("kick"))
    registry.lookup("/seq/hat")(_received("/seq/hat"))
    registry.lookup("/seq/kick")(_received("/seq/kick"))
    assert seen == ["any", "kick"]
    registry.remove("/seq/*")
    assert registry.lookup("/seq/hat") is no_route  # the cache was reset


def test_the_lookup_cache_is_bounded_under_a_flood_of_addresses() -> None:
    registry = AddressRegistry()
    registry.add("/chat", lambda r: None)
    for k in range(20_000):
        registry.lookup(f"/flood/{k}")
    assert len(registry.resolved) <= 4096
    assert "/chat" in registry.resolved


def test_registry_watchers_hear_each_change_until_unwatched() -> None:
    """What an advertiser keeps its TXT addresses= in step with (advertiser.Advertiser)."""
    registry = AddressRegistry()
    seen: list[tuple[str, ...]] = []
    unwatch = registry.watch(lambda: seen.append(tuple(m.path for m in registry.methods())))
    registry.add("/a", lambda r: None)
    registry.add("/b", lambda r: None)
    registry.remove("/a")
    registry.remove("/nothing")  # nothing changed: nobody is told
    unwatch()
    registry.add("/c", lambda r: None)
    assert seen == [("/a",), ("/a", "/b"), ("/b",)]


def test_is_pattern() -> None:
    assert is_pattern("/a/*") and is_pattern("/{a,b}") and not is_pattern("/a/b")


def _received(address: str) -> Received:
    return Received(codec.Message(address, (), ""), ("127.0.0.1", 9000), 0.0)


def test_receive_core_needs_no_socket_and_counts_by_reason() -> None:
    core = ReceiveCore(FakeClock(start=100.0), allow=[parse_network("10.0.0.0/8")])
    chats: list[Received] = []
    rest: list[Received] = []
    core.registry.add("/chat", chats.append, "s", "one chat line")
    core.handler = rest.append
    core.feed(codec.encode_message("/chat", ["hi"]), ("10.0.0.2", 9000), 5.0)
    core.feed(codec.encode_message("/tick", [1]), ("10.0.0.2", 9000))
    core.feed(codec.encode_message("/chat", ["no"]), ("192.168.1.2", 9000))
    core.feed(b"\x00junk", ("10.0.0.2", 9000))
    assert [(r.address, r.arrival) for r in chats] == [("/chat", 5.0)]
    assert [(r.address, r.arrival) for r in rest] == [("/tick", 100.0)]
    assert core.stats.datagrams == 4 and core.stats.messages == 2
    assert core.stats.drops["not-allowed"] == 1 and core.stats.dropped == 2


def test_a_failing_handler_is_counted_not_raised() -> None:
    core = ReceiveCore(FakeClock())

    def broken(received: Received) -> None:
        raise ValueError("boom")

    core.registry.add("/x", broken)
    core.feed(codec.encode_message("/x", []), ("127.0.0.1", 1))
    assert core.stats.drops["handler-error"] == 1


def test_the_udp_endpoint_is_a_transport_and_the_bare_one_answers_no_pings() -> None:
    bare: Transport = Endpoint(clock=FakeClock())
    with open_endpoint(clock=FakeClock()) as standard, bare:  # type: ignore[attr-defined]
        assert PING in standard.registry and PING not in bare.registry
        assert [m.path for m in standard.registry.methods()] == [PING]
        assert standard.registry.methods()[0].types == "it"
        seen: list[Received] = []
        bare.start(seen.append)
        bare.close()
        assert isinstance(bare, Endpoint)
        bare.handle_datagram(encode_ping(1, 1 << 40), ("127.0.0.1", 4000))
        assert [r.address for r in seen] == [PING]  # the transport knows no clock protocol


def _listener() -> tuple[socket.socket, HostPort]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(WAIT)
    return sock, HostPort("127.0.0.1", sock.getsockname()[1])


def test_set_peers_replaces_the_peer_list_while_running() -> None:
    first, first_at = _listener()
    second, second_at = _listener()
    replies: queue.Queue[Received] = queue.Queue()
    with first, second, Endpoint(peers=[first_at], clock=FakeClock()) as sender:
        sender.start(replies.put)
        assert sender.send("/a", [1]) == 1
        assert codec.decode(first.recv(1024))[0].address == "/a"
        sender.set_peers([second_at])
        assert sender.peers == [second_at]
        assert sender.send("/b", [2]) == 1
        data, source = second.recvfrom(1024)
        assert codec.decode(data)[0].address == "/b"
        # The new peer's socket is read by the running receive thread: its answer arrives.
        second.sendto(codec.encode_message("/back", []), source)
        assert replies.get(timeout=WAIT).address == "/back"
        sender.set_peers([first_at, second_at])
        assert sender.send("/c", [3]) == 2
        assert sender.stats.send_errors == {}


def test_chat_declares_what_it_answers_to_and_oscquery_agrees() -> None:
    from oscsync.apps.chat import CHAT_METHOD, ChatSession
    from oscsync.apps.endpoints import Endpoint
    from oscsync.discovery.oscquery import LiveNamespace

    with Endpoint(clock=FakeClock()) as endpoint:
        ChatSession(endpoint, lambda text, is_chat: None)
        registry = endpoint.transport.registry
        assert set(registry.methods()) == {CHAT_METHOD, SERVICE_METHODS[PING]}
        # OSCQuery describes the registry itself: there is no second table to agree with.
        tree = LiveNamespace(registry)()
        assert tree["CONTENTS"]["chat"]["TYPE"] == CHAT_METHOD.types
        assert tree["CONTENTS"]["oscsync"]["CONTENTS"]["clock"]["CONTENTS"]["ping"]["TYPE"] == "it"


def test_listen_sessions_register_what_they_answer_to() -> None:
    from oscsync.apps.metronome import TICK_METHOD
    from oscsync.apps.sequence import VOICE_METHODS
    from oscsync.apps.sessions import SequenceListenSession, TickListenSession

    assert TickListenSession.methods == (TICK_METHOD,)
    assert [m.path for m in SequenceListenSession.methods] == [
        "/seq/kick",
        "/seq/snare",
        "/seq/hat",
    ]
    assert all(m.types == "fi" for m in VOICE_METHODS)


def test_one_handler_under_several_addresses_is_called_once_per_pattern_match() -> None:
    registry = AddressRegistry()
    seen: list[str] = []

    def voice(received: object) -> None:
        seen.append("voice")

    for method in ("/seq/kick", "/seq/snare", "/seq/hat"):
        registry.add(method, voice)
    registry.lookup("/seq/*")(None)  # type: ignore[arg-type]
    assert seen == ["voice"]  # as before the voices were registered: one call, one count
