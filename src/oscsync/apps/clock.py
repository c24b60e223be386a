"""``oscsync clock``: how far a peer's clock is from ours, measured with clock pings."""

from __future__ import annotations

import json
from dataclasses import dataclass

from oscsync.clocksync import PONG, ClockSync, Estimate
from oscsync.transport import Endpoint, Received
from oscsync.wording import plural


@dataclass(frozen=True)
class PeerClockReport:
    """What ``oscsync clock`` found out about one peer."""

    peer: str
    sent: int
    answered: int
    estimate: Estimate | None

    def text(self) -> str:
        lines = [f"peer {self.peer}: {self.answered} of {plural(self.sent, 'ping')} answered"]
        estimate = self.estimate
        if estimate is not None:
            side = "ahead of" if estimate.offset >= 0 else "behind"
            lines.append(
                f"offset     {estimate.offset * 1e3:+.3f} ms ± {estimate.error_bound * 1e3:.3f} ms"
                f"  (the peer's clock is {side} this one)"
            )
            lines.append(
                f"round trip {estimate.delay * 1e3:.3f} ms  (the fastest exchange, which the "
                f"estimate uses; median {estimate.median_delay * 1e3:.3f} ms)"
            )
        return "\n".join(lines)

    def json(self) -> str:
        estimate = self.estimate
        record = {
            "peer": self.peer,
            "sent": self.sent,
            "answered": self.answered,
            "offset_ms": None if estimate is None else round(estimate.offset * 1e3, 6),
            "error_bound_ms": None if estimate is None else round(estimate.error_bound * 1e3, 6),
            "rtt_ms": None if estimate is None else round(estimate.delay * 1e3, 6),
            "median_rtt_ms": None if estimate is None else round(estimate.median_delay * 1e3, 6),
        }
        return json.dumps(record, separators=(",", ":"))


def measure_peer(
    endpoint: Endpoint, *, count: int, interval: float, timeout: float
) -> PeerClockReport:
    """Ping the endpoint's (single) peer ``count`` times and estimate its clock offset.

    Times come from the endpoint's clock, the one that stamps each pong's arrival (T4).
    """
    sync = start_pinging(endpoint, count)
    sync.measure(count, interval, timeout)
    return report(endpoint, sync)


def start_pinging(endpoint: Endpoint, count: int) -> ClockSync:
    """Set the endpoint up to collect the pongs of ``count`` pings (then call ``measure``)."""
    sync = ClockSync(endpoint.clock, endpoint.send_bytes, filter_size=count)
    endpoint.add_service(PONG, sync.service)
    endpoint.start(_ignore)
    return sync


def report(endpoint: Endpoint, sync: ClockSync) -> PeerClockReport:
    """What the pings so far found out (also when the measurement was cut short)."""
    return PeerClockReport(
        peer=str(endpoint.peers[0]),
        sent=sync.sent,
        answered=sync.received,
        estimate=sync.estimate(),
    )


def _ignore(_: Received) -> None:
    pass
