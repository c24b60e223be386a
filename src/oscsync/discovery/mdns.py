"""Finding partners without typing addresses: DNS-SD over multicast DNS (python-zeroconf).

* :class:`Advertiser` registers ``NAME._osc._udp`` (``NAME._osc._tcp`` for a TCP listener; the
  OSC port, TXT: oscsync version, role, addresses, kept in step with the listener's registry)
  and ``NAME._oscjson._tcp`` (an :class:`oscsync.discovery.oscquery.OscQueryServer`), and sends
  goodbye packets (TTL 0, RFC 6762 §10.1) when closed.
* :func:`browse` lists every OSC service (``_osc._udp``, ``_osc._tcp``, ``_oscjson._tcp``: ours
  and anybody's), :func:`watch` reports them as they come and go, :func:`resolve` turns ``NAME``
  (what ``@NAME`` on the command line means) into a numeric address.

``zeroconf`` is imported inside the functions that need it, never at start-up
(tests/test_cli_help.py). Questions are sent as QM (multicast answers): on one machine several
mDNS sockets share port 5353, and a unicast answer to a QU question reaches only one of them
(measured: a QU browse took 1.1 s on loopback, a QM one 0.13 s).

Every name, host and TXT value comes from the network: they are bounded here and escaped by
whoever prints them (``oscsync.terminal.display.escape``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ipaddress
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oscsync import __version__
from oscsync.clock import Clock, SystemClock
from oscsync.discovery import oscquery
from oscsync.install import pip_command
from oscsync.net.hostport import Protocol
from oscsync.stats import WarnOnce

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

    from oscsync.osc.routing import AddressRegistry

OSC_UDP = "_osc._udp.local."
OSC_TCP = "_osc._tcp.local."
OSC_JSON = "_oscjson._tcp.local."
SERVICE_TYPES = {OSC_UDP: "udp", OSC_TCP: "tcp", OSC_JSON: "oscjson"}
"""Every OSC service type, with the transport ``peers`` shows for it (OSCQueryProposal #46:
apps advertise ``_osc._udp`` next to ``_oscjson._tcp``)."""

INSTALL_HINT = f"{pip_command()} install zeroconf"  # the pip of this oscsync (issue #13)

MAX_NAME_BYTES = 63
"""An instance name is one DNS label (RFC 6763 §4.1.1)."""
MAX_TXT_ITEM_BYTES = 255
"""Each TXT string carries a one-byte length (RFC 6763 §6.1)."""
MAX_TXT_BYTES = 1300
"""RFC 6763 §6.2: TXT records above 1300 bytes are not recommended (one packet)."""
MORE_ADDRESSES = "..."
"""The last entry of a TXT ``addresses=`` list that had to leave addresses out (no OSC
address contains a comma or is ``...``); OSCQuery lists them all."""
TXT_UPDATE_INTERVAL = 1.0
"""Seconds at least between two updates of an advertised TXT record. RFC 6762 §6: a record is
not multicast again within one second; python-zeroconf announces each update three times,
225 ms apart. A burst of registrations is one update: a change goes out at once when the last
announcement is this long ago, else when it is, with every change made meanwhile."""
MAX_PEERS = 512
"""Services remembered by one browse: a flood of fake services cannot grow memory without bound."""
MAX_SHOWN_TXT = 32
"""TXT keys kept from someone else's record."""

NAME_CHECK_SECONDS = 0.3
"""How long to listen for existing services before choosing a name (legacy-unicast answers came
in 35-65 ms on loopback; the rest is margin for a loaded machine and a busy Wi-Fi). A conflict
answered later is still caught on another machine by python-zeroconf's probes (RFC 6762 §8.1,
about 1 s more), which rename to ``NAME-2``."""
RENAME_ATTEMPTS = 20
REGISTER_TIMEOUT = 10.0
"""Seconds to wait for probing (about one) before giving up on advertising."""


class DiscoveryError(Exception):
    """Discovery cannot do what was asked (zeroconf missing, no such peer, bad interface)."""


class OptionError(DiscoveryError):
    """A name, interface or listen address that cannot be advertised as given (a usage error)."""


def _zeroconf() -> Any:
    try:
        import zeroconf
    except ImportError:
        raise DiscoveryError(
            f"finding peers by name needs python-zeroconf: {INSTALL_HINT}"
        ) from None
    return zeroconf


# -- names and interfaces -------------------------------------------------------------------


def check_name(text: str) -> str:
    """``text`` if it can be a DNS-SD instance name, else DiscoveryError saying why."""
    name = text.strip()
    if not name:
        raise OptionError("a name is needed, e.g. alice")
    if not name.isprintable() or "." in name:
        raise OptionError(f"{name!r}: use letters, digits, spaces, - and _ (no dots)")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise OptionError(f"{name[:20]!r}...: names are at most {MAX_NAME_BYTES} bytes")
    return name


AUTO = "auto"
ALL = "all"
LOOPBACK = "loopback"

INTERFACE_ENV = "OSCSYNC_MDNS_INTERFACE"
"""The environment variable that chooses the mDNS interface wherever none is given: ``@NAME``
resolution, ``peers``, following a name, advertising (issue 27: the test suite sets it to
``loopback`` so that no test sends mDNS out of the machine)."""


def default_interface() -> str:
    """The interface mDNS uses when a caller names none: ``$OSCSYNC_MDNS_INTERFACE``, else
    ``auto`` (browsing: every interface; advertising: where the listener is bound)."""
    return check_interface(os.environ.get(INTERFACE_ENV) or AUTO)


def check_interface(text: str) -> str:
    """``auto``, ``all``, ``loopback`` or an IPv4 address of this machine's interface."""
    value = text.strip().lower()
    if value in (AUTO, ALL, LOOPBACK):
        return value
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise OptionError(
            f"{text!r} is not auto, all, loopback or an interface's IPv4 address"
        ) from None
    if address.version != 4:
        raise OptionError(f"{text!r}: only IPv4 interfaces are supported for discovery")
    return str(address)


def _zeroconf_interfaces(interface: str) -> Any:
    zc = _zeroconf()
    if interface in (AUTO, ALL):
        return zc.InterfaceChoice.All
    if interface == LOOPBACK:
        return ["127.0.0.1"]
    return [interface]


def _local_ipv4() -> list[ipaddress.IPv4Interface]:
    import ifaddr  # installed with zeroconf

    found: list[ipaddress.IPv4Interface] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4:
                found.append(ipaddress.IPv4Interface(f"{ip.ip}/{ip.network_prefix}"))
    return found


@dataclass(frozen=True)
class Placement:
    """Where an advertisement goes: mDNS interfaces, advertised addresses, OSCQuery bind host."""

    interface: str
    addresses: tuple[str, ...]
    http_host: str


def placement(interface: str, listen_host: str) -> Placement:
    """Match ``--interface`` with the address the listener is bound to.

    A listener on 127.0.0.1 is advertised on loopback only (``auto``): announcing it on Wi-Fi
    would send peers to an address they cannot reach. A listener on 0.0.0.0 is advertised with
    this machine's non-loopback addresses (a remote peer must never be told 127.0.0.1).
    """
    try:
        listen = ipaddress.ip_address(listen_host.split("%")[0])
    except ValueError:
        raise OptionError(f"cannot advertise a listener on {listen_host!r}") from None
    if listen.version != 4:
        raise OptionError("advertising supports IPv4 listeners only (e.g. --listen 0.0.0.0:9001)")
    if listen.is_multicast:
        raise OptionError("a multicast group cannot be advertised: listen on a unicast address")
    if listen.is_loopback:
        if interface not in (AUTO, LOOPBACK):
            raise OptionError(
                f"--listen {listen} accepts OSC from this machine only, so it is advertised on "
                "loopback only: use --listen 0.0.0.0:PORT to be reachable from other machines"
            )
        return Placement(LOOPBACK, (str(listen),), str(listen))
    if listen.is_unspecified:
        if interface == LOOPBACK:
            return Placement(LOOPBACK, ("127.0.0.1",), "127.0.0.1")
        if interface not in (AUTO, ALL):
            return Placement(interface, (interface,), interface)
        mine = [str(i.ip) for i in _local_ipv4() if not i.ip.is_loopback]
        if not mine:
            return Placement(LOOPBACK, ("127.0.0.1",), "127.0.0.1")
        return Placement(ALL, tuple(dict.fromkeys(mine)), "0.0.0.0")
    if interface == LOOPBACK or (interface not in (AUTO, ALL) and interface != str(listen)):
        raise OptionError(
            f"--listen {listen} is not on interface {interface}: advertise where you listen"
        )
    return Placement(str(listen), (str(listen),), str(listen))


def open_zeroconf(interface: str, *, unicast: bool = False) -> Zeroconf:
    """A Zeroconf instance on ``interface`` (IPv4), or DiscoveryError naming the problem.

    ``unicast=True`` asks from an ephemeral port, so responders answer straight to it (legacy
    unicast, RFC 6762 §6.7): no 1-second multicast rate limit (§6) and no shared port 5353 that
    hands the answer to another process. Measured on loopback: both services of an advertiser
    found in 35-65 ms every time, where back-to-back multicast browses missed one or both.
    It cannot hear announcements or goodbyes, so :func:`watch` uses a multicast instance.
    """
    zc = _zeroconf()
    try:
        return zc.Zeroconf(  # type: ignore[no-any-return]
            interfaces=_zeroconf_interfaces(interface),
            ip_version=zc.IPVersion.V4Only,
            unicast=unicast,
        )
    except OSError as exc:
        raise DiscoveryError(
            f"cannot use multicast DNS on {interface}: {exc.strerror or exc}"
        ) from None


# -- TXT records -----------------------------------------------------------------------------


def build_txt(items: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """TXT items within DNS-SD's limits, and a warning for each one refused or truncated.

    A ``key=value`` over 255 bytes is cut at a character boundary; items that would take the
    record past 1300 bytes are left out (the earlier items are the ones that matter: version,
    role).
    """
    kept: dict[str, str] = {}
    warnings: list[str] = []
    total = 0
    for key, value in items.items():
        room = MAX_TXT_ITEM_BYTES - len(key.encode()) - 1
        if room < 0:
            warnings.append(f"TXT key {key[:20]!r}... is too long: left out")
            continue
        encoded = value.encode()
        if len(encoded) > room:
            value = encoded[:room].decode(errors="ignore")
            warnings.append(
                f"TXT {key}= is {len(encoded)} bytes: truncated to {len(value.encode())} "
                f"(a TXT string holds {MAX_TXT_ITEM_BYTES} bytes, RFC 6763 §6.1)"
            )
        size = 1 + len(key.encode()) + 1 + len(value.encode())
        if total + size > MAX_TXT_BYTES:
            warnings.append(
                f"TXT {key}= left out: the record would pass {MAX_TXT_BYTES} bytes (RFC 6763 §6.2)"
            )
            continue
        kept[key] = value
        total += size
    return kept, warnings


def addresses_txt(paths: Sequence[str]) -> tuple[str, int]:
    """The TXT ``addresses=`` value for ``paths`` (``*``: none listed) and how many were left
    out: whole addresses only, as many as fit one TXT string (RFC 6763 §6.1), then
    :data:`MORE_ADDRESSES` when some did not fit (cutting at a byte count would advertise an
    address nobody answers to)."""
    room = MAX_TXT_ITEM_BYTES - len(b"addresses=")
    whole = ",".join(paths) or "*"
    if len(whole.encode()) <= room:
        return whole, 0
    kept: list[str] = []
    size = len(MORE_ADDRESSES)
    for path in paths:
        extra = len(path.encode()) + 1  # and its comma
        if size + extra > room:
            break
        kept.append(path)
        size += extra
    return ",".join([*kept, MORE_ADDRESSES]), len(paths) - len(kept)


def decode_txt(properties: dict[bytes, bytes | None]) -> dict[str, str]:
    """Someone else's TXT record as text: at most :data:`MAX_SHOWN_TXT` keys, values cut."""
    decoded: dict[str, str] = {}
    for key, value in list(properties.items())[:MAX_SHOWN_TXT]:
        text = b"" if value is None else value
        decoded[key.decode(errors="replace")[:64]] = text.decode(errors="replace")[:255]
    return decoded


# -- what a browse finds ---------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    """One service found on the network."""

    name: str
    service_type: str
    host: str
    addresses: tuple[str, ...]
    port: int
    txt: dict[str, str] = field(default_factory=dict)

    @property
    def transport(self) -> str:
        return SERVICE_TYPES.get(self.service_type, self.service_type)

    @property
    def role(self) -> str:
        return self.txt.get("role", "")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.service_type.removesuffix(".local.").removesuffix("."),
            "transport": self.transport,
            "host": self.host,
            "addresses": list(self.addresses),
            "port": self.port,
            "role": self.role,
            "txt": self.txt,
        }


def instance_name(full_name: str, service_type: str) -> str:
    """``alice`` from ``alice._osc._udp.local.``."""
    suffix = "." + service_type
    return full_name[: -len(suffix)] if full_name.lower().endswith(suffix.lower()) else full_name


def _peer_from_info(info: ServiceInfo, service_type: str) -> Peer | None:
    if info.port is None:
        return None
    addresses = tuple(info.parsed_addresses(_zeroconf().IPVersion.V4Only))
    return Peer(
        name=instance_name(info.name, service_type),
        service_type=service_type,
        host=(info.server or "")[:255],
        addresses=addresses[:16],
        port=info.port,
        txt=decode_txt(info.properties),
    )


class _Collector:
    """Names seen by a ServiceBrowser (called on zeroconf's thread), bounded."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.names: dict[tuple[str, str], None] = {}
        self.changed = threading.Event()
        self.events: queue.Queue[tuple[str, str, str]] = queue.Queue(maxsize=MAX_PEERS)

    def handler(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        state = str(state_change.name)
        with self.lock:
            if state == "Removed":
                self.names.pop((service_type, name), None)
            elif len(self.names) < MAX_PEERS:
                self.names[(service_type, name)] = None
        self.changed.set()
        with contextlib.suppress(queue.Full):  # a flood of events: the oldest ones matter
            self.events.put_nowait((state, service_type, name))

    def snapshot(self) -> list[tuple[str, str]]:
        with self.lock:
            return list(self.names)


def _browser(zc: Zeroconf, types: list[str], collector: _Collector) -> Any:
    module = _zeroconf()
    return module.ServiceBrowser(
        zc, types, handlers=[collector.handler], question_type=module.DNSQuestionType.QM
    )


def _resolve_info(zc: Zeroconf, service_type: str, name: str, timeout: float) -> Peer | None:
    """The service's address, port and TXT: from the cache when the browse answer carried them
    (it usually does), else asked for, waiting at most ``timeout`` seconds."""
    module = _zeroconf()
    info = module.ServiceInfo(service_type, name)
    if not info.load_from_cache(zc):
        if timeout <= 0:
            return None
        found = zc.get_service_info(
            service_type,
            name,
            timeout=int(timeout * 1000),
            question_type=module.DNSQuestionType.QM,
        )
        if found is None:
            return None
        info = found
    return _peer_from_info(info, service_type)


def browse(
    interface: str | None = None,
    timeout: float = 2.0,
    types: tuple[str, ...] = tuple(SERVICE_TYPES),
    clock: Clock | None = None,
) -> list[Peer]:
    """Every service of ``types`` that answers within ``timeout`` seconds, sorted by name."""
    clock = clock or SystemClock()
    zc = open_zeroconf(interface or default_interface(), unicast=True)
    try:
        collector = _Collector()
        browser = _browser(zc, list(types), collector)
        clock.sleep(timeout)
        browser.cancel()
        # Names whose details did not come with the answer are asked for, within one more
        # ``timeout`` in all: a flood of names pointing nowhere cannot keep the command waiting.
        deadline = clock.monotonic() + timeout
        found: list[Peer] = []
        for service_type, name in collector.snapshot():
            remaining = min(0.5, deadline - clock.monotonic())
            if (peer := _resolve_info(zc, service_type, name, remaining)) is not None:
                found.append(peer)
    finally:
        zc.close()
    return sorted(found, key=lambda p: (p.name.lower(), p.transport))


def watch(interface: str | None, on_change: Callable[[str, Peer | str], None]) -> Iterator[None]:
    """Report services as they come (``added``, a :class:`Peer`) and go (``removed``, a name).

    A generator: each step waits up to a quarter second; the caller loops until it wants to stop
    (so Ctrl-C is handled by the caller's main thread) and closing the generator closes zeroconf.
    ``interface`` None is :func:`default_interface`.
    """
    zc = open_zeroconf(interface or default_interface())
    try:
        collector = _Collector()
        browser = _browser(zc, list(SERVICE_TYPES), collector)
        try:
            while True:
                try:
                    state, service_type, name = collector.events.get(timeout=0.25)
                except queue.Empty:
                    yield None
                    continue
                if state == "Removed":
                    on_change("removed", f"{instance_name(name, service_type)} ({service_type})")
                else:
                    peer = _resolve_info(zc, service_type, name, 0.5)
                    if peer is not None:
                        on_change("added" if state == "Added" else "updated", peer)
                yield None
        finally:
            browser.cancel()
    finally:
        zc.close()


def _preferred_address(addresses: tuple[str, ...]) -> str | None:
    """One of a peer's addresses: this machine's own, else one on a shared subnet, else first."""
    if not addresses:
        return None
    try:
        local = _local_ipv4()
    except Exception:  # ifaddr failing must not stop a send: fall back to the first address
        return addresses[0]
    own = {str(i.ip) for i in local}
    for address in addresses:
        if address in own:
            return address
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if any(ip in i.network for i in local if not i.ip.is_loopback):
            return address
    return addresses[0]


def resolve(
    name: str, interface: str | None = None, timeout: float = 3.0, clock: Clock | None = None
) -> tuple[str, int, Protocol]:
    """``(address, port, protocol)`` of the ``_osc._udp`` or ``_osc._tcp`` service called
    ``name`` (case-insensitive; UDP if both answer).

    Raises DiscoveryError listing what *was* found when nothing by that name answers in time.
    """
    clock = clock or SystemClock()
    wanted = check_name(name).lower()
    zc = open_zeroconf(interface or default_interface(), unicast=True)
    try:
        collector = _Collector()
        browser = _browser(zc, [OSC_UDP, OSC_TCP], collector)
        deadline = clock.monotonic() + timeout
        match: tuple[str, str] | None = None
        while match is None:
            for service_type, full in sorted(collector.snapshot(), key=_udp_first):
                if service_type in (OSC_UDP, OSC_TCP) and (
                    instance_name(full, service_type).lower() == wanted
                ):
                    match = (service_type, full)
                    break
            remaining = deadline - clock.monotonic()
            if match is not None or remaining <= 0:
                break
            collector.changed.clear()
            clock.wait(collector.changed, min(remaining, 0.25))
        browser.cancel()
        peer = None if match is None else _resolve_info(zc, match[0], match[1], 1.0)
        seen = sorted({instance_name(full, t) for t, full in collector.snapshot()})
    finally:
        zc.close()
    address = None if peer is None else _preferred_address(peer.addresses)
    if peer is None or address is None:
        listed = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "")
        found = f"found: {listed}" if seen else "found no OSC services at all"
        raise DiscoveryError(f"no OSC peer named {name!r} answered within {timeout:g} s ({found})")
    assert match is not None
    return address, peer.port, "tcp" if match[0] == OSC_TCP else "udp"


def _udp_first(item: tuple[str, str]) -> bool:
    return item[0] != OSC_UDP


Moved = Callable[[str, tuple[str, int]], None]
"""``on_move(name, (address, port))``: an ``@NAME`` peer now answers at another address or port."""


class PeerFollower:
    """Follows ``@NAME`` peers after the start: when one re-registers elsewhere (restarted on
    another port, moved to another machine), ``on_move(name, (address, port))`` is called.

    A multicast ServiceBrowser on ``_osc._udp`` hears the new announcement (RFC 6762 §8.3:
    a responder announces at start, and again when a record changes). The browser's handler
    only notes which followed name changed (a set no larger than the names followed, however
    many announcements arrive); this object's own thread resolves it from the cache, so
    zeroconf's thread never waits on the network, and the last announcement is what counts.
    A goodbye (the peer stopped) moves nothing: the peer may come back at the same address,
    and a send to a stopped peer is only counted. ``current`` maps each followed name to the
    address it was resolved to at start; ``protocols`` names the peers that were found as
    ``_osc._tcp`` (``"tcp"``): those are followed on ``_osc._tcp``, the others on ``_osc._udp``.
    """

    def __init__(
        self,
        current: dict[str, tuple[str, int]],
        on_move: Moved,
        interface: str | None = None,
        protocols: dict[str, str] | None = None,
    ) -> None:
        self._current = {check_name(name).lower(): where for name, where in current.items()}
        self._names = {check_name(name).lower(): name for name in current}
        tcp = {
            check_name(name).lower() for name, kind in (protocols or {}).items() if kind == "tcp"
        }
        self._types = {key: OSC_TCP if key in tcp else OSC_UDP for key in self._current}
        self.on_move = on_move
        self.interface = check_interface(interface or default_interface())
        self.moves = 0
        self._lock = threading.Lock()
        self._changed: dict[str, str] = {}  # followed name (lower case) -> its full DNS-SD name
        self._wake = threading.Event()
        self._stopped = False
        self._zc: Zeroconf | None = None
        self._browser: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> PeerFollower:
        from oscsync import threads

        module = _zeroconf()
        self._zc = zc = open_zeroconf(self.interface)
        self._thread = threads.daemon_thread(self._run, name="oscsync-peer-follower")
        threads.start(self._thread)
        self._browser = module.ServiceBrowser(
            zc,
            sorted(set(self._types.values())),
            handlers=[self._on_change],
            question_type=module.DNSQuestionType.QM,
        )
        return self

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if str(state_change.name) == "Removed":
            return
        key = instance_name(name, service_type).lower()
        if key in self._current and service_type.lower() == self._types[key].lower():
            with self._lock:
                self._changed[key] = name
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                changed, self._changed = self._changed, {}
            zc = self._zc
            if self._stopped or zc is None:
                return
            for key, full in changed.items():
                try:
                    peer = _resolve_info(zc, self._types[key], full, 1.0)
                except Exception:  # zeroconf closing under us, or a record it cannot parse
                    continue
                address = None if peer is None else _preferred_address(peer.addresses)
                if peer is None or address is None or self._current[key] == (address, peer.port):
                    continue
                self._current[key] = (address, peer.port)
                self.moves += 1
                self.on_move(self._names[key], (address, peer.port))

    def close(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            browser.cancel()
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(2.0)
        zc, self._zc = self._zc, None
        if zc is not None:
            zc.close()

    def __enter__(self) -> PeerFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- advertising -----------------------------------------------------------------------------


def _choose_name(interface: str, wanted: str, clock: Clock) -> str:
    """``wanted``, or ``wanted (2)``, ``(3)``... if a service already has it (RFC 6762 §9).

    python-zeroconf's own probe asks with a QU question, whose unicast answer another process on
    the same machine may never see (shared port 5353: two `alice`s on one machine both kept the
    name), so the names in use are asked for first, with a legacy-unicast browse.
    """
    zc = open_zeroconf(interface, unicast=True)
    try:
        collector = _Collector()
        browser = _browser(zc, [OSC_UDP, OSC_TCP, OSC_JSON], collector)
        clock.sleep(NAME_CHECK_SECONDS)
        browser.cancel()
    finally:
        zc.close()
    taken = {instance_name(full, t).lower() for t, full in collector.snapshot()}
    for number in range(1, RENAME_ATTEMPTS + 1):
        candidate = wanted if number == 1 else f"{wanted} ({number})"
        if candidate.lower() not in taken and len(candidate.encode()) <= MAX_NAME_BYTES:
            return candidate
    raise DiscoveryError(f"{wanted!r} and {RENAME_ATTEMPTS - 1} variants are all taken")


OSC_TRANSPORTS = {"udp": OSC_UDP, "tcp": OSC_TCP}
"""The OSC service type for a listener's transport (OSC 1.1 / OSCQueryProposal #46)."""


class Advertiser:
    """Advertises one listener: ``_osc._udp`` (``_osc._tcp`` for a TCP listener) and
    ``_oscjson._tcp`` (OSCQuery) under one name.

    OSCQuery describes ``registry``, the listener's endpoint's live address registry, as it is
    at each request (an address the command registers later is listed then), so there is no
    second table of addresses to keep in step. The TXT record's ``addresses=`` follows it too:
    a change is announced again (``update_service``), at most once per
    :data:`TXT_UPDATE_INTERVAL`, by a thread of its own. Without a registry (``peers advertise``
    for a patch, or ``record``, which answers nothing) it lists ``methods``, by default none.
    """

    def __init__(
        self,
        name: str,
        *,
        role: str,
        port: int,
        listen_host: str,
        interface: str | None = None,
        registry: AddressRegistry | None = None,
        methods: tuple[oscquery.OscMethod, ...] = (),
        extra_txt: dict[str, str] | None = None,
        clock: Clock | None = None,
        warn: Callable[[str], None] = lambda text: None,
        allow: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network] = (),
        transport: str = "udp",
    ) -> None:
        self.wanted = check_name(name)
        if transport not in OSC_TRANSPORTS:
            raise OptionError(f"cannot advertise an OSC listener over {transport!r}")
        self.transport = transport
        self.service_type = OSC_TRANSPORTS[transport]
        self.allow = tuple(allow)
        self.name = self.wanted
        self.role = role
        self.port = port
        self.registry = registry
        self.methods = methods
        self.placement = placement(check_interface(interface or default_interface()), listen_host)
        self.extra_txt = extra_txt or {}
        self.clock = clock or SystemClock()
        self.warn = warn
        self.http: oscquery.OscQueryServer | None = None
        self.txt_updates = 0
        """TXT records announced again because the registry changed (at most one per
        :data:`TXT_UPDATE_INTERVAL`)."""
        self._zc: Zeroconf | None = None
        self._infos: list[ServiceInfo] = []
        self._warn_once = WarnOnce(warn)
        self._registry_changed = threading.Event()
        self._closing = threading.Event()
        self._unwatch: Callable[[], None] | None = None
        self._updater: threading.Thread | None = None
        self._announced_txt: dict[str, str] = {}

    @property
    def renamed(self) -> bool:
        return self.name != self.wanted

    def answers_to(self) -> tuple[oscquery.OscMethod, ...]:
        """What the listener answers to now: its endpoint's live registry when given (what
        OSCQuery lists, request by request), else ``methods`` (a patch advertised for it)."""
        return self.methods if self.registry is None else self.registry.methods()

    def txt(self) -> dict[str, str]:
        """The ``_osc`` service's TXT items now (``addresses=``: what :meth:`answers_to`
        lists); each warning about them is given once."""
        paths = [m.path for m in oscquery.listed(self.answers_to())]
        addresses, left_out = addresses_txt(paths)
        if left_out:
            self._warn_once(
                "addresses",
                f"TXT addresses= lists {len(paths) - left_out} of {len(paths)} addresses, then "
                f"{MORE_ADDRESSES} (a TXT string holds {MAX_TXT_ITEM_BYTES} bytes, RFC 6763 "
                "§6.1); OSCQuery lists them all",
            )
        items = {
            "txtvers": "1",
            "oscsync": __version__,
            "role": self.role,
            "addresses": addresses,
            **self.extra_txt,
        }
        kept, warnings = build_txt(items)
        for warning in warnings:
            self._warn_once(warning, warning)
        return kept

    def start(self) -> Advertiser:
        """Choose a free name, start the OSCQuery server, register both services (blocking,
        about 1.4 s: the name check, then the probes of RFC 6762 §8.1)."""
        module = _zeroconf()
        self.name = _choose_name(self.placement.interface, self.wanted, self.clock)
        self._zc = zc = open_zeroconf(self.placement.interface)
        description = oscquery.ROLE_ROOT_DESCRIPTION.get(self.role, f"oscsync {self.role}")
        tree: oscquery.Namespace = (
            oscquery.namespace(self.methods, description)
            if self.registry is None
            else oscquery.LiveNamespace(self.registry, description)
        )
        try:
            self.http = oscquery.OscQueryServer(
                self.placement.http_host,
                tree,
                oscquery.host_info(self.name, self.port, self.transport.upper()),
                clock=self.clock,
                allow=self.allow,
            ).start()
        except OSError as exc:
            raise DiscoveryError(f"cannot start the OSCQuery server: {exc.strerror}") from None
        addresses = [socket.inet_aton(a) for a in self.placement.addresses]
        if self.registry is not None:  # before the first TXT: no change falls in between
            self._unwatch = self.registry.watch(self._registry_changed.set)
        txt = self._announced_txt = self.txt()
        for service_type, port, properties in (
            (self.service_type, self.port, txt),
            (OSC_JSON, self.http.port, {"txtvers": "1", "oscsync": __version__}),
        ):
            self._infos.append(
                module.ServiceInfo(
                    service_type,
                    f"{self.name}.{service_type}",
                    port=port,
                    properties=properties,
                    addresses=addresses,
                )
            )

        async def register_all() -> None:
            # Both probed at once (~1 s of RFC 6762 §8.1 probing, not 2); the announcements
            # that follow go out on zeroconf's own loop.
            await asyncio.gather(
                *(zc.async_register_service(info, allow_name_change=True) for info in self._infos)
            )

        assert zc.loop is not None
        future = asyncio.run_coroutine_threadsafe(register_all(), zc.loop)
        try:
            future.result(REGISTER_TIMEOUT)
        except (module.Error, concurrent.futures.TimeoutError) as exc:
            future.cancel()
            raise DiscoveryError(f"cannot advertise {self.name!r}: {exc or 'timed out'}") from None
        # python-zeroconf renames on a conflict it sees in its own cache ("alice-2").
        self.name = instance_name(self._infos[0].name, self.service_type)
        if self.registry is not None:
            from oscsync import threads

            self._updater = threads.daemon_thread(self._follow_registry, name="oscsync-txt")
            threads.start(self._updater)
        return self

    def _follow_registry(self) -> None:
        """Announce the TXT record again when the registry's addresses change, at most once per
        :data:`TXT_UPDATE_INTERVAL` counted from the registration's own announcements too (a
        burst is one update)."""
        clock = self.clock
        while not clock.wait(self._closing, TXT_UPDATE_INTERVAL):
            clock.wait(self._registry_changed, None)  # close() sets it too
            if self._closing.is_set():
                return
            self._registry_changed.clear()
            self._update_txt()

    def _update_txt(self) -> None:
        zc, current = self._zc, self._infos[0] if self._infos else None
        if zc is None or current is None:
            return
        txt = self.txt()
        if txt == self._announced_txt:
            return  # what changed is not in the TXT record (a pattern, the same addresses)
        module = _zeroconf()
        info = module.ServiceInfo(
            current.type,
            current.name,
            port=current.port,
            properties=txt,
            addresses=current.addresses,
            server=current.server,
        )
        try:
            zc.update_service(info)  # blocks while it announces (~0.45 s)
        except Exception as exc:  # zeroconf closing under us, or its loop too busy
            self._warn_once("update", f"cannot announce the new TXT addresses=: {exc}")
            return
        self._infos[0] = info
        self._announced_txt = txt
        self.txt_updates += 1

    def close(self) -> None:
        """Unregister (goodbye packets, TTL 0) and stop the OSCQuery server."""
        self._closing.set()
        self._registry_changed.set()
        if self._unwatch is not None:
            self._unwatch()
        updater = self._updater
        if updater is not None and updater is not threading.current_thread():
            updater.join(2.0)  # an update in progress ends before the goodbye
        zc, self._zc = self._zc, None
        if zc is not None:
            try:
                if self._infos:
                    zc.unregister_all_services()
            finally:
                zc.close()
        if self.http is not None:
            self.http.close()
            self.http = None

    def describe(self) -> str:
        where = ", ".join(f"{a}:{self.port}" for a in self.placement.addresses)
        text = f"advertised as {self.name!r} ({where}, {self.transport}"
        if self.http is not None:
            text += f"; OSCQuery on http port {self.http.port}"
        text += f") on {self.placement.interface}"
        if self.renamed:
            text = (
                f"the name {self.wanted!r} is taken on this network: {text}; "
                f"peers reach it as @{self.name!r}"
            )
        return text

    def __enter__(self) -> Advertiser:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
