"""TCP listener slots under slow and greedy clients (issue #27 item 8), on a fake clock.

Every timeout runs from the event that started it and only whole packets count as activity, so
a socket that trickles a byte now and then holds nothing; a full listener gives the slot of its
idlest connection to a new one, never an active client's; a client that does not read its
replies is not read either; and everything refused or closed is counted. Loopback sockets, a
listener stepped with ``poll`` on a :class:`FakeClock`.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator

import pytest

from oscsync.clock import FakeClock
from oscsync.net.framing import slip_encode
from oscsync.net.hostport import HostPort
from oscsync.net.tcpendpoint import TcpEndpoint
from oscsync.net.tcplistener import TcpListener
from waiting import wait_until

LOOPBACK = HostPort("127.0.0.1", 0, "tcp")


def pump(served: TcpListener, until: Callable[[], bool], what: str) -> None:
    """Step the listener (real sockets, fake time standing still) until ``until()`` holds."""

    def stepped() -> bool:
        served.poll(0.01)
        return until()

    wait_until(stepped, 10, what, state=lambda: (served.stats, served.connection_count))


@pytest.fixture
def clients() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for client in opened:
        client.close()


def connect(served: TcpListener, clients: list[socket.socket]) -> socket.socket:
    client = socket.create_connection(served.local_address.sockaddr, timeout=10)
    clients.append(client)
    return client


def test_bytes_that_trickle_in_extend_no_timeout(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    # One byte every 4 s used to reset every timeout: the three below stayed open for ever.
    served = TcpListener(
        LOOPBACK,
        lambda p, s, a: None,
        clock=fake_clock,
        idle_timeout=30,
        frame_timeout=10,
        quiet_timeout=60,
    )
    with served:
        frame, ends, quiet = (connect(served, clients) for _ in range(3))
        pump(served, lambda: served.connection_count == 3, "3 connections")
        quiet.sendall(slip_encode(b"/one"))
        pump(served, lambda: served.stats.frames == 1, "the quiet client's packet")
        # Each trickles until the listener should have closed it: the frame 10 s after its
        # first byte, the END bytes 30 s after connecting, the quiet one 60 s after its packet.
        lifetimes = {frame: 10, ends: 30, quiet: 60}
        trickled = {frame: b"/a-frame-that-never-ends", ends: b"\xc0" * 16, quiet: b"\xc0" * 16}
        start = fake_clock.monotonic()
        closed: dict[float, dict[str, int]] = {}
        for step in range(16):
            now = fake_clock.monotonic() - start
            senders = [c for c, life in lifetimes.items() if now < life]
            expected = served.stats.bytes + len(senders)
            for client in senders:
                client.sendall(trickled[client][step : step + 1])
            pump(served, lambda: served.stats.bytes == expected, "trickled bytes")  # noqa: B023
            fake_clock.advance(4)
            served.poll(0)
            closed[fake_clock.monotonic() - start] = dict(served.stats.closed)
        assert closed[8] == {}
        assert closed[12] == {"frame-timeout": 1}
        assert closed[28] == {"frame-timeout": 1}
        assert closed[32] == {"frame-timeout": 1, "idle": 1}
        assert closed[56] == {"frame-timeout": 1, "idle": 1}
        assert closed[60] == {"frame-timeout": 1, "idle": 1, "quiet": 1}
        assert served.stats.drops == {"unterminated-frame": 1}
        assert all(_closed_by_peer(client) for client in lifetimes)


def _closed_by_peer(client: socket.socket) -> bool:
    client.setblocking(False)
    try:
        return client.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        client.setblocking(True)


def test_a_full_listener_gives_an_idle_slot_to_a_new_client_never_an_active_ones(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    received: list[bytes] = []
    warnings: list[str] = []
    served = TcpListener(
        LOOPBACK,
        lambda p, s, a: received.append(p),
        clock=fake_clock,
        max_connections=3,
        evict_after=2,
        first_packet_grace=0.5,
        on_warning=warnings.append,
    )
    with served:
        trickler = connect(served, clients)
        pump(served, lambda: served.connection_count == 1, "the trickler")
        fake_clock.advance(1)
        quiet = connect(served, clients)
        active = connect(served, clients)
        pump(served, lambda: served.connection_count == 3, "3 connections")
        trickler.sendall(b"\xc0/never-whole")
        quiet.sendall(slip_encode(b"/quiet"))
        active.sendall(slip_encode(b"/active0"))
        pump(served, lambda: len(received) == 2, "two packets")
        for second in range(1, 4):
            fake_clock.advance(1)
            trickler.sendall(b"x")  # bytes keep nothing alive
            active.sendall(slip_encode(b"/active%d" % second))
            pump(served, lambda n=second: len(received) == 2 + n, "the active client's packet")  # type: ignore[misc]
        # Full. The trickler never delivered a packet: its slot goes first (before the quiet
        # client, whose packet is 3 s old); then the quiet one's; the active one keeps its own.
        newcomers = []
        for n in range(2):
            newcomer = connect(served, clients)
            newcomer.sendall(slip_encode(b"/new%d" % n))
            pump(served, lambda n=n: b"/new%d" % n in received, f"newcomer {n} served")  # type: ignore[misc]
            newcomers.append(newcomer)
        assert served.stats.closed == {"evicted": 2}
        assert _closed_by_peer(trickler) and _closed_by_peer(quiet)
        assert not _closed_by_peer(active)
        assert served.stats.drops == {"unterminated-frame": 1}  # the trickler's, counted
        # Now the newcomers and the active client all delivered within 2 s: a third newcomer
        # waits (counted), and gets a slot as soon as one becomes idle.
        fake_clock.advance(1)
        active.sendall(slip_encode(b"/active4"))
        pump(served, lambda: b"/active4" in received, "the active client's packet")
        waiting = connect(served, clients)
        waiting.sendall(slip_encode(b"/waiting"))
        pump(served, lambda: served.stats.paused == 1, "the listener to pause")
        assert served.next_timeout() == 1  # the newcomers' packets are 1 s old: idle at 2 s
        assert b"/waiting" not in received
        assert "in use and none is idle" in " ".join(warnings)
        fake_clock.advance(1)
        pump(served, lambda: b"/waiting" in received, "the waiting client served")
        assert served.stats.closed == {"evicted": 3}
        assert _closed_by_peer(newcomers[0]) and not _closed_by_peer(active)


def test_a_new_connection_keeps_its_slot_briefly_only_while_it_has_sent_nothing(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    received: list[bytes] = []
    served = TcpListener(
        LOOPBACK,
        lambda p, s, a: received.append(p),
        clock=fake_clock,
        max_connections=1,
        first_packet_grace=0.5,
    )
    with served:
        silent = connect(served, clients)
        pump(served, lambda: served.connection_count == 1, "the silent connection")
        second = connect(served, clients)
        second.sendall(b"\xc0/started-but-never-whole")
        pump(served, lambda: served.stats.paused == 1, "the second to wait")
        fake_clock.advance(0.5)  # the silent one's grace is over: the second takes its slot
        pump(served, lambda: served.stats.bytes > 0, "the second's bytes")
        assert served.stats.closed == {"evicted": 1} and _closed_by_peer(silent)
        # The second sent bytes that made no packet: no grace, a newcomer takes its slot at once.
        third = connect(served, clients)
        third.sendall(slip_encode(b"/third"))
        pump(served, lambda: received == [b"/third"], "the third served")
        assert served.stats.closed == {"evicted": 2} and _closed_by_peer(second)


def test_a_new_connections_first_bytes_are_looked_at_before_a_newcomer_waits_out_its_grace(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    # Sockets that reconnect as soon as they are closed and send a byte: when the newcomer
    # arrives, the slot's holder has not been read yet. Its bytes are looked at then (no packet:
    # no grace), instead of the newcomer waiting 0.5 s for each such slot.
    received: list[bytes] = []
    served = TcpListener(
        LOOPBACK, lambda p, s, a: received.append(p), clock=fake_clock, max_connections=1
    )
    with served:
        trickler = connect(served, clients)
        pump(served, lambda: served.connection_count == 1, "the trickler's connection")
        newcomer = connect(served, clients)  # waiting before the trickler's byte arrives
        newcomer.sendall(slip_encode(b"/newcomer"))
        trickler.sendall(b"\xc0")
        pump(served, lambda: received == [b"/newcomer"], "the newcomer served, time standing still")
        assert served.stats.closed == {"evicted": 1} and _closed_by_peer(trickler)


def test_what_an_idle_connection_sent_before_losing_its_slot_is_handled(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    received: list[bytes] = []
    served = TcpListener(
        LOOPBACK, lambda p, s, a: received.append(p), clock=fake_clock, max_connections=1
    )
    with served:
        first = connect(served, clients)
        pump(served, lambda: served.connection_count == 1, "the first connection")
        fake_clock.advance(5)
        # A newcomer and the idle client's packet arrive in the same round: the packet is read
        # before the slot is given away, makes its client active again, and the newcomer waits.
        second = connect(served, clients)  # waiting first, so the listener sees it first
        second.sendall(slip_encode(b"/second"))
        first.sendall(slip_encode(b"/late-but-here"))
        pump(served, lambda: served.stats.paused == 1, "the newcomer to wait")
        assert received == [b"/late-but-here"] and served.stats.closed == {}
        assert not _closed_by_peer(first)


def test_a_client_that_reads_no_replies_is_not_read_either(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    # Each question is answered with 500 KB; the client reads nothing. Once the kernel's buffers
    # are full the listener stops reading its questions (they wait in the kernel), instead of
    # handling each one and dropping its answer. When the client reads, the rest are handled.
    served: TcpListener
    handled: list[bytes] = []
    answer = b"/answer\x00,b\x00\x00" + (500_000).to_bytes(4, "big") + bytes(500_000)

    def respond(packet: bytes, source: tuple[str, int], arrival: float) -> None:
        handled.append(packet)
        served.reply(source, answer)

    served = TcpListener(LOOPBACK, respond, clock=fake_clock)
    with served:
        greedy = connect(served, clients)
        questions = 60  # 30 MB of answers: more than the kernel buffers and the reply buffer
        for n in range(questions):
            greedy.sendall(slip_encode(b"/q%d" % n))
            for _ in range(3):
                served.poll(0.005)
        for _ in range(20):
            served.poll(0.005)
        assert served.stats.backed_off >= 1
        assert len(handled) < questions  # the rest wait unread in the kernel
        assert served.stats.replies_dropped == 0
        greedy.setblocking(False)
        answers = bytearray()

        def take_answers() -> bool:
            served.poll(0.005)
            with contextlib.suppress(BlockingIOError):
                answers.extend(greedy.recv(1 << 20))
            answered = questions - served.stats.replies_dropped
            return len(handled) == questions and len(answers) == answered * (len(answer) + 2)

        # Questions read together once reading resumes may overflow the reply buffer
        # (reply_limit): those answers are dropped and counted, the others all arrive.
        wait_until(
            take_answers,
            20,
            "every question handled once the answers are read",
            state=lambda: (len(handled), len(answers), served.stats),
        )


def test_a_round_reads_a_bounded_share_from_each_flooding_client(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    # 16 clients with 64 KB of pings waiting each and one with a single ping: one round reads
    # about 64 KB in all (a share of it from each), so the single ping is handled after a short
    # round, not after 1 MB of other clients' pings.
    handled: list[bytes] = []
    served = TcpListener(LOOPBACK, lambda p, s, a: handled.append(p), clock=fake_clock)
    with served:
        flooders = [connect(served, clients) for _ in range(16)]
        polite = connect(served, clients)
        pump(served, lambda: served.connection_count == 17, "17 connections")
        pings = b"".join(slip_encode(b"/flood%d" % n) for n in range(6000))[: 64 * 1024]
        for flooder in flooders:
            flooder.sendall(pings)
        polite.sendall(slip_encode(b"/polite"))
        served.poll(1.0)
        assert b"/polite" in handled
        assert served.stats.bytes <= 64 * 1024 + len(slip_encode(b"/polite"))


def test_clients_still_waiting_for_a_slot_at_close_are_counted(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    served = TcpListener(LOOPBACK, lambda p, s, a: None, clock=fake_clock, max_connections=1)
    holder = connect(served, clients)
    pump(served, lambda: served.connection_count == 1, "the first connection")
    holder.sendall(slip_encode(b"/holding"))
    pump(served, lambda: served.stats.frames == 1, "the holder's packet")
    waiting = connect(served, clients)
    waiting.sendall(b"".join(slip_encode(b"/w%d" % n) for n in range(3)))
    pump(served, lambda: served.stats.paused == 1, "the newcomer to wait")
    served.close()
    assert served.stats.refused == {"waiting-at-close": 1}
    assert served.stats.drops == {"waiting-at-close": 3}
    assert served.stats.unread_at_close == 3
    assert served.stats.closed_by_listener() == {"waiting-at-close": 1}


def test_the_endpoint_summary_counts_connections_the_listener_closed(
    fake_clock: FakeClock, clients: list[socket.socket]
) -> None:
    endpoint = TcpEndpoint(LOOPBACK, clock=fake_clock)  # not started: stepped by the test
    listener = endpoint.listener
    assert listener is not None
    try:
        silent = connect(listener, clients)
        pump(listener, lambda: listener.connection_count == 1, "the connection")
        fake_clock.advance(30)
        listener.poll(0)
        assert _closed_by_peer(silent)
    finally:
        endpoint.close()
    assert endpoint.stats.connections_closed == {"idle": 1}
    assert endpoint.stats.connection_note() == "TCP connections closed by the listener: 1 (idle 1)"
