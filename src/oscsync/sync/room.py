"""A room of followers on one leader (issue #33): the leader's multicast sync messages, the
followers' status reports, and the leader's view of its room.

Today's follower pings its leader 100 times a second: 64 laptops on one access point would be
12,800 packets a second of pings and pongs, more small frames than a shared Wi-Fi channel
carries. PTP (IEEE 1588) serves any number of followers from one multicast Sync plus occasional
per-follower delay requests; this is that idea on OSC (``docs/protocol.md``):

* the leader sends ``/oscsync/clock/sync ,iit LEADER SEQ T3`` to its multicast group
  :data:`SYNC_RATE` times a second (T3: its clock just before sending, as a pong's T3; LEADER: a
  random number per run, SEQ counts from 1). Every follower takes each one as a reverse one-way
  sample (``T4 − T3``), the direction that fixes the offset *now*;
* each follower pings the leader as before, but once locked only a few times a second
  (:mod:`oscsync.sync.poll`): the forward samples fix the path's minimum delay, which does not
  drift, so the estimator remembers it for minutes
  (:attr:`oscsync.sync.estimate.EnvelopeEstimator.delay_memory`);
* each follower tells the leader how it is doing every :data:`STATUS_INTERVAL` seconds,
  ``/oscsync/room/status ,siffii NAME STATE BOUND_MS POLL PLAYED LATE``, and the leader's
  :class:`RoomView` keeps the table a workshop leader reads (``metronome send --room``).

Everything here is pure but for :class:`SyncBeacon`'s thread: no sockets (it sends through the
function it is given), and time only through the injected clock. A message that does not parse
is a drop reason, never an exception into the receive loop.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import struct
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from oscsync import threads
from oscsync.clock import Clock
from oscsync.osc.routing import Method, Received
from oscsync.sync.ping import int32

SYNC = "/oscsync/clock/sync"
STATUS = "/oscsync/room/status"

SYNC_RATE = 100.0
"""Sync messages a second. Each is one reverse sample for every follower at once, and the
reverse floor then fixes the offset: simulated with 64 followers on independent ±15 ms links,
the onset spread p99 was 0.28 ms 20-40 s after start at 100 a second and 0.54 ms at 50. The
cost is the room's, not a follower's: 100 multicast frames of 56 bytes a second (~1 % of a
channel's airtime at a 6 Mbit/s multicast rate), where 64 followers pinging as before #33 sent
12,800 unicast frames."""
STATUS_INTERVAL = 5.0
"""Seconds between a follower's status reports (0.2 packets a second)."""

MAX_NAME = 32
"""Characters of a follower's name kept (more are cut, counted ``long-name``)."""
MAX_FOLLOWERS = 256
"""Followers the room view remembers; a new one beyond is refused, counted ``room-full``
(forged source addresses cannot push real followers out, and the silent ones expire)."""
FORGET_AFTER = 3 * STATUS_INTERVAL
"""Seconds without a report before a follower leaves the room view."""

ACQUIRING, LOCKED, LOST = 0, 1, 2
STATES = {ACQUIRING: "acquiring", LOCKED: "locked", LOST: "lost"}
STATE_CODES = {name: code for code, name in STATES.items()}

SYNC_METHOD = Method(
    SYNC,
    "iit",
    "clock sync from the leader (LEADER, SEQ, T3: its clock when sending); a follower of that "
    "leader takes it as a one-way sample (docs/protocol.md)",
)
STATUS_METHOD = Method(
    STATUS,
    "siffii",
    "a follower's report to its leader: NAME, STATE (0 acquiring, 1 locked, 2 lost), "
    "BOUND_MS (its clock's ±), POLL (seconds between its pings), PLAYED, LATE",
)


class RoomError(ValueError):
    """A sync or status message that does not have the documented arguments; ``reason`` is
    its drop reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _osc_string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\x00"
    return raw + b"\x00" * (-len(raw) % 4)


_SYNC_HEAD = _osc_string(SYNC) + _osc_string(",iit")
_STATUS_HEAD = _osc_string(STATUS) + _osc_string(",siffii")


def encode_sync(leader: int, seq: int, t3: int) -> bytes:
    """``/oscsync/clock/sync ,iit LEADER SEQ T3`` (56 bytes)."""
    return _SYNC_HEAD + struct.pack(">iiQ", int32(leader), int32(seq), t3)


@dataclass(frozen=True, slots=True)
class Sync:
    leader: int
    seq: int
    t3: int


def parse_sync(received: Received) -> Sync:
    """The sync message in ``received``; :class:`RoomError` (``bad-sync``) if it is not one."""
    if received.message.types != "iit":
        raise RoomError("bad-sync")
    leader, seq, t3 = received.args
    if not isinstance(t3, int) or not 0 < t3 < 2**64:
        raise RoomError("bad-sync")
    return Sync(int(leader), int(seq), t3)


@dataclass(frozen=True, slots=True)
class Status:
    """A follower's report (:data:`STATUS`): what the room view shows of it."""

    name: str
    state: str
    bound_ms: float
    """Its clock's ± (how far it may be from the leader's), in milliseconds; inf before its
    first estimate."""
    poll: float
    """Seconds between its pings now."""
    played: int
    late: int


def encode_status(status: Status) -> bytes:
    """``/oscsync/room/status ,siffii ...`` (the name cut to :data:`MAX_NAME` characters)."""
    bound = status.bound_ms if math.isfinite(status.bound_ms) else -1.0
    return (
        _STATUS_HEAD
        + _osc_string(status.name[:MAX_NAME])
        + struct.pack(
            ">iffii",
            STATE_CODES[status.state],
            bound,
            status.poll,
            int32(status.played),
            int32(status.late),
        )
    )


def parse_status(received: Received) -> tuple[Status, bool]:
    """The report in ``received`` and whether its name was cut; :class:`RoomError`
    (``bad-room-status``) if it is not one. A bound below 0 means none yet (inf)."""
    if received.message.types != "siffii":
        raise RoomError("bad-room-status")
    name, state, bound, poll, played, late = received.args
    if not isinstance(name, str) or state not in STATES:
        raise RoomError("bad-room-status")
    bound_ms, poll_s = float(bound), float(poll)
    if not (math.isfinite(bound_ms) and math.isfinite(poll_s)) or poll_s < 0:
        raise RoomError("bad-room-status")
    played_count, late_count = int(played), int(late)
    if played_count < 0 or late_count < 0:
        raise RoomError("bad-room-status")
    return (
        Status(
            name[:MAX_NAME],
            STATES[int(state)],
            bound_ms if bound_ms >= 0 else math.inf,
            poll_s,
            played_count,
            late_count,
        ),
        len(name) > MAX_NAME,
    )


# -- the leader's side ----------------------------------------------------------------------


class SyncBeacon:
    """Sends the leader's sync messages through ``send`` (an endpoint's ``send_bytes`` to its
    multicast group) every ``interval`` seconds, on a thread of its own.

    Not on the tick sender's scheduler: a sync message needs no precise send time (T3 is read
    just before it is sent, whenever that is), and the ticks' timer thread should spin for
    ticks only. ``sign`` wraps each message before it is sent (a key's signature, issue #27).
    """

    def __init__(
        self,
        clock: Clock,
        send: Callable[[bytes], object],
        *,
        interval: float = 1.0 / SYNC_RATE,
        sign: Callable[[bytes], bytes] | None = None,
        leader: int | None = None,
    ) -> None:
        if not interval > 0:
            raise ValueError("the sync interval must be positive")
        self.clock = clock
        self._send = send
        self.interval = interval
        self._sign = sign
        self.leader = leader if leader is not None else int32(secrets.randbits(32)) or 1
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def send_one(self) -> None:
        """Send the next sync message now (T3 read as late as Python allows, as a pong's)."""
        self.sent += 1
        seq = self.sent
        t3 = self.clock.now_timetag()
        data = encode_sync(self.leader, seq, t3)
        self._send(data if self._sign is None else self._sign(data))

    def start(self) -> None:
        # A thread that keeps time (T3 is read just before sending): real-time priority where
        # the command was granted it, as its timer and receive threads (it runs ~0.1 ms in 10).
        self._thread = threads.daemon_thread(
            self._run, name="oscsync-sync-beacon", role=threads.TIMER
        )
        self.clock.enlist(self._thread)
        threads.start(self._thread)

    def _run(self) -> None:
        clock = self.clock
        # On a grid of its own, so a late wake-up does not slow the rate down.
        start = clock.monotonic()
        k = 0
        while not self._stop.is_set():
            with contextlib.suppress(OSError):  # the endpoint counts what it could not send
                self.send_one()
            k += 1
            due = start + k * self.interval
            now = clock.monotonic()
            if due < now:  # asleep for a while (a suspended laptop): no burst to catch up
                k = int((now - start) / self.interval) + 1
                due = start + k * self.interval
            if clock.wait(self._stop, due - now):
                return

    def close(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(2.0)


@dataclass
class Member:
    """One follower in the room view: its last report, where and when it came from."""

    address: tuple[str, int]
    status: Status
    heard: float
    """Our monotonic time of its last report."""
    reports: int = 1


@dataclass(frozen=True)
class RoomSummary:
    """The room at one moment (:meth:`RoomView.summary`)."""

    followers: int
    locked: int
    bound_max_ms: float | None
    """The largest ± a follower reported (None: none has an estimate): two followers' onsets
    may differ by up to the sum of their bounds."""
    bound_p50_ms: float | None
    played: int
    late: int
    members: tuple[Member, ...]
    dropped: dict[str, int]

    def to_json(self, at: float) -> dict[str, object]:
        """One line of ``metronome send --room`` piped (``at``: Unix seconds); json.dumps
        escapes what a follower put in its name."""
        return {
            "time": round(at, 3),
            "followers": self.followers,
            "locked": self.locked,
            "bound_max_ms": _rounded(self.bound_max_ms),
            "bound_p50_ms": _rounded(self.bound_p50_ms),
            "played": self.played,
            "late": self.late,
            "dropped": self.dropped,
            "members": [
                {
                    "address": f"{m.address[0]}:{m.address[1]}",
                    "name": m.status.name,
                    "state": m.status.state,
                    "bound_ms": _rounded(m.status.bound_ms),
                    "poll_s": round(m.status.poll, 3),
                    "played": m.status.played,
                    "late": m.status.late,
                    "reports": m.reports,
                }
                for m in self.members
            ],
        }

    def line(self) -> str:
        """``room 64 (64 locked) ± max 0.21 ms, p50 0.08 ms; late 0``."""
        text = f"room {self.followers} ({self.locked} locked)"
        if self.bound_max_ms is not None and self.bound_p50_ms is not None:
            text += f" ± max {self.bound_max_ms:.2f} ms, p50 {self.bound_p50_ms:.2f} ms"
        text += f"; late {self.late}"
        if self.dropped:
            text += f"; dropped {sum(self.dropped.values())}"
        return text


def _rounded(ms: float | None) -> float | None:
    return None if ms is None or not math.isfinite(ms) else round(ms, 4)


class RoomView:
    """The leader's table of its followers, from their status reports; thread-safe.

    Register :meth:`service` for :data:`STATUS` on the leader's endpoint. Bounded: at most
    ``max_followers`` (new ones beyond are refused, counted ``room-full``), each forgotten after
    ``forget_after`` seconds of silence. Names are cut to :data:`MAX_NAME` characters here and
    escaped by whoever prints them. With ``authenticated_only`` (the leader has a key) a report
    that was not signed with it is dropped (``unauthenticated-status``).
    """

    def __init__(
        self,
        clock: Clock,
        *,
        max_followers: int = MAX_FOLLOWERS,
        forget_after: float = FORGET_AFTER,
        authenticated_only: bool = False,
    ) -> None:
        self.clock = clock
        self.max_followers = max_followers
        self.forget_after = forget_after
        self.authenticated_only = authenticated_only
        self._members: OrderedDict[tuple[str, int], Member] = OrderedDict()
        self._lock = threading.Lock()
        self.dropped: Counter[str] = Counter()
        self.reports = 0

    def service(self, endpoint: object, received: Received) -> None:
        """The endpoint service for :data:`STATUS`."""
        self.take(received)

    def take(self, received: Received) -> bool:
        """Take one report; False (counted by reason) if it is dropped."""
        if self.authenticated_only and not received.authenticated:
            return self._drop("unauthenticated-status")
        try:
            status, cut = parse_status(received)
        except (RoomError, TypeError, ValueError, OverflowError):
            return self._drop("bad-room-status")
        now = self.clock.monotonic()
        source = received.source[:2]
        with self._lock:
            self._forget_silent(now)
            if cut:
                self.dropped["long-name"] += 1  # kept, cut: counted all the same
            member = self._members.get(source)
            if member is None:
                if len(self._members) >= self.max_followers:
                    self.dropped["room-full"] += 1
                    return False
                self._members[source] = Member(source, status, now)
            else:
                member.status, member.heard = status, now
                member.reports += 1
                self._members.move_to_end(source)
            self.reports += 1
        return True

    def _drop(self, reason: str) -> bool:
        with self._lock:
            self.dropped[reason] += 1
        return False

    def _forget_silent(self, now: float) -> None:
        while self._members:
            oldest = next(iter(self._members.values()))
            if now - oldest.heard <= self.forget_after:
                return
            del self._members[oldest.address]

    def summary(self) -> RoomSummary:
        """Who is in the room now, and how they are doing."""
        with self._lock:
            self._forget_silent(self.clock.monotonic())
            members = tuple(self._members.values())
            dropped = dict(self.dropped)
        bounds = sorted(m.status.bound_ms for m in members if math.isfinite(m.status.bound_ms))
        return RoomSummary(
            followers=len(members),
            locked=sum(m.status.state == "locked" for m in members),
            bound_max_ms=bounds[-1] if bounds else None,
            bound_p50_ms=bounds[len(bounds) // 2] if bounds else None,
            played=sum(m.status.played for m in members),
            late=sum(m.status.late for m in members),
            members=members,
            dropped=dropped,
        )
