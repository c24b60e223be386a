"""Endpoints as commands open them: the UDP transport plus the services every listener offers.

The transport knows no protocol (issue #12, item 2); this is the layer that adds one: every
oscsync listener answers clock pings (``/oscsync/clock/ping``, ``docs/protocol.md``), so commands
open their endpoints here. A relay that must pass pings on (``netem``) or a test that wants a
bare socket builds :class:`~oscsync.transport.Endpoint` itself.
"""

from __future__ import annotations

from collections.abc import Sequence

from oscsync import clocksync
from oscsync.clock import Clock
from oscsync.hostport import HostPort
from oscsync.transport import DEFAULT_RECV_BUFFER, Endpoint, Network, WarningHandler


def _ignore_warning(_: str) -> None:
    pass


def add_standard_services(endpoint: Endpoint) -> Endpoint:
    """Register the clock services (:func:`oscsync.clocksync.standard_services`) on ``endpoint``."""
    for address, service in clocksync.standard_services().items():
        method = clocksync.SERVICE_METHODS[address]
        endpoint.add_service(address, service, method.types, method.description)
    return endpoint


def open_endpoint(
    listen: HostPort | None = None,
    peers: Sequence[HostPort] = (),
    *,
    allow: Sequence[Network] = (),
    clock: Clock | None = None,
    on_warning: WarningHandler = _ignore_warning,
    multicast_interface: str | None = None,
    multicast_ttl: int = 1,
    recv_buffer: int = DEFAULT_RECV_BUFFER,
    kernel_stamps: bool = True,
) -> Endpoint:
    """A UDP :class:`~oscsync.transport.Endpoint` that answers the standard clock services."""
    endpoint = Endpoint(
        listen,
        peers,
        allow=allow,
        clock=clock,
        on_warning=on_warning,
        multicast_interface=multicast_interface,
        multicast_ttl=multicast_ttl,
        recv_buffer=recv_buffer,
        kernel_stamps=kernel_stamps,
    )
    return add_standard_services(endpoint)
