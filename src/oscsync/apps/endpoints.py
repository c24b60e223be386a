"""Endpoints as commands open them: the UDP transport plus the services every listener offers.

The transport knows no protocol (issue #12, item 2); this is the layer that adds one: every
oscsync listener answers clock pings (``/oscsync/clock/ping``, ``docs/protocol.md``), so commands
open their endpoints here. A relay that must pass pings on (``netem``) or a test that wants a
bare socket builds :class:`~oscsync.net.udp.Endpoint` itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from oscsync.clock import Clock
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort
from oscsync.net.tcpendpoint import TcpEndpoint, uses_tcp
from oscsync.net.udp import Endpoint, EndpointOptions
from oscsync.osc.auth import PacketAuth
from oscsync.sync.ping import PONG, PONG_METHOD, SERVICE_METHODS, ClockSync, standard_services

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only in annotations, so 3.10 runs this module


def add_standard_services(endpoint: Endpoint, auth: PacketAuth | None = None) -> Endpoint:
    """Register the clock services (:func:`oscsync.sync.ping.standard_services`) on ``endpoint``
    (with ``auth``, a key: pongs to signed pings are signed)."""
    for address, service in standard_services(auth).items():
        method = SERVICE_METHODS[address]
        endpoint.add_service(address, service, method.types, method.description)
    return endpoint


def open_endpoint(
    listen: HostPort | None = None,
    peers: Sequence[HostPort] = (),
    *,
    framing: Framing = "slip",
    auth: PacketAuth | None = None,
    **options: Unpack[EndpointOptions],
) -> Endpoint:
    """An endpoint that answers the standard clock services: UDP
    (:class:`~oscsync.net.udp.Endpoint`, whose keywords ``options`` are), or
    :class:`~oscsync.net.tcpendpoint.TcpEndpoint` when an address says ``tcp://`` (then ``framing``
    is how packets to TCP peers are framed). With ``auth`` (a key) it signs its pongs and checks
    signed bundles."""
    if auth is not None:
        options["verifier"] = auth.verifier
    if uses_tcp(listen, peers):
        endpoint: Endpoint = TcpEndpoint(listen, peers, framing_mode=framing, **options)
    else:
        endpoint = Endpoint(listen, peers, **options)
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
