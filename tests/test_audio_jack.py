"""The sounddevice player through a real audio server: JACK's dummy driver (issue #14).

``metronome listen --audio sounddevice`` plays into a private ``jackd -d dummy``; a JACK client
records what reaches ``system:playback_1`` with JACK's frame times; an onset detector that knows
nothing of the player finds the ticks. Needs jackd (Debian jackd2), libportaudio2, sounddevice and
JACK-Client: missing ones skip locally and fail under CI=true.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_udp_port, oscsync_command, private_jack
from jackharness import JackServer, Recorder
from oscsync import audio
from waiting import wait_until

pytestmark = pytest.mark.peer

RATE = 48_000
BPM = 240
GAP = RATE * 60 // BPM  # 12,000 frames between ticks
LOCK_S = 1.5
"""The listener opens its stream at start; ticks come after its clock has locked (as they would
from a sender started by a person)."""


@pytest.fixture
def jack(monkeypatch: pytest.MonkeyPatch) -> Iterator[JackServer]:
    """A private ``jackd -d dummy`` (48 kHz, 256-frame periods), always stopped afterwards."""
    with private_jack(monkeypatch, RATE, modules=("sounddevice", "jack")) as server:
        yield server


def listen_and_record(
    jack: JackServer, tmp_path: Path, ticks: int, *options: str
) -> tuple[Recorder, list[dict[str, object]], str]:
    """Run listen (sounddevice) and send (timetagged 100 ms ahead) and record the sound."""
    port = free_udp_port()
    log = tmp_path / "ticks.jsonl"
    recorder = Recorder(jack, seconds=ticks * 60 / BPM + LOCK_S + 4)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    listener = subprocess.Popen(
        oscsync_command(
            "metronome", "listen", "--listen", f"127.0.0.1:{port}", "--audio", "sounddevice",
            "--count", str(ticks), "--log", str(log), *options,
        ),
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    sender = None
    try:
        recorder.connect_player()
        # Not a timing assert: the listener's clock locks on its stream's frames meanwhile, so
        # wait for that many frames to pass through JACK (later on a loaded machine, never less).
        connected_at = recorder.position
        wait_until(
            lambda: recorder.position - connected_at >= LOCK_S * RATE,
            LOCK_S + 30,
            f"{LOCK_S} s of the listener's stream through JACK",
            state=lambda: recorder.position - connected_at,
        )
        sender = subprocess.Popen(
            oscsync_command(
                "metronome", "send", "--peer", f"127.0.0.1:{port}", "--bpm", str(BPM),
                "--offset", "0.1", "--count", str(ticks),
            ),
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _, stderr = listener.communicate(timeout=ticks * 60 / BPM + 30)
        sender.wait(10)
    finally:
        for proc in (listener, sender):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        recorder.close()
    assert listener.returncode == 0, stderr
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    return recorder, lines, stderr


def xruns_in(stderr: str) -> int:
    summary = next(line for line in stderr.splitlines() if line.startswith("metronome: ticks"))
    words = summary.split()
    return int(words[words.index("xruns") + 1])


def test_sounddevice_through_jack_places_every_gap_within_one_frame(
    jack: JackServer, tmp_path: Path
) -> None:
    ticks = 24
    recorder, log, stderr = listen_and_record(jack, tmp_path, ticks)
    assert "latency compensation 10.67 ms (auto" in stderr  # the server's 512-frame latency
    onsets = audio.find_onsets(recorder.samples_int16())
    assert len(onsets) == ticks, onsets
    errors = [b - a - GAP for a, b in itertools.pairwise(onsets)]
    # An xrun loses a period of output: the gaps around it may be off by that much, and the
    # gap after the player re-locks by a few frames (seen under load: -682, +3, -2 around one
    # xrun); without an xrun, no gap may be off.
    xruns = xruns_in(stderr)
    off = [error for error in errors if abs(error) > 1]
    assert len(off) <= 3 * xruns, (errors, xruns)
    # Each sound left the (dummy) device at its timetag: the driver's frame clock at the onset
    # plus the server's playback latency, against the onset the listener logged. The figure is
    # benchmarks/audio.py's; the test only tells compensated (±2 ms) from not (+10.7 ms).
    # Frames are mapped to time stretch by stretch of the driver's own clock (Recorder.
    # frame_clock), not through JACK's DLL: under load the dummy driver stalls and restarts its
    # cycle timer, JACK's mapping slews across the step for a second, and it once put these
    # ticks at -30.1, -22.0, -15.2, -9.5 ... ms (median 3.5 ms) while every gap was right.
    wall_minus_mono = time.time() - time.monotonic()
    lateness = sorted(
        recorder.leaves_device_mono(frame) + wall_minus_mono - float(tick["onset"])  # type: ignore[arg-type]
        for frame, tick in zip(onsets, log)
    )
    steps = [f"{seconds * 1e3:+.1f} ms" for _, seconds in recorder.frame_clock().steps]
    assert abs(lateness[len(lateness) // 2]) < 0.002, (
        f"median lateness {lateness[len(lateness) // 2] * 1e3:+.3f} ms; the driver's frame "
        f"clock stepped {steps or 'never'} (mapped across); xruns {xruns}",
        lateness,
    )


def test_latency_compensation_off_plays_one_output_latency_after_the_timetag(
    jack: JackServer, tmp_path: Path
) -> None:
    recorder, log, stderr = listen_and_record(jack, tmp_path, 6, "--latency-compensation", "off")
    assert "latency compensation off" in stderr
    onsets = audio.find_onsets(recorder.samples_int16())
    wall_minus_mono = time.time() - time.monotonic()
    lateness = sorted(
        recorder.leaves_device_mono(frame) + wall_minus_mono - float(tick["onset"])  # type: ignore[arg-type]
        for frame, tick in zip(onsets, log)
    )
    assert lateness[len(lateness) // 2] == pytest.approx(512 / RATE, abs=0.002), lateness


def test_audio_devices_lists_the_jack_server_and_device_chooses_it(jack: JackServer) -> None:
    listed = subprocess.run(
        oscsync_command("audio", "devices"), capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "JACK" in line)
    index = line.lstrip("* ").split()[0]
    assert line.startswith("*") and "system" in line
    played = subprocess.run(
        oscsync_command(
            "metronome", "listen", "--listen", "127.0.0.1:0", "--audio", "sounddevice",
            "--device", index, "--duration", "0.2",
        ),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert played.returncode == 0, played.stderr
    assert "audio: sounddevice on system (JACK Audio Connection Kit)" in played.stderr
    assert "xruns" in played.stderr


def test_a_missing_device_is_one_line_and_exit_2(jack: JackServer) -> None:
    result = subprocess.run(
        oscsync_command(
            "metronome", "listen", "--listen", "127.0.0.1:0", "--audio", "sounddevice",
            "--device", "no-such-card", "--duration", "0.1",
        ),
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Invalid value for '--device': no audio output device matches 'no-such-card' "
        "(oscsync audio devices lists them)"
    )
    assert "Traceback" not in result.stderr


if sys.platform != "linux":  # pragma: no cover - jackd's dummy driver is set up for Linux here
    pytestmark = [pytest.mark.peer, pytest.mark.skip(reason="JACK harness is Linux-only")]
