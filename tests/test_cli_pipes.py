"""Every command that prints data ends quietly on a closed pipe (issue #13: ``| head``)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import LineReader, free_udp_port, oscsync_command


def _closed_pipe() -> int:
    """The write end of a pipe whose reader is already gone: the first write fails (EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


@pytest.mark.parametrize(
    "args",
    [["timetag", "now"], ["timetag", "now", "--format", "hex"], ["stats", "LOG"]],
    ids=" ".join,
)
def test_timetag_now_piped_to_head_exits_0(args: list[str], tmp_path: Path) -> None:
    log = tmp_path / "ticks.jsonl"
    log.write_text(
        "".join(
            f'{{"seq":{k},"beat":0,"accent":true,"arrival":{k}.0,"timetag":null,'
            f'"timetag_hex":null,"onset":{k}.5,"handled":{k}.5,"late":false,'
            f'"headroom_ms":null,"source":"127.0.0.1:1"}}\n'
            for k in range(4)
        )
    )
    stdout = _closed_pipe()
    try:
        done = subprocess.run(
            oscsync_command(*[str(log) if arg == "LOG" else arg for arg in args]),
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    finally:
        os.close(stdout)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_metronome_listen_piped_to_head_ends() -> None:
    port = free_udp_port()
    stdout = _closed_pipe()
    listener = subprocess.Popen(
        oscsync_command("metronome", "listen", "--listen", f"127.0.0.1:{port}", "--audio", "none"),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(stdout)
    assert listener.stderr is not None
    try:
        errors = LineReader(listener.stderr)
        errors.wait_for(lambda line: "listening on" in line, timeout=20)
        subprocess.run(
            oscsync_command(
                "metronome", "send", "--peer", f"127.0.0.1:{port}", "--count", "3", "--bpm", "600"
            ),
            check=True,
            capture_output=True,
            timeout=30,
        )
        code = listener.wait(20)  # before the fix it ran on, warning on every tick
        lines = errors.rest()
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
    assert code == 0, lines
    assert not any("BrokenPipe" in line or "Traceback" in line for line in lines), lines
    assert lines[-1].startswith("metronome: ticks 1"), lines


def test_metronome_pair_piped_to_head_ends() -> None:
    port = free_udp_port()
    stdout = _closed_pipe()
    pair = subprocess.Popen(
        oscsync_command(
            "metronome",
            "pair",
            "--peer",
            f"127.0.0.1:{port}",
            "--listen",
            f"127.0.0.1:{port}",
            "--audio",
            "none",
            "--bpm",
            "600",
        ),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(stdout)
    assert pair.stderr is not None
    try:
        code = pair.wait(30)  # it hears itself: the first tick line fails, and it stops
        lines = LineReader(pair.stderr).rest()
    finally:
        if pair.poll() is None:
            pair.kill()
            pair.wait()
    assert code == 0, lines
    assert not any("BrokenPipe" in line or "Traceback" in line for line in lines), lines
