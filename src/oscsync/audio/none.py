"""``--audio none``: no sound; the listener's printout is the metronome."""

from __future__ import annotations

from pathlib import Path

from oscsync.audio.player import TICK, PlayerStats


class NonePlayer:
    """Plays nothing; counts what it was asked to play."""

    name = "none"
    lead = 0.0

    def __init__(self) -> None:
        self.stats = PlayerStats()
        self.keys: dict[str, Path] = {}

    def load(self, path: str | Path, key: str = TICK) -> None:
        self.keys[key] = Path(path)

    def start(self) -> None:
        pass

    def play_at(self, t: float, key: str = TICK) -> None:
        self.stats.played += 1

    def describe(self) -> str:
        return ""

    def close(self) -> None:
        pass
