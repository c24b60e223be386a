"""What every transport shares: the :class:`Transport` protocol and the receive core.

A transport (UDP :class:`oscsync.net.udp.Endpoint`, TCP
:class:`oscsync.net.tcpendpoint.TcpEndpoint`) moves bytes; everything that happens to a datagram
or frame once it has arrived is the :class:`ReceiveCore`'s job and knows nothing of sockets: the
``--allow`` check, the raw-datagram hook (``record``), decoding, counting what is dropped and
why, and dispatch through the :class:`~oscsync.osc.routing.AddressRegistry` (a registered
handler, else the transport's fallback handler). A transport feeds it one datagram (one frame,
for a stream) at a time with :meth:`ReceiveCore.feed`. Nothing a peer sends can raise out of
``feed``.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

from oscsync.clock import Clock
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc.auth import ELEMENT_SIZE as SIGNATURE_SIZE
from oscsync.osc.auth import is_signed
from oscsync.osc.routing import AddressRegistry, Received, no_route
from oscsync.stats import WarnOnce
from oscsync.terminal import display
from oscsync.terminal.wording import drop_warning

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only in annotations, so 3.10 runs this module

_ALLOW_CACHE_LIMIT = 4096
"""Source hosts whose --allow verdict is remembered; emptied when full. A key is an address the
kernel gave (at most ~60 characters with an IPv6 scope), so this is ~1 MB at most (issue 27)."""
# tuple.__new__ called directly: a named tuple's own __new__ is a Python function; this is half
# the cost (0.1 µs) of making the Received handed on for every message (issue 18).
_new_received = tuple.__new__
_decode_message = codec.decode_message

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass
class TransportStats:
    """Counters kept by a transport; keys of the Counters are a small fixed vocabulary."""

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
    connections: int = 0
    """TCP connections a listener accepted (0 on UDP); each frame counts in :attr:`datagrams`."""
    answered: Counter[str] = field(default_factory=Counter)
    """Messages answered on the endpoint's behalf, by address (clock pings): in :attr:`messages`
    too, so that a summary can count them apart from the command's own (issue 30)."""
    arrival_reanchors: int = 0
    """Times the kernel's arrival stamps were found off this process's clock and re-anchored
    (:class:`oscsync.clock.KernelStamps`: the system clock stepped, or another clock)."""
    connections_closed: Counter[str] = field(default_factory=Counter)
    """TCP connections the listener closed or refused, by reason (``evicted`` to make room,
    ``idle``, ``frame-timeout``, ``waiting-at-close``...); not those the clients closed."""

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    def connection_note(self) -> str:
        """The TCP connections the listener closed or refused, for a summary ("" when none)."""
        if not self.connections_closed:
            return ""
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.connections_closed.items()))
        total = sum(self.connections_closed.values())
        return f"TCP connections closed by the listener: {total} ({reasons})"

    def platform_note(self) -> str:
        """What this platform could not measure, for a summary line ("" when nothing)."""
        if self.kernel_drops == "unavailable":
            # Say why, not only what (issue 18): the numbers may not add up, and this is where.
            return (
                "datagrams the OS dropped (buffer full) are not reported on this platform:"
                " it keeps no per-socket drop count"
            )
        return ""


MessageHandler = Callable[[Received], None]
DatagramHandler = Callable[[bytes, tuple[str, int], float], None]
"""Takes each allowed datagram undecoded, with its source and arrival (``record``, issue #15)."""
WarningHandler = Callable[[str], None]


class BundleVerifier(Protocol):
    """Checks signed bundles (:class:`oscsync.osc.auth.Verifier`)."""

    def open(self, data: bytes, source: object = None) -> tuple[bytes, bool] | str: ...


class ReceiveHooks(TypedDict, total=False):
    """What :meth:`Transport.start` takes besides the message handler (a session passes them
    through to its endpoint unchanged)."""

    on_datagram: DatagramHandler | None
    """Every allowed datagram, undecoded, instead of the handler (``record``)."""
    on_idle: Callable[[], None] | None
    """Runs on the receive thread each time it has read all that was waiting (``dump``)."""


class Transport(Protocol):
    """What apps use of a transport; :class:`oscsync.net.udp.Endpoint` is the UDP one."""

    clock: Clock
    stats: TransportStats
    registry: AddressRegistry

    @property
    def local_address(self) -> HostPort | None:
        """Where it listens (the real port when port 0 was asked for); None if it does not."""
        ...

    @property
    def peers(self) -> list[HostPort]: ...

    def set_peers(self, peers: Sequence[HostPort]) -> None:
        """Replace the peer list at run time (a re-resolved ``@NAME``); thread-safe."""
        ...

    def send(
        self,
        address: str,
        args: Sequence[Any] = (),
        *,
        types: str | None = None,
        timetag: int | None = None,
    ) -> int:
        """Send one message (bundled if ``timetag``) to every peer; return how many got it.

        The same for every transport: encode, then :meth:`send_bytes`."""
        data = codec.encode_message(address, args, types)
        if timetag is not None:
            data = codec.encode_bundle(timetag, [data])
        return self.send_bytes(data)

    def send_bytes(self, data: bytes, peers: Iterable[HostPort] | None = None) -> int:
        """Send an encoded packet to every peer (or those given); errors counted, not raised."""
        ...

    def flush(self, timeout: float) -> bool:
        """Wait at most ``timeout`` s until what was sent has left this process (a stream may
        still be connecting); False if some of it could not be."""
        ...

    def reply(self, data: bytes, to: tuple[str, int]) -> bool:
        """Send ``data`` to an address from the listening side (a pong, a relayed answer)."""
        ...

    def answer(self, received: Received, data: bytes) -> bool:
        """Send ``data`` back to where ``received`` came from."""
        ...

    def start(self, handler: MessageHandler | None = None, **hooks: Unpack[ReceiveHooks]) -> None:
        """Start receiving: registered addresses go to their handlers, the rest to ``handler``
        (or everything, undecoded, to ``on_datagram``)."""
        ...

    def close(self, timeout: float = 2.0) -> bool:
        """Stop receiving and close; False if the receive thread is still busy after timeout."""
        ...


def _ignore_warning(_: str) -> None:
    pass


class ReceiveCore:
    """Allow-list, decode, count, dispatch: what a transport does with each datagram or frame."""

    def __init__(
        self,
        clock: Clock,
        *,
        allow: Sequence[Network] = (),
        on_warning: WarningHandler = _ignore_warning,
        registry: AddressRegistry | None = None,
        stats: TransportStats | None = None,
        verifier: BundleVerifier | None = None,
    ) -> None:
        self.clock = clock
        self.stats = stats if stats is not None else TransportStats()
        self.registry = registry if registry is not None else AddressRegistry()
        self.handler: MessageHandler | None = None
        """Messages for addresses nobody registered (the app's handler given to ``start``)."""
        self.on_datagram: DatagramHandler | None = None
        """When set, every allowed datagram goes here undecoded instead (``record``)."""
        self.warn_once = WarnOnce(on_warning)
        """``warn_once(key, text)``: ``text`` to the warning handler the first time ``key`` is
        seen (one line per reason, not one per bad datagram)."""
        self._allow = tuple(allow)
        self._allow_cache: dict[str, bool] = {}
        self.verifier = verifier
        """With a key (``--key-file``): signed bundles are checked here and their messages
        marked :attr:`~oscsync.osc.routing.Received.authenticated`; a bad or replayed signature
        drops the datagram (``bad-signature``, ``replayed``). With or without one, the signature
        element (:mod:`oscsync.osc.auth`) is removed before dispatch: it is this layer's, as a
        ping's answer is, and never reaches an application."""

    def feed(
        self, data: bytes, source: Any, arrival: float | None = None, via_peer: bool = False
    ) -> None:
        """Take one datagram (or stream frame) from ``source``; never raises for what it holds.

        ``arrival`` is the kernel's receive stamp on this core's clock, if there is one;
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
        if self.on_datagram is not None:
            try:
                self.on_datagram(data, source, arrival)
            except Exception as exc:
                stats.drops["handler-error"] += 1
                self.warn_once("handler", f"datagram handler failed: {exc!r}")
            return
        # A plain message, the common case, skips decode()'s list and the loop below (issue 18,
        # benchmarks/dump_path.py); decode() would hand it to decode_message all the same.
        plain = data[:1] == b"/" and not len(data) & 3
        authenticated = False
        if not plain and is_signed(data):
            if self.verifier is None:
                # No key to check it with: the signature goes, its messages stay unchecked.
                data = data[:-SIGNATURE_SIZE]
            else:
                try:
                    opened = self.verifier.open(data, source)
                except Exception as exc:  # hostile bytes must not end a receive thread
                    stats.drops["unverifiable"] += 1
                    self.warn_once(
                        "drop:unverifiable",
                        display.escape(
                            f"dropped a signed datagram from {source[0]}:{source[1]}: it could "
                            "not be checked "
                            f"({exc!r}); further ones are counted"
                        ),
                    )
                    return
                if isinstance(opened, str):
                    stats.drops[opened] += 1
                    self._warn_signature(opened, source)
                    return
                data, authenticated = opened
        try:
            if plain:
                message = _decode_message(data)
            else:
                messages = codec.decode(data)
        except codec.DecodeError as exc:
            stats.drops[exc.reason] += 1
            self._warn_drop(exc.reason, source, data, str(exc))
            return
        except Exception:
            stats.drops["undecodable"] += 1
            self._warn_drop("undecodable", source, data, "undecodable")
            return
        if plain:
            stats.messages += 1
            registry = self.registry
            handler = registry.resolved.get(message[0]) or registry.lookup(message[0])
            if handler is no_route:
                if self.handler is None:
                    return
                handler = self.handler
            try:
                handler(
                    _new_received(Received, (message, source, arrival, via_peer, authenticated))
                )
            except Exception as exc:
                self._handler_failed(message, exc)
            return
        if data[0] == 35:  # "#": a bundle (decode refused anything empty)
            stats.bundles += 1
        fallback = self.handler
        registry = self.registry
        resolved = registry.resolved
        for message in messages:
            stats.messages += 1
            # The hot path (benchmarks/throughput.py): one dict lookup per message.
            handler = resolved.get(message.address) or registry.lookup(message.address)
            if handler is no_route:
                if fallback is None:
                    continue
                handler = fallback
            try:
                handler(
                    _new_received(Received, (message, source, arrival, via_peer, authenticated))
                )
            except Exception as exc:
                self._handler_failed(message, exc)

    def _handler_failed(self, message: codec.Message, exc: Exception) -> None:
        self.stats.drops["handler-error"] += 1
        text = f"handler failed on {display.escape(message.address)}: {exc!r}"
        self.warn_once("handler", display.printable(text))  # issue 20, item 5

    @property
    def allow(self) -> tuple[Network, ...]:
        """The ``--allow`` networks (empty: every host may send)."""
        return self._allow

    def allows(self, host: str) -> bool:
        """True when ``--allow`` lets ``host`` in (any host, without ``--allow``): a stream
        transport asks at connection time, before the peer can send anything."""
        return not self._allow or self._allowed(host)

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

    def _warn_signature(self, reason: str, source: tuple[str, int]) -> None:
        where = display.escape(f"{source[0]}:{source[1]}")
        why = (
            "it was sent before (a replay)"
            if reason == "replayed"
            else "its signature does not match this key (another key, or a forgery)"
        )
        self.warn_once(
            "drop:" + reason,
            f"dropped a signed datagram from {where}: {why}; further ones are counted",
        )

    def _warn_drop(self, reason: str, source: tuple[str, int], data: bytes, detail: str) -> None:
        # Once per reason while running, not only in the summary at Ctrl-C (issue #13).
        if "drop:" + reason not in self.warn_once:
            self.warn_once("drop:" + reason, drop_warning(reason, source, data, detail))
