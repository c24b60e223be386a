"""Players and WAV helpers: exact frames in the WAV render, sample placement on a fake stream."""

from __future__ import annotations

import io
import itertools
import os
import re
import threading
import wave
from array import array
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import missing, require_module
from oscsync import audio
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
    sounds,
)
from oscsync.audio import playsound as playsound_module
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


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_wav_writer_streams_to_a_named_pipe(tmp_path: Path) -> None:
    """``--audio wav:PIPE`` with a reader: ``wave`` seeks back to patch the header after every
    write, which a pipe cannot do (the first write failed, "Illegal seek")."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # the reader is there first
    try:
        with audio.WavWriter(path, RATE) as writer:
            writer.write(array("h", [0, 32767, -32768, 5]))
            writer.write_silence(2)
        data = os.read(reader, 1 << 16)
    finally:
        os.close(reader)
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, RATE)
        assert array("h", wav.readframes(100)) == array("h", [0, 32767, -32768, 5, 0, 0])
    assert writer.frames == 6


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
    np = require_module("numpy")
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
    np = require_module("numpy")
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
    np = require_module("numpy")
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player, _ = fake_player(clock, latency=0.02)
    player.play_at(clock.now() + 0.02 + 10 / RATE)
    block = np.zeros((64, 1), dtype=np.float32)
    zeros = SimpleNamespace(currentTime=0.0, outputBufferDacTime=0.0)
    player.callback(block, 64, zeros, None)  # falls back to now + reported latency
    assert np.flatnonzero(block[:, 0])[0] == 10


def test_probe_reports_missing_portaudio_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("numpy")

    def no_portaudio() -> Any:
        raise OSError("PortAudio library not found")

    monkeypatch.setattr(audio.portaudio, "import_sounddevice", no_portaudio)
    reason = audio.probe_sounddevice()
    assert reason == audio.PORTAUDIO_HINT
    assert "apt-get install libportaudio2" in reason


def test_probe_reports_sounddevice_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("numpy")

    def not_installed() -> Any:
        raise ImportError("No module named 'sounddevice'", name="sounddevice")

    monkeypatch.setattr(audio.portaudio, "import_sounddevice", not_installed)
    # From a clone the hint is one that works there (issue #13), not `pip install 'oscsync[audio]'`.
    reason = audio.probe_sounddevice()
    assert reason == f"sounddevice is not installed ({install_hint('audio')})"
    assert "-e '" in reason  # tests run from a clone


def test_probe_reports_no_output_device(monkeypatch: pytest.MonkeyPatch) -> None:
    require_module("numpy")

    def query_devices(kind: str) -> Any:
        raise RuntimeError("Error querying device -1")

    monkeypatch.setattr(
        audio.portaudio, "import_sounddevice", lambda: SimpleNamespace(query_devices=query_devices)
    )
    assert audio.probe_sounddevice() == "no audio output device (Error querying device -1)"


def test_a_stream_opened_whose_device_cannot_be_named_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_module("numpy")
    opened: list[SimpleNamespace] = []

    def output_stream(**options: Any) -> SimpleNamespace:
        stream = SimpleNamespace(device=3, closed=False)
        stream.close = lambda: setattr(stream, "closed", True)
        opened.append(stream)
        return stream

    def query_devices(device: int) -> Any:
        raise RuntimeError("Error querying device 3")

    fake = SimpleNamespace(OutputStream=output_stream, query_devices=query_devices)
    monkeypatch.setattr(audio.portaudio, "import_sounddevice", lambda: fake)
    with pytest.raises(AudioError, match="cannot open the audio output: Error querying device 3"):
        audio.portaudio.SoundDeviceOutput()(48000, lambda *args: None)
    assert [stream.closed for stream in opened] == [True]


def test_auto_falls_back_to_none_with_one_notice(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio.portaudio, "probe_sounddevice", lambda: audio.PORTAUDIO_HINT)
    notices: list[str] = []
    player = audio.open_player(
        AudioChoice("auto"), FakeClock(), {TICK: TICK_WAV}, notice=notices.append
    )
    assert isinstance(player, NonePlayer)
    assert notices == [f"audio: {audio.PORTAUDIO_HINT}; playing no sound (--audio none)"]


def test_explicit_sounddevice_without_portaudio_is_an_audio_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(audio.portaudio, "probe_sounddevice", lambda: audio.PORTAUDIO_HINT)
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


def _gst_without(*absent: str) -> SimpleNamespace:
    """A stand-in for GStreamer's Gst module whose registry lacks the elements ``absent``."""
    return SimpleNamespace(
        init=lambda argv: None,
        ElementFactory=SimpleNamespace(find=lambda name: None if name in absent else name),
    )


def _raise(exc: BaseException) -> Any:
    raise exc


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (
            lambda: _raise(ModuleNotFoundError("No module named 'gi'")),
            "playsound needs GStreamer's Python bindings (PyGObject), which this Python cannot "
            "import: ",
        ),
        (
            lambda: _raise(ValueError("Namespace Gst not available")),
            "playsound needs GStreamer: sudo apt-get install gir1.2-gstreamer-1.0 "
            "gstreamer1.0-plugins-base gstreamer1.0-plugins-good",
        ),
        (
            lambda: _gst_without("playbin"),
            "GStreamer has no playbin to play a WAV file with: sudo apt-get install "
            "gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base",
        ),
        (lambda: _gst_without("wavparse"), "GStreamer has no wavparse to play a WAV file with"),
    ],
    ids=["no-pygobject", "no-gst-typelib", "no-playbin", "no-wavparse"],
)
def test_the_playsound_probe_says_what_gstreamer_lacks(load: Any, expected: str) -> None:
    """Issue 30 item 2: said before playing, not as "'NoneType' object has no attribute 'props'"."""
    reason = playsound_module.gstreamer_problem(load)
    assert reason is not None
    assert reason.startswith(expected)
    assert "\n" not in reason


def test_the_playsound_probe_passes_with_everything_there() -> None:
    assert playsound_module.gstreamer_problem(lambda: _gst_without()) is None


def test_playsound_without_playbin_fails_with_what_to_install() -> None:
    """playsound 1.2.2's own error when GStreamer has no playbin, turned into what to do."""
    warnings: list[str] = []

    def without_playbin(path: str, block: bool) -> None:
        raise AttributeError("'NoneType' object has no attribute 'props'")

    player = PlaysoundPlayer(FakeClock(), play=without_playbin, on_warning=warnings.append)
    player.load(TICK_WAV)
    player.start()
    player.play_at(0.0)
    assert player.wait_idle(WAIT)
    assert warnings == [
        "playsound failed: GStreamer could not make a player (playbin): sudo apt-get install "
        "gir1.2-gstreamer-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
    ]


_PLAY_ONE_TICK = """
import json, sys
from oscsync.audio import playsound as module
from oscsync.audio.playsound import PlaysoundPlayer
from oscsync.clock import FakeClock

reason = module.probe_playsound()
if reason is not None:
    print(json.dumps({"skip": reason}))
    sys.exit(0)
warnings = []
player = PlaysoundPlayer(FakeClock(), on_warning=warnings.append)
player.load(sys.argv[1])
player.start()
player.play_at(0.0)
idle = player.wait_idle(30)
print(json.dumps({"idle": idle, "played": player.stats.played, "warnings": warnings}))
"""


def test_playsound_plays_a_tick_for_real() -> None:
    """The real playsound through GStreamer (`make playsound`; headless it plays into a fake
    sink): what `--audio playsound` does on a participant's Linux machine. In a process of its
    own: GStreamer's threads and PyGObject stay out of the suite's process (a later import of
    matplotlib segfaulted in it once they were there)."""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _PLAY_ONE_TICK, str(TICK_WAV)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    if "skip" in result:
        missing(result["skip"])
    assert result == {"idle": True, "played": 1, "warnings": []}


# -- the delay-locked loop (issue #14) --------------------------------------------------------


def noisy_block_times(
    blocks: int, frames: int, *, ppm: float, jitter_s: float, seed: int = 14
) -> tuple[list[int], list[float], list[float]]:
    """Block start frames, their true times (a clock ``ppm`` off nominal) and jittered readings."""
    import random

    rng = random.Random(seed)
    period = (1 + ppm * 1e-6) / RATE
    starts = [k * frames for k in range(blocks)]
    truth = [1000.0 + n * period for n in starts]
    measured = [t + rng.uniform(0, jitter_s) for t in truth]
    return starts, truth, measured


def test_dll_filters_callback_jitter_out_of_the_frame_clock() -> None:
    # 300 µs of callback jitter (14 frames) on a sound card 50 ppm fast; after 4 s locked, the
    # filtered frame times are within 1 frame of a straight line through the true ones.
    starts, truth, measured = noisy_block_times(3000, 256, ppm=50, jitter_s=300e-6)
    loop = audio.DelayLockedLoop(RATE)
    filtered = [loop.update(n, m) for n, m in zip(starts, measured)]
    settled = [(f - t) for f, t in zip(filtered, truth)][750:]  # 750 blocks = 4 s
    mean = sum(settled) / len(settled)
    assert max(abs(e - mean) for e in settled) < 1 / RATE
    assert loop.seconds_per_frame == pytest.approx((1 + 50e-6) / RATE, rel=5e-6)
    assert loop.locks == 1
    # The raw readings are not: they scatter by many frames.
    raw = [m - t for m, t in zip(measured, truth)]
    assert max(raw) - min(raw) > 10 / RATE


def test_dll_relocks_after_a_jump_and_after_reset() -> None:
    loop = audio.DelayLockedLoop(RATE)
    for k in range(100):
        loop.update(k * 256, 10.0 + k * 256 / RATE)
    # The stream restarted half a second later: one such reading could be a stalled callback,
    # four in a row are a restart.
    for k in range(100, 104):
        jumped = 10.0 + k * 256 / RATE + 0.5
        filtered = loop.update(k * 256, jumped)
    assert filtered == pytest.approx(jumped)
    assert loop.locks == 2
    loop.reset()
    assert not loop.locked
    assert loop.update(104 * 256, 99.0) == 99.0
    assert loop.locks == 3
    assert loop.frame_at(loop.time_of(104 * 256 + 480)) == pytest.approx(104 * 256 + 480)


def test_dll_is_not_pulled_by_one_stalled_callback() -> None:
    loop = audio.DelayLockedLoop(RATE)
    for k in range(2000):
        loop.update(k * 256, 10.0 + k * 256 / RATE)
    # One callback 4 ms late (a stall): the mapping moves by far less than a frame.
    loop.update(2000 * 256, 10.0 + 2000 * 256 / RATE + 0.004)
    assert loop.time_of(2001 * 256) - (10.0 + 2001 * 256 / RATE) < 0.25 / RATE  # unclamped: 0.9
    assert loop.locks == 1


class JitteryStream(FakeStream):
    """A host whose callbacks run late by a random 0-300 µs: the stream clock (and the fake
    clock) read that late time in the callback, as PortAudio's do."""

    def __init__(self, clock: FakeClock, latency: float, seed: int = 7) -> None:
        super().__init__(clock, latency, stream_offset=-990.0)
        import random

        self.rng = random.Random(seed)


def run_jittery_blocks(player: SoundDevicePlayer, stream: JitteryStream, blocks: int) -> Any:
    np = require_module("numpy")
    frames = 256
    out = []
    block_start = stream.clock.monotonic()
    for _ in range(blocks):
        late = stream.rng.uniform(0, 300e-6)
        stream.clock.advance(block_start + late - stream.clock.monotonic())
        block = np.zeros((frames, 1), dtype=np.float32)
        player.callback(block, frames, stream.time_info(), None)
        out.append(block[:, 0].copy())
        block_start += frames / RATE
    return np.concatenate(out)


@pytest.mark.parametrize(("placement", "exact"), [("dll", True), ("callback", False)])
def test_callback_jitter_does_not_move_onsets_with_the_dll(placement: str, exact: bool) -> None:
    np = require_module("numpy")
    clock = FakeClock(start=START, monotonic_start=1000.0)
    stream = JitteryStream(clock, latency=0.02)
    player = SoundDevicePlayer(
        clock, rate=RATE, open_stream=lambda rate, callback: stream, placement=placement
    )
    player.load(TICK_WAV)
    player.start()
    first = clock.now() + 2.0  # after the loop has locked (issue #14: lock before ticks come)
    for k in range(12):
        player.play_at(first + k * 0.25)
    out = run_jittery_blocks(player, stream, blocks=round(5.2 * RATE / 256))
    as_int = array("h", np.round(out * 32768).astype(np.int16).tobytes())
    gaps = [b - a - RATE // 4 for a, b in itertools.pairwise(audio.find_onsets(as_int))]
    assert len(gaps) == 11
    assert all(abs(gap) <= 1 for gap in gaps) is exact, gaps


def status_flags(**flags: bool) -> SimpleNamespace:
    names = ("output_underflow", "output_overflow", "input_underflow", "input_overflow")
    return SimpleNamespace(**{name: flags.get(name, False) for name in names})


def test_xruns_from_portaudio_status_flags_are_counted_and_keep_the_lock() -> None:
    np = require_module("numpy")
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player, stream = fake_player(clock)
    due = clock.now() + 0.5  # leaves the DAC 0.5 s from now: 20 ms (latency) before that in
    # the output written: frame 23,040
    player.play_at(due)
    out = []
    flags: dict[str, bool]
    for k in range(120):
        if k == 40:  # the host dropped one whole block (JACK skips a late client's cycle)
            clock.advance(256 / RATE)
            flags = {"output_underflow": True}
        elif k == 60:
            flags = {"input_overflow": True}  # flagged, but nothing skipped
        else:
            flags = {}
        block = np.zeros((256, 1), dtype=np.float32)
        player.callback(block, 256, stream.time_info(), status_flags(**flags))
        out.append(block[:, 0].copy())
        clock.advance(256 / RATE)
    assert player.stats.xruns == 2
    assert player.stats.relocks == 0  # the skip was a whole block: the lock is kept
    # Written 256 frames earlier in the callbacks' output: the dropped block was never heard.
    assert int(np.flatnonzero(np.concatenate(out))[0]) == 23_040 - 256
    assert player.summary() == {"xruns": 2}


def test_an_xrun_that_is_no_whole_block_relocks() -> None:
    np = require_module("numpy")
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player, stream = fake_player(clock)
    block = np.zeros((256, 1), dtype=np.float32)
    for k in range(10):
        if k == 5:
            clock.advance(0.0021)  # 2.1 ms: no whole number of 5.3 ms blocks
        player.callback(block, 256, stream.time_info(), status_flags(output_underflow=k == 5))
        clock.advance(256 / RATE)
    assert (player.stats.xruns, player.stats.relocks) == (1, 1)


def test_sounddevice_summary_shows_zero_xruns_and_late_ticks_with_their_lateness() -> None:
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player, stream = fake_player(clock, latency=0.01)
    assert audio.player_summary(player) == {"xruns": 0}
    player.play_at(clock.now() - 0.005)  # 15 ms too late for the first frame it can reach
    run_blocks(player, stream, blocks=1, frames=256)
    assert audio.player_summary(player) == {"xruns": 0, "audio late": "1 (max 15.0 ms)"}
    assert audio.player_summary(NonePlayer()) == {}


@pytest.mark.parametrize(
    ("compensation", "frame", "words"),
    [
        (None, 480, "latency compensation 20.00 ms (auto"),
        (0.0, 480 + 960, "latency compensation off"),
        (0.005, 480 + 720, "latency compensation 5.00 ms (given)"),
    ],
)
def test_latency_compensation_places_the_sound_to_leave_the_device_at_the_timetag(
    compensation: float | None, frame: int, words: str
) -> None:
    # The host reports 20 ms between computing a buffer and its first frame leaving the DAC.
    np = require_module("numpy")
    clock = FakeClock(start=START, monotonic_start=1000.0)
    stream = FakeStream(clock, 0.02, -990.0)
    player = SoundDevicePlayer(
        clock,
        rate=RATE,
        open_stream=lambda rate, callback: stream,
        latency_compensation=compensation,
    )
    player.load(TICK_WAV)
    player.start()
    # auto: a tick due 30 ms from now leaves the DAC 30 ms from now: frame 10 ms into the stream.
    player.play_at(clock.now() + 0.030)
    out = run_blocks(player, stream, blocks=8, frames=256)
    assert int(np.flatnonzero(out)[0]) == frame
    assert words in player.describe()


def test_sounddevice_playout_latency_is_its_compensation_plus_one_block() -> None:
    """What a listener puts in its pongs and what makes a tick "played late" (issue 29): a
    sound handed over while a block is computed waits for the next, then the output latency."""
    from oscsync.audio import playout_of

    clock = FakeClock(start=START, monotonic_start=1000.0)
    player, stream = fake_player(clock, latency=0.02)
    run_blocks(player, stream, blocks=2, frames=512)
    assert player.playout_latency() == pytest.approx(0.02 + 512 / RATE)
    assert playout_of(player) == pytest.approx(0.02 + 512 / RATE)
    assert playout_of(NonePlayer()) == 0.0  # plays when told: nothing to cover


# -- the backend registry (issue #12) ---------------------------------------------------------


def test_audio_choices_metavar_and_help_come_from_the_backend_table(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from oscsync.audio import registry

    assert registry.audio_metavar() == "auto|sounddevice|playsound|none|wav:FILE"
    # Adding a backend is one entry: it is then parsed, listed, helped and opened.
    made: list[AudioChoice] = []

    def make(choice: AudioChoice, clock: Any, options: Any) -> NonePlayer:
        made.append(choice)
        return NonePlayer()

    extra = registry.Backend("midi", "midi:PORT sends a note.", make, argument="PORT")
    monkeypatch.setitem(registry.BACKENDS, "midi", extra)
    assert registry.audio_metavar().endswith("|midi:PORT")
    assert registry.audio_help().endswith("midi:PORT sends a note.")
    choice = audio.parse_audio_choice("midi:synth")
    assert choice == AudioChoice("midi", Path("synth"))
    player = audio.open_player(choice, FakeClock(), {TICK: TICK_WAV}, notice=print)
    assert isinstance(player, NonePlayer) and made == [choice]


# -- choosing a device ------------------------------------------------------------------------


def fake_sounddevice() -> SimpleNamespace:
    devices = [
        {"name": "Built-in Mic", "hostapi": 0, "max_output_channels": 0},
        {"name": "Built-in Output", "hostapi": 0, "max_output_channels": 2,
         "default_samplerate": 48000.0, "default_low_output_latency": 0.01},
        {"name": "USB Audio Output", "hostapi": 1, "max_output_channels": 2,
         "default_samplerate": 44100.0, "default_low_output_latency": 0.005},
    ]  # fmt: skip
    return SimpleNamespace(
        query_devices=lambda: devices,
        query_hostapis=lambda: [{"name": "Core Audio"}, {"name": "JACK Audio Connection Kit"}],
        default=SimpleNamespace(device=(0, 1)),
    )


def test_output_devices_lists_only_devices_that_can_play() -> None:
    from oscsync.audio.devices import output_devices

    found = output_devices(fake_sounddevice())
    assert [(d.index, d.name, d.host_api, d.is_default) for d in found] == [
        (1, "Built-in Output", "Core Audio", True),
        (2, "USB Audio Output", "JACK Audio Connection Kit", False),
    ]
    assert found[0].line() == "*   1  Built-in Output  (Core Audio, 2 out, 48000 Hz, 10.0 ms)"


@pytest.mark.parametrize(
    ("text", "result"),
    [
        ("2", 2),
        ("usb", 2),
        ("built-in output", 1),
        ("0", "no audio output device has index 0 (oscsync audio devices lists them)"),
        ("hdmi", "no audio output device matches 'hdmi' (oscsync audio devices lists them)"),
        ("output", "'output' matches several output devices"),
    ],
)
def test_device_is_chosen_by_index_or_part_of_its_name(text: str, result: int | str) -> None:
    from oscsync.audio.devices import output_devices, resolve_device

    found = output_devices(fake_sounddevice())
    if isinstance(result, int):
        assert resolve_device(text, found) == result
    else:
        with pytest.raises(audio.DeviceNotFound, match=re.escape(result)):
            resolve_device(text, found)


# -- issue #20 item 11: a WAV is written as the run goes, and fails at once --------------------


def test_wav_rendering_of_a_long_run_happens_while_it_runs_not_at_exit(tmp_path: Path) -> None:
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player = WavRenderer(tmp_path / "out.wav", clock)
    player.load(TICK_WAV)
    player.start()
    for _ in range(600):  # ten minutes at 60 bpm, each tick asked for 100 ms ahead
        player.play_at(clock.now() + 0.1)
        clock.advance(1.0)
    # All but the last second or so is on disk, in a valid WAV, before close (written by the
    # renderer's thread: the thread that asks for ticks does not mix).
    assert player.wait_written(598 * RATE, WAIT)
    with wave.open(str(tmp_path / "out.wav")) as wav:
        assert wav.getnframes() == player.frames_written
    written_before_close = player.frames_written
    player.close()
    total = audio.read_wav(tmp_path / "out.wav").samples
    assert len(total) - written_before_close <= 2 * RATE  # close only wrote the tail
    found = audio.find_onsets(total)
    assert found == [round((k * 1.0 + 0.1) * RATE) for k in range(600)]


def test_sighup_leaves_a_valid_wav_of_the_run_so_far(tmp_path: Path) -> None:
    # The file is never rendered only at exit: whatever stops the process between writes
    # (SIGHUP, SIGKILL) leaves a valid WAV with the ticks up to ~1.5 s before the stop.
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player = WavRenderer(tmp_path / "out.wav", clock)
    player.load(TICK_WAV)
    player.start()
    for _ in range(10):
        player.play_at(clock.now() + 0.05)
        clock.advance(0.5)
    assert player.wait_written(4 * RATE, WAIT)
    # No close(): the process is gone. What is on disk reads back.
    found = audio.find_onsets(audio.read_wav(tmp_path / "out.wav").samples)
    assert found == [round((k * 0.5 + 0.05) * RATE) for k in range(len(found))]
    assert len(found) >= 6


def test_a_wav_that_cannot_be_written_mid_run_is_reported_at_once(tmp_path: Path) -> None:
    errors: list[str] = []
    clock = FakeClock(start=START, monotonic_start=1000.0)
    player = WavRenderer(tmp_path / "out.wav", clock, on_error=errors.append)
    player.load(TICK_WAV)
    player.start()

    class FullDisk:
        def write(self, samples: Any) -> None:
            raise AudioError(f"cannot write {tmp_path / 'out.wav'}: No space left on device")

        write_silence = write

        def close(self) -> None:
            pass

    player._out = FullDisk()  # type: ignore[assignment]
    for _ in range(4):
        player.play_at(clock.now())
        clock.advance(1.0)
    assert not player.wait_written(10 * RATE, WAIT)  # returns when the write failed
    assert errors == [f"cannot write {tmp_path / 'out.wav'}: No space left on device"]
    player.play_at(clock.now())
    assert player.stats.dropped == 1  # later ticks are dropped, not queued forever
    with pytest.raises(AudioError, match="No space left"):
        player.close()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_wav_that_cannot_be_written_is_an_error_at_start() -> None:
    with pytest.raises(AudioError, match="cannot write /dev/full: No space left on device"):
        WavRenderer("/dev/full", FakeClock()).start()
