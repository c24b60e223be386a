"""The audio options from the command line: ``oscsync audio devices``, ``--device``,
``--latency-compensation``, and a WAV that cannot be written (issue #20 item 11)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import wave
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import LineReader, free_udp_port, oscsync_command
from oscsync import audio
from oscsync.cli.main import cli

Spawn = Callable[..., subprocess.Popen[str]]


@pytest.mark.parametrize("value", ["fast", "-3", "nan", "2000", ""])
def test_latency_compensation_refuses_what_is_not_off_auto_or_ms(
    cli_runner: CliRunner, value: str
) -> None:
    result = cli_runner.invoke(
        cli,
        ["metronome", "listen", "--audio", "none", "--latency-compensation", value],
    )
    assert result.exit_code == 2
    assert "Invalid value for '--latency-compensation'" in result.output
    assert "Traceback" not in result.output


def test_audio_devices_without_portaudio_is_one_line_exit_1(
    cli_runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing() -> None:
        raise audio.AudioError(audio.PORTAUDIO_HINT)

    monkeypatch.setattr("oscsync.audio.devices.load_sounddevice", missing)
    result = cli_runner.invoke(cli, ["audio", "devices"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"Error: {audio.PORTAUDIO_HINT}"]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_wav_that_cannot_be_written_is_an_error_the_user_sees_at_once() -> None:
    # Before any tick: the header is written and flushed when the listener starts.
    result = subprocess.run(
        oscsync_command(
            "metronome", "listen", "--listen", "127.0.0.1:0", "--audio", "wav:/dev/full",
            "--duration", "30",
        ),
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: cannot write /dev/full: No space left on device"
    ]


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_wav_that_fills_up_mid_run_stops_the_listener_with_one_line(
    tmp_path: Path, spawn: Spawn
) -> None:
    # A file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored so write() fails with EFBIG) plays a
    # disk that fills up after ~1 s of audio.
    import resource

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    port = free_udp_port()
    out = tmp_path / "out.wav"
    listener = subprocess.Popen(
        oscsync_command(
            "metronome", "listen", "--listen", f"127.0.0.1:{port}", "--audio", f"wav:{out}",
            "--duration", "60",
        ),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        preexec_fn=limit_file_size, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert listener.stderr is not None
        errors = LineReader(listener.stderr)
        errors.wait_for(lambda line: line.startswith("listening on"))
        spawn("metronome", "send", "--peer", f"127.0.0.1:{port}", "--bpm", "600", "--count", "200")
        listener.wait(40)
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    stderr = errors.rest()
    assert listener.returncode == 1, stderr
    assert stderr[-1] == f"Error: audio: cannot write {out}: File too large"
    with wave.open(str(out)) as wav:  # what was written before is a valid WAV
        assert wav.getnframes() > 0


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs POSIX file size limits")
def test_a_wav_that_fills_up_mid_run_stops_pair_too(tmp_path: Path) -> None:
    import resource

    def limit_file_size() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    port = free_udp_port()
    out = tmp_path / "out.wav"
    result = subprocess.run(
        oscsync_command(
            "metronome", "pair", "--peer", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{port}",
            "--audio", f"wav:{out}", "--bpm", "600", "--offset", "0.05",
        ),
        capture_output=True, text=True, timeout=40, preexec_fn=limit_file_size,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: audio: cannot write {out}: File too large"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGHUP is POSIX")
def test_sighup_leaves_a_valid_wav_not_a_0_byte_one(tmp_path: Path, spawn: Spawn) -> None:
    port = free_udp_port()
    out = tmp_path / "out.wav"
    listener = spawn(
        "metronome", "listen", "--listen", f"127.0.0.1:{port}", "--audio", f"wav:{out}",
        "--count", "1000",
    )  # fmt: skip
    assert listener.stderr is not None and listener.stdout is not None
    LineReader(listener.stderr).wait_for(lambda line: line.startswith("listening on"))
    sender = spawn(
        "metronome", "send", "--peer", f"127.0.0.1:{port}", "--bpm", "600", "--offset", "0.05"
    )
    # 4 s of ticks at 600 bpm (the renderer writes every second), then close the "terminal".
    LineReader(listener.stdout).wait_for(lambda line: line.startswith("tick 39 "), timeout=30)
    listener.send_signal(signal.SIGHUP)
    listener.wait(15)
    sender.terminate()
    found = audio.find_onsets(audio.read_wav(out).samples)
    assert len(found) >= 10  # at least the ticks of the first seconds, never a 0-byte file
    gaps = {round((b - a) / 48) for a, b in itertools.pairwise(found)}  # in ms
    assert gaps <= {99, 100, 101}
