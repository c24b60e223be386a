"""Playing a sound at a given instant: the :class:`Player` protocol and four players.

A metronome listener knows *when* a tick should sound (the bundle's timetag) before it sounds. It
hands that instant to a player with ``play_at(t)``, where ``t`` is wall time in Unix seconds on the
process :class:`~oscsync.clock.Clock`, and the player does its best to make the sound start then:

* :class:`SoundDevicePlayer` (``--audio sounddevice``): one PortAudio output stream, opened once;
  sounds preloaded as float32 arrays. In the audio callback, a tick due at ``t`` starts at the frame
  of the output buffer that the DAC will play at ``t`` (PortAudio's ``outputBufferDacTime`` mapped
  to the wall clock), so onsets are sample-accurate whatever the block size; a tick that comes too
  late for that starts at the first frame of the next buffer and is counted late. It wants to be
  told as early as possible (``lead = inf``).
* :class:`PlaysoundPlayer` (``--audio playsound``): the workshop's original, one ``playsound`` call
  on a new thread per tick. Latency is high (tens of ms) and varies per tick: the player, not the
  network, then dominates the timing error. Kept to compare with; :data:`PLAYSOUND_CAVEAT` says so.
* :class:`NonePlayer` (``--audio none``): no sound; the listener's printout is the metronome.
* :class:`WavRenderer` (``--audio wav:FILE``): renders the session offline into a WAV file, each
  sound starting at frame ``round((t − start)·rate)``. This is how tests and the lab check onsets
  with no sound card. It needs only the standard library (``wave`` + ``array``).

``auto`` (:func:`open_player`) picks sounddevice when PortAudio and an output device are present and
otherwise says why in one line and plays nothing; a missing PortAudio never becomes a traceback.
numpy and sounddevice are imported only inside the sounddevice player, so importing this module
(and starting the CLI) stays fast.

Sounds are identified by a key: ``"tick"`` for ordinary beats and ``"accent"`` for beat 0.
"""

from __future__ import annotations

import heapq
import importlib
import importlib.util
import itertools
import math
import sys
import threading
import wave
from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol

from oscsync import threads
from oscsync.clock import Clock
from oscsync.install import install_hint

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

TICK = "tick"
ACCENT = "accent"

DEFAULT_RATE = 48_000
MAX_PENDING = 4096
"""Ticks a player holds before they sound; more are dropped and counted (a metronome holds few)."""

PLAYSOUND_CAVEAT = (
    "playsound starts a new player for every tick: expect tens of milliseconds of latency that "
    "varies from tick to tick (use --audio sounddevice for sample-accurate onsets)"
)
PORTAUDIO_HINT = (
    "PortAudio library not found (on Debian/Ubuntu: sudo apt-get install libportaudio2)"
)


class AudioError(Exception):
    """Audio that cannot be set up or a sound file that cannot be read; the text is one line."""


# -- sounds -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sound:
    """Mono 16-bit samples at ``rate`` Hz."""

    rate: int
    samples: array[int]

    @property
    def frames(self) -> int:
        return len(self.samples)


def read_wav(path: str | Path) -> Sound:
    """A PCM WAV file (8/16/24/32-bit, any channel count, mixed down to mono) as 16-bit samples."""
    try:
        with wave.open(str(path), "rb") as wav:
            channels = wav.getnchannels()
            width = wav.getsampwidth()
            rate = wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise AudioError(f"{path}: no such file") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise AudioError(f"{path}: not a PCM WAV file we can read ({exc})") from None
    if width not in (1, 2, 3, 4):
        raise AudioError(f"{path}: {8 * width}-bit samples are not supported")
    values = _pcm_to_int16(raw, width)
    if channels > 1:
        values = array(
            "h",
            (sum(values[i : i + channels]) // channels for i in range(0, len(values), channels)),
        )
    if not values:
        raise AudioError(f"{path}: the file holds no samples")
    return Sound(rate, values)


def _pcm_to_int16(raw: bytes, width: int) -> array[int]:
    if width == 2:
        values = array("h", raw)
        if sys.byteorder == "big":
            values.byteswap()
        return values
    if width == 1:  # unsigned 8-bit
        return array("h", ((b - 128) << 8 for b in raw))
    # 24/32-bit little-endian signed: keep the top 16 bits.
    return array(
        "h",
        (
            int.from_bytes(raw[i : i + width], "little", signed=True) >> (8 * (width - 2))
            for i in range(0, len(raw), width)
        ),
    )


def write_wav(path: str | Path, sound: Sound) -> None:
    """Write mono 16-bit PCM."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sound.rate)
        _write_samples(wav, sound.samples)


def resample(sound: Sound, rate: int) -> Sound:
    """``sound`` at another rate, by linear interpolation (good enough for a click)."""
    if sound.rate == rate:
        return sound
    source = sound.samples
    count = max(1, round(len(source) * rate / sound.rate))
    step = sound.rate / rate
    out = array("h")
    last = len(source) - 1
    for n in range(count):
        pos = n * step
        i = min(int(pos), last)
        frac = pos - i
        nxt = source[min(i + 1, last)]
        out.append(round(source[i] + (nxt - source[i]) * frac))
    return Sound(rate, out)


def find_onsets(samples: array[int], threshold: int = 1000, min_gap: int = 2400) -> list[int]:
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


# -- the protocol -----------------------------------------------------------------------------


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
    """What a player did: sounds started, started late (and by how much), dropped."""

    played: int = 0
    late: int = 0
    max_late_s: float = 0.0
    dropped: int = 0


class _KeyedSounds:
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


# -- none -------------------------------------------------------------------------------------


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


# -- wav render -------------------------------------------------------------------------------


class WavRenderer:
    """Renders every tick into a WAV file at frame ``round((t − start)·rate)``, written on close.

    ``start`` (wall seconds) is frame 0; by default the clock's time at :meth:`start`. Only the
    onsets are kept in memory, so a long session costs a few bytes per tick; the file is written in
    one pass at :meth:`close`, silence in chunks, so memory does not grow with its length.
    ``max_seconds`` caps the file (an hour is 330 MB): ticks beyond it are dropped and counted.
    """

    name = "wav"
    lead = math.inf

    def __init__(
        self,
        path: str | Path,
        clock: Clock,
        *,
        rate: int = DEFAULT_RATE,
        start: float | None = None,
        max_seconds: float = 3600.0,
        max_ticks: int = 1_000_000,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.rate = rate
        self.start_time = start
        self.max_frames = round(max_seconds * rate)
        self.max_ticks = max_ticks
        self.stats = PlayerStats()
        self._sounds = _KeyedSounds()
        self._onsets: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._closed = False

    def load(self, path: str | Path, key: str = TICK) -> None:
        self._sounds.sounds[key] = resample(read_wav(path), self.rate).samples

    def start(self) -> None:
        if self.start_time is None:
            self.start_time = self.clock.now()
        # Fail now, not after an hour of ticks, if the file cannot be written.
        try:
            self.path.open("wb").close()
        except OSError as exc:
            raise AudioError(f"cannot write {self.path}: {exc.strerror}") from None

    def frame_of(self, t: float) -> int:
        """The frame a sound due at wall time ``t`` starts at."""
        if self.start_time is None:
            raise AudioError("WavRenderer.start() has not been called")
        return round((t - self.start_time) * self.rate)

    def play_at(self, t: float, key: str = TICK) -> None:
        frame = self.frame_of(t)
        with self._lock:
            if self._closed or len(self._onsets) >= self.max_ticks or frame >= self.max_frames:
                self.stats.dropped += 1
                return
            self._onsets.append((frame, key))
            self.stats.played += 1

    @property
    def onsets(self) -> list[tuple[int, str]]:
        """(frame, key) of every sound placed so far, in the order they were asked for."""
        with self._lock:
            return list(self._onsets)

    def describe(self) -> str:
        start = "" if self.start_time is None else f"; frame 0 = {self.start_time!r} (Unix s)"
        return f"audio: rendering to {self.path} at {self.rate} Hz{start}"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            onsets = sorted(self._onsets)
        self.render(onsets)

    def render(self, onsets: list[tuple[int, str]]) -> None:
        """Write the file: silence, and each sound mixed in at its frame (clipped to 16 bits)."""
        placed = [(frame, self._sounds.lookup(key)) for frame, key in onsets]
        with wave.open(str(self.path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.rate)
            position = 0
            i = 0
            while i < len(placed):
                # A cluster: sounds that overlap each other are mixed together.
                first = placed[i][0]
                end = first + len(placed[i][1])
                j = i + 1
                while j < len(placed) and placed[j][0] < end:
                    end = max(end, placed[j][0] + len(placed[j][1]))
                    j += 1
                end = min(end, self.max_frames)
                if end > position:
                    _write_silence(wav, first - position)
                    segment = _mix(placed[i:j], first, end)
                    skip = max(0, position - first)  # a sound due before frame 0 is cut
                    _write_samples(wav, segment[skip:])
                    position = end
                i = j


def _mix(placed: list[tuple[int, array[int]]], first: int, end: int) -> array[int]:
    if len(placed) == 1:
        return placed[0][1][: end - first]
    total = [0] * (end - first)
    for frame, samples in placed:
        offset = frame - first
        for n, value in enumerate(samples[: end - frame]):
            total[offset + n] += value
    return array("h", (max(-32768, min(32767, value)) for value in total))


_SILENCE_CHUNK = bytes(2 * DEFAULT_RATE)


def _write_silence(wav: wave.Wave_write, frames: int) -> None:
    while frames > 0:
        n = min(frames, len(_SILENCE_CHUNK) // 2)
        wav.writeframesraw(_SILENCE_CHUNK[: 2 * n])
        frames -= n


def _write_samples(wav: wave.Wave_write, samples: array[int]) -> None:
    if sys.byteorder == "big":
        samples = array("h", samples)
        samples.byteswap()
    wav.writeframesraw(samples.tobytes())


# -- sounddevice ------------------------------------------------------------------------------


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


def _import_sounddevice() -> ModuleType:
    """Import sounddevice; ImportError if not installed, OSError if PortAudio itself is missing."""
    return importlib.import_module("sounddevice")


def probe_sounddevice() -> str | None:
    """None if sounddevice can play here, else one line saying why not (with a fix)."""
    try:
        importlib.import_module("numpy")
        sd = _import_sounddevice()
    except ImportError as exc:
        return f"{exc.name or 'sounddevice'} is not installed ({install_hint('audio')})"
    except OSError:
        return PORTAUDIO_HINT
    try:
        sd.query_devices(kind="output")
    except Exception as exc:  # sounddevice.PortAudioError, or ValueError with no default device
        return f"no audio output device ({_first_line(exc)})"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


@dataclass(order=True)
class _Due:
    t: float
    seq: int
    key: str = field(compare=False)


class _Voice:
    __slots__ = ("position", "samples", "start")

    def __init__(self, samples: npt.NDArray[np.float32], start: int) -> None:
        self.samples = samples
        self.position = 0
        self.start = start  # frame in the current block where it begins (0 after the first)


class SoundDevicePlayer:
    """Sample-scheduled playback on one PortAudio output stream.

    ``open_stream(rate, callback)`` opens the stream (default: a mono float32
    ``sounddevice.OutputStream``); tests pass a fake one and call :meth:`callback` themselves with a
    fake stream clock. The stream's clock is mapped to the wall clock in every callback: PortAudio
    gives ``currentTime`` (the stream-clock time of the callback) and ``outputBufferDacTime`` (when
    the buffer's first frame reaches the DAC); reading our monotonic clock at the same moment gives
    the offset between the two clocks, so the DAC time becomes a wall time without assuming which
    system clock PortAudio uses. Host APIs that report zeros fall back to "now + output latency".
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
        open_stream: StreamOpener | None = None,
        max_pending: int = MAX_PENDING,
        max_voices: int = 32,
    ) -> None:
        self.clock = clock
        self.rate = rate
        self.blocksize = blocksize
        self.latency = latency
        self.device = device
        self._open_stream = open_stream or self._open_sounddevice_stream
        self.max_pending = max_pending
        self.max_voices = max_voices
        self.stats = PlayerStats()
        self.output_latency = 0.0
        self.device_name = ""
        self._sounds = _KeyedSounds()
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
        self._stream = self._open_stream(self.rate, self.callback)
        self.output_latency = float(self._stream.latency)
        try:
            self._stream.start()
        except Exception as exc:
            raise AudioError(f"cannot start the audio stream: {_first_line(exc)}") from None

    def _open_sounddevice_stream(self, rate: int, callback: Callback) -> OutputStream:
        try:
            sd = _import_sounddevice()
        except ImportError:
            raise AudioError(f"sounddevice is not installed ({install_hint('audio')})") from None
        except OSError:
            raise AudioError(PORTAUDIO_HINT) from None
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
        except Exception as exc:  # PortAudioError, ValueError: bad device or rate
            raise AudioError(f"cannot open the audio output: {_first_line(exc)}") from None
        return stream  # type: ignore[no-any-return]

    def play_at(self, t: float, key: str = TICK) -> None:
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.stats.dropped += 1
                return
            heapq.heappush(self._pending, _Due(t, next(self._seq), key))

    def block_start_wall(self, time_info: StreamTime) -> float:
        """Wall time at which the first frame of the buffer being filled will be heard."""
        mono_now = self.clock.monotonic()
        current = float(time_info.currentTime)
        dac = float(time_info.outputBufferDacTime)
        if current > 0 and dac > 0:
            return self.clock.monotonic_to_wall(mono_now + (dac - current))
        return self.clock.monotonic_to_wall(mono_now + self.output_latency)

    def callback(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's callback: silence, then every voice mixed in at its frame."""
        outdata.fill(0)
        block_start = self.block_start_wall(time_info)
        block_end = block_start + frames / self.rate
        started: list[tuple[_Due, Any]] = []
        with self._lock:
            while self._pending and self._pending[0].t < block_end:
                due = heapq.heappop(self._pending)
                started.append((due, self._sounds.find(due.key)))
        for due, samples in started:
            if samples is None:
                continue
            frame = round((due.t - block_start) * self.rate)
            if frame < 0:
                self.stats.late += 1
                self.stats.max_late_s = max(self.stats.max_late_s, -frame / self.rate)
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
        if len(started) + len(still) > 1:
            self._numpy().clip(outdata, -1.0, 1.0, out=outdata)

    def describe(self) -> str:
        device = f" on {self.device_name}" if self.device_name else ""
        return (
            f"audio: sounddevice{device}, {self.rate} Hz, output latency "
            f"{self.output_latency * 1000:.1f} ms (reported by PortAudio)"
        )

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
            finally:
                stream.close()


# -- playsound --------------------------------------------------------------------------------


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
        self._paths = _KeyedSounds()
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
                self._on_warning(f"playsound failed: {_first_line(exc)}")
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


# -- choosing ---------------------------------------------------------------------------------

AUDIO_KINDS = ("auto", "sounddevice", "playsound", "none")


@dataclass(frozen=True)
class AudioChoice:
    """What ``--audio`` asked for: a kind, and for ``wav`` the file."""

    kind: str
    path: Path | None = None

    def __str__(self) -> str:
        return f"wav:{self.path}" if self.kind == "wav" else self.kind


def parse_audio_choice(text: str) -> AudioChoice:
    """``auto``, ``sounddevice``, ``playsound``, ``none`` or ``wav:FILE``."""
    value = text.strip()
    if value.lower().startswith("wav:"):
        path = value[4:]
        if not path:
            raise AudioError("wav: needs a file name, e.g. wav:out.wav")
        return AudioChoice("wav", Path(path))
    if value.lower() in AUDIO_KINDS:
        return AudioChoice(value.lower())
    raise AudioError(f"{text!r} is not one of auto, sounddevice, playsound, none, wav:FILE")


def open_player(
    choice: AudioChoice,
    clock: Clock,
    sounds: Mapping[str, str | Path],
    *,
    notice: Callable[[str], None],
    warn: Callable[[str], None] | None = None,
) -> Player:
    """A started player with ``sounds`` (key -> file) loaded; AudioError if it cannot be had.

    ``auto`` never raises for a missing sound card: it calls ``notice`` with one line saying why
    there will be no sound and returns a :class:`NonePlayer`.
    """
    player: Player
    if choice.kind == "auto":
        reason = probe_sounddevice()
        if reason is None:
            try:
                return _loaded_and_started(SoundDevicePlayer(clock), sounds)
            except AudioError as exc:
                reason = str(exc)
        notice(f"audio: {reason}; playing no sound (--audio none)")
        player = NonePlayer()
    elif choice.kind == "sounddevice":
        reason = probe_sounddevice()
        if reason is not None:
            raise AudioError(reason)
        player = SoundDevicePlayer(clock)
    elif choice.kind == "playsound":
        reason = probe_playsound()
        if reason is not None:
            raise AudioError(reason)
        player = PlaysoundPlayer(clock, on_warning=warn)
    elif choice.kind == "wav":
        assert choice.path is not None
        player = WavRenderer(choice.path, clock)
    else:
        player = NonePlayer()
    return _loaded_and_started(player, sounds)


def _loaded_and_started(player: Player, sounds: Mapping[str, str | Path]) -> Player:
    for key, path in sounds.items():
        player.load(path, key)
    player.start()
    return player
