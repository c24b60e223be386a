"""``oscsync bridge``: follow a leader's clock and forward what it sends to a local application.

Most music software cannot follow another machine's clock. The bridge does it for them: it
listens for the leader's timetagged OSC (ticks, steps, anything), translates each timetag from
the leader's clock onto this machine's with a :class:`~oscsync.sync.follow.ClockFollower` (the
follower of ``metronome listen --sync``), and forwards the message to one or more local
applications (``--to``) in one of two ways (:data:`MODES`):

* :data:`RETIMETAG` — for receivers that schedule bundles themselves (SuperCollider's scsynth,
  liblo servers): the message goes out at once, in a bundle whose timetag is the translated one
  plus ``latency``;
* :data:`AT_TIMETAG` — for receivers that play what arrives when it arrives (Pure Data, Max,
  TouchOSC, phone apps): the message is held by a :class:`~oscsync.scheduler.Scheduler` and sent
  as a plain message at the translated timetag plus ``latency`` (negative: that much earlier, to
  make up for the receiver's own output latency).

Plain messages (no timetag, or ``IMMEDIATELY``) are forwarded at once in both modes.
:class:`~oscsync.osc.rewrite.Rewriter` rules (``--map``) rename or rebuild each message on the
way. Before the clock is locked the follower holds timetagged messages (bounded) and releases
them at lock; one already due then is dropped and counted (``unsynced``), never played late.

Messages that the targets send back (scsynth's ``/fail``, ``/done``) arrive on the sockets
connected to them: they are counted, the first from each target is shown, and they are never
forwarded (that would loop) nor taken for the leader's clock.

Nothing here prints: records go to :attr:`BridgeSession.records` for the CLI, notices and
warnings to the setup's ``note`` and ``warn``.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from oscsync.apps.dump import clock_text
from oscsync.apps.receiving import ReceivingSession, SessionSetup
from oscsync.clock import Clock
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.rewrite import RewriteError, Rewriter
from oscsync.osc.routing import Received
from oscsync.scheduler import DEFAULT_HORIZON, KEEP, Dispatch, LatePolicy, Scheduler
from oscsync.stats import RecentSamples, percentile
from oscsync.sync import follow
from oscsync.terminal import display
from oscsync.terminal.wording import plural

RETIMETAG = "retimetag"
AT_TIMETAG = "at-timetag"
MODES = (RETIMETAG, AT_TIMETAG)

MAX_RECORDS = 4096
"""Records kept for the CLI to print (it takes them ten times a second); more are counted as
not shown rather than held: a flood must not grow memory or delay the forwarding threads."""
MAX_RECORD_BYTES = 32 * 1024 * 1024
"""Bytes those records may hold (what arrived and what went out, :func:`codec.footprint`): 4,096
records of a 16 MiB TCP packet in and out would otherwise be 128 GiB."""
HEADROOM_SAMPLES = 4096
FLUSH_TIMEOUT = 2.0
"""Seconds the bridge waits at the end for what it sent to a ``tcp://`` target to leave."""


class Forwarded(NamedTuple):
    """One message the bridge handled: what arrived (its timetag already on our clock), what
    went out, when it was due and when it left (wall seconds), or why it was dropped."""

    received: Received
    sent: codec.Message | None
    due: float | None
    at: float
    late: bool = False
    dropped: str | None = None


class Forwarder:
    """The bridge's work on each message, once its timetag is on our clock: rewrite it, then
    send it re-timetagged at once, or hold it and send it plain at its timetag.

    ``send`` sends encoded bytes to every target. ``scheduler`` (started by the owner) is used
    in :data:`AT_TIMETAG` mode only. ``on_record`` is called with each :class:`Forwarded`, on
    the thread that handled it (the receive or timer thread): keep it short.
    """

    def __init__(
        self,
        send: Callable[[bytes], object],
        clock: Clock,
        *,
        mode: str = AT_TIMETAG,
        scheduler: Scheduler | None = None,
        latency: float = 0.0,
        rewriter: Rewriter | None = None,
        late_policy: LatePolicy = KEEP,
        on_record: Callable[[Forwarded], None] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == AT_TIMETAG and scheduler is None:
            raise ValueError("the at-timetag mode needs a scheduler")
        self.send = send
        self.clock = clock
        self.mode = mode
        self.scheduler = scheduler
        self.latency = latency
        self.rewriter = rewriter or Rewriter()
        self.late_policy = late_policy
        self.on_record = on_record
        self._lock = threading.Lock()
        self.received = 0
        self.forwarded = 0
        self.timed = 0
        """Forwarded with a timetag (re-timetagged, or sent at it)."""
        self.arrived_late = 0
        """Re-timetagged bundles that left after their timetag (the receiver plays them late)."""
        self.dropped: Counter[str] = Counter()
        """Messages not forwarded by the bridge itself, by reason (the scheduler's are its own)."""
        self.headroom = RecentSamples(HEADROOM_SAMPLES)
        """Re-timetagged: seconds from sending to the timetag (what the receiver had to spare)."""

    def on_message(self, received: Received) -> None:
        """Forward one message (a receive handler, after the clock follower)."""
        with self._lock:
            self.received += 1
        try:
            out = self.rewriter.rewrite(received.message)
        except RewriteError as exc:
            self._drop(received, exc.reason)
            return
        if out is None:
            self._drop(received, "unmapped")
            return
        stamp = received.timetag
        if stamp is None or stamp == tt.IMMEDIATELY:
            self._forward_plain(received, out)
            return
        try:
            due_tag = tt.add_seconds(stamp, self.latency) if self.latency else stamp
            data = codec.encode_message(out.address, out.args, out.types)
        except (codec.EncodeError, tt.TimetagError, ValueError, OverflowError):
            self._drop(received, "unsendable")
            return
        sent = out._replace(timetag=due_tag)
        if self.mode == RETIMETAG:
            self._forward_retimetagged(received, sent, codec.encode_bundle(due_tag, [data]))
        else:
            self._hold(received, sent, data)

    def _forward_plain(self, received: Received, out: codec.Message) -> None:
        try:
            data = codec.encode_message(out.address, out.args, out.types)
        except codec.EncodeError:
            self._drop(received, "unsendable")
            return
        plain = out._replace(timetag=None)
        if self.scheduler is not None and self.mode == AT_TIMETAG:
            # Through the scheduler (inline when nothing is due before it): in order with the
            # held messages that fall due meanwhile.
            def now(dispatch: Dispatch) -> None:
                self.send(data)
                self._sent(received, plain, None, self.clock.now())

            if not self.scheduler.submit(None, now, size=len(data)):
                self._drop(received, "refused")
            return
        self.send(data)
        self._sent(received, plain, None, self.clock.now())

    def _forward_retimetagged(self, received: Received, sent: codec.Message, data: bytes) -> None:
        assert sent.timetag is not None
        now = self.clock.now()
        due = tt.to_unix(sent.timetag, now)
        bound = self.late_policy.drop_after
        if bound is not None and now - due > bound:
            self._drop(received, "late", due)
            return
        self.send(data)
        late = due < now
        with self._lock:
            self.timed += 1
            self.arrived_late += late
            self.headroom.add(due - now)
        self._sent(received, sent, due, now, late)

    def _hold(self, received: Received, sent: codec.Message, data: bytes) -> None:
        assert sent.timetag is not None and self.scheduler is not None
        clock = self.clock
        send = self.send

        def at_timetag(dispatch: Dispatch) -> None:
            send(data)  # first: everything else waits until the message is on its way
            # When it had left, not when the timer called (the record's "sent"): on a loaded
            # machine this thread can lose its CPU between the two for a millisecond or more.
            left = clock.monotonic()
            with self._lock:
                self.timed += 1
            to_wall = clock.monotonic_to_wall
            self._sent(received, sent, to_wall(dispatch.due), to_wall(left), dispatch.late)

        # The held message is declared in bytes: the scheduler caps those as well as items.
        size = len(data) + codec.footprint(received.message)
        if not self.scheduler.submit(sent.timetag, at_timetag, size=size):
            self._drop(received, "refused", tt.to_unix(sent.timetag, self.clock.now()))

    def _sent(
        self,
        received: Received,
        sent: codec.Message,
        due: float | None,
        at: float,
        late: bool = False,
    ) -> None:
        with self._lock:
            self.forwarded += 1
        if self.on_record is not None:
            self.on_record(Forwarded(received, sent, due, at, late))

    def _drop(self, received: Received, reason: str, due: float | None = None) -> None:
        with self._lock:
            self.dropped[reason] += 1
        if self.on_record is not None:
            self.on_record(Forwarded(received, None, due, self.clock.now(), dropped=reason))


def _reply_head(received: Received) -> str:
    """A target's reply as one printable line (it comes from the network)."""
    text = display.escape(received.message.address)
    args = display.format_args(received.message)
    return f"{text} {args}" if args else text


class BridgeSession(ReceivingSession):
    """``oscsync bridge``: an endpoint on ``listen`` that sends to ``targets``, a clock follower
    (:meth:`start` with ``sync``), a :class:`Forwarder`, and in :data:`AT_TIMETAG` mode its
    scheduler. :attr:`done` is set after ``limit`` messages are forwarded."""

    def __init__(
        self,
        listen: HostPort,
        targets: Sequence[HostPort],
        setup: SessionSetup,
        *,
        mode: str = AT_TIMETAG,
        latency: float = 0.0,
        rewriter: Rewriter | None = None,
        late_policy: LatePolicy = KEEP,
        horizon: float = DEFAULT_HORIZON,
        limit: int | None = None,
    ) -> None:
        super().__init__(
            listen,
            targets,
            setup,
            schedule=mode == AT_TIMETAG,
            late_policy=late_policy,
            horizon=horizon,
            # A plain message is sent by the receive thread when nothing is due before it.
            inline_due=True,
        )
        self.mode = mode
        self.targets = tuple(targets)
        self.limit = limit
        self.done = threading.Event()
        self.records: deque[Forwarded] = deque()
        self.records_not_shown = 0
        self._records_bytes = 0
        self._records_lock = threading.Lock()
        self.replies: Counter[tuple[str, int]] = Counter()
        """Messages the targets sent back, by target (never forwarded)."""
        try:
            self.forwarder = Forwarder(
                self.endpoint.send_bytes,
                self.clock,
                mode=mode,
                scheduler=self.scheduler,
                latency=latency,
                rewriter=rewriter,
                late_policy=late_policy,
                on_record=self._keep,
            )
        except BaseException:  # a mode that is none of MODES: the endpoint is open already
            self.close()
            raise

    def _keep(self, record: Forwarded) -> None:
        cost = codec.footprint(record.received.message)
        if record.sent is not None:
            cost += codec.footprint(record.sent)
        with self._records_lock:
            if len(self.records) < MAX_RECORDS and self._records_bytes + cost <= MAX_RECORD_BYTES:
                self.records.append(record)
                self._records_bytes += cost
            else:
                self.records_not_shown += 1
        if (
            self.limit is not None
            and record.dropped is None
            and self.forwarder.forwarded >= self.limit
        ):
            self.done.set()

    def take_records(self) -> list[Forwarded]:
        """The records since the last call, oldest first."""
        with self._records_lock:
            taken = list(self.records)
            self.records.clear()
            self._records_bytes = 0
        return taken

    def start(
        self,
        sync: str | None = None,
        sync_peer: HostPort | None = None,
        *,
        sync_interval: float = follow.INTERVAL,
        sync_start_interval: float = follow.ACQUIRE_INTERVAL,
    ) -> None:
        """Start forwarding; with ``sync``/``sync_peer`` through a clock follower
        (:meth:`~oscsync.apps.receiving.ReceivingSession.follow`)."""
        self.note(f"listening on {self.endpoint.local_address}")
        # With a key (--key-file) the leader's pongs and timetags must be signed with it; what
        # the bridge forwards to its local targets is not signed (they know no key).
        follower = self.follow(
            sync, sync_peer, interval=sync_interval, start_interval=sync_start_interval
        )
        forward: Callable[[Received], None] = self.forwarder.on_message
        if follower is not None:
            forward = follower.wrap(forward)

        def from_leader(received: Received) -> None:
            # Before the follower: a target's reply is neither forwarded (a loop) nor taken
            # for the leader's clock (the first timetagged sender would be followed).
            if received.via_peer:
                self._reply(received)
            else:
                forward(received)

        self._receive(from_leader, follower)

    def _reply(self, received: Received) -> None:
        first = received.source not in self.replies
        self.replies[received.source] += 1
        if first:
            host, port = received.source
            self.warn(
                f"{host}:{port} answered: {_reply_head(received)} (replies are not forwarded)"
            )

    def status(self) -> str:
        """The live line: ``forwarded 12, late 0, dropped 1  sync locked +0.012 ± 0.080 ms``."""
        forwarder = self.forwarder
        late = forwarder.arrived_late
        dropped = sum(forwarder.dropped.values())
        if self.scheduler is not None:
            stats = self.scheduler.stats()
            late = stats.late
            # A message the scheduler refused is counted by both: once here, by its reason.
            dropped += stats.dropped_total - forwarder.dropped["refused"]
        text = f"forwarded {forwarder.forwarded}, late {late}, dropped {dropped}"
        if self.follower is not None:
            text += "  " + self.follower.status()
        return text

    def close(self) -> None:
        """Stop the follower and the scheduler (held messages are discarded and counted
        ``closed``), let what was sent leave (a ``tcp://`` target may still be connecting),
        then close the endpoint."""
        if self.follower is not None:
            self.follower.close()
        if self.scheduler is not None:
            self.scheduler.close()
        self.endpoint.flush(FLUSH_TIMEOUT)
        self.endpoint.close()

    def summary(self) -> list[str]:
        """Lines for stderr when the bridge stops."""
        lines = [self._forwarding_summary()]
        if self.follower is not None:
            lines.append(self.follower.describe("message", dropped="not forwarded"))
        stats = self.endpoint.stats
        if stats.dropped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.drops.items()))
            lines.append(f"bad datagrams dropped: {stats.dropped} ({reasons})")
        if stats.send_errors:
            errors = ", ".join(f"{reason} {n}" for reason, n in sorted(stats.send_errors.items()))
            lines.append(f"send errors: {errors}")
        if self.replies:
            lines.append(
                "replies from the targets (not forwarded): "
                + ", ".join(f"{h}:{p} {n}" for (h, p), n in sorted(self.replies.items()))
            )
        if self.records_not_shown:
            lines.append(f"{self.records_not_shown} records not shown (output too slow)")
        return lines

    def _forwarding_summary(self) -> str:
        forwarder = self.forwarder
        where = ", ".join(str(target) for target in self.targets)
        shift = f" {forwarder.latency * 1e3:+g} ms" if forwarder.latency else ""
        dropped: Counter[str] = Counter(forwarder.dropped)
        if self.mode == RETIMETAG:
            how = f"re-timetagged{shift}"
            late = f"{forwarder.arrived_late} after their timetag"
        else:
            how = f"at their timetag{shift}"
            assert self.scheduler is not None
            stats = self.scheduler.stats()
            dropped.update(stats.dropped)
            dropped.pop("refused", None)  # the scheduler's own reasons say why
            late = f"{stats.late} late"
        text = (
            f"bridge: received {plural(forwarder.received, 'message')}; forwarded "
            f"{forwarder.forwarded} to {where} {how} ({forwarder.timed} timetagged), {late}"
        )
        if dropped:
            reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(dropped.items()))
            text += f"; dropped {sum(dropped.values())} ({reasons})"
        else:
            text += "; dropped 0"
        if self.mode == RETIMETAG:
            samples = sorted(forwarder.headroom.samples)
            if samples:
                text += (
                    f"; headroom min {samples[0] * 1e3:.3f} ms, "
                    f"p50 {percentile(samples, 0.5) * 1e3:.3f} ms"
                )
        else:
            assert self.scheduler is not None
            stats = self.scheduler.stats()
            if stats.lateness_max is not None:
                assert stats.lateness_p50 is not None and stats.lateness_p99 is not None
                text += (
                    f"; lateness p50 {stats.lateness_p50 * 1e6:.1f} µs, "
                    f"p99 {stats.lateness_p99 * 1e6:.1f} µs, max {stats.lateness_max * 1e6:.1f} µs"
                )
        return text


# -- records as lines -------------------------------------------------------------------------


def _message_text(message: codec.Message) -> str:
    args = display.format_args(message)
    head = f"{display.escape(message.address)} ,{message.types}"
    return f"{head} {args}" if args else head


def record_line(record: Forwarded) -> str:
    """``HH:MM:SS.ffffff  SOURCE  /tick ,i 1 -> /s_new ,siii tick -1 0 0  @TIMETAG (+0.012 ms)``
    (times in UTC: when it was sent; the offset is from the timetag: + = after it)."""
    host, port = record.received.source
    source = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    head = f"{clock_text(record.at)}  {source}  {_message_text(record.received.message)}"
    if record.sent is None:
        return f"{head}  dropped ({record.dropped})"
    text = f"{head} -> {_message_text(record.sent)}"
    stamp = record.sent.timetag
    if stamp is not None and record.due is not None:
        text += f"  @{tt.format_hex(stamp)} ({(record.at - record.due) * 1e3:+.3f} ms)"
    return text


_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def record_json(record: Forwarded) -> str:
    """One JSON object: ``arrival``, ``source``, ``address``, ``types``, ``args`` (as
    received), then ``to_address``, ``to_types``, ``to_args``, ``timetag`` (hex, on our clock,
    latency included), ``due`` and ``sent`` (Unix seconds), ``lateness_ms`` (sent − due) and
    ``late``; or ``dropped`` (the reason) instead of the ``to_`` keys."""
    received = record.received
    host, port = received.source
    item: dict[str, Any] = {
        "arrival": round(received.arrival, 6),
        "source": f"{host}:{port}",
        "address": display.json_text(received.message.address),
        "types": received.message.types,
        "args": display.json_args(received.message),
    }
    if record.sent is None:
        item["dropped"] = record.dropped
        item["sent"] = None
    else:
        sent = record.sent
        item["to_address"] = display.json_text(sent.address)
        item["to_types"] = sent.types
        item["to_args"] = display.json_args(sent)
        item["timetag"] = None if sent.timetag is None else tt.format_hex(sent.timetag)
        item["sent"] = round(record.at, 6)
    item["due"] = None if record.due is None else round(record.due, 6)
    item["lateness_ms"] = None if record.due is None else (record.at - record.due) * 1e3
    item["late"] = record.late
    return _JSON.encode(item)
