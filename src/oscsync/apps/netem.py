"""``oscsync netem``: a userspace UDP relay that delays, jitters, loses and duplicates datagrams.

Linux's netem qdisc needs root and a kernel module that most laptops (and CI machines) lack; a
forward-sync lab only needs the same effect on one UDP flow. :class:`Relay` listens on one
address and forwards every datagram to one ``forward`` address, like a tiny NAT: each sender gets
its own upstream socket, so whatever the far side answers comes back to that sender, through the
**same kind of impairment** in the reverse direction (clock pings see the network the ticks see).
What happens to a datagram on the way (loss, delay, duplicates, the bounded delay queue) is the
link model's, :class:`oscsync.apps.netemlink.Link`. Bytes are relayed as they are: the relay does
not decode OSC, so it passes on what it does not understand, and never answers clock pings
itself.

Upstream sockets are bounded too (#20 item 7): at most ``max_clients``, each closed after
``idle_timeout`` without traffic, and the least recently active one with nothing left in the
delay queue is closed to make room for a new sender, so a stream of one-shot senders never stops
the relay. ``allow`` restricts who may
send through it (a relay must not let a stranger reach a listener that uses ``--allow``), and a
datagram that comes back from one of the relay's own upstream sockets (``--forward`` leads back
to ``--listen``) is dropped instead of going round again. Only one that was sent after that
socket was opened: a sender that went away may have left a datagram queued from the very port
the kernel has since given to a new upstream socket (:meth:`Relay._upstream_for`).

One thread waits on every socket with the transport's
:class:`~oscsync.net.selector.WakeableSelector` (:mod:`selectors` plus a :func:`socket.socketpair`
to wake it, since Windows can select on sockets only, #21).
"""

from __future__ import annotations

import errno
import ipaddress
import math
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from oscsync import threads
from oscsync.apps.netemlink import (
    DEFAULT_QUEUE_BYTES,
    DEFAULT_QUEUE_LIMIT,
    ImpairmentSpec,
    Link,
    SenderExpired,
)
from oscsync.clock import Clock, SystemClock
from oscsync.net.hostport import HostPort, is_local_address, plain_ip
from oscsync.net.listening import bind_error_message
from oscsync.net.selector import WakeableSelector
from oscsync.net.udp import TransportError
from oscsync.net.udpsocket import MAX_DATAGRAM, set_recv_buffer
from oscsync.stats import Gauge, WarnOnce

DEFAULT_MAX_CLIENTS = 256
DEFAULT_IDLE_TIMEOUT = 60.0
"""A sender's upstream socket is closed after this long without traffic either way, like a NAT's
UDP mapping (Linux conntrack keeps 30 s unanswered, 120 s answered flows)."""
_SWEEP_INTERVAL = 1.0
"""How often (seconds) the relay thread looks for idle senders when nothing arrives."""
_ALLOW_CACHE_LIMIT = 4096
"""Source hosts whose --allow verdict is remembered; emptied when full. A key is an address the
kernel gave (at most ~60 characters with an IPv6 scope), so this is ~1 MB at most (issue 27)."""

_RECV_BUFFER = 4 * 1024 * 1024

WarningHandler = Callable[[str], None]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address_key(host: str, port: int) -> tuple[IPAddress, int]:
    return plain_ip(ipaddress.ip_address(host.split("%")[0])), port


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
    here, there = plain_ip(listen.ip), plain_ip(forward.ip)
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


class _Client:
    """One sender on ``listen`` and the upstream socket its datagrams leave from."""

    __slots__ = ("address", "closed", "held", "last_seen", "local", "lock", "opened_in", "sock")

    def __init__(
        self, address: tuple[str, int], sock: socket.socket, now: float, opened_in: int
    ) -> None:
        self.address = address
        self.sock = sock
        self.last_seen = now
        host, port = sock.getsockname()[:2]
        self.local = _address_key(host, port)
        self.opened_in = opened_in
        """The listening socket's queue generation (:attr:`Relay._queue_emptied`) when this
        socket took its port: datagrams from that port queued before then are not its own."""
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
                raise SenderExpired
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
        self.forward_to = forward
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self._allow = tuple(allow)
        self._allow_cache: dict[str, bool] = {}
        self._warn = on_warning or (lambda _: None)
        self._warn_once = WarnOnce(self._warn)
        self.link = Link(
            spec,
            clock=self.clock,
            warn_once=self._warn_once,
            seed=seed,
            queue_limit=queue_limit,
            queue_bytes=queue_bytes,
        )
        """Both directions: what happens to each datagram, counted (forward, reverse, queue)."""
        self.senders = SenderStats()
        # Least recently active first; touched by the relay thread only (close() after joining).
        self._clients: OrderedDict[tuple[str, int], _Client] = OrderedDict()
        self._client_of_local: dict[tuple[IPAddress, int], _Client] = {}
        self._queue_emptied = 0
        """Times the listening socket's queue was read to the end: a datagram read later than
        that was queued later than everything that happened before it."""
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
            if local != sender.local:
                sender.opened_in = self._queue_emptied
            sender.local = local
            self._client_of_local[local] = sender

    def start(self) -> None:
        self.link.start()
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
                self._queue_emptied += 1
                return
            except OSError:
                # An ICMP error for an earlier reply to a sender that went away: not fatal.
                self.link.reverse.stats.dropped["send-refused"] += 1
                continue
            client = (source[0], source[1])
            if self._allow and not self._allowed(client[0]):
                self._refuse("not-allowed", "")
                continue
            sender = self._upstream_for(client)
            if sender is None:
                continue  # refused, and counted
            self.link.carry(self.link.forward, data, sender.send, sender)

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
                self.link.forward.stats.dropped["send-refused"] += 1
                continue
            except OSError:
                return
            self.link.carry(self.link.reverse, data, reply, sender)

    def _allowed(self, host: str) -> bool:
        verdict = self._allow_cache.get(host)
        if verdict is None:
            # A dual-stack listener sees IPv4 senders as ::ffff:a.b.c.d: compare them as IPv4.
            ip = plain_ip(ipaddress.ip_address(host.split("%")[0]))
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
        own = self._client_of_local.get(_address_key(*client))
        if own is not None and own.opened_in < self._queue_emptied:
            # One of our own upstream sockets: --forward leads back to --listen (a route the
            # start-up check cannot see). Going round again would open a socket per lap. Only
            # if the socket existed when the datagram was queued: the queue has been read to
            # the end since it was opened, so anything read now was queued after that. A
            # datagram from its port read before then was sent by a sender that went away and
            # whose port the kernel gave to the upstream socket: a new sender like any other.
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
        sender = _Client(client, sock, now, self._queue_emptied)
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
        self.link.refuse(reason)
        if warning:
            self._warn_once(reason, warning)

    # -- stopping --------------------------------------------------------------------------

    def close(self) -> None:
        """Stop relaying; datagrams still held are discarded. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._selector.wake()
        threads.join(self._thread, 2.0)
        self.link.close()
        self._selector.close()
        senders = list(self._clients.values())
        for sender in senders:
            sender.close()
        self._listen.close()

    def report(self) -> str:
        """The achieved behaviour, both directions, next to what was asked."""
        link = self.link
        spec = link.spec
        with link.lock:
            lines = [
                f"netem asked: {spec.describe()} (delay std {spec.expected_std * 1e3:.2f} ms)",
                "netem " + link.forward.stats.line("forward"),
                "netem " + link.reverse.stats.line("reverse"),
                "netem " + self.senders.line(),
                "netem " + link.queue.line(),
            ]
        return "\n".join(lines)

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
