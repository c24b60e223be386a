"""What "late" means, in every command: one threshold, and which side is to blame.

A tick, step or bundle is **late** when it sounds (is played, printed, dispatched) more than
:data:`LATE_THRESHOLD` (1 ms) after its timetag: below that a scheduler's spin lands and no ear
hears a difference. Every late one is one of two kinds, and the two are counted apart:

* **arrived late**: the datagram itself arrived after its timetag. No receiver could have been
  on time: the network was slow, or the sender's forward offset too small for it
  (``--offset``), or the clocks disagree (``--sync``). (``timetag monitor``, which plays
  nothing, counts those that arrived more than the threshold after: they cannot be on time.)
* **played late**: it arrived before its timetag but was played more than the threshold after it.
  This machine is to blame: its timer thread ran late (a busy CPU without real-time priority,
  ``oscsync --realtime``), or its player needed more time than was left (the sound card's output
  latency and one block: see ``docs/forward-sync.md``, "the offset's budget").

When it was played is the moment it was handed to a player that plays when told (``--audio
none``, ``playsound``), and for a player that places sounds itself (``sounddevice``) that moment
plus the player's playout latency (:func:`oscsync.audio.playout_latency`), the earliest its
sound can leave the card on time. Before issue 29 the code counted "handled more than 1 ms after
the timetag" and the docs said "arrived after the timetag": a tick 100 ms early that the timer
ran 2 ms late read ``headroom +99.8 ms LATE``.
"""

from __future__ import annotations

from dataclasses import dataclass

LATE_THRESHOLD = 0.001
"""Seconds after its timetag beyond which something is late (arrived or played): the one
threshold every command uses (``dump --schedule``, ``metronome``/``sequence listen``,
``timetag monitor``, ``stats``, ``demo``, ``timetag sweep``)."""


@dataclass(frozen=True, slots=True)
class Lateness:
    """Whether one timed item was late, and why (at most one of the two is true)."""

    arrived_late: bool = False
    played_late: bool = False
    played_after: float = 0.0
    """Seconds between the timetag and when it was played (0 when on time or early)."""

    @property
    def late(self) -> bool:
        return self.arrived_late or self.played_late


ON_TIME = Lateness()


def classify(
    timetag: float, arrival: float, played: float, threshold: float = LATE_THRESHOLD
) -> Lateness:
    """Arrived late, played late or neither, for an item due at ``timetag`` that arrived at
    ``arrival`` and was played at ``played`` (seconds on one clock)."""
    after = max(0.0, played - timetag)
    if after <= threshold:
        return Lateness(played_after=after)
    if arrival > timetag:
        return Lateness(arrived_late=True, played_after=after)
    return Lateness(played_late=True, played_after=after)


def counts_text(arrived: int, played: int) -> str:
    """``arrived late 2  played late 0``: the two figures every listener's status line and
    summary show side by side."""
    return f"arrived late {arrived}  played late {played}"
