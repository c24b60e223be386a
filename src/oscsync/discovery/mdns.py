"""Multicast DNS as oscsync uses it: OSC service types, names, interfaces, TXT records, zeroconf.

Finding partners without typing addresses is DNS-SD over multicast DNS (python-zeroconf), in
four modules: this one holds what they share (the service types, checking a name and an
interface, where an advertisement goes, opening a :class:`~zeroconf.Zeroconf`, TXT records
within DNS-SD's limits); :mod:`oscsync.discovery.browsing` lists and resolves services
(``@NAME``), :mod:`oscsync.discovery.follower` follows an ``@NAME`` peer that moves, and
:mod:`oscsync.discovery.advertiser` advertises a listener (with its OSCQuery server,
:mod:`oscsync.discovery.oscquery`).

``zeroconf`` is imported inside the functions that need it, never at start-up
(tests/test_cli_help.py). Questions are sent as QM (multicast answers): on one machine several
mDNS sockets share port 5353, and a unicast answer to a QU question reaches only one of them
(measured: a QU browse took 1.1 s on loopback, a QM one 0.13 s).

Every name, host and TXT value comes from the network: they are bounded here and escaped by
whoever prints them (``oscsync.terminal.display.escape``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from oscsync.install import pip_command

if TYPE_CHECKING:
    from zeroconf import Zeroconf

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
MAX_SHOWN_TXT = 32
"""TXT keys kept from someone else's record."""


class DiscoveryError(Exception):
    """Discovery cannot do what was asked (zeroconf missing, no such peer, bad interface)."""


class OptionError(DiscoveryError):
    """A name, interface or listen address that cannot be advertised as given (a usage error)."""


def import_zeroconf() -> Any:
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
    zc = import_zeroconf()
    if interface in (AUTO, ALL):
        return zc.InterfaceChoice.All
    if interface == LOOPBACK:
        return ["127.0.0.1"]
    return [interface]


def local_ipv4() -> list[ipaddress.IPv4Interface]:
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
        mine = [str(i.ip) for i in local_ipv4() if not i.ip.is_loopback]
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
    It cannot hear announcements or goodbyes, so :func:`~oscsync.discovery.browsing.watch` uses
    a multicast instance.
    """
    zc = import_zeroconf()
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


def instance_name(full_name: str, service_type: str) -> str:
    """``alice`` from ``alice._osc._udp.local.``."""
    suffix = "." + service_type
    return full_name[: -len(suffix)] if full_name.lower().endswith(suffix.lower()) else full_name
