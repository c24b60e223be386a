"""Following one peer's clock: pings, the estimator, the servo, and translating its timetags.

``metronome listen --sync`` (and the lab's synced followers) wrap their message handler with
:meth:`ClockFollower.wrap`. The follower

* follows **one** peer: ``peer`` (``--sync-peer``), or else the source of the first *timetagged*
  message (the tick sender). Pongs count only from that address and only when they echo the
  sequence number and T1 of a ping still outstanding; timetagged messages from anyone else are
  not translated but dropped (counted ``not-sync-peer``): their timetags are on another clock
  (issue #20 item 4, the clock hijack). Without a key the first sender may be anyone (issue
  #27 item 3: a stranger's datagram sent before the leader started won the follower), so each
  other sender refused is named in a warning (at most :data:`MAX_REFUSED_WARNINGS`), the
  followed one too. With a key only an authenticated message chooses, and until the chosen
  peer has answered a ping (an authenticated pong) an authenticated message from another
  address replaces it: a signed tick replayed from elsewhere cannot hold the follower.
  :meth:`move_to` follows another address instead (``--sync-peer @NAME`` re-registered): the
  measurement starts over, and from then on pongs and ticks from the old address count as
  anyone else's;
* pings it in a burst (``burst`` pings ``burst_interval`` apart), every ``acquire_interval``
  for ``acquire_time`` seconds and then every ``interval`` seconds; each answered exchange feeds
  an :class:`~oscsync.sync.estimate.EnvelopeEstimator`, whose estimate disciplines a
  :class:`~oscsync.sync.servo.Servo` (at most every :data:`UPDATE_EVERY` s);
* translates each timetag through the servo's map, which never jumps once locked; before the
  first estimate it holds timetagged messages (bounded in items **and bytes**, issue #20 item 1)
  and releases them at lock: a held message whose translated time has already passed is dropped
  and counted ``unsynced``, never played late with a made-up headroom.

With a key (``auth``, ``--key-file``: :mod:`oscsync.osc.auth`) pings and room status reports are
signed, and only pongs, a room leader's sync messages and timetagged messages whose signature
checked (:attr:`~oscsync.osc.routing.Received.authenticated`) count: anything else is counted
``unauthenticated-pong``, ``unauthenticated-sync`` or ``unauthenticated`` and moves nothing.
Without one, a follower of a peer that is not on this machine says once that its clock is not
authenticated.

Malformed, stray, duplicated or impossible pongs are counted by reason in :attr:`ignored` and
never reach the estimator (see :func:`oscsync.sync.ping.exchange_problem`); one that implies a
jump of the offset is held back (``offset-jump``) until a run of them confirms it
(:mod:`oscsync.sync.estimate`). Times inside are
seconds since :attr:`ClockFollower.origin` (our timetag when the follower was made), so floats
keep sub-nanosecond resolution for days.
"""

from __future__ import annotations

import functools
import itertools
import math
import socket
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from oscsync import threads
from oscsync.net.hostport import HostPort, is_loopback
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.sync import room
from oscsync.sync.estimate import (
    CONFIRM_SPAN,
    ClockEstimate,
    EnvelopeEstimator,
    MinimumDelayFilter,
)
from oscsync.sync.ping import (
    PONG,
    PONG_METHOD,
    ClockSyncError,
    encode_ping,
    exchange_problem,
    int32,
    parse_pong,
)
from oscsync.sync.poll import PollPolicy, PollSettings
from oscsync.sync.servo import Servo, ServoEvent, SteppingServo
from oscsync.terminal.display import escape
from oscsync.terminal.wording import plural

if TYPE_CHECKING:
    from oscsync.net.udp import Endpoint
    from oscsync.osc.auth import PacketAuth
    from oscsync.osc.routing import Received

BURST = 20
BURST_INTERVAL = 0.005
"""The start: 20 pings 5 ms apart, so three exchanges (the first estimate) are in one round trip
plus 10 ms after the peer is known."""
ACQUIRE_INTERVAL = 0.005
ACQUIRE_TIME = 5.0
"""Then 200 pings a second for 5 s: the first estimates are the ones ticks are played with
while the window fills (simulated on a ±15 ms link, the median error 2-8 s after start falls
from 0.12 ms at 100/s to 0.05 ms at 200/s)."""
INTERVAL = 0.01
"""Then 100 pings a second: 36-byte pings and 56-byte pongs, ~15 kB/s with UDP/IP headers, cheap
on any LAN, ~2 % of a core. The estimator's floor improves as 1/n: simulated on a ±15 ms uniform
link, the error 10-40 s after start was p99 0.41 ms at 40/s and 0.09 ms at 100/s (issue #11's
goal: 0.25 ms)."""
UPDATE_EVERY = 0.1
"""Seconds between servo updates: each fit costs ~1 ms of Python with 1,200 samples a direction."""
ROOM_WINDOW = 60.0
ROOM_MEMORY = 600.0
"""In a room (the leader's sync messages heard) the estimator fits 60 s of samples (of the sync
messages, 100 a second, it keeps the newest :data:`~oscsync.sync.estimate.MAX_SAMPLES`: ~41 s)
and remembers the path's delay for 10 minutes
(:attr:`~oscsync.sync.estimate.EnvelopeEstimator.delay_memory`): the reverse direction is
dense, 100 samples a second, the forward one sparse once backed off (simulated, 64 followers:
the onset spread p50 40-90 s after start 0.21 ms with a 30 s window, 0.18 ms with 60 s)."""
ROOM_UPDATE_EVERY = 0.25
"""Seconds between servo updates in a room: 64 followers on one machine in the lab fit 4 times
a second each, not 10."""
SYNC_SILENCE = 1.0
"""Seconds without a sync message from the leader after which a follower pings as before #33."""
ROOM_CONFIRM = 50
SYNC_AGREE = 0.002
"""Without a key, a follower enters a room (the room's estimator, pinging backed off) only after
this many sync messages in a row (half a second of the leader's), none SYNC_SILENCE after the
previous one, from one LEADER, each agreeing with its clock: a one-way delay between -2 ms and
the longest round trip seen + 2 ms. One datagram with the leader's address is not enough."""
ROOM_POLL = PollSettings()
"""How a follower pings once it hears the leader's sync messages (:mod:`oscsync.sync.poll`)."""
RECENT_EXCHANGES = 512
"""Exchanges kept to refill the estimator when the follower learns it is in a room."""
MAX_OUTSTANDING = 256
MAX_ROUND_TRIPS = 4096
"""Round-trip times kept for the report (the most recent)."""
RATE_LAG = 0.2
"""Seconds between the two exchanges of each pair :meth:`ClockFollower.peer_rate` compares."""
MAX_REFUSED_WARNINGS = 8
"""Other senders of timetagged messages named in a warning; more are only counted."""
MAX_PENDING = 256
MAX_PENDING_BYTES = 1 << 20
"""Held messages before lock: at most this many, and this many bytes of arguments (a blob bomb
of 528 MB once sat in this queue: issue #20 item 1)."""


def message_size(received: Received) -> int:
    """Bytes a held message costs, roughly (:func:`oscsync.osc.codec.footprint`, as the
    scheduler's cap counts them): the values inside its arrays too, which a 64 KB datagram can
    hold by the thousand."""
    return codec.footprint(received.message)


@dataclass(frozen=True)
class SyncStatus:
    """Where following a peer's clock stands (:meth:`ClockFollower.snapshot`)."""

    state: str
    """``acquiring`` (measuring; usable from the first estimate), ``locked`` (the map is only
    slewed from now on) or ``lost`` (no answer for a while: the map runs on at its last rate)."""
    synced: bool
    """True once there is a map: the peer's timetags can be translated onto our clock."""
    offset: float | None
    """Seconds the peer's clock is ahead of ours (None before the first estimate)."""
    bound: float
    """How far :attr:`offset` may be from the truth, in seconds (inf before the first
    estimate)."""
    ppm: float | None
    """How much faster the peer's clock runs than ours, in parts per million."""
    rtt: float | None
    """The last round trip to the peer, in seconds."""
    peer: tuple[str, int] | None
    """The address followed (None until the first timetagged message names it)."""

    @property
    def locked(self) -> bool:
        """True once acquisition is over (state ``locked``)."""
        return self.state == "locked"

    def line(self) -> str:
        """``sync locked +150.012 ± 0.080 ms +50.1 ppm rtt 40.2 ms`` (the live line's part)."""
        if self.offset is None or self.ppm is None:
            return f"sync {self.state}"
        text = (
            f"sync {self.state} {self.offset * 1e3:+.3f} ± {self.bound * 1e3:.3f} ms "
            f"{self.ppm:+.1f} ppm"
        )
        if self.rtt is not None:
            text += f" rtt {self.rtt * 1e3:.1f} ms"
        return text


class ClockFollower:
    """Translate one peer's timetags onto our clock through a servo-disciplined map."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        peer: tuple[str, int] | None = None,
        interval: float = INTERVAL,
        burst: int = BURST,
        burst_interval: float = BURST_INTERVAL,
        acquire_interval: float = ACQUIRE_INTERVAL,
        acquire_time: float = ACQUIRE_TIME,
        on_warning: Callable[[str], None] | None = None,
        max_pending: int = MAX_PENDING,
        max_pending_bytes: int = MAX_PENDING_BYTES,
        new_estimator: Callable[[], EnvelopeEstimator] = EnvelopeEstimator,
        new_servo: Callable[[], Servo] = Servo,
        auth: PacketAuth | None = None,
        room_poll: PollSettings | None = ROOM_POLL,
        name: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.clock = endpoint.clock
        self.auth = auth
        """The key's signer and checker: with one, only authenticated pongs and ticks count."""
        self.peer = peer
        self.interval = interval
        self.burst = burst
        self.burst_interval = burst_interval
        self.acquire_interval = acquire_interval
        self.acquire_time = acquire_time
        self._warn = on_warning or (lambda _: None)
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self.origin = self.clock.now_timetag()
        # Factories, not instances: a peer that moves (move_to) gets a fresh pair.
        self._new_estimator = new_estimator
        self._new_servo = new_servo
        self.estimator = new_estimator()
        self.servo = new_servo()
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self._outstanding: OrderedDict[int, int] = OrderedDict()
        self._pending: deque[tuple[Received, int]] = deque()
        self._pending_bytes = 0
        self._handler: Callable[[Received], None] | None = None
        self._handler_lock = threading.Lock()
        self._peer_known = threading.Event()
        if peer is not None:
            self._peer_known.set()
        self._stop = threading.Event()
        self._moved = threading.Event()
        self._synced = threading.Event()  # set from the first estimate (wait_synced)
        self._thread: threading.Thread | None = None
        self._pinger: Endpoint | None = None
        self._send_to: tuple[tuple[str, int], Callable[[bytes], object]] | None = None
        self._last_update = -float("inf")
        self._restarts_seen = 0
        self._estimate: ClockEstimate | None = None
        self._last_rtt: float | None = None
        self._round_trips: deque[float] = deque(maxlen=MAX_ROUND_TRIPS)
        self._peer_stamps: deque[tuple[float, float]] = deque(maxlen=MAX_ROUND_TRIPS)
        """(T1, T2) of the most recent well-formed exchanges, for :meth:`peer_rate`."""
        self.sent = 0
        self.answered = 0
        self.ignored: Counter[str] = Counter()
        """Pongs and messages not used, by reason (never moved the clock)."""
        self.locked_at: float | None = None
        """Wall time (ours) of the first estimate: from then on timetags are translated."""
        self.unsynced = 0
        """Timetagged messages dropped because they were due before the clock was synced."""
        self.moves = 0
        """Times :meth:`move_to` switched to another address."""
        self._warned_unauthenticated = False
        self._chosen_by = "--sync-peer" if peer is not None else ""
        """Why :attr:`peer` is followed (said when another sender is refused)."""
        self._answered_ever = False
        """Whether the followed peer has answered a ping (with a key: it holds the key)."""
        self._refused_senders: set[tuple[str, int]] = set()
        # -- the room (issue #33): the leader's multicast sync messages --
        self.room_poll = room_poll
        """How to ping once sync messages are heard; None: never use them (the lab's old
        followers)."""
        self.name = (name if name is not None else socket.gethostname())[: room.MAX_NAME]
        """What the leader's room view calls this follower."""
        self.playing: Callable[[], tuple[int, int]] = lambda: (0, 0)
        """(played, late) for the status reports: the listener's counts (a session sets it)."""
        self.authenticated_only = auth is not None
        """Use only sync messages signed with this process's key (``--key-file``): a sync
        message moves the clock as a pong does, so with a key it must be signed as a pong."""
        self.in_room = False
        """True once the followed leader's sync messages were taken (one signed with the key,
        or without a key a run of :data:`ROOM_CONFIRM`): the estimator and the pinging are the
        room's from then on."""
        self.syncs = 0
        self.syncs_lost = 0
        """Sync messages used, and missed (gaps in their sequence numbers)."""
        self.leader_restarts = 0
        """Times the leader's sync messages came with a new LEADER number (it restarted)."""
        self.reports_sent = 0
        self._poll: PollPolicy | None = None
        self._last_sync = -math.inf
        self._leader: int | None = None
        self._sync_seq = self._sync_first = self._sync_heard = self._sync_lost_before = 0
        self._previous_leader: int | None = None
        self._sync_run = 0
        self._sync_run_leader: int | None = None
        self._sync_run_last = -math.inf
        self._trouble = False
        self._next_report = -math.inf
        self._recent: deque[tuple[float, float, float, float]] = deque(maxlen=RECENT_EXCHANGES)
        endpoint.add_service(PONG, self._on_pong, PONG_METHOD.types, PONG_METHOD.description)
        if room_poll is not None:
            endpoint.add_service(
                room.SYNC, self._on_sync, room.SYNC_METHOD.types, room.SYNC_METHOD.description
            )
        if peer is not None:
            self._peer_chosen(peer)

    # -- time scale ---------------------------------------------------------------------------

    def _seconds(self, stamp: int) -> float:
        # Modular (RFC 5905 §6): a stamp past the 2036 rollover still follows the origin.
        return tt.difference(stamp, self.origin)

    def _now(self) -> float:
        return self._seconds(self.clock.now_timetag())

    # -- pinging ------------------------------------------------------------------------------

    def ping(self) -> None:
        send = self._sender()
        if send is None:
            return
        seq = int32(next(self._seq))
        # T1 as close to the wire as Python allows: everything but packing is done before it
        # (stamping first put ~20 µs of lookups into the outbound delay only: a bias of 10 µs).
        t1 = self.clock.now_timetag()
        data = encode_ping(seq, t1)
        if self.auth is not None:
            data = self.auth.sign_message(data)  # after T1, as the pong is signed after T3
        with self._lock:
            if len(self._outstanding) >= MAX_OUTSTANDING:
                self._outstanding.popitem(last=False)
            self._outstanding[seq] = t1
            self.sent += 1
        send(data)

    def _sender(self) -> Callable[[bytes], object] | None:
        """How to reach the peer: its own socket if we send to it, a pinger socket when we
        listen on a multicast group, else a reply from the listening socket."""
        peer = self.peer
        if peer is None:
            return None
        if self._send_to is not None and self._send_to[0] == peer:
            return self._send_to[1]
        send: Callable[[bytes], object]
        known = [p for p in self.endpoint.peers if p.sockaddr == peer]
        listening = self.endpoint.local_address
        if known:
            send = functools.partial(self.endpoint.send_bytes, peers=known[:1])
        elif listening is not None and listening.is_multicast:
            send = self._pinger_for(peer).send_bytes
        else:
            send = functools.partial(self.endpoint.reply, to=peer)
        self._send_to = (peer, send)
        return send

    def _pinger_for(self, peer: tuple[str, int]) -> Endpoint:
        # A socket bound to a multicast group cannot receive the leader's unicast pong (its
        # address is the group's), so a follower on a group pings from a socket of its own.
        if self._pinger is None:
            from oscsync.net.udp import Endpoint

            pinger = Endpoint(
                peers=[HostPort(*peer)],
                clock=self.clock,
                services={PONG: self._on_pong},
                verifier=None if self.auth is None else self.auth.verifier,
            )
            pinger.start(lambda received: None)
            self._pinger = pinger
        return self._pinger

    def follow(self, peer: tuple[str, int]) -> None:
        """Follow ``peer`` from now on (what ``--sync-peer`` says at start): pinging starts."""
        self.peer = peer
        self._chosen_by = "--sync-peer"
        self._peer_chosen(peer)
        self._peer_known.set()

    def _peer_chosen(self, peer: tuple[str, int]) -> None:
        """Say once, without a key, that a clock on another machine is followed unchecked."""
        if self.auth is not None or self._warned_unauthenticated or is_loopback(peer[0]):
            return
        self._warned_unauthenticated = True
        self._warn(
            f"clock sync with {escape(f'{peer[0]}:{peer[1]}')} is not authenticated: anyone "
            "who sees its pings can answer them and move this clock (give the same "
            "--key-file on both machines: docs/two-machines.md)"
        )

    def move_to(self, peer: tuple[str, int]) -> None:
        """Follow ``peer`` instead of the peer followed so far (``--sync-peer @NAME``
        re-registered elsewhere); safe to call from another thread while ticks and pongs arrive.

        The measurement starts over (a fresh estimator and servo, the burst again): the peer at
        the new address may be another process or machine, and one fit over two clocks would be
        neither's (the estimator only notices a step of its restart threshold, not a clock a
        millisecond off). Until the new estimate, ticks are held as at the start. From now on
        only ``peer`` steers the clock: pongs still on their way from the old address are
        ignored (``pong-not-from-peer``), and so are its ticks (``not-sync-peer``); ticks held
        from it are dropped (``sync-peer-moved``: they are on the old clock).
        """
        self._replace_peer(peer, moved=True)

    def _replace_peer(self, peer: tuple[str, int], *, moved: bool) -> None:
        # The handler lock first, as wrap() takes them: no tick is being translated by the old
        # map while it is replaced.
        with self._handler_lock, self._lock:
            if peer == self.peer:
                return
            self.peer = peer
            self._peer_chosen(peer)
            self._answered_ever = False
            if moved:
                self.moves += 1
            self._outstanding.clear()  # a pong answering an old ping is never used
            self.estimator = self._new_estimator()
            self.servo = self._new_servo()
            self._restarts_seen = 0
            self._last_update = -float("inf")
            self._estimate = None
            self._last_rtt = None
            self._round_trips.clear()
            self._peer_stamps.clear()
            self.sent = self.answered = 0  # the report's "N of M pings answered": this peer's
            self.locked_at = None
            self._synced.clear()
            self.in_room = False
            self._poll = None
            self._leader = self._previous_leader = None
            self._last_sync = -math.inf
            self._sync_run = 0
            self._recent.clear()
            if self._pending:
                self.ignored["sync-peer-moved"] += len(self._pending)
                self._pending.clear()
                self._pending_bytes = 0
            pinger = self._pinger
        if pinger is not None:  # a follower on a multicast group pings from a socket of its own
            pinger.set_peers([HostPort(*peer)])
        self._moved.set()
        self._peer_known.set()

    def start(self) -> None:
        self._thread = threads.daemon_thread(self._run, name="oscsync-clock")
        self.clock.enlist(self._thread)  # a FakeClock does not jump past its first wait
        threads.start(self._thread)

    def _run(self) -> None:
        clock = self.clock
        while not clock.wait(self._peer_known, 0.25):  # woken by the first tick heard
            if self._stop.is_set():
                return
        while not self._stop.is_set():
            self._moved.clear()
            self._ping_one_peer()

    def _ping_one_peer(self) -> None:
        """The burst, the acquisition, then steady pinging, until stopped or :meth:`move_to`
        (seen within one ping interval): then :meth:`_run` starts over for the new peer."""
        clock, stop, moved = self.clock, self._stop, self._moved
        for _ in range(self.burst):
            self.ping()
            if clock.wait(stop, self.burst_interval) or moved.is_set():
                return
        acquired = clock.monotonic() + self.acquire_time
        while clock.monotonic() < acquired and not self.in_room:
            self.ping()
            if clock.wait(stop, self.acquire_interval) or moved.is_set():
                return
        while not clock.wait(stop, self._next_interval()) and not moved.is_set():
            self.ping()
            self._report()

    def _next_interval(self) -> float:
        """Seconds to the next ping: the room's poll (:mod:`oscsync.sync.poll`) while the
        leader's sync messages come, else :attr:`interval` (as before issue #33)."""
        now = self.clock.monotonic()
        with self._lock:
            poll = self._poll
            if poll is None:
                return self.interval
            if now - self._last_sync > SYNC_SILENCE:
                poll.trouble(now)  # back to the acquiring rate when they come back
                return self.interval
            if self._trouble:
                self._trouble = False
                poll.trouble(now)
            return poll.next_interval(now, self.servo.bound(self._now()))

    def poll_interval(self) -> float:
        """Seconds between pings now."""
        with self._lock:
            poll = self._poll
            if poll is None or self.clock.monotonic() - self._last_sync > SYNC_SILENCE:
                return self.interval
            return poll.interval

    def status_report(self) -> room.Status:
        """What this follower tells its leader's room view."""
        snapshot = self.snapshot()
        played, late = self.playing()
        return room.Status(
            self.name,
            snapshot.state,
            snapshot.bound * 1e3,
            self.poll_interval(),
            played,
            late,
        )

    def _report(self) -> None:
        """Every :data:`~oscsync.sync.room.STATUS_INTERVAL` in a room: the status report."""
        if not self.in_room:
            return
        now = self.clock.monotonic()
        if now < self._next_report:
            return
        self._next_report = now + room.STATUS_INTERVAL
        send = self._sender()
        if send is not None:
            data = room.encode_status(self.status_report())
            if self.auth is not None:
                data = self.auth.sign_message(data)  # a leader with the key takes only these
            send(data)
            self.reports_sent += 1

    # -- the leader's sync messages -------------------------------------------------------------

    def _on_sync(self, endpoint: Endpoint, received: Received) -> None:
        self.take_sync(received)

    def take_sync(self, received: Received) -> bool:
        """Use one of the leader's sync messages if it is the followed peer's (and, with a key,
        signed); count it by reason otherwise. True if used."""
        if self.peer is None:
            return False  # whom to follow is told by --sync-peer or the first tick, not by this
        if received.source != self.peer:
            return self._ignore("sync-not-from-peer")
        if self.authenticated_only and not received.authenticated:
            return self._ignore("unauthenticated-sync")
        try:
            sync = room.parse_sync(received)
            t4 = tt.from_unix(received.arrival)
        except (room.RoomError, TypeError, ValueError, tt.TimetagError):
            return self._ignore("bad-sync")
        with self._lock:
            if not self.in_room:
                if not self._confirms_room(sync, t4):
                    return False
                self._enter_room()
            self._last_sync = self.clock.monotonic()
            self._count_sync(sync)
            if not self.servo.usable:
                # The offset is anchored by exchanges (which answer our own pings) first.
                return False
            s3, s4 = self._seconds(sync.t3), self._seconds(t4)
            if not self.estimator.add_reverse(s3, s4):
                self._trouble = True
                return self._ignore_locked("impossible-sync")
            self.syncs += 1
            event = None
            if s4 - self._last_update >= ROOM_UPDATE_EVERY:
                event = self._update_locked(s4, restarted=False)
        if event is not None and event.kind == "stepped":
            self._warn(self._step_warning(event, False))
        return True

    def _count_sync(self, sync: room.Sync) -> None:
        """Count a sync message heard, a restarted leader, and the ones missed: those between
        the first and the newest heard from this leader that never came (reordering moves
        one later, never loses it; a duplicate counts twice, as a datagram would)."""
        if sync.leader != self._leader:
            if sync.leader == self._previous_leader:
                return  # sent before the restart, overtaken on the way: not another restart
            if self._leader is not None:
                self.leader_restarts += 1
            self._previous_leader = self._leader
            self._leader = sync.leader
            self._sync_lost_before = self.syncs_lost
            self._sync_first = self._sync_seq = sync.seq
            self._sync_heard = 0
        elif 0 < sync.seq - self._sync_seq < 1 << 16:
            self._sync_seq = sync.seq
        self._sync_heard += 1
        self.syncs_lost = max(
            0, self._sync_lost_before + self._sync_seq - self._sync_first + 1 - self._sync_heard
        )

    def _confirms_room(self, sync: room.Sync, t4: int) -> bool:
        """Whether this sync message completes the run that puts the follower in a room
        (:data:`ROOM_CONFIRM`; called under the lock). With a key, a signed one is enough."""
        if self.authenticated_only:
            return True
        now = self.clock.monotonic()
        if sync.leader != self._sync_run_leader or now - self._sync_run_last > SYNC_SILENCE:
            self._sync_run = 0
        self._sync_run_leader, self._sync_run_last = sync.leader, now
        if not self.servo.usable:  # agreeing with nothing: the exchanges anchor the clock first
            self._sync_run = 0
            return False
        delay = self._seconds(t4) - self.servo.to_local(self._seconds(sync.t3))
        longest = max(self._round_trips, default=0.0)
        if not -SYNC_AGREE <= delay <= longest + SYNC_AGREE:
            self._sync_run = 0
            self._ignore_locked("sync-disagrees")
            return False
        self._sync_run += 1
        return self._sync_run >= ROOM_CONFIRM

    def _enter_room(self) -> None:
        """The leader's sync messages are heard: the room's estimator, refilled with the
        exchanges so far, and the room's pinging (called under the lock)."""
        assert self.room_poll is not None
        self.in_room = True
        self._poll = PollPolicy(self.room_poll, self.clock.monotonic())
        estimator = EnvelopeEstimator(window=ROOM_WINDOW, delay_memory=ROOM_MEMORY)
        for exchange in self._recent:
            estimator.add_exchange(*exchange)
        self.estimator = estimator
        self._restarts_seen = estimator.restarts

    def _update_locked(self, now: float, *, restarted: bool) -> ServoEvent | None:
        estimate = self.estimator.estimate(now)
        if estimate is None:
            return None
        self._estimate = estimate
        self._last_update = now
        return self.servo.update(estimate, now, restarted=restarted)

    # -- pongs --------------------------------------------------------------------------------

    def _on_pong(self, endpoint: Endpoint, received: Received) -> None:
        self.take_pong(received)

    def take_pong(self, received: Received) -> bool:
        """Use one pong if it is genuine; count it by reason otherwise. True if used."""
        if self.peer is None or received.source != self.peer:
            return self._ignore("pong-not-from-peer")
        if self.auth is not None and not received.authenticated:
            return self._ignore("unauthenticated-pong")
        try:
            pong = parse_pong(received)  # ,ittt, or ,itttf with the peer's playout latency
            seq, t1, t2, t3 = pong.seq, pong.t1, pong.t2, pong.t3
            t4 = tt.from_unix(received.arrival)
        except (ClockSyncError, TypeError, ValueError, tt.TimetagError):
            return self._ignore("malformed-pong")
        with self._lock:
            # Only the T1 we sent counts: anything else is stale, duplicated or forged.
            if self._outstanding.get(seq) != t1:
                return self._ignore_locked("unexpected-pong")
            del self._outstanding[seq]
            problem = exchange_problem(t1, t2, t3, t4)
            if problem is not None:
                return self._ignore_locked(problem)
            self.answered += 1
            self._answered_ever = True
            s1, s2, s3, s4 = (self._seconds(v) for v in (t1, t2, t3, t4))
            self._last_rtt = (s4 - s1) - (s3 - s2)
            self._round_trips.append(self._last_rtt)
            self._peer_stamps.append((s1, s2))
            if not self.in_room:
                self._recent.append((s1, s2, s3, s4))
            if not self.estimator.add_exchange(s1, s2, s3, s4):
                self.ignored["offset-jump"] += 1  # held back: a step, or a forgery
                self._trouble = True
            restarted = self.estimator.restarts != self._restarts_seen
            self._restarts_seen = self.estimator.restarts
            self._trouble = self._trouble or restarted
            event = None
            was_usable = self.servo.usable
            every = ROOM_UPDATE_EVERY if self.in_room else UPDATE_EVERY
            if restarted or not was_usable or s4 - self._last_update >= every:
                event = self._update_locked(s4, restarted=restarted)
            became_usable = self.servo.usable and not was_usable
        if event is not None and event.kind == "stepped":
            self._warn(self._step_warning(event, restarted))
        if became_usable:
            self.locked_at = received.arrival
            self._synced.set()
            self._release_pending()
        return True

    def _step_warning(self, event: ServoEvent, restarted: bool) -> str:
        why = (
            "the peer's clock restarted or stepped: its answers agreed on the new offset for "
            f"{CONFIRM_SPAN:g} s or more"
            if restarted
            else "error above 50 ms"
        )
        return f"clock sync: stepped by {event.error * 1e3:+.3f} ms ({why})"

    def _ignore(self, reason: str) -> bool:
        with self._lock:
            return self._ignore_locked(reason)

    def _ignore_locked(self, reason: str) -> bool:
        self.ignored[reason] += 1
        return False

    # -- translating --------------------------------------------------------------------------

    def wrap(self, handler: Callable[[Received], None]) -> Callable[[Received], None]:
        """The handler to give the endpoint instead of ``handler``."""
        self._handler = handler

        def follow(received: Received) -> None:
            stamp = received.timetag
            if stamp is None or stamp == tt.IMMEDIATELY:
                with self._handler_lock:
                    handler(received)
                return
            if self.auth is not None and not received.authenticated:
                self._refuse_sender(received.source, unsigned=True)
                return
            if self.peer is None:
                self.peer = received.source
                self._chosen_by = "first" if self.auth is None else "first-authenticated"
                self._peer_chosen(received.source)
                self._peer_known.set()
            elif received.source != self.peer:
                if not self._may_replace_with(received):
                    self._refuse_sender(received.source)
                    return
                # With a key, a chosen peer that never answered a ping may be a replay.
                self._replace_peer(received.source, moved=False)
            with self._handler_lock:
                if received.source != self.peer:  # move_to() ran since the check above
                    self._ignore("not-sync-peer")
                    return
                with self._lock:
                    usable = self.servo.usable
                    if not usable:
                        self._hold(received)
                        return
                self._release_pending_locked()
                translated = self._translated(received)
                if translated is not None:
                    handler(translated)

        return follow

    def _may_replace_with(self, received: Received) -> bool:
        """With a key and no ``--sync-peer``: an authenticated sender replaces a chosen peer
        that has not answered a ping yet (it may have sent a recorded tick, not hold the key)."""
        return (
            self.auth is not None
            and received.authenticated
            and self._chosen_by == "first-authenticated"
            and not self._answered_ever
        )

    def _refuse_sender(self, source: tuple[str, int], *, unsigned: bool = False) -> None:
        """Count another sender's timetagged message; name the sender once (issue #27 item 3),
        unless ``--sync-peer`` chose whom to follow (then refusing the rest is what was asked).
        With a key, an unsigned one (``unauthenticated``: on a clock nobody vouched for, e.g.
        Pure Data's, which cannot sign) is named once too."""
        self._ignore("unauthenticated" if unsigned else "not-sync-peer")
        peer = self.peer
        with self._lock:
            if (
                (peer is None and not unsigned)
                or (self._chosen_by == "--sync-peer" and not unsigned)
                or source in self._refused_senders
                or len(self._refused_senders) >= MAX_REFUSED_WARNINGS
            ):
                return
            self._refused_senders.add(source)
        where = escape(f"{source[0]}:{source[1]}")
        if unsigned:
            self._warn(
                f"clock sync: refused timetagged messages from {where}: not signed with this "
                "--key-file key (a sender without the key, or Pure Data, which cannot sign)"
            )
            return
        assert peer is not None
        why = {
            "first": "the first to send a timetagged message; nothing shows it is the leader: "
            "if it is not, start again with --sync-peer LEADER:PORT, or give the leader and "
            "this machine the same --key-file",
            "first-authenticated": "the first sender with this key that answered its pings",
        }.get(self._chosen_by, "")
        self._warn(
            f"clock sync: refused timetagged messages from {where}: "
            f"following {escape(f'{peer[0]}:{peer[1]}')} ({why})"
        )

    def _hold(self, received: Received) -> None:
        size = message_size(received)
        if (
            len(self._pending) >= self.max_pending
            or self._pending_bytes + size > self.max_pending_bytes
        ):
            self.ignored["sync-queue-full"] += 1
            return
        self._pending.append((received, size))
        self._pending_bytes += size

    def _release_pending(self) -> None:
        with self._handler_lock:
            self._release_pending_locked()

    def _release_pending_locked(self) -> None:
        # Held messages go out in arrival order, before anything that arrived after them;
        # one already due is dropped, not played late (issue #11, start-up).
        handler = self._handler
        while handler is not None:
            with self._lock:
                if not self._pending:
                    return
                received, size = self._pending.popleft()
                self._pending_bytes -= size
            translated = self._translated(received)
            if translated is None:
                continue
            assert translated.timetag is not None
            # Modular: a time just past the 2036 rollover is a small number, and later.
            if tt.difference(translated.timetag, self.clock.now_timetag()) <= 0:
                with self._lock:
                    self.unsynced += 1
                continue
            handler(translated)

    def _translated(self, received: Received) -> Received | None:
        stamp = received.timetag
        assert stamp is not None
        with self._lock:
            local = self.servo.to_local(self._seconds(stamp))
        try:
            translated = tt.add_seconds(self.origin, local)
        except (tt.TimetagError, ValueError, OverflowError):
            self._ignore("untranslatable-timetag")
            return None
        message = received.message._replace(timetag=translated)
        return received._replace(message=message)

    # -- reporting ----------------------------------------------------------------------------

    def estimate(self) -> ClockEstimate | None:
        """The newest estimate (offset of the peer at its time, frequency, bound)."""
        with self._lock:
            return self._estimate

    def fresh_estimate(self) -> ClockEstimate | None:
        """An estimate made now from every exchange so far (not the last servo update's)."""
        with self._lock:
            return self.estimator.estimate(self._now())

    def round_trip_times(self) -> list[float]:
        """The most recent round trips (seconds), oldest first."""
        with self._lock:
            return list(self._round_trips)

    def peer_rate(self, lag: float = RATE_LAG) -> float | None:
        """How fast the peer's clock runs against ours (1.0: the same rate; 0: frozen), from its
        T2 against our T1: the median over pairs of exchanges ``lag`` s apart, so that a step of
        its clock moves only the few pairs around it (issue #27 item 4). None before 3 pairs."""
        with self._lock:
            stamps = list(self._peer_stamps)
        rates = []
        later = 0
        for t1, t2 in stamps:
            while later < len(stamps) and stamps[later][0] - t1 < lag:
                later += 1
            if later == len(stamps):
                break
            u1, u2 = stamps[later]
            rates.append((u2 - t2) / (u1 - t1))
        if len(rates) < 3:
            return None
        rates.sort()
        return rates[len(rates) // 2]

    def ignored_counts(self) -> dict[str, int]:
        """Pongs and messages not used so far, by reason."""
        with self._lock:
            return dict(self.ignored)

    def counts(self) -> tuple[int, int, int]:
        """Pings sent, pongs used, pongs ignored."""
        with self._lock:
            return self.sent, self.answered, sum(self.ignored.values())

    def offset(self) -> float | None:
        """The map's offset now (peer minus us, seconds): what timetags are shifted by."""
        with self._lock:
            if not self.servo.usable:
                return None
            return self.servo.offset_at(self._now())

    def offset_and_bound(self) -> tuple[float | None, float]:
        """The map's offset now and how far it may be from the truth (what the live line shows)."""
        with self._lock:
            if not self.servo.usable:
                return None, float("inf")
            now = self._now()
            return self.servo.offset_at(now), self.servo.bound(now)

    def state(self) -> str:
        with self._lock:
            return self.servo.state(self._now())

    def status(self) -> str:
        """The live line's part: ``sync locked +150.012 ± 0.080 ms +50.1 ppm rtt 40.2 ms``."""
        return self.snapshot().line()

    def snapshot(self) -> SyncStatus:
        """Where the following stands now, read at once (safe from any thread)."""
        with self._lock:
            now = self._now()
            state = self.servo.state(now)
            peer = self.peer
            if not self.servo.usable:
                return SyncStatus(state, False, None, float("inf"), None, self._last_rtt, peer)
            return SyncStatus(
                state,
                True,
                self.servo.offset_at(now),
                self.servo.bound(now),
                self.servo.frequency * 1e6,
                self._last_rtt,
                peer,
            )

    @property
    def synced(self) -> bool:
        """True from the first estimate on: timetags can be translated (:meth:`to_local`)."""
        return self._synced.is_set()

    def wait_synced(self, timeout: float | None = None) -> bool:
        """Block until :attr:`synced` (or ``timeout`` seconds on the follower's clock); True if
        synced."""
        return self.clock.wait(self._synced, timeout)

    def to_local(self, timetag: int) -> int | None:
        """The peer's ``timetag`` as our timetag: when our clock will read what the peer's
        reads then. None before the first estimate (see :attr:`synced`)."""
        with self._lock:
            if not self.servo.usable:
                return None
            local = self.servo.to_local(self._seconds(timetag))
        try:
            return tt.add_seconds(self.origin, local)
        except (tt.TimetagError, ValueError, OverflowError):
            return None

    def describe(self, unit: str = "tick", *, dropped: str = "not played") -> str:
        """The summary line; ``unit`` names what was followed (``message`` for dump, bridge),
        ``dropped`` what became of one due before sync (dump: ``not printed``)."""
        who = f"the {unit} sender" if self.peer is None else f"{self.peer[0]}:{self.peer[1]}"
        with self._lock:
            answered, sent, steps = self.answered, self.sent, self.servo.steps
            ignored = dict(self.ignored)
            usable = self.servo.usable
            unsynced = self.unsynced
            moves = self.moves
            syncs, syncs_lost, restarts = self.syncs, self.syncs_lost, self.leader_restarts
            in_room = self.in_room
        if moves:  # a sync-peer @NAME that re-registered (move_to)
            who += f" (followed there after it re-registered: sync started over {moves}x)"
        if not usable:
            text = f"clock sync: no estimate of {who}'s clock ({answered} of {sent} pings answered)"
        else:
            text = f"clock sync with {who}: {self.status()}; {answered} of {sent} pings answered"
            text += f", steps {steps}"
        if in_room:
            text += (
                f"; in a room: {plural(syncs, 'sync message')} used ({syncs_lost} lost), "
                f"pinging every {self.poll_interval():g} s"
            )
            if restarts:
                text += f", the leader restarted {plural(restarts, 'time')}"
        if unsynced:
            text += f", {plural(unsynced, unit)} due before sync ({dropped})"
        if ignored:
            text += "; ignored " + ", ".join(f"{k} {v}" for k, v in sorted(ignored.items()))
        return text

    def close(self) -> None:
        self._stop.set()
        self._peer_known.set()
        thread = self._thread
        # Not one a stop signal kept from starting: joining it would raise (see Endpoint.close).
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(2.0)
        if self._pinger is not None:
            self._pinger.close()


FILTER_INTERVAL = 0.25
FILTER_BURST = 16
FILTER_BURST_INTERVAL = 0.01
"""The pinging before issue #11: 16 pings 10 ms apart, then 4 a second."""


class FilterFollower(ClockFollower):
    """The follower before issue #11, kept for ``benchmarks/clock_sync.py``'s comparison
    (``FollowerSpec(sync_method="filter")``): the same follower with the minimum-delay filter
    (:class:`~oscsync.sync.estimate.MinimumDelayFilter`) for the estimator, a map that takes each
    estimate as it is (:class:`~oscsync.sync.servo.SteppingServo`), and the old pinging."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        peer: tuple[str, int] | None = None,
        on_warning: Callable[[str], None] | None = None,
        auth: PacketAuth | None = None,
    ) -> None:
        super().__init__(
            endpoint,
            peer=peer,
            auth=auth,
            interval=FILTER_INTERVAL,
            burst=FILTER_BURST,
            burst_interval=FILTER_BURST_INTERVAL,
            acquire_time=0.0,
            on_warning=on_warning,
            new_estimator=MinimumDelayFilter,
            new_servo=SteppingServo,
            room_poll=None,
        )
