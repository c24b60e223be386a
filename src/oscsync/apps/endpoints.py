"""How apps get an endpoint: the one place ``Endpoint`` is built for a command (issue #12).

Sessions, ``send``, ``clock``, ``replay`` and the lab call :func:`open_endpoint`; the CLI never
builds one. A transport factory (TCP, ``@NAME``) replaces the body, not the callers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from oscsync.clock import Clock
from oscsync.hostport import HostPort
from oscsync.transport import Endpoint, Network


def open_endpoint(
    listen: HostPort | None = None,
    peers: Sequence[HostPort] = (),
    *,
    clock: Clock,
    allow: Sequence[Network] = (),
    warn: Callable[[str], None],
    multicast_interface: str | None = None,
) -> Endpoint:
    """An endpoint bound to ``listen`` (if given) that sends to ``peers``; warnings to ``warn``."""
    return Endpoint(
        listen,
        peers,
        allow=allow,
        clock=clock,
        on_warning=warn,
        multicast_interface=multicast_interface,
    )
