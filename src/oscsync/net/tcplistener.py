"""The TCP listener: serves many OSC clients at once, each bounded in bytes, count and time.

:class:`TcpListener` accepts connections on ``tcp://HOST:PORT`` and splits each one into OSC
packets with a :class:`~oscsync.net.framing.StreamDecoder` (SLIP or size prefix, detected per
connection from its first byte, as liblo does). Every packet goes to ``on_packet(packet, source,
arrival)``, the same call a UDP datagram gets, so allow-list, decoding, drop counts and dispatch
are shared. What a client can cost is bounded: one partial frame per connection (``max_frame``),
all partial frames together (``buffer_budget``), a number of connections (``max_connections``),
and time. Every timeout runs from the event that started it, and only a whole packet counts as
activity (bytes that trickle in extend nothing): a connection is closed when it delivers no packet
within ``idle_timeout`` of connecting, when a frame is not whole ``frame_timeout`` after its first
byte, or after ``quiet_timeout`` without a packet. When every slot is taken, a new connection
takes the slot of the one that has gone longest without delivering a packet, if that one is idle;
otherwise it waits in the kernel's queue. A reply (a clock pong)
goes back on the connection its question came in on, framed as that connection frames its
packets; a connection whose replies the kernel will not take (a client that does not read them)
is not read either until they have gone out. Everything the listener refuses or closes is counted.

It waits on a :class:`~oscsync.net.selector.WakeableSelector` and can be stepped with
:meth:`TcpListener.poll` (:mod:`oscsync.net.tcpsocket`).
"""

from __future__ import annotations

import contextlib
import select
import selectors
import socket
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from oscsync import threads
from oscsync.clock import Clock, SystemClock
from oscsync.net import framing
from oscsync.net.framing import FramingError, StreamDecoder
from oscsync.net.hostport import HostPort
from oscsync.net.selector import WakeableSelector
from oscsync.net.tcpsocket import (
    BACKLOG,
    READ_SIZE,
    PacketHandler,
    WarningHandler,
    ignore_warning,
    open_tcp_listener,
)
from oscsync.stats import WarnOnce
from oscsync.terminal import display

DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_BUFFER_BUDGET = 64 * 1024 * 1024
"""All partial frames of all connections together: 64 MiB, so 64 clients each stopping just
short of a 16 MiB frame cannot hold a gigabyte."""
DEFAULT_IDLE_TIMEOUT = 30.0
"""A connection that has sent no packet this long after connecting is closed: it holds a slot
for nothing."""
DEFAULT_QUIET_TIMEOUT = 3600.0
"""A connection that has sent packets and then nothing for an hour is closed. A chat partner may
be quiet for many minutes, so this is long; a sender reconnects by itself at its next packet."""
DEFAULT_FRAME_TIMEOUT = 10.0
"""A frame not whole this long after its first byte is dropped and its connection closed: counted
from the frame's start, so a sender that trickles a byte now and then cannot keep it open."""
DEFAULT_EVICT_AFTER = 2.0
"""When every slot is taken, a connection that has delivered no packet for this long may lose its
slot to a new connection. Longer than an active client leaves between packets (clock pings come
at least once a second, a metronome's ticks at 60 bpm too), so an active client keeps its slot
whatever others do; an idle one that loses it connects again with its next packet, as
:class:`~oscsync.net.tcpsender.TcpSender` does."""
DEFAULT_FIRST_PACKET_GRACE = 0.5
"""How long a new connection that has sent nothing may keep its slot when every slot is wanted: a
client writes its first packet as soon as it is connected, and 0.5 s covers a lost segment sent
again (Linux waits at least 0.2 s). One that sent bytes but no whole packet has no grace."""
DEFAULT_REPLY_LIMIT = 1024 * 1024
ACCEPT_RETRY = 0.5
"""Seconds the listener stops accepting after accept() failed (out of file descriptors)."""
MIN_READ_SHARE = 2048
"""Bytes a connection may read in a round however many others have bytes waiting."""
UNREAD_LIMIT = 4 * 1024 * 1024
"""Bytes per connection :meth:`TcpListener.close` reads to count packets left unread."""


LISTENER_REASONS = frozenset(
    ("evicted", "idle", "quiet", "frame-timeout", "buffer-budget", "bad-size", "not-osc-stream")
)
"""Why the listener closes a connection: to make room for a new one (``evicted``), a timeout
(``idle``: no packet since connecting, ``quiet``: none since the last, ``frame-timeout``), or
what it sent (a frame over the budget, a bad size prefix, not OSC at all)."""


@dataclass
class TcpListenerStats:
    """Connection and frame counters of a :class:`TcpListener` (a small fixed vocabulary)."""

    connections: int = 0
    """Accepted in total."""
    open: int = 0
    frames: int = 0
    bytes: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Connections closed on accept: ``not-allowed``; and ``waiting-at-close``: still waiting
    for a slot when the listener closed (their packets are in :attr:`drops`)."""
    paused: int = 0
    """Times the listener left new connections waiting in the backlog: no slot idle (see
    ``evict_after``), or accept() failing (out of file descriptors) for :data:`ACCEPT_RETRY` s."""
    closed: Counter[str] = field(default_factory=Counter)
    """Why connections ended: ``peer-closed``, ``reset`` and ``at-close`` (the client or the
    end of the run), or the listener's reasons (:data:`LISTENER_REASONS`)."""
    backed_off: int = 0
    """Times a connection was not read because its replies were not being taken."""
    drops: Counter[str] = field(default_factory=Counter)
    """Frames refused by the framing layer (``bad-slip-escape``, ``frame-too-large``, ...)."""
    replies_dropped: int = 0
    unread_at_close: int = 0
    """Whole packets still in the kernel's buffers at close, of open connections and of those
    waiting for a slot (also in :attr:`drops`: ``unread-at-close``, ``waiting-at-close``)."""

    def closed_by_listener(self) -> Counter[str]:
        """Connections the listener refused or closed (not those the client or the run ended)."""
        imposed = Counter({r: n for r, n in self.closed.items() if r in LISTENER_REASONS})
        return imposed + self.refused


@dataclass
class _Connection:
    sock: socket.socket
    source: tuple[str, int]
    decoder: StreamDecoder
    connected_at: float
    last_packet: float | None = None
    """When the last whole packet arrived (None: none yet). Bytes alone never move it."""
    frame_started: float | None = None
    """When the first byte of the frame not yet whole arrived (None: between frames)."""
    frames: int = 0
    outgoing: bytearray = field(default_factory=bytearray)
    events: int = selectors.EVENT_READ
    """What the selector watches: reading, or only writing while replies wait (back-off)."""

    @property
    def last_progress(self) -> float:
        return self.connected_at if self.last_packet is None else self.last_packet


class TcpListener:
    """Listen on ``tcp://HOST:PORT``; each received packet goes to ``on_packet``."""

    def __init__(
        self,
        listen: HostPort,
        on_packet: PacketHandler,
        *,
        clock: Clock | None = None,
        on_warning: WarningHandler = ignore_warning,
        allowed: Callable[[str], bool] | None = None,
        max_frame: int = framing.DEFAULT_MAX_FRAME,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        buffer_budget: int = DEFAULT_BUFFER_BUDGET,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
        quiet_timeout: float | None = DEFAULT_QUIET_TIMEOUT,
        evict_after: float = DEFAULT_EVICT_AFTER,
        first_packet_grace: float = DEFAULT_FIRST_PACKET_GRACE,
        reply_limit: int = DEFAULT_REPLY_LIMIT,
    ) -> None:
        self.clock = clock if clock is not None else SystemClock()
        self.stats = TcpListenerStats()
        self._on_packet = on_packet
        self._warn_once = WarnOnce(on_warning)
        self._allowed = allowed
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.buffer_budget = buffer_budget
        self.idle_timeout = idle_timeout
        self.frame_timeout = frame_timeout
        self.quiet_timeout = quiet_timeout
        self.evict_after = evict_after
        self.first_packet_grace = first_packet_grace
        self.reply_limit = reply_limit
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, _Connection] = {}
        self._by_source: dict[tuple[str, int], _Connection] = {}
        self.on_idle: Callable[[], None] | None = None
        """Runs on the listener's thread after each round that read something."""
        self._closed = False
        self._accepting = True
        self._retry_accept_at: float | None = None
        self._thread: threading.Thread | None = None
        self._sock = open_tcp_listener(listen)
        self._selector = WakeableSelector()
        self._selector.register(self._sock, None)

    @property
    def local_address(self) -> HostPort:
        host, port = self._sock.getsockname()[:2]
        return HostPort(host, port, "tcp")

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._connections)

    def start(self) -> None:
        """Serve on a background thread until :meth:`close`."""
        if self._thread is not None:
            raise RuntimeError("listener already started")
        self._thread = threads.daemon_thread(
            self._run, name="oscsync-tcp-listen", role=threads.RECEIVE
        )
        threads.start(self._thread)

    def _run(self) -> None:
        while not self._closed:
            self.poll(self.next_timeout())

    def next_timeout(self) -> float | None:
        """Seconds until the next connection may time out, or waiting clients may get a slot
        (None: nothing to wait for)."""
        deadlines = [] if self._retry_accept_at is None else [self._retry_accept_at]
        with self._lock:
            for conn in self._connections.values():
                due = self._deadline(conn)
                if due is not None:
                    deadlines.append(due[0])
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self.clock.monotonic())

    def _deadline(self, conn: _Connection) -> tuple[float, str] | None:
        """When ``conn`` times out and why, each timeout counted from its own start."""
        due: list[tuple[float, str]] = []
        if conn.frame_started is not None and self.frame_timeout is not None:
            due.append((conn.frame_started + self.frame_timeout, "frame-timeout"))
        if conn.last_packet is None:
            if self.idle_timeout is not None:
                due.append((conn.connected_at + self.idle_timeout, "idle"))
        elif conn.frame_started is None and self.quiet_timeout is not None:
            # A frame under way has its own deadline, which ends the quiet (or the connection).
            due.append((conn.last_packet + self.quiet_timeout, "quiet"))
        return min(due) if due else None

    def poll(self, timeout: float | None = 0.0) -> None:
        """One round: accept, read and write what is ready, then close what timed out."""
        try:
            ready = self._selector.select(timeout)
        except (OSError, ValueError):  # closed under us
            return
        # Each round reads about READ_SIZE in all, shared by the connections with bytes waiting:
        # one client gets whole reads, and when many flood, a client with one packet waits for
        # a round of small reads, not for 64 KB from each of them.
        share = max(MIN_READ_SHARE, READ_SIZE // max(1, len(ready)))
        for key, events in ready:
            if self._closed:
                return
            if key.data is None:  # the listening socket
                self._accept()
            else:
                conn = key.data
                if events & selectors.EVENT_WRITE:
                    self._flush(conn)
                if events & selectors.EVENT_READ and conn.sock.fileno() >= 0:
                    self._read(conn, share)
        self._expire()
        self._watch()
        if ready and self.on_idle is not None:
            # Everything that was ready has been read: what the handler collected can go out
            # (dump's batched writes, as on UDP's receive thread).
            self.on_idle()

    # -- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            if len(self._connections) >= self.max_connections and not (
                self._someone_waits() and self._make_room()
            ):
                return
            try:
                sock, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE and the like: the connection stays in the backlog and the listening
                # socket stays readable, so stop watching it for a moment rather than spin.
                self._warn_once("accept", f"cannot accept a TCP connection: {exc.strerror}")
                self._pause_accepting(self.clock.monotonic() + ACCEPT_RETRY)
                return
            source = (str(address[0]), int(address[1]))
            if self._allowed is not None and not self._allowed(source[0]):
                self.stats.refused["not-allowed"] += 1
                self._warn_once(
                    "refused:not-allowed",
                    f"refused a TCP connection from {source[0]}: not in --allow (further ones "
                    "are counted, see the summary)",
                )
                sock.close()
                continue
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(sock, source, StreamDecoder(self.max_frame), self.clock.monotonic())
            with self._lock:
                self._connections[sock] = conn
                self._by_source[source] = conn
            self._selector.register(sock, conn)
            self.stats.connections += 1
            self.stats.open += 1

    def _someone_waits(self) -> bool:
        """True when a connection waits to be accepted (a slot is given up only for one)."""
        try:
            readable, _, _ = select.select([self._sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def _make_room(self) -> bool:
        """Free a slot for a waiting connection; False if every slot is held by an active client.

        The slot goes from the connection that has gone longest without delivering a whole
        packet (one that never delivered any first), and only if it is idle: no packet for
        ``evict_after`` s; never one, and bytes that made none, or nothing at all within
        ``first_packet_grace`` s of connecting. So a client that keeps sending keeps its slot
        however many connections others open, while sockets that only trickle bytes or went
        quiet make room at once. What a connection sent before
        losing its slot is read and handled first. When no connection is idle, new ones wait in
        the kernel's queue until one is (or one closes).
        """
        looked = False
        for _ in range(4):  # a candidate that turns out to have a packet waiting keeps its slot
            now = self.clock.monotonic()
            with self._lock:
                conns = list(self._connections.values())
            idle = [c for c in conns if self._evictable_at(c) <= now]
            unread = [c for c in conns if c.last_packet is None and c.decoder.framing is None]
            if not idle and unread and not looked:
                # New connections not read yet are in their grace only until their first bytes
                # are seen: look now (their bytes may be waiting), not after the grace.
                looked = True
                for conn in unread:
                    self._read(conn)
                continue
            if not idle:
                with self._lock:
                    soonest = min(map(self._evictable_at, self._connections.values()), default=now)
                self._pause_accepting(soonest, warn_full=True)
                return False
            victim = min(idle, key=lambda c: (c.last_packet is not None, c.last_progress))
            frames = victim.frames
            self._read(victim)
            if victim.sock not in self._connections:
                return True  # it closed while being read
            if victim.frames == frames:
                if victim.decoder.mid_frame:
                    self.stats.drops["unterminated-frame"] += 1
                self._drop(victim, "evicted")
                self._warn_once(
                    "evicted",
                    f"all {self.max_connections} TCP connection slots are taken: a new "
                    "connection takes the slot of the one idle longest (counted in the summary)",
                )
                return True
        return len(self._connections) < self.max_connections

    def _evictable_at(self, conn: _Connection) -> float:
        if conn.last_packet is not None:
            return conn.last_packet + self.evict_after
        if conn.decoder.framing is not None:
            # It has sent bytes, and they were no whole packet: a client's first packet comes
            # whole in its first read (or that read starts a frame larger than a read).
            return conn.connected_at
        return conn.connected_at + self.first_packet_grace

    def _pause_accepting(self, until: float, warn_full: bool = False) -> None:
        # New connections wait in the kernel's backlog (not refused): a burst of short-lived
        # clients is served as the earlier ones finish. The listening socket leaves the selector
        # meanwhile, or it would wake every round, and comes back at ``until`` (a slot may be
        # free to take then) or as soon as a connection closes.
        self._retry_accept_at = until
        if self._accepting:
            self._accepting = False
            self.stats.paused += 1
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(self._sock)
        if warn_full:
            self._warn_once(
                "too-many",
                f"all {self.max_connections} TCP connection slots are in use and none is idle: "
                "new connections wait until one is idle or closes (counted in the summary)",
            )

    def _resume_accepting(self) -> None:
        self._retry_accept_at = None
        if not self._accepting and not self._closed:
            self._accepting = True
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.register(self._sock, None)

    def _read(self, conn: _Connection, size: int = READ_SIZE) -> None:
        try:
            data = conn.sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ECONNRESET and friends
            self._drop(conn, "reset")
            return
        if not data:
            if conn.decoder.mid_frame:
                self.stats.drops["unterminated-frame"] += 1
            self._drop(conn, "peer-closed")
            return
        self.stats.bytes += len(data)
        now = self.clock.monotonic()
        arrival = self.clock.now()
        items = conn.decoder.feed(data)
        for item in items:
            if isinstance(item, FramingError):
                self.stats.drops[item.reason] += 1
                where = f"{conn.source[0]}:{conn.source[1]}"
                detail = display.escape(item.detail)  # from the network
                if item.fatal:
                    # No frame boundary to find again: the connection ends here.
                    self._warn_once(
                        "closed:" + item.reason,
                        f"closed the TCP connection from {where}: {detail}; further ones are "
                        "counted",
                    )
                    self._drop(conn, item.reason)
                    return
                self._warn_once(
                    "frame:" + item.reason,
                    f"dropped a frame from {where} over TCP ({detail}); further ones are counted",
                )
                continue
            self.stats.frames += 1
            conn.frames += 1
            conn.last_packet = now
            try:
                self._on_packet(item, conn.source, arrival)
            except Exception as exc:
                self.stats.drops["handler-error"] += 1
                self._warn_once("handler", display.printable(f"packet handler failed: {exc!r}"))
            if self._closed or conn.sock.fileno() < 0:
                return
        # A frame's clock starts with its first byte: in this read if a frame ended in it (or
        # none was under way), else it keeps the start it had.
        if not conn.decoder.mid_frame:
            conn.frame_started = None
        elif items or conn.frame_started is None:
            conn.frame_started = now
        if self._buffered() > self.buffer_budget:
            self._drop(conn, "buffer-budget")

    def _buffered(self) -> int:
        with self._lock:
            return sum(c.decoder.buffered for c in self._connections.values())

    def _expire(self) -> None:
        now = self.clock.monotonic()
        if self._retry_accept_at is not None and now >= self._retry_accept_at:
            self._resume_accepting()
        with self._lock:
            candidates = list(self._connections.values())
        for conn in candidates:
            due = self._deadline(conn)
            if due is not None and now >= due[0]:
                if conn.decoder.mid_frame:
                    self.stats.drops["unterminated-frame"] += 1
                self._drop(conn, due[1])

    def _drop(self, conn: _Connection, reason: str) -> None:
        with self._lock:
            if self._connections.pop(conn.sock, None) is None:
                return
            if self._by_source.get(conn.source) is conn:
                del self._by_source[conn.source]
            # Counted with the removal, so that whoever sees the connection gone sees why.
            self.stats.open -= 1
            self.stats.closed[reason] += 1
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)
        conn.sock.close()
        self._resume_accepting()
        if reason == "buffer-budget":
            self._warn_once(
                "closed:budget",
                f"closed the TCP connection from {conn.source[0]}:{conn.source[1]}: partial "
                f"frames held more than {self.buffer_budget} bytes in all",
            )

    # -- replies ---------------------------------------------------------------------------

    def reply(self, source: tuple[str, int], packet: bytes) -> bool:
        """Write ``packet`` back on the connection ``source`` came in on (a clock pong).

        Framed as that connection frames its packets. Never blocks: what the kernel does not
        take at once waits in a per-connection buffer of at most ``reply_limit`` bytes, and a
        reply that does not fit is dropped and counted. While replies wait there the connection
        is not read (:meth:`_watch`).
        """
        with self._lock:
            conn = self._by_source.get((source[0], source[1]))
            if conn is None:
                return False
            data = framing.encode(packet, conn.decoder.framing or "slip")
            if len(conn.outgoing) + len(data) > self.reply_limit:
                self.stats.replies_dropped += 1
                return False
            conn.outgoing += data
        self._flush(conn)
        if conn.outgoing:
            self._selector.wake()
        return True

    def _flush(self, conn: _Connection) -> None:
        with self._lock:
            if not conn.outgoing:
                return
            try:
                sent = conn.sock.send(conn.outgoing)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                conn.outgoing.clear()
                return  # the read side sees the reset and closes the connection
            del conn.outgoing[:sent]

    def _watch(self) -> None:
        """Read each connection, except one whose replies wait for the kernel to take them.

        A client that does not read its replies fills the kernel's buffers; from then on its
        requests stay unread too (TCP holds the client back), so it cannot make the listener
        work for answers nobody takes. It is read again once its replies have gone out, and
        meanwhile delivers no packet, so it can lose its slot (:meth:`_make_room`) or time out.
        """
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            want = selectors.EVENT_WRITE if conn.outgoing else selectors.EVENT_READ
            if want != conn.events:
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.modify(conn.sock, want, conn)
                    conn.events = want
                    if want == selectors.EVENT_WRITE:
                        self.stats.backed_off += 1

    # -- shutting down ---------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> bool:
        """Stop serving and close every socket; False if the thread did not stop in time.

        Packets still in the kernel are counted, not lost silently: those of open connections
        (``unread-at-close``) and those of connections still waiting for a slot
        (``waiting-at-close``, the connections in :attr:`TcpListenerStats.refused`).
        """
        if self._closed:
            return self._thread is None or not self._thread.is_alive()
        self._closed = True
        self._selector.wake()
        stopped = threads.join(self._thread, timeout)
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            self._count_unread(conn.sock, conn.decoder, "unread-at-close")
            if conn.decoder.mid_frame:
                self.stats.drops["unterminated-frame"] += 1
            self._drop(conn, "at-close")
        self._count_waiting()
        self._selector.close()
        self._sock.close()
        return stopped

    def _count_waiting(self) -> None:
        for _ in range(BACKLOG):
            try:
                sock, _address = self._sock.accept()
            except OSError:  # BlockingIOError: nobody else waits
                return
            with sock:
                sock.setblocking(False)
                self.stats.refused["waiting-at-close"] += 1
                self._count_unread(sock, StreamDecoder(self.max_frame), "waiting-at-close")

    def _count_unread(self, sock: socket.socket, decoder: StreamDecoder, reason: str) -> None:
        # Packets a client wrote that were still in the kernel at close were delivered to this
        # machine but never handled: count them (issue #18's exact accounting, as UDP does),
        # reading at most UNREAD_LIMIT bytes, so a client still writing cannot keep close() busy.
        left = UNREAD_LIMIT
        while left > 0:
            try:
                data = sock.recv(min(READ_SIZE, left))
            except OSError:  # BlockingIOError: nothing more; or the connection broke
                return
            if not data:
                return
            left -= len(data)
            for item in decoder.feed(data):
                if isinstance(item, FramingError):
                    self.stats.drops[item.reason] += 1
                    if item.fatal:
                        return
                else:
                    self.stats.unread_at_close += 1
                    self.stats.drops[reason] += 1

    def __enter__(self) -> TcpListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
