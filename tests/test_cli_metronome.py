"""``oscsync metronome`` end to end: real loopback sockets, the WAV render, the log, bad options."""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import LineReader, free_udp_port, oscsync_command
from oscsync import audio
from oscsync.apps.endpoints import open_endpoint
from oscsync.cli.main import cli
from oscsync.net.hostport import HostPort
from oscsync.osc.routing import Received

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
    endpoints = [open_endpoint(HostPort("127.0.0.1", 0)) for _ in inboxes]
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


def test_ntp_era_1_metronome_send_keeps_ticking_across_the_rollover_and_exits() -> None:
    from oscsync.cli.metronome import send
    from oscsync.cli.runtime import AppContext
    from oscsync.clock import SkewedClock, SystemClock
    from oscsync.osc import codec
    from oscsync.osc import timetag as tt

    system = SystemClock()
    # Real threads and sockets, with a wall clock 0.3 s before 2036-02-07 06:28:16 UTC.
    clock = SkewedClock(system, skew=float(tt.UNIX_MAX) - 0.3 - system.now())
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(10)
        port = receiver.getsockname()[1]
        args = ["--peer", f"127.0.0.1:{port}", "--bpm", "600", "--count", "6", "--offset", "0.05"]
        result = CliRunner().invoke(send, args, obj=AppContext(clock))
        assert result.exit_code == 0, result.output
        assert "sent 6 ticks" in result.output
        stamps = [codec.decode(receiver.recv(65536))[0].timetag for _ in range(6)]
    times = [tt.to_unix_exact(stamp, near=clock.now()) for stamp in stamps if stamp is not None]
    assert [round(float(b - a), 6) for a, b in itertools.pairwise(times)] == [0.1] * 5
    assert times[0] < tt.UNIX_MAX < times[-1]  # the grid crossed into era 1


# -- issue 20, item 11: a log that cannot be written, SIGHUP ------------------------------------


def _start_listen(
    spawn: Callable[..., subprocess.Popen[str]], *args: str
) -> tuple[subprocess.Popen[str], tuple[str, int], LineReader]:
    proc = spawn("metronome", "listen", "--listen", "127.0.0.1:0", "--audio", "none", *args)
    assert proc.stderr is not None
    errors = LineReader(proc.stderr)
    where = errors.wait_for(lambda text: text.startswith("listening on")).split()[-1]
    host, port = where.rsplit(":", 1)
    return proc, (host, int(port)), errors


def _send_ticks(where: tuple[str, int], count: int) -> None:
    from oscsync.osc import codec

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for beat in range(count):
            tx.sendto(codec.encode_message("/tick", [beat]), where)


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux, BSD)")
def test_metronome_listen_log_to_dev_full_is_an_error_at_once(
    spawn: Callable[..., subprocess.Popen[str]],
) -> None:
    proc, where, errors = _start_listen(spawn, "--log", "/dev/full", "--count", "100")
    _send_ticks(where, 1)
    assert proc.wait(15) == 1  # at once: not after the 100 ticks it was asked for
    lines = errors.rest()
    assert not any("Traceback" in line for line in lines), lines
    assert lines[-1] == "Error: cannot write /dev/full: No space left on device"
    summary = next(line for line in lines if line.startswith("metronome: "))
    assert "logged 0 (then the log failed)" in summary


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
def test_metronome_listen_sighup_stops_like_sigterm(
    spawn: Callable[..., subprocess.Popen[str]], tmp_path: Path
) -> None:
    log, wav = tmp_path / "ticks.jsonl", tmp_path / "ticks.wav"
    proc, where, errors = _start_listen(spawn, "--log", str(log), "--audio", f"wav:{wav}")
    _send_ticks(where, 2)
    assert proc.stdout is not None
    for _ in range(2):
        assert proc.stdout.readline().startswith("tick ")
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(15) == 0
    lines = errors.rest()
    assert lines[-1].startswith("metronome: ticks 2") and "logged 2" in lines[-1], lines
    assert [json.loads(line)["beat"] for line in log.read_text().splitlines()] == [0, 1]
    assert audio.read_wav(wav).frames > 0  # rendered on the way out, not left at 0 bytes
