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
sleep or a thread per datagram), capped at ``queue_limit`` held datagrams and ``queue_bytes``
held bytes; what does not fit is dropped, counted by reason and warned about once. Bytes are
relayed as they are: the relay does not decode OSC, so it passes on what it does not understand,
and never answers clock pings itself.

Upstream sockets are bounded too (#20 item 7): at most ``max_clients``, each closed after
``idle_timeout`` without traffic, and the least recently active one with nothing left in the
delay queue is closed to make room for a new sender, so a stream of one-shot senders never stops
the relay. ``allow`` restricts who may
send through it (a relay must not let a stranger reach a listener that uses ``--allow``), and a
datagram that comes back from one of the relay's own upstream sockets (``--forward`` leads back
to ``--listen``) is dropped instead of going round again.

One thread waits on every socket with the transport's
:class:`~oscsync.net.selector.WakeableSelector` (:mod:`selectors` plus a :func:`socket.socketpair`
to wake it, since Windows can select on sockets only, #21).
"""

from __future__ import annotations

import errno
import ipaddress
import math
import random
import socket
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from oscsync import threads
from oscsync.clock import Clock, SystemClock
from oscsync.net.hostport import HostPort
from oscsync.net.listening import bind_error_message
from oscsync.net.selector import WakeableSelector
from oscsync.net.udp import TransportError
from oscsync.net.udpsocket import MAX_DATAGRAM, set_recv_buffer
from oscsync.osc import timetag as tt
from oscsync.scheduler import Dispatch, Scheduler
from oscsync.stats import Gauge, RunningStats, WarnOnce

DISTRIBUTIONS = ("uniform", "normal", "pareto", "exponential")
PARETO_SHAPE = 3.0
"""Shape of the Pareto tail: 3 is heavy (occasional long stalls, like Wi-Fi retries) yet still
has a finite standard deviation, so ``--jitter`` can mean the same thing for every distribution."""

DEFAULT_QUEUE_LIMIT = 10_000
DEFAULT_QUEUE_BYTES = 32 * 1024 * 1024
"""Bytes held at once (#20 item 1): the item cap alone let 10,000 datagrams of 64 KB, held by
``--delay 10s``, take 641 MB. 32 MiB holds 10 s of 1,000 datagrams/s of up to 2.9 KB each."""
HELD_OVERHEAD = 448
"""Bytes one held copy costs beyond its payload (heap entry, scheduler item, delivery, bytes
header, floats): 390-445 measured with tracemalloc on CPython 3.11 for 0-1,000-byte datagrams,
rounded up. Counted so that a flood of empty datagrams meets the byte bound too."""
DEFAULT_MAX_CLIENTS = 256
DEFAULT_IDLE_TIMEOUT = 60.0
"""A sender's upstream socket is closed after this long without traffic either way, like a NAT's
UDP mapping (Linux conntrack keeps 30 s unanswered, 120 s answered flows)."""
_SWEEP_INTERVAL = 1.0
"""How often (seconds) the relay thread looks for idle senders when nothing arrives."""
_ALLOW_CACHE_LIMIT = 4096
DELAY_SAMPLES = 100_000
"""Achieved delays kept per direction for the percentiles in the report (the most recent)."""

_RECV_BUFFER = 4 * 1024 * 1024

WarningHandler = Callable[[str], None]
_Sender = Callable[[bytes], object]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


@dataclass
class DirectionStats:
    """Counters of one direction (``forward``: towards ``--forward``; ``reverse``: replies)."""

    received: int = 0
    sent: int = 0
    lost: int = 0
    duplicated: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    delays: RunningStats = field(default_factory=lambda: RunningStats(recent=DELAY_SAMPLES))

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


def _plain(ip: IPAddress) -> IPAddress:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it carries."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _address_key(host: str, port: int) -> tuple[IPAddress, int]:
    return _plain(ipaddress.ip_address(host.split("%")[0])), port


def is_local_address(ip: IPAddress) -> bool:
    """True when ``ip`` is one of this machine's addresses (a socket can be bound to it)."""
    ip = _plain(ip)
    if ip.is_loopback or ip.is_unspecified:
        return True
    if ip.is_multicast:
        return False  # bindable, but a group, not this machine (a loop through one is caught live)
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True


def forwards_to_itself(
    listen: HostPort, forward: HostPort, is_local: Callable[[IPAddress], bool] = is_local_address
) -> bool:
    """True when datagrams sent to ``forward`` would arrive at the relay's own ``listen`` socket.

    Every datagram would then come back as if from a new sender and go round again. IPv4-mapped
    addresses are compared as the IPv4 address they carry (``[::ffff:127.0.0.1]:P`` reaches a
    listener on ``127.0.0.1:P``, ``0.0.0.0:P`` or a dual-stack ``[::]:P``); a forward to the
    wildcard reaches this machine; a wildcard listener hears every address of the machine.
    Whatever this misses (a route that leads back) is caught at run time: see
    :meth:`Relay._upstream_for`.
    """
    if forward.port != listen.port:
        return False
    here, there = _plain(listen.ip), _plain(forward.ip)
    if there.is_unspecified:
        # Sending to 0.0.0.0 or :: delivers to this machine (Linux and macOS treat it as local).
        there = ipaddress.ip_address("127.0.0.1" if there.version == 4 else "::1")
    if here == there:
        return True
    if not here.is_unspecified:
        return False
    if here.version == 4 and there.version == 6:
        return False  # an IPv4 wildcard listener never hears IPv6
    # [::] is dual-stack unless IPV6_V6ONLY is set (Linux and macOS default): it hears IPv4 too.
    return is_local(there)


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


class _SenderExpired(Exception):
    """A held datagram's upstream socket was closed (idle or evicted) before it was due."""


class _Client:
    """One sender on ``listen`` and the upstream socket its datagrams leave from."""

    __slots__ = ("address", "closed", "held", "last_seen", "local", "lock", "sock")

    def __init__(self, address: tuple[str, int], sock: socket.socket, now: float) -> None:
        self.address = address
        self.sock = sock
        self.last_seen = now
        host, port = sock.getsockname()[:2]
        self.local = _address_key(host, port)
        self.closed = False
        self.held = 0
        """Datagrams of this sender waiting in the delay queue (they leave from this socket)."""
        # Held between a send on the timer thread and a close on the relay thread, so a closed
        # descriptor number (reused by the next socket) is never written to.
        self.lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self.lock:
            self.held -= 1
            if self.closed:
                raise _SenderExpired
            return self.sock.send(data)

    def hold(self) -> None:
        with self.lock:
            self.held += 1

    def unhold(self) -> None:
        with self.lock:
            self.held -= 1

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.sock.close()


@dataclass
class SenderStats:
    """Upstream sockets: how many now, at most, and how many were opened and closed, and why."""

    active: Gauge = field(default_factory=Gauge)
    opened: int = 0
    expired: int = 0
    evicted: int = 0

    def line(self) -> str:
        return (
            f"senders: {self.active.now} now, {self.active.peak} at most; {self.opened} opened, "
            f"{self.expired} closed idle, {self.evicted} closed to make room"
        )


def _size(count: int) -> str:
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 / 1024:.1f} MiB"


@dataclass
class QueueStats:
    """What the delay queue held: now and at most, in datagrams and bytes."""

    items: Gauge = field(default_factory=Gauge)
    bytes: Gauge = field(default_factory=Gauge)

    def hold(self, size: int) -> None:
        self.items.add()
        self.bytes.add(size)

    def release(self, size: int) -> None:
        self.items.remove()
        self.bytes.remove(size)

    def line(self) -> str:
        return (
            f"queue: held at most {self.items.peak} datagrams, {_size(self.bytes.peak)} "
            f"(payload + {HELD_OVERHEAD} B each)"
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
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_clients: int = DEFAULT_MAX_CLIENTS,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        allow: Sequence[Network] = (),
        on_warning: WarningHandler | None = None,
    ) -> None:
        if max_clients < 1 or queue_bytes < 1 or not idle_timeout > 0:
            raise ValueError("max_clients, queue_bytes and idle_timeout must be positive")
        self.clock = clock if clock is not None else SystemClock()
        self.spec = spec
        self.forward_to = forward
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.queue_limit = queue_limit
        self.queue_bytes = queue_bytes
        self._allow = tuple(allow)
        self._allow_cache: dict[str, bool] = {}
        self._warn = on_warning or (lambda _: None)
        self._warn_once = WarnOnce(self._warn)
        self.forward = _Direction("forward", Impairment(spec, _rng(seed, "forward")))
        self.reverse = _Direction("reverse", Impairment(spec, _rng(seed, "reverse")))
        self.senders = SenderStats()
        self.queue = QueueStats()
        # spin=0: a relay's sub-millisecond overshoot is far below the jitter it adds, and a
        # spinning timer thread would hold the GIL against every other thread in the process.
        # No horizon: the delays are our own draws (a Pareto tail may pass 60 s), and what is
        # held is bounded by queue_limit and queue_bytes, so a refusal always means "queue-full".
        self.scheduler = Scheduler(
            self.clock,
            spin=0.0,
            max_items=queue_limit,
            horizon=math.inf,
            late_tolerance=math.inf,
        )
        self._lock = threading.Lock()  # stats and the queue's byte count
        # Least recently active first; touched by the relay thread only (close() after joining).
        self._clients: OrderedDict[tuple[str, int], _Client] = OrderedDict()
        self._client_of_local: dict[tuple[IPAddress, int], _Client] = {}
        self._closed = False
        self._thread: threading.Thread | None = None
        self._last_sweep = -math.inf
        self._listen = socket.socket(listen.family, socket.SOCK_DGRAM)
        try:
            set_recv_buffer(self._listen, _RECV_BUFFER)
            if hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
                # Windows: without it, another process's SO_REUSEADDR can take the port (#21).
                self._listen.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
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
        self._selector = WakeableSelector()
        self._selector.register(self._listen, None)
        self._forward_lock = threading.Lock()
        self._new_forward: tuple[HostPort, IPAddress] | None = None
        """Set by :meth:`set_forward`, applied by the relay thread (the sockets' owner)."""
        self.forward_moves = 0

    @property
    def local_address(self) -> HostPort:
        host, port = self._listen.getsockname()[:2]
        return HostPort(host, port)

    def set_forward(self, forward: HostPort) -> None:
        """Forward to ``forward`` from now on (``--forward @NAME`` re-registered); thread-safe.

        Checked here, in the caller's thread: TransportError if the kernel refuses the address
        or it leads back to the relay's own listening socket (nothing changes then). Applied by
        the relay thread between two waits: every sender's upstream socket is re-connected in
        place, so it keeps its port and the far side sees the same source as before (a
        ``--sync`` follower keeps following it); datagrams still held leave for the new
        address. A socket that cannot be re-connected (another address family) is closed and
        its sender gets a new one with its next datagram.
        """
        if forwards_to_itself(self.local_address, forward):
            raise TransportError(
                errno.EINVAL, f"{forward} leads back to the relay's own listening socket"
            )
        probe = _open_upstream(forward)
        try:
            source = _address_key(*probe.getsockname()[:2])[0]
        finally:
            probe.close()
        with self._forward_lock:
            self._new_forward = (forward, source)
        self._selector.wake()

    def _apply_new_forward(self) -> None:
        with self._forward_lock:
            new, self._new_forward = self._new_forward, None
        if new is None:
            return
        forward, source = new
        self.forward_to = forward
        self.forward_moves += 1
        for address, sender in list(self._clients.items()):
            try:
                with sender.lock:  # no send from the timer thread half way through
                    sender.sock.connect(forward.sockaddr)
                local = _address_key(*sender.sock.getsockname()[:2])
            except OSError:
                local = None
            # A re-connected socket keeps its source address (Linux), which may not be the one
            # the new route needs (127.0.0.1 towards another machine): then a new socket.
            if local is None or local[0] != source:
                self._close_client(self._clients.pop(address))
                continue
            self._client_of_local.pop(sender.local, None)
            sender.local = local
            self._client_of_local[local] = sender

    def start(self) -> None:
        self.scheduler.start()
        self._thread = threads.daemon_thread(self._loop, name="oscsync-netem")
        threads.start(self._thread)

    # -- receiving -------------------------------------------------------------------------

    def _loop(self) -> None:
        while self.step(_SWEEP_INTERVAL):
            pass

    def step(self, timeout: float | None = 0.0) -> bool:
        """Wait up to ``timeout`` seconds for datagrams, relay them, close idle senders.

        The relay thread calls this in a loop; a test calls it itself (without :meth:`start`)
        to drive the relay one step at a time with a fake clock. False once closed.
        """
        if self._closed:
            return False
        ready = self._selector.wait(timeout)
        if self._new_forward is not None:
            self._apply_new_forward()
        for _, sender in ready:
            if self._closed:
                return False
            if sender is None:
                self._drain_listener()
            else:
                self._drain_upstream(sender)
        if self._closed:
            return False
        self._expire_idle(self.clock.monotonic())
        return True

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
            if self._allow and not self._allowed(client[0]):
                self._refuse("not-allowed", "")
                continue
            sender = self._upstream_for(client)
            if sender is None:
                continue  # refused, and counted
            self._impair(self.forward, data, sender.send, sender)

    def _drain_upstream(self, sender: _Client) -> None:
        if sender.closed:
            return
        client = sender.address
        listen = self._listen

        def reply(data: bytes) -> object:
            return listen.sendto(data, client)

        for _ in range(512):
            try:
                data = sender.sock.recv(MAX_DATAGRAM)
            except BlockingIOError:
                return
            except (ConnectionRefusedError, ConnectionResetError):
                # The far side is not listening (yet): the kernel told us about an earlier send
                # (Windows reports the ICMP error as a reset).
                self.forward.stats.dropped["send-refused"] += 1
                continue
            except OSError:
                return
            self._impair(self.reverse, data, reply, sender)

    def _allowed(self, host: str) -> bool:
        verdict = self._allow_cache.get(host)
        if verdict is None:
            # A dual-stack listener sees IPv4 senders as ::ffff:a.b.c.d: compare them as IPv4.
            ip = _plain(ipaddress.ip_address(host.split("%")[0]))
            verdict = any(ip.version == net.version and ip in net for net in self._allow)
            if len(self._allow_cache) >= _ALLOW_CACHE_LIMIT:
                self._allow_cache.clear()
            self._allow_cache[host] = verdict
        return verdict

    def _upstream_for(self, client: tuple[str, int]) -> _Client | None:
        sender = self._clients.get(client)
        now = self.clock.monotonic()
        if sender is not None:
            self._clients.move_to_end(client)
            sender.last_seen = max(sender.last_seen, now)
            return sender
        if _address_key(*client) in self._client_of_local:
            # One of our own upstream sockets: --forward leads back to --listen (a route the
            # start-up check cannot see). Going round again would open a socket per lap.
            self._refuse(
                "self-loop",
                "a datagram came back from the relay's own upstream socket "
                f"(--forward {self.forward_to} leads back to --listen): dropped",
            )
            return None
        self._expire_idle(now)
        victim = None
        if len(self._clients) >= self.max_clients:
            # Full: the least recently active sender with nothing in the delay queue gives up
            # its socket, so one-shot senders can never stop the relay (#20 item 7); its next
            # datagram opens a new one. While every socket still has datagrams to send, new
            # senders wait (dropped, counted): closing one would lose what it holds.
            victim = next((a for a, s in self._clients.items() if s.held <= 0), None)
            if victim is None:
                self._refuse(
                    "too-many-senders",
                    f"all {self.max_clients} sender sockets have datagrams in the delay queue: "
                    "dropping datagrams from new senders until one is free (counted)",
                )
                return None
        try:
            sock = _open_upstream(self.forward_to)
        except TransportError as exc:
            # Refused after start-up (the route went away): drop and count, keep relaying.
            self._refuse("forward-error", exc.strerror or str(exc))
            return None
        if victim is not None:
            self._close_client(self._clients.pop(victim))
            self.senders.evicted += 1
            self._warn_once(
                "evicted",
                f"more than {self.max_clients} senders at once: closing the least recently "
                "active one for each new one (counted)",
            )
        sender = _Client(client, sock, now)
        self._clients[client] = sender
        self._client_of_local[sender.local] = sender
        self._selector.register(sock, sender)
        self.senders.opened += 1
        self.senders.active.add()
        return sender

    def _expire_idle(self, now: float) -> None:
        """Close upstream sockets idle for ``idle_timeout`` (at most once a second of clock)."""
        if now - self._last_sweep < min(_SWEEP_INTERVAL, self.idle_timeout):
            return
        self._last_sweep = now
        cutoff = now - self.idle_timeout
        idle = [a for a, s in self._clients.items() if s.last_seen <= cutoff and s.held <= 0]
        for address in idle:
            self._close_client(self._clients.pop(address))
            self.senders.expired += 1

    def _close_client(self, sender: _Client) -> None:
        self._selector.unregister(sender.sock)
        self._client_of_local.pop(sender.local, None)
        sender.close()
        self.senders.active.remove()

    def _refuse(self, reason: str, warning: str) -> None:
        """Count a datagram from a sender that gets no upstream socket; warn once per reason."""
        with self._lock:
            self.forward.stats.received += 1
            self.forward.stats.dropped[reason] += 1
        if warning:
            self._warn_once(reason, warning)

    # -- impairing -------------------------------------------------------------------------

    def _impair(
        self, direction: _Direction, data: bytes, send: _Sender, sender: _Client | None = None
    ) -> None:
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
        if sender is not None:
            # Idle counts from when the last datagram leaves, so a long --delay does not close
            # the socket its held datagrams will leave from.
            sender.last_seen = max(sender.last_seen, *dues)
        size = len(data) + HELD_OVERHEAD
        for due in dues:
            if not self._hold(size, stats):
                continue
            stamp = tt.from_unix(clock.monotonic_to_wall(due))
            action = _Delivery(self, direction, data, send, arrival, size)
            leaves_upstream = sender is not None and direction is self.forward
            if leaves_upstream:
                sender.hold()  # type: ignore[union-attr]
            if not self.scheduler.submit(stamp, action):
                if leaves_upstream:
                    sender.unhold()  # type: ignore[union-attr]
                self._release(size)
                self._drop(
                    stats,
                    "queue-full",
                    f"delay queue full ({self.queue_limit} datagrams held): dropping (counted)",
                )

    def _hold(self, size: int, stats: DirectionStats) -> bool:
        """Reserve ``size`` bytes of the queue; False (dropped, counted) when it would overflow."""
        queue = self.queue
        with self._lock:
            if queue.bytes.now + size <= self.queue_bytes:
                queue.hold(size)
                return True
        self._drop(
            stats,
            "queue-bytes",
            f"delay queue holds {self.queue_bytes / 1024 / 1024:g} MiB: dropping (counted)",
        )
        return False

    def _release(self, size: int) -> None:
        with self._lock:
            self.queue.release(size)

    def _drop(self, stats: DirectionStats, reason: str, warning: str) -> None:
        with self._lock:
            stats.dropped[reason] += 1
        self._warn_once(reason, warning)

    def _delivered(
        self, direction: _Direction, achieved: float, ok: bool, reason: str, size: int
    ) -> None:
        with self._lock:
            self.queue.release(size)
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
        self._selector.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)
        self.scheduler.close()
        held = self.scheduler.stats().dropped.get("closed", 0)
        if held:
            self.forward.stats.dropped["held-at-exit"] += held
        self._selector.close()
        senders = list(self._clients.values())
        for sender in senders:
            sender.close()
        self._listen.close()

    def report(self) -> str:
        """The achieved behaviour, both directions, next to what was asked."""
        spec = self.spec
        with self._lock:
            lines = [
                f"netem asked: {spec.describe()} (delay std {spec.expected_std * 1e3:.2f} ms)",
                "netem " + self.forward.stats.line("forward"),
                "netem " + self.reverse.stats.line("reverse"),
                "netem " + self.senders.line(),
                "netem " + self.queue.line(),
            ]
        return "\n".join(lines)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass(slots=True, eq=False)  # an action: compared by identity
class _Delivery:
    """The scheduled send of one copy of a datagram."""

    relay: Relay
    direction: _Direction
    data: bytes
    send: _Sender
    arrival: float
    size: int

    def __call__(self, dispatch: Dispatch) -> None:
        try:
            self.send(self.data)
        except _SenderExpired:
            ok, reason = False, "sender-expired"
        except (ConnectionRefusedError, ConnectionResetError):
            ok, reason = False, "send-refused"
        except BlockingIOError:
            ok, reason = False, "buffer-full"
        except OSError as exc:
            ok, reason = False, errno.errorcode.get(exc.errno or 0, "send-error")
        else:
            ok, reason = True, ""
        self.relay._delivered(
            self.direction, dispatch.dispatched - self.arrival, ok, reason, self.size
        )
