"""The committed metronome sounds: what ``python -m oscsync.audio.sounds`` makes, in the right format."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import pytest

from conftest import REPO
from oscsync import audio
from oscsync.audio import sounds


@pytest.mark.parametrize(
    ("name", "longest"),
    [("tick", 0.05), ("tock", 0.05), ("kick", 0.12), ("snare", 0.1), ("hat", 0.05)],
)
def test_committed_sound_format(name: str, longest: float) -> None:
    path = REPO / "sounds" / f"{name}.wav"
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 1
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == 48_000
        assert wav.getnframes() / wav.getframerate() <= longest
    samples = audio.read_wav(path).samples
    # Sharp onset: the very first sample is the loudest one.
    assert abs(samples[0]) == max(abs(v) for v in samples)
    assert abs(samples[0]) > 10_000
    # ...and it ends quietly (faded), so the end does not click.
    assert max(abs(v) for v in samples[-10:]) < 100


def test_accent_is_louder_than_tick() -> None:
    tick = audio.read_wav(REPO / "sounds" / "tick.wav").samples
    tock = audio.read_wav(REPO / "sounds" / "tock.wav").samples
    assert tock[0] > tick[0]


def test_generator_reproduces_the_committed_files(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "oscsync.audio.sounds", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    names = ["tick", "tock", "kick", "snare", "hat"]
    assert result.stdout.split() == [str(tmp_path / f"{name}.wav") for name in names]
    for name in names:
        made = audio.read_wav(tmp_path / f"{name}.wav").samples
        committed = audio.read_wav(REPO / "sounds" / f"{name}.wav").samples
        assert len(made) == len(committed)
        # Equal up to one unit: another libm may round a sample the other way.
        assert max(abs(a - b) for a, b in zip(made, committed)) <= 1


def test_default_path_generates_into_cache_when_repo_copy_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sounds, "REPO_SOUNDS", tmp_path / "no-such-dir")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = sounds.default_path("tock")
    assert path == tmp_path / "cache" / "oscsync" / "sounds" / "tock.wav"
    made = audio.read_wav(path).samples
    committed = audio.read_wav(REPO / "sounds" / "tock.wav").samples
    assert max(abs(a - b) for a, b in zip(made, committed, strict=True)) <= 1
    with pytest.raises(KeyError):
        sounds.default_path("bell")


def test_default_path_says_in_one_line_when_the_cache_cannot_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sounds, "REPO_SOUNDS", tmp_path / "no-such-dir")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # a file: no directory can go under it
    with pytest.raises(audio.AudioError, match="cannot write the metronome sounds to"):
        sounds.default_path("tick")


@pytest.mark.parametrize("name", ["kick", "snare", "hat"])
def test_drums_fall_below_3_percent_within_100_ms(name: str) -> None:
    # Issue #19: a 16th-note grid at 150 bpm is 100 ms; each onset must stand alone.
    samples = audio.read_wav(REPO / "sounds" / f"{name}.wav").samples
    assert max(abs(v) for v in samples[4800:] or [0]) < 1000


def test_tone_is_pitched_and_has_a_sharp_onset() -> None:
    a440 = sounds.tone(69)
    assert a440[0] == max(abs(v) for v in a440) > 10_000
    # 440 Hz at 48 kHz: the first zero crossing is a quarter period (27.3 frames) in.
    first_negative = next(i for i, v in enumerate(a440) if v < 0)
    assert first_negative == 28
