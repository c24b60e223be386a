"""A real audio server for tests and benchmarks: JACK's dummy driver, and a recorder on it.

``jackd -d dummy`` runs a JACK server with no sound card, unprivileged, under a private name
(``JACK_DEFAULT_SERVER``), so PortAudio's JACK host API sees it like a sound card. The recorder is
a JACK client (JACK-Client + libjack) whose input is connected to whatever plays into
``system:playback_1``; it keeps, for every cycle, JACK's own frame time and the monotonic time
its callback ran, so a recorded onset can be turned into the time the sound left the (dummy)
device: its frame plus the playback latency the server reports for ``system:playback_1``, on the
monotonic clock, through the driver's frame clock (:class:`FrameClock`: stretch by stretch, a
stall of the driver is a step). JACK's own mapping (``jack_frames_to_time``, its DLL) is kept
for comparison: it slews across such a step for a second.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from waiting import wait_until

RATE = 48_000
PERIOD = 256
_names = itertools.count()
JACKD_MODE = [os.environ.get("OSCSYNC_JACKD_MODE", "--realtime")]


class JackUnavailable(Exception):
    """jackd, libjack or JACK-Client is missing, or the server did not start."""


@dataclass
class JackServer:
    name: str
    rate: int
    period: int
    process: subprocess.Popen[bytes]

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "JACK_DEFAULT_SERVER": self.name}


@contextmanager
def jack_server(rate: int = RATE, period: int = PERIOD) -> Iterator[JackServer]:
    """A dummy-driver JACK server under a private name; always stopped on exit."""
    jackd = shutil.which("jackd")
    waiter = shutil.which("jack_wait")
    if jackd is None or waiter is None:
        raise JackUnavailable("jackd is not installed (Debian: jackd2)")
    name = f"oscsync-test-{os.getpid()}-{next(_names)}"
    env = {**os.environ, "JACK_DEFAULT_SERVER": name, "JACK_NO_AUDIO_RESERVATION": "1"}
    # -w: the dummy driver's cycle in µs; without it, it waits 21,333 µs whatever the period.
    wait_us = round(period * 1e6 / rate)
    process = subprocess.Popen(
        [jackd, *JACKD_MODE, "-d", "dummy", "-r", str(rate), "-p", str(period), "-w", str(wait_us)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ready = subprocess.run(
            [waiter, "-w", "-t", "10"], env=env, capture_output=True, timeout=20, check=False
        )
        if ready.returncode != 0 or process.poll() is not None:
            raise JackUnavailable(f"jackd did not start (jack_wait: {ready.returncode})")
        yield JackServer(name, rate, period, process)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


class _LatencyRange(ctypes.Structure):
    _fields_ = [("min", ctypes.c_uint32), ("max", ctypes.c_uint32)]


_JACK_PLAYBACK_LATENCY = 1


STEP_S = 0.001
"""A stretch of the frame clock ends where its phase moves later by this much for good: the dummy
driver woke too late and restarted its cycle timer (jack2's JackTimedDriver, an xrun). Callback
delays of our own make single cycles late, never a whole window of them by this much."""
STEP_WINDOW = 32
"""Cycles (32 × 5.3 ms = 171 ms) that must all be later for a step: the next stretch."""


@dataclass
class FrameClock:
    """Where frame 0 of the driver's frame clock would fall on the monotonic clock (its phase),
    in stretches: the driver runs its cycles from a fixed anchor (never early, woken late by the
    scheduler), so within a stretch the earliest callback time less frame/rate is the phase, and
    between stretches it steps later (a stall). ``steps`` are (cycle index, seconds later)."""

    starts: list[int]
    phases: list[float]
    steps: list[tuple[int, float]]
    cycles: int

    @classmethod
    def fit(cls, cycles: list[tuple[int, float]], rate: int) -> FrameClock:
        """From each cycle's (first frame, monotonic time its callback ran)."""
        late = [mono - frame / rate for frame, mono in cycles]
        starts = [0]
        reference = late[0]  # the earliest callback of this stretch so far
        i = 1
        while i < len(late):
            window = late[i : i + STEP_WINDOW]  # a whole one: the last cycles cannot tell
            if len(window) < STEP_WINDOW or min(window) <= reference + STEP_S:
                reference = min(reference, late[i])
                i += 1
                continue
            # A window of late callbacks: the driver stepped somewhere in it, after any of our
            # own late callbacks just before the stall. Its new phase, from the window after;
            # a callback is never early, so one earlier than that phase is still the old one's.
            settled = min(late[i + STEP_WINDOW : i + 2 * STEP_WINDOW] or window)
            earlier = [j for j in range(i, i + STEP_WINDOW) if late[j] < settled - STEP_S / 10]
            boundary = earlier[-1] + 1 if earlier else i
            starts.append(boundary)
            reference = late[boundary]
            i = boundary + 1
        bounds = [*starts, len(late)]
        phases = [min(late[a:b]) for a, b in itertools.pairwise(bounds)]
        # A stretch that is no later than the one before (our own process starved for a while,
        # the driver on time) is no step: merged.
        kept_starts, kept_phases = [starts[0]], [phases[0]]
        steps: list[tuple[int, float]] = []
        for begin, phase in zip(starts[1:], phases[1:]):
            if phase - kept_phases[-1] > STEP_S:
                steps.append((begin, phase - kept_phases[-1]))
                kept_starts.append(begin)
                kept_phases.append(phase)
            else:
                kept_phases[-1] = min(kept_phases[-1], phase)
        return cls(kept_starts, kept_phases, steps, len(cycles))

    def phase_at(self, cycle: int) -> float:
        """The phase of the stretch holding ``cycle``."""
        stretch = max(k for k, start in enumerate(self.starts) if start <= cycle)
        return self.phases[stretch]


class Recorder:
    """Records one input port into memory, with JACK's frame time of every cycle."""

    def __init__(self, server: JackServer, seconds: float) -> None:
        try:
            import jack
            import numpy as np
        except (ImportError, OSError) as exc:
            raise JackUnavailable(f"JACK-Client cannot be used: {exc}") from None
        os.environ["JACK_DEFAULT_SERVER"] = server.name
        self._np = np
        self._jack = jack
        self.client = jack.Client("oscsync-recorder", no_start_server=True)
        self.rate = self.client.samplerate
        self.port = self.client.inports.register("in")
        self.buffer = np.zeros(round(seconds * self.rate), dtype=np.float32)
        self.position = 0
        self._frame_clock: FrameClock | None = None
        self.cycles: list[tuple[int, int, int, float, float]] = []
        """Per cycle: position, JACK frame time, JACK µs of that frame (its DLL's),
        monotonic − JACK µs, and the monotonic time (s) the callback ran."""
        lib = ctypes.CDLL("libjack.so.0")
        lib.jack_frames_to_time.restype = ctypes.c_uint64
        lib.jack_frames_to_time.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.jack_get_time.restype = ctypes.c_uint64
        lib.jack_port_get_latency_range.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.POINTER(_LatencyRange),
        ]
        self._lib = lib
        self._client_ptr = int(jack._ffi.cast("uintptr_t", self.client._ptr))
        self.xruns = 0
        """xruns JACK reported (a client, PD say, missed a cycle: its output was not heard)."""
        self.client.set_process_callback(self._process)
        self.client.set_xrun_callback(self._xrun)
        self.client.activate()
        self.playback_latency = self._latency("system:playback_1")

    def _latency(self, port_name: str) -> int:
        port = self.client.get_port_by_name(port_name)
        latency = _LatencyRange()
        self._lib.jack_port_get_latency_range(
            int(self._jack._ffi.cast("uintptr_t", port._ptr)),
            _JACK_PLAYBACK_LATENCY,
            ctypes.byref(latency),
        )
        return int(latency.max)

    def _xrun(self, delayed_usecs: float) -> None:
        self.xruns += 1

    def _process(self, frames: int) -> None:
        start = self.position
        if start + frames <= len(self.buffer):
            self.buffer[start : start + frames] = self.port.get_array()
        frame = self.client.last_frame_time
        usecs = self._lib.jack_frames_to_time(self._client_ptr, frame)
        jack_now = self._lib.jack_get_time()
        mono_now = time.monotonic() * 1e6
        self.cycles.append((start, frame, usecs, mono_now - jack_now, mono_now / 1e6))
        self.position = start + frames

    def connect_player(self, timeout: float = 15.0) -> list[str]:
        """Connect every port playing into system:playback_1 (waits for one to appear)."""
        sources = wait_until(
            lambda: [
                port.name
                for port in self.client.get_all_connections("system:playback_1")
                if port.name != self.port.name
            ],
            timeout,
            "a client playing into system:playback_1",
        )
        for source in sources:
            self.client.connect(source, self.port)
        return sources

    def follow_playback(self, stop: threading.Event, interval: float = 0.001) -> threading.Thread:
        """Connect, until ``stop``, every new port that plays into system:playback_1 (a player
        that opens a JACK client per sound, like GStreamer's jackaudiosink under playsound)."""

        def run() -> None:
            while not stop.is_set():
                with contextlib.suppress(self._jack.JackError):
                    mine = {port.name for port in self.client.get_all_connections(self.port)}
                    for port in self.client.get_all_connections("system:playback_1"):
                        if port.name not in mine and port.name != self.port.name:
                            self.client.connect(port.name, self.port)
                stop.wait(interval)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread

    def close(self) -> None:
        self.client.deactivate()
        self.client.close()

    def samples_int16(self) -> Any:
        np = self._np
        recorded = self.buffer[: min(self.position, len(self.buffer))]
        return (np.clip(np.round(recorded * 32768), -32768, 32767)).astype(np.int16)

    def leaves_device_mono_jack(self, index: int) -> float:
        """:meth:`leaves_device_mono` through JACK's own frame -> time mapping
        (``jack_frames_to_time``), which a driver that slips breaks (see there)."""
        start, _, usecs, _, _ = self.cycles[self._cycle_of(index)]
        offsets = [c[3] for c in self.cycles]
        offset = statistics.median(offsets)
        frames = index - start + self.playback_latency
        return (usecs + frames * 1e6 / self.rate + offset) / 1e6

    def _cycle_of(self, index: int) -> int:
        """The cycle that recorded sample ``index`` (positions only grow)."""
        return max(
            (k for k, c in enumerate(self.cycles) if c[0] <= index),
            key=lambda k: self.cycles[k][0],
            default=0,
        )

    def leaves_device_mono(self, index: int) -> float:
        """Monotonic time (s) at which recorded sample ``index`` left the device: its frame
        time plus the server's playback latency, each frame at the phase of its stretch of the
        driver's frame clock (:meth:`frame_clock`).

        Not JACK's mapping (``jack_frames_to_time``): when the dummy driver is woken too late it
        restarts its cycle timer there (an xrun: every frame after it is later by the stall),
        and JACK's DLL slews across that step for a second or more, so the frames around it
        were mapped up to the whole stall off, overshoot included (seen under load: ticks
        −30.1, −22.0, −15.2, −9.5 ms "early" while every gap was right; issue #19's note)."""
        cycle = self._cycle_of(index)
        start, frame, _, _, _ = self.cycles[cycle]
        phase = self.frame_clock().phase_at(cycle)
        frames = frame + (index - start) + self.playback_latency
        return phase + frames / self.rate

    def frame_clock(self) -> FrameClock:
        """The driver's frame clock against the monotonic clock, stretch by stretch."""
        if self._frame_clock is None or self._frame_clock.cycles != len(self.cycles):
            self._frame_clock = FrameClock.fit([(c[1], c[4]) for c in self.cycles], self.rate)
        return self._frame_clock
