"""Sessions: the parts a metronome or sequence run wires together, below the CLI (issue #12).

A run is made of five parts: an endpoint, a scheduler (one timer thread), the clock pings that
``--offset auto`` and listeners' ``--sync`` need (:class:`~oscsync.sync.ping.PeerClocks`, answered
by the endpoint's services), a clock follower (``--sync``) and, when listening, a player fed by a
listener. :class:`SendSession` is the sending half, :class:`ListenSession` the listening half
(:class:`TickListenSession` for ``/tick``, :class:`SequenceListenSession` for ``/seq/VOICE``);
``pair`` is a listen session whose endpoint also sends, with the sender's items on the listener's
scheduler. The CLI declares options, builds one of these, waits, and prints; the lab builds its
followers from the same parts.

Nothing here prints: notices and warnings go to the ``note`` and ``warn`` callables, records to
``show``; a failure the user must see is a :class:`SessionError` (one line).
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Generic, Protocol, TextIO, TypeVar, cast

from oscsync import audio
from oscsync.apps import metronome as app_metronome
from oscsync.apps.grid import StepGrid
from oscsync.apps.metronome import TICK_METHOD, MetronomeListener, TickRecord, TickSender
from oscsync.apps.receiving import SendingSession, Session, SessionSetup
from oscsync.apps.sequence import (
    VOICE_METHODS,
    EventRecord,
    PatternFile,
    SequenceListener,
    SequenceSender,
    VoiceSounds,
    file_sender,
)
from oscsync.apps.ticklog import LogWriter
from oscsync.audio import sounds
from oscsync.clock import Clock
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc.auth import PacketAuth
from oscsync.osc.routing import Method, Received
from oscsync.scheduler import DEFAULT_SPIN, Scheduler
from oscsync.sync import follow
from oscsync.sync.follow import ClockFollower
from oscsync.sync.ping import (
    PING,
    PONG,
    PONG_METHOD,
    SERVICE_METHODS,
    PeerClocks,
    PingResponder,
)
from oscsync.sync.room import STATUS, STATUS_METHOD, RoomView, SyncBeacon

Note = Callable[[str], None]
R = TypeVar("R")

AUTO = "auto"
"""``--offset auto``: ping the peers first and pick the offset from the measured delays."""
AUTO_PINGS = 16
AUTO_INTERVAL = 0.02
AUTO_TIMEOUT = 1.0
GRACE = 0.25
"""Seconds ``pair`` keeps listening after its last item's timetag, for that item to come back."""


class SessionError(Exception):
    """A session cannot go on; the message is one line for the user (the CLI exits 1 with it)."""


def _ignore(_: Received) -> None:
    pass


def auto_offset(clocks: PeerClocks, *, note: Note, warn: Note, maximum: float) -> float:
    """``--offset auto``: ping each peer, then cover the slowest one-way delay (see
    :meth:`~oscsync.sync.ping.PeerClocks.choose_offset`), at most ``maximum`` seconds."""
    choice, silent = clocks.choose_offset(AUTO_PINGS, AUTO_INTERVAL, AUTO_TIMEOUT)
    # Answers that came but were refused are not silence (issue #27: with a key, a listener
    # without it answers unsigned): say which it was.
    refused = {peer for peer in silent if clocks.syncs[peer].ignored}
    if choice is None:
        why = (
            "the peers' answers were refused (not signed with this --key-file key?)"
            if refused
            else "no peer answered the clock pings (is an oscsync listener there?)"
        )
        raise SessionError(f"--offset auto: {why}; give --offset SECONDS instead")
    for peer in silent:
        if peer in refused:
            warn(f"--offset auto: {peer}'s answers were refused (not signed with this key?)")
        else:
            warn(f"--offset auto: {peer} did not answer clock pings; it is not covered")
    note(choice.describe())
    return min(choice.offset, maximum)


def peer_clocks(
    clock: Clock, endpoint: Endpoint, peers: Sequence[HostPort], auth: PacketAuth | None = None
) -> PeerClocks:
    """Clock pings to ``peers`` (for ``--offset auto``), their pongs answered on ``endpoint``
    (signed, and only signed pongs taken, with a key)."""
    clocks = PeerClocks(clock, endpoint, peers, filter_size=AUTO_PINGS, auth=auth)
    endpoint.add_service(PONG, clocks.service, PONG_METHOD.types, PONG_METHOD.description)
    return clocks


class SendSession(SendingSession):
    """The sending half of ``send``: an endpoint to the peers, a scheduler, and clock pings.

    The endpoint is started at once even without ``--offset auto``: its services answer the
    clock pings of listeners that follow this sender's clock (``listen --sync``).
    """

    def __init__(
        self,
        peers: Sequence[HostPort],
        setup: SessionSetup,
        *,
        spin: float = DEFAULT_SPIN,
        room: bool | None = None,
    ) -> None:
        super().__init__(peers, setup, spin=spin)
        self.send = setup.sender(self.endpoint)
        """Sends to the peers, each bundle signed with a key."""
        self.beacon: SyncBeacon | None = None
        """The room's sync messages (issue #33), sent while the session is open: with ``room``
        None to the multicast groups among the peers, True to every peer, False to none (the
        lab's followers as before #33)."""
        auth = setup.auth
        self.room = RoomView(self.clock, authenticated_only=auth is not None)
        """What the followers report (``--room`` shows it); with a key, only signed reports."""
        self.room_to_all = room is True
        try:
            self.clocks = peer_clocks(self.clock, self.endpoint, peers, setup.auth)
            self.endpoint.add_service(
                STATUS, self.room.service, STATUS_METHOD.types, STATUS_METHOD.description
            )
            if room or (room is None and any(peer.is_multicast for peer in peers)):
                # With a key each sync message is signed, as a pong is: it moves clocks.
                sign = None if auth is None else auth.sign_message
                self.beacon = SyncBeacon(self.clock, self._send_sync, sign=sign)
                self.beacon.start()
        except BaseException:
            self.close()  # the endpoint and scheduler the base opened; nobody else holds them
            raise

    def _send_sync(self, data: bytes) -> None:
        if self.room_to_all:
            self.endpoint.send_bytes(data)
            return
        groups = [peer for peer in self.endpoint.peers if peer.is_multicast]
        if groups:
            self.endpoint.send_bytes(data, peers=groups)

    def close(self) -> None:
        beacon = getattr(self, "beacon", None)
        if beacon is not None:
            beacon.close()
        super().close()

    def offset(self, offset: float | str, maximum: float) -> float:
        """``offset`` in seconds, measured first when it is :data:`AUTO`."""
        if offset == AUTO:
            return auto_offset(self.clocks, note=self.note, warn=self.warn, maximum=maximum)
        assert isinstance(offset, float)
        return offset

    def tick_sender(
        self,
        *,
        bpm: float,
        beats_per_bar: int,
        offset: float,
        plain: bool | None = None,
        grid: StepGrid | None = None,
    ) -> TickSender:
        """``metronome send`` (and the lab's leader): ``/tick`` on the grid (or on ``grid``:
        a Link session's, ``--link``), through this endpoint and scheduler."""
        return TickSender(
            self.send,
            self.scheduler,
            bpm=bpm,
            beats_per_bar=beats_per_bar,
            offset=offset,
            plain=plain,
            grid=grid,
        )

    def pattern_sender(self, watched: PatternFile, **grid: Any) -> SequenceSender:
        """``sequence send``: ``watched``'s steps (see :func:`~oscsync.apps.sequence.file_sender`
        for ``grid``: bpm, steps_per_beat, beats_per_bar, swing, offset, and a Link session's
        ``grid``)."""
        return file_sender(self.send, self.scheduler, watched, note=self.note, **grid)


def _pong_router(
    follower: ClockFollower, clocks: PeerClocks
) -> Callable[[Endpoint, Received], None]:
    """Pongs for --offset auto's pings and for the clock follower's, on one endpoint: the
    follower takes those from the peer it follows, --offset auto (which matches its own pings
    and ignores the rest) sees every one."""

    def route(endpoint: Endpoint, received: Received) -> None:
        clocks.service(endpoint, received)
        if received.source == follower.peer:
            follower.take_pong(received)

    return route


class Follower(Protocol):
    """What a listen session needs of a clock follower (:class:`ClockFollower`, or the lab's
    :class:`~oscsync.sync.follow.FilterFollower`)."""

    def wrap(self, handler: Callable[[Received], None]) -> Callable[[Received], None]: ...

    def start(self) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


class ListenSession(Session, Generic[R]):
    """The listening half shared by ``listen`` and ``pair``: endpoint, player, scheduler,
    listener, and with ``--sync`` a clock follower.

    :attr:`done` is set after ``limit`` records, when the player or the log fails, or on
    :meth:`stop`; whatever is in :attr:`on_failure` (pair's sender) stops with it. ``show`` is
    called with each record (the CLI prints it). Subclasses open the player and the listener.
    """

    listener: MetronomeListener | SequenceListener
    scheduler: Scheduler
    methods: tuple[Method, ...] = ()
    """The addresses this session answers to, registered on its endpoint (OSCQuery lists
    them)."""
    player: audio.Player

    def __init__(
        self,
        listen: HostPort,
        peers: Sequence[HostPort],
        setup: SessionSetup,
        *,
        log: LogWriter | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(setup)
        self.log = log
        self.limit = limit
        self.done = threading.Event()
        self.listening_on: HostPort | None = None
        self.failure: str | None = None
        self.on_failure: list[Callable[[], None]] = []
        self.show: Callable[[R], None] | None = None
        self.follower: ClockFollower | None = None
        """Set by :meth:`start` with ``--sync``: its state joins the live line."""
        self.followed_by: Follower | None = None
        """The follower :meth:`start` wrapped the listener in (the lab gives its own)."""
        self.clocks: PeerClocks | None = None
        self.endpoint = setup.open_endpoint(listen, peers)
        if log is not None:
            log.on_error = self._log_failed
        try:
            self._open()
        except BaseException:
            self.endpoint.close()
            raise
        # Its pongs tell a pinging sender how long this player needs before a timetag, so that
        # --offset auto covers it (docs/protocol.md: the optional PLAYOUT argument).
        responder = PingResponder(playout=self.playout)
        ping = SERVICE_METHODS[PING]
        self.endpoint.add_service(PING, responder.service, ping.types, ping.description)
        description = self.player.describe()
        if description:
            self.note(description)

    def _open(self) -> None:
        """Open :attr:`player`, then :attr:`scheduler` and :attr:`listener`, and start them."""
        raise NotImplementedError

    def playout(self) -> float | None:
        """The player's playout latency for this endpoint's pongs; None when it needs none."""
        return audio.playout_of(self.player) or None

    def _on_record(self, record: R, seq: int) -> None:
        if self.show is not None:
            self.show(record)
        if self.limit is not None and seq + 1 >= self.limit:
            self.done.set()

    def _log_failed(self, exc: OSError) -> None:
        # Stop at once: a log that cannot be written is an error the user must see now, not
        # after an hour of ticks that were never recorded (the CLI reports it, exit 1).
        self.stop()

    def _fail(self, message: str) -> None:
        """The player cannot go on (a WAV that cannot be written): stop, and exit 1 with it."""
        self.failure = message
        self.stop()

    def stop(self) -> None:
        self.done.set()
        for stop in self.on_failure:
            stop()

    def status(self) -> str:
        """The live line: the listener's counters, and the follower's state with ``--sync``."""
        status = self.listener.status()
        if self.follower is not None:
            status += "  " + self.follower.status()
        return status

    def start(
        self,
        sync: str | None = None,
        sync_peer: HostPort | None = None,
        *,
        pings_to: Sequence[HostPort] | None = None,
        follower: Follower | None = None,
        sync_interval: float = follow.INTERVAL,
        sync_start_interval: float = follow.ACQUIRE_INTERVAL,
    ) -> None:
        """Start receiving; with ``sync``/``sync_peer`` through a clock follower pinging at
        ``sync_start_interval`` then ``sync_interval`` (:meth:`SessionSetup.follower`), or through
        ``follower``, built by the caller; and with ``pings_to`` (pair) answering pongs for
        ``--offset auto``'s pings to those peers."""
        self.listening_on = self.endpoint.local_address  # the socket is gone after close()
        self.note(f"listening on {self.listening_on}")
        if pings_to is not None:
            self.clocks = peer_clocks(self.clock, self.endpoint, pings_to, self.setup.auth)
        handler: Callable[[Received], None] = self.listener.on_message
        if follower is None:
            self.follower = self.setup.follower(
                self.endpoint,
                sync,
                sync_peer,
                interval=sync_interval,
                start_interval=sync_start_interval,
            )
            follower = self.follower
            if self.follower is not None and self.clocks is not None:
                self.endpoint.add_service(
                    PONG,
                    _pong_router(self.follower, self.clocks),
                    PONG_METHOD.types,
                    PONG_METHOD.description,
                )
        self.followed_by = follower
        if self.follower is not None:
            self.follower.playing = self.played
        if follower is not None:
            handler = follower.wrap(handler)
        for method in self.methods:
            self.endpoint.registry.add_method(method, handler)
        # Everything else goes to the listener too, which counts it ignored, by reason.
        self.endpoint.start(handler)
        if follower is not None:
            follower.start()

    def played(self) -> tuple[int, int]:
        """(played, late) so far: what the clock follower reports to a room's leader."""
        stats = self.listener.stats
        played = stats.ticks if isinstance(stats, app_metronome.ListenerStats) else stats.events
        return played, stats.late

    def move_sync_peer(self, peers: Sequence[HostPort]) -> None:
        """Follow the clock of ``peers[0]`` from now on, from scratch (``--sync-peer @NAME``
        re-registered elsewhere: :meth:`~oscsync.sync.follow.ClockFollower.move_to`)."""
        if self.follower is not None:
            self.follower.move_to(peers[0].sockaddr)

    def offset(self, offset: float | str, maximum: float) -> float:
        """pair: ``offset`` in seconds, measured first when it is :data:`AUTO`."""
        if offset == AUTO:
            assert self.clocks is not None, "start(pings_to=...) first"
            return auto_offset(self.clocks, note=self.note, warn=self.warn, maximum=maximum)
        assert isinstance(offset, float)
        return offset

    def close_follower(self, *, sync_requested: bool = False) -> None:
        """Stop the clock follower and say how it did (``sync_requested``: say so when there
        was nobody to follow, issue #13)."""
        if self.followed_by is not None:
            self.followed_by.close()
        if sync_requested and (self.follower is None or self.follower.peer is None):
            # Stopped before any tick came: there was nobody to follow (issue #13).
            self.note("clock sync: no ticks arrived, so there was no sender's clock to follow")
        elif self.followed_by is not None:
            self.note(self.followed_by.describe())

    def close(self) -> None:
        """Close the endpoint, scheduler and player (a player failure is kept in
        :attr:`failure`); the caller prints :meth:`summary`."""
        self.endpoint.close()
        self.scheduler.close()
        try:
            self.player.close()
        except (audio.AudioError, OSError) as exc:
            self._player_close_failed(exc)

    def _player_close_failed(self, exc: Exception) -> None:
        if self.failure is None:
            self.failure = str(exc)

    def summary(self) -> str:
        raise NotImplementedError

    def silence_hint(self) -> str | None:
        """One line saying what to check when not one datagram arrived, else None (issue 30:
        a patch that stopped sending left a bare "ticks 0")."""
        stats = self.endpoint.stats
        if stats.datagrams or stats.dropped or self.listening_on is None:
            return None
        return (
            f"nothing arrived on {self.listening_on}: is the sender running, and "
            "sending to this address and port? (Pure Data's example patches send to "
            "127.0.0.1:9001; docs/troubleshooting.md#nothing-arrives)"
        )


class TickListenSession(ListenSession[TickRecord]):
    """``metronome listen`` / ``pair``: ``/tick`` played at its timetag, accent on beat 0."""

    methods = (TICK_METHOD,)

    def __init__(
        self,
        listen: HostPort,
        peers: Sequence[HostPort],
        setup: SessionSetup,
        *,
        audio_choice: audio.AudioChoice | None = None,
        sound_paths: dict[str, Path] | None = None,
        player: audio.Player | None = None,
        beats_per_bar: int = app_metronome.DEFAULT_BEATS_PER_BAR,
        audio_options: audio.PlayerOptions | None = None,
        **common: Any,
    ) -> None:
        """Plays through the ``player`` given (started; the session closes it), or opens
        ``audio_choice`` with ``sound_paths``."""
        self.given_player = player
        self.audio_choice = audio_choice
        self.sound_paths = sound_paths
        self.beats_per_bar = beats_per_bar
        self.audio_options = audio_options or audio.PlayerOptions()
        super().__init__(listen, peers, setup, **common)

    def _open(self) -> None:
        if self.given_player is not None:
            self.player = self.given_player
        else:
            assert self.audio_choice is not None and self.sound_paths is not None
            options = dataclasses.replace(self.audio_options, warn=self.warn, on_error=self._fail)
            self.player = audio.open_player(
                self.audio_choice, self.clock, self.sound_paths, notice=self.note, options=options
            )
        self.scheduler = Scheduler(self.clock, on_warning=self.warn)
        self.listener = MetronomeListener(
            self.player,
            self.scheduler,
            self.clock,
            beats_per_bar=self.beats_per_bar,
            log=None if self.log is None else cast(TextIO, self.log),
            on_tick=lambda record: self._on_record(record, record.seq),
            limit=self.limit,
            on_warning=self.warn,
        )
        self.scheduler.start()

    def summary(self) -> str:
        extra: dict[str, Any] = {}
        sched = self.scheduler.stats()
        if sched.dropped_total:
            extra["dropped"] = sched.dropped_total
        if self.endpoint.stats.dropped:
            extra["bad datagrams"] = self.endpoint.stats.dropped
        if self.endpoint.stats.platform_note():
            extra["note"] = self.endpoint.stats.platform_note()
        if self.log is not None:
            # What reached the file, which is not "ticks" when the log failed.
            extra["logged"] = (
                self.log.lines
                if self.log.error is None
                else (f"{self.log.lines} (then the log failed)")
            )
        extra.update(audio.player_summary(self.player))
        assert isinstance(self.listener, MetronomeListener)
        return app_metronome.summary(self.listener.stats, extra)

    def sender(self, *, bpm: float, offset: float) -> TickSender:
        """pair: a tick sender through this endpoint, its ticks items on this scheduler (one
        timer thread for both halves); it stops with the session."""
        sender = TickSender(
            self.setup.sender(self.endpoint),
            self.scheduler,
            bpm=bpm,
            beats_per_bar=self.beats_per_bar,
            offset=offset,
        )
        self.on_failure.append(sender.stop)
        return sender


class SequenceListenSession(ListenSession[EventRecord]):
    """``sequence listen`` / ``pair``: each ``/seq/VOICE`` event with its voice's sound."""

    methods = VOICE_METHODS

    def __init__(
        self,
        listen: HostPort,
        peers: Sequence[HostPort],
        setup: SessionSetup,
        *,
        audio_choice: audio.AudioChoice,
        voice_sounds: Sequence[tuple[str, Path]],
        audio_options: audio.PlayerOptions | None = None,
        **common: Any,
    ) -> None:
        self.audio_choice = audio_choice
        self.audio_options = audio_options or audio.PlayerOptions()
        self.voice_sounds = tuple(voice_sounds)
        super().__init__(listen, peers, setup, **common)

    def _open(self) -> None:
        self.directory = tempfile.TemporaryDirectory(prefix="oscsync-sequence-")
        try:
            chosen = {name: sounds.default_path(name) for name in sounds.DRUMS}
            chosen.update(dict(self.voice_sounds))
            self.player = audio.open_player(
                self.audio_choice,
                self.clock,
                {audio.TICK: sounds.default_path("tick")},
                notice=self.note,
                options=dataclasses.replace(self.audio_options, warn=self.warn),
            )
            self.sounds = VoiceSounds(self.player, Path(self.directory.name))
            for voice, path in chosen.items():
                self.sounds.load(voice, path)
        except BaseException:
            self.directory.cleanup()
            raise
        self.scheduler = Scheduler(self.clock, on_warning=self.warn)
        self.listener = SequenceListener(
            self.player,
            self.scheduler,
            self.clock,
            self.sounds,
            log=self.log,
            on_event=lambda record: self._on_record(record, record.seq),
            limit=self.limit,
            on_warning=self.warn,
        )
        self.scheduler.start()

    def sender(self, watched: PatternFile, **grid: Any) -> SequenceSender:
        """pair: ``watched``'s steps through this endpoint, items on this scheduler (one timer
        thread for both halves, as metronome pair); it stops with the session."""
        sender = file_sender(
            self.setup.sender(self.endpoint), self.scheduler, watched, note=self.note, **grid
        )
        self.on_failure.append(sender.stop)
        return sender

    def _player_close_failed(self, exc: Exception) -> None:
        self.warn(f"audio: {exc}")

    def close(self) -> None:
        super().close()
        self.directory.cleanup()

    def summary(self) -> str:
        assert isinstance(self.listener, SequenceListener)
        text = "sequence: " + self.listener.stats.line()
        dropped = self.scheduler.stats().dropped_total
        if dropped:
            text += f"  dropped {dropped}"
        if self.endpoint.stats.dropped:
            text += f"  bad datagrams {self.endpoint.stats.dropped}"
        return text
