"""WAV files: read any PCM WAV as mono 16-bit, write mono 16-bit, resample, and an appending
writer whose header is valid after every write (so a run that stops leaves a playable file).

Standard library only (``wave`` + ``array``): the metronome's sounds and the ``wav:`` renderer
work on a machine with no numpy.
"""

from __future__ import annotations

import contextlib
import struct
import sys
import wave
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from oscsync.audio.player import AudioError
from oscsync.outfile import open_output


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
    with WavWriter(path, sound.rate) as out:
        out.write(sound.samples)


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


_SILENCE_CHUNK = bytes(2 * 48_000)

_UNKNOWN_SIZE = 0xFFFFFFFF
"""The RIFF and data sizes of a WAV streamed to a pipe, whose length is not known when its
header is written (what sox and ffmpeg write; readers take it as "until the end")."""


def _streamed_header(rate: int) -> bytes:
    """A mono 16-bit PCM header with unknown sizes (:data:`_UNKNOWN_SIZE`)."""
    return (
        struct.pack("<4sI4s", b"RIFF", _UNKNOWN_SIZE, b"WAVE")
        + struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16)
        + struct.pack("<4sI", b"data", _UNKNOWN_SIZE)
    )


class WavWriter:
    """Mono 16-bit PCM appended in pieces; the header and the bytes are on disk after each write.

    ``wave`` patches the header's sizes after every ``writeframes``; flushing the file after each
    piece means a process that is killed between writes still leaves a valid WAV of what was
    written (issue #20 item 11: a terminal closed on a long run left a 0-byte file). Any OSError
    (disk full, ``/dev/full``, a removed directory) becomes an :class:`AudioError`, raised by the
    write that failed, the first one included: the header is written and flushed on open.

    A named pipe cannot seek back to the header (``wave`` failed the first write with "Illegal
    seek"): there the header says the sizes are unknown and the samples follow it as they come.
    """

    def __init__(self, path: str | Path, rate: int) -> None:
        self.path = Path(path)
        self.rate = rate
        self.frames = 0
        self._file: BinaryIO | None = None
        self._wav: wave.Wave_write | None = None
        try:
            file = cast(BinaryIO, open_output(self.path, binary=True))  # a FIFO nobody reads: ENXIO
            self._file = file
            if file.seekable():
                self._wav = wave.open(file, "wb")  # noqa: SIM115 (open until close())
                self._wav.setnchannels(1)
                self._wav.setsampwidth(2)
                self._wav.setframerate(rate)
                self._wav.writeframes(b"")  # the header, with 0 frames
            else:
                file.write(_streamed_header(rate))
            file.flush()
        except OSError as exc:
            self._abandon()
            raise self._error(exc) from None

    def _error(self, exc: OSError) -> AudioError:
        return AudioError(f"cannot write {self.path}: {exc.strerror or exc}")

    def write(self, samples: array[int]) -> None:
        if sys.byteorder == "big":
            samples = array("h", samples)
            samples.byteswap()
        self._write_bytes(samples.tobytes())

    def write_silence(self, frames: int) -> None:
        while frames > 0:
            n = min(frames, len(_SILENCE_CHUNK) // 2)
            self._write_bytes(_SILENCE_CHUNK[: 2 * n])
            frames -= n

    def _write_bytes(self, data: bytes) -> None:
        if self._file is None:
            raise AudioError(f"{self.path} is closed")
        try:
            if self._wav is not None:
                self._wav.writeframes(data)
            else:
                self._file.write(data)  # a pipe: no header to patch
            self._file.flush()
        except OSError as exc:
            self._abandon()
            raise self._error(exc) from None
        self.frames += len(data) // 2

    def _abandon(self) -> None:
        wav, handle, self._wav, self._file = self._wav, self._file, None, None
        for closer in (wav, handle):
            if closer is not None:
                with contextlib.suppress(OSError):
                    closer.close()

    def close(self) -> None:
        wav, handle, self._wav, self._file = self._wav, self._file, None, None
        try:
            if wav is not None:
                wav.close()
            if handle is not None:
                handle.close()
        except OSError as exc:
            raise self._error(exc) from None

    def __enter__(self) -> WavWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
