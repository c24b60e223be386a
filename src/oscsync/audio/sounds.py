"""Metronome and sequencer sounds, made here to be regenerated: ``python -m oscsync.audio.sounds``.

``tick.wav`` (an ordinary beat) and ``tock.wav`` (the accent, beat 0 of a bar) are 48 kHz, 16-bit,
mono, 40 ms long: a decaying sine that starts **at its peak on the first sample**, so the onset is a
single sample a detector (or an ear) cannot mistake, followed by a short fade so the end does not
click. The accent is higher and louder. Pure Data's ``[soundfiler]`` and Python's players read the
same files from ``sounds/`` at the top of the repository; both are our own work (see
``sounds/README.md`` for the license).

``kick.wav``, ``snare.wav`` and ``hat.wav`` are the sequencer's drums (``oscsync sequence``,
issue #19), made the same way so that they too have a one-sample onset: a kick is a cosine whose
pitch falls, a snare is a tone mixed with noise, a hat is mostly noise; the noise comes from a
seeded generator, so the files are the same every time. Pitched voices play :func:`tone`.

Only the standard library is used (``math``, ``array``, and ``wave`` through
:func:`oscsync.audio.write_wav`), so the files can be rebuilt on a machine with no numpy.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

from oscsync.audio import AudioError, Sound, write_wav

RATE = 48_000
"""Samples per second of the generated files (PD and sounddevice both run happily at 48 kHz)."""

LENGTH_S = 0.040
"""40 ms: long enough to be heard as a click with a pitch, short enough for 1,000 bpm."""

_FADE_S = 0.004


@dataclass(frozen=True)
class Voice:
    """How one sound is synthesised."""

    frequency: float
    amplitude: float
    decay_s: float
    length_s: float = LENGTH_S
    noise: float = 0.0
    """Share of white noise in the sound (0 pure tone, 1 pure noise)."""
    start_frequency: float | None = None
    """If given, the pitch falls from this to ``frequency`` (a kick's thump)."""
    sweep_s: float = 0.010


VOICES = {
    "tick": Voice(frequency=1_500.0, amplitude=0.55, decay_s=0.008),
    "tock": Voice(frequency=2_500.0, amplitude=0.90, decay_s=0.010),
    # Drums decay to below 3 % of full scale within 100 ms, so a 16th-note grid at up to 150 bpm
    # keeps every onset distinct (tests/test_sequence_e2e.py detects them).
    "kick": Voice(
        frequency=50.0,
        amplitude=0.95,
        decay_s=0.025,
        length_s=0.120,
        start_frequency=160.0,
        sweep_s=0.012,
    ),
    "snare": Voice(frequency=190.0, amplitude=0.80, decay_s=0.018, length_s=0.100, noise=0.7),
    "hat": Voice(frequency=7_000.0, amplitude=0.50, decay_s=0.008, length_s=0.050, noise=0.9),
}
"""``tick`` is every beat; ``tock`` is the accent on beat 0 of the bar; the rest are drums."""

DRUMS = ("kick", "snare", "hat")


def synthesize(name: str, rate: int = RATE) -> array[int]:
    """The 16-bit samples of sound ``name`` (``tick`` or ``tock``)."""
    return _render(VOICES[name], rate, seed=name)


def _render(voice: Voice, rate: int, seed: str) -> array[int]:
    frames = round(voice.length_s * rate)
    fade = round(_FADE_S * rate)
    noise = random.Random(seed)
    samples = array("h")
    for n in range(frames):
        t = n / rate
        phase = voice.frequency * t
        if voice.start_frequency is not None:
            # Integral of f(t) = f + (f0 − f)·exp(−t/τ): a pitch that falls smoothly.
            rise = voice.start_frequency - voice.frequency
            phase += rise * voice.sweep_s * (1 - math.exp(-t / voice.sweep_s))
        # cos, not sin: full amplitude at n = 0 is the sharp onset (the noise is +1 there too).
        hiss = 1.0 if n == 0 else noise.uniform(-1.0, 1.0)
        value = (1 - voice.noise) * math.cos(2 * math.pi * phase) + voice.noise * hiss
        value *= voice.amplitude * math.exp(-t / voice.decay_s)
        if n >= frames - fade:
            value *= (frames - n) / fade
        samples.append(round(value * 32767))
    return samples


def tone(note: int, rate: int = RATE) -> array[int]:
    """A short plucked tone at MIDI ``note`` (69 = 440 Hz) for a pitched sequencer voice."""
    frequency = 440.0 * 2 ** ((note - 69) / 12)
    voice = Voice(frequency=frequency, amplitude=0.6, decay_s=0.025, length_s=0.120)
    return _render(voice, rate, seed="tone")


def generate(directory: Path) -> list[Path]:
    """Write every sound of :data:`VOICES` (``tick.wav`` ...) into ``directory``; return paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in VOICES:
        path = directory / f"{name}.wav"
        write_wav(path, Sound(RATE, synthesize(name)))
        written.append(path)
    return written


REPO_SOUNDS = Path(__file__).resolve().parent.parent.parent / "sounds"
"""``sounds/`` of a source checkout (where PD's patches find them too)."""


def default_path(name: str) -> Path:
    """The file for sound ``name``: the repository's copy, else one generated into a cache dir.

    An installed package has no ``sounds/`` next to it; rather than failing, the same samples are
    written once to the platform's cache directory (:func:`cache_dir`); AudioError if that cannot
    be written.
    """
    if name not in VOICES:
        raise KeyError(name)
    repo_copy = REPO_SOUNDS / f"{name}.wav"
    if repo_copy.is_file():
        return repo_copy
    cache = cache_dir() / "sounds"
    cached = cache / f"{name}.wav"
    if not cached.is_file():
        try:
            generate(cache)
        except OSError as exc:
            raise AudioError(
                f"cannot write the metronome sounds to {cache}: {exc.strerror}"
            ) from None
    return cached


def cache_dir() -> Path:
    """Where oscsync caches files, in the platform's usual place (issue #21).

    Linux: ``$XDG_CACHE_HOME/oscsync`` (``~/.cache/oscsync``); macOS: ``~/Library/Caches/oscsync``;
    Windows: ``%LOCALAPPDATA%\\oscsync\\Cache``, as ``platformdirs`` (what pip uses) decides.
    """
    import platformdirs  # small, but only needed the first time the sounds are generated

    return Path(platformdirs.user_cache_dir("oscsync", appauthor=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m oscsync.audio.sounds",
        description="Write the metronome and sequencer sounds (48 kHz 16-bit mono WAV files).",
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=Path("sounds"),
        help="where to write them (default: ./sounds)",
    )
    args = parser.parse_args(argv)
    for path in generate(args.directory):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
