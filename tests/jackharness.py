"""A real audio server for tests and benchmarks: JACK's dummy driver, and a recorder on it.

``jackd -d dummy`` runs a JACK server with no sound card, unprivileged, under a private name
(``JACK_DEFAULT_SERVER``), so PortAudio's JACK host API sees it like a sound card. The recorder is
a JACK client (JACK-Client + libjack) whose input is connected to whatever plays into
``system:playback_1``; it keeps, for every cycle, JACK's own frame time and the server's
frame -> microsecond mapping (``jack_frames_to_time``, JACK's DLL), so a recorded onset can be
turned into the time the sound left the (dummy) device: its frame plus the playback latency the
server reports for ``system:playback_1``, on the monotonic clock.
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
        self.cycles: list[
            tuple[int, int, int, float]
        ] = []  # position, frame, jack µs, mono-jack µs
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
        self.client.set_process_callback(self._process)
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

    def _process(self, frames: int) -> None:
        start = self.position
        if start + frames <= len(self.buffer):
            self.buffer[start : start + frames] = self.port.get_array()
        frame = self.client.last_frame_time
        usecs = self._lib.jack_frames_to_time(self._client_ptr, frame)
        jack_now = self._lib.jack_get_time()
        mono_now = time.monotonic() * 1e6
        self.cycles.append((start, frame, usecs, mono_now - jack_now))
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

    def leaves_device_mono(self, index: int) -> float:
        """Monotonic time (s) at which recorded sample ``index`` left the device: its frame
        time plus the server's playback latency, through JACK's frame -> time mapping."""
        cycle = max(
            (c for c in self.cycles if c[0] <= index), key=lambda c: c[0], default=self.cycles[0]
        )
        start, _, usecs, _ = cycle
        offsets = [c[3] for c in self.cycles]
        offset = statistics.median(offsets)
        frames = index - start + self.playback_latency
        return (usecs + frames * 1e6 / self.rate + offset) / 1e6
