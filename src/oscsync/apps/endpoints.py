"""Endpoints as commands open them: the UDP transport plus the services every listener offers.

The transport knows no protocol (issue #12, item 2); this is the layer that adds one: every
oscsync listener answers clock pings (``/oscsync/clock/ping``, ``docs/protocol.md``), so commands
open their endpoints here. A relay that must pass pings on (``netem``) or a test that wants a
bare socket builds :class:`~oscsync.net.udp.Endpoint` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort
from oscsync.net.tcpendpoint import TcpEndpoint, uses_tcp
from oscsync.net.udp import Endpoint, EndpointOptions
from oscsync.sync.ping import SERVICE_METHODS, standard_services

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only in annotations, so 3.10 runs this module


def add_standard_services(endpoint: Endpoint) -> Endpoint:
    """Register the clock services (:func:`oscsync.sync.ping.standard_services`) on ``endpoint``."""
    for address, service in standard_services().items():
        method = SERVICE_METHODS[address]
        endpoint.add_service(address, service, method.types, method.description)
    return endpoint


def open_endpoint(
    listen: HostPort | None = None,
    peers: Sequence[HostPort] = (),
    *,
    framing: Framing = "slip",
    **options: Unpack[EndpointOptions],
) -> Endpoint:
    """An endpoint that answers the standard clock services: UDP
    (:class:`~oscsync.net.udp.Endpoint`, whose keywords ``options`` are), or
    :class:`~oscsync.net.tcpendpoint.TcpEndpoint` when an address says ``tcp://`` (then ``framing``
    is how packets to TCP peers are framed)."""
    if uses_tcp(listen, peers):
        return add_standard_services(TcpEndpoint(listen, peers, framing_mode=framing, **options))
    return add_standard_services(Endpoint(listen, peers, **options))
