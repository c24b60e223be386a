"""``oscsync clock``: how far a peer's clock is from ours, and how fast it drifts.

The same machinery as ``metronome listen --sync`` (:class:`~oscsync.sync.follow.ClockFollower`:
pongs only from the peer and matching a ping; the envelope estimator), driven here by a loop
that pings every ``interval`` for ``count`` pings or ``duration`` seconds.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import Clock
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc.routing import Received
from oscsync.sync.estimate import ClockEstimate
from oscsync.sync.follow import ClockFollower
from oscsync.terminal.wording import plural

DEFAULT_DURATION = 30.0
"""Seconds measured by default (the estimator's window). The frequency needs a long span: the
hull corners that decide it sit tens of µs off the floor (more on a busy machine), and that
tilts the fit by their error over the span. Through ±15 ms of jitter at 100 pings a second,
simulated: rms 2.3 ppm after 20 s, 1.0 after 30 s; through netem in one process (issue #11,
``benchmarks/clock_sync.py --only clock-uniform``), load 3.3 on 2 cores, 20 s: ppm errors −7.4,
+5.5, +3.8, +8.1, +7.2; load 3.6-6.4, 30 s: −2.1, −4.0, +0.8, −2.1, +0.0."""
DEFAULT_INTERVAL = 0.01


@dataclass(frozen=True)
class PeerClockReport:
    """What ``oscsync clock`` found out about one peer (times in seconds)."""

    peer: str
    sent: int
    answered: int
    ignored: int
    estimate: ClockEstimate | None
    min_rtt: float | None
    median_rtt: float | None
    state: str

    def text(self) -> str:
        lines = [f"peer {self.peer}: {self.answered} of {plural(self.sent, 'ping')} answered"]
        if self.ignored:
            lines[0] += f" ({plural(self.ignored, 'bad pong')} ignored)"
        estimate = self.estimate
        if estimate is not None:
            side = "ahead of" if estimate.offset >= 0 else "behind"
            lines.append(
                f"offset     {estimate.offset * 1e3:+.3f} ms ± {estimate.bound * 1e3:.3f} ms"
                f"  (the peer's clock is {side} this one)"
            )
            if estimate.span >= 2.0:
                lines.append(
                    f"frequency  {estimate.ppm:+.1f} ± {estimate.ppm_bound:.1f} ppm  (the offset "
                    f"grows {estimate.ppm * 3.6:+.1f} ms an hour; over {estimate.span:.0f} s)"
                )
            else:
                lines.append("frequency  - (measure 2 s or more: --duration)")
        if self.min_rtt is not None and self.median_rtt is not None:
            lines.append(
                f"round trip {self.min_rtt * 1e3:.3f} ms fastest, {self.median_rtt * 1e3:.3f} ms"
                " median"
            )
        return "\n".join(lines)

    def json(self) -> str:
        estimate = self.estimate

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1e3, 6)

        record = {
            "peer": self.peer,
            "sent": self.sent,
            "answered": self.answered,
            "ignored": self.ignored,
            "state": self.state,
            "offset_ms": None if estimate is None else ms(estimate.offset),
            "error_bound_ms": None if estimate is None else ms(estimate.bound),
            "frequency_ppm": (
                None if estimate is None or estimate.span < 2.0 else round(estimate.ppm, 3)
            ),
            "frequency_bound_ppm": (
                None if estimate is None or estimate.span < 2.0 else round(estimate.ppm_bound, 3)
            ),
            "span_s": None if estimate is None else round(estimate.span, 3),
            "rtt_ms": ms(self.min_rtt),
            "median_rtt_ms": ms(self.median_rtt),
        }
        return json.dumps(record, separators=(",", ":"))


class PeerClock:
    """Pings one peer through ``endpoint`` and keeps the estimate; :meth:`run` drives it."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.clock = endpoint.clock
        self.follower = ClockFollower(endpoint, peer=endpoint.peers[0].sockaddr)
        self.stop = threading.Event()
        self.moves = 0
        self._move_lock = threading.Lock()

    def move_to(self, peers: Sequence[HostPort]) -> None:
        """Measure ``peers[0]`` from now on (``--peer @NAME`` re-registered elsewhere); safe to
        call from another thread while :meth:`run` pings.

        The measurement starts over with a new follower: the peer at the new address may be
        another process or machine, and one estimate over two clocks would be neither's (the
        estimator only notices a step of its restart threshold, not a clock a millisecond off).
        Pongs still on their way from the old address are ignored, counted
        (``pong-not-from-peer``). TransportError if no socket can be opened for the new peer:
        nothing changes then.
        """
        with self._move_lock:
            # The new socket first: the follower picks how to reach its peer from the
            # endpoint's peers at its first ping.
            self.endpoint.set_peers(peers)
            self.follower = ClockFollower(self.endpoint, peer=peers[0].sockaddr)
            self.moves += 1

    def run(
        self,
        *,
        count: int | None,
        duration: float | None,
        interval: float,
        timeout: float,
        on_update: Callable[[PeerClockReport], None] | None = None,
        update_every: float = 0.25,
    ) -> PeerClockReport:
        """Ping ``count`` times or for ``duration`` s (forever if neither), then wait up to
        ``timeout`` for the last answers; ``on_update`` gets a report every ``update_every`` s."""
        clock = self.clock
        self.endpoint.start(_ignore)
        begin = clock.monotonic()
        next_update = begin
        k = 0
        while not self.stop.is_set():
            if count is not None and k >= count:
                break
            if duration is not None and clock.monotonic() - begin >= duration:
                break
            self.follower.ping()  # the follower of the moment: move_to() may replace it
            k += 1
            if on_update is not None and clock.monotonic() >= next_update:
                next_update += update_every
                on_update(self.report())
            clock.wait(self.stop, begin + k * interval - clock.monotonic())
        deadline = clock.monotonic() + timeout
        while clock.monotonic() < deadline:
            sent, answered, _ = self.follower.counts()
            if answered >= sent:
                break
            if clock.wait(self.stop, min(0.01, deadline - clock.monotonic())):
                break
        return self.report()

    def report(self) -> PeerClockReport:
        with self._move_lock:  # the peer and the follower measuring it, from one moment
            follower = self.follower
            peer = str(self.endpoint.peers[0])
        estimate = follower.fresh_estimate()
        rtts = follower.round_trip_times()
        sent, answered, ignored = follower.counts()
        return PeerClockReport(
            peer=peer,
            sent=sent,
            answered=answered,
            ignored=ignored,
            estimate=estimate,
            min_rtt=min(rtts) if rtts else None,
            median_rtt=statistics.median(rtts) if rtts else None,
            state=follower.state(),
        )


def _ignore(_: Received) -> None:
    pass


@contextlib.contextmanager
def peer_clock(
    peer: HostPort, *, clock: Clock, allow: Sequence[Network] = (), warn: Callable[[str], None]
) -> Iterator[PeerClock]:
    """``oscsync clock``: a :class:`PeerClock` for ``peer`` on its own endpoint, closed after."""
    with open_endpoint(peers=[peer], clock=clock, allow=allow, on_warning=warn) as endpoint:
        yield PeerClock(endpoint)
