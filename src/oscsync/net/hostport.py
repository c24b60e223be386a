"""``[HOST:]PORT`` text to socket addresses: parsed once, resolved once, with one-line errors.

An address may name its transport as a URL: ``udp://HOST:PORT``, ``tcp://HOST:PORT``, or liblo's
``osc.udp://HOST:PORT`` and ``osc.tcp://HOST:PORT`` (a trailing ``/``, as liblo prints its URLs, is
accepted). A bare ``[HOST:]PORT`` is UDP (issue #16).

A TCP URL may also say how packets to that peer are framed (issue 28): ``tcp+size://`` (OSC 1.0's
int32 size prefix: scsynth speaks only that), ``tcp+slip://`` (OSC 1.1's SLIP), and
``osc.tcp://`` frames as liblo's own clients do (a size prefix). A plain ``tcp://`` leaves it to
the command (``--framing``, SLIP by default).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from oscsync.net.framing import Framing

DEFAULT_HOST = "127.0.0.1"
"""Listeners bind to loopback unless told otherwise: a workshop laptop on venue Wi-Fi should not
accept OSC from the whole room by accident."""


Protocol = Literal["udp", "tcp"]

_SCHEMES: dict[str, tuple[Protocol, Framing | None]] = {
    "udp": ("udp", None),
    "tcp": ("tcp", None),
    "tcp+slip": ("tcp", "slip"),
    "tcp+size": ("tcp", "size"),
    "osc.udp": ("udp", None),
    "osc.tcp": ("tcp", "size"),  # liblo's clients write a size prefix (its servers read both)
}
_FRAMED_SCHEMES = {"slip": "tcp+slip", "size": "tcp+size"}
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


class AddressError(ValueError):
    """Text that is not a usable ``[HOST:]PORT``."""


@dataclass(frozen=True, slots=True)
class HostPort:
    """A numeric IP address and a port, on UDP (the default) or TCP; ``framing`` is how
    packets to a TCP peer are framed when its URL said so (None: the command's choice)."""

    host: str
    port: int
    protocol: Protocol = "udp"
    framing: Framing | None = None

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        return ipaddress.ip_address(self.host.split("%")[0])

    @property
    def is_multicast(self) -> bool:
        return self.ip.is_multicast

    @property
    def sockaddr(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def is_tcp(self) -> bool:
        return self.protocol == "tcp"

    def __str__(self) -> str:
        text = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        # UDP prints as it always has; TCP says so, in a form that parses back.
        if self.protocol == "udp":
            return text
        scheme = _FRAMED_SCHEMES[self.framing] if self.framing is not None else "tcp"
        return f"{scheme}://{text}"


def parse_hostport(
    text: str,
    *,
    default_host: str | None = DEFAULT_HOST,
    allow_port_zero: bool = False,
) -> HostPort:
    """Parse ``HOST:PORT``, ``[V6]:PORT`` or (when ``default_host`` is set) a bare ``PORT``,
    each optionally as a URL naming the transport (``tcp://127.0.0.1:9000``, ``osc.udp://...``).

    Host names are resolved here, once (IPv4 preferred), so a typo fails at start-up and a slow
    resolver is not consulted per message.
    """
    value = text.strip()
    if not value:
        raise AddressError("empty address: expected [HOST:]PORT, e.g. 127.0.0.1:9000")
    protocol, framing, value = _split_scheme(text, value)
    if protocol != "udp":
        hostport = parse_hostport(value, default_host=default_host, allow_port_zero=allow_port_zero)
        if hostport.is_multicast:
            raise AddressError(f"{text!r}: TCP cannot send to a multicast group; use udp://")
        return HostPort(hostport.host, hostport.port, protocol, framing)
    host: str | None
    if value.startswith("["):
        close = value.find("]")
        if close < 0 or not value[close + 1 :].startswith(":"):
            raise AddressError(f"{text!r}: IPv6 addresses are written [ADDRESS]:PORT")
        host, port_text = value[1:close], value[close + 2 :]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif ":" in value:
        raise AddressError(f"{text!r}: write IPv6 addresses in brackets, e.g. [::1]:9000")
    else:
        host, port_text = None, value
    if host is None:
        if _looks_like_host(port_text):
            # A host without its port (issue #13: `send 127.0.0.1 /chat hi` said "a host is
            # needed here, e.g. 127.0.0.1:127.0.0.1").
            raise AddressError(f"{text!r} has no port: add a port, e.g. {value}:9000")
        if default_host is None:
            raise AddressError(f"{text!r}: a host is needed here, e.g. 127.0.0.1:{value}")
        host = default_host
    if not host:
        # Issue 30: ":9001" said only "the host part is empty"; say what to write instead.
        if default_host is None:
            raise AddressError(
                f"{text!r}: the host part is empty: write {DEFAULT_HOST}:{port_text} for this "
                "machine"
            )
        raise AddressError(
            f"{text!r}: the host part is empty: write {port_text} for {default_host}:{port_text} "
            f"(the default), or 0.0.0.0:{port_text} for every interface"
        )
    port = parse_port(port_text, allow_zero=allow_port_zero, context=text)
    return HostPort(resolve_host(host), port)


def _split_scheme(text: str, value: str) -> tuple[Protocol, Framing | None, str]:
    """The transport (and TCP framing) a URL names and the ``[HOST:]PORT`` after it (UDP for no
    scheme)."""
    match = _SCHEME_RE.match(value)
    if match is None:
        return "udp", None, value
    scheme, rest = match.group(1).lower(), match.group(2)
    known = _SCHEMES.get(scheme)
    if known is None:
        raise AddressError(
            f"{text!r}: unknown transport {scheme + '://'!r}; use udp://, tcp://, tcp+size://, "
            "tcp+slip://, osc.udp:// or osc.tcp:// (or a bare HOST:PORT for UDP)"
        )
    protocol, framing = known
    rest = rest.removesuffix("/")  # liblo prints osc.udp://host:port/
    if "/" in rest:  # a path, or a second scheme
        raise AddressError(f"{text!r}: an OSC URL has no path: write {scheme}://HOST:PORT")
    if not rest:
        raise AddressError(f"{text!r}: the address is missing, e.g. {scheme}://127.0.0.1:9000")
    if rest.startswith(":") and rest.count(":") == 1:
        # liblo's osc.tcp://:9000 ("this machine, port 9000"): the port alone, so the default
        # host applies (loopback for a listener, as for a bare port).
        rest = rest[1:]
    return protocol, framing, rest


def _looks_like_host(text: str) -> bool:
    """An IP address or a name (it has a letter): a host written without its ``:PORT``."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return any(ch.isalpha() for ch in text)
    return True


def parse_port(text: str, *, allow_zero: bool = False, context: str | None = None) -> int:
    where = f"{context!r}: " if context and context != text else ""
    try:
        port = int(text)
    except ValueError:
        raise AddressError(f"{where}port {text!r} is not a number") from None
    low = 0 if allow_zero else 1
    if not low <= port <= 65535:
        raise AddressError(f"{where}port {port} is out of range ({low}..65535)")
    return port


def resolve_host(host: str) -> str:
    """A numeric address for ``host`` (an IP literal is returned as is)."""
    try:
        return str(ipaddress.ip_address(host.split("%")[0])) + (
            "%" + host.split("%")[1] if "%" in host else ""
        )
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.args[-1] if exc.args else exc
        raise AddressError(f"cannot resolve host {host!r}: {reason}") from None
    infos.sort(key=lambda info: info[0] != socket.AF_INET)
    return str(infos[0][4][0])


def parse_network(
    text: str,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """A CIDR block for ``--allow`` (a bare address means just that host)."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise AddressError(
            f"{text!r} is not an address or CIDR block (e.g. 192.168.1.0/24)"
        ) from None


_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


def allow_mismatch(
    listen: HostPort, allow: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]
) -> str | None:
    """Why ``--allow`` can never match what reaches ``listen``, or None if it can.

    A listener on a loopback address only hears this machine, so ``--allow 192.168.1.0/24`` with
    the default ``--listen 127.0.0.1:PORT`` refuses everything (issue #13); so does an allow-list
    of the other address family.
    """
    ip = listen.ip
    blocks = ", ".join(str(net) for net in allow)
    if ip.is_loopback:
        if not any(
            net.overlaps(lo) for net in allow for lo in _LOOPBACK if net.version == lo.version
        ):
            return (
                f"--allow {blocks} can never match: this listener is on {listen.host}, which "
                f"only this machine can reach; to accept other machines, listen with "
                f"--listen 0.0.0.0:{listen.port}"
            )
        return None
    if ip.version == 4 and all(net.version == 6 for net in allow):
        return f"--allow {blocks} can never match: this listener on {listen} is IPv4"
    if ip.version == 6 and not ip.is_unspecified and all(net.version == 4 for net in allow):
        return f"--allow {blocks} can never match: this listener on {listen} is IPv6"
    return None


def framing_conflict(peers: Iterable[HostPort]) -> str | None:
    """Why ``peers`` cannot be sent to together, or None: one TCP peer named twice with two
    framings (``tcp://H:P`` and ``tcp+size://H:P``) would get every packet twice, on two
    connections, and a receiver reads one framing per connection, so one copy is garbage to it
    (scsynth resets the SLIP one). Such a list is a mistake to refuse, not two peers."""
    seen: dict[tuple[str, int], HostPort] = {}
    for peer in peers:
        if not peer.is_tcp:
            continue
        first = seen.setdefault(peer.sockaddr, peer)
        if first.framing != peer.framing:
            return (
                f"{first} and {peer} are one peer given twice with two framings: "
                "give it once, with the framing it reads"
            )
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (numeric, as a socket reports it) is this machine's loopback: what is
    said there cannot come from another machine. IPv4 in IPv6 (``::ffff:127.0.0.1``) counts."""
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def is_own_address(listen: HostPort, peer: HostPort) -> bool:
    """True when sending to ``peer`` reaches the listener on ``listen`` itself (same port, and
    the peer's address is the listener's, or the listener takes every local address and the
    peer is one of them: loopback, or this machine's LAN address)."""
    if peer.port != listen.port or peer.protocol != listen.protocol or peer.is_multicast:
        return False
    if peer.ip == listen.ip:
        return True
    return listen.ip.is_unspecified and (peer.ip.is_loopback or is_local_address(peer.ip))


def plain_ip(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An IPv4-mapped IPv6 address (``::ffff:127.0.0.1``) as the IPv4 address it carries."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_local_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``ip`` is one of this machine's addresses. Portable, with no interface list:
    binding a socket to an address succeeds only when it is local (EADDRNOTAVAIL otherwise, on
    Linux, macOS and Windows; Linux's ``ip_nonlocal_bind`` would make every address local).
    Loopback and the wildcard are local; a multicast group is not (bindable, but a group)."""
    ip = plain_ip(ip)
    if ip.is_loopback or ip.is_unspecified:
        return True
    if ip.is_multicast:
        return False
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((str(ip), 0))
    except OSError:
        return False
    return True
