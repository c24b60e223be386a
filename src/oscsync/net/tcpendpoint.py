"""The endpoint for ``tcp://`` addresses: OSC over TCP through the same receive core as UDP.

:class:`TcpEndpoint` is a :class:`~oscsync.net.udp.Endpoint` that also speaks TCP: a ``tcp://``
listen address is served by a :class:`~oscsync.net.tcplistener.TcpListener`, each ``tcp://`` peer
gets a :class:`~oscsync.net.tcpsender.TcpSender`, and UDP addresses given alongside them stay with
the UDP endpoint it extends (so ``chat --listen tcp://... --peer HOST:PORT`` works too). Every frame
is fed to the endpoint's :class:`~oscsync.net.core.ReceiveCore`, exactly as a datagram is: the
``--allow`` check, decoding, drop counts by reason, the address registry (clock pings are answered
over TCP like over UDP) and the command's handler are shared, so commands do not know which
transport they use. :func:`oscsync.apps.endpoints.open_endpoint` builds one when an address says
``tcp://``.

Answers go back the way the question came: a message received on an accepted connection is
answered on that connection (:meth:`reply`), one that came back on a peer's connection through
that peer's sender.

Received frames come from several threads (the listener's, each sender's, the UDP receive
thread); the TCP ones are fed to the core one at a time under a lock, so a command's handler
sees them in turn.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from oscsync.net import framing
from oscsync.net.core import MessageHandler, ReceiveHooks
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort, allow_mismatch, framing_conflict
from oscsync.net.tcplistener import TcpListener
from oscsync.net.tcpsender import DropPolicy, TcpSender
from oscsync.net.udp import Endpoint, EndpointOptions, TransportError
from oscsync.osc.routing import Received

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only in annotations, so 3.10 runs this module

SCSYNTH_PORT = 57110
"""SuperCollider's scsynth listens here by default (sclang's server options): a SLIP stream to
it, the default for ``tcp://``, is never read (issue 28)."""
DEFAULT_FLUSH_TIMEOUT = 2.0
"""How long :meth:`TcpEndpoint.close` waits for queued packets to be written (a ``send`` that
exits at once must not lose its packet to a connection still being made)."""


def uses_tcp(listen: HostPort | None, peers: Iterable[HostPort]) -> bool:
    """True when any of these addresses says ``tcp://``."""
    return (listen is not None and listen.is_tcp) or any(peer.is_tcp for peer in peers)


def _refuse_framing_conflict(peers: Iterable[HostPort]) -> None:
    conflict = framing_conflict(peers)
    if conflict is not None:
        raise TransportError(errno.EINVAL, conflict)


class TcpEndpoint(Endpoint):
    """Listen and send over TCP (and UDP for the addresses that do not say ``tcp://``)."""

    def __init__(
        self,
        listen: HostPort | None = None,
        peers: Sequence[HostPort] = (),
        *,
        framing_mode: Framing = "slip",
        drop: DropPolicy = "oldest",
        max_frame: int = framing.DEFAULT_MAX_FRAME,
        flush_timeout: float = DEFAULT_FLUSH_TIMEOUT,
        **options: Unpack[EndpointOptions],
    ) -> None:
        _refuse_framing_conflict(peers)
        tcp_listen = listen if listen is not None and listen.is_tcp else None
        super().__init__(
            None if tcp_listen is not None else listen,
            [peer for peer in peers if not peer.is_tcp],
            **options,
        )
        allow = self._core.allow
        on_warning = self._warn_once.on_warning
        self.framing: Framing = framing_mode
        self.drop: DropPolicy = drop
        self.max_frame = max_frame
        self.flush_timeout = flush_timeout
        self._on_tcp_warning = on_warning
        self._feed_lock = threading.Lock()
        self._all_peers: list[HostPort] = list(dict.fromkeys(peers))
        self._senders: dict[HostPort, TcpSender] = {}
        self._tcp_started = False
        self._tcp_closed = False  # under _peers_lock: set_peers() makes no sender after close()
        self.listener: TcpListener | None = None
        if tcp_listen is not None and allow:
            mismatch = allow_mismatch(tcp_listen, allow)
            if mismatch:
                on_warning(mismatch)
        try:
            if tcp_listen is not None:
                self.listener = TcpListener(
                    tcp_listen,
                    self._feed_from_listener,
                    clock=self.clock,
                    on_warning=on_warning,
                    allowed=self._core.allows if allow else None,
                    max_frame=max_frame,
                )
                # Framing errors are drops like any malformed datagram: one summary counts both.
                self.listener.stats.drops = self.stats.drops
            for peer in self._all_peers:
                if peer.is_tcp:
                    self._senders[peer] = self._new_sender(peer)
        except OSError as exc:
            self._abandon()
            raise TransportError(exc.errno, exc.strerror or str(exc)) from None
        except BaseException:
            self._abandon()
            raise

    def _abandon(self) -> None:
        """Close what a constructor that failed had opened: the listener (its port stays bound
        otherwise), the senders made so far and the UDP side."""
        if self.listener is not None:
            self.listener.close()
        for sender in self._senders.values():
            sender.close()
        super().close()

    @property
    def sending_once(self) -> bool:
        return self._sending_once

    @sending_once.setter
    def sending_once(self, value: bool) -> None:
        self._sending_once = value
        for sender in self._senders.values():
            sender.sending_once = value

    def _new_sender(self, peer: HostPort) -> TcpSender:
        if peer.framing is None and self.framing == "slip" and peer.port == SCSYNTH_PORT:
            # scsynth waits for a 593 MB packet when a SLIP stream starts with "#bundle" (its
            # first four bytes read as a size): nothing on the wire can tell us, so say it now.
            self._on_tcp_warning(
                f"{peer}: port {SCSYNTH_PORT} is scsynth's, which reads only size-prefixed TCP; "
                f"if this is scsynth, write {HostPort(peer.host, peer.port, 'tcp', 'size')}"
            )
        return TcpSender(
            peer,
            # A URL that names its framing (tcp+size://, osc.tcp://) wins over the command's.
            framing_mode=peer.framing or self.framing,
            clock=self.clock,
            on_warning=self._on_tcp_warning,
            on_packet=self._feed_from_peer,
            drop=self.drop,
            max_frame=self.max_frame,
            sending_once=self.sending_once,
        )

    # -- receiving -------------------------------------------------------------------------

    def _feed_from_listener(self, packet: bytes, source: tuple[str, int], arrival: float) -> None:
        with self._feed_lock:
            self._core.feed(packet, source, arrival, False)

    def _feed_from_peer(self, packet: bytes, source: tuple[str, int], arrival: float) -> None:
        with self._feed_lock:
            self._core.feed(packet, source, arrival, True)

    def start(self, handler: MessageHandler | None = None, **hooks: Unpack[ReceiveHooks]) -> None:
        listener = self.listener
        # on_idle goes to whichever thread reads the listening side (dump's batched output).
        on_idle = hooks.get("on_idle")
        super().start(
            handler,
            on_datagram=hooks.get("on_datagram"),
            on_idle=on_idle if listener is None else None,
        )
        if listener is not None:
            if on_idle is not None:
                idle = on_idle

                def after_reads() -> None:
                    with self._feed_lock:  # not while another thread's frame is being handled
                        idle()

                listener.on_idle = after_reads
            listener.start()
        self._tcp_started = True

    # -- addresses -------------------------------------------------------------------------

    @property
    def local_address(self) -> HostPort | None:
        if self.listener is not None:
            return self.listener.local_address
        return super().local_address

    @property
    def peers(self) -> list[HostPort]:
        return list(self._all_peers)

    def set_peers(self, peers: Sequence[HostPort]) -> None:
        _refuse_framing_conflict(peers)
        wanted = list(dict.fromkeys(peers))
        # Under the lock close() takes to close the senders: a peer follower's thread calling
        # this while the endpoint closes would otherwise make a sender nobody closes.
        with self._peers_lock:
            if self._tcp_closed:
                raise RuntimeError("endpoint is closed")
            super().set_peers([peer for peer in wanted if not peer.is_tcp])
            retired = [s for p, s in self._senders.items() if p not in wanted]
            self._senders = {
                peer: self._senders.get(peer) or self._new_sender(peer)
                for peer in wanted
                if peer.is_tcp
            }
            self._all_peers = wanted
        for sender in retired:
            self._close_sender(sender, flush_timeout=0.0)

    # -- sending ---------------------------------------------------------------------------

    def send_bytes(self, data: bytes, peers: Iterable[HostPort] | None = None) -> int:
        wanted = None if peers is None else set(peers)
        udp_wanted = None if wanted is None else [p for p in wanted if not p.is_tcp]
        delivered = 0
        if udp_wanted is None or udp_wanted:
            delivered += super().send_bytes(data, udp_wanted)
        for peer, sender in list(self._senders.items()):
            if wanted is not None and peer not in wanted:
                continue
            if sender.send(data):
                delivered += 1
                self.stats.sent += 1
        return delivered

    def flush(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s in all) until every TCP packet is written to its peer;
        False when one is not (a peer that refuses the connection says so at once)."""
        deadline = self.clock.monotonic() + timeout
        flushed = True
        for sender in list(self._senders.values()):
            remaining = max(0.0, deadline - self.clock.monotonic())
            flushed = sender.flush(remaining) and flushed
        return flushed

    def reply(self, data: bytes, to: tuple[str, int]) -> bool:
        """Answer on the TCP connection ``to`` came in on, else as the UDP endpoint does."""
        if self.listener is not None:
            if self.listener.reply(to, data):
                self.stats.sent += 1
                return True
            self.stats.send_errors["reply"] += 1
            return False
        return super().reply(data, to)

    def answer(self, received: Received, data: bytes) -> bool:
        if received.via_peer:
            for peer, sender in self._senders.items():
                if peer.sockaddr == received.source:
                    if sender.send(data):
                        self.stats.sent += 1
                        return True
                    return False
            return super().answer(received, data)
        return self.reply(data, received.source)

    # -- shutting down ---------------------------------------------------------------------

    def close(self, timeout: float = 2.0) -> bool:
        """Write what is queued (up to ``flush_timeout``), then close TCP and UDP alike.

        Packets that could not be written are counted in ``stats.send_errors`` by reason
        (``undelivered:queue-full``, ``undelivered:unsent-at-close``, ...).
        """
        stopped = True
        if self._senders and self.flush_timeout > 0 and not self._closed:
            self.flush(self.flush_timeout)
        with self._peers_lock:
            self._tcp_closed = True
            senders = list(self._senders.values())
        for sender in senders:
            stopped = self._close_sender(sender, flush_timeout=0.0) and stopped
        if self.listener is not None:
            stopped = self.listener.close(timeout) and stopped
            self.stats.connections = self.listener.stats.connections
            self.stats.connections_closed = self.listener.stats.closed_by_listener()
            # Packets counted unread at close are drops (shared Counter) and arrivals alike.
            self.stats.datagrams += self.listener.stats.unread_at_close
        return super().close(timeout) and stopped

    def _close_sender(self, sender: TcpSender, flush_timeout: float) -> bool:
        stopped = sender.close(flush_timeout)
        for reason, count in sender.stats.dropped.items():
            self.stats.send_errors["undelivered:" + reason] += count
        sender.stats.dropped.clear()
        return stopped

    def __enter__(self) -> TcpEndpoint:
        return self
