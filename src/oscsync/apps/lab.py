"""The forward-sync lab in one process: leader → netem → followers, measured tick by tick.

A :class:`Session` wires a leader (ticks on an exact grid, sent from a scheduler), one netem
:class:`~oscsync.apps.netem.Relay` per follower (each link jitters on its own, as two Wi-Fi
clients would), and followers that are ordinary :class:`~oscsync.apps.metronome.MetronomeListener`
instances with their own clocks (``skew``: a :class:`~oscsync.clock.SkewedClock`) and, with
``sync``, a :class:`~oscsync.sync.follow.ClockFollower` pinging the leader through the same netem
(``sync_method="filter"``: :class:`~oscsync.sync.follow.FilterFollower`, the estimator and map
before issue #11, for comparison).

A synced follower learns whom to follow the way ``--sync-peer`` would tell it: the leader sends
one clock ping through each relay before tick 0 (its "hello"), and the follower follows the
address that ping came from (the relay's), so it is locked before tick 0 is due.

Everything runs on one shared base clock, the **reference**: a follower's onsets (written on its
own, possibly skewed clock) are mapped back onto it, so onsets of different followers can be
compared, which two real machines could only do with a microphone.

Followers use players that place sounds themselves (``lead = inf``: the ``wav:`` renderer, or
:class:`OnsetRecorder`), so an onset is exactly the (translated) timetag when the tick arrived in
time, and the arrival when it did not: what a sample-accurate sound card would play.

Each onset is filed under its tick number ``k``, recovered from the arrival time on the reference
clock (jitter must stay below half a beat, which any usable link does); :mod:`oscsync.apps.scoring`
scores the results and :mod:`oscsync.apps.tables` prints, writes and plots them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from oscsync.apps.labrecords import FollowerResult, FollowerSpec, SessionResult, SessionSpec
from oscsync.apps.metronome import TickRecord
from oscsync.apps.netem import Relay
from oscsync.apps.receiving import SessionSetup
from oscsync.apps.sessions import SendSession, TickListenSession
from oscsync.audio import TICK, AudioError, Player
from oscsync.clock import Clock, SkewedClock
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint, Service
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.sync.follow import ClockFollower, FilterFollower
from oscsync.sync.ping import PING, PingResponder, encode_ping

LOOPBACK = HostPort("127.0.0.1", 0)
SETTLE = 0.15
"""Seconds the leader waits before tick 0, so every socket and thread is up."""
CHECK_EVERY = 0.25
"""Seconds between checks of a servo follower's bound against the truth during a session."""
SYNC_SETTLE = 0.4
"""The same when a follower syncs: its first estimate takes a round trip plus a few pings after
it learns the leader's address (the leader's hello ping), and tick 0 should find it locked."""


class OnsetRecorder:
    """A player that only remembers when it was asked to play (for sweeps: no file, no sound)."""

    name = "record"
    lead = math.inf

    def __init__(self) -> None:
        self.onsets: list[float] = []

    def load(self, path: str | Path, key: str = TICK) -> None:
        pass

    def start(self) -> None:
        pass

    def play_at(self, t: float, key: str = TICK) -> None:
        self.onsets.append(t)

    def describe(self) -> str:
        return ""

    def close(self) -> None:
        pass


def _to_reference(clock: Clock, reference: Clock) -> Callable[[float], float]:
    if clock is reference:
        return lambda wall: wall
    return lambda wall: reference.monotonic_to_wall(clock.wall_to_monotonic(wall))


def run_session(
    spec: SessionSpec,
    reference: Clock,
    *,
    make_player: Callable[[int, Clock], Player] | None = None,
    on_warning: Callable[[str], None] = lambda _: None,
) -> SessionResult:
    """Run one leader → netem → followers session to the end and collect every tick.

    ``make_player(index, clock)`` gives follower ``index`` a started player (default: an
    :class:`OnsetRecorder`); it should place sounds itself (``lead = inf``) for exact onsets.
    """
    period = 60.0 / spec.bpm
    collected: list[list[TickRecord]] = [[] for _ in spec.followers]
    opened: list[TickListenSession | SendSession] = []
    relays: list[Relay] = []
    followers: list[tuple[Clock, TickListenSession, ClockFollower | None]] = []
    checks: list[list[tuple[float, float, float]]] = []
    try:
        for index, follower_spec in enumerate(spec.followers):
            clock: Clock = reference
            if follower_spec.skew or follower_spec.drift_ppm:
                clock = SkewedClock(
                    reference, skew=follower_spec.skew, drift_ppm=follower_spec.drift_ppm
                )
            player: Player
            if make_player is not None:
                player = make_player(index, clock)
            else:
                player = OnsetRecorder()
                player.start()
            try:
                session = TickListenSession(
                    LOOPBACK,
                    (),
                    SessionSetup(clock, warn=on_warning),
                    player=player,
                    beats_per_bar=spec.beats_per_bar,
                )
            except BaseException:
                player.close()
                raise
            opened.append(session)
            session.show = collected[index].append
            follow: ClockFollower | None = None
            if follower_spec.sync:
                kind = FilterFollower if follower_spec.sync_method == "filter" else ClockFollower
                follow = kind(session.endpoint, on_warning=on_warning)
                # The lab knows who leads: the first ping through the relay is the leader's
                # hello, and its source is what --sync-peer would name (issue #11: no tick
                # played late, the first one on time).
                session.endpoint.add_service(PING, _peer_from_hello(follow))
            session.start(follower=follow)
            target = session.endpoint.local_address
            assert target is not None
            seed = None if spec.seed is None else spec.seed * 1000 + index
            relay = Relay(LOOPBACK, target, spec.link, seed=seed, clock=reference)
            relay.start()
            relays.append(relay)
            followers.append((clock, session, follow))
        # The leader's sends need no spin: timetags carry the timing, and with offset 0 the
        # network's jitter dwarfs a sleep's overshoot; a spinning thread would hold the GIL.
        # Its endpoint answers the followers' clock pings.
        leader = SendSession(
            [relay.local_address for relay in relays],
            SessionSetup(reference, warn=on_warning),
            spin=0.0,
        )
        opened.append(leader)
        syncing = any(f.sync for f in spec.followers)
        if syncing:
            # hello, through netem
            leader.endpoint.send_bytes(encode_ping(0, reference.now_timetag()))
        start = reference.now()
        t0 = tt.add_seconds(tt.from_unix(start), SYNC_SETTLE if syncing else SETTLE)
        # One tick held at a time: a sweep of 10,000 ticks would pass the scheduler's horizon.
        leader.tick_sender(
            bpm=spec.bpm,
            beats_per_bar=spec.beats_per_bar,
            offset=spec.offset,
            plain=spec.plain and not spec.offset,
        ).start(spec.ticks, t0=t0)
        leader.scheduler.start()
        last = tt.to_unix(t0, start) + (spec.ticks - 1) * period
        worst = spec.link.delay + 4 * spec.link.jitter + 0.1
        finish = max(last + spec.offset, last + worst) + 0.05
        checks[:] = [[] for _ in followers]
        end = reference.wall_to_monotonic(finish)
        while (left := end - reference.monotonic()) > 0:
            reference.sleep(min(CHECK_EVERY, left))
            for index, (clock, _, follow) in enumerate(followers):
                if follow is not None:
                    check = _check_bound(follow, clock, reference)
                    if check is not None:
                        checks[index].append(check)
    finally:
        for relay in relays:
            relay.close()
        for opened_session in reversed(opened):
            if isinstance(opened_session, TickListenSession):
                opened_session.close_follower()
            opened_session.close()
    for opened_session in opened:
        if isinstance(opened_session, TickListenSession) and opened_session.failure is not None:
            raise AudioError(opened_session.failure)  # a player that could not finish its file
    result = SessionResult(spec, tt.to_unix(t0, start), period)
    for relay in relays:
        result.link_report.append(relay.report())
    for follower_spec, (clock, _session, follow), records in zip(
        spec.followers, followers, collected
    ):
        result.followers.append(_follower_result(follower_spec, clock, reference, records, result))
        if follow is not None:
            _sync_result(result.followers[-1], follow, clock, reference)
    for follower_result, follower_checks in zip(result.followers, checks, strict=True):
        follower_result.sync_checks = follower_checks
    return result


def _check_bound(
    follow: ClockFollower, clock: Clock, reference: Clock
) -> tuple[float, float, float] | None:
    """The follower's offset error and bound now (None before it can translate)."""
    offset, bound = follow.offset_and_bound()
    if offset is None:
        return None
    mono = clock.monotonic()
    truth = reference.monotonic_to_wall(mono) - clock.monotonic_to_wall(mono)
    return reference.monotonic_to_wall(mono), offset - truth, bound


def _peer_from_hello(follow: ClockFollower) -> Service:
    responder = PingResponder()

    def hello(endpoint: Endpoint, received: Received) -> None:
        if follow.peer is None:
            follow.follow(received.source)
        responder.service(endpoint, received)

    return hello


def _sync_result(
    result: FollowerResult,
    follow: ClockFollower,
    clock: Clock,
    reference: Clock,
) -> None:
    result.sync_text = follow.describe()
    mono = clock.monotonic()
    result.sync_true_offset = reference.monotonic_to_wall(mono) - clock.monotonic_to_wall(mono)
    result.sync_offset = follow.offset()
    estimate = follow.estimate()
    if estimate is not None:
        result.sync_bound = follow.servo.bound(estimate.at)
        result.sync_ppm = estimate.ppm
    if follow.locked_at is not None:
        result.lock_ref = _to_reference(clock, reference)(follow.locked_at)
    result.unsynced = follow.unsynced


def _follower_result(
    spec: FollowerSpec,
    clock: Clock,
    reference: Clock,
    records: list[TickRecord],
    session: SessionResult,
) -> FollowerResult:
    to_ref = _to_reference(clock, reference)
    onsets: dict[int, float] = {}
    arrived: dict[int, bool] = {}
    played: dict[int, bool] = {}
    played_at: dict[int, float] = {}
    handled: dict[int, float] = {}
    delay = session.spec.link.delay
    for record in records:
        k = round((to_ref(record.arrival) - session.t0 - delay) / session.period)
        if k in onsets or not 0 <= k < session.spec.ticks:
            continue  # a duplicate from netem, or a stranger
        onsets[k] = to_ref(record.onset)
        handled[k] = to_ref(record.handled)
        if record.timetag is not None and record.played_ms is not None:
            played_at[k] = to_ref(max(record.onset, record.timetag + record.played_ms / 1e3))
        else:
            played_at[k] = onsets[k]
        arrived[k] = record.arrived_late
        played[k] = record.played_late
    return FollowerResult(spec, records, onsets, arrived, played, played_at, handled)
