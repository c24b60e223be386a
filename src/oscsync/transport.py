"""One UDP endpoint for every oscsync command: listen, send to peers, decode, count what is dropped.

An :class:`Endpoint` owns

* an optional **listening socket** bound to ``[HOST:]PORT`` (loopback unless asked otherwise; a
  multicast group address joins the group), and
* one **connected socket per peer**. Connecting is what lets Linux report a peer that is down:
  the ICMP "port unreachable" it sends back surfaces as ``ConnectionRefusedError`` on the next
  send or receive on that socket (an unconnected socket never hears about it). The error is
  counted and warned about once; sending goes on. Replies a peer sends back to our source
  address (clock pongs, for instance) arrive on that connected socket and are decoded like the rest.

A single background thread waits on all sockets with ``poll`` plus a wake-up pipe, so
:meth:`Endpoint.close` stops it at once. Each datagram is time-stamped on arrival through the
injected :class:`~oscsync.clock.Clock`, checked against ``--allow``, decoded, and each message is
handed to the callback as a :class:`Received`. Nothing a peer sends can raise into the loop:
malformed data is counted by reason in :attr:`EndpointStats.drops`, and so are datagrams the
kernel dropped because the socket buffer was full (Linux ``SO_RXQ_OVFL``).

A few addresses are answered by the endpoint itself, through **services** (address -> function),
before the app's handler would see them: by default every listener answers clock pings
(``/oscsync/clock/ping``, see :mod:`oscsync.clocksync` and ``docs/protocol.md``). A relay that
must pass them on (``netem``) or a test builds its endpoint with ``services={}``.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import select
import socket
import struct
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from oscsync import codec, display, threads
from oscsync.clock import Clock, SystemClock
from oscsync.hostport import HostPort

MAX_DATAGRAM = 65535
DEFAULT_RECV_BUFFER = 8 * 1024 * 1024
"""Asked-for receive buffer: enough to ride out a burst of ~8,000 small datagrams while a slow
handler runs. Linux caps it at ``net.core.rmem_max`` unless we are root (``SO_RCVBUFFORCE``)."""

# Linux: SO_RXQ_OVFL makes recvmsg report how many datagrams the kernel dropped on this socket.
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40 if sys.platform.startswith("linux") else None)
_SO_RCVBUFFORCE = getattr(
    socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None
)
# Linux: SO_MEMINFO's last field is the socket's drop total, readable at any time (issue #15).
_SO_MEMINFO = 55 if sys.platform.startswith("linux") else None
_DRAIN_BATCH = 512
_ALLOW_CACHE_LIMIT = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TransportError(OSError):
    """A socket could not be set up (address in use, no such interface, ...)."""


class Received(NamedTuple):
    """A message as it arrived: what, from where, when (wall seconds) and in which bundle.

    A named tuple, not a frozen dataclass: one is made per message, and this is the receive
    path's hot spot (``benchmarks/throughput.py``).
    """

    message: codec.Message
    source: tuple[str, int]
    arrival: float
    via_peer: bool = False
    """True when it arrived on a peer's connected socket (a reply) rather than the listener."""

    @property
    def address(self) -> str:
        return self.message.address

    @property
    def args(self) -> tuple[Any, ...]:
        return self.message.args

    @property
    def timetag(self) -> int | None:
        return self.message.timetag


@dataclass
class EndpointStats:
    """Counters kept by an endpoint; keys of the Counters are a small fixed vocabulary."""

    datagrams: int = 0
    messages: int = 0
    bundles: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    sent: int = 0
    send_errors: Counter[str] = field(default_factory=Counter)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())


MessageHandler = Callable[[Received], None]
DatagramHandler = Callable[[bytes, tuple[str, int], float], None]
"""Takes each allowed datagram undecoded, with its source and arrival (``record``, issue #15)."""
WarningHandler = Callable[[str], None]
Service = Callable[["Endpoint", Received], None]
"""Answers one OSC address on the endpoint's behalf (clock pings); the app handler never sees it."""


def _ignore_warning(_: str) -> None:
    pass


class Endpoint:
    """Listen on one address and/or send to several peers over UDP."""

    def __init__(
        self,
        listen: HostPort | None = None,
        peers: Sequence[HostPort] = (),
        *,
        allow: Sequence[Network] = (),
        clock: Clock | None = None,
        on_warning: WarningHandler = _ignore_warning,
        multicast_interface: str | None = None,
        multicast_ttl: int = 1,
        recv_buffer: int = DEFAULT_RECV_BUFFER,
        services: Mapping[str, Service] | None = None,
    ) -> None:
        self.clock = clock if clock is not None else SystemClock()
        if services is None:
            # Every oscsync listener answers clock pings (docs/protocol.md); imported here so
            # this module stays free of what the lab adds on top of it.
            from oscsync.clocksync import standard_services

            services = standard_services()
        self._services: dict[str, Service] = dict(services)
        self.stats = EndpointStats()
        self._on_warning = on_warning
        self._warned: set[str] = set()
        self._allow = tuple(allow)
        self._allow_cache: dict[str, bool] = {}
        self._multicast_interface = multicast_interface
        self._sockets: list[socket.socket] = []
        self._listen_sock: socket.socket | None = None
        self._peer_socks: list[tuple[HostPort, socket.socket]] = []
        self._multicast_peers: set[HostPort] = set()
        # The socket the receive thread is reading: an answer to a stranger's datagram (a clock
        # ping to a multicast sender) leaves from the socket the datagram came in on.
        self._receiving_sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self._closed = False
        self._rxq_dropped: dict[int, int] = {}
        self._handler: MessageHandler | None = None
        self._on_datagram: DatagramHandler | None = None
        try:
            if listen is not None:
                self._listen_sock = self._open_listener(listen, recv_buffer)
            for peer in peers:
                self._peer_socks.append((peer, self._open_peer(peer, multicast_ttl)))
        except BaseException:
            self._close_sockets()
            raise

    # -- set-up ----------------------------------------------------------------------------

    def _register(self, sock: socket.socket) -> socket.socket:
        self._sockets.append(sock)
        return sock

    def _open_listener(self, where: HostPort, recv_buffer: int) -> socket.socket:
        sock = self._register(socket.socket(where.family, socket.SOCK_DGRAM))
        set_recv_buffer(sock, recv_buffer)
        if _SO_RXQ_OVFL is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
        if where.is_multicast:
            # Several listeners on one host (followers in a lab) share a group port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind(where.sockaddr)
        except OSError as exc:
            raise TransportError(exc.errno, bind_error_message(where, exc)) from None
        if where.is_multicast:
            self._join_group(sock, where)
        return sock

    def _join_group(self, sock: socket.socket, group: HostPort) -> None:
        iface = self._multicast_interface
        try:
            if group.family == socket.AF_INET:
                mreq = socket.inet_aton(group.host) + socket.inet_aton(iface or "0.0.0.0")
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            else:
                index = socket.if_nametoindex(iface) if iface else 0
                mreq6 = socket.inet_pton(socket.AF_INET6, group.host) + struct.pack("@I", index)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
        except OSError as exc:
            hint = "" if iface else " (try --iface 127.0.0.1 on a machine with no network)"
            raise TransportError(
                exc.errno, f"cannot join multicast group {group.host}: {exc.strerror}{hint}"
            ) from None

    def _open_peer(self, peer: HostPort, ttl: int) -> socket.socket:
        sock = self._register(socket.socket(peer.family, socket.SOCK_DGRAM))
        iface = self._multicast_interface
        try:
            if peer.is_multicast and peer.family == socket.AF_INET:
                # TTL 1 keeps a workshop's clicks on the local network; loop lets listeners on
                # this same machine hear the group too.
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                if iface:
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, _ipv4(iface))
            elif peer.is_multicast:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
            if peer.is_multicast:
                # Not connected: a connected socket only accepts datagrams from its peer, and
                # the group never answers; listeners following this sender's clock (metronome
                # listen --sync) ping it back by unicast, which must reach this socket. So it
                # receives from anyone who can reach it (#20 item 6): bound to the --iface
                # address when one is given (--iface 127.0.0.1 keeps it off the network), and
                # what arrives is checked against --allow like a listener's datagrams.
                if peer.family == socket.AF_INET6:
                    sock.bind(("::", 0))
                else:
                    sock.bind((iface or "0.0.0.0", 0))
                self._multicast_peers.add(peer)
            else:
                sock.connect(peer.sockaddr)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if peer.is_multicast and iface and exc.errno == errno.EADDRNOTAVAIL:
                reason = f"--iface {iface} is not an address of this machine"
            raise TransportError(exc.errno, f"cannot send to {peer}: {reason}") from None
        sock.setblocking(False)
        return sock

    # -- properties ------------------------------------------------------------------------

    @property
    def local_address(self) -> HostPort | None:
        """Where the listener is bound (with the real port when port 0 was asked for)."""
        if self._listen_sock is None:
            return None
        host, port = self._listen_sock.getsockname()[:2]
        return HostPort(host, port)

    @property
    def peers(self) -> list[HostPort]:
        return [peer for peer, _ in self._peer_socks]

    # -- sending ---------------------------------------------------------------------------

    def send(
        self,
        address: str,
        args: Sequence[Any] = (),
        *,
        types: str | None = None,
        timetag: int | None = None,
    ) -> int:
        """Send a message (bundled if ``timetag`` is given) to all peers; return how many got it."""
        data = codec.encode_message(address, args, types)
        if timetag is not None:
            data = codec.encode_bundle(timetag, [data])
        return self.send_bytes(data)

    def send_bytes(self, data: bytes, peers: Iterable[HostPort] | None = None) -> int:
        """Send an encoded packet to every peer (or those given); errors are counted, not raised."""
        wanted = None if peers is None else set(peers)
        delivered = 0
        for peer, sock in self._peer_socks:
            if wanted is not None and peer not in wanted:
                continue
            try:
                if peer in self._multicast_peers:
                    sock.sendto(data, peer.sockaddr)
                else:
                    try:
                        sock.send(data)
                    except ConnectionRefusedError:
                        # The refusal is the pending ICMP error of an *earlier* datagram; this
                        # one was not sent. Count it and send again: a restarted peer loses
                        # nothing.
                        self._peer_refused(peer)
                        sock.send(data)
            except ConnectionRefusedError:
                self._peer_refused(peer)
            except BlockingIOError:
                self.stats.send_errors["buffer-full"] += 1
                self._warn_once(f"full:{peer}", f"send buffer full: dropped packets to {peer}")
            except OSError as exc:
                self.stats.send_errors[errno.errorcode.get(exc.errno or 0, "oserror")] += 1
                self._warn_once(f"err:{peer}", f"cannot send to {peer}: {exc.strerror}")
            else:
                delivered += 1
                self.stats.sent += 1
        return delivered

    def reply(self, data: bytes, to: tuple[str, int]) -> bool:
        """Answer a datagram's source through the listening socket (clock pongs, netem)."""
        sock = self._listen_sock
        if sock is None:
            return False
        try:
            sock.sendto(data, to)
        except OSError as exc:
            self.stats.send_errors["reply"] += 1
            self._warn_once(f"reply:{to}", f"cannot reply to {to[0]}:{to[1]}: {exc.strerror}")
            return False
        self.stats.sent += 1
        return True

    def answer(self, received: Received, data: bytes) -> bool:
        """Send ``data`` back to where ``received`` came from, on the socket it came in on."""
        if not received.via_peer:
            return self.reply(data, received.source)
        for peer, _ in self._peer_socks:
            if peer.sockaddr == received.source:
                return self.send_bytes(data, [peer]) == 1
        sock = self._receiving_sock
        if sock is None:
            return False
        try:
            sock.sendto(data, received.source)
        except OSError:
            self.stats.send_errors["reply"] += 1
            return False
        self.stats.sent += 1
        return True

    def add_service(self, address: str, service: Service) -> None:
        """Route messages for ``address`` to ``service`` instead of the handler."""
        self._services[address] = service

    def _peer_refused(self, peer: HostPort) -> None:
        self.stats.send_errors["refused"] += 1
        self._warn_once(
            f"refused:{peer}",
            f"nothing is listening at {peer} (ICMP port unreachable); still sending",
        )

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._on_warning(text)

    # -- receiving -------------------------------------------------------------------------

    def start(
        self, handler: MessageHandler | None = None, *, on_datagram: DatagramHandler | None = None
    ) -> None:
        """Start the receive thread; ``handler`` runs on it for every message.

        With ``on_datagram``, every datagram the allow-list lets through goes to it as bytes
        instead, undecoded (no services answered, no messages counted): ``record`` keeps them.
        """
        if self._thread is not None:
            raise RuntimeError("endpoint already started")
        if self._closed:
            raise RuntimeError("endpoint is closed")
        self._handler = handler
        self._on_datagram = on_datagram
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threads.daemon_thread(self._receive_loop, name="oscsync-recv")
        threads.start(self._thread)

    def _receive_loop(self) -> None:
        poller = select.poll()
        by_fd: dict[int, tuple[socket.socket, bool]] = {}
        if self._listen_sock is not None:
            self._listen_sock.setblocking(False)
            by_fd[self._listen_sock.fileno()] = (self._listen_sock, False)
        for _, sock in self._peer_socks:
            by_fd[sock.fileno()] = (sock, True)
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        while not self._closed:
            for fd, _ in poller.poll():
                if fd == self._wake_r or self._closed:
                    return
                sock, via_peer = by_fd[fd]
                self._drain(sock, via_peer)

    def _drain(self, sock: socket.socket, via_peer: bool) -> None:
        self._receiving_sock = sock
        ancillary = socket.CMSG_SPACE(4) if _SO_RXQ_OVFL is not None else 0
        for _ in range(_DRAIN_BATCH):
            try:
                data, ancdata, _, source = sock.recvmsg(MAX_DATAGRAM, ancillary)
            except BlockingIOError:
                return
            except ConnectionRefusedError:
                peer = next(p for p, s in self._peer_socks if s is sock) if via_peer else None
                if peer is not None:
                    self._peer_refused(peer)
                continue
            except OSError as exc:
                if self._closed:
                    return
                self.stats.drops["recv-error"] += 1
                self._warn_once("recv-error", f"receive error: {exc.strerror}")
                return
            if ancdata:
                self._count_kernel_drops(sock, ancdata)
            self.handle_datagram(data, source, via_peer)

    def _count_kernel_drops(
        self, sock: socket.socket, ancdata: list[tuple[int, int, bytes]]
    ) -> None:
        for level, kind, payload in ancdata:
            if level == socket.SOL_SOCKET and kind == _SO_RXQ_OVFL and len(payload) >= 4:
                total = int.from_bytes(payload[:4], sys.byteorder)
                fd = sock.fileno()
                previous = self._rxq_dropped.get(fd, 0)
                if total > previous:
                    self.stats.drops["kernel-buffer-full"] += total - previous
                self._rxq_dropped[fd] = total

    def handle_datagram(self, data: bytes, source: Any, via_peer: bool = False) -> None:
        """Decode one datagram and pass its messages on; public so tests can feed bytes directly."""
        stats = self.stats
        stats.datagrams += 1
        arrival = self.clock.now()
        source = (source[0], source[1])
        if self._allow and not self._allowed(source[0]):
            stats.drops["not-allowed"] += 1
            return
        if self._on_datagram is not None:
            try:
                self._on_datagram(data, source, arrival)
            except Exception as exc:
                stats.drops["handler-error"] += 1
                self._warn_once("handler", f"datagram handler failed: {exc!r}")
            return
        try:
            messages = codec.decode(data)
        except codec.DecodeError as exc:
            stats.drops[exc.reason] += 1
            return
        except Exception:
            stats.drops["undecodable"] += 1
            return
        if data[:1] == b"#":
            stats.bundles += 1
        handler = self._handler
        services = self._services
        for message in messages:
            stats.messages += 1
            service = services.get(message.address) if services else None
            if service is None and handler is None:
                continue
            try:
                if service is not None:
                    service(self, Received(message, source, arrival, via_peer))
                elif handler is not None:
                    handler(Received(message, source, arrival, via_peer))
            except Exception as exc:
                stats.drops["handler-error"] += 1
                text = f"handler failed on {display.escape(message.address)}: {exc!r}"
                self._warn_once("handler", display.printable(text))  # issue 20, item 5

    def _allowed(self, host: str) -> bool:
        verdict = self._allow_cache.get(host)
        if verdict is None:
            ip = ipaddress.ip_address(host.split("%")[0])
            verdict = any(ip.version == net.version and ip in net for net in self._allow)
            if len(self._allow_cache) >= _ALLOW_CACHE_LIMIT:
                self._allow_cache.clear()
            self._allow_cache[host] = verdict
        return verdict

    # -- shutting down ---------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the receive thread (promptly) and close every socket. Safe to call twice.

        Returns False if the thread is still running after ``timeout`` (a handler stuck, e.g.
        writing to a pipe nobody reads), so a command can decide not to wait for it.
        """
        if self._closed:
            return self._thread is None or not self._thread.is_alive()
        self._closed = True
        if self._wake_w >= 0:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        stopped = self._thread is None or not self._thread.is_alive()
        if stopped and self._listen_sock is not None:
            self._count_unread(self._listen_sock)
        self._close_sockets()
        return stopped

    def _count_unread(self, sock: socket.socket) -> None:
        # Datagrams still queued in the socket at close were received by the kernel but never
        # handled: count them, so that sent = handled + dropped holds exactly in a summary.
        sock.setblocking(False)
        ancillary = socket.CMSG_SPACE(4) if _SO_RXQ_OVFL is not None else 0
        # Bounded by what the buffer can hold (every queued datagram costs the kernel a few
        # hundred bytes at least), so a flood still arriving cannot keep close() busy.
        queued_at_most = max(1024, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 256)
        for _ in range(queued_at_most):
            try:
                _, ancdata, _, _ = sock.recvmsg(MAX_DATAGRAM, ancillary)
            except OSError:  # BlockingIOError: empty
                break
            self.stats.datagrams += 1
            self.stats.drops["unread-at-close"] += 1
            if ancdata:
                self._count_kernel_drops(sock, ancdata)
        # SO_RXQ_OVFL tells of drops only with the next datagram queued after them: the drops at
        # the very end of a flood would go uncounted (measured: 1,708 of 500,000 in
        # benchmarks/record_replay.py). The kernel's running total closes the gap.
        if _SO_MEMINFO is not None and _SO_RXQ_OVFL is not None:
            with contextlib.suppress(OSError):
                info = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 36)
                if len(info) >= 36:
                    self._count_kernel_drops(sock, [(socket.SOL_SOCKET, _SO_RXQ_OVFL, info[32:36])])

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _ipv4(address: str) -> bytes:
    """``--iface`` as the 4 bytes IP_MULTICAST_IF wants; OSError (one line) if it is not IPv4."""
    try:
        return socket.inet_aton(address)
    except OSError:
        raise OSError(errno.EINVAL, f"--iface {address!r} is not an IPv4 address") from None


def set_recv_buffer(sock: socket.socket, size: int) -> None:
    if _SO_RCVBUFFORCE is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, size)
            return
        except OSError:
            pass  # not root: fall back to the capped option
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def bind_error_message(where: HostPort, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is already in use (another oscsync, Pure Data or oscdump listening?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: that address is not on this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need root)"
    return f"cannot listen on {where}: {exc.strerror}"
