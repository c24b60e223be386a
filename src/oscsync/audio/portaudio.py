"""``--audio sounddevice``: sample-placed playback on one PortAudio output stream.

One output stream, opened once; sounds preloaded as float32 arrays. The stream's frame counter is
mapped to the monotonic clock by a delay-locked loop (:mod:`oscsync.audio.dll`), and a tick due at
``t`` starts at the frame that the filtered mapping puts at ``t`` minus the output latency, so the
sound *leaves the device* at ``t`` (``--latency-compensation``), whatever the block size and
however late each callback runs. A tick that comes too late for its frame starts at the first
frame of the next buffer and is counted late, with its lateness. Buffer under/overruns that
PortAudio flags are counted, and the loop re-locks after each.

numpy and sounddevice are imported only when the player starts, so importing this module (and
starting the CLI) stays fast. A missing PortAudio is one line (:data:`PORTAUDIO_HINT`).
"""

from __future__ import annotations

import contextlib
import heapq
import importlib
import itertools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from oscsync.audio.dll import DelayLockedLoop
from oscsync.audio.player import (
    DEFAULT_RATE,
    MAX_PENDING,
    TICK,
    AudioError,
    KeyedSounds,
    PlayerStats,
    first_line,
)
from oscsync.audio.wav import read_wav, resample
from oscsync.clock import Clock
from oscsync.install import install_hint

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

PORTAUDIO_HINT = (
    "PortAudio library not found (on Debian/Ubuntu: sudo apt-get install libportaudio2)"
)
# A hint that works where the user is (issue #13), e.g. .venv/bin/pip install -e '.[audio]'.
INSTALL_HINT = f"sounddevice is not installed ({install_hint('audio')})"

DRAIN_LIMIT_S = 1.0
"""On close, ticks due within this long are still played; later ones are dropped."""

PLACEMENTS = ("dll", "callback")
"""How a block's frames are mapped to time: ``dll`` (filtered frame clock, the default) or
``callback`` (each callback's own clock reading, the placement before issue #14; kept so
``benchmarks/audio.py`` can measure the difference)."""


class StreamTime(Protocol):
    """What PortAudio passes the callback as ``time`` (times on the stream's own clock; the
    attribute names are PortAudio's)."""

    @property
    def currentTime(self) -> float: ...

    @property
    def outputBufferDacTime(self) -> float: ...


class OutputStream(Protocol):
    """The part of ``sounddevice.OutputStream`` the player uses (a fake one in tests)."""

    @property
    def latency(self) -> float: ...

    @property
    def time(self) -> float: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


Callback = Callable[[Any, int, Any, Any], None]
StreamOpener = Callable[[int, Callback], OutputStream]


@dataclass
class SoundDeviceOutput:
    """The default :data:`StreamOpener`: a mono float32 ``sounddevice.OutputStream`` with
    ``blocksize`` frames per callback (0: the host's choice) and ``latency`` (``"low"``,
    ``"high"`` or seconds) on ``device`` (None: the default output). Once it has opened a stream,
    ``device_name`` and ``host_api`` say where that plays."""

    blocksize: int = 0
    latency: str | float = "low"
    device: int | str | None = None
    device_name: str = ""
    host_api: str = ""

    def __call__(self, rate: int, callback: Callback) -> OutputStream:
        sd = load_sounddevice()
        stream = None
        try:
            stream = sd.OutputStream(
                samplerate=rate,
                channels=1,
                dtype="float32",
                blocksize=self.blocksize,
                latency=self.latency,
                device=self.device,
                callback=callback,
            )
            info = sd.query_devices(stream.device)
            self.device_name = str(info.get("name", ""))
            self.host_api = str(sd.query_hostapis(info["hostapi"]).get("name", ""))
        except Exception as exc:  # PortAudioError, ValueError: bad device or rate
            if stream is not None:  # opened, then naming its device failed: not left open
                with contextlib.suppress(Exception):
                    stream.close()
            raise AudioError(f"cannot open the audio output: {first_line(exc)}") from None
        return stream  # type: ignore[no-any-return]


def import_sounddevice() -> ModuleType:
    """Import sounddevice; ImportError if not installed, OSError if PortAudio itself is missing."""
    return importlib.import_module("sounddevice")


def load_sounddevice() -> ModuleType:
    """sounddevice, or an AudioError saying in one line what to install."""
    try:
        importlib.import_module("numpy")
        return import_sounddevice()
    except ImportError as exc:
        if exc.name == "numpy":
            raise AudioError(f"numpy is not installed ({install_hint('audio')})") from None
        raise AudioError(INSTALL_HINT) from None
    except OSError:
        raise AudioError(PORTAUDIO_HINT) from None


def probe_sounddevice() -> str | None:
    """None if sounddevice can play here, else one line saying why not (with a fix)."""
    try:
        importlib.import_module("numpy")
        sd = import_sounddevice()
    except ImportError as exc:
        return f"{exc.name or 'sounddevice'} is not installed ({install_hint('audio')})"
    except OSError:
        return PORTAUDIO_HINT
    try:
        sd.query_devices(kind="output")
    except Exception as exc:  # sounddevice.PortAudioError, or ValueError with no default device
        return f"no audio output device ({first_line(exc)})"
    return None


@dataclass(order=True)
class _Due:
    mono: float
    seq: int
    key: str = field(compare=False)


class _Voice:
    __slots__ = ("position", "samples", "start")

    def __init__(self, samples: npt.NDArray[np.float32], start: int) -> None:
        self.samples = samples
        self.position = 0
        self.start = start  # frame in the current block where it begins (0 after the first)


def _xrun(status: Any) -> bool:
    """True if PortAudio's status flags say the output (or input) ran out or overflowed."""
    return any(
        bool(getattr(status, flag, False))
        for flag in ("output_underflow", "output_overflow", "input_underflow", "input_overflow")
    )


class SoundDevicePlayer:
    """Sample-placed playback on one PortAudio output stream.

    ``open_stream(rate, callback)`` opens the stream (default: a mono float32
    ``sounddevice.OutputStream`` on ``device``); tests pass a fake one and call :meth:`callback`
    themselves with a fake stream clock.

    Time mapping, per callback: PortAudio gives ``currentTime`` (the stream-clock time of the
    callback) and ``outputBufferDacTime`` (when the buffer's first frame leaves the DAC). The
    monotonic clock and the stream clock are read back to back in the callback, which turns
    ``currentTime`` into a monotonic time without assuming which system clock PortAudio uses and
    without the delay before Python got to run; that time, for the block's first frame (a running
    count of frames), feeds the DLL. Host APIs that report zeros feed the callback's own time.

    ``latency_compensation``: ``None`` (auto) uses the latency the host reports for each buffer
    (``outputBufferDacTime − currentTime``; PortAudio's stream latency if that is zero), so the
    sound leaves the device at the timetag; ``0`` (off) plays the frame that is being computed at
    the timetag (the sound leaves one output latency later); a number of seconds uses that.
    ``placement="callback"`` maps each block from its callback's raw clock reading (no DLL).
    """

    name = "sounddevice"
    lead = math.inf

    def __init__(
        self,
        clock: Clock,
        *,
        rate: int = DEFAULT_RATE,
        blocksize: int = 0,
        latency: str | float = "low",
        device: int | str | None = None,
        latency_compensation: float | None = None,
        placement: str = "dll",
        open_stream: StreamOpener | None = None,
        max_pending: int = MAX_PENDING,
        max_voices: int = 32,
        first_callback_timeout: float | None = None,
    ) -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {PLACEMENTS}, not {placement!r}")
        self.clock = clock
        self.rate = rate
        self.placement = placement
        self.requested_compensation = latency_compensation
        self.output = SoundDeviceOutput(blocksize, latency, device)
        """The stream opened unless ``open_stream`` is given (and where it plays, once open)."""
        self._open_stream = open_stream or self.output
        self.max_pending = max_pending
        self.max_voices = max_voices
        self.first_callback_timeout = (
            first_callback_timeout
            if first_callback_timeout is not None
            else (0.0 if open_stream is not None else 1.0)
        )
        self.stats = PlayerStats()
        self.output_latency = 0.0
        """PortAudio's stream latency (``stream.latency``)."""
        self.reported_latency: float | None = None
        """The output latency the host reports per buffer (first callback), else the stream's."""
        self.compensation: float | None = latency_compensation
        """Seconds the sound is placed ahead of its timetag (known after the first callback)."""
        self.dll = DelayLockedLoop(rate)
        self._frames = 0  # frames handed to the stream since it started
        self._block = 0  # frames of the last callback
        self._first_callback = threading.Event()
        self._idle = threading.Event()
        self._sounds = KeyedSounds()
        self._pending: list[_Due] = []
        self._seq = itertools.count()
        self._voices: list[_Voice] = []
        self._lock = threading.Lock()
        self._stream: OutputStream | None = None
        self._np: Any = None

    def load(self, path: str | Path, key: str = TICK) -> None:
        np = self._numpy()
        sound = resample(read_wav(path), self.rate)
        self._sounds.sounds[key] = np.array(sound.samples, dtype=np.float32) / np.float32(32768)

    def _numpy(self) -> Any:
        if self._np is None:
            self._np = importlib.import_module("numpy")
        return self._np

    def start(self) -> None:
        self._numpy()
        self.dll.reset()
        self._frames = 0
        self._stream = self._open_stream(self.rate, self.callback)
        self.output_latency = float(self._stream.latency)
        try:
            self._stream.start()
        except Exception as exc:
            raise AudioError(f"cannot start the audio stream: {first_line(exc)}") from None
        # The compensation figure is printed once (describe); with auto it is the latency the
        # host reports in the first callback, so wait (bounded) for that callback.
        if self.first_callback_timeout > 0:
            self._first_callback.wait(self.first_callback_timeout)

    def play_at(self, t: float, key: str = TICK) -> None:
        mono = self.clock.wall_to_monotonic(t)
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.stats.dropped += 1
                return
            heapq.heappush(self._pending, _Due(mono, next(self._seq), key))
            self._idle.clear()

    def _stream_now(self) -> float | None:
        stream = self._stream
        if stream is None:
            return None
        try:
            return float(stream.time)
        except Exception:  # a host that cannot tell: the callback's own time is used
            return None

    def block_leaves_at(self, frames: int, time_info: StreamTime, status: Any) -> float:
        """Monotonic time at which the first frame of the buffer being filled leaves the device
        (less the compensation: the time it is *placed* for); updates the DLL and the counters."""
        mono_now = self.clock.monotonic()
        stream_now = self._stream_now()
        current = float(time_info.currentTime)
        dac = float(time_info.outputBufferDacTime)
        host_times = current > 0 and dac > 0
        if self.reported_latency is None:
            self.reported_latency = dac - current if host_times else self.output_latency
            if self.compensation is None:
                self.compensation = self.reported_latency
            self._first_callback.set()
        assert self.compensation is not None
        if self.placement == "callback":
            # Before issue #14: the DAC time as this callback sees it, jitter included.
            self.stats.xruns += _xrun(status)
            return mono_now + self.compensation
        measured = mono_now
        if host_times and stream_now is not None and stream_now >= current:
            measured = mono_now - (stream_now - current)
        if _xrun(status):
            self.stats.xruns += 1
            self.dll.after_xrun(frames)
        block_start = self.dll.update(self._frames, measured)
        self.stats.relocks = self.dll.locks - 1
        return block_start + self.compensation

    def callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's callback: silence, then every voice mixed in at its frame."""
        outdata.fill(0)
        block_start = self.block_leaves_at(frames, time_info, status)
        self._frames += frames
        self._block = frames
        period = 1.0 / self.rate if self.placement == "callback" else self.dll.seconds_per_frame
        block_end = block_start + frames * period
        started: list[tuple[_Due, Any]] = []
        with self._lock:
            while self._pending and self._pending[0].mono < block_end:
                due = heapq.heappop(self._pending)
                started.append((due, self._sounds.find(due.key)))
        for due, samples in started:
            if samples is None:
                continue
            frame = round((due.mono - block_start) / period)
            if frame < 0:
                self.stats.count_late(-frame / self.rate)
                frame = 0
            if frame >= frames:  # rounding put it on the next block's first frame
                with self._lock:
                    heapq.heappush(self._pending, due)
                continue
            if len(self._voices) >= self.max_voices:
                self.stats.dropped += 1
                continue
            self._voices.append(_Voice(samples, frame))
            self.stats.played += 1
        channel = outdata[:, 0] if outdata.ndim == 2 else outdata
        still: list[_Voice] = []
        for voice in self._voices:
            n = min(frames - voice.start, len(voice.samples) - voice.position)
            channel[voice.start : voice.start + n] += voice.samples[
                voice.position : voice.position + n
            ]
            voice.position += n
            voice.start = 0
            if voice.position < len(voice.samples):
                still.append(voice)
        self._voices = still
        if not still and not self._pending:
            self._idle.set()
        else:
            self._idle.clear()
        if len(started) + len(still) > 1:
            self._numpy().clip(outdata, -1.0, 1.0, out=outdata)

    def describe_compensation(self) -> str:
        """The latency compensation in use, in words (printed once, at start)."""
        reported = self.reported_latency
        if self.requested_compensation is None:
            if reported is None:
                return "latency compensation: auto (no buffer played yet)"
            return (
                f"latency compensation {reported * 1000:.2f} ms (auto: the output latency "
                "PortAudio reports), so the sound leaves the device at the timetag"
            )
        if self.requested_compensation == 0:
            after = "" if reported is None else f", about {reported * 1000:.2f} ms after it"
            return f"latency compensation off: the sound leaves the device after the timetag{after}"
        return f"latency compensation {self.requested_compensation * 1000:.2f} ms (given)"

    def playout_latency(self) -> float:
        """Seconds between ``play_at(t)`` and ``t`` this player needs to place the sound on time:
        the compensation it plays ahead by (the output latency, with auto) plus one block (the
        block being computed when the onset is handed over may already be past ``t``)."""
        frames = self._block or self.output.blocksize
        return (self.compensation or 0.0) + frames / self.rate

    def describe(self) -> str:
        device = f" on {self.output.device_name}" if self.output.device_name else ""
        host = f" ({self.output.host_api})" if self.output.host_api else ""
        return f"audio: sounddevice{device}{host}, {self.rate} Hz; {self.describe_compensation()}"

    def summary(self) -> dict[str, Any]:
        """Fields for the listener's summary line: xruns always (0 included), late when any."""
        fields: dict[str, Any] = {"xruns": self.stats.xruns}
        if self.stats.late:
            fields["audio late"] = f"{self.stats.late} (max {self.stats.max_late_s * 1000:.1f} ms)"
        if self.stats.dropped:
            fields["audio dropped"] = self.stats.dropped
        return fields

    def drain(self, limit_s: float = DRAIN_LIMIT_S) -> bool:
        """Wait until every tick asked for has sounded, if the last is due within ``limit_s``
        (``--count`` stops right after the last tick *arrives*, often before it is due); True if
        nothing was left to play."""
        with self._lock:
            last = max((due.mono for due in self._pending), default=None)
        if last is None and not self._voices:
            return True
        if self._stream is None or (last is not None and last - self.clock.monotonic() > limit_s):
            return False
        return self._idle.wait(limit_s + 0.5)

    def close(self) -> None:
        self.drain()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()
