"""The Endpoint on real loopback sockets: delivery, drops by reason, allow-list, peers down."""

from __future__ import annotations

import queue
import socket
import threading

import pytest

from oscsync import codec
from oscsync import timetag as tt
from oscsync.clock import FakeClock
from oscsync.hostport import HostPort, parse_hostport, parse_network
from oscsync.transport import Endpoint, Received, TransportError

WAIT = 5.0  # generous bound for a loopback datagram to arrive; never a timing assertion


def listen_here(**kwargs: object) -> tuple[Endpoint, queue.Queue[Received]]:
    inbox: queue.Queue[Received] = queue.Queue()
    endpoint = Endpoint(HostPort("127.0.0.1", 0), **kwargs)  # type: ignore[arg-type]
    endpoint.start(inbox.put)
    return endpoint, inbox


def raw_send(data: bytes, to: HostPort, source_host: str = "127.0.0.1") -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source_host, 0))
        sock.sendto(data, to.sockaddr)


def test_message_arrives_with_source_arrival_and_timetag() -> None:
    clock = FakeClock(start=1_800_000_000.0)
    listener, inbox = listen_here(clock=clock)
    with listener:
        assert listener.local_address is not None
        assert listener.local_address.port != 0
        stamp = tt.from_unix(1_800_000_000.5)
        with Endpoint(peers=[listener.local_address]) as sender:
            assert sender.send("/tick", [3], timetag=stamp) == 1
            sender.send("/chat", ["hi", 2.5])
        first = inbox.get(timeout=WAIT)
        second = inbox.get(timeout=WAIT)
    assert (first.address, first.args, first.timetag) == ("/tick", (3,), stamp)
    assert first.arrival == 1_800_000_000.0  # read through the injected clock
    assert first.source[0] == "127.0.0.1"
    assert (second.address, second.args, second.timetag) == ("/chat", ("hi", 2.5), None)
    assert listener.stats.messages == 2
    assert listener.stats.bundles == 1


def test_malformed_datagrams_are_counted_and_listener_keeps_serving() -> None:
    listener, inbox = listen_here()
    with listener:
        where = listener.local_address
        assert where is not None
        for bad in (b"", b"garbage!", b"/x\x00\x00,q\x00\x00", b"#bundle\x00\x00\x00", b"/ab"):
            raw_send(bad, where)
        raw_send(codec.encode_message("/ok", [1]), where)
        good = inbox.get(timeout=WAIT)
    assert good.address == "/ok"
    assert listener.stats.drops == {
        "empty": 1,
        "not-osc": 1,
        "bad-type-tag": 1,
        "bad-size": 2,
    }
    assert listener.stats.datagrams == 6


def test_allow_list_drops_strangers() -> None:
    listener, inbox = listen_here(allow=[parse_network("127.0.0.1/32")])
    with listener:
        where = listener.local_address
        assert where is not None
        raw_send(codec.encode_message("/stranger", []), where, source_host="127.0.0.2")
        raw_send(codec.encode_message("/friend", []), where, source_host="127.0.0.1")
        assert inbox.get(timeout=WAIT).address == "/friend"
    assert listener.stats.drops == {"not-allowed": 1}
    assert inbox.empty()


def test_peer_down_is_counted_warned_once_and_sending_goes_on() -> None:
    warnings: list[str] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        dead = HostPort("127.0.0.1", probe.getsockname()[1])
    live, inbox = listen_here()
    with live, Endpoint(peers=[dead, live.local_address], on_warning=warnings.append) as sender:  # type: ignore[list-item]
        received = 0
        for k in range(20):
            sender.send("/n", [k])
            received += 1 if inbox.get(timeout=WAIT) else 0
    assert received == 20  # the live peer got every message
    assert sender.stats.send_errors["refused"] >= 1
    assert len([w for w in warnings if "nothing is listening" in w]) == 1


def test_handler_errors_are_counted_not_raised() -> None:
    calls: list[str] = []
    done = threading.Event()

    def handler(received: Received) -> None:
        calls.append(received.address)
        if received.address == "/boom":
            raise RuntimeError("handler bug")
        done.set()

    listener = Endpoint(HostPort("127.0.0.1", 0))
    listener.start(handler)
    with listener:
        where = listener.local_address
        assert where is not None
        raw_send(codec.encode_message("/boom", []), where)
        raw_send(codec.encode_message("/after", []), where)
        assert done.wait(WAIT)
    assert calls == ["/boom", "/after"]
    assert listener.stats.drops["handler-error"] == 1


def test_close_stops_the_thread_promptly_and_twice_is_fine() -> None:
    listener, _ = listen_here()
    thread = listener._thread
    assert thread is not None and thread.is_alive()
    listener.close(timeout=WAIT)
    assert not thread.is_alive()
    listener.close()


def test_port_in_use_is_a_transport_error() -> None:
    with Endpoint(HostPort("127.0.0.1", 0)) as first:
        taken = first.local_address
        assert taken is not None
        with pytest.raises(TransportError, match="already in use"):
            Endpoint(taken)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        listener = Endpoint(parse_hostport("[::1]:0", allow_port_zero=True))
    except TransportError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    inbox: queue.Queue[Received] = queue.Queue()
    listener.start(inbox.put)
    with listener:
        where = listener.local_address
        assert where is not None and where.host == "::1"
        with Endpoint(peers=[where]) as sender:
            sender.send("/v6", ["ok"])
        assert inbox.get(timeout=WAIT).args == ("ok",)


def test_multicast_group_on_loopback() -> None:
    group = parse_hostport("239.255.77.1:0", allow_port_zero=True)
    inboxes: list[queue.Queue[Received]] = []
    listeners = []
    port = 0
    for _ in range(2):
        listener = Endpoint(HostPort(group.host, port), multicast_interface="127.0.0.1")
        assert listener.local_address is not None
        port = listener.local_address.port
        inbox: queue.Queue[Received] = queue.Queue()
        listener.start(inbox.put)
        listeners.append(listener)
        inboxes.append(inbox)
    try:
        with Endpoint(peers=[HostPort(group.host, port)], multicast_interface="127.0.0.1") as tx:
            tx.send("/tick", [1])
        for inbox in inboxes:  # both members of the group hear it
            assert inbox.get(timeout=WAIT).address == "/tick"
    finally:
        for listener in listeners:
            listener.close()


def test_replies_from_a_peer_arrive_on_its_socket() -> None:
    # A peer answering our source address (as a clock pong does) reaches our handler.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as far:
        far.bind(("127.0.0.1", 0))
        far.settimeout(WAIT)
        inbox: queue.Queue[Received] = queue.Queue()
        with Endpoint(peers=[HostPort("127.0.0.1", far.getsockname()[1])]) as near:
            near.start(inbox.put)
            near.send("/ping", [])
            _, source = far.recvfrom(1024)
            far.sendto(codec.encode_message("/pong", []), source)
            reply = inbox.get(timeout=WAIT)
    assert reply.address == "/pong"
    assert reply.via_peer


def test_datagrams_still_queued_at_close_are_counted() -> None:
    listener = Endpoint(HostPort("127.0.0.1", 0))  # never started: nothing is read
    where = listener.local_address
    assert where is not None
    for k in range(100):
        raw_send(codec.encode_message("/queued", [k]), where)
    assert listener.close()
    assert listener.stats.datagrams == 100
    assert listener.stats.drops == {"unread-at-close": 100}
    assert listener.stats.messages == 0


def test_escape_network_strings_in_handler_failure_warning() -> None:
    warnings: list[str] = []
    done = threading.Event()
    hostile = "/\x1b]0;owned\x07\x1b[2J\u202e"

    def handler(received: Received) -> None:
        if received.address == hostile:
            raise KeyError(received.address)
        done.set()

    listener = Endpoint(HostPort("127.0.0.1", 0), on_warning=warnings.append)
    listener.start(handler)
    with listener:
        where = listener.local_address
        assert where is not None
        raw_send(codec.encode_message(hostile, []), where)
        raw_send(codec.encode_message("/after", []), where)
        assert done.wait(WAIT)
    (warning,) = warnings
    assert warning.isprintable()
    assert "handler failed on /\\x1b]0;owned\\x07\\x1b[2J\\u202e" in warning


def test_escape_network_strings_in_every_cli_warning() -> None:
    from click.testing import CliRunner

    from oscsync.cli.runtime import AppContext

    app = AppContext.create()
    runner = CliRunner()
    with runner.isolation() as streams:
        app.warn("peer said \x1b[2J\u200b hello \\x41")
        text = streams[1].getvalue().decode()
    assert text == "warning: peer said \\x1b[2J\\u200b hello \\x41\n"
