"""One UDP endpoint for every oscsync command: listen, send to peers, decode, count what is dropped.

An :class:`Endpoint` owns

* an optional **listening socket** bound to ``[HOST:]PORT`` (loopback unless asked otherwise; a
  multicast group address joins the group), and
* one **connected socket per peer**. Connecting is what lets Linux report a peer that is down:
  the ICMP "port unreachable" it sends back surfaces as ``ConnectionRefusedError`` on the next
  send or receive on that socket (an unconnected socket never hears about it). The error is
  counted and warned about once; sending goes on. Replies a peer sends back to our source
  address (clock pongs, for instance) arrive on that connected socket and are decoded like the rest.

A single background thread waits on all sockets with a :mod:`selectors` selector plus a wake-up
socket pair (both exist on Linux, macOS and Windows), so :meth:`Endpoint.close` stops it at once.
Each datagram is time-stamped on arrival: by the kernel where it can (Linux ``SO_TIMESTAMPNS``,
mapped onto the injected :class:`~oscsync.clock.Clock`), else by reading that clock. It is checked
against ``--allow``, decoded, and each message is handed to the callback as a :class:`Received`.
Nothing a peer sends can raise into the loop: malformed data is counted by reason in
:attr:`EndpointStats.drops`, and so are datagrams the kernel dropped because the socket buffer was
full (Linux: ``SO_RXQ_OVFL`` while running, the socket's own drop counter at close).

Platforms differ; each difference is chosen by capability, never by platform name (issue #21):
without ``recvmsg`` (Windows) datagrams are read with ``recvfrom_into`` and the kernel's drop
count is reported as unavailable (:attr:`EndpointStats.kernel_drops`); a unicast listener takes
its port exclusively where ``SO_EXCLUSIVEADDRUSE`` exists (Windows' ``SO_REUSEADDR`` would let
another process share it); a multicast listener that cannot bind the group address (Windows)
binds the wildcard address; ``ConnectionResetError`` from a receive (Windows' report of an ICMP
"port unreachable") is counted like Linux's ``ConnectionRefusedError``.

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
import selectors
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
from oscsync.hostport import HostPort, allow_mismatch
from oscsync.wording import drop_warning

MAX_DATAGRAM = 65535
DEFAULT_RECV_BUFFER = 8 * 1024 * 1024
"""Asked-for receive buffer: enough to ride out a burst of ~8,000 small datagrams while a slow
handler runs. Linux caps it at ``net.core.rmem_max`` unless we are root (``SO_RCVBUFFORCE``)."""

_LINUX = sys.platform.startswith("linux")  # only to name constants Python does not export
# Linux: SO_RXQ_OVFL makes recvmsg report how many datagrams the kernel dropped on this socket.
_SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40 if _LINUX else None)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33 if _LINUX else None)
# Linux: SO_TIMESTAMPNS (the _OLD layout: struct timespec of two longs) stamps each datagram
# when the kernel received it (#20 item 14); SO_MEMINFO's ninth field is the socket's drop
# counter (#20 item 12).
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if _LINUX else None)
_TIMESPEC = struct.Struct("@ll")
_SO_MEMINFO = getattr(socket, "SO_MEMINFO", 55 if _LINUX else None)
_SK_MEMINFO_DROPS = 8
_HAS_RECVMSG = hasattr(socket.socket, "recvmsg")
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
    kernel_drops: str = "counted"
    """``counted``: datagrams the kernel dropped are in :attr:`drops` (``kernel-buffer-full``);
    ``unavailable``: this platform does not say (:meth:`platform_note` words it for a summary)."""
    arrival_stamps: str = "clock"
    """``kernel``: arrival is when the kernel received the datagram; ``clock``: when it was read."""

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def platform_note(self) -> str:
        """What this platform could not measure, for a summary line ("" when nothing)."""
        if self.kernel_drops == "unavailable":
            return "datagrams the OS dropped (buffer full) are not reported on this platform"
        return ""


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
        kernel_stamps: bool = True,
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
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._closed = False
        self._rxq_dropped: dict[int, int] = {}
        self._handler: MessageHandler | None = None
        self._on_datagram: DatagramHandler | None = None
        self._on_idle: Callable[[], None] | None = None
        if listen is not None and allow:
            mismatch = allow_mismatch(listen, allow)  # the classic: forgot --listen 0.0.0.0
            if mismatch:
                on_warning(mismatch)
        # Kernel stamps need recvmsg, the socket option, and a clock that can place an OS stamp
        # on its own scale (not a FakeClock). SystemClock's scale is the OS's: no call then.
        self._kernel_stamps = (
            kernel_stamps
            and _HAS_RECVMSG
            and _SO_TIMESTAMPNS is not None
            and self.clock.system_time_to_wall(0.0) is not None
        )
        self._kernel_to_wall: Callable[[float], float | None] | None = (
            None if type(self.clock) is SystemClock else self.clock.system_time_to_wall
        )
        self._ancillary_space = 0
        if _HAS_RECVMSG:
            if _SO_RXQ_OVFL is not None:
                self._ancillary_space += socket.CMSG_SPACE(4)
            if self._kernel_stamps:
                self._ancillary_space += socket.CMSG_SPACE(_TIMESPEC.size)
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
        self._ask_for_ancillary(sock)
        if not ((_HAS_RECVMSG and _SO_RXQ_OVFL is not None) or _SO_MEMINFO is not None):
            self.stats.kernel_drops = "unavailable"  # Windows, macOS
        if where.is_multicast:
            # Several listeners on one host (followers in a lab) share a group port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        elif hasattr(socket, "SO_EXCLUSIVEADDRUSE"):
            # Windows: without it a second process binding with SO_REUSEADDR takes over the port.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_EXCLUSIVEADDRUSE, 1)
        if (
            where.family == socket.AF_INET6
            and where.host == "::"
            and hasattr(socket, "IPV6_V6ONLY")
        ):
            # "[::]" means both IPv6 and IPv4 (Linux's default; Windows' is IPv6 only).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        try:
            sock.bind(where.sockaddr)
        except OSError as exc:
            if not (where.is_multicast and _is_address_not_available(exc)):
                raise TransportError(exc.errno, bind_error_message(where, exc)) from None
            # Windows cannot bind a group address: listen on the wildcard address; the group
            # membership below is what brings the group's datagrams.
            wildcard = "::" if where.family == socket.AF_INET6 else "0.0.0.0"
            try:
                sock.bind((wildcard, where.port))
            except OSError as again:
                raise TransportError(again.errno, bind_error_message(where, again)) from None
        if where.is_multicast:
            self._join_group(sock, where)
        return sock

    def _ask_for_ancillary(self, sock: socket.socket) -> None:
        if not _HAS_RECVMSG:
            return
        if _SO_RXQ_OVFL is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, _SO_RXQ_OVFL, 1)
        if self._kernel_stamps and _SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                self.stats.arrival_stamps = "kernel"
            except OSError:
                pass

    def _join_group(self, sock: socket.socket, group: HostPort) -> None:
        iface = self._multicast_interface
        try:
            # The option numbers come from the socket module, so they are the platform's own
            # (Windows' IP_ADD_MEMBERSHIP is 12, Linux's 35); ip_mreq and ipv6_mreq have the
            # same layout everywhere. Windows applies IP_MULTICAST_LOOP on the receiving
            # side: ask for it here too, so a sender on this machine is heard.
            if group.family == socket.AF_INET:
                mreq = socket.inet_aton(group.host) + socket.inet_aton(iface or "0.0.0.0")
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
            else:
                index = socket.if_nametoindex(iface) if iface else 0
                mreq6 = socket.inet_pton(socket.AF_INET6, group.host) + struct.pack("@I", index)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq6)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
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
        self._ask_for_ancillary(sock)  # replies (clock pongs) are stamped like the rest
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
                    except (ConnectionRefusedError, ConnectionResetError):
                        # The refusal is the pending ICMP error of an *earlier* datagram; this
                        # one was not sent. Count it and send again: a restarted peer loses
                        # nothing.
                        self._peer_refused(peer)
                        sock.send(data)
            except (ConnectionRefusedError, ConnectionResetError):
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

    def _warn_drop(self, reason: str, source: tuple[str, int], data: bytes, detail: str) -> None:
        # Once per reason while running, not only in the summary at Ctrl-C (issue #13).
        if "drop:" + reason not in self._warned:
            self._warn_once("drop:" + reason, drop_warning(reason, source, data, detail))

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._on_warning(text)

    # -- receiving -------------------------------------------------------------------------

    def start(
        self,
        handler: MessageHandler | None = None,
        *,
        on_datagram: DatagramHandler | None = None,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        """Start the receive thread; ``handler`` runs on it for every message.

        With ``on_datagram``, every datagram the allow-list lets through goes to it as bytes
        instead, undecoded (no services answered, no messages counted): ``record`` keeps them.
        ``on_idle`` runs on the receive thread each time it has read everything that was
        waiting (or a batch of it, under a flood), before it waits again: ``dump`` writes the
        lines it collected then, so a flood costs one write per batch instead of one per line.
        """
        if self._thread is not None:
            raise RuntimeError("endpoint already started")
        if self._closed:
            raise RuntimeError("endpoint is closed")
        self._handler = handler
        self._on_datagram = on_datagram
        self._on_idle = on_idle
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._thread = threads.daemon_thread(self._receive_loop, name="oscsync-recv")
        threads.start(self._thread)

    def _receive_loop(self) -> None:
        assert self._wake_r is not None
        with selectors.DefaultSelector() as selector:
            if self._listen_sock is not None:
                self._listen_sock.setblocking(False)
                selector.register(self._listen_sock, selectors.EVENT_READ, False)
            for _, sock in self._peer_socks:
                selector.register(sock, selectors.EVENT_READ, True)
            selector.register(self._wake_r, selectors.EVENT_READ, None)
            drain = self._drain_msg if _HAS_RECVMSG else self._drain_from
            on_idle = self._on_idle
            while not self._closed:
                for key, _ in selector.select():
                    if key.data is None or self._closed:
                        return
                    drain(key.fileobj, key.data)  # type: ignore[arg-type]
                if on_idle is not None:
                    # Every ready socket was read until empty (or for a batch of _DRAIN_BATCH):
                    # what the handler collected can go out now (dump's batched writes).
                    on_idle()

    def _drain_msg(self, sock: socket.socket, via_peer: bool) -> None:
        # The hot path (benchmarks/throughput.py): one recvmsg, and ancillary data only looked at
        # when there is some (kernel stamps: every datagram; drop counts: after a drop).
        self._receiving_sock = sock
        space = self._ancillary_space
        handle = self.handle_datagram
        stamp_kind = _SO_TIMESTAMPNS if self._kernel_stamps else None
        to_wall = self._kernel_to_wall
        unpack = _TIMESPEC.unpack
        for _ in range(_DRAIN_BATCH):
            try:
                data, ancdata, _, source = sock.recvmsg(MAX_DATAGRAM, space)
            except BlockingIOError:
                return
            except (ConnectionRefusedError, ConnectionResetError):
                self._unreachable(sock, via_peer)
                continue
            except OSError as exc:
                self._receive_error(exc)
                return
            if not ancdata:
                handle(data, source, via_peer)
            elif len(ancdata) == 1 and ancdata[0][1] == stamp_kind and to_wall is None:
                # The usual case with kernel stamps on a SystemClock, inlined (benchmarks/
                # receive_path.py): the stamp alone, already on the clock's scale.
                seconds, nanoseconds = unpack(ancdata[0][2])
                handle(data, source, via_peer, seconds + nanoseconds * 1e-9)
            else:
                handle(data, source, via_peer, self._read_ancillary(sock, ancdata))
            if self._closed:
                return

    def _drain_from(self, sock: socket.socket, via_peer: bool) -> None:
        # Without recvmsg (Windows): no ancillary data, so no kernel stamps or drop counts.
        self._receiving_sock = sock
        buffer = bytearray(MAX_DATAGRAM)
        view = memoryview(buffer)
        handle = self.handle_datagram
        for _ in range(_DRAIN_BATCH):
            try:
                size, source = sock.recvfrom_into(buffer)
            except BlockingIOError:
                return
            except (ConnectionRefusedError, ConnectionResetError):
                self._unreachable(sock, via_peer)
                continue
            except OSError as exc:
                self._receive_error(exc)
                return
            handle(view[:size].tobytes(), source, via_peer)
            if self._closed:
                return

    def _unreachable(self, sock: socket.socket, via_peer: bool) -> None:
        # An ICMP "port unreachable" for something we sent earlier: Linux reports it on a
        # connected socket as ConnectionRefusedError, Windows on any socket as
        # ConnectionResetError (WSAECONNRESET; SIO_UDP_CONNRESET, which would turn it off, cannot
        # be set from CPython). Either way it is about a send, not this receive: count, go on.
        peer = next((p for p, s in self._peer_socks if s is sock), None) if via_peer else None
        if peer is not None:
            self._peer_refused(peer)
            return
        self.stats.send_errors["refused"] += 1
        self._warn_once(
            "refused:reply", "a host we answered is not listening (ICMP port unreachable)"
        )

    def _receive_error(self, exc: OSError) -> None:
        if self._closed:
            return
        self.stats.drops["recv-error"] += 1
        self._warn_once("recv-error", f"receive error: {exc.strerror}")

    def _read_ancillary(
        self, sock: socket.socket, ancdata: list[tuple[int, int, bytes]]
    ) -> float | None:
        """Count kernel drops reported in ``ancdata``; return the kernel's stamp (wall) if any."""
        kernel_time = None
        for level, kind, payload in ancdata:
            if level != socket.SOL_SOCKET:
                continue
            if kind == _SO_TIMESTAMPNS and len(payload) >= _TIMESPEC.size:
                seconds, nanoseconds = _TIMESPEC.unpack_from(payload)
                kernel_time = seconds + nanoseconds * 1e-9
            elif kind == _SO_RXQ_OVFL and len(payload) >= 4:
                self._kernel_dropped(sock, int.from_bytes(payload[:4], sys.byteorder))
        if kernel_time is None:
            return None
        to_wall = self._kernel_to_wall
        return kernel_time if to_wall is None else to_wall(kernel_time)

    def _kernel_dropped(self, sock: socket.socket, total: int) -> None:
        fd = sock.fileno()
        previous = self._rxq_dropped.get(fd, 0)
        if total > previous:
            self.stats.drops["kernel-buffer-full"] += total - previous
        self._rxq_dropped[fd] = total

    def handle_datagram(
        self, data: bytes, source: Any, via_peer: bool = False, arrival: float | None = None
    ) -> None:
        """Decode one datagram and pass its messages on; public so tests can feed bytes directly.

        ``arrival`` is the kernel's receive stamp on this endpoint's clock, if there is one;
        without it the clock is read now.
        """
        stats = self.stats
        stats.datagrams += 1
        if arrival is None:
            arrival = self.clock.now()
        if type(source) is not tuple or len(source) != 2:  # IPv6 adds flowinfo and scope
            source = (source[0], source[1])
        if self._allow and not self._allowed(source[0]):
            stats.drops["not-allowed"] += 1
            self._warn_drop("not-allowed", source, data, "")
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
            self._warn_drop(exc.reason, source, data, str(exc))
            return
        except Exception:
            stats.drops["undecodable"] += 1
            self._warn_drop("undecodable", source, data, "undecodable")
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
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            if not verdict and mapped is not None:
                # A dual-stack listener ("[::]") sees IPv4 hosts as ::ffff:a.b.c.d: an IPv4
                # --allow must still match them (#20 item 8).
                verdict = any(net.version == 4 and mapped in net for net in self._allow)
            if len(self._allow_cache) >= _ALLOW_CACHE_LIMIT:
                self._allow_cache.clear()
            self._allow_cache[host] = verdict
        return verdict

    # -- shutting down ---------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> bool:
        """Stop the receive thread (promptly) and close every socket. Safe to call twice.

        Returns False if the thread is still running after ``timeout`` (a handler stuck, e.g.
        writing to a pipe nobody reads), so a command can decide not to wait for it. Either way
        the listener's unread datagrams and the kernel's drop count are counted first (#20 item
        12): a stuck handler reads nothing more, since the loop checks ``_closed`` after each
        datagram.
        """
        if self._closed:
            return self._thread is None or not self._thread.is_alive()
        self._closed = True
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        for wake in (self._wake_r, self._wake_w):
            if wake is not None:
                wake.close()
        stopped = self._thread is None or not self._thread.is_alive()
        if self._listen_sock is not None:
            self._count_unread(self._listen_sock)
            self._count_kernel_drops(self._listen_sock)
        self._close_sockets()
        return stopped

    def _count_unread(self, sock: socket.socket) -> None:
        # Datagrams still queued in the socket at close were received by the kernel but never
        # handled: count them, so that sent = handled + dropped holds exactly in a summary.
        sock.setblocking(False)
        space = self._ancillary_space if _HAS_RECVMSG else 0
        # Bounded by what the buffer can hold (every queued datagram costs the kernel a few
        # hundred bytes at least), so a flood still arriving cannot keep close() busy.
        queued_at_most = max(1024, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 256)
        buffer = bytearray(MAX_DATAGRAM)
        for _ in range(queued_at_most):
            try:
                if _HAS_RECVMSG:
                    _, ancdata, _, _ = sock.recvmsg(MAX_DATAGRAM, space)
                    if ancdata:
                        self._read_ancillary(sock, ancdata)
                else:
                    sock.recvfrom_into(buffer)
            except (ConnectionRefusedError, ConnectionResetError):
                self._unreachable(sock, False)
                continue
            except OSError:  # BlockingIOError: empty
                break
            self.stats.datagrams += 1
            self.stats.drops["unread-at-close"] += 1

    def _count_kernel_drops(self, sock: socket.socket) -> None:
        # The kernel attaches SO_RXQ_OVFL only to datagrams queued *after* a drop, so drops at
        # the end of a flood were never reported: read the socket's own counter instead.
        total = socket_drop_count(sock)
        if total is None:
            if not (_HAS_RECVMSG and _SO_RXQ_OVFL is not None):
                self.stats.kernel_drops = "unavailable"
            return
        self._kernel_dropped(sock, total)
        self.stats.kernel_drops = "counted"

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def socket_drop_count(sock: socket.socket) -> int | None:
    """How many datagrams the kernel dropped on ``sock`` (buffer full), or None if it won't say.

    Linux: ``SO_MEMINFO``'s drops field (kernel 4.14 and later), else the socket's line in
    ``/proc/net/udp`` or ``udp6`` (found by inode). Windows and macOS have no per-socket counter.
    """
    if _SO_MEMINFO is not None:
        size = 4 * (_SK_MEMINFO_DROPS + 1)
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_MEMINFO, 4 * 16)
        except OSError:
            raw = b""
        if len(raw) >= size:
            return int.from_bytes(raw[size - 4 : size], sys.byteorder)
        return _proc_net_udp_drops(sock)
    return None


def _proc_net_udp_drops(sock: socket.socket) -> int | None:
    try:
        inode = os.fstat(sock.fileno()).st_ino
        table = "/proc/net/udp6" if sock.family == socket.AF_INET6 else "/proc/net/udp"
        with open(table, encoding="ascii") as lines:
            next(lines)  # header
            for line in lines:
                fields = line.split()
                if len(fields) >= 13 and fields[9] == str(inode):
                    return int(fields[12])
    except (OSError, ValueError, StopIteration):
        return None
    return None


def _is_address_not_available(exc: OSError) -> bool:
    return exc.errno == errno.EADDRNOTAVAIL or getattr(exc, "winerror", None) == 10049


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


_WSAEACCES = 10013


def bind_error_message(where: HostPort, exc: OSError) -> str:
    if getattr(exc, "winerror", None) == _WSAEACCES:
        # Windows: another program holds the port exclusively, or the port is reserved
        # (Hyper-V, WSL and Docker reserve ranges of ports).
        return (
            f"cannot listen on {where}: Windows refused the port (another program holds it, or "
            "it is reserved: see `netsh interface ipv4 show excludedportrange protocol=udp`)"
        )
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is already in use (another oscsync, Pure Data or oscdump listening?)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {where}: that address is not on this machine"
    if exc.errno == errno.EACCES:
        return f"cannot listen on {where}: permission denied (ports below 1024 need root)"
    return f"cannot listen on {where}: {exc.strerror}"
