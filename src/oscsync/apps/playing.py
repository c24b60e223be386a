"""Playing a sound at a timetag: :class:`SoundPlayer`, and when a player must hear of an onset.

A player (:mod:`oscsync.audio`) either places a sound itself at the instant it is given
(sounddevice, a WAV render: ``lead = inf``, told as soon as the onset is known, so it can be
sample-accurate) or plays when told (playsound, none: ``lead = 0``, told at the timetag by a
:class:`~oscsync.scheduler.Scheduler`). :func:`submit_onset` makes that choice, and
:func:`onset_of` says when the sound starts (at the timetag, or at once for a plain or late
onset, never earlier) and whether it was late, and why (:mod:`oscsync.lateness`).
``metronome listen`` and ``sequence listen`` play through these two functions, and so does
:class:`SoundPlayer`, which is what a Python script uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from oscsync import audio as backends
from oscsync.audio import sounds
from oscsync.audio.player import ACCENT, TICK, Player
from oscsync.clock import Clock, system_clock
from oscsync.lateness import ON_TIME, Lateness, classify
from oscsync.osc import timetag as tt
from oscsync.scheduler import Dispatch, Scheduler


def submit_onset(
    player: Player,
    scheduler: Scheduler,
    clock: Clock,
    stamp: int | None,
    handle: Callable[[Dispatch, int | None], None],
    size: int = 0,
) -> str | None:
    """Submit ``handle(dispatch, timetag or None)`` for when ``player`` must hear of an onset.

    At the timetag for players that act when told (``lead`` 0), ``lead`` seconds before it for
    others, at once for players that place sounds themselves (``lead`` inf) and for plain
    messages. ``size`` is what the held item keeps alive in bytes (the scheduler caps bytes as
    well as items). Returns None, or the reason it was dropped (``horizon``, ``refused``).
    """
    timed = stamp is not None and stamp != tt.IMMEDIATELY
    lead = player.lead
    if timed and not math.isinf(lead):
        assert stamp is not None
        when: int | None = tt.add_seconds(stamp, -Fraction(lead)) if lead else stamp
    else:
        when = None  # plain, or a player that wants the onset as soon as it is known
        if timed and tt.difference(stamp or 0, clock.now_timetag()) > scheduler.horizon:
            # The scheduler would refuse it; a player holding it would hold it for long.
            return "horizon"
    kept = stamp if timed else None
    if not scheduler.submit(when, lambda dispatch: handle(dispatch, kept), size=size):
        return "refused"
    return None


@dataclass(frozen=True, slots=True)
class Onset:
    """When an onset dispatched now is to sound, and whether it was late (wall seconds)."""

    handled: float
    target: float | None
    """The timetag (None for a plain message)."""
    onset: float
    """The timetag, or when handled for a plain message or one handled past the tolerance;
    never earlier than the timetag."""
    lateness: Lateness


def onset_of(
    scheduler: Scheduler,
    clock: Clock,
    dispatch: Dispatch,
    stamp: int | None,
    arrival: float,
    playout: float = 0.0,
) -> Onset:
    """The :class:`Onset` of something that arrived at ``arrival`` and is dispatched now, for a
    player that needs ``playout`` seconds to place a sound (:func:`oscsync.audio.playout_of`):
    arrived late, played late or on time (:mod:`oscsync.lateness`, at the scheduler's
    tolerance)."""
    handled = clock.monotonic_to_wall(dispatch.dispatched)
    target = None if stamp is None else tt.to_unix(stamp, handled)  # era nearest now (2036)
    if target is None:
        return Onset(handled, None, handled, ON_TIME)
    tolerance = scheduler.late_tolerance
    onset = handled if handled - target > tolerance else target
    lateness = classify(target, arrival, max(handled + playout, onset), tolerance)
    return Onset(handled, target, onset, lateness)


def default_sounds() -> dict[str, Path]:
    """The sounds every :class:`SoundPlayer` has: ``tick``, ``accent`` (the metronome's two
    clicks, as ``metronome listen`` plays them) and the drums ``kick``, ``snare``, ``hat``."""
    chosen = {TICK: sounds.default_path("tick"), ACCENT: sounds.default_path("tock")}
    chosen.update({name: sounds.default_path(name) for name in sounds.DRUMS})
    return chosen


def _quiet(_: str) -> None:
    pass


class SoundPlayer:
    """Sounds played at timetags, through one of the ``--audio`` backends.

    ``audio`` is what ``--audio`` takes: ``auto`` (the sound card if there is one, else silence,
    said once through ``on_notice``), ``sounddevice``, ``playsound``, ``none`` or
    ``wav:FILE`` (every sound rendered into FILE at its exact frame, written at
    :meth:`close`). ``sounds`` adds or replaces named sounds (WAV files) on top of
    :func:`default_sounds`. ``scheduler`` holds the onsets of players that play when told (one
    of its own, started and closed with the player, when not given). Raises
    :class:`~oscsync.audio.AudioError` (one line) when the backend cannot be had.

    >>> import oscsync, pathlib, tempfile
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "two.wav"
    >>> with oscsync.SoundPlayer(f"wav:{out}") as player:
    ...     start = oscsync.add_seconds(oscsync.now(), 0.1)
    ...     player.play_at(start, "accent")
    ...     player.play_at(oscsync.add_seconds(start, 0.5))
    True
    True
    >>> out.stat().st_size > 0
    True
    """

    def __init__(
        self,
        audio: str = "auto",
        sounds: Mapping[str, str | Path] | None = None,
        *,
        clock: Clock | None = None,
        device: str | None = None,
        scheduler: Scheduler | None = None,
        on_notice: Callable[[str], None] = _quiet,
        on_warning: Callable[[str], None] = _quiet,
    ) -> None:
        self.clock = clock or (scheduler.clock if scheduler is not None else system_clock())
        chosen: dict[str, str | Path] = dict(default_sounds())
        chosen.update(sounds or {})
        options = backends.PlayerOptions(device=device, warn=on_warning)
        self.player: Player = backends.open_player(
            backends.parse_audio_choice(audio),
            self.clock,
            chosen,
            notice=on_notice,
            options=options,
        )
        self._own_scheduler = scheduler is None
        self.scheduler = scheduler or Scheduler(self.clock, on_warning=on_warning)
        if self._own_scheduler:
            self.scheduler.start()
        self.dropped = 0
        """Onsets not played: refused by the scheduler (full, or beyond its horizon)."""

    @property
    def description(self) -> str:
        """One line about where the sound goes (empty when there is nothing to say)."""
        return self.player.describe()

    def load(self, name: str, path: str | Path) -> None:
        """Read a WAV file and keep it as sound ``name``."""
        self.player.load(path, name)

    def play_at(self, timetag: int, sound: str = TICK) -> bool:
        """Play ``sound`` at ``timetag`` (at once if it has passed; a sound with no file of its
        own plays the tick). False if it could not be scheduled (counted in :attr:`dropped`):
        the scheduler is full, or ``timetag`` is beyond its horizon (60 s ahead by default),
        whatever the backend."""
        player, scheduler, clock = self.player, self.scheduler, self.clock

        asked = clock.now()  # when the onset became known: its "arrival"

        def handle(dispatch: Dispatch, stamp: int | None) -> None:
            player.play_at(onset_of(scheduler, clock, dispatch, stamp, asked).onset, sound)

        if math.isinf(player.lead) or timetag == tt.IMMEDIATELY:
            # Told at once, on this thread: a player that places sounds itself, or a sound for
            # now. (Through the scheduler, a close() right after could discard it.)
            now = clock.monotonic()
            stamp = None if timetag == tt.IMMEDIATELY else timetag
            if stamp is not None and tt.difference(stamp, clock.now_timetag()) > scheduler.horizon:
                # What submit_onset refuses for these players too (metronome listen).
                self.dropped += 1
                return False
            handle(Dispatch(stamp, now, now), stamp)
            return True
        if submit_onset(player, scheduler, clock, timetag, handle) is not None:
            self.dropped += 1
            return False
        return True

    def play(self, sound: str = TICK) -> bool:
        """Play ``sound`` now."""
        return self.play_at(tt.IMMEDIATELY, sound)

    def close(self) -> None:
        """Stop (held onsets are discarded) and finish the output: a ``wav:`` file is written
        now. Raises :class:`~oscsync.audio.AudioError` if that fails."""
        if self._own_scheduler:
            self.scheduler.close()
        self.player.close()

    def __enter__(self) -> SoundPlayer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
