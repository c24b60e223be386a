"""OSC over TCP: a listener that serves many clients at once and a sender that never blocks.

:class:`TcpListener` accepts connections on ``tcp://HOST:PORT`` and splits each one into OSC
packets with a :class:`~oscsync.net.framing.StreamDecoder` (SLIP or size prefix, detected per
connection from its first byte, as liblo does). Every packet goes to ``on_packet(packet, source,
arrival)``, the same call a UDP datagram gets, so allow-list, decoding, drop counts and dispatch
are shared. What a client can cost is bounded: one partial frame per connection (``max_frame``),
all partial frames together (``buffer_budget``), a number of connections (``max_connections``),
and time: a connection that sends no packet within ``idle_timeout`` of connecting, stops in the
middle of a frame for ``stall_timeout``, or falls silent between packets for ``quiet_timeout``, is
closed and counted.

:class:`TcpSender` connects to one peer lazily (at the first packet), writes framed packets
from a bounded queue on its own thread, and reconnects with a doubling back-off when the peer
goes away (a restarted Pure Data patch, say). :meth:`TcpSender.send` only appends to the queue,
so a scheduler thread that calls it is never held up by a slow or absent peer; when the queue is
full the oldest (or, by choice, the newest) packet is dropped and counted. Replies the peer
writes back on the connection (clock pongs) are decoded and handed on like received packets.

Both run their sockets from one :mod:`selectors` loop with a wake-up socket pair (Linux, macOS and
Windows all have both), read time only through the injected :class:`~oscsync.clock.Clock`, and
expose :meth:`poll`, one round of that loop, so tests can step them with a fake clock instead of
waiting.
"""

from __future__ import annotations

import contextlib
import errno
import os
import selectors
import socket
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from oscsync import threads
from oscsync.clock import Clock, SystemClock
from oscsync.net import framing
from oscsync.net.framing import Framing, FramingError, StreamDecoder
from oscsync.net.hostport import HostPort
from oscsync.net.listening import accept_both_families, bind_error_message, take_port_exclusively
from oscsync.net.selector import WakeableSelector
from oscsync.stats import WarnOnce
from oscsync.terminal import display

PacketHandler = Callable[[bytes, tuple[str, int], float], None]
"""Takes one received packet with its source and arrival (wall seconds on the clock)."""
WarningHandler = Callable[[str], None]
DropPolicy = Literal["oldest", "newest"]

READ_SIZE = 65536
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
DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024
DEFAULT_QUEUE_PACKETS = 4096
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
"""Reconnect attempts: 0.1 s, 0.2 s, ... up to 2 s apart, so a restarted peer is found again
within about 2 s and an absent one costs a connect attempt every 2 s."""
_BACKLOG = 64
ACCEPT_RETRY = 0.5
"""Seconds the listener stops accepting after accept() failed (out of file descriptors)."""
_FLUSH_STEP = 0.05
UNREAD_LIMIT = 4 * 1024 * 1024
"""Bytes per connection :meth:`TcpListener.close` reads to count packets left unread."""
_END_THEN_BUNDLE = bytes([framing.END]) + b"#"


def _ignore_warning(_: str) -> None:
    pass


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
        on_warning: WarningHandler = _ignore_warning,
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
        for _ in range(_BACKLOG):
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


def open_tcp_listener(where: HostPort, backlog: int = _BACKLOG) -> socket.socket:
    """A non-blocking TCP socket listening on ``where``; OSError with a one-line message."""
    sock = socket.socket(where.family, socket.SOCK_STREAM)
    try:
        if not take_port_exclusively(sock):
            # POSIX: rebind at once after a restart, while old connections sit in TIME_WAIT
            # (Windows' SO_REUSEADDR would let another process take the port over).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        accept_both_families(sock, where)
        sock.bind(where.sockaddr)
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, bind_error_message(where, exc)) from None
    return sock


# -- sending ---------------------------------------------------------------------------------


@dataclass
class TcpSenderStats:
    """What a :class:`TcpSender` did with the packets it was given."""

    queued: int = 0
    sent: int = 0
    """Packets written whole to the kernel (TCP delivers them unless the connection breaks)."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Packets not delivered: ``queue-full``, ``connection-lost`` (cut mid-write),
    ``unsent-at-close``."""
    connects: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    closed_by_peer: int = 0
    """Idle connections the peer closed (reconnected at the next packet, nothing lost)."""
    received: int = 0

    @property
    def undelivered(self) -> int:
        return sum(self.dropped.values())


class Backoff:
    """When to try connecting next: ``first``, doubling up to ``maximum``, reset on success."""

    def __init__(
        self, clock: Clock, first: float = BACKOFF_FIRST, maximum: float = BACKOFF_MAX
    ) -> None:
        self.clock = clock
        self.first = first
        self.maximum = maximum
        self._delay = 0.0
        self.next_attempt = clock.monotonic()

    def failed(self) -> float:
        """Note a failed attempt; returns the delay before the next one."""
        self._delay = self.first if self._delay == 0 else min(self._delay * 2, self.maximum)
        self.next_attempt = self.clock.monotonic() + self._delay
        return self._delay

    def succeeded(self) -> None:
        self._delay = 0.0

    def wait(self) -> float:
        """Seconds until an attempt is allowed (0: now)."""
        return max(0.0, self.next_attempt - self.clock.monotonic())


class TcpSender:
    """Send framed OSC packets to one ``tcp://`` peer; :meth:`send` never blocks."""

    def __init__(
        self,
        peer: HostPort,
        *,
        framing_mode: Framing = "slip",
        clock: Clock | None = None,
        on_warning: WarningHandler = _ignore_warning,
        on_packet: PacketHandler | None = None,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_queue_packets: int = DEFAULT_QUEUE_PACKETS,
        drop: DropPolicy = "oldest",
        max_frame: int = framing.DEFAULT_MAX_FRAME,
        run_thread: bool = True,
    ) -> None:
        self.peer = peer
        self.framing = framing_mode
        self.clock = clock if clock is not None else SystemClock()
        self.stats = TcpSenderStats()
        self._warn_once = WarnOnce(on_warning)
        self._on_packet = on_packet
        self.max_queue_bytes = max_queue_bytes
        self.max_queue_packets = max_queue_packets
        self.drop = drop
        self.max_frame = max_frame
        self._run_thread = run_thread
        self._queue: deque[bytes] = deque()
        self._queued_bytes = 0
        self._current = b""  # the frame being written, and how much of it went
        self._current_sent = 0
        self._first_frame = True
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._connecting = False
        self._decoder = StreamDecoder(max_frame)
        self._backoff = Backoff(self.clock)
        self._attempts = 0
        self._failures = 0
        self._closed = False
        self._thread: threading.Thread | None = None
        self._selector = WakeableSelector()

    @property
    def connected(self) -> bool:
        return self._sock is not None and not self._connecting

    @property
    def local_address(self) -> tuple[str, int] | None:
        sock = self._sock
        if sock is None:
            return None
        with contextlib.suppress(OSError):
            host, port = sock.getsockname()[:2]
            return (str(host), int(port))
        return None

    # -- the caller's side -----------------------------------------------------------------

    def send(self, packet: bytes) -> bool:
        """Queue ``packet``; False if it was dropped at once (queue full, drop-newest)."""
        if self._closed:
            return False
        data = framing.encode(packet, self.framing)
        with self._cond:
            self.stats.queued += 1
            while self._queue and (
                len(self._queue) >= self.max_queue_packets
                or self._queued_bytes + len(data) > self.max_queue_bytes
            ):
                if self.drop == "newest":
                    self._queue_full()
                    return False
                self._queued_bytes -= len(self._queue.popleft())
                self._queue_full()
            if len(data) > self.max_queue_bytes:
                self._queue_full()
                return False
            self._queue.append(data)
            self._queued_bytes += len(data)
        if self._thread is None and self._run_thread:
            self._thread = threads.daemon_thread(self._run, name="oscsync-tcp-send")
            threads.start(self._thread)
        self._selector.wake()
        return True

    def _queue_full(self) -> None:
        self.stats.dropped["queue-full"] += 1
        self._warn_once(
            "queue-full",
            f"{self.peer} is not keeping up: dropped the {self.drop} queued packet "
            "(further drops are counted)",
        )

    @property
    def pending(self) -> int:
        """Packets queued or being written."""
        with self._cond:
            return len(self._queue) + (1 if self._current else 0)

    def flush(self, timeout: float) -> bool:
        """Wait (real time, at most ``timeout`` s) until everything queued is written.

        Returns early, False, if connecting fails while waiting: a command that sends once
        and exits should say "cannot connect" at once rather than retry for its whole timeout.
        """
        deadline = self.clock.monotonic() + timeout
        # Also bounded in steps, so that a clock that does not move (a FakeClock) cannot make
        # this wait forever.
        steps = int(timeout / _FLUSH_STEP) + 1
        with self._cond:
            failures = self._failures
            while self._queue or self._current:
                if self._failures != failures:
                    return False
                remaining = deadline - self.clock.monotonic()
                steps -= 1
                if remaining <= 0 or steps < 0 or self._closed:
                    return False
                self._cond.wait(min(remaining, _FLUSH_STEP))
            return True

    # -- the I/O thread --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._closed:
            self.poll(self.next_timeout())

    def next_timeout(self) -> float | None:
        if self._sock is None:
            with self._cond:
                waiting = bool(self._queue)
            return self._backoff.wait() if waiting else None
        return None

    def poll(self, timeout: float | None = 0.0) -> None:
        """One round: connect if due, write what is queued, read replies."""
        if self._closed:
            return
        if self._sock is None:
            with self._cond:
                waiting = bool(self._queue)
            if waiting and self._backoff.wait() == 0:
                self._connect()
        try:
            ready = self._selector.select(timeout)
        except (OSError, ValueError):
            return
        for _, events in ready:
            if self._closed:
                return
            if self._connecting and events & selectors.EVENT_WRITE:
                self._finish_connect()
                continue
            if events & selectors.EVENT_READ:
                self._read()
        if self._sock is not None and not self._connecting:
            self._write()
        self._watch()

    def _connect(self) -> None:
        self._attempts += 1
        sock = socket.socket(self.peer.family, socket.SOCK_STREAM)
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(self.peer.sockaddr)
        self._sock = sock
        self._decoder = StreamDecoder(self.max_frame)
        if code == 0:
            self._connected()
            self._selector.register(sock, None)
        elif code in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, 10035):  # 10035: WSA
            self._connecting = True
            self._selector.register(sock, None, selectors.EVENT_WRITE)
        else:
            self._connect_failed(code)

    def _finish_connect(self) -> None:
        assert self._sock is not None
        code = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._connect_failed(code)
            return
        self._connecting = False
        self._connected()
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.modify(self._sock, selectors.EVENT_READ, None)

    def _connected(self) -> None:
        self._first_frame = True
        self.stats.connects += 1
        self._backoff.succeeded()
        if self.stats.connects > 1:
            self._warn_once.on_warning(f"reconnected to {self.peer}")
        self._warn_once.forget("connect")

    def _connect_failed(self, code: int) -> None:
        self._close_socket()
        name = errno.errorcode.get(code, str(code))
        self.stats.connect_failures[name] += 1
        delay = self._backoff.failed()
        self._warn_once(
            "connect",
            f"cannot connect to {self.peer}: {display.escape(_strerror(code))} (trying again "
            f"in {delay:g} s, then up to every {BACKOFF_MAX:g} s, while packets wait)",
        )
        with self._cond:
            self._failures += 1
            self._cond.notify_all()

    def _lost(self, why: str) -> None:
        """The connection broke: the frame cut mid-write is lost, the queue waits for the next."""
        with self._cond:
            if self._current and self._current_sent > 0:
                self.stats.dropped["connection-lost"] += 1
            elif self._current:
                self._queue.appendleft(self._current)
                self._queued_bytes += len(self._current)
            self._current = b""
            self._current_sent = 0
        self._close_socket()
        self._backoff.failed()
        self._warn_once("lost", f"lost the connection to {self.peer} ({why}); reconnecting")
        self._warn_once.forget("connect")

    def _write(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            with self._cond:
                if not self._current:
                    if not self._queue:
                        self._cond.notify_all()
                        return
                    self._current = self._queue.popleft()
                    self._queued_bytes -= len(self._current)
                    self._current_sent = 0
                    if (
                        self._first_frame
                        and self.framing == "slip"
                        and self._current[:2] == _END_THEN_BUNDLE
                    ):
                        # A new connection has no line noise for the leading END to flush,
                        # and liblo (0.31 to 0.35, detect_slip) reads END "#bun" as a size
                        # prefix and drops the stream: start with the bundle itself.
                        self._current = self._current[1:]
                    self._first_frame = False
                view = memoryview(self._current)[self._current_sent :]
                try:
                    sent = sock.send(view)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    why = exc.strerror or str(exc)
                    break
                self._current_sent += sent
                if self._current_sent == len(self._current):
                    self.stats.sent += 1
                    self._current = b""
                    self._current_sent = 0
        self._lost(why)

    def _read(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc.strerror or str(exc))
            return
        if not data:
            with self._cond:
                idle = not self._queue and not self._current
            if idle:
                # The peer closed a connection we were not using (a listener's quiet timeout):
                # nothing is lost, and the next packet connects again. No warning for that.
                self.stats.closed_by_peer += 1
                self._close_socket()
                return
            self._lost("closed by the peer")
            return
        arrival = self.clock.now()
        for item in self._decoder.feed(data):
            if isinstance(item, FramingError):
                if item.fatal:
                    self._lost("an unreadable reply")
                    return
                continue
            self.stats.received += 1
            if self._on_packet is not None:
                try:
                    self._on_packet(item, self.peer.sockaddr, arrival)
                except Exception as exc:
                    self._warn_once("handler", display.printable(f"reply handler failed: {exc!r}"))

    def _watch(self) -> None:
        sock = self._sock
        if sock is None or self._connecting:
            return
        with self._cond:
            want_write = bool(self._queue or self._current)
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.modify(sock, events, None)

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        self._connecting = False
        if sock is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(sock)
            sock.close()

    # -- shutting down ---------------------------------------------------------------------

    def close(self, flush_timeout: float = 0.0, timeout: float = 2.0) -> bool:
        """Flush for up to ``flush_timeout`` s, then stop; what is still queued is counted."""
        if self._closed:
            return self._thread is None or not self._thread.is_alive()
        if flush_timeout > 0 and self._thread is not None:
            self.flush(flush_timeout)
        self._closed = True
        self._selector.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        stopped = self._thread is None or not self._thread.is_alive()
        with self._cond:
            unsent = len(self._queue) + (1 if self._current else 0)
            self._queue.clear()
            self._queued_bytes = 0
            self._current = b""
            self._cond.notify_all()
        if unsent:
            self.stats.dropped["unsent-at-close"] += unsent
        self._close_socket()
        self._selector.close()
        return stopped

    def __enter__(self) -> TcpSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _strerror(code: int) -> str:
    try:
        return os.strerror(code)
    except ValueError:
        return f"error {code}"
