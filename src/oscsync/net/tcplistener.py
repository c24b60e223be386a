"""The TCP listener: serves many OSC clients at once, each bounded in bytes, count and time.

:class:`TcpListener` accepts connections on ``tcp://HOST:PORT`` and splits each one into OSC
packets with a :class:`~oscsync.net.framing.StreamDecoder` (SLIP or size prefix, detected per
connection from its first byte, as liblo does). Every packet goes to ``on_packet(packet, source,
arrival)``, the same call a UDP datagram gets, so allow-list, decoding, drop counts and dispatch
are shared. What a client can cost is bounded: one partial frame per connection (``max_frame``),
all partial frames together (``buffer_budget``), a number of connections (``max_connections``),
and time: a connection that sends no packet within ``idle_timeout`` of connecting, stops in the
middle of a frame for ``stall_timeout``, or falls silent between packets for ``quiet_timeout``, is
closed and counted. A reply (a clock pong) goes back on the connection its question came in on,
framed as that connection frames its packets.

It waits on a :class:`~oscsync.net.selector.WakeableSelector` and can be stepped with
:meth:`TcpListener.poll` (:mod:`oscsync.net.tcpsocket`).
"""

from __future__ import annotations

import contextlib
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
DEFAULT_STALL_TIMEOUT = 10.0
"""A connection stopped this long in the middle of a frame is closed: the rest is not coming."""
DEFAULT_REPLY_LIMIT = 1024 * 1024
ACCEPT_RETRY = 0.5
"""Seconds the listener stops accepting after accept() failed (out of file descriptors)."""
UNREAD_LIMIT = 4 * 1024 * 1024
"""Bytes per connection :meth:`TcpListener.close` reads to count packets left unread."""


@dataclass
class TcpListenerStats:
    """Connection and frame counters of a :class:`TcpListener` (a small fixed vocabulary)."""

    connections: int = 0
    """Accepted in total."""
    open: int = 0
    frames: int = 0
    bytes: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    """Connections closed on accept: ``not-allowed``."""
    paused: int = 0
    """Times the listener left new connections waiting in the backlog: ``max_connections``
    reached, or accept() failing (out of file descriptors) for :data:`ACCEPT_RETRY` s."""
    closed: Counter[str] = field(default_factory=Counter)
    """Why connections ended: ``peer-closed``, ``reset``, ``idle`` (no packet ever), ``quiet``,
    ``stalled``, ``bad-size``, ``not-osc-stream``, ``buffer-budget``, ``at-close``."""
    drops: Counter[str] = field(default_factory=Counter)
    """Frames refused by the framing layer (``bad-slip-escape``, ``frame-too-large``, ...)."""
    replies_dropped: int = 0
    unread_at_close: int = 0
    """Whole packets still in the kernel's buffers at close (also in :attr:`drops`)."""


@dataclass
class _Connection:
    sock: socket.socket
    source: tuple[str, int]
    decoder: StreamDecoder
    last_active: float
    frames: int = 0
    outgoing: bytearray = field(default_factory=bytearray)
    watching_write: bool = False


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
        stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
        quiet_timeout: float | None = DEFAULT_QUIET_TIMEOUT,
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
        self.stall_timeout = stall_timeout
        self.quiet_timeout = quiet_timeout
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
        self._thread = threads.daemon_thread(self._run, name="oscsync-tcp-listen")
        threads.start(self._thread)

    def _run(self) -> None:
        while not self._closed:
            self.poll(self.next_timeout())

    def next_timeout(self) -> float | None:
        """Seconds until the next connection may time out (None: nothing to time out)."""
        deadlines = [] if self._retry_accept_at is None else [self._retry_accept_at]
        with self._lock:
            for conn in self._connections.values():
                limit = self._limit_for(conn)
                if limit is not None:
                    deadlines.append(conn.last_active + limit)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self.clock.monotonic())

    def _limit_for(self, conn: _Connection) -> float | None:
        if conn.decoder.mid_frame:
            return self.stall_timeout
        return self.quiet_timeout if conn.frames else self.idle_timeout

    def poll(self, timeout: float | None = 0.0) -> None:
        """One round: accept, read and write what is ready, then close what timed out."""
        try:
            ready = self._selector.select(timeout)
        except (OSError, ValueError):  # closed under us
            return
        for key, events in ready:
            if self._closed:
                return
            if key.data is None:  # the listening socket
                self._accept()
            else:
                conn = key.data
                if events & selectors.EVENT_WRITE:
                    self._flush(conn)
                if events & selectors.EVENT_READ:
                    self._read(conn)
        self._expire()
        self._watch_writes()
        if ready and self.on_idle is not None:
            # Everything that was ready has been read: what the handler collected can go out
            # (dump's batched writes, as on UDP's receive thread).
            self.on_idle()

    # -- connections -----------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(BACKLOG):
            if len(self._connections) >= self.max_connections:
                self._pause_accepting()
                return
            try:
                sock, address = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                # EMFILE and the like: the connection stays in the backlog and the listening
                # socket stays readable, so stop watching it for a moment rather than spin.
                self._warn_once("accept", f"cannot accept a TCP connection: {exc.strerror}")
                self._pause_accepting(warn=False)
                self._retry_accept_at = self.clock.monotonic() + ACCEPT_RETRY
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

    def _pause_accepting(self, warn: bool = True) -> None:
        # At the limit, new connections wait in the kernel's backlog (not refused): a burst of
        # short-lived clients is served as the earlier ones finish. The listening socket leaves
        # the selector meanwhile, or it would wake every round.
        if self._accepting:
            self._accepting = False
            self.stats.paused += 1
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(self._sock)
        if warn:
            self._warn_once(
                "too-many",
                f"{self.max_connections} TCP connections are open: new ones wait until one "
                "closes (counted in the summary)",
            )

    def _resume_accepting(self) -> None:
        self._retry_accept_at = None
        if not self._accepting and not self._closed:
            self._accepting = True
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.register(self._sock, None)

    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
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
        conn.last_active = self.clock.monotonic()
        self.stats.bytes += len(data)
        arrival = self.clock.now()
        for item in conn.decoder.feed(data):
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
            try:
                self._on_packet(item, conn.source, arrival)
            except Exception as exc:
                self.stats.drops["handler-error"] += 1
                self._warn_once("handler", display.printable(f"packet handler failed: {exc!r}"))
            if self._closed or conn.sock.fileno() < 0:
                return
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
            limit = self._limit_for(conn)
            if limit is not None and now - conn.last_active >= limit:
                if conn.decoder.mid_frame:
                    self.stats.drops["unterminated-frame"] += 1
                    self._drop(conn, "stalled")
                else:
                    self._drop(conn, "quiet" if conn.frames else "idle")

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
        reply that does not fit is dropped and counted.
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

    def _watch_writes(self) -> None:
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            want = bool(conn.outgoing)
            if want != conn.watching_write:
                events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want else 0)
                with contextlib.suppress(KeyError, ValueError, OSError):
                    self._selector.modify(conn.sock, events, conn)
                    conn.watching_write = want

    # -- shutting down ---------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> bool:
        """Stop serving and close every socket; False if the thread did not stop in time."""
        if self._closed:
            return self._thread is None or not self._thread.is_alive()
        self._closed = True
        self._selector.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        stopped = self._thread is None or not self._thread.is_alive()
        with self._lock:
            conns = list(self._connections.values())
        for conn in conns:
            self._count_unread(conn)
            if conn.decoder.mid_frame:
                self.stats.drops["unterminated-frame"] += 1
            self._drop(conn, "at-close")
        self._selector.close()
        self._sock.close()
        return stopped

    def _count_unread(self, conn: _Connection) -> None:
        # Packets a client wrote that were still in the kernel at close were delivered to this
        # machine but never handled: count them (issue #18's exact accounting, as UDP does),
        # reading at most UNREAD_LIMIT bytes, so a client still writing cannot keep close() busy.
        left = UNREAD_LIMIT
        while left > 0:
            try:
                data = conn.sock.recv(min(READ_SIZE, left))
            except OSError:  # BlockingIOError: nothing more; or the connection broke
                return
            if not data:
                return
            left -= len(data)
            for item in conn.decoder.feed(data):
                if isinstance(item, FramingError):
                    self.stats.drops[item.reason] += 1
                    if item.fatal:
                        return
                else:
                    self.stats.unread_at_close += 1
                    self.stats.drops["unread-at-close"] += 1

    def __enter__(self) -> TcpListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
