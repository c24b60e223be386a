"""Browsing and resolving: every OSC service on the network, as it comes and goes, or one by name.

:func:`browse` lists every OSC service (``_osc._udp``, ``_osc._tcp``, ``_oscjson._tcp``: ours and
anybody's) as :class:`Peer` records, :func:`watch` reports them as they come and go, and
:func:`resolve` turns ``NAME`` (what ``@NAME`` on the command line means) into a numeric
address, preferring one this machine can reach. What a browse remembers is bounded
(:data:`MAX_PEERS`); names and TXT records are cut as :mod:`oscsync.discovery.mdns` says.
"""

from __future__ import annotations

import contextlib
import ipaddress
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from oscsync.clock import Clock, SystemClock
from oscsync.discovery import mdns
from oscsync.net.hostport import Protocol

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

MAX_PEERS = 512
"""Services remembered by one browse: a flood of fake services cannot grow memory without bound."""


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
        return mdns.SERVICE_TYPES.get(self.service_type, self.service_type)

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


def _peer_from_info(info: ServiceInfo, service_type: str) -> Peer | None:
    if info.port is None:
        return None
    addresses = tuple(info.parsed_addresses(mdns.import_zeroconf().IPVersion.V4Only))
    return Peer(
        name=mdns.instance_name(info.name, service_type),
        service_type=service_type,
        host=(info.server or "")[:255],
        addresses=addresses[:16],
        port=info.port,
        txt=mdns.decode_txt(info.properties),
    )


class Collector:
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


def open_browser(zc: Zeroconf, types: list[str], collector: Collector) -> Any:
    module = mdns.import_zeroconf()
    return module.ServiceBrowser(
        zc, types, handlers=[collector.handler], question_type=module.DNSQuestionType.QM
    )


def resolve_info(zc: Zeroconf, service_type: str, name: str, timeout: float) -> Peer | None:
    """The service's address, port and TXT: from the cache when the browse answer carried them
    (it usually does), else asked for, waiting at most ``timeout`` seconds.

    :class:`UnreadableName` for a name python-zeroconf refuses to read (control characters:
    anyone on the network can announce one, issue 27, item 14)."""
    module = mdns.import_zeroconf()
    try:
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
    except module.BadTypeInNameException:
        raise UnreadableName(mdns.instance_name(name, service_type)) from None
    return _peer_from_info(info, service_type)


class UnreadableName(Exception):
    """A service whose name python-zeroconf refuses (``name``: as announced, not escaped)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def browse(
    interface: str | None = None,
    timeout: float = 2.0,
    types: tuple[str, ...] = tuple(mdns.SERVICE_TYPES),
    clock: Clock | None = None,
    unreadable: list[str] | None = None,
) -> list[Peer]:
    """Every service of ``types`` that answers within ``timeout`` seconds, sorted by name; the
    names of those that cannot be read are added to ``unreadable`` (as announced)."""
    clock = clock or SystemClock()
    zc = mdns.open_zeroconf(interface or mdns.default_interface(), unicast=True)
    try:
        collector = Collector()
        browser = open_browser(zc, list(types), collector)
        clock.sleep(timeout)
        browser.cancel()
        # Names whose details did not come with the answer are asked for, within one more
        # ``timeout`` in all: a flood of names pointing nowhere cannot keep the command waiting.
        deadline = clock.monotonic() + timeout
        found: list[Peer] = []
        for service_type, name in collector.snapshot():
            remaining = min(0.5, deadline - clock.monotonic())
            try:
                peer = resolve_info(zc, service_type, name, remaining)
            except UnreadableName as exc:
                if unreadable is not None:
                    unreadable.append(exc.name)
                continue
            if peer is not None:
                found.append(peer)
    finally:
        zc.close()
    return sorted(found, key=lambda p: (p.name.lower(), p.transport))


def watch(interface: str | None, on_change: Callable[[str, Peer | str], None]) -> Iterator[None]:
    """Report services as they come (``added``, a :class:`Peer`) and go (``removed``, a name);
    one whose name cannot be read is ``unreadable`` (its name, as announced).

    A generator: each step waits up to a quarter second; the caller loops until it wants to stop
    (so Ctrl-C is handled by the caller's main thread) and closing the generator closes zeroconf.
    ``interface`` None is :func:`~oscsync.discovery.mdns.default_interface`.
    """
    zc = mdns.open_zeroconf(interface or mdns.default_interface())
    try:
        collector = Collector()
        browser = open_browser(zc, list(mdns.SERVICE_TYPES), collector)
        try:
            while True:
                try:
                    state, service_type, name = collector.events.get(timeout=0.25)
                except queue.Empty:
                    yield None
                    continue
                if state == "Removed":
                    on_change(
                        "removed", f"{mdns.instance_name(name, service_type)} ({service_type})"
                    )
                else:
                    try:
                        peer = resolve_info(zc, service_type, name, 0.5)
                    except UnreadableName as exc:
                        on_change("unreadable", exc.name)
                        peer = None
                    if peer is not None:
                        on_change("added" if state == "Added" else "updated", peer)
                yield None
        finally:
            browser.cancel()
    finally:
        zc.close()


def preferred_address(addresses: tuple[str, ...]) -> str | None:
    """One of a peer's addresses: this machine's own, else one on a shared subnet, else first."""
    if not addresses:
        return None
    try:
        local = mdns.local_ipv4()
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

    Raises mdns.DiscoveryError listing what *was* found when nothing by that name answers in time.
    """
    clock = clock or SystemClock()
    wanted = mdns.check_name(name).lower()
    zc = mdns.open_zeroconf(interface or mdns.default_interface(), unicast=True)
    try:
        collector = Collector()
        browser = open_browser(zc, [mdns.OSC_UDP, mdns.OSC_TCP], collector)
        deadline = clock.monotonic() + timeout
        match: tuple[str, str] | None = None
        while match is None:
            for service_type, full in sorted(collector.snapshot(), key=_udp_first):
                if service_type in (mdns.OSC_UDP, mdns.OSC_TCP) and (
                    mdns.instance_name(full, service_type).lower() == wanted
                ):
                    match = (service_type, full)
                    break
            remaining = deadline - clock.monotonic()
            if match is not None or remaining <= 0:
                break
            collector.changed.clear()
            clock.wait(collector.changed, min(remaining, 0.25))
        browser.cancel()
        try:
            peer = None if match is None else resolve_info(zc, match[0], match[1], 1.0)
        except UnreadableName:
            peer = None
        seen = sorted({mdns.instance_name(full, t) for t, full in collector.snapshot()})
    finally:
        zc.close()
    address = None if peer is None else preferred_address(peer.addresses)
    if peer is None or address is None:
        listed = ", ".join(seen[:10]) + (", ..." if len(seen) > 10 else "")
        found = f"found: {listed}" if seen else "found no OSC services at all"
        raise mdns.DiscoveryError(
            f"no OSC peer named {name!r} answered within {timeout:g} s ({found})"
        )
    assert match is not None
    return address, peer.port, "tcp" if match[0] == mdns.OSC_TCP else "udp"


def _udp_first(item: tuple[str, str]) -> bool:
    return item[0] != mdns.OSC_UDP
