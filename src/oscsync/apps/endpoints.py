"""Endpoints: the public :class:`Endpoint` (``oscsync.Endpoint``), and the transport under it.

The transport knows no protocol (issue #12, item 2); this is the layer that adds one: every
oscsync listener answers clock pings (``/oscsync/clock/ping``, ``docs/protocol.md``), so commands
and :class:`Endpoint` open their transports with :func:`open_endpoint`. A relay that must pass
pings on (``netem``) or a test that wants a bare socket builds
:class:`~oscsync.net.udp.Endpoint` itself.

:class:`Endpoint` is what a Python script opens (issue #28): the transport, plus a
:class:`~oscsync.scheduler.Scheduler` on which every user callback runs, never on the receive
thread (a slow callback delays other callbacks, never the reading of the socket: the
scheduler's bounds refuse what overflows, and it is counted), plus, with ``sync``, a
:class:`~oscsync.sync.follow.ClockFollower` that translates a leader's timetags onto this clock.
``oscsync send``, ``chat``, ``metronome send``, ``sequence send`` and ``replay`` run on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import threading
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from oscsync.clock import Clock, system_clock
from oscsync.net import udp
from oscsync.net.core import Network, TransportStats
from oscsync.net.framing import Framing
from oscsync.net.hostport import AddressError, HostPort, parse_hostport, parse_network
from oscsync.net.tcpendpoint import TcpEndpoint, uses_tcp
from oscsync.net.udp import EndpointOptions, Service
from oscsync.osc import codec
from oscsync.osc.auth import Key, PacketAuth
from oscsync.osc.routing import AddressRegistry, Handler, Method, Received, no_route
from oscsync.scheduler import DEFAULT_SPIN, Scheduler
from oscsync.sync.follow import ClockFollower
from oscsync.sync.ping import PONG, PONG_METHOD, SERVICE_METHODS, ClockSync, standard_services
from oscsync.sync.room import SYNC_METHOD

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only in annotations, so 3.10 runs this module


def add_standard_services(endpoint: udp.Endpoint, auth: PacketAuth | None = None) -> udp.Endpoint:
    """Register the clock services (:func:`oscsync.sync.ping.standard_services`) on ``endpoint``
    (with ``auth``, a key: pongs to signed pings are signed), and take a room leader's sync
    messages (issue #33) out of the application's way: a clock follower registers its own
    handler for them, anyone else ignores them as it would a pong."""
    for address, service in standard_services(auth).items():
        method = SERVICE_METHODS[address]
        endpoint.add_service(address, _counted(address, service), method.types, method.description)
    # Routed, not listed: the endpoint answers to nothing there (a follower that uses them
    # registers its own handler, listed).
    endpoint.registry.add_method(dataclasses.replace(SYNC_METHOD, listed=False), _ignore_sync)
    return endpoint


def _counted(address: str, service: Service) -> Service:
    """``service``, counting each message it answers in ``stats.answered[address]``."""

    def answer(endpoint: udp.Endpoint, received: Received) -> None:
        endpoint.stats.answered[address] += 1
        service(endpoint, received)

    return answer


def _ignore_sync(received: Received) -> None:
    """A leader's sync message reaching a listener that follows no clock: nothing to do."""


def open_endpoint(
    listen: HostPort | None = None,
    peers: Sequence[HostPort] = (),
    *,
    framing: Framing = "slip",
    auth: PacketAuth | None = None,
    **options: Unpack[EndpointOptions],
) -> udp.Endpoint:
    """An endpoint that answers the standard clock services: UDP
    (:class:`~oscsync.net.udp.Endpoint`, whose keywords ``options`` are), or
    :class:`~oscsync.net.tcpendpoint.TcpEndpoint` when an address says ``tcp://`` (then ``framing``
    is how packets to TCP peers are framed). With ``auth`` (a key) it signs its pongs and checks
    signed bundles."""
    if auth is not None:
        options["verifier"] = auth.verifier
    if uses_tcp(listen, peers):
        endpoint: udp.Endpoint = TcpEndpoint(listen, peers, framing_mode=framing, **options)
    else:
        endpoint = udp.Endpoint(listen, peers, **options)
    return add_standard_services(endpoint, auth)


KEY_CHECK_PINGS = 4
KEY_CHECK_TIMEOUT = 1.5
"""A peer checked for the key gets this many signed pings over this many seconds (one answer
is enough: a peer just restarted may miss the first)."""


def answers_with_key(
    peer: HostPort,
    *,
    clock: Clock,
    auth: PacketAuth,
    pings: int = KEY_CHECK_PINGS,
    timeout: float = KEY_CHECK_TIMEOUT,
) -> bool:
    """Whether ``peer`` answers a signed clock ping with a pong signed with the same key: the
    proof that an ``@NAME`` which re-registered elsewhere is one that holds the key, and not
    anyone who announced the name (issue #27 item 5). Blocks up to ``timeout`` seconds."""
    with open_endpoint(peers=[peer], clock=clock, auth=auth) as endpoint:
        sync = ClockSync(clock, endpoint.send_bytes, filter_size=1, auth=auth)
        endpoint.add_service(PONG, sync.service, PONG_METHOD.types, PONG_METHOD.description)
        endpoint.start(lambda received: None)
        for _ in range(pings):
            sync.ping()
            if sync.wait_for_answers(1, timeout / pings):
                return True
        return False


# -- the public endpoint ------------------------------------------------------------------------

Address = str | int | HostPort
"""Where to listen or send: ``9000`` (a port on this machine), ``"HOST:PORT"``,
``"udp://HOST:PORT"``, ``"tcp://HOST:PORT"`` (liblo's ``osc.udp://`` and ``osc.tcp://`` too),
``"@NAME"`` (a peer advertised on the local network: peers only), or a parsed
:class:`~oscsync.net.hostport.HostPort`."""
Callback = Callable[[Received], object]
"""A user's handler: called with each :class:`~oscsync.osc.routing.Received` message."""
C = TypeVar("C", bound=Callback)

RESOLVE_TIMEOUT = 3.0
"""Seconds ``@NAME`` waits for an answer (found peers answer within ~0.2 s on a LAN)."""
DEFAULT_MAX_QUEUED = 1024
"""Callbacks waiting at most (held bundles and messages not yet handled); more are refused and
counted (``Endpoint.dropped["callback-refused"]``): a callback slower than the traffic cannot
make the process grow."""
DEFAULT_INBOX_SIZE = 1024
"""Messages :meth:`Endpoint.messages` keeps unread at most; more are counted (``inbox-full``)."""
INBOX_BYTES = 32 * 1024 * 1024
"""Bytes the unread messages may hold (:func:`~oscsync.osc.codec.footprint`), as the scheduler
caps what it holds: 1,024 TCP packets of up to 16 MiB each would otherwise be 16 GiB."""

OWN_ADDRESSES = "/oscsync/"
"""Where oscsync's own services live (clock pings); a callback cannot take them over."""
_OSC_ADDRESS = re.compile(r"/[^ \t\r\n#\x00]*")
"""What :meth:`Endpoint.on` takes: what an OSC address (or pattern) can be, as the encoder
checks what :meth:`Endpoint.send` sends (``codec``)."""

log = logging.getLogger("oscsync")


def resolve_name(
    name: str, *, interface: str | None = None, timeout: float = RESOLVE_TIMEOUT
) -> HostPort:
    """The address a peer advertises as ``name`` on the local network (zeroconf, ``oscsync
    peers``), UDP or TCP as it says. Raises :class:`~oscsync.discovery.mdns.DiscoveryError` (one
    line that lists the names found) when nobody by that name answers in ``timeout`` seconds."""
    from oscsync.discovery import browsing  # zeroconf: only for @NAME

    host, port, protocol = browsing.resolve(name, interface, timeout)
    return HostPort(host, port, protocol)


def listen_address(where: Address) -> HostPort:
    """Where to listen: a port (``9001``: on 127.0.0.1; 0: one the kernel picks), or
    ``[HOST:]PORT`` / a URL (``"0.0.0.0:9001"`` accepts OSC from the network)."""
    if isinstance(where, HostPort):
        return where
    if isinstance(where, int) and not isinstance(where, bool):
        return parse_hostport(str(where), allow_port_zero=True)
    if isinstance(where, str) and where.startswith("@"):
        raise AddressError(f"{where!r}: @NAME is for peers; listen on a port instead")
    if not isinstance(where, str):
        raise AddressError(f"{where!r} is not an address: give a port or 'HOST:PORT'")
    return parse_hostport(where, allow_port_zero=True)


def peer_address(where: Address, *, interface: str | None = None) -> HostPort:
    """Where to send: ``"HOST:PORT"`` or a URL, a port on this machine (``9000``), or
    ``"@NAME"`` (resolved now, see :func:`resolve_name`)."""
    if isinstance(where, HostPort):
        return where
    if isinstance(where, int) and not isinstance(where, bool):
        return parse_hostport(str(where))
    if isinstance(where, str) and where.startswith("@"):
        return resolve_name(where[1:], interface=interface)
    if not isinstance(where, str):
        raise AddressError(f"{where!r} is not an address: give 'HOST:PORT' or '@NAME'")
    return parse_hostport(where, default_host=None)


def _element(item: codec.Message | Sequence[Any] | bytes) -> bytes:
    """One bundle element: a received message (its types kept), ``(address, *args)``, or bytes
    already encoded."""
    if isinstance(item, (bytes, bytearray)):
        return bytes(item)
    if isinstance(item, codec.Message):
        return codec.encode_message(item.address, item.args, item.types)
    if isinstance(item, str) or not isinstance(item, Sequence) or not item:
        # A bare address or an empty tuple: one clear EncodeError, as for any other bad value.
        raise codec.EncodeError(
            f"a bundle element is (address, *args), a Message or bytes, not {item!r}"
        )
    address, *args = item
    return codec.encode_message(str(address), args)


def _checked_timetag(at: int) -> int:
    if isinstance(at, bool) or not isinstance(at, int):
        # python-osc takes Unix seconds as a float; an NTP timetag is an int (oscsync.now()).
        raise TypeError(
            f"at= takes an NTP timetag (an int, e.g. oscsync.add_seconds(oscsync.now(), 0.5)), "
            f"not {type(at).__name__} {at!r}: for Unix seconds use oscsync.from_unix()"
        )
    return at


def _packet_auth(key: Key | PacketAuth | str | bytes | None) -> PacketAuth | None:
    if key is None or isinstance(key, PacketAuth):
        return key
    if isinstance(key, Key):
        return PacketAuth(key)
    return PacketAuth(Key.from_text(key, "key="))


class _Inbox:
    """Messages no handler took, for :meth:`Endpoint.messages`: bounded, readable from threads
    and coroutines alike."""

    def __init__(self, size: int, max_bytes: int) -> None:
        self._items: deque[tuple[Received, int]] = deque()  # each with its footprint
        self._size = size
        self._max_bytes = max_bytes
        self._bytes = 0
        self._changed = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self.closed = False
        self.dropped = 0

    def put(self, received: Received) -> None:
        cost = codec.footprint(received.message)
        with self._changed:
            if self.closed:
                return
            if len(self._items) >= self._size or self._bytes + cost > self._max_bytes:
                self.dropped += 1
                return
            self._items.append((received, cost))
            self._bytes += cost
            self._changed.notify()
            waiters, self._waiters = self._waiters, []
        _wake(waiters)

    def get(self, timeout: float | None) -> Received | None:
        with self._changed:
            self._changed.wait_for(lambda: self._items or self.closed, timeout)
            return self._take() if self._items else None

    def _take(self) -> Received:
        """The oldest message (the caller holds the lock, and there is one)."""
        received, cost = self._items.popleft()
        self._bytes -= cost
        return received

    async def get_async(self, timeout: float | None) -> Received | None:
        loop = asyncio.get_running_loop()
        while True:
            with self._changed:
                if self._items:
                    return self._take()
                if self.closed:
                    return None
                future: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, future))
            try:
                await asyncio.wait_for(future, timeout)
            except asyncio.TimeoutError:
                return None
            finally:
                with self._changed:  # a waiter that gave up is not woken (its loop may close)
                    if (loop, future) in self._waiters:
                        self._waiters.remove((loop, future))

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._changed.notify_all()
            waiters, self._waiters = self._waiters, []
        _wake(waiters)


def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
    for loop, future in waiters:
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # it closed just now
                loop.call_soon_threadsafe(_set_done, future)


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Messages(Iterator[Received], AsyncIterator[Received]):
    """What :meth:`Endpoint.messages` returns: iterate it with ``for`` (blocks the thread) or
    ``async for`` (awaits in a coroutine). It ends when the endpoint closes, or after
    ``timeout`` seconds with nothing new."""

    def __init__(self, inbox: _Inbox, timeout: float | None) -> None:
        self._inbox = inbox
        self._timeout = timeout

    def __iter__(self) -> Messages:
        return self

    def __next__(self) -> Received:
        received = self._inbox.get(self._timeout)
        if received is None:
            raise StopIteration
        return received

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Received:
        received = await self._inbox.get_async(self._timeout)
        if received is None:
            raise StopAsyncIteration
        return received


class _Delivery:
    """A registered callback: what the receive thread hands each of its messages to."""

    def __init__(self, endpoint: Endpoint, callback: Callback, hold: bool) -> None:
        self.endpoint = endpoint
        self.callback = callback
        self.hold = hold

    def __call__(self, received: Received) -> None:
        self.endpoint._deliver(received, self.callback, self.hold)


class Endpoint:
    """Send and receive OSC: listen on ``listen`` and/or send to ``peers`` (UDP or TCP).

    * **Sending**: :meth:`send` one message, at once or in a bundle timetagged ``at``;
      :meth:`send_bundle` several messages under one timetag.
    * **Receiving**: :meth:`on` registers a callback for an address or an OSC pattern
      (``/seq/*``); messages no callback takes go to :meth:`messages` (iterate it with ``for``
      or ``async for``) or to :meth:`set_default_handler`'s. A bundle is held until its
      timetag, then handed on (OSC 1.0); ``hold=False`` hands it on at once. Every callback
      runs on the endpoint's :attr:`scheduler` thread, one at a time, in due order; never on
      the thread that reads the socket.
    * **Following a clock** (``sync``): ``True`` follows whoever sends the first timetagged
      message, an address follows that peer. Timetags received from it are translated onto
      this machine's clock before anything is held or handed on; :attr:`sync` tells how well.
      The leader needs nothing: every endpoint answers clock pings.
    * **A shared key** (``key``: 16 bytes or more of text or bytes, or a
      :class:`~oscsync.osc.auth.Key`; the commands' ``--key-file``): clock pings and pongs and
      the bundles :meth:`send` and :meth:`send_bundle` send are signed with it, signed bundles
      that arrive are checked (``received.authenticated``), and ``sync`` follows only a leader
      that signs with it (``docs/protocol.md``, "Signed packets"). :meth:`send_packet` sends
      its bytes as they are.

    The endpoint starts receiving (and answering clock pings) at once; :meth:`close` (or
    ``with``/``async with``) stops it. ``allow`` lists the hosts or networks that may send
    (``"192.168.1.0/24"``). ``interface`` is where ``@NAME`` is looked up (``loopback``,
    ``all`` or an address, as the commands' ``--interface``; default
    ``$OSCSYNC_MDNS_INTERFACE``, else every interface); ``multicast_interface`` the address
    multicast goes through (``--iface``). ``framing`` is how TCP packets are framed (``slip``:
    OSC 1.1, ``size``: OSC 1.0); ``max_queued`` bounds waiting callbacks and ``inbox_size``
    unread messages (0: none kept, nothing read with :meth:`messages`; ``spin``: see
    :class:`~oscsync.scheduler.Scheduler`); a ``scheduler``
    given (one timer thread shared) runs the callbacks instead, and its owner starts and closes
    it (on a one-thread :class:`~oscsync.clock.FakeClock` the endpoint's own is not started
    either: call ``endpoint.scheduler.run_due()``). ``on_warning`` hears each
    kind of trouble once (default: the ``oscsync`` logger). Raises
    :class:`~oscsync.net.hostport.AddressError` for an address that cannot be one,
    :class:`~oscsync.net.udp.TransportError` (an ``OSError``) when a socket cannot be opened,
    and :class:`~oscsync.discovery.mdns.DiscoveryError` for an ``@NAME`` nobody answers to.

    >>> import oscsync
    >>> with oscsync.Endpoint(listen=0) as receiver:
    ...     with oscsync.Endpoint(peers=receiver.port) as sender:
    ...         sender.send("/chat", "hello", 42)
    ...     print(next(receiver.messages(timeout=5)).args)
    1
    ('hello', 42)
    """

    def __init__(
        self,
        listen: Address | None = None,
        peers: Address | Sequence[Address] = (),
        *,
        sync: bool | Address | None = None,
        clock: Clock | None = None,
        allow: Sequence[str | Network] = (),
        interface: str | None = None,
        multicast_interface: str | None = None,
        framing: Framing = "slip",
        max_queued: int = DEFAULT_MAX_QUEUED,
        inbox_size: int = DEFAULT_INBOX_SIZE,
        spin: float = DEFAULT_SPIN,
        scheduler: Scheduler | None = None,
        on_warning: Callable[[str], None] | None = None,
        key: Key | PacketAuth | str | bytes | None = None,
    ) -> None:
        self.clock = clock or (scheduler.clock if scheduler is not None else system_clock())
        warn = on_warning or log.warning
        self.auth = _packet_auth(key)
        """The key's signer and checker (None without a key)."""
        self._interface = interface
        listening = None if listen is None else listen_address(listen)
        given = [peers] if isinstance(peers, (str, int, HostPort)) else list(peers)
        targets = [peer_address(peer, interface=interface) for peer in given]
        networks = [parse_network(n) if isinstance(n, str) else n for n in allow]
        followed = None
        if sync is not None and sync is not False and sync is not True:
            followed = peer_address(sync, interface=interface).sockaddr
        self.transport: udp.Endpoint = open_endpoint(
            listening,
            targets,
            framing=framing,
            clock=self.clock,
            allow=networks,
            on_warning=warn,
            multicast_interface=multicast_interface,
            auth=self.auth,
        )
        """The transport underneath (advanced: its ``registry``, ``send_bytes``); private in
        all but name, it may change."""
        self._handlers = AddressRegistry()
        self._default: _Delivery | None = None
        self._inbox = _Inbox(inbox_size, INBOX_BYTES)
        # inbox_size=0: what no callback takes is counted on the receive thread, never handed
        # to the scheduler (a peer's flood would otherwise cost a shared timer thread work).
        self._inbox_delivery: Handler = (
            _Delivery(self, self._inbox.put, True) if inbox_size > 0 else self._not_taken
        )
        self._dropped: Counter[str] = Counter()
        self._dropped_lock = threading.Lock()
        self._closed = False
        self._own_scheduler = False
        try:
            self._own_scheduler = scheduler is None
            self.scheduler = scheduler or Scheduler(
                self.clock, spin=spin, max_items=max_queued, on_warning=warn
            )
            """Where every callback runs (its timer thread), and what :meth:`call_at` uses."""
            self.sync: ClockFollower | None = None
            """With ``sync``: the clock follower (``sync.snapshot()``: state, offset, bound,
            ppm; ``sync.to_local(timetag)``); None without."""
            incoming: Handler = self._incoming
            if sync is not None and sync is not False:
                self.sync = ClockFollower(
                    self.transport, peer=followed, on_warning=warn, auth=self.auth
                )
                incoming = self.sync.wrap(incoming)
            self._receive = incoming
            # A one-thread FakeClock cannot be waited on by a thread (each wait is a jump):
            # then the test drives the scheduler itself (scheduler.run_due()).
            if self._own_scheduler and getattr(self.clock, "threaded", True):
                self.scheduler.start()
            self.transport.start(incoming)
            if self.sync is not None:
                self.sync.start()
        except BaseException:
            self.close()
            raise

    # -- where ----------------------------------------------------------------------------------

    @property
    def local_address(self) -> HostPort | None:
        """Where it listens, with the real port (None when it only sends)."""
        return self.transport.local_address

    @property
    def port(self) -> int | None:
        """The port it listens on (the kernel's pick when ``listen=0``); None when it only
        sends."""
        where = self.transport.local_address
        return None if where is None else where.port

    @property
    def peers(self) -> list[HostPort]:
        """Where :meth:`send` sends."""
        return self.transport.peers

    def set_peers(self, peers: Address | Sequence[Address]) -> None:
        """Send to ``peers`` from now on (thread-safe)."""
        given = [peers] if isinstance(peers, (str, int, HostPort)) else list(peers)
        self.transport.set_peers([peer_address(p, interface=self._interface) for p in given])

    # -- sending --------------------------------------------------------------------------------

    def send(
        self, address: str, *args: Any, types: str | None = None, at: int | None = None
    ) -> int:
        """Send ``address`` with ``args`` to every peer: at once, or with ``at`` in a bundle
        timetagged ``at`` (an NTP timetag: :func:`oscsync.now`, :func:`oscsync.add_seconds`)
        for the receiver to act on then. ``types`` sets the OSC type tags (``"ifs"``, any of
        ``i h f d s S c t r b m T F N I`` and ``[...]`` for an array, given as a list; else
        they follow the values: int ``i``, float ``f``, str ``s``, bytes ``b``, True/False/None
        ``T``/``F``/``N``, a list an array). Returns how many peers it was sent to; a peer
        that is down is counted and warned about once, not raised. Raises
        :class:`~oscsync.osc.codec.EncodeError` for values OSC cannot carry. With a key, the
        bundle is signed (a message sent at once is not: nothing translates it)."""
        timetag = None if at is None else _checked_timetag(at)
        if self.auth is None or timetag is None:
            return self.transport.send(address, args, types=types, timetag=timetag)
        bundle = codec.encode_bundle(timetag, [codec.encode_message(address, args, types)])
        return self.transport.send_bytes(self.auth.sign(bundle))

    def send_bundle(
        self, at: int, messages: Iterable[codec.Message | Sequence[Any] | bytes]
    ) -> int:
        """Send one bundle timetagged ``at`` holding ``messages``: each ``(address, *args)``, a
        received :class:`~oscsync.osc.codec.Message` (forwarded with its type tags), or
        encoded bytes (a message or a nested bundle). Returns how many peers it was sent to.
        Raises :class:`~oscsync.osc.codec.EncodeError` for an element that is none of these, or
        values OSC cannot carry."""
        elements = [_element(item) for item in messages]
        bundle = codec.encode_bundle(_checked_timetag(at), elements)
        return self.transport.send_bytes(bundle if self.auth is None else self.auth.sign(bundle))

    def send_packet(self, data: bytes) -> int:
        """Send an encoded OSC packet (a message or a bundle, e.g. one recorded) to every peer;
        returns how many peers it was sent to."""
        return self.transport.send_bytes(data)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until what was sent has left this process (TCP may still be connecting; UDP
        returns at once); False if some of it could not be sent in ``timeout`` seconds."""
        return self.transport.flush(timeout)

    # -- receiving ------------------------------------------------------------------------------

    def on(
        self,
        address: str,
        callback: C | None = None,
        *,
        hold: bool = True,
        types: str = "",
        description: str = "",
    ) -> Any:
        """Call ``callback(received)`` for each message to ``address`` (or matching it, when
        ``address`` is an OSC pattern such as ``/seq/*`` or ``/voice/{1,2}``). Use it as a
        decorator (``@endpoint.on("/tick")``) or a call; registering an address again replaces
        its callback.

        With ``hold`` (the default) a bundle's messages are handed on at their timetag, as OSC
        1.0 asks (at once if it has passed or is "immediately"); ``hold=False`` hands them on as
        they arrive. ``types`` and ``description`` are what OSCQuery lists. The callback runs on
        the :attr:`scheduler`'s thread: a slow one delays the callbacks after it, never the
        receiving; an exception is counted and warned about once. ValueError for an address
        that cannot be an OSC one (no leading ``/``, a space, ``#``: nothing would ever match
        it), and for one under ``/oscsync/``, oscsync's own (clock pings:
        ``docs/protocol.md``).
        """

        if not isinstance(address, str) or not _OSC_ADDRESS.fullmatch(address):
            raise ValueError(
                f"{address!r} is not an OSC address: it starts with '/' and has no spaces or '#'"
            )
        if address.startswith(OWN_ADDRESSES):
            raise ValueError(f"{address!r}: addresses under /oscsync/ are oscsync's own")

        def register(function: C) -> C:
            delivery = _Delivery(self, function, hold)
            self._handlers.add(address, delivery)
            # Listed for OSCQuery; what arrives still goes through _incoming (sync first).
            self.transport.registry.add_method(Method(address, types, description), self._receive)
            return function

        if callback is None:
            return register
        return register(callback)

    def remove(self, address: str) -> None:
        """Stop calling what :meth:`on` registered for ``address`` (the same string: a pattern
        is removed by its pattern). ValueError when nothing is registered there: a misspelt
        address would otherwise leave its callback running, silently."""
        if address not in self._handlers:
            raise ValueError(f"{address!r}: no callback is registered for it (see on())")
        self._handlers.remove(address)
        self.transport.registry.remove(address)

    def set_default_handler(self, callback: Callback | None, *, hold: bool = True) -> None:
        """Call ``callback`` for every message no :meth:`on` callback takes (python-osc's
        ``set_default_handler``); None sends them to :meth:`messages` again."""
        self._default = None if callback is None else _Delivery(self, callback, hold)

    def messages(self, timeout: float | None = None) -> Messages:
        """The messages no callback takes, in the order they are handed on (held bundles at
        their timetag): ``for received in endpoint.messages():`` in a thread, ``async for
        received in endpoint.messages():`` in a coroutine. The iteration ends when the endpoint
        closes, or after ``timeout`` seconds with nothing new. At most ``inbox_size`` wait
        unread, holding at most 32 MiB; more are counted (:attr:`dropped` ``inbox-full``)."""
        return Messages(self._inbox, timeout)

    def receive(self, timeout: float | None = None) -> Received | None:
        """The next message no callback takes, waiting at most ``timeout`` seconds (None:
        until one comes); None on timeout or once closed."""
        return self._inbox.get(timeout)

    def _incoming(self, received: Received) -> None:
        # The receive thread: find the deliveries and submit them; nothing of the user's runs.
        handlers = self._handlers
        address = received.message.address
        delivery = handlers.resolved.get(address) or handlers.lookup(address)
        if delivery is no_route:
            delivery = self._default or self._inbox_delivery
        delivery(received)

    def _not_taken(self, received: Received) -> None:
        self._count("no-inbox")

    def _deliver(self, received: Received, callback: Callback, hold: bool) -> None:
        stamp = received.message.timetag if hold else None

        def call(_: object) -> None:
            if not self._closed:  # a shared scheduler still holds it after close()
                callback(received)

        if not self.scheduler.submit(stamp, call, size=codec.footprint(received.message)):
            self._count("callback-refused")

    def _count(self, reason: str) -> None:
        with self._dropped_lock:
            self._dropped[reason] += 1

    # -- time -----------------------------------------------------------------------------------

    def call_at(self, timetag: int | None, function: Callable[..., object], *args: Any) -> bool:
        """Call ``function(*args)`` at ``timetag`` on the callbacks' thread (see
        :meth:`~oscsync.scheduler.Scheduler.call_at`)."""
        return self.scheduler.call_at(timetag, function, *args)

    def now(self) -> int:
        """This endpoint's clock as a timetag."""
        return self.clock.now_timetag()

    # -- reporting and closing ------------------------------------------------------------------

    @property
    def stats(self) -> TransportStats:
        """What the transport counted: datagrams, messages, bundles, sent, and what was
        dropped (``drops``) or could not be sent (``send_errors``), by reason."""
        return self.transport.stats

    @property
    def dropped(self) -> dict[str, int]:
        """Messages received but not handed on, by reason: ``callback-refused`` (the scheduler
        was full, or the timetag beyond its horizon: :meth:`Scheduler.stats` says which),
        ``inbox-full`` (:meth:`messages` not read fast enough), ``no-inbox`` (``inbox_size=0``:
        what no callback takes is not kept)."""
        with self._dropped_lock:
            counts = dict(self._dropped)
        if self._inbox.dropped:
            counts["inbox-full"] = self._inbox.dropped
        return counts

    def close(self) -> None:
        """Stop receiving, following and calling back; close the sockets. Callbacks still held
        are discarded (on a given ``scheduler`` too; one running there is not waited for).
        Safe to call twice."""
        self._closed = True
        # Callbacks first (one running is waited for), so none sends on a closed socket.
        scheduler = getattr(self, "scheduler", None)
        if scheduler is not None and self._own_scheduler:
            scheduler.close()
        sync = getattr(self, "sync", None)
        if sync is not None:
            sync.close()
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.close()
        self._inbox.close()

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Endpoint:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        peers = ", ".join(str(p) for p in self.peers)
        return f"<oscsync.Endpoint listen={self.local_address} peers=[{peers}]>"
