"""``--audio wav:FILE``: the session rendered into a WAV file, each sound at its exact frame.

This is how tests and the lab check onsets with no sound card. Standard library only.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
from array import array
from collections.abc import Callable
from pathlib import Path

from oscsync import threads
from oscsync.audio.player import DEFAULT_RATE, TICK, AudioError, KeyedSounds, PlayerStats
from oscsync.audio.wav import WavWriter, read_wav, resample
from oscsync.clock import Clock

FLUSH_MARGIN_S = 0.5
"""Frames older than this (on the clock) are written out: a tick that asks for an onset up to this
far in the past still sounds whole; one later than that is cut at the frames already written."""

FLUSH_EVERY_S = 1.0
"""Write pieces of at least this much audio: a tick flood does not patch the header per tick."""


class _Voice:
    """A sound being mixed: its samples and how many of them are already written."""

    __slots__ = ("position", "samples")

    def __init__(self, samples: array[int], position: int) -> None:
        self.samples = samples
        self.position = position

    @property
    def remaining(self) -> int:
        return len(self.samples) - self.position


class WavRenderer:
    """Renders every tick into a WAV file at frame ``round((t − start)·rate)``, written as it goes.

    ``start`` (wall seconds) is frame 0; by default the clock's time at :meth:`start`. The file is
    opened (header written) at :meth:`start`, so a path that cannot be written fails there, before
    any tick. While ticks come, a writer thread mixes and appends everything older than
    :data:`FLUSH_MARGIN_S`, so the file on disk is always a valid WAV of the session so far and
    :meth:`close` only writes the tail (issue #20 item 11: a long run used to be rendered at exit,
    17 s after a tick flood, and a terminal closed before that left a 0-byte file). The mixing
    runs on that thread, not in :meth:`play_at`, so the thread that receives ticks never waits for
    it. Memory holds only the sounds not yet written. ``max_seconds`` caps the file (an hour is
    330 MB) and ``max_voices`` the sounds mixed at one frame, which bounds the mixing work per
    second of audio; ticks beyond either are dropped and counted. A write that fails (disk full)
    is reported once through ``on_error`` and the renderer then drops every tick.
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
        max_voices: int = 8,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self.clock = clock
        self.rate = rate
        self.start_time = start
        self.max_frames = round(max_seconds * rate)
        self.max_ticks = max_ticks
        self.max_voices = max_voices
        self.stats = PlayerStats()
        self.error: AudioError | None = None
        self._on_error = on_error
        self._sounds = KeyedSounds()
        self._onsets: list[tuple[int, str]] = []
        self._pending: list[tuple[int, int, str]] = []  # (frame, seq, key), guarded by _lock
        self._seq = itertools.count()
        # The writer's own state: touched only by the writer thread (and by close() after it).
        self._voices: list[_Voice] = []  # sounding at frame `written`
        self._written = 0
        self._out: WavWriter | None = None
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._flush_to = 0  # frame the writer should write up to, guarded by _lock
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._closed = False

    def load(self, path: str | Path, key: str = TICK) -> None:
        self._sounds.sounds[key] = resample(read_wav(path), self.rate).samples

    def start(self) -> None:
        if self.start_time is None:
            self.start_time = self.clock.now()
        # Fail now, not after an hour of ticks, if the file cannot be written.
        self._out = WavWriter(self.path, self.rate)
        self._writer = threads.daemon_thread(self._write_loop, name="oscsync-wav-writer")
        threads.start(self._writer)

    def frame_of(self, t: float) -> int:
        """The frame a sound due at wall time ``t`` starts at."""
        if self.start_time is None:
            raise AudioError("WavRenderer.start() has not been called")
        return round((t - self.start_time) * self.rate)

    @property
    def frames_written(self) -> int:
        """Frames already on disk."""
        return self._written

    def wait_written(self, frame: int, timeout: float) -> bool:
        """Wait until the file holds ``frame`` frames (or writing failed); True if it does."""
        with self._progress:
            return self._progress.wait_for(
                lambda: self._written >= frame or self.error is not None, timeout
            ) and (self._written >= frame)

    def play_at(self, t: float, key: str = TICK) -> None:
        frame = self.frame_of(t)
        samples = self._sounds.lookup(key)
        with self._lock:
            if (
                self._closed
                or self.error is not None
                or len(self._onsets) >= self.max_ticks
                or frame >= self.max_frames
                or frame + len(samples) <= self._written
            ):
                self.stats.dropped += 1
                return
            self._onsets.append((frame, key))
            heapq.heappush(self._pending, (frame, next(self._seq), key))
            self.stats.played += 1
            upto = self.frame_of(self.clock.now() - FLUSH_MARGIN_S)
            if upto - max(self._written, self._flush_to) >= FLUSH_EVERY_S * self.rate:
                self._flush_to = upto
                self._wake.set()

    @property
    def onsets(self) -> list[tuple[int, str]]:
        """(frame, key) of every sound placed so far, in the order they were asked for."""
        with self._lock:
            return list(self._onsets)

    def describe(self) -> str:
        start = "" if self.start_time is None else f"; frame 0 = {self.start_time!r} (Unix s)"
        return f"audio: rendering to {self.path} at {self.rate} Hz{start}"

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                if self._closed:
                    return
                upto = self._flush_to
            self._flush(upto)

    def close(self) -> None:
        """Write what is left (up to the end of the last sound) and close the file; AudioError if
        that write fails. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        if self._writer is not None:
            self._writer.join()  # it finishes the piece it is writing (bounded by FLUSH_EVERY_S)
        with self._lock:
            end = max(
                [frame + len(self._sounds.lookup(key)) for frame, _, key in self._pending]
                + [self._written + voice.remaining for voice in self._voices]
                + [self._written]
            )
        self._flush(end)
        out, self._out = self._out, None
        if out is not None:
            out.close()
        if self.error is not None:
            raise self.error

    def _flush(self, upto: int) -> None:
        """Mix and append frames ``written .. upto`` (writer thread, or close() after it)."""
        upto = min(upto, self.max_frames)
        with self._lock:
            if self.error is not None or self._out is None:
                return
            due: list[tuple[int, str]] = []
            while self._pending and self._pending[0][0] < upto:
                frame, _, key = heapq.heappop(self._pending)
                due.append((frame, key))
        late: list[float] = []
        dropped = 0
        try:
            dropped = self._render(upto, due, late)
        except AudioError as exc:
            with self._progress:
                self.error = exc
                self._pending.clear()
                self._voices.clear()
                self._progress.notify_all()
            if self._on_error is not None:
                self._on_error(str(exc))
            return
        with self._progress:
            for seconds in late:
                self.stats.count_late(seconds)
            self.stats.dropped += dropped
            self.stats.played -= dropped
            self._progress.notify_all()

    def _render(self, upto: int, due: list[tuple[int, str]], late: list[float]) -> int:
        """Write ``written .. upto`` with the sounds ``due`` (sorted, all starting before
        ``upto``) mixed in; return how many were dropped (too many voices at once)."""
        assert self._out is not None
        dropped = 0
        index = 0
        while self._written < upto:
            while index < len(due) and due[index][0] <= self._written:
                frame, key = due[index]
                index += 1
                skip = self._written - frame  # frames already written: cut, and late if any
                if skip > 0:
                    late.append(skip / self.rate)
                if len(self._voices) >= self.max_voices:
                    dropped += 1
                    continue
                self._voices.append(_Voice(self._sounds.lookup(key), skip))
            end = due[index][0] if index < len(due) else upto
            if not self._voices:
                self._out.write_silence(end - self._written)
                with self._progress:
                    self._written = end
                continue
            end = min(end, self._written + max(voice.remaining for voice in self._voices))
            self._out.write(self._mix(end - self._written))
            with self._progress:
                self._written = end
        return dropped

    def _mix(self, frames: int) -> array[int]:
        """The next ``frames`` of the sounding voices, summed and clipped to 16 bits."""
        voices = self._voices
        self._voices = [voice for voice in voices if voice.remaining > frames]
        if len(voices) == 1:
            voice = voices[0]
            out = voice.samples[voice.position : voice.position + frames]
            voice.position += frames
            if len(out) < frames:
                out.extend(array("h", bytes(2 * (frames - len(out)))))
            return out
        total = [0] * frames
        for voice in voices:
            for n, value in enumerate(voice.samples[voice.position : voice.position + frames]):
                total[n] += value
            voice.position += frames
        return array("h", (max(-32768, min(32767, value)) for value in total))
