"""Players and WAV helpers: exact frames in the WAV render, sample placement on a fake stream."""

from __future__ import annotations

import threading
import wave
from array import array
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from oscsync import audio, sounds
from oscsync.audio import (
    ACCENT,
    TICK,
    AudioChoice,
    AudioError,
    NonePlayer,
    PlaysoundPlayer,
    Sound,
    SoundDevicePlayer,
    WavRenderer,
)
from oscsync.clock import FakeClock
from oscsync.install import install_hint

RATE = 48_000
WAIT = 5.0  # bound for a helper thread to run; never a timing assertion
TICK_WAV = sounds.default_path("tick")
TOCK_WAV = sounds.default_path("tock")


def tick_samples() -> array[int]:
    return audio.read_wav(TICK_WAV).samples


# -- reading and writing ----------------------------------------------------------------------


def write_pcm(path: Path, frames: bytes, *, channels: int, width: int, rate: int = RATE) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(frames)


def test_read_wav_mixes_stereo_24_bit_down_to_mono_16_bit(tmp_path: Path) -> None:
    # Two frames: (L, R) = (0x100000, 0x300000) and (-0x100000, -0x300000) in 24-bit.
    def s24(value: int) -> bytes:
        return value.to_bytes(3, "little", signed=True)

    path = tmp_path / "stereo24.wav"
    write_pcm(
        path,
        s24(0x100000) + s24(0x300000) + s24(-0x100000) + s24(-0x300000),
        channels=2,
        width=3,
    )
    sound = audio.read_wav(path)
    assert sound.rate == RATE
    assert sound.samples.tolist() == [0x2000, -0x2000]  # mean of L and R, top 16 bits


def test_read_wav_unsigned_8_bit(tmp_path: Path) -> None:
    path = tmp_path / "u8.wav"
    write_pcm(path, bytes([128, 255, 0]), channels=1, width=1)
    assert audio.read_wav(path).samples.tolist() == [0, 127 << 8, -128 << 8]


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "no such file"), (b"RIFF\x00\x00not a wave file", "not a PCM WAV")],
)
def test_unreadable_sound_is_one_line_audio_error(
    tmp_path: Path, content: bytes | None, expected: str
) -> None:
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioError, match=expected) as info:
        audio.read_wav(path)
    assert "\n" not in str(info.value)


def test_empty_wav_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    write_pcm(path, b"", channels=1, width=2)
    with pytest.raises(AudioError, match="no samples"):
        audio.read_wav(path)


def test_resample_keeps_duration_and_endpoints() -> None:
    sound = Sound(24_000, array("h", [0, 1000, 2000, 3000]))
    doubled = audio.resample(sound, 48_000)
    assert doubled.rate == 48_000
    assert doubled.samples.tolist()[:7] == [0, 500, 1000, 1500, 2000, 2500, 3000]
    assert audio.resample(sound, 24_000) is sound


def test_find_onsets_reports_the_first_loud_frame_once_per_sound() -> None:
    samples = array("h", [0] * 10_000)
    click = tick_samples()
    for start in (100, 3_000, 7_777):
        samples[start : start + len(click)] = click
    assert audio.find_onsets(samples, min_gap=2400) == [100, 3_000, 7_777]


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    sound = Sound(RATE, array("h", [0, 32767, -32768, 5]))
    audio.write_wav(tmp_path / "x.wav", sound)
    assert audio.read_wav(tmp_path / "x.wav") == sound


# -- wav render -------------------------------------------------------------------------------


START = 1_700_000_000.0


def renderer(tmp_path: Path, **kwargs: Any) -> WavRenderer:
    player = WavRenderer(tmp_path / "out.wav", FakeClock(start=START), **kwargs)
    player.load(TICK_WAV)
    player.load(TOCK_WAV, ACCENT)
    player.start()
    return player


def test_wav_render_places_each_scripted_onset_at_its_frame(tmp_path: Path) -> None:
    # Awkward offsets on purpose: not multiples of anything, some rounding either way.
    offsets = [0.0, 0.123456, 0.5, 0.6180339, 1.0000104, 1.41421356, 2.71828]
    player = renderer(tmp_path)
    assert player.start_time == START  # frame 0 is the clock's time at start()
    for i, offset in enumerate(offsets):
        player.play_at(START + offset, ACCENT if i % 4 == 0 else TICK)
    player.close()

    written = audio.read_wav(tmp_path / "out.wav")
    assert written.rate == RATE
    found = audio.find_onsets(written.samples)
    expected = [offset * RATE for offset in offsets]
    assert len(found) == len(expected)
    for frame, exact in zip(found, expected):
        assert abs(frame - exact) <= 1, (frame, exact)
    # The accent sound is the louder one.
    tock_peak = audio.read_wav(TOCK_WAV).samples[0]
    assert written.samples[found[0]] == tock_peak
    assert written.samples[found[1]] == tick_samples()[0]


def test_wav_render_mixes_overlapping_sounds(tmp_path: Path) -> None:
    player = renderer(tmp_path)
    player.play_at(START + 0.01)
    player.play_at(START + 0.01 + 100 / RATE)  # 100 frames later, while the first still rings
    player.close()
    written = audio.read_wav(tmp_path / "out.wav").samples
    click = tick_samples()
    base = round(0.01 * RATE)
    assert written[base] == click[0]
    assert written[base + 100] == max(-32768, min(32767, click[100] + click[0]))
    assert len(written) == base + 100 + len(click)


def test_wav_render_cuts_a_sound_due_before_frame_zero(tmp_path: Path) -> None:
    player = renderer(tmp_path)
    player.play_at(START - 10 / RATE)
    player.close()
    written = audio.read_wav(tmp_path / "out.wav").samples
    assert written.tolist() == tick_samples()[10:].tolist()


def test_wav_render_drops_ticks_beyond_the_cap(tmp_path: Path) -> None:
    player = renderer(tmp_path, max_seconds=1.0)
    player.play_at(START + 0.5)
    player.play_at(START + 1.5)
    player.close()
    player.play_at(START + 0.25)  # after close: dropped, never raises
    assert (player.stats.played, player.stats.dropped) == (1, 2)
    assert audio.find_onsets(audio.read_wav(tmp_path / "out.wav").samples) == [RATE // 2]


def test_wav_render_with_no_ticks_writes_an_empty_file(tmp_path: Path) -> None:
    player = renderer(tmp_path)
    player.close()
    player.close()  # twice is fine
    with wave.open(str(tmp_path / "out.wav")) as wav:
        assert (wav.getnframes(), wav.getframerate()) == (0, RATE)


def test_wav_render_fails_at_start_when_file_cannot_be_written(tmp_path: Path) -> None:
    player = WavRenderer(tmp_path / "missing-dir" / "out.wav", FakeClock())
    with pytest.raises(AudioError, match="cannot write"):
        player.start()


# -- sounddevice, with a fake stream and a fake stream clock ----------------------------------


class FakeStream:
    """Stands in for sounddevice.OutputStream; its clock is the fake clock shifted by an offset."""

    def __init__(self, clock: FakeClock, latency: float, stream_offset: float) -> None:
        self.clock = clock
        self.latency = latency
        self.stream_offset = stream_offset
        self.started = self.closed = False

    @property
    def time(self) -> float:
        return self.clock.monotonic() + self.stream_offset

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.closed = True

    def time_info(self) -> SimpleNamespace:
        now = self.time
        return SimpleNamespace(currentTime=now, outputBufferDacTime=now + self.latency)


def fake_player(
    clock: FakeClock, latency: float = 0.02, stream_offset: float = -990.0
) -> tuple[SoundDevicePlayer, FakeStream]:
    # PortAudio's clock starts near 10 s here while ours reads 1000 s: the player must map them.
    stream = FakeStream(clock, latency, stream_offset)
    player = SoundDevicePlayer(clock, rate=RATE, open_stream=lambda rate, callback: stream)
    player.load(TICK_WAV)
    player.load(TOCK_WAV, ACCENT)
    player.start()
    assert stream.started and player.output_latency == latency
    return player, stream


def run_blocks(player: SoundDevicePlayer, stream: FakeStream, blocks: int, frames: int) -> Any:
    """Call the callback like PortAudio would, back to back; return all the output, concatenated."""
    np = pytest.importorskip("numpy")
    out = []
    for _ in range(blocks):
        block = np.full((frames, 1), 7.0, dtype=np.float32)  # garbage: the callback must clear it
        player.callback(block, frames, stream.time_info(), None)
        out.append(block[:, 0].copy())
        stream.clock.advance(frames / RATE)
    return np.concatenate(out)


@pytest.mark.parametrize("frames", [64, 256, 1000, 4096])
def test_sounddevice_places_onsets_at_the_exact_frame_whatever_the_block_size(
    frames: int,
) -> None:
    np = pytest.importorskip("numpy")
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player, stream = fake_player(clock)
    # The first block's first frame is heard one output latency from now.
    first_frame_wall = clock.now() + stream.latency
    offsets = [0.0, 0.0621, 0.15, 0.25 + 3 / RATE, 0.333333]  # >= 50 ms apart
    for i, offset in enumerate(offsets):
        player.play_at(first_frame_wall + offset, ACCENT if i == 0 else TICK)
    out = run_blocks(player, stream, blocks=(RATE // 2) // frames + 1, frames=frames)

    as_int = array("h", np.round(out * 32768).astype(np.int16).tobytes())
    found = audio.find_onsets(as_int)
    assert found == [round(offset * RATE) for offset in offsets]
    click = np.array(tick_samples(), dtype=np.float32) / 32768
    start = found[2]
    # The whole sound is there, continuing across block boundaries, and silence around it.
    assert np.allclose(out[start : start + len(click)], click)
    assert not out[start - 100 : start].any()
    assert as_int[found[0]] == audio.read_wav(TOCK_WAV).samples[0]
    assert player.stats.played == len(offsets) and player.stats.late == 0


def test_sounddevice_tick_too_late_for_its_frame_starts_the_next_block_and_counts() -> None:
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player, stream = fake_player(clock, latency=0.01)
    player.play_at(clock.now())  # now is already inside the output latency: cannot be on time
    out = run_blocks(player, stream, blocks=1, frames=256)
    assert out[0] == pytest.approx(tick_samples()[0] / 32768)
    assert player.stats.late == 1
    assert player.stats.max_late_s == pytest.approx(0.01, abs=1 / RATE)


def test_sounddevice_holds_future_ticks_and_bounds_what_it_holds() -> None:
    clock = FakeClock(start=START, monotonic_start=1000.0)
    stream = FakeStream(clock, 0.01, 0.0)
    player = SoundDevicePlayer(
        clock, rate=RATE, open_stream=lambda rate, callback: stream, max_pending=2
    )
    player.load(TICK_WAV)
    player.start()
    for ahead in (5.0, 6.0, 7.0):
        player.play_at(clock.now() + ahead)
    out = run_blocks(player, stream, blocks=4, frames=512)
    assert not out.any()
    assert (player.stats.played, player.stats.dropped) == (0, 1)
    player.close()
    player.close()
    assert stream.closed


def test_sounddevice_plays_the_tick_for_an_accent_when_no_accent_is_loaded() -> None:
    clock = FakeClock(start=START, monotonic_start=1000.0)
    stream = FakeStream(clock, 0.01, 0.0)
    player = SoundDevicePlayer(clock, rate=RATE, open_stream=lambda rate, callback: stream)
    player.load(TICK_WAV)
    player.start()
    player.play_at(clock.now() + stream.latency, ACCENT)
    out = run_blocks(player, stream, blocks=1, frames=256)
    assert out[0] == pytest.approx(tick_samples()[0] / 32768)
    assert player.stats.played == 1


def test_sounddevice_maps_stream_time_when_host_reports_zero_times() -> None:
    np = pytest.importorskip("numpy")
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player, _ = fake_player(clock, latency=0.02)
    player.play_at(clock.now() + 0.02 + 10 / RATE)
    block = np.zeros((64, 1), dtype=np.float32)
    zeros = SimpleNamespace(currentTime=0.0, outputBufferDacTime=0.0)
    player.callback(block, 64, zeros, None)  # falls back to now + reported latency
    assert np.flatnonzero(block[:, 0])[0] == 10


def test_probe_reports_missing_portaudio_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")

    def no_portaudio() -> Any:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(audio, "_import_sounddevice", no_portaudio)
    reason = audio.probe_sounddevice()
    assert reason == audio.PORTAUDIO_HINT
    assert "apt-get install libportaudio2" in reason


def test_probe_reports_sounddevice_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")

    def not_installed() -> Any:
        raise ImportError("No module named 'sounddevice'", name="sounddevice")

    monkeypatch.setattr(audio, "_import_sounddevice", not_installed)
    # From a clone the hint is one that works there (issue #13), not `pip install 'oscsync[audio]'`.
    reason = audio.probe_sounddevice()
    assert reason == f"sounddevice is not installed ({install_hint('audio')})"
    assert "-e '" in reason  # tests run from a clone


def test_probe_reports_no_output_device(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numpy")

    def query_devices(kind: str) -> Any:
        raise RuntimeError("Error querying device -1")

    monkeypatch.setattr(
        audio, "_import_sounddevice", lambda: SimpleNamespace(query_devices=query_devices)
    )
    assert audio.probe_sounddevice() == "no audio output device (Error querying device -1)"


def test_auto_falls_back_to_none_with_one_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio, "probe_sounddevice", lambda: audio.PORTAUDIO_HINT)
    notices: list[str] = []
    player = audio.open_player(
        AudioChoice("auto"), FakeClock(), {TICK: TICK_WAV}, notice=notices.append
    )
    assert isinstance(player, NonePlayer)
    assert notices == [f"audio: {audio.PORTAUDIO_HINT}; playing no sound (--audio none)"]


def test_explicit_sounddevice_without_portaudio_is_an_audio_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audio, "probe_sounddevice", lambda: audio.PORTAUDIO_HINT)
    with pytest.raises(AudioError, match="libportaudio2"):
        audio.open_player(AudioChoice("sounddevice"), FakeClock(), {TICK: TICK_WAV}, notice=print)


@pytest.mark.parametrize(
    ("text", "choice"),
    [
        ("auto", AudioChoice("auto")),
        ("None", AudioChoice("none")),
        ("wav:out.wav", AudioChoice("wav", Path("out.wav"))),
        ("sounddevice", AudioChoice("sounddevice")),
    ],
)
def test_parse_audio_choice(text: str, choice: AudioChoice) -> None:
    assert audio.parse_audio_choice(text) == choice


@pytest.mark.parametrize("text", ["wav:", "speakers", ""])
def test_parse_audio_choice_rejects(text: str) -> None:
    with pytest.raises(AudioError):
        audio.parse_audio_choice(text)


# -- playsound, with the real call replaced ---------------------------------------------------


def test_playsound_plays_the_file_at_its_time_on_a_thread() -> None:
    clock = FakeClock(start=START)
    played: list[tuple[str, bool, float]] = []
    finished = threading.Event()

    def play(path: str, block: bool) -> None:
        played.append((path, block, clock.now()))
        finished.set()

    player = PlaysoundPlayer(clock, play=play)
    player.load(TICK_WAV)
    player.start()
    player.play_at(START + 0.25)
    assert finished.wait(WAIT)
    # The thread waited (on the fake clock) until the tick's time, then played, blocking.
    assert played == [(str(TICK_WAV.resolve()), True, START + 0.25)]
    assert "latency" in player.describe()


def test_playsound_failure_is_warned_once_not_raised() -> None:
    warnings: list[str] = []
    calls = threading.Semaphore(0)

    def broken(path: str, block: bool) -> None:
        calls.release()
        raise RuntimeError("no GStreamer")

    player = PlaysoundPlayer(FakeClock(), play=broken, on_warning=warnings.append, max_threads=1)
    player.load(TICK_WAV)
    player.start()
    for _ in range(2):
        player.play_at(0.0)
        assert calls.acquire(timeout=WAIT)
        player.wait_idle(WAIT)
    assert warnings == ["playsound failed: no GStreamer"]
    assert player.stats.played == 0
