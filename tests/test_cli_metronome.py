"""``oscsync metronome`` end to end: real loopback sockets, the WAV render, the log, bad options."""

from __future__ import annotations

import itertools
import json
import os
import queue
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import LineReader, free_udp_port, oscsync_command
from oscsync import audio
from oscsync.cli.main import cli
from oscsync.hostport import HostPort
from oscsync.transport import Endpoint, Received

WAIT = 5.0  # generous bound for loopback delivery; never a timing assertion
RATE = 48_000

Spawn = Callable[..., "subprocess.Popen[str]"]


def read_log(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_send_with_offset_to_listen_renders_each_tick_at_its_timetag(
    spawn: Spawn, tmp_path: Path
) -> None:
    wav, log = tmp_path / "out.wav", tmp_path / "ticks.jsonl"
    listener = spawn(
        "metronome", "listen", "--listen", "127.0.0.1:0", "--count", "8",
        "--audio", f"wav:{wav}", "--log", str(log), "--duration", "30",
    )  # fmt: skip
    assert listener.stderr is not None
    errors = LineReader(listener.stderr)
    where = errors.wait_for(lambda line: line.startswith("listening on")).split()[-1]
    frame0_line = next(line for line in errors.lines if "frame 0 =" in line)
    frame0 = float(frame0_line.split("frame 0 = ")[1].split()[0])

    sender = subprocess.run(
        oscsync_command("metronome", "send", "--peer", where, "--count", "8", "--offset", "0.1"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert sender.returncode == 0, sender.stderr
    assert "sent 8 ticks" in sender.stderr
    assert listener.wait(30) == 0, errors.rest()

    ticks = read_log(log)
    assert len(ticks) == 8
    assert [t["beat"] for t in ticks] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert [t["accent"] for t in ticks] == [True, False, False, False] * 2
    for t in ticks:
        assert isinstance(t["onset"], float) and isinstance(t["timetag"], float)
        assert t["onset"] >= t["timetag"]
        assert t["timetag"] > t["arrival"]  # sent 100 ms ahead: arrived before its time
    timetags = [t["timetag"] for t in ticks]
    assert all(b - a == pytest.approx(0.5, abs=1e-6) for a, b in itertools.pairwise(timetags))

    found = audio.find_onsets(audio.read_wav(wav).samples)
    assert len(found) == 8
    assert all(abs((b - a) - RATE // 2) <= 1 for a, b in itertools.pairwise(found))
    # Each sound starts at the frame of its onset (frame 0 = the time the listener printed).
    for frame, t in zip(found, ticks):
        assert abs(frame - (t["onset"] - frame0) * RATE) <= 1  # type: ignore[operator]


def test_send_reaches_every_peer_with_plain_ticks(cli_runner: CliRunner) -> None:
    inboxes: list[queue.Queue[Received]] = [queue.Queue(), queue.Queue()]
    endpoints = [Endpoint(HostPort("127.0.0.1", 0)) for _ in inboxes]
    try:
        for endpoint, inbox in zip(endpoints, inboxes):
            endpoint.start(inbox.put)
        peers = [arg for e in endpoints for arg in ("--peer", str(e.local_address))]
        result = cli_runner.invoke(cli, ["metronome", "send", *peers, "--bpm", "600", "-c", "3"])
        assert result.exit_code == 0, result.output
        for inbox in inboxes:
            got = [inbox.get(timeout=WAIT) for _ in range(3)]
            assert [(r.address, r.message.types, r.args, r.timetag) for r in got] == [
                ("/tick", "i", (beat,), None) for beat in (0, 1, 2)
            ]
    finally:
        for endpoint in endpoints:
            endpoint.close()


def test_pair_hears_itself(cli_runner: CliRunner, tmp_path: Path) -> None:
    port = free_udp_port()
    log = tmp_path / "pair.jsonl"
    result = cli_runner.invoke(
        cli,
        [
            "metronome", "pair", "--peer", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{port}",
            "--bpm", "600", "--count", "4", "--offset", "0.05", "--audio", "none",
            "--log", str(log),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ticks = read_log(log)
    assert [t["beat"] for t in ticks] == [0, 1, 2, 3]
    assert all(t["onset"] >= t["timetag"] for t in ticks)  # type: ignore[operator]
    assert "ticks 4" in result.stderr


def test_auto_without_a_sound_card_says_so_in_one_line(
    cli_runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio.portaudio, "probe_sounddevice", lambda: audio.PORTAUDIO_HINT)
    result = cli_runner.invoke(
        cli, ["metronome", "listen", "--listen", "127.0.0.1:0", "--duration", "0"]
    )
    assert result.exit_code == 0, result.output
    notices = [line for line in result.stderr.splitlines() if line.startswith("audio:")]
    assert notices == [
        "audio: PortAudio library not found (on Debian/Ubuntu: sudo apt-get install "
        "libportaudio2); playing no sound (--audio none)"
    ]


def test_auto_on_this_machine_never_shows_a_traceback(spawn: Spawn) -> None:
    # Whatever this machine has (no PortAudio, no device, or a real sound card), auto copes.
    proc = spawn("metronome", "listen", "--listen", "127.0.0.1:0", "--duration", "0.1")
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "playing no sound" in stderr or "audio: sounddevice" in stderr


def test_explicit_sounddevice_without_portaudio_exits_1_with_one_line(
    cli_runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audio.portaudio, "probe_sounddevice", lambda: audio.PORTAUDIO_HINT)
    result = cli_runner.invoke(
        cli, ["metronome", "listen", "--listen", "127.0.0.1:0", "--audio", "sounddevice"]
    )
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == f"Error: {audio.PORTAUDIO_HINT}"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["send"], "Missing option '--peer'"),
        (["send", "--peer", "9001"], "a host is needed"),
        (["send", "--peer", "127.0.0.1:9001", "--bpm", "0"], "--bpm"),
        (["send", "--peer", "127.0.0.1:9001", "--bpm", "fast"], "--bpm"),
        (["send", "--peer", "127.0.0.1:9001", "--offset", "-0.1"], "below the minimum"),
        (["send", "--peer", "127.0.0.1:9001", "--offset", "2min"], "above the maximum"),
        (["send", "--peer", "127.0.0.1:9001", "--beats-per-bar", "0"], "--beats-per-bar"),
        (["send", "--peer", "127.0.0.1:9001", "--count", "0"], "--count"),
        (["send", "--peer", "127.0.0.1:9001", "-c", "2", "-d", "1"], "not both"),
        (["listen", "--audio", "speakers"], "not one of auto, sounddevice"),
        (["listen", "--audio", "wav:"], "wav: needs a file name"),
        (["listen", "--sound", "no-such.wav"], "no such file"),
        (["listen", "--accent-sound", "pyproject.toml"], "not a PCM WAV"),
        (["listen", "--log", "/no/such/dir/x.jsonl", "--listen", "0"], "cannot write"),
        (["listen", "--listen", "70000"], "out of range"),
        (["pair", "--listen", "0"], "Missing option '--peer'"),
    ],
)
def test_bad_options_exit_2_with_one_error_line(
    cli_runner: CliRunner, args: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    result = cli_runner.invoke(cli, ["metronome", *args])
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["metronome", "send", "--help"],
        ["metronome", "listen", "--listen", "127.0.0.1:0", "--audio", "none", "--duration", "0"],
        ["metronome", "listen", "--listen", "127.0.0.1:0", "--audio", "wav:{tmp}/x.wav",
         "--duration", "0"],
    ],
)  # fmt: skip
def test_numpy_and_sounddevice_are_not_imported_unless_sounddevice_plays(
    args: list[str], tmp_path: Path
) -> None:
    argv = ["oscsync", *(arg.replace("{tmp}", str(tmp_path)) for arg in args)]
    code = (
        f"import sys, runpy; sys.argv={argv!r}\n"
        "try:\n    runpy.run_module('oscsync', run_name='__main__')\n"
        "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print('HEAVY', [m for m in ('numpy', 'sounddevice') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "HEAVY []" in out.stdout


def test_missing_portaudio_is_a_notice_not_a_traceback(spawn: Spawn, tmp_path: Path) -> None:
    # A stand-in sounddevice that fails to import exactly as the real one does without
    # libportaudio2 (OSError from its ctypes loader), found first on the path.
    fake = tmp_path / "fake-sounddevice"
    fake.mkdir()
    (fake / "sounddevice.py").write_text('raise OSError("PortAudio library not found")\n')
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), *sys.path])}
    for choice, code in (("auto", 0), ("sounddevice", 1)):
        proc = subprocess.run(
            oscsync_command(
                "metronome", "listen", "--listen", "127.0.0.1:0", "--audio", choice,
                "--duration", "0",
            ),
            capture_output=True, text=True, timeout=60, env=env,
        )  # fmt: skip
        assert proc.returncode == code, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "sudo apt-get install libportaudio2" in proc.stderr
        if choice == "auto":
            assert "playing no sound (--audio none)" in proc.stderr


def test_pair_with_offset_auto_measures_then_ticks_arrive_ahead(
    cli_runner: CliRunner, tmp_path: Path
) -> None:
    port = free_udp_port()
    log = tmp_path / "auto.jsonl"
    result = cli_runner.invoke(
        cli,
        [
            "metronome", "pair", "--peer", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{port}",
            "--bpm", "1200", "--count", "3", "--offset", "auto", "--audio", "none",
            "--log", str(log),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "offset auto:" in result.stderr
    ticks = read_log(log)
    assert len(ticks) == 3
    # Bundles (the measured offset is > 0), each played no earlier than its timetag.
    assert all(t["timetag"] is not None for t in ticks)
    assert all(t["onset"] >= t["timetag"] for t in ticks)  # type: ignore[operator]
