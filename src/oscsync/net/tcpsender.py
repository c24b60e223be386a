"""The TCP sender: OSC packets to one peer from a bounded queue, reconnecting, never blocking.

:class:`TcpSender` connects to one peer lazily (at the first packet), writes framed packets
from a bounded queue on its own thread, and reconnects with a doubling back-off
(:class:`Backoff`) when the peer goes away (a restarted Pure Data patch, say).
:meth:`TcpSender.send` only appends to the queue, so a scheduler thread that calls it is never
held up by a slow or absent peer; when the queue is full the oldest (or, by choice, the newest)
packet is dropped and counted. Replies the peer writes back on the connection (clock pongs) are
decoded and handed on like received packets.

It waits on a :class:`~oscsync.net.selector.WakeableSelector` and can be stepped with
:meth:`TcpSender.poll` (:mod:`oscsync.net.tcpsocket`).
"""

from __future__ import annotations

import contextlib
import errno
import selectors
import socket
import threading
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Literal

from oscsync import threads
from oscsync.clock import Clock, SystemClock
from oscsync.net import framing
from oscsync.net.framing import Framing, FramingError, StreamDecoder
from oscsync.net.hostport import HostPort
from oscsync.net.selector import WakeableSelector
from oscsync.net.tcpsocket import READ_SIZE, PacketHandler, WarningHandler, ignore_warning, strerror
from oscsync.stats import WarnOnce
from oscsync.terminal import display

DropPolicy = Literal["oldest", "newest"]

DEFAULT_QUEUE_BYTES = 4 * 1024 * 1024
DEFAULT_QUEUE_PACKETS = 4096
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
"""Reconnect attempts: 0.1 s, 0.2 s, ... up to 2 s apart, so a restarted peer is found again
within about 2 s and an absent one costs a connect attempt every 2 s."""
_FLUSH_STEP = 0.05
_END_THEN_BUNDLE = bytes([framing.END]) + b"#"
MISMATCH_WINDOW = 2.0
"""A peer that resets a connection this soon after our first frame on it, having sent nothing
back, most likely read another framing: scsynth takes a SLIP frame's first bytes for a negative
size and resets at once (issue 28)."""
SETTLE = 0.1
"""How long :meth:`TcpSender.flush` waits, after a new connection's first frames are written,
for such a reset (loopback: microseconds; a LAN: a few milliseconds), so that ``send`` can say
so instead of exiting 0."""
_RESET_ERRNOS = frozenset(
    code
    for code in (errno.ECONNRESET, errno.EPIPE, getattr(errno, "WSAECONNRESET", None))
    if code is not None
)
_FRAMING_NAMES = {"slip": "SLIP (OSC 1.1)", "size": "a size prefix (OSC 1.0)"}
_OTHER_FRAMING_READERS = {
    "slip": "a size prefix, as scsynth and other OSC 1.0 receivers read",
    "size": "SLIP, as Pure Data's [unpackOSCstream] and osc.js read",
}


@dataclass
class TcpSenderStats:
    """What a :class:`TcpSender` did with the packets it was given."""

    queued: int = 0
    sent: int = 0
    """Packets written whole to the kernel (TCP delivers them unless the connection breaks)."""
    dropped: Counter[str] = field(default_factory=Counter)
    """Packets not delivered: ``queue-full``, ``connection-lost`` (cut mid-write),
    ``reset-by-peer`` (written whole, then the peer reset the connection: most likely another
    framing, see :attr:`framing_resets`), ``unsent-at-close``."""
    connects: int = 0
    connect_failures: Counter[str] = field(default_factory=Counter)
    closed_by_peer: int = 0
    """Idle connections the peer closed (reconnected at the next packet, nothing lost)."""
    received: int = 0
    framing_resets: int = 0
    """Connections the peer reset right after our first frame (most likely another framing);
    the frames written on them are counted in ``dropped["reset-by-peer"]``."""

    @property
    def undelivered(self) -> int:
        return sum(self.dropped.values())


@dataclass
class PacketQueue:
    """Framed packets waiting for the connection, bounded in packets and in bytes.

    When one more would not fit, the oldest waiting packet makes room, or with ``drop="newest"``
    the new one is refused; a packet larger than ``max_bytes`` is never queued. Not thread-safe:
    :class:`TcpSender` holds its lock around every call."""

    max_bytes: int = DEFAULT_QUEUE_BYTES
    max_packets: int = DEFAULT_QUEUE_PACKETS
    drop: DropPolicy = "oldest"
    packets: deque[bytes] = field(default_factory=deque)
    size: int = 0
    """Bytes waiting."""

    def put(self, data: bytes) -> tuple[bool, int]:
        """Queue ``data``: whether it was queued, and how many packets were dropped (it too)."""
        if len(data) > self.max_bytes:
            # Refused before anything is made room for: emptying the queue for a packet that
            # will not fit anyway would lose every packet waiting.
            return False, 1
        dropped = 0
        while self.packets and (
            len(self.packets) >= self.max_packets or self.size + len(data) > self.max_bytes
        ):
            if self.drop == "newest":
                return False, 1
            self.size -= len(self.packets.popleft())
            dropped += 1
        self.packets.append(data)
        self.size += len(data)
        return True, dropped

    def take(self) -> bytes:
        """The oldest waiting packet, out of the queue."""
        data = self.packets.popleft()
        self.size -= len(data)
        return data

    def put_back(self, data: bytes) -> None:
        """Return a packet that could not be written to the front of the queue."""
        self.packets.appendleft(data)
        self.size += len(data)

    def clear(self) -> int:
        """Drop everything waiting; returns how many packets that was."""
        count = len(self.packets)
        self.packets.clear()
        self.size = 0
        return count

    def __len__(self) -> int:
        return len(self.packets)


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
        on_warning: WarningHandler = ignore_warning,
        on_packet: PacketHandler | None = None,
        max_queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_queue_packets: int = DEFAULT_QUEUE_PACKETS,
        drop: DropPolicy = "oldest",
        max_frame: int = framing.DEFAULT_MAX_FRAME,
        run_thread: bool = True,
        sending_once: bool = False,
    ) -> None:
        self.peer = peer
        self.sending_once = sending_once
        """The owner sends and exits at the first failed connect (:meth:`flush`): the warning
        then does not promise to try again."""
        self.framing = framing_mode
        self.clock = clock if clock is not None else SystemClock()
        self.stats = TcpSenderStats()
        self._warn_once = WarnOnce(on_warning)
        self._on_packet = on_packet
        self.max_frame = max_frame
        self._run_thread = run_thread
        self._queue = PacketQueue(max_queue_bytes, max_queue_packets, drop)
        self._current = b""  # the frame being written, and how much of it went
        self._current_sent = 0
        self._first_frame = True
        self._first_written_at: float | None = None  # this connection's first whole frame
        self._written_here = 0  # frames written whole on this connection
        self._received_here = 0  # packets the peer sent back on it
        self._resets_reported = 0  # framing_resets already answered by a flush
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
            queued, dropped = self._queue.put(data)
            if dropped:
                self._queue_full(dropped)
            if not queued:
                return False
            # Under the lock: two threads sending their first packets at once would otherwise
            # both see no thread and start two, polling one socket and one selector.
            starting = self._thread is None and self._run_thread
            if starting:
                self._thread = threads.daemon_thread(self._run, name="oscsync-tcp-send")
        if starting:
            assert self._thread is not None
            threads.start(self._thread)
        self._selector.wake()
        return True

    def _queue_full(self, count: int) -> None:
        self.stats.dropped["queue-full"] += count
        self._warn_once(
            "queue-full",
            f"{self.peer} is not keeping up: dropped the {self._queue.drop} queued packet "
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
        False too when the peer reset a connection right after our first frame (see
        :data:`MISMATCH_WINDOW`; the warning says which framing to try), which a new
        connection's first frames are given :data:`SETTLE` s to show.
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
            for _ in range(int(SETTLE / _FLUSH_STEP) + 1):  # bounded on a still FakeClock too
                if not self._settling():
                    break
                until = min(deadline, (self._first_written_at or 0.0) + SETTLE)
                remaining = until - self.clock.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, _FLUSH_STEP))
            refused = self.stats.framing_resets != self._resets_reported
            self._resets_reported = self.stats.framing_resets
            return not refused

    def _settling(self) -> bool:
        """A fresh connection with frames written and nothing back yet (under ``_cond``)."""
        return (
            self._sock is not None
            and self._written_here > 0
            and self._received_here == 0
            and self._first_written_at is not None
            and not self._closed
        )

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
        self._first_written_at = None
        self._written_here = 0
        self._received_here = 0
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
        retry = (
            ""
            if self.sending_once
            else f" (trying again in {delay:g} s, then up to every {BACKOFF_MAX:g} s, while "
            "packets wait)"
        )
        self._warn_once(
            "connect", f"cannot connect to {self.peer}: {display.escape(strerror(code))}{retry}"
        )
        with self._cond:
            self._failures += 1
            self._cond.notify_all()

    def _lost(self, why: str, code: int | None = None) -> None:
        """The connection broke: the frame cut mid-write is lost, the queue waits for the next.

        ``code`` is the errno, when there is one: a reset right after our first frame is
        reported as the framing mismatch it most likely is (:meth:`_refused_framing`)."""
        if code in _RESET_ERRNOS and self._refused_framing():
            self._close_socket()
            self._backoff.failed()
            with self._cond:
                self._cond.notify_all()
            return
        with self._cond:
            self._settle_current()
        self._close_socket()
        self._backoff.failed()
        self._warn_once("lost", f"lost the connection to {self.peer} ({why}); reconnecting")
        self._warn_once.forget("connect")

    def _settle_current(self) -> None:
        """The connection is gone (called with ``_cond`` held): the frame being written is lost
        if part of it went, or else goes back to the head of the queue for the next one."""
        if self._current and self._current_sent > 0:
            self.stats.dropped["connection-lost"] += 1
        elif self._current:
            self._queue.put_back(self._current)
        self._current = b""
        self._current_sent = 0

    def _write(self) -> None:
        sock = self._sock
        assert sock is not None
        while True:
            with self._cond:
                if not self._current:
                    if not self._queue:
                        self._cond.notify_all()
                        return
                    self._current = self._queue.take()
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
                    why, code = exc.strerror or str(exc), exc.errno
                    break
                self._current_sent += sent
                if self._current_sent == len(self._current):
                    self.stats.sent += 1
                    self._written_here += 1
                    if self._first_written_at is None:
                        self._first_written_at = self.clock.monotonic()
                    self._current = b""
                    self._current_sent = 0
        self._lost(why, code)

    def _refused_framing(self) -> bool:
        """Report a reset that came right after our first frame on a connection, with nothing
        sent back: True when it was one (warned once, its frames counted as dropped)."""
        with self._cond:
            first = self._first_written_at
            written = self._written_here
            if (
                first is None
                or self._received_here
                or self.clock.monotonic() - first > MISMATCH_WINDOW
            ):
                return False
            self.stats.framing_resets += 1
            self.stats.dropped["reset-by-peer"] += written
            self._settle_current()
        other: Framing = "size" if self.framing == "slip" else "slip"
        suggestion = HostPort(self.peer.host, self.peer.port, "tcp", other)
        self._warn_once(
            "framing",
            f"{self.peer} reset the connection right after our first packet, framed with "
            f"{_FRAMING_NAMES[self.framing]}: it most likely reads another framing; try "
            f"{suggestion} ({_OTHER_FRAMING_READERS[self.framing]})",
        )
        return True

    def _read(self) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            data = sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._lost(exc.strerror or str(exc), exc.errno)
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
            self._received_here += 1
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
        stopped = threads.join(self._thread, timeout)
        with self._cond:
            unsent = self._queue.clear() + (1 if self._current else 0)
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
