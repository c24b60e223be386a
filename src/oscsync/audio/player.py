"""The :class:`Player` protocol every backend implements, and what players share.

A metronome listener knows *when* a tick should sound (the bundle's timetag) before it sounds. It
hands that instant to a player with ``play_at(t)``, where ``t`` is wall time in Unix seconds on the
process :class:`~oscsync.clock.Clock`, and the player does its best to make the sound start then.
Sounds are identified by a key: ``"tick"`` for ordinary beats and ``"accent"`` for beat 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

TICK = "tick"
ACCENT = "accent"

DEFAULT_RATE = 48_000
MAX_PENDING = 4096
"""Ticks a player holds before they sound; more are dropped and counted (a metronome holds few)."""


class AudioError(Exception):
    """Audio that cannot be set up or a sound file that cannot be read; the text is one line."""


class Player(Protocol):
    """Something that can sound a preloaded sound at a wall-clock instant."""

    name: str
    lead: float
    """How long before ``t`` the player wants ``play_at(t)`` (``math.inf``: as soon as known;
    ``0``: at ``t`` itself, so the caller schedules it)."""

    def load(self, path: str | Path, key: str = TICK) -> None:
        """Read a sound file and keep it under ``key``."""

    def start(self) -> None:
        """Open whatever the player needs (a stream, a clock origin)."""

    def play_at(self, t: float, key: str = TICK) -> None:
        """Sound ``key`` starting at wall time ``t`` (Unix seconds); safe from any thread."""

    def describe(self) -> str:
        """One line for the user about where the sound goes (empty when there is nothing to say)."""

    def close(self) -> None:
        """Finish: stop the stream, write the file. Safe to call twice."""


@dataclass
class PlayerStats:
    """What a player did: sounds started, started late (and by how much), dropped; and for a
    sound card, the buffer under/overruns PortAudio reported and how often the clock re-locked."""

    played: int = 0
    late: int = 0
    max_late_s: float = 0.0
    dropped: int = 0
    xruns: int = 0
    relocks: int = 0

    def count_late(self, seconds: float) -> None:
        self.late += 1
        self.max_late_s = max(self.max_late_s, seconds)


class KeyedSounds:
    """Loaded sounds by key; a key with no sound of its own plays the tick."""

    def __init__(self) -> None:
        self.sounds: dict[str, Any] = {}

    def find(self, key: str) -> Any | None:
        sound = self.sounds.get(key)
        return self.sounds.get(TICK) if sound is None else sound

    def lookup(self, key: str) -> Any:
        sound = self.find(key)
        if sound is None:
            raise AudioError(f"no sound loaded for {key!r}")
        return sound


def playout_of(player: object) -> float:
    """Seconds ``player`` needs between ``play_at(t)`` and ``t`` to place a sound on time: its
    ``playout_latency()`` where it has one (a sound card: the output latency it compensates plus
    one block), else 0 (a player that plays when told, or writes a file).

    A forward offset must cover this beside the network's delay (docs/forward-sync.md); a
    listener reports it in its clock pongs so that ``--offset auto`` can (docs/protocol.md)."""
    measure = getattr(player, "playout_latency", None)
    if measure is None:
        return 0.0
    try:
        value = float(measure())
    except (TypeError, ValueError):
        return 0.0
    return value if value > 0 and value < 10.0 else 0.0


def first_line(exc: BaseException) -> str:
    """An exception as one line (its first), for a one-line error."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
