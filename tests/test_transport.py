"""The Endpoint on real loopback sockets: delivery, drops by reason, allow-list, peers down."""

from __future__ import annotations

import errno
import ipaddress
import queue
import socket
import sys
import threading
from typing import ClassVar

import pytest

from oscsync.apps.dump import summary as dump_summary
from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import FakeClock, SystemClock
from oscsync.net import udp, udpsocket
from oscsync.net.hostport import HostPort, parse_hostport, parse_network
from oscsync.net.listening import bind_error_message
from oscsync.net.udp import Endpoint, TransportError
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received

WAIT = 5.0  # generous bound for a loopback datagram to arrive; never a timing assertion


def listen_here(**kwargs: object) -> tuple[Endpoint, queue.Queue[Received]]:
    inbox: queue.Queue[Received] = queue.Queue()
    endpoint = open_endpoint(HostPort("127.0.0.1", 0), **kwargs)  # type: ignore[arg-type]
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
        with open_endpoint(peers=[listener.local_address]) as sender:
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
    with (
        live,
        open_endpoint(peers=[dead, live.local_address], on_warning=warnings.append) as sender,
    ):  # type: ignore[list-item]
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

    listener = open_endpoint(HostPort("127.0.0.1", 0))
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
    with open_endpoint(HostPort("127.0.0.1", 0)) as first:
        taken = first.local_address
        assert taken is not None
        with pytest.raises(TransportError, match="already in use"):
            open_endpoint(taken)


def test_ipv6_loopback() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        listener = open_endpoint(parse_hostport("[::1]:0", allow_port_zero=True))
    except TransportError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    inbox: queue.Queue[Received] = queue.Queue()
    listener.start(inbox.put)
    with listener:
        where = listener.local_address
        assert where is not None and where.host == "::1"
        with open_endpoint(peers=[where]) as sender:
            sender.send("/v6", ["ok"])
        assert inbox.get(timeout=WAIT).args == ("ok",)


def test_multicast_group_on_loopback() -> None:
    group = parse_hostport("239.255.77.1:0", allow_port_zero=True)
    inboxes: list[queue.Queue[Received]] = []
    listeners = []
    port = 0
    for _ in range(2):
        listener = open_endpoint(HostPort(group.host, port), multicast_interface="127.0.0.1")
        assert listener.local_address is not None
        port = listener.local_address.port
        inbox: queue.Queue[Received] = queue.Queue()
        listener.start(inbox.put)
        listeners.append(listener)
        inboxes.append(inbox)
    try:
        with open_endpoint(
            peers=[HostPort(group.host, port)], multicast_interface="127.0.0.1"
        ) as tx:
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
        with open_endpoint(peers=[HostPort("127.0.0.1", far.getsockname()[1])]) as near:
            near.start(inbox.put)
            near.send("/ping", [])
            _, source = far.recvfrom(1024)
            far.sendto(codec.encode_message("/pong", []), source)
            reply = inbox.get(timeout=WAIT)
    assert reply.address == "/pong"
    assert reply.via_peer


def test_datagrams_still_queued_at_close_are_counted() -> None:
    listener = open_endpoint(HostPort("127.0.0.1", 0))  # never started: nothing is read
    where = listener.local_address
    assert where is not None
    for k in range(100):
        raw_send(codec.encode_message("/queued", [k]), where)
    assert listener.close()
    assert listener.stats.datagrams == 100
    assert listener.stats.drops == {"unread-at-close": 100}
    assert listener.stats.messages == 0


def test_datagrams_that_are_not_osc_or_not_allowed_warn_once_per_reason() -> None:
    warnings: list[str] = []
    with open_endpoint(
        HostPort("127.0.0.1", 0),
        allow=[ipaddress.ip_network("10.0.0.0/8")],
        on_warning=warnings.append,
    ) as endpoint:
        warnings.clear()  # the --allow mismatch warning (a loopback listener) is tested elsewhere
        for _ in range(3):
            endpoint.handle_datagram(b"chat hello;\n", ("10.0.0.5", 9000))  # PD's FUDI text
            endpoint.handle_datagram(b"/x\x00\x00,i\x00\x00\x00\x00\x00\x01", ("192.168.1.9", 1))
        endpoint.handle_datagram(b"\x1b[2Jnope!", ("10.0.0.5", 9000))  # 9 bytes: bad-size
    assert endpoint.stats.drops["not-allowed"] == 3
    assert len(warnings) == 3, warnings  # bad-size, not-allowed, not-osc: once each
    fudi, refused, bad_size = warnings
    assert "10.0.0.5:9000" in fudi and 'it reads "chat hello;\\n"' in fudi and "[packOSC]" in fudi
    assert "192.168.1.9:1" in refused and "not in --allow" in refused
    assert "not OSC" in bad_size and "\x1b" not in bad_size  # nothing raw from the network


def test_allow_that_cannot_match_a_loopback_listener_warns_at_start() -> None:
    warnings: list[str] = []
    with open_endpoint(
        HostPort("127.0.0.1", 0),
        allow=[ipaddress.ip_network("192.168.1.0/24")],
        on_warning=warnings.append,
    ):
        pass
    assert len(warnings) == 1 and "can never match" in warnings[0]


def test_escape_network_strings_in_handler_failure_warning() -> None:
    warnings: list[str] = []
    done = threading.Event()
    hostile = "/\x1b]0;owned\x07\x1b[2J\u202e"

    def handler(received: Received) -> None:
        if received.address == hostile:
            raise KeyError(received.address)
        done.set()

    listener = open_endpoint(HostPort("127.0.0.1", 0), on_warning=warnings.append)
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


# -- issue #20, items 8, 12, 14 ---------------------------------------------------------------


def test_ipv4_allow_on_dual_stack_listener() -> None:
    # #20 item 8: `--listen [::]:P --allow 127.0.0.1` must let 127.0.0.1 in; it arrives as
    # ::ffff:127.0.0.1 on a dual-stack socket.
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    try:
        listener = open_endpoint(
            parse_hostport("[::]:0", allow_port_zero=True),
            allow=[parse_network("127.0.0.1")],
        )
    except TransportError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    inbox: queue.Queue[Received] = queue.Queue()
    listener.start(inbox.put)
    with listener:
        where = listener.local_address
        assert where is not None
        raw_send(
            codec.encode_message("/stranger", []), HostPort("127.0.0.1", where.port), "127.0.0.2"
        )
        raw_send(codec.encode_message("/friend", []), HostPort("127.0.0.1", where.port))
        friend = inbox.get(timeout=WAIT)
    assert friend.address == "/friend"
    assert listener.stats.drops == {"not-allowed": 1}


def _flood(where: HostPort, count: int) -> None:
    data = codec.encode_message("/flood", [0] * 64)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect(where.sockaddr)
        for _ in range(count):
            sock.send(data)  # blocking: loopback drops only at the receiver's full buffer


def test_loss_accounting_reads_the_socket_drop_counter_at_close_even_with_a_stuck_thread() -> None:
    # #20 item 12: the kernel reports drops only on datagrams queued after them, so the last
    # ones were never counted; and a receive thread stuck in its handler made close() skip the
    # count altogether. sent == read + unread + dropped must hold exactly.
    if not sys.platform.startswith("linux"):
        pytest.skip("the socket's drop counter is read on Linux (SO_MEMINFO, /proc/net/udp)")
    release = threading.Event()
    entered = threading.Event()

    def stuck(_: Received) -> None:
        entered.set()
        release.wait(WAIT)

    listener = open_endpoint(HostPort("127.0.0.1", 0), recv_buffer=4096)
    where = listener.local_address
    assert where is not None
    listener.start(stuck)
    try:
        sent = 3000
        _flood(where, sent)
        assert entered.wait(WAIT)
        assert not listener.close(timeout=0.05)  # the thread is stuck in the handler
    finally:
        release.set()
    stats = listener.stats
    assert stats.drops["kernel-buffer-full"] > 0
    assert stats.drops["unread-at-close"] > 0
    assert stats.datagrams + stats.drops["kernel-buffer-full"] == sent
    assert stats.kernel_drops == "counted"


class _JumpingClock(SystemClock):
    """The system clock, plus a jump we make on purpose: shows when a stamp is read."""

    def __init__(self) -> None:
        super().__init__()
        self.jump = 0.0

    def monotonic_to_wall(self, mono: float) -> float:
        return super().monotonic_to_wall(mono) + self.jump


def test_kernel_receive_timestamps_stamp_arrival() -> None:
    # #20 item 14: a datagram that waited in the socket while the receive thread was busy is
    # stamped when the kernel received it, not when it was read.
    if not sys.platform.startswith("linux"):
        pytest.skip("SO_TIMESTAMPNS is Linux's (elsewhere arrival falls back to the clock read)")
    clock = _JumpingClock()
    release = threading.Event()
    inbox: queue.Queue[Received] = queue.Queue()

    def first_one_waits(received: Received) -> None:
        if received.address == "/first":
            release.wait(WAIT)
        inbox.put(received)

    listener = open_endpoint(HostPort("127.0.0.1", 0), clock=clock)
    where = listener.local_address
    assert where is not None
    listener.start(first_one_waits)
    with listener:
        raw_send(codec.encode_message("/first", []), where)
        sent_at = clock.now()
        raw_send(codec.encode_message("/second", []), where)
        # Anything read from the clock from now on is 0.5 s late: a stalled receive thread.
        # (Reads a second or more off the stamps, twice, are another clock: issue #27 item 16,
        # tests/test_clock_stamps.py.)
        clock.jump = 0.5
        release.set()
        first = inbox.get(timeout=WAIT)
        second = inbox.get(timeout=WAIT)
    assert first.address == "/first" and second.address == "/second"
    assert abs(second.arrival - sent_at) < 0.25  # the kernel's stamp, not a read after the jump
    assert listener.stats.arrival_stamps == "kernel"


# -- Windows and macOS code paths, simulated (issue #21) ------------------------------------

_WINDOWS_SO_EXCLUSIVEADDRUSE = -5  # ~SO_REUSEADDR, as winsock defines it


class _RecordingSocket(socket.socket):
    """A real socket that records its options and fakes the ones Linux does not have."""

    options: ClassVar[list[tuple[int, int, object]]] = []
    refuse_group_bind = False

    def setsockopt(self, level: int, option: int, value: object, *rest: object) -> None:  # type: ignore[override]
        _RecordingSocket.options.append((level, option, value))
        if option == _WINDOWS_SO_EXCLUSIVEADDRUSE:
            return None
        return super().setsockopt(level, option, value, *rest)  # type: ignore[call-overload]

    def bind(self, address: object) -> None:  # type: ignore[override]
        host = address[0] if isinstance(address, tuple) else ""
        if _RecordingSocket.refuse_group_bind and host.startswith("239."):
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")  # as Windows
        super().bind(address)  # type: ignore[arg-type]


@pytest.fixture
def recording_socket(monkeypatch: pytest.MonkeyPatch) -> type[_RecordingSocket]:
    _RecordingSocket.options = []
    _RecordingSocket.refuse_group_bind = False
    monkeypatch.setattr(socket, "socket", _RecordingSocket)
    return _RecordingSocket


def test_unicast_listener_takes_its_port_exclusively_where_so_exclusiveaddruse_exists(
    recording_socket: type[_RecordingSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "SO_EXCLUSIVEADDRUSE", _WINDOWS_SO_EXCLUSIVEADDRUSE, raising=False)
    with open_endpoint(HostPort("127.0.0.1", 0)):
        pass
    assert (socket.SOL_SOCKET, _WINDOWS_SO_EXCLUSIVEADDRUSE, 1) in recording_socket.options
    assert (socket.SOL_SOCKET, socket.SO_REUSEADDR, 1) not in recording_socket.options


def test_multicast_listener_shares_its_port_and_binds_the_wildcard_where_the_group_cannot_be_bound(
    recording_socket: type[_RecordingSocket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "SO_EXCLUSIVEADDRUSE", _WINDOWS_SO_EXCLUSIVEADDRUSE, raising=False)
    recording_socket.refuse_group_bind = True
    listener = Endpoint(HostPort("239.255.77.2", 0), multicast_interface="127.0.0.1", services={})
    inbox: queue.Queue[Received] = queue.Queue()
    listener.start(inbox.put)
    with listener:
        where = listener.local_address
        assert where is not None and where.host == "0.0.0.0"  # the wildcard, as on Windows
        group = HostPort("239.255.77.2", where.port)
        with open_endpoint(peers=[group], multicast_interface="127.0.0.1") as sender:
            sender.send("/tick", [1])
        assert inbox.get(timeout=WAIT).address == "/tick"
    options = recording_socket.options
    assert (socket.SOL_SOCKET, socket.SO_REUSEADDR, 1) in options
    assert (socket.SOL_SOCKET, _WINDOWS_SO_EXCLUSIVEADDRUSE, 1) not in options
    assert (socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1) in options  # receiver side: Windows


def test_dual_stack_listener_asks_for_ipv4_too(recording_socket: type[_RecordingSocket]) -> None:
    try:
        listener = open_endpoint(parse_hostport("[::]:0", allow_port_zero=True))
    except TransportError as exc:
        pytest.skip(f"no IPv6 here: {exc}")
    listener.close()
    assert (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0) in recording_socket.options


class _ScriptedSocket:
    """Stands in for a socket whose receives follow a script (data, or an error to raise)."""

    def __init__(self, *script: bytes | OSError) -> None:
        self.script = list(script)

    def _next(self) -> bytes:
        item = self.script.pop(0) if self.script else BlockingIOError()
        if isinstance(item, OSError):
            raise item
        return item

    def recvmsg(self, size: int, space: int = 0) -> tuple[bytes, list[object], int, object]:
        return self._next(), [], 0, ("127.0.0.1", 9000)

    def recvfrom_into(self, buffer: bytearray) -> tuple[int, object]:
        data = self._next()
        buffer[: len(data)] = data
        return len(data), ("127.0.0.1", 9000)


@pytest.mark.parametrize("read_with", ["recvmsg", "recvfrom_into"])
def test_connection_reset_from_a_receive_is_counted_and_reading_goes_on(read_with: str) -> None:
    # Windows reports an ICMP "port unreachable" for a datagram we sent as WSAECONNRESET on
    # the next receive, on any socket: it must not end the receive thread.
    warnings: list[str] = []
    endpoint = Endpoint(HostPort("127.0.0.1", 0), on_warning=warnings.append, services={})
    inbox: list[Received] = []
    endpoint._core.handler = inbox.append
    reset = ConnectionResetError(10054, "An existing connection was forcibly closed")
    fake = _ScriptedSocket(
        reset, codec.encode_message("/after", [1]), reset, codec.encode_message("/more", [])
    )
    drain = endpoint._drain_msg if read_with == "recvmsg" else endpoint._drain_from
    try:
        drain(fake, False)  # type: ignore[arg-type]
    finally:
        endpoint.close()
    assert [r.address for r in inbox] == ["/after", "/more"]
    assert endpoint.stats.send_errors == {"refused": 2}
    assert len(warnings) == 1 and "not listening" in warnings[0]


def test_without_recvmsg_datagrams_still_arrive_and_kernel_drops_are_reported_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(udp, "HAS_RECVMSG", False)
    monkeypatch.setattr(udp, "SO_MEMINFO", None)
    monkeypatch.setattr(udpsocket, "SO_MEMINFO", None)
    listener, inbox = listen_here()
    with listener:
        where = listener.local_address
        assert where is not None
        raw_send(codec.encode_message("/windows", ["ok"]), where)
        assert inbox.get(timeout=WAIT).args == ("ok",)
        raw_send(codec.encode_message("/unread", []), where)
    assert listener.stats.kernel_drops == "unavailable"
    assert listener.stats.arrival_stamps == "clock"
    assert "not reported on this platform" in listener.stats.platform_note()
    assert "not reported on this platform" in dump_summary(listener.stats, 1)  # never silent


def test_windows_refusing_a_port_is_explained_in_one_line() -> None:
    class WindowsError_(OSError):  # what a bind raises on Windows (winerror exists only there)
        winerror = 10013

    refused = WindowsError_(13, "An attempt was made to access a socket in a way forbidden")
    text = bind_error_message(HostPort("127.0.0.1", 9001), refused)
    assert "Windows refused the port" in text and "root" not in text
    assert "\n" not in text


def test_socket_drop_count_from_proc_net_udp_matches_so_meminfo(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Kernels before 4.14 have no drops field in SO_MEMINFO: /proc/net/udp says the same.
    if not sys.platform.startswith("linux"):
        pytest.skip("Linux's per-socket drop counter")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        _flood(HostPort("127.0.0.1", sock.getsockname()[1]), 500)
        from_meminfo = udpsocket.socket_drop_count(sock)
        monkeypatch.setattr(udpsocket, "SO_MEMINFO", 0x7FFF)  # no such option: EINVAL/ENOPROTOOPT
        from_proc = udpsocket.socket_drop_count(sock)
    assert from_meminfo is not None and from_meminfo > 0
    assert from_proc == from_meminfo


def test_close_after_a_stop_between_creating_and_starting_the_receive_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A stop signal raised between creating the receive thread and starting it (timetag monitor
    # exited 1 after SIGHUP once in CI): close() in the command's finally must not try to join a
    # thread that never started (RuntimeError), and must still close the socket.
    endpoint = Endpoint(HostPort("127.0.0.1", 0))

    def interrupted(thread: threading.Thread) -> threading.Thread:
        raise KeyboardInterrupt

    monkeypatch.setattr("oscsync.net.udp.threads.start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        endpoint.start(lambda received: None)
    monkeypatch.undo()
    assert endpoint.close() is True  # no thread is running
    assert endpoint._listen_sock is not None and endpoint._listen_sock.fileno() == -1
