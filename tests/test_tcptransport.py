"""TcpEndpoint: tcp:// listen and peers through the shared receive core (issue #16)."""

from __future__ import annotations

import queue
import socket

import pytest

from oscsync.apps.endpoints import open_endpoint
from oscsync.net.framing import Framing, size_encode, slip_encode
from oscsync.net.hostport import HostPort, parse_hostport, parse_network
from oscsync.net.tcpendpoint import TcpEndpoint
from oscsync.net.udp import Endpoint, TransportError
from oscsync.osc import codec
from oscsync.osc.routing import Received
from oscsync.sync.ping import PONG, encode_ping

TCP_ANY = HostPort("127.0.0.1", 0, "tcp")


def test_open_endpoint_builds_tcp_only_when_an_address_says_so() -> None:
    with open_endpoint(HostPort("127.0.0.1", 0)) as udp:
        assert type(udp) is Endpoint
    with open_endpoint(TCP_ANY) as tcp:
        assert isinstance(tcp, TcpEndpoint)
        assert tcp.local_address is not None and tcp.local_address.is_tcp


@pytest.mark.parametrize("framing", ["slip", "size"])
def test_messages_cross_between_two_tcp_endpoints(framing: Framing) -> None:
    got: queue.Queue[Received] = queue.Queue()
    with open_endpoint(TCP_ANY) as listener:
        listener.start(got.put)
        assert listener.local_address is not None
        with open_endpoint(peers=[listener.local_address], framing=framing) as sender:
            assert sender.send("/chat", ["hello", 1, 2.5]) == 1
            assert sender.send("/later", [7], timetag=0xDD9D15A7922F48C2) == 1
            first, second = got.get(timeout=10), got.get(timeout=10)
    assert (first.address, first.args, first.timetag) == ("/chat", ("hello", 1, 2.5), None)
    assert (second.address, second.args, second.timetag) == ("/later", (7,), 0xDD9D15A7922F48C2)
    assert first.source[0] == "127.0.0.1" and not first.via_peer
    assert listener.stats.messages == 2 and listener.stats.bundles == 1


def test_a_clock_ping_over_tcp_is_answered_on_the_same_connection() -> None:
    pongs: queue.Queue[Received] = queue.Queue()
    with open_endpoint(TCP_ANY) as server:
        server.start()
        assert server.local_address is not None
        with TcpEndpoint(peers=[server.local_address]) as client:
            client.start(pongs.put)
            client.send_bytes(encode_ping(5, 0xDD9D15A7922F48C2))
            pong = pongs.get(timeout=10)
    assert pong.address == PONG and pong.via_peer
    assert pong.args[:2] == (5, 0xDD9D15A7922F48C2)


def test_frames_that_are_not_osc_are_counted_by_reason_and_the_connection_goes_on() -> None:
    got: queue.Queue[Received] = queue.Queue()
    warnings: list[str] = []
    with TcpEndpoint(TCP_ANY, on_warning=warnings.append) as listener:
        listener.start(got.put)
        assert listener.local_address is not None
        with socket.create_connection(listener.local_address.sockaddr, timeout=10) as client:
            client.sendall(
                slip_encode(b"hello from netsend;\n")
                + b"\xc0bad\xdb!\xc0"
                + slip_encode(codec.encode_message("/ok", [1]))
            )
            assert got.get(timeout=10).address == "/ok"
    assert listener.stats.drops["bad-slip-escape"] == 1
    assert listener.stats.dropped == 2  # the text frame too, under its decode reason
    assert any("[netsend]" in w for w in warnings)


def test_allow_refuses_a_tcp_client_at_connect() -> None:
    warnings: list[str] = []
    with TcpEndpoint(
        TCP_ANY, allow=[parse_network("10.0.0.0/8")], on_warning=warnings.append
    ) as listener:
        listener.start()
        assert listener.local_address is not None
        with socket.create_connection(listener.local_address.sockaddr, timeout=10) as client:
            assert client.recv(10) == b""
        assert listener.listener is not None
        assert listener.listener.stats.refused["not-allowed"] == 1
    assert any("can never match" in w for w in warnings)  # loopback listener, 10/8 allowed


def test_udp_listener_with_a_tcp_peer_in_one_endpoint() -> None:
    got: queue.Queue[Received] = queue.Queue()
    with open_endpoint(TCP_ANY) as tcp_side, open_endpoint(HostPort("127.0.0.1", 0)) as udp_side:
        tcp_side.start(got.put)
        udp_side.start(got.put)
        assert tcp_side.local_address is not None and udp_side.local_address is not None
        with open_endpoint(
            HostPort("127.0.0.1", 0), [tcp_side.local_address, udp_side.local_address]
        ) as mixed:
            assert isinstance(mixed, TcpEndpoint)
            assert mixed.local_address is not None and not mixed.local_address.is_tcp
            assert mixed.send("/both") == 2
            assert [got.get(timeout=10).address for _ in range(2)] == ["/both", "/both"]
        assert tcp_side.stats.messages == 1 and udp_side.stats.messages == 1


def test_a_tcp_port_in_use_is_a_transport_error_in_one_line() -> None:
    with open_endpoint(TCP_ANY) as first:
        assert first.local_address is not None
        with pytest.raises(TransportError) as info:
            TcpEndpoint(first.local_address)
    assert "already in use" in str(info.value) and "\n" not in str(info.value)


def test_size_prefixed_client_is_answered_in_its_framing() -> None:
    with open_endpoint(TCP_ANY) as server:
        server.start()
        assert server.local_address is not None
        with socket.create_connection(server.local_address.sockaddr, timeout=10) as client:
            client.sendall(size_encode(encode_ping(1, 0xDD9D15A7922F48C2)))
            head = client.recv(4)
            size = int.from_bytes(head, "big")
            body = b""
            while len(body) < size:
                body += client.recv(size - len(body))
    (pong,) = codec.decode(body)
    assert pong.address == PONG and pong.args[0] == 1


def test_close_counts_packets_that_never_reached_a_tcp_peer() -> None:
    port = parse_hostport("tcp://127.0.0.1:1")
    endpoint = TcpEndpoint(peers=[port], flush_timeout=0.0)
    endpoint.send("/lost")
    endpoint.close()
    assert endpoint.stats.send_errors["undelivered:unsent-at-close"] == 1


def test_the_udp_endpoint_refuses_a_tcp_address_instead_of_sending_udp_to_it() -> None:
    with pytest.raises(TransportError, match="UDP only"):
        Endpoint(peers=[HostPort("127.0.0.1", 9, "tcp")])
    with pytest.raises(TransportError, match="UDP only"):
        Endpoint(TCP_ANY)
    with Endpoint() as udp, pytest.raises(TransportError, match="UDP only"):
        udp.set_peers([HostPort("127.0.0.1", 9, "tcp")])


def test_an_endpoint_that_fails_to_open_closes_its_listener_and_senders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second peer's sender cannot be made (out of file descriptors): the listener made
    before it gives its port back, and the first sender is closed."""
    from oscsync.net import tcpendpoint
    from oscsync.net.tcplistener import TcpListener
    from oscsync.net.tcpsender import TcpSender

    listeners: list[TcpListener] = []
    senders: list[TcpSender] = []

    class Listener(TcpListener):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            listeners.append(self)

    def sender(*args: object, **kwargs: object) -> TcpSender:
        if senders:
            raise OSError(24, "Too many open files")
        senders.append(TcpSender(*args, **kwargs))  # type: ignore[arg-type]
        return senders[0]

    monkeypatch.setattr(tcpendpoint, "TcpListener", Listener)
    monkeypatch.setattr(tcpendpoint, "TcpSender", sender)
    peers = [HostPort("127.0.0.1", 9, "tcp"), HostPort("127.0.0.1", 10, "tcp")]
    with pytest.raises(TransportError, match="Too many open files"):
        TcpEndpoint(TCP_ANY, peers)
    assert listeners[0]._sock.fileno() == -1
    assert senders[0]._closed


def test_set_peers_while_the_endpoint_closes_leaves_no_sender_open(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A peer follower's thread re-resolves @NAME while close() is closing the senders: the
    new peer is refused as after close, instead of getting a sender nobody closes."""
    from oscsync.net import tcpendpoint
    from oscsync.net.tcpsender import TcpSender

    made: list[TcpSender] = []

    def sender(*args: object, **kwargs: object) -> TcpSender:
        made.append(TcpSender(*args, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    monkeypatch.setattr(tcpendpoint, "TcpSender", sender)
    first, moved = HostPort("127.0.0.1", 9, "tcp"), HostPort("127.0.0.1", 10, "tcp")
    endpoint = TcpEndpoint(peers=[first], flush_timeout=0.0)
    close_sender = endpoint._close_sender
    refused: list[Exception] = []

    def close_while_following(s: TcpSender, flush_timeout: float) -> bool:
        try:  # what the follower's thread does between two senders being closed
            endpoint.set_peers([moved])
        except RuntimeError as exc:
            refused.append(exc)
        return close_sender(s, flush_timeout)

    monkeypatch.setattr(endpoint, "_close_sender", close_while_following)
    endpoint.close()
    assert [str(exc) for exc in refused] == ["endpoint is closed"]
    assert made and all(s._closed for s in made)


def test_one_tcp_peer_with_two_framings_is_refused_before_anything_is_sent() -> None:
    slip, size = HostPort("127.0.0.1", 9, "tcp"), HostPort("127.0.0.1", 9, "tcp", "size")
    with pytest.raises(TransportError, match="one peer given twice with two framings"):
        TcpEndpoint(peers=[slip, size])
    with TcpEndpoint(peers=[slip], flush_timeout=0.0) as endpoint:
        with pytest.raises(TransportError, match="two framings"):
            endpoint.set_peers([slip, size])
        assert endpoint.peers == [slip] and list(endpoint._senders) == [slip]
