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
from oscsync.install import install_hint, make_hint, pip_command

PLAYSOUND_CAVEAT = (
    "playsound starts a new player for every tick: expect tens of milliseconds of latency that "
    "varies from tick to tick (use --audio sounddevice for sample-accurate onsets)"
)


PLAYSOUND_SETUP = "docs/example2-metronome.md#playsound"
"""Where the docs say what ``--audio playsound`` needs on each system."""

GSTREAMER_PACKAGES = "gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
"""Debian/Ubuntu: GStreamer's introspection data, playbin (base) and wavparse + sinks (good)."""

BUILD_PACKAGES = "libgirepository1.0-dev libcairo2-dev pkg-config"
"""Debian/Ubuntu: what pip needs to build PyGObject (and its pycairo) from source."""


def probe_playsound() -> str | None:
    """None if playsound can play here, else one line saying what to do."""
    if importlib.util.find_spec("playsound") is None:
        return f"playsound is not installed ({pip_command()} install playsound==1.2.2)"
    if sys.platform == "darwin" and importlib.util.find_spec("AppKit") is None:
        # playsound 1.2.2 plays through NSSound on macOS.
        return f"playsound needs PyObjC on macOS: {install_hint('playsound')}"
    if sys.platform.startswith("linux"):
        return gstreamer_problem(_load_gstreamer)
    return None


def _load_gstreamer() -> Any:
    gi = importlib.import_module("gi")
    gi.require_version("Gst", "1.0")
    return importlib.import_module("gi.repository.Gst")


def gstreamer_problem(load: Callable[[], Any]) -> str | None:
    """None if GStreamer can play a WAV file from this Python, else what to do, in one line.

    ``load`` returns the ``Gst`` module; it raises ModuleNotFoundError without PyGObject (``gi``:
    a venv does not see Debian's python3-gi) and ValueError without GStreamer's introspection
    data. Without playbin, playsound 1.2.2 fails on every tick with "'NoneType' object has no
    attribute 'props'" (issue 30).
    """
    try:
        gst = load()
    except ModuleNotFoundError:
        how = make_hint("playsound") or (
            f"sudo apt-get install {BUILD_PACKAGES} {GSTREAMER_PACKAGES}, "
            f"then {install_hint('playsound')}"
        )
        return (
            "playsound needs GStreamer's Python bindings (PyGObject), which this Python cannot "
            f"import: {how} (see {PLAYSOUND_SETUP})"
        )
    except (ImportError, ValueError):
        return f"playsound needs GStreamer: sudo apt-get install {GSTREAMER_PACKAGES}"
    gst.init(None)
    missing = [name for name in ("playbin", "wavparse") if gst.ElementFactory.find(name) is None]
    if missing:
        return (
            f"GStreamer has no {' or '.join(missing)} to play a WAV file with: "
            f"sudo apt-get install {GSTREAMER_PACKAGES}"
        )
    return None


def failure_line(exc: BaseException) -> str:
    """One line for a tick playsound could not play, saying what to do when that is known."""
    if isinstance(exc, AttributeError) and "props" in str(exc):
        return (
            "playsound failed: GStreamer could not make a player (playbin): "
            f"sudo apt-get install {GSTREAMER_PACKAGES}"
        )
    if isinstance(exc, ModuleNotFoundError):
        return f"playsound failed: {first_line(exc)} (see {PLAYSOUND_SETUP})"
    return f"playsound failed: {first_line(exc)}"


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
                self._on_warning(failure_line(exc))
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
