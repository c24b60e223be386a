"""``oscsync netem``: a userspace UDP relay that delays, jitters, loses and duplicates datagrams.

Linux's netem qdisc needs root and a kernel module that most laptops (and CI machines) lack; a
forward-sync lab only needs the same effect on one UDP flow. :class:`Relay` listens on one
address and forwards every datagram to one ``forward`` address, like a tiny NAT: each sender gets
its own upstream socket, so whatever the far side answers comes back to that sender, through the
**same kind of impairment** in the reverse direction (clock pings see the network the ticks see).

Each direction has its own :class:`Impairment`, drawn from its own seeded generator, so a seeded
run makes the same decisions for the n-th datagram of a direction every time. A datagram is lost
with probability ``loss``; otherwise it is sent after a delay drawn from the distribution, and
with probability ``duplicate`` a second copy follows with its own delay (Linux netem re-enqueues
its clone the same way). With ``reorder`` off, a datagram never leaves before the one ahead of it
(its delay is stretched instead), as on a link that queues.

Delays are kept on a :class:`~oscsync.scheduler.Scheduler` (one timer thread and a heap, not a
sleep or a thread per datagram), capped at ``queue_limit`` held datagrams. Bytes are relayed as
they are: the relay does not decode OSC, so it passes on what it does not understand, and never
answers clock pings itself.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import random
import select
import socket
import threading
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from oscsync import threads
from oscsync import timetag as tt
from oscsync.clock import Clock, SystemClock
from oscsync.hostport import HostPort
from oscsync.scheduler import Dispatch, Scheduler, percentile
from oscsync.transport import MAX_DATAGRAM, TransportError, bind_error_message, set_recv_buffer

DISTRIBUTIONS = ("uniform", "normal", "pareto", "exponential")
PARETO_SHAPE = 3.0
"""Shape of the Pareto tail: 3 is heavy (occasional long stalls, like Wi-Fi retries) yet still
has a finite standard deviation, so ``--jitter`` can mean the same thing for every distribution."""

DEFAULT_QUEUE_LIMIT = 10_000
DEFAULT_MAX_CLIENTS = 256
DELAY_SAMPLES = 100_000
"""Achieved delays kept per direction for the percentiles in the report (the most recent)."""

_RECV_BUFFER = 4 * 1024 * 1024

WarningHandler = Callable[[str], None]
_Sender = Callable[[bytes], object]


@dataclass(frozen=True)
class ImpairmentSpec:
    """What to do to each datagram; times in seconds, probabilities in 0..1."""

    delay: float = 0.0
    jitter: float = 0.0
    dist: str = "uniform"
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: bool = True

    def __post_init__(self) -> None:
        if self.dist not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}")
        if not (self.delay >= 0 and self.jitter >= 0):
            raise ValueError("delay and jitter must be 0 or more seconds")
        if not (0 <= self.loss <= 1 and 0 <= self.duplicate <= 1):
            raise ValueError("loss and duplicate are probabilities between 0 and 1")

    @property
    def expected_std(self) -> float:
        """Standard deviation of the delay asked for (before delays below 0 are clamped)."""
        return self.jitter / math.sqrt(3) if self.dist == "uniform" else self.jitter

    def describe(self) -> str:
        text = f"delay {self.delay * 1e3:g} ms"
        if self.jitter:
            text += f" ± {self.jitter * 1e3:g} ms {self.dist}"
        text += f", loss {self.loss * 100:g}%, duplicate {self.duplicate * 100:g}%"
        if self.jitter and not self.reorder:
            text += ", no reordering"
        return text


class Impairment:
    """Draws the fate of each datagram of one direction from a seeded generator."""

    def __init__(self, spec: ImpairmentSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        if spec.dist == "pareto" and spec.jitter:
            # Shifted Pareto(shape a, scale m) with the asked mean and standard deviation:
            # std = m·sqrt(a / ((a-1)^2 (a-2))), mean of the Pareto part = a·m / (a-1).
            a = PARETO_SHAPE
            self._pareto_scale = spec.jitter / math.sqrt(a / ((a - 1) ** 2 * (a - 2)))
            self._pareto_shift = spec.delay - a * self._pareto_scale / (a - 1)

    def delay(self) -> float:
        """One delay in seconds (never negative)."""
        spec, rng = self.spec, self.rng
        if not spec.jitter:
            return spec.delay
        if spec.dist == "uniform":
            value = rng.uniform(spec.delay - spec.jitter, spec.delay + spec.jitter)
        elif spec.dist == "normal":
            value = rng.gauss(spec.delay, spec.jitter)
        elif spec.dist == "exponential":  # delay + Exp(mean jitter): issue #11's Wi-Fi model
            value = spec.delay + rng.expovariate(1.0 / spec.jitter)
        else:
            value = self._pareto_shift + self._pareto_scale * rng.paretovariate(PARETO_SHAPE)
        return max(0.0, value)

    def decide(self) -> list[float]:
        """Delays of the copies to send: [] lost, [d] once, [d1, d2] duplicated.

        Always draws the same number of random values per datagram, so one decision does not
        shift the ones after it between runs with different loss settings.
        """
        spec, rng = self.spec, self.rng
        lost = rng.random() < spec.loss
        duplicated = rng.random() < spec.duplicate
        first, second = self.delay(), self.delay()
        if lost:
            return []
        return [first, second] if duplicated else [first]


class DelayStats:
    """Achieved delays: count, mean, std over the whole run; percentiles over recent ones."""

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0.0
        self._sum_sq = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.recent: deque[float] = deque(maxlen=DELAY_SAMPLES)

    def add(self, value: float) -> None:
        self.count += 1
        self._sum += value
        self._sum_sq += value * value
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        self.recent.append(value)

    @property
    def mean(self) -> float:
        return self._sum / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        if self.count < 2:
            return 0.0
        variance = (self._sum_sq - self._sum**2 / self.count) / (self.count - 1)
        return math.sqrt(max(0.0, variance))

    def percentile(self, fraction: float) -> float:
        values = sorted(self.recent)
        return percentile(values, fraction) if values else math.nan


@dataclass
class DirectionStats:
    """Counters of one direction (``forward``: towards ``--forward``; ``reverse``: replies)."""

    received: int = 0
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    delays: DelayStats = field(default_factory=DelayStats)

    def line(self, name: str) -> str:
        text = (
            f"{name}: {self.received} in, {self.sent} out "
            f"({self.lost} lost, {self.duplicated} duplicated"
        )
        if self.dropped:
            text += ", dropped " + ", ".join(f"{k} {n}" for k, n in sorted(self.dropped.items()))
        text += ")"
        d = self.delays
        if d.count:
            text += (
                f"; delay mean {d.mean * 1e3:.2f} ms, std {d.std * 1e3:.2f} ms, "
                f"min {d.minimum * 1e3:.2f}, p50 {d.percentile(0.5) * 1e3:.2f}, "
                f"p99 {d.percentile(0.99) * 1e3:.2f}, max {d.maximum * 1e3:.2f} ms"
            )
        return text


class _Direction:
    def __init__(self, name: str, impairment: Impairment) -> None:
        self.name = name
        self.impairment = impairment
        self.stats = DirectionStats()
        self.last_due = -math.inf


def forwards_to_itself(listen: HostPort, forward: HostPort) -> bool:
    """True when ``forward`` is the relay's own ``listen`` address.

    Every datagram would then come back as if from a new sender, get a new upstream socket and
    go round again, until ``max_clients`` sockets are spent. A wildcard listener (``0.0.0.0``)
    is caught with a loopback forward; one of the machine's other addresses is not (still bounded
    by ``max_clients``).
    """
    if forward.port != listen.port:
        return False
    return forward.ip == listen.ip or (listen.ip.is_unspecified and forward.ip.is_loopback)


def _open_upstream(forward: HostPort) -> socket.socket:
    """A non-blocking socket connected to ``forward`` (TransportError, one line, if refused)."""
    sock = socket.socket(forward.family, socket.SOCK_DGRAM)
    try:
        set_recv_buffer(sock, _RECV_BUFFER)
        sock.connect(forward.sockaddr)
    except OSError as exc:
        sock.close()
        raise TransportError(exc.errno, f"cannot send to {forward}: {exc.strerror}") from None
    sock.setblocking(False)
    return sock


def _rng(seed: int | None, direction: str) -> random.Random:
    # String seeds are hashed deterministically (unlike hash()), so a seed means the same draws
    # in every process; each direction gets its own stream.
    return (
        random.Random(f"oscsync-netem/{seed}/{direction}") if seed is not None else random.Random()
    )


class Relay:
    """Relay datagrams between senders on ``listen`` and ``forward``, impaired both ways."""

    def __init__(
        self,
        listen: HostPort,
        forward: HostPort,
        spec: ImpairmentSpec,
        *,
        seed: int | None = None,
        clock: Clock | None = None,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        on_warning: WarningHandler | None = None,
    ) -> None:
        self.clock = clock if clock is not None else SystemClock()
        self.spec = spec
        self.forward_to = forward
        self.max_clients = max_clients
        self._warn = on_warning or (lambda _: None)
        self._warned: set[str] = set()
        self.forward = _Direction("forward", Impairment(spec, _rng(seed, "forward")))
        self.reverse = _Direction("reverse", Impairment(spec, _rng(seed, "reverse")))
        # spin=0: a relay's sub-millisecond overshoot is far below the jitter it adds, and a
        # spinning timer thread would hold the GIL against every other thread in the process.
        self.scheduler = Scheduler(
            self.clock, spin=0.0, max_items=queue_limit, late_tolerance=math.inf
        )
        self._lock = threading.Lock()
        self._clients: dict[tuple[str, int], socket.socket] = {}
        self._client_of_fd: dict[int, tuple[str, int]] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        self._listen = socket.socket(listen.family, socket.SOCK_DGRAM)
        try:
            set_recv_buffer(self._listen, _RECV_BUFFER)
            self._listen.bind(listen.sockaddr)
        except OSError as exc:
            self._listen.close()
            raise TransportError(exc.errno, bind_error_message(listen, exc)) from None
        self._listen.setblocking(False)
        try:
            # Fail here, as one line, if the kernel refuses the forward address (broadcast
            # without SO_BROADCAST, no route), not later on the relay thread.
            _open_upstream(forward).close()
        except TransportError:
            self._listen.close()
            raise
        self._wake_r, self._wake_w = os.pipe()
        self._poller = select.poll()
        self._poller.register(self._listen.fileno(), select.POLLIN)
        self._poller.register(self._wake_r, select.POLLIN)

    @property
    def local_address(self) -> HostPort:
        host, port = self._listen.getsockname()[:2]
        return HostPort(host, port)

    def start(self) -> None:
        self.scheduler.start()
        self._thread = threads.daemon_thread(self._loop, name="oscsync-netem")
        threads.start(self._thread)

    # -- receiving -------------------------------------------------------------------------

    def _loop(self) -> None:
        listen_fd = self._listen.fileno()
        while not self._closed:
            for fd, _ in self._poller.poll():
                if fd == self._wake_r or self._closed:
                    return
                if fd == listen_fd:
                    self._drain_listener()
                else:
                    self._drain_upstream(fd)

    def _drain_listener(self) -> None:
        for _ in range(512):
            try:
                data, source = self._listen.recvfrom(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except OSError:
                # An ICMP error for an earlier reply to a sender that went away: not fatal.
                self.reverse.stats.dropped["send-refused"] += 1
                continue
            client = (source[0], source[1])
            upstream = self._upstream_for(client)
            if upstream is None:
                continue  # refused, and counted
            self._impair(self.forward, data, upstream.send)

    def _drain_upstream(self, fd: int) -> None:
        client = self._client_of_fd.get(fd)
        if client is None:
            return
        sock = self._clients[client]
        listen = self._listen

        def reply(data: bytes) -> object:
            return listen.sendto(data, client)

        for _ in range(512):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                # The far side is not listening (yet): the kernel told us about an earlier send.
                self.forward.stats.dropped["send-refused"] += 1
                continue
            except OSError:
                return
            self._impair(self.reverse, data, reply)

    def _upstream_for(self, client: tuple[str, int]) -> socket.socket | None:
        sock = self._clients.get(client)
        if sock is not None:
            return sock
        if len(self._clients) >= self.max_clients:
            self._refuse(
                "too-many-senders", f"more than {self.max_clients} senders: ignoring new ones"
            )
            return None
        try:
            sock = _open_upstream(self.forward_to)
        except TransportError as exc:
            # Refused after start-up (the route went away): drop and count, keep relaying.
            self._refuse("forward-error", exc.strerror or str(exc))
            return None
        with self._lock:
            self._clients[client] = sock
            self._client_of_fd[sock.fileno()] = client
        self._poller.register(sock.fileno(), select.POLLIN)
        return sock

    def _refuse(self, reason: str, warning: str) -> None:
        """Count a datagram from a sender that gets no upstream socket; warn once per reason."""
        with self._lock:
            self.forward.stats.received += 1
            self.forward.stats.dropped[reason] += 1
        if reason not in self._warned:
            self._warned.add(reason)
            self._warn(warning)

    # -- impairing -------------------------------------------------------------------------

    def _impair(self, direction: _Direction, data: bytes, send: _Sender) -> None:
        clock = self.clock
        arrival = clock.monotonic()
        stats = direction.stats
        with self._lock:
            stats.received += 1
            delays = direction.impairment.decide()
            if not delays:
                stats.lost += 1
                return
            if len(delays) > 1:
                stats.duplicated += 1
            dues = []
            for delay in delays:
                due = arrival + delay
                if not self.spec.reorder:
                    due = max(due, direction.last_due)
                    direction.last_due = due
                dues.append(due)
        for due in dues:
            stamp = tt.from_unix(clock.monotonic_to_wall(due))
            action = _Delivery(self, direction, data, send, arrival)
            if not self.scheduler.submit(stamp, action):
                with self._lock:
                    stats.dropped["queue-full"] += 1

    def _delivered(self, direction: _Direction, achieved: float, ok: bool, reason: str) -> None:
        with self._lock:
            if ok:
                direction.stats.sent += 1
                direction.stats.delays.add(achieved)
            else:
                direction.stats.dropped[reason] += 1

    # -- stopping --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop relaying; datagrams still held are discarded. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self.scheduler.close()
        held = self.scheduler.stats().dropped.get("closed", 0)
        if held:
            self.forward.stats.dropped["held-at-exit"] += held
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        with self._lock:
            sockets = list(self._clients.values())
        for sock in [self._listen, *sockets]:
            sock.close()

    def report(self) -> str:
        """The achieved behaviour, both directions, next to what was asked."""
        spec = self.spec
        with self._lock:
            lines = [
                f"netem asked: {spec.describe()} (delay std {spec.expected_std * 1e3:.2f} ms)",
                "netem " + self.forward.stats.line("forward"),
                "netem " + self.reverse.stats.line("reverse"),
            ]
        return "\n".join(lines)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Delivery:
    """The scheduled send of one copy of a datagram."""

    __slots__ = ("arrival", "data", "direction", "relay", "send")

    def __init__(
        self, relay: Relay, direction: _Direction, data: bytes, send: _Sender, arrival: float
    ) -> None:
        self.relay = relay
        self.direction = direction
        self.data = data
        self.send = send
        self.arrival = arrival

    def __call__(self, dispatch: Dispatch) -> None:
        try:
            self.send(self.data)
        except ConnectionRefusedError:
            ok, reason = False, "send-refused"
        except BlockingIOError:
            ok, reason = False, "buffer-full"
        except OSError as exc:
            ok, reason = False, errno.errorcode.get(exc.errno or 0, "send-error")
        else:
            ok, reason = True, ""
        self.relay._delivered(self.direction, dispatch.dispatched - self.arrival, ok, reason)
