"""Whether a UDP peer is listening: the ICMP "port unreachable" that a closed port sends back.

A datagram to a port nobody listens on is dropped by the peer's kernel, which answers with an ICMP
"port unreachable". Every unicast peer has a connected socket (:mod:`oscsync.net.udp`), on which
Linux and Windows report that answer as an error on the next receive or send; the endpoint counts
it in ``stats.send_errors["refused"]``. It comes back within one round trip: on loopback 7 µs at
the median and 4.5 ms at worst (200 sends to a closed port on a 2-core machine busy with other
work, issue 30), on a network after one round trip. Silence is not proof of delivery: a firewall
may drop the ICMP, and a host that is down sends none, so "heard" only means "not refused".
"""

from __future__ import annotations

from oscsync.net.core import Transport

REFUSAL_WINDOW = 0.1
"""Seconds to wait for an ICMP "port unreachable" after a send (20x the worst on loopback)."""

_POLL = 0.005


def refusals(endpoint: Transport) -> int:
    """Refusals the endpoint has counted so far (compare with :func:`refused_within`)."""
    return endpoint.stats.send_errors.get("refused", 0)


def refused_within(endpoint: Transport, before: int, window: float = REFUSAL_WINDOW) -> bool:
    """True once the endpoint counts more than ``before`` refusals, False after ``window`` s.

    The endpoint's receive thread must be running: it is what reads the error off the socket.
    """
    clock = endpoint.clock
    deadline = clock.monotonic() + window
    while refusals(endpoint) <= before:
        left = deadline - clock.monotonic()
        if left <= 0:
            return False
        clock.sleep(min(left, _POLL))
    return True
