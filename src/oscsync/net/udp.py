"""One UDP endpoint for every oscsync command: listen, send to peers, decode, count what is dropped.

An :class:`Endpoint` owns

* an optional **listening socket** bound to ``[HOST:]PORT`` (loopback unless asked otherwise; a
  multicast group address joins the group), and
* one **connected socket per peer**. Connecting is what lets Linux report a peer that is down:
  the ICMP "port unreachable" it sends back surfaces as ``ConnectionRefusedError`` on the next
  send or receive on that socket (an unconnected socket never hears about it). The error is
  counted and warned about once; sending goes on. Replies a peer sends back to our source
  address (clock pongs, for instance) arrive on that connected socket and are decoded like the rest.

A single background thread waits on all sockets with a
:class:`~oscsync.net.selector.WakeableSelector` (a selector plus a wake-up socket pair, both on
Linux, macOS and Windows), so :meth:`Endpoint.close` stops it at once. Each datagram is time-stamped
on arrival: by the kernel where it can (Linux ``SO_TIMESTAMPNS``, mapped onto the injected
:class:`~oscsync.clock.Clock`), else by reading that clock, and fed to the socket-free
:class:`~oscsync.net.core.ReceiveCore`: checked against ``--allow``, decoded, dispatched through the
endpoint's :class:`~oscsync.osc.routing.AddressRegistry` (else to the callback) as a
:class:`Received`. Nothing a peer sends can raise into the loop: malformed data is counted by reason
in :attr:`~oscsync.net.core.TransportStats.drops`, and so are datagrams the kernel dropped because
the socket buffer was full (Linux: ``SO_RXQ_OVFL`` while running, the socket's own drop counter at
close).

Platforms differ; each difference is chosen by capability, never by platform name (issue #21):
without ``recvmsg`` (Windows) datagrams are read with ``recvfrom_into`` and the kernel's drop count
is reported as unavailable (:attr:`~oscsync.net.core.TransportStats.kernel_drops`); a unicast
listener takes its port exclusively where ``SO_EXCLUSIVEADDRUSE`` exists (Windows' ``SO_REUSEADDR``
would let another process share it); a multicast listener that cannot bind the group address
(Windows) binds the wildcard address; ``ConnectionResetError`` from a receive (Windows' report of an
ICMP "port unreachable") is counted like Linux's ``ConnectionRefusedError``. The socket options
themselves, and the kernel's drop counter, are :mod:`oscsync.net.udpsocket`'s.

A few addresses are answered on the endpoint's behalf, through **services** (address ->
function, registered in :attr:`Endpoint.registry`), before the app's handler would see them. The
transport knows no protocol: the layer above registers them
(:func:`oscsync.apps.endpoints.open_endpoint` adds the clock services every oscsync listener
answers, ``docs/protocol.md``). :class:`Endpoint` implements
:class:`~oscsync.net.core.Transport`; apps type against that.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

from oscsync import threads
from oscsync.clock import Clock, KernelStamps, SystemClock
from oscsync.net.core import (
    BundleVerifier,
    MessageHandler,
    Network,
    ReceiveCore,
    ReceiveHooks,
    Transport,
    TransportStats,
    WarningHandler,
)
from oscsync.net.hostport import HostPort, allow_mismatch
from oscsync.net.listening import accept_both_families, bind_error_message, take_port_exclusively
from oscsync.net.selector import WakeableSelector
from oscsync.net.udpsocket import (
    HAS_RECVMSG,
    MAX_DATAGRAM,
    SO_MEMINFO,
    SO_RXQ_OVFL,
    SO_TIMESTAMPNS,
    TIMESPEC,
    ipv4_iface,
    is_address_not_available,
    set_recv_buffer,
    socket_drop_count,
)
from oscsync.osc.routing import AddressRegistry, Received
from oscsync.realtime import Breather

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only in annotations, so 3.10 runs this module

DEFAULT_RECV_BUFFER = 8 * 1024 * 1024
"""Asked-for receive buffer: enough to ride out a burst of ~8,000 small datagrams while a slow
handler runs. Linux caps it at ``net.core.rmem_max`` unless we are root (``SO_RCVBUFFORCE``)."""

_DRAIN_BATCH = 512
_REALTIME_DRAIN_BATCH = 64
"""A real-time receive thread reads at most this many datagrams between looks at its
:class:`~oscsync.realtime.Breather` (0.5-2 ms of decoding under a flood), so its rests come on
time."""


class TransportError(OSError):
    """A socket could not be set up (address in use, no such interface, ...)."""


Service = Callable[["Endpoint", Received], None]
"""Answers one OSC address on the endpoint's behalf (clock pings); the app handler never sees it."""


def _ignore_warning(_: str) -> None:
    pass


class EndpointOptions(TypedDict, total=False):
    """The keywords of :class:`Endpoint` (defaults there), as the TCP endpoint and
    :func:`oscsync.apps.endpoints.open_endpoint` pass them through unchanged."""

    allow: Sequence[Network]
    clock: Clock | None
    on_warning: WarningHandler
    multicast_interface: str | None
    multicast_ttl: int
    recv_buffer: int
    services: Mapping[str, Service] | None
    kernel_stamps: bool
    registry: AddressRegistry | None
    verifier: BundleVerifier | None


class Endpoint(Transport):
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
        registry: AddressRegistry | None = None,
        verifier: BundleVerifier | None = None,
    ) -> None:
        _refuse_tcp([listen] if listen is not None else [], peers)
        self._sending_once = False
        self.clock = clock if clock is not None else SystemClock()
        self._core = ReceiveCore(
            self.clock, allow=allow, on_warning=on_warning, registry=registry, verifier=verifier
        )
        self.stats: TransportStats = self._core.stats
        self.registry: AddressRegistry = self._core.registry
        """What this endpoint answers to (services, commands' addresses); the rest goes to the
        handler given to :meth:`start`."""
        for address, service in (services or {}).items():
            self.add_service(address, service)
        self._warn_once = self._core.warn_once
        self._multicast_interface = multicast_interface
        self._multicast_ttl = multicast_ttl
        self._sockets: list[socket.socket] = []
        self._listen_sock: socket.socket | None = None
        self._peer_socks: list[tuple[HostPort, socket.socket]] = []
        self._multicast_peers: set[HostPort] = set()
        # set_peers() swaps the peer list under this lock; sockets it retires are closed by the
        # receive thread (never under a recvmsg), or at once if there is no receive thread.
        # Re-entrant: a warning handler called under a send may close the endpoint.
        self._peers_lock = threading.RLock()
        self._retired: list[socket.socket] = []
        self._joining: list[tuple[HostPort, socket.socket]] = []
        # The socket the receive thread is reading: an answer to a stranger's datagram (a clock
        # ping to a multicast sender) leaves from the socket the datagram came in on.
        self._receiving_sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._drain_batch = _DRAIN_BATCH
        self._selector: WakeableSelector | None = None
        self._on_idle: Callable[[], None] | None = None
        self._closed = False
        self._rxq_dropped: dict[int, int] = {}
        if listen is not None and allow:
            mismatch = allow_mismatch(listen, allow)  # the classic: forgot --listen 0.0.0.0
            if mismatch:
                on_warning(mismatch)
        # Kernel stamps need recvmsg, the socket option, and a clock that can place an OS stamp
        # on its own scale (not a FakeClock). SystemClock's scale is the OS's: no call then.
        self._kernel_stamps = (
            kernel_stamps
            and HAS_RECVMSG
            and SO_TIMESTAMPNS is not None
            and self.clock.system_time_to_wall(0.0) is not None
        )
        self._kernel_to_wall: Callable[[float], float | None] | None = (
            None if type(self.clock) is SystemClock else self.clock.system_time_to_wall
        )
        # The kernel's clock and this process's may disagree (the OS clock stepped since the
        # clock was made, or a clock that is not the kernel's): checked, and re-anchored.
        self._stamps = KernelStamps(self.clock, self._stamps_reanchored)
        self._ancillary_space = 0
        if HAS_RECVMSG:
            if SO_RXQ_OVFL is not None:
                self._ancillary_space += socket.CMSG_SPACE(4)
            if self._kernel_stamps:
                self._ancillary_space += socket.CMSG_SPACE(TIMESPEC.size)
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
        if not ((HAS_RECVMSG and SO_RXQ_OVFL is not None) or SO_MEMINFO is not None):
            self.stats.kernel_drops = "unavailable"  # Windows, macOS
        if where.is_multicast:
            # Several listeners on one host (followers in a lab) share a group port.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        else:
            take_port_exclusively(sock)
        accept_both_families(sock, where)
        try:
            sock.bind(where.sockaddr)
        except OSError as exc:
            if not (where.is_multicast and is_address_not_available(exc)):
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
        if not HAS_RECVMSG:
            return
        if SO_RXQ_OVFL is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
        if self._kernel_stamps and SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
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
                    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, ipv4_iface(iface))
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

    def set_peers(self, peers: Sequence[HostPort]) -> None:
        """Send to ``peers`` from now on (a re-resolved ``@NAME``); thread-safe.

        Peers kept keep their sockets (and what they were told); new ones get sockets like
        those given to the constructor (TransportError if one cannot be opened: nothing changes
        then); dropped ones stop being sent to at once and their sockets are closed.
        """
        _refuse_tcp([], peers)
        with self._peers_lock:
            if self._closed:
                raise RuntimeError("endpoint is closed")
            kept = dict(self._peer_socks)
            opened: list[tuple[HostPort, socket.socket]] = []
            try:
                for peer in dict.fromkeys(peers):
                    if peer not in kept:
                        opened.append((peer, self._open_peer(peer, self._multicast_ttl)))
            except BaseException:
                for _, sock in opened:
                    self._sockets.remove(sock)
                    sock.close()
                raise
            fresh = dict(opened)
            wanted = set(peers)
            self._peer_socks = [
                (peer, kept[peer] if peer in kept else fresh[peer]) for peer in dict.fromkeys(peers)
            ]
            self._multicast_peers &= wanted
            retired = [sock for peer, sock in kept.items() if peer not in wanted]
            if self._selector is None:
                for sock in retired:
                    self._discard(sock)
                return
            self._retired.extend(retired)
            self._joining.extend(opened)
        self._selector.wake()

    def _apply_peer_changes(self, selector: WakeableSelector) -> None:
        # On the receive thread, between two waits: no recvmsg is running on these sockets.
        if not (self._joining or self._retired):
            return
        with self._peers_lock:
            joining, self._joining = self._joining, []
            retired, self._retired = self._retired, []
        for _, sock in joining:
            selector.register(sock, True)
        for sock in retired:
            selector.unregister(sock)
            self._rxq_dropped.pop(sock.fileno(), None)
            self._discard(sock)

    def _discard(self, sock: socket.socket) -> None:
        with contextlib.suppress(ValueError):
            self._sockets.remove(sock)
        sock.close()

    # -- sending ---------------------------------------------------------------------------

    def send_bytes(self, data: bytes, peers: Iterable[HostPort] | None = None) -> int:
        """Send an encoded packet to every peer (or those given); errors are counted, not raised."""
        wanted = None if peers is None else set(peers)
        with self._peers_lock:  # set_peers() closes no socket under a send
            return self._send_to_peers(data, wanted)

    def flush(self, timeout: float) -> bool:
        """Wait until what was sent has left this process: UDP datagrams leave at once (a TCP
        endpoint, :class:`oscsync.net.tcpendpoint.TcpEndpoint`, may have to connect first)."""
        return True

    def _send_to_peers(self, data: bytes, wanted: set[HostPort] | None) -> int:
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

    def add_service(
        self, address: str, service: Service, types: str = "", description: str = ""
    ) -> None:
        """Route ``address`` to ``service(endpoint, received)`` instead of the handler."""
        endpoint = self

        def answer(received: Received) -> None:
            service(endpoint, received)

        self.registry.add(address, answer, types, description)

    @property
    def sending_once(self) -> bool:
        """True when the owner sends and exits (``oscsync send``): a refusal is then not
        followed by "still sending", nor a refused TCP connection by "trying again" (issue 30)."""
        return self._sending_once

    @sending_once.setter
    def sending_once(self, value: bool) -> None:
        self._sending_once = value

    def _peer_refused(self, peer: HostPort) -> None:
        self.stats.send_errors["refused"] += 1
        self._warn_once(
            f"refused:{peer}",
            f"nothing is listening at {peer} (ICMP port unreachable)"
            + ("" if self.sending_once else "; still sending"),
        )

    # -- receiving -------------------------------------------------------------------------

    def start(self, handler: MessageHandler | None = None, **hooks: Unpack[ReceiveHooks]) -> None:
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
        self._core.handler = handler
        self._core.on_datagram = hooks.get("on_datagram")
        self._on_idle = hooks.get("on_idle")
        selector = WakeableSelector()
        if self._listen_sock is not None:
            self._listen_sock.setblocking(False)
            selector.register(self._listen_sock, False)
        with self._peers_lock:
            for _, sock in self._peer_socks:
                selector.register(sock, True)
            self._selector = selector
        self._thread = threads.daemon_thread(self._receive_loop, selector, name="oscsync-recv")
        threads.start(self._thread)

    def _receive_loop(self, selector: WakeableSelector) -> None:
        drain = self._drain_msg if HAS_RECVMSG else self._drain_from
        on_idle = self._on_idle
        # Real-time priority where the command asked for it (oscsync --realtime): an ordinary
        # receive thread preempted while it holds the GIL keeps a real-time timer thread waiting
        # (issue 29: p99 1.3-4.3 ms under a flood with both cores busy). A promoted one rests
        # when a flood keeps it from ever blocking, so it cannot lock a core.
        breather = Breather(self.clock) if threads.promote(threads.RECEIVE) else None
        if breather is not None:
            self._drain_batch = _REALTIME_DRAIN_BATCH
        monotonic = self.clock.monotonic
        while not self._closed:
            started = monotonic() if breather is not None else 0.0
            ready = selector.wait()
            if breather is not None:
                breather.waited(started)
            for sock, via_peer in ready:
                if self._closed:
                    return
                drain(sock, via_peer)
            if on_idle is not None:
                # Every ready socket was read until empty (or for a batch of _DRAIN_BATCH):
                # what the handler collected can go out now (dump's batched writes).
                on_idle()
            self._apply_peer_changes(selector)
            if breather is not None:
                breather.check()

    def _drain_msg(self, sock: socket.socket, via_peer: bool) -> None:
        # The hot path (benchmarks/throughput.py): one recvmsg, and ancillary data only looked at
        # when there is some (kernel stamps: every datagram; drop counts: after a drop).
        self._receiving_sock = sock
        space = self._ancillary_space
        handle = self._core.feed
        # The stamp alone, already on the clock's scale (kernel stamps on a SystemClock): the
        # usual case, read inline (benchmarks/receive_path.py).
        inline_stamp = SO_TIMESTAMPNS if self._kernel_stamps and not self._kernel_to_wall else -1
        unpack = TIMESPEC.unpack
        # KernelStamps.place, inlined: its countdown kept here (60 ns of the 140 a call cost).
        stamps = self._stamps
        check = stamps.check
        countdown = stamps.countdown
        receive = sock.recvmsg
        # Once the kernel has dropped a datagram on this socket, SO_RXQ_OVFL puts its running
        # drop count on every datagram after: under a flood, all of them. A count already
        # counted (the same control message as the last one read) changes nothing, so the
        # datagram takes the inline path too (issue 18: ~0.8 µs a datagram under a flood,
        # benchmarks/throughput.py).
        counted_drops: tuple[int, int, bytes] | None = None
        for _ in range(self._drain_batch):
            try:
                data, ancdata, _, source = receive(MAX_DATAGRAM, space)
            except OSError as exc:
                if self._drain_ends(exc, sock, via_peer):
                    break
                continue
            if (
                ancdata
                and ancdata[0][1] == inline_stamp
                and (len(ancdata) == 1 or (len(ancdata) == 2 and ancdata[1] == counted_drops))
            ):
                seconds, nanoseconds = unpack(ancdata[0][2])
                stamp = seconds + nanoseconds * 1e-9
                countdown -= 1
                if countdown <= 0 or stamps.correction:
                    stamp = check(stamp)
                    countdown = stamps.countdown
                handle(data, source, stamp, via_peer)
            elif not ancdata:
                handle(data, source, None, via_peer)
            else:
                handle(data, source, self._read_ancillary(sock, ancdata), via_peer)
                last = ancdata[-1]
                if last[0] == socket.SOL_SOCKET and last[1] == SO_RXQ_OVFL:
                    counted_drops = last
            if self._closed:
                break
        stamps.countdown = countdown

    def _drain_from(self, sock: socket.socket, via_peer: bool) -> None:
        # Without recvmsg (Windows): no ancillary data, so no kernel stamps or drop counts.
        self._receiving_sock = sock
        buffer = bytearray(MAX_DATAGRAM)
        view = memoryview(buffer)
        handle = self._core.feed
        for _ in range(self._drain_batch):
            try:
                size, source = sock.recvfrom_into(buffer)
            except OSError as exc:
                if self._drain_ends(exc, sock, via_peer):
                    return
                continue
            handle(view[:size].tobytes(), source, None, via_peer)
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

    def _drain_ends(self, exc: OSError, sock: socket.socket, via_peer: bool) -> bool:
        """What a failed receive means (both drains): True when the drain stops there (the socket
        is empty, or broken: counted), False to read on (an ICMP error about a send: counted).
        Called only when a receive fails: once at a drain's end, plus once per ICMP error."""
        if isinstance(exc, BlockingIOError):
            return True
        if isinstance(exc, (ConnectionRefusedError, ConnectionResetError)):
            self._unreachable(sock, via_peer)
            return False
        if not self._closed:
            self.stats.drops["recv-error"] += 1
            self._warn_once("recv-error", f"receive error: {exc.strerror}")
        return True

    def _read_ancillary(
        self, sock: socket.socket, ancdata: list[tuple[int, int, bytes]]
    ) -> float | None:
        """Count kernel drops reported in ``ancdata``; return the kernel's stamp (wall) if any."""
        kernel_time = None
        for level, kind, payload in ancdata:
            if level != socket.SOL_SOCKET:
                continue
            if kind == SO_TIMESTAMPNS and len(payload) >= TIMESPEC.size:
                seconds, nanoseconds = TIMESPEC.unpack_from(payload)
                kernel_time = seconds + nanoseconds * 1e-9
            elif kind == SO_RXQ_OVFL and len(payload) >= 4:
                self._kernel_dropped(sock, int.from_bytes(payload[:4], sys.byteorder))
        if kernel_time is None:
            return None
        to_wall = self._kernel_to_wall
        wall = kernel_time if to_wall is None else to_wall(kernel_time)
        return None if wall is None else self._stamps.place(wall)

    def _stamps_reanchored(self, correction: float, system_step: float | None) -> None:
        """Kernel stamps stopped agreeing with this endpoint's clock (issue #27 item 16): say
        why once, and count it; arrival times stay on the clock's scale either way."""
        self.stats.arrival_reanchors += 1
        if abs(correction) < 0.5:
            return  # settling, or a stall of the receive thread: not worth a warning
        if system_step is not None and abs(system_step + correction) < 0.1:
            why = (
                f"the system clock was stepped by {system_step:+.3f} s while this ran (NTP, "
                "or someone setting the time); this run keeps its own time scale"
            )
        else:
            why = (
                f"the kernel stamps datagrams {-correction:+.3f} s from this process's clock "
                "(a clock that is not the system's, e.g. libfaketime)"
            )
        self._warn_once("stamps", f"arrival times: {why}; re-anchored on this process's clock")

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
        without it the clock is read now. The work is :meth:`ReceiveCore.feed`'s.
        """
        self._core.feed(data, source, arrival, via_peer)

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
        with self._peers_lock:
            self._closed = True
        selector = self._selector
        if selector is not None:
            selector.wake()
        thread = self._thread
        # is_alive() is False for a thread a stop signal kept from starting (it landed between
        # creating and starting it: `timetag monitor` exited 1 after SIGHUP once in CI), and
        # joining that one raises; it never ran, so there is nothing to wait for.
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout)
        if selector is not None:
            selector.close()
        stopped = self._thread is None or not self._thread.is_alive()
        if self._listen_sock is not None:
            # Twice: what arrived (or was dropped) while the first pass counted is counted by
            # the second, which leaves only the moment before the socket closes uncounted.
            for _ in range(2):
                self._count_unread(self._listen_sock)
                self._count_kernel_drops(self._listen_sock)
        self._close_sockets()
        return stopped

    def _count_unread(self, sock: socket.socket) -> None:
        # Datagrams still queued in the socket at close were received by the kernel but never
        # handled: count them, so that sent = handled + dropped holds exactly in a summary.
        sock.setblocking(False)
        space = self._ancillary_space if HAS_RECVMSG else 0
        # Bounded by what the buffer can hold (every queued datagram costs the kernel a few
        # hundred bytes at least), so a flood still arriving cannot keep close() busy.
        queued_at_most = max(1024, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 256)
        buffer = bytearray(MAX_DATAGRAM)
        for _ in range(queued_at_most):
            try:
                if HAS_RECVMSG:
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
            if not (HAS_RECVMSG and SO_RXQ_OVFL is not None):
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


def _refuse_tcp(listen: Sequence[HostPort], peers: Sequence[HostPort]) -> None:
    # A tcp:// address here would be sent UDP without a word: TCP is TcpEndpoint's
    # (oscsync.net.tcpendpoint), which open_endpoint builds when an address says tcp://.
    for where in (*listen, *peers):
        if where.is_tcp:
            raise TransportError(
                errno.EPROTOTYPE, f"{where}: this endpoint speaks UDP only (TCP needs TcpEndpoint)"
            )
