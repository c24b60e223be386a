"""``--audio playsound``: the workshop's original, one ``playsound`` call on a new thread per tick.

Latency is high (tens of ms) and varies per tick: the player, not the network, then dominates the
timing error. Kept to compare with; :data:`PLAYSOUND_CAVEAT` says so.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oscsync import threads
from oscsync.audio.player import TICK, KeyedSounds, PlayerStats, first_line
from oscsync.audio.wav import read_wav
from oscsync.clock import Clock

PLAYSOUND_CAVEAT = (
    "playsound starts a new player for every tick: expect tens of milliseconds of latency that "
    "varies from tick to tick (use --audio sounddevice for sample-accurate onsets)"
)


def probe_playsound() -> str | None:
    """None if playsound can play here, else one line saying why not."""
    if importlib.util.find_spec("playsound") is None:
        return "playsound is not installed (pip install playsound==1.2.2)"
    if sys.platform.startswith("linux") and importlib.util.find_spec("gi") is None:
        return (
            "playsound needs GStreamer's Python bindings on Linux "
            "(sudo apt-get install python3-gi gir1.2-gstreamer-1.0, "
            "in a venv made with --system-site-packages)"
        )
    return None


class PlaysoundPlayer:
    """The workshop's ``playsound``: a thread per tick that waits for ``t`` and plays the file.

    playsound 1.2.2 cannot play without blocking on Linux (``block=False`` raises
    NotImplementedError there), so the thread is what makes it non-blocking. At most
    ``max_threads`` play at once; more ticks are dropped and counted.
    """

    name = "playsound"
    lead = 0.0

    def __init__(
        self,
        clock: Clock,
        *,
        max_threads: int = 16,
        on_warning: Callable[[str], None] | None = None,
        play: Callable[[str, bool], Any] | None = None,
    ) -> None:
        self.clock = clock
        self.max_threads = max_threads
        self.stats = PlayerStats()
        self._on_warning = on_warning
        self._play = play
        self._paths = KeyedSounds()
        self._active = 0
        self._idle = threading.Condition()
        self._warned = False

    def load(self, path: str | Path, key: str = TICK) -> None:
        read_wav(path)  # fail now on a bad file
        self._paths.sounds[key] = str(Path(path).resolve())

    def start(self) -> None:
        if self._play is None:
            module = importlib.import_module("playsound")
            self._play = module.playsound

    def play_at(self, t: float, key: str = TICK) -> None:
        path = self._paths.find(key)
        if path is None:
            return
        with self._idle:
            if self._active >= self.max_threads:
                self.stats.dropped += 1
                return
            self._active += 1
        threads.start(threads.daemon_thread(self._run, t, path, name="oscsync-playsound"))

    def _run(self, t: float, path: str) -> None:
        try:
            self.clock.sleep(t - self.clock.now())
            if self._play is not None:
                self._play(path, True)
            self.stats.played += 1
        except Exception as exc:
            if not self._warned and self._on_warning is not None:
                self._warned = True
                self._on_warning(f"playsound failed: {first_line(exc)}")
        finally:
            with self._idle:
                self._active -= 1
                self._idle.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no tick is playing or waiting to; True if that happened in time."""
        with self._idle:
            return self._idle.wait_for(lambda: self._active == 0, timeout)

    def describe(self) -> str:
        return f"audio: {PLAYSOUND_CAVEAT}"

    def close(self) -> None:
        pass
