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
from oscsync.osc.auth import PacketAuth
from oscsync.osc.routing import Received
from oscsync.sync.estimate import CONFIRM_SPAN, ClockEstimate
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

ABSURD_OFFSET = 3600.0
"""An offset this large (seconds) is no clock error: a free-running crystal drifts a second or
two a day and NTP keeps clocks within milliseconds. It is a wrong date or time zone, or a
broken or forged peer (issue #27 item 4: a peer claiming +9.2 years read "locked")."""
MAX_RATE_ERROR = 0.01
"""A peer clock running more than this far from ours (1 %, ten times what the estimator ever
believes: ``MAX_PPM``) is broken or forged; 0 is a frozen clock."""
FROZEN_RATE = 0.5


@dataclass(frozen=True)
class Problem:
    """Why a measurement cannot be trusted: a stable ``code`` (``--json``) and a sentence."""

    code: str
    text: str


def span_text(seconds: float) -> str:
    """``+9.2 years``, ``-3.0 days``, ``+2.0 hours``, ``+10.000 s``, ``-12.500 ms``."""
    size = abs(seconds)
    for unit, length, digits in (
        ("years", 365.25 * 86400, 1),
        ("days", 86400.0, 1),
        ("hours", 3600.0, 1),
        ("s", 1.0, 3),
    ):
        if size >= length:
            return f"{seconds / length:+.{digits}f} {unit}"
    return f"{seconds * 1e3:+.3f} ms"


def problems_of(follower: ClockFollower, estimate: ClockEstimate | None) -> tuple[Problem, ...]:
    """What is implausible about the peer's clock as ``follower`` measured it (issue #27
    item 4): an absurd offset, a step or a jump of it, a frozen clock or one at a wrong rate."""
    found = []
    if estimate is not None and abs(estimate.offset) >= ABSURD_OFFSET:
        found.append(
            Problem(
                "absurd-offset",
                f"the peer's clock reads {span_text(estimate.offset)} from this one: no clock "
                "drifts that far; a wrong date or time zone, or a broken or forged peer",
            )
        )
    estimator = follower.estimator
    if estimator.restarts:
        found.append(
            Problem(
                "stepped",
                f"the peer's clock stepped by {span_text(estimator.last_step)} during the "
                "measurement (its answers agreed on the new offset for "
                f"{CONFIRM_SPAN:g} s or more); the offset shown is after the step",
            )
        )
    held = estimator.unused_jumps
    if held and estimator.held_offset is not None and estimate is not None:
        found.append(
            Problem(
                "jumped",
                f"{plural(held, 'answer')} implied the peer's clock jumped by about "
                f"{span_text(estimator.held_offset - estimate.offset)} and "
                f"{'was' if held == 1 else 'were'} not used (a step of its clock, or forged "
                "answers: --key-file stops those)",
            )
        )
    rate = follower.peer_rate()
    if rate is not None and rate < FROZEN_RATE:
        found.append(
            Problem(
                "frozen",
                "the peer's clock does not advance (its stamps are frozen): its answers say "
                "nothing about a clock",
            )
        )
    elif rate is not None and abs(rate - 1.0) > MAX_RATE_ERROR:
        found.append(
            Problem(
                "wrong-rate",
                f"the peer's clock runs {(rate - 1.0) * 100:+.1f} % against this one: no "
                "crystal is that far off; a broken or forged peer",
            )
        )
    return tuple(found)


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
    problems: tuple[Problem, ...] = ()
    """Why the peer's clock is not to be trusted (empty: nothing found)."""
    ignored_reasons: tuple[tuple[str, int], ...] = ()
    """The pongs not used, by reason (``unauthenticated-pong``, ``pong-before-ping``, ...)."""

    @property
    def suspect(self) -> bool:
        return bool(self.problems)

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
        lines += [f"suspect:   {problem.text}" for problem in self.problems]
        return "\n".join(lines)

    def json(self, extra: dict[str, object] | None = None) -> str:
        """One JSON object; ``extra`` fields (the command's ``realtime``) are added at the end."""
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
            "ignored_by_reason": dict(self.ignored_reasons),
            "problems": [problem.code for problem in self.problems],
            "warnings": [problem.text for problem in self.problems],
            **(extra or {}),
        }
        return json.dumps(record, separators=(",", ":"))


class PeerClock:
    """Pings one peer through ``endpoint`` and keeps the estimate; :meth:`run` drives it."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        auth: PacketAuth | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.clock = endpoint.clock
        self.auth = auth
        self.warn = warn
        self.follower = self._follower(endpoint.peers[0].sockaddr)
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
            self.follower = self._follower(peers[0].sockaddr)
            self.moves += 1

    def _follower(self, peer: tuple[str, int]) -> ClockFollower:
        return ClockFollower(self.endpoint, peer=peer, auth=self.auth, on_warning=self.warn)

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
            problems=problems_of(follower, estimate),
            ignored_reasons=tuple(sorted(follower.ignored_counts().items())),
        )


def _ignore(_: Received) -> None:
    pass


@contextlib.contextmanager
def peer_clock(
    peer: HostPort,
    *,
    clock: Clock,
    allow: Sequence[Network] = (),
    warn: Callable[[str], None],
    auth: PacketAuth | None = None,
) -> Iterator[PeerClock]:
    """``oscsync clock``: a :class:`PeerClock` for ``peer`` on its own endpoint, closed after
    (with ``auth``, a key: pings signed, only signed pongs taken)."""
    with open_endpoint(
        peers=[peer], clock=clock, allow=allow, on_warning=warn, auth=auth
    ) as endpoint:
        yield PeerClock(endpoint, auth=auth, warn=warn)
