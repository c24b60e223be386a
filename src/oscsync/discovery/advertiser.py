"""Advertising a listener: ``NAME._osc._udp`` (or ``._tcp``) and its OSCQuery server, kept current.

:class:`Advertiser` chooses a name nobody on the network has (``NAME (2)`` otherwise), registers
``NAME._osc._udp`` (``NAME._osc._tcp`` for a TCP listener; the OSC port, TXT: oscsync version,
role, addresses, kept in step with the listener's registry) and ``NAME._oscjson._tcp`` (an
:class:`oscsync.discovery.oscquery.OscQueryServer`), and sends goodbye packets (TTL 0, RFC 6762
§10.1) when closed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import socket
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from oscsync import __version__
from oscsync.clock import Clock, SystemClock
from oscsync.discovery import mdns, oscquery
from oscsync.discovery.browsing import Collector, open_browser, resolve_info
from oscsync.stats import WarnOnce

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

    from oscsync.osc.routing import AddressRegistry

TXT_UPDATE_INTERVAL = 1.0
"""Seconds at least between two updates of an advertised TXT record. RFC 6762 §6: a record is
not multicast again within one second; python-zeroconf announces each update three times,
225 ms apart. A burst of registrations is one update: a change goes out at once when the last
announcement is this long ago, else when it is, with every change made meanwhile."""

NAME_CHECK_SECONDS = 0.3
"""How long to listen for existing services before choosing a name (legacy-unicast answers came
in 35-65 ms on loopback; the rest is margin for a loaded machine and a busy Wi-Fi). A conflict
answered later is still caught on another machine by python-zeroconf's probes (RFC 6762 §8.1,
about 1 s more), which rename to ``NAME-2``."""
NAME_ASK_SECONDS = 0.5
"""How long to ask for the wanted name itself when the browse did not hear it: a responder on a
loaded machine can answer after :data:`NAME_CHECK_SECONDS`, and on one machine python-zeroconf's
own probe does not see it (two listeners kept one name on a machine with both cores busy)."""
RENAME_ATTEMPTS = 20
REGISTER_TIMEOUT = 10.0
"""Seconds to wait for probing (about one) before giving up on advertising."""


def _choose_name(interface: str, wanted: str, clock: Clock) -> str:
    """``wanted``, or ``wanted (2)``, ``(3)``... if a service already has it (RFC 6762 §9).

    python-zeroconf's own probe asks with a QU question, whose unicast answer another process on
    the same machine may never see (shared port 5353: two `alice`s on one machine both kept the
    name), so the names in use are asked for first, with a legacy-unicast browse.
    """
    types = [mdns.OSC_UDP, mdns.OSC_TCP, mdns.OSC_JSON]
    zc = mdns.open_zeroconf(interface, unicast=True)
    try:
        collector = Collector()
        browser = open_browser(zc, types, collector)
        clock.sleep(NAME_CHECK_SECONDS)
        browser.cancel()
        taken = {mdns.instance_name(full, t).lower() for t, full in collector.snapshot()}
        if wanted.lower() not in taken:
            # Asked by name (a direct question each responder must answer), not only browsed.
            deadline = clock.monotonic() + NAME_ASK_SECONDS
            for service_type in types:
                remaining = deadline - clock.monotonic()
                full = f"{wanted}.{service_type}"
                if remaining > 0 and resolve_info(zc, service_type, full, remaining) is not None:
                    taken.add(wanted.lower())
                    break
    finally:
        zc.close()
    for number in range(1, RENAME_ATTEMPTS + 1):
        candidate = wanted if number == 1 else f"{wanted} ({number})"
        if candidate.lower() not in taken and len(candidate.encode()) <= mdns.MAX_NAME_BYTES:
            return candidate
    raise mdns.DiscoveryError(f"{wanted!r} and {RENAME_ATTEMPTS - 1} variants are all taken")


OSC_TRANSPORTS = {"udp": mdns.OSC_UDP, "tcp": mdns.OSC_TCP}
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
        self.wanted = mdns.check_name(name)
        if transport not in OSC_TRANSPORTS:
            raise mdns.OptionError(f"cannot advertise an OSC listener over {transport!r}")
        self.transport = transport
        self.service_type = OSC_TRANSPORTS[transport]
        self.allow = tuple(allow)
        self.name = self.wanted
        self.role = role
        self.port = port
        self.registry = registry
        self.methods = methods
        self.placement = mdns.placement(
            mdns.check_interface(interface or mdns.default_interface()), listen_host
        )
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
        addresses, left_out = mdns.addresses_txt(paths)
        if left_out:
            self._warn_once(
                "addresses",
                f"TXT addresses= lists {len(paths) - left_out} of {len(paths)} addresses, then "
                f"{mdns.MORE_ADDRESSES} (a TXT string holds {mdns.MAX_TXT_ITEM_BYTES} bytes, "
                "RFC 6763 §6.1); OSCQuery lists them all",
            )
        items = {
            "txtvers": "1",
            "oscsync": __version__,
            "role": self.role,
            "addresses": addresses,
            **self.extra_txt,
        }
        kept, warnings = mdns.build_txt(items)
        for warning in warnings:
            self._warn_once(warning, warning)
        return kept

    def start(self) -> Advertiser:
        """Choose a free name, start the OSCQuery server, register both services (blocking,
        about 2 s: the name check, then the probes of RFC 6762 §8.1)."""
        module = mdns.import_zeroconf()
        self.name = _choose_name(self.placement.interface, self.wanted, self.clock)
        self._zc = zc = mdns.open_zeroconf(self.placement.interface)
        try:
            self._publish(module, zc)
        except BaseException:
            # Nothing outlives a failed start: zeroconf's threads, the OSCQuery server, the
            # registry watch (``with Advertiser(...)`` never reaches __exit__ then).
            self.close()
            raise
        return self

    def _publish(self, module: Any, zc: Zeroconf) -> None:
        """Start the OSCQuery server and register both services on ``zc``."""
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
            raise mdns.DiscoveryError(f"cannot start the OSCQuery server: {exc.strerror}") from None
        addresses = [socket.inet_aton(a) for a in self.placement.addresses]
        if self.registry is not None:  # before the first TXT: no change falls in between
            self._unwatch = self.registry.watch(self._registry_changed.set)
        txt = self._announced_txt = self.txt()
        for service_type, port, properties in (
            (self.service_type, self.port, txt),
            (mdns.OSC_JSON, self.http.port, {"txtvers": "1", "oscsync": __version__}),
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
            raise mdns.DiscoveryError(
                f"cannot advertise {self.name!r}: {exc or 'timed out'}"
            ) from None
        # python-zeroconf renames on a conflict it sees in its own cache ("alice-2").
        self.name = mdns.instance_name(self._infos[0].name, self.service_type)
        if self.registry is not None:
            from oscsync import threads

            self._updater = threads.daemon_thread(self._follow_registry, name="oscsync-txt")
            threads.start(self._updater)

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
        module = mdns.import_zeroconf()
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
