"""Finding where each sound starts in a recording (the metronome's sounds start at their peak)."""

from __future__ import annotations

from collections.abc import Sequence


def find_onsets(samples: Sequence[int], threshold: int = 1000, min_gap: int = 2400) -> list[int]:
    """Frames where the signal first reaches ``threshold`` after at least ``min_gap`` frames.

    Made for the metronome's sounds, whose first sample is their loudest: the frame found is the
    frame the sound was placed at. ``min_gap`` (50 ms at 48 kHz) keeps one sound from counting
    twice.
    """
    onsets: list[int] = []
    next_allowed = 0
    for index, value in enumerate(samples):
        if index >= next_allowed and (value >= threshold or value <= -threshold):
            onsets.append(index)
            next_allowed = index + min_gap
    return onsets
