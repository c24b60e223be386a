"""TCP listener and sender on loopback: many clients, bounded costs, reconnects (issue #16)."""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from oscsync.clock import FakeClock
from oscsync.net.framing import size_encode, slip_encode
from oscsync.net.hostport import HostPort
from oscsync.net.tcplistener import TcpListener
from oscsync.net.tcpsender import MISMATCH_WINDOW, Backoff, TcpSender
from waiting import wait_until

LOOPBACK = HostPort("127.0.0.1", 0, "tcp")


@pytest.fixture
def received() -> queue.Queue[tuple[bytes, tuple[str, int]]]:
    return queue.Queue()


@pytest.fixture
def listener(received: queue.Queue[tuple[bytes, tuple[str, int]]]) -> Iterator[TcpListener]:
    warnings: list[str] = []
    with TcpListener(
        LOOPBACK, lambda p, s, a: received.put((p, s)), on_warning=warnings.append
    ) as served:
        served.warnings = warnings  # type: ignore[attr-defined]
        served.start()
        yield served


def take(received: queue.Queue[tuple[bytes, tuple[str, int]]], n: int) -> list[bytes]:
    return [received.get(timeout=10)[0] for _ in range(n)]


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    wait_until(condition, timeout, "the listener or sender to catch up")


def connect(where: HostPort) -> socket.socket:
    return socket.create_connection(where.sockaddr, timeout=10)


def test_two_clients_at_once_one_slip_one_size_prefixed(
    listener: TcpListener, received: queue.Queue[tuple[bytes, tuple[str, int]]]
) -> None:
    with connect(listener.local_address) as a, connect(listener.local_address) as b:
        a.sendall(slip_encode(b"/a\x00\x00,\x00\x00\x00"))
        b.sendall(size_encode(b"/b\x00\x00,\x00\x00\x00"))
        got = sorted(take(received, 2))
    assert got == [b"/a\x00\x00,\x00\x00\x00", b"/b\x00\x00,\x00\x00\x00"]
    assert listener.stats.connections == 2


def test_bad_slip_frame_is_counted_and_the_connection_resynchronises(
    listener: TcpListener, received: queue.Queue[tuple[bytes, tuple[str, int]]]
) -> None:
    with connect(listener.local_address) as client:
        client.sendall(b"\xc0junk\xdbX\xc0" + slip_encode(b"/after"))
        assert take(received, 1) == [b"/after"]
    assert listener.stats.drops["bad-slip-escape"] == 1
    assert listener.stats.closed["peer-closed"] in (0, 1)


def test_size_prefix_past_the_limit_closes_the_connection_with_a_warning(
    received: queue.Queue[tuple[bytes, tuple[str, int]]],
) -> None:
    warnings: list[str] = []
    with TcpListener(
        LOOPBACK, lambda p, s, a: received.put((p, s)), on_warning=warnings.append, max_frame=1000
    ) as served:
        served.start()
        with connect(served.local_address) as client:
            client.sendall(struct.pack(">i", 1001) + b"x" * 100)
            # The listener closes its end: the client reads end-of-stream.
            assert client.recv(10) == b""
    assert served.stats.closed["bad-size"] == 1
    assert any("closed the TCP connection" in w and "a size prefix of 1001 bytes (limit 1000)" in w
               for w in warnings)  # fmt: skip


def test_a_hundred_short_lived_connections_all_delivered_and_no_descriptor_kept(
    listener: TcpListener, received: queue.Queue[tuple[bytes, tuple[str, int]]]
) -> None:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("counting open descriptors needs /proc/self/fd")
    before = len(os.listdir("/proc/self/fd"))
    for n in range(100):
        with connect(listener.local_address) as client:
            client.sendall(
                size_encode(b"/n" + str(n).encode()) if n % 2 else slip_encode(b"/n%d" % n)
            )
    got = sorted(take(received, 100))
    assert got == sorted(b"/n%d" % n for n in range(100))
    # The listener reads each end-of-stream soon after the last packet; wait for it, bounded.
    eventually(lambda: listener.connection_count == 0)
    assert listener.stats.connections == 100
    assert listener.stats.closed["peer-closed"] == 100, listener.stats.closed
    # Each socket is closed just after it leaves the table: the count comes back, bounded wait.
    eventually(lambda: len(os.listdir("/proc/self/fd")) <= before)


def test_a_one_megabyte_packet_crosses_from_sender_to_listener(
    listener: TcpListener, received: queue.Queue[tuple[bytes, tuple[str, int]]]
) -> None:
    blob = bytes(range(256)) * 4096
    for mode in ("slip", "size"):
        sender = TcpSender(listener.local_address, framing_mode=mode)  # type: ignore[arg-type]
        try:
            assert sender.send(blob)
            assert sender.flush(10)
            assert take(received, 1) == [blob]
        finally:
            sender.close()
        assert sender.stats.sent == 1 and sender.stats.undelivered == 0


def test_listener_refuses_hosts_not_allowed() -> None:
    warnings: list[str] = []
    with TcpListener(
        LOOPBACK, lambda p, s, a: None, allowed=lambda host: False, on_warning=warnings.append
    ) as served:
        served.start()
        with connect(served.local_address) as client:
            assert client.recv(10) == b""
    assert served.stats.refused["not-allowed"] == 1
    assert served.stats.connections == 0
    assert "not in --allow" in warnings[0]


def test_past_its_connection_limit_the_listener_leaves_new_clients_waiting(
    received: queue.Queue[tuple[bytes, tuple[str, int]]],
) -> None:
    # The slot's holder stays active for the test's length (evict_after): the newcomer waits.
    warnings: list[str] = []
    with TcpListener(
        LOOPBACK,
        lambda p, s, a: received.put((p, s)),
        max_connections=1,
        evict_after=3600,
        on_warning=warnings.append,
    ) as served:
        served.start()
        with connect(served.local_address) as first:
            first.sendall(slip_encode(b"/first"))
            assert take(received, 1) == [b"/first"]
            with connect(served.local_address) as second:
                second.sendall(slip_encode(b"/second"))
                eventually(lambda: served.stats.paused == 1)
                assert received.empty() and served.connection_count == 1
                first.close()
                assert take(received, 1) == [b"/second"]  # served once a slot is free
    assert served.stats.connections == 2
    assert "new connections wait until one is idle or closes" in warnings[0]


def test_silent_stalled_and_quiet_connections_are_closed_on_the_fake_clock(
    fake_clock: FakeClock,
) -> None:
    served = TcpListener(
        LOOPBACK,
        lambda p, s, a: None,
        clock=fake_clock,
        idle_timeout=30,
        frame_timeout=5,
        quiet_timeout=600,
    )
    clients = []
    try:
        _silent, stalled, chatty = clients = [connect(served.local_address) for _ in range(3)]
        while served.connection_count < 3:
            served.poll(0.1)
        stalled.sendall(b"\xc0/half-a-fr")
        chatty.sendall(slip_encode(b"/one"))
        while served.stats.bytes < 11 + 6:
            served.poll(0.1)
        assert served.next_timeout() == 5
        fake_clock.advance(5)
        served.poll(0)
        assert served.stats.closed == {"frame-timeout": 1}
        assert served.stats.drops["unterminated-frame"] == 1
        assert served.next_timeout() == 25
        fake_clock.advance(25)
        served.poll(0)  # never sent a packet: closed after idle_timeout
        assert served.stats.closed == {"frame-timeout": 1, "idle": 1}
        assert served.connection_count == 1  # the one that sent a packet is kept longer
        fake_clock.advance(570)
        served.poll(0)
        assert served.stats.closed == {"frame-timeout": 1, "idle": 1, "quiet": 1}
        assert all(client.recv(10) == b"" for client in clients)
    finally:
        for client in clients:
            client.close()
        served.close()


def test_partial_frames_past_the_buffer_budget_close_the_connection(
    fake_clock: FakeClock,
) -> None:
    served = TcpListener(LOOPBACK, lambda p, s, a: None, clock=fake_clock, buffer_budget=1000)
    try:
        clients = [connect(served.local_address) for _ in range(2)]
        while served.connection_count < 2:
            served.poll(0.1)
        clients[0].sendall(b"\xc0" + b"x" * 600)
        clients[1].sendall(b"\xc0" + b"y" * 600)
        while served.stats.bytes < 1202 and served.stats.closed["buffer-budget"] == 0:
            served.poll(0.1)
        assert served.stats.closed["buffer-budget"] == 1
        assert served.connection_count == 1
    finally:
        for client in clients:
            client.close()
        served.close()


def test_reply_goes_back_on_the_same_connection_in_its_framing(
    received: queue.Queue[tuple[bytes, tuple[str, int]]],
) -> None:
    served: TcpListener

    def echo(packet: bytes, source: tuple[str, int], arrival: float) -> None:
        served.reply(source, b"/pong")

    with TcpListener(LOOPBACK, echo) as served:
        served.start()
        with connect(served.local_address) as client:
            client.sendall(size_encode(b"/ping"))
            assert client.recv(100) == size_encode(b"/pong")


def test_backoff_doubles_to_its_cap_and_resets(fake_clock: FakeClock) -> None:
    backoff = Backoff(fake_clock, first=0.125, maximum=1.0)
    assert backoff.wait() == 0
    assert [backoff.failed() for _ in range(5)] == [0.125, 0.25, 0.5, 1.0, 1.0]
    assert backoff.wait() == 1.0
    fake_clock.advance(1.0)
    assert backoff.wait() == 0
    backoff.succeeded()
    assert backoff.failed() == 0.125


def test_sender_connects_lazily_and_send_never_waits_for_an_absent_peer() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    sender = TcpSender(HostPort("127.0.0.1", port, "tcp"), max_queue_packets=3)
    try:
        assert sender.stats.connects == 0 and not sender.connected
        for n in range(10):
            sender.send(b"/n%d" % n)  # nothing listens: queued, never blocking
        assert not sender.flush(5)  # says so as soon as the connection is refused
        assert sender.stats.connect_failures["ECONNREFUSED"] >= 1
        assert sender.stats.dropped["queue-full"] == 7
    finally:
        sender.close()
    assert sender.stats.dropped["unsent-at-close"] == 3


def test_sender_refuses_a_packet_over_the_byte_cap_without_emptying_the_queue(
    fake_clock: FakeClock,
) -> None:
    sender = TcpSender(
        HostPort("127.0.0.1", 9, "tcp"), clock=fake_clock, max_queue_bytes=64, run_thread=False
    )
    assert sender.send(b"/a") and sender.send(b"/b")
    assert not sender.send(b"/big" + bytes(100))  # framed, over 64 bytes: never fits
    assert sender.stats.dropped["queue-full"] == 1
    assert list(sender._queue.packets) == [slip_encode(b"/a"), slip_encode(b"/b")]
    sender.close()


def test_sender_drop_newest_keeps_the_first_packets(fake_clock: FakeClock) -> None:
    sender = TcpSender(
        HostPort("127.0.0.1", 9, "tcp"), clock=fake_clock, max_queue_packets=2, drop="newest",
        run_thread=False,
    )  # fmt: skip
    assert [sender.send(b"/%d" % n) for n in range(4)] == [True, True, False, False]
    assert sender.stats.dropped["queue-full"] == 2
    assert list(sender._queue.packets) == [slip_encode(b"/0"), slip_encode(b"/1")]
    sender.close()


def test_sender_reconnects_when_the_peer_restarts_on_the_same_port(
    received: queue.Queue[tuple[bytes, tuple[str, int]]],
) -> None:
    warnings: list[str] = []
    first = TcpListener(LOOPBACK, lambda p, s, a: received.put((p, s)))
    first.start()
    where = first.local_address
    sender = TcpSender(where, on_warning=warnings.append)
    try:
        sender.send(b"/one")
        assert take(received, 1) == [b"/one"]
        first.close()  # the peer goes away ...
        second = TcpListener(where, lambda p, s, a: received.put((p, s)))  # ... and comes back
        second.start()
        try:
            # Packets sent meanwhile are queued; the first may be written into the dead
            # connection and lost (TCP cannot say), the rest arrive after the reconnect.
            for n in range(50):
                sender.send(b"/again%d" % n)
                try:
                    packet = received.get(timeout=0.2)[0]
                except queue.Empty:
                    continue
                assert packet.startswith(b"/again")
                break
            else:
                raise AssertionError("never reconnected")
            assert sender.stats.connects >= 2
            assert any("reconnected" in w for w in warnings)
        finally:
            second.close()
    finally:
        sender.close()


def test_sender_hands_replies_to_its_packet_handler() -> None:
    replies: queue.Queue[bytes] = queue.Queue()
    served: TcpListener

    def echo(packet: bytes, source: tuple[str, int], arrival: float) -> None:
        served.reply(source, packet + b"!")

    with TcpListener(LOOPBACK, echo) as served:
        served.start()
        sender = TcpSender(served.local_address, on_packet=lambda p, s, a: replies.put(p))
        try:
            sender.send(b"/ping")
            assert replies.get(timeout=10) == b"/ping!"
        finally:
            sender.close()


def test_a_connection_starting_with_a_bundle_omits_the_leading_end_for_liblo() -> None:
    # liblo's detect_slip takes END "#bun" for a size prefix (liblo 0.31 to 0.35): the first
    # frame of a connection starts with the bundle itself; later frames are double-END.
    bundle = b"#bundle\x00" + bytes(7) + b"\x01"
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = TcpSender(HostPort("127.0.0.1", server.getsockname()[1], "tcp"))
        try:
            sender.send(bundle)
            sender.send(bundle)
            assert sender.flush(10)
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                wanted = len(bundle) * 2 + 3
                data = b""
                while len(data) < wanted:
                    data += conn.recv(wanted)
        finally:
            sender.close()
    assert data == bundle + b"\xc0" + b"\xc0" + bundle + b"\xc0"


def test_sender_reconnects_quietly_when_the_peer_closed_an_idle_connection(
    fake_clock: FakeClock, received: queue.Queue[tuple[bytes, tuple[str, int]]]
) -> None:
    # The listener runs on a fake clock so its quiet timeout can be jumped over.
    served = TcpListener(
        LOOPBACK, lambda p, s, a: received.put((p, s)), clock=fake_clock, quiet_timeout=60
    )
    warnings: list[str] = []
    sender = TcpSender(served.local_address, on_warning=warnings.append)
    try:
        sender.send(b"/before")
        while received.empty():
            served.poll(0.1)
        fake_clock.advance(60)
        served.poll(0)
        assert served.stats.closed["quiet"] == 1
        eventually(lambda: sender.stats.closed_by_peer == 1)
        sender.send(b"/after")
        while received.qsize() < 2:
            served.poll(0.1)
        assert [received.get()[0] for _ in range(2)] == [b"/before", b"/after"]
        assert sender.stats.connects == 2 and sender.stats.undelivered == 0
        assert not any("lost" in w for w in warnings)
    finally:
        sender.close()
        served.close()


def test_a_peer_that_never_reads_costs_the_caller_nothing_and_drops_are_counted() -> None:
    # A scheduler thread calls send(); a peer that accepts and never reads must not hold it up.
    # The kernel's buffers fill, then the bounded queue, then the oldest packets are dropped.
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = TcpSender(
            HostPort("127.0.0.1", server.getsockname()[1], "tcp"), max_queue_bytes=1024 * 1024
        )
        conn = None
        try:
            packet = b"/big\x00\x00\x00\x00,b\x00\x00" + bytes(65536)
            for _ in range(300):  # ~20 MB: more than loopback's buffers and the queue hold
                sender.send(packet)
            conn, _ = server.accept()  # accepted, never read
            assert sender.stats.queued == 300
            eventually(lambda: sender.stats.dropped["queue-full"] > 0)
        finally:
            sender.close()
            if conn is not None:
                conn.close()
    stats = sender.stats  # every packet is accounted for: written, dropped, or unsent at close
    assert stats.sent + stats.undelivered == stats.queued


def test_ipv6_loopback_over_tcp(received: queue.Queue[tuple[bytes, tuple[str, int]]]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        served = TcpListener(HostPort("::1", 0, "tcp"), lambda p, s, a: received.put((p, s)))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with served:
        served.start()
        where = served.local_address
        sender = TcpSender(where)
        try:
            sender.send(b"/v6")
            packet, source = received.get(timeout=10)
        finally:
            sender.close()
    assert packet == b"/v6" and source[0] == "::1"
    assert str(where).startswith("tcp://[::1]:")


@pytest.mark.parametrize(
    ("start", "said"),
    [
        (b"hello world;\n", 'it reads "hello world;\\n" (text, e.g. from [netsend]'),
        (b"\x16\x03\x01\x02\x00\x01", "it starts with 16 03 01 02 00 01, neither SLIP"),
    ],
)
def test_a_stream_that_is_not_osc_at_all_is_named_and_closed(start: bytes, said: str) -> None:
    # Pure Data's [netsend] (FUDI text over TCP) is the workshop's likely mistake; a TLS hello
    # the other. Neither gets an absurd "size prefix of 1751477356 bytes".
    warnings: list[str] = []
    with TcpListener(LOOPBACK, lambda p, s, a: None, on_warning=warnings.append) as served:
        served.start()
        with connect(served.local_address) as client:
            client.sendall(start)
            assert client.recv(10) == b""
    assert served.stats.closed["not-osc-stream"] == 1
    assert said in warnings[0] and warnings[0].startswith(
        "closed the TCP connection from 127.0.0.1:"
    )


class _FailingAccept:
    """The listening socket as seen by a process out of file descriptors."""

    def __init__(self, real: socket.socket) -> None:
        self.real = real

    def fileno(self) -> int:
        return self.real.fileno()

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        raise OSError(24, "Too many open files")


def test_out_of_descriptors_the_listener_pauses_instead_of_spinning(fake_clock: FakeClock) -> None:
    warnings: list[str] = []
    served = TcpListener(
        LOOPBACK, lambda p, s, a: None, clock=fake_clock, on_warning=warnings.append
    )
    real = served._sock
    client = connect(served.local_address)
    try:
        served._sock = _FailingAccept(real)  # type: ignore[assignment]
        served.poll(5)
        assert served.stats.paused == 1 and served.next_timeout() == 0.5
        assert warnings == ["cannot accept a TCP connection: Too many open files"]
        served.poll(0)  # the listening socket is not watched: nothing to do, no spin
        assert served.connection_count == 0
        served._sock = real
        fake_clock.advance(0.5)
        served.poll(0)  # accepting again
        while served.connection_count == 0:
            served.poll(0.1)
        assert served.stats.connections == 1
    finally:
        served._sock = real
        client.close()
        served.close()


def test_twenty_clients_at_once_each_in_order(
    listener: TcpListener, received: queue.Queue[tuple[bytes, tuple[str, int]]]
) -> None:
    clients = [connect(listener.local_address) for _ in range(20)]
    try:
        for n in range(50):  # interleaved: one frame from each client in turn
            for k, client in enumerate(clients):
                encode = slip_encode if k % 2 else size_encode
                client.sendall(encode(b"/c%d/%d" % (k, n)))
        got = [received.get(timeout=10) for _ in range(20 * 50)]
    finally:
        for client in clients:
            client.close()
    by_source: dict[tuple[str, int], list[bytes]] = {}
    for packet, source in got:
        by_source.setdefault(source, []).append(packet)
    assert len(by_source) == 20
    for packets in by_source.values():
        k = packets[0].split(b"/")[1]
        assert packets == [b"/%s/%d" % (k, n) for n in range(50)]
    assert listener.stats.connections == 20


def test_packets_still_in_the_kernel_at_close_are_counted_not_lost() -> None:
    handled: list[bytes] = []
    served = TcpListener(LOOPBACK, lambda p, s, a: handled.append(p))  # stepped, not started
    client = connect(served.local_address)
    try:
        while served.connection_count == 0:
            served.poll(0.1)
        client.sendall(b"".join(slip_encode(b"/left%d" % n) for n in range(5)) + b"\xc0/hal")
        (conn_sock,) = list(served._connections)
        select.select([conn_sock], [], [], 10)  # the bytes are in the listener's kernel buffer
        served.close()
    finally:
        client.close()
    assert handled == []
    assert served.stats.unread_at_close == 5
    assert served.stats.drops == {"unread-at-close": 5, "unterminated-frame": 1}


# -- issue 28: a peer that resets right after our first frame (another framing) ------------------


def _reset(connection: socket.socket) -> None:
    """Close with an RST, as scsynth does on a SLIP frame (a negative size to it)."""
    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def _poll_until(sender: TcpSender, condition: Callable[[], bool]) -> None:
    for _ in range(200):
        if condition():
            return
        sender.poll(0.05)
    raise AssertionError("the sender never got there")


@pytest.mark.parametrize(("framing", "hint"), [("slip", "tcp+size://"), ("size", "tcp+slip://")])
def test_a_reset_right_after_the_first_frame_is_named_a_framing_mismatch(
    fake_clock: FakeClock, framing: str, hint: str
) -> None:
    warnings: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        sender = TcpSender(
            HostPort("127.0.0.1", port, "tcp"), framing_mode=framing, clock=fake_clock,  # type: ignore[arg-type]
            on_warning=warnings.append, run_thread=False,
        )  # fmt: skip
        try:
            sender.send(b"/s_new\x00\x00,\x00\x00\x00")
            _poll_until(sender, lambda: sender.stats.sent == 1)
            connection, _ = server.accept()
            connection.settimeout(10)
            connection.recv(4)  # read some of it, as scsynth reads a size
            _reset(connection)
            _poll_until(sender, lambda: bool(warnings))
            assert sender.flush(0) is False  # send exits 1 instead of 0
            assert sender.flush(0) is True  # reported once
        finally:
            sender.close()
    (warning,) = warnings
    assert warning.startswith(f"tcp://127.0.0.1:{port} reset the connection right after our")
    assert f"try {hint}127.0.0.1:{port} " in warning
    assert sender.stats.framing_resets == 1 and sender.stats.dropped["reset-by-peer"] == 1


def test_a_reset_long_after_the_first_frame_is_a_lost_connection(fake_clock: FakeClock) -> None:
    warnings: list[str] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        where = HostPort("127.0.0.1", server.getsockname()[1], "tcp")
        sender = TcpSender(where, clock=fake_clock, on_warning=warnings.append, run_thread=False)
        try:
            sender.send(b"/x\x00\x00")
            _poll_until(sender, lambda: sender.stats.sent == 1)
            connection, _ = server.accept()
            fake_clock.advance(MISMATCH_WINDOW + 1)  # a long-running connection, then a reset
            _reset(connection)
            _poll_until(sender, lambda: bool(warnings))
        finally:
            sender.close()
    assert len(warnings) == 1 and "lost the connection" in warnings[0]
    assert sender.stats.framing_resets == 0


def test_two_threads_sending_the_first_packets_at_once_start_one_io_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each sender thread is held right where the I/O thread is made until the other one gets
    there too (or 2 s pass): only one of them may make it."""
    from oscsync import threads
    from oscsync.net import tcpsender

    made: list[threading.Thread] = []
    both_there = threading.Barrier(2, timeout=2.0)
    real_daemon_thread = threads.daemon_thread

    def daemon_thread(*args: Any, **kwargs: Any) -> threading.Thread:
        with contextlib.suppress(threading.BrokenBarrierError):
            both_there.wait()
        made.append(real_daemon_thread(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(tcpsender.threads, "daemon_thread", daemon_thread)
    sender = TcpSender(HostPort("127.0.0.1", 9, "tcp"))
    senders = [threading.Thread(target=sender.send, args=(b"/%d" % n,)) for n in range(2)]
    for thread in senders:
        thread.start()
    for thread in senders:
        thread.join(10.0)
    sender.close()
    assert len(made) == 1
