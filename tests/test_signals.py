"""Ctrl-C (SIGINT) and SIGTERM stop every long-running command cleanly: summary, exit 0, no traceback."""

from __future__ import annotations

import signal
import subprocess

import pytest

from conftest import LineReader, free_udp_port, oscsync_command

DEAD = "127.0.0.1:9"  # the discard port: nothing listens there on a test machine

# (arguments, text of the line that says the command is running, text of its summary line)
COMMANDS = [
    (["dump", "--listen", "127.0.0.1:0"], "listening on", "dump:"),
    (["dump", "--schedule", "--listen", "127.0.0.1:0"], "listening on", "scheduler:"),
    (["timetag", "monitor", "--listen", "127.0.0.1:0"], "monitoring timetags", "monitor:"),
    (["chat", "--peer", DEAD, "--listen", "127.0.0.1:0"], "chat: listening", "chat: sent"),
    (["metronome", "send", "--peer", DEAD], "sending /tick", "metronome: sent"),
    (
        ["metronome", "listen", "--listen", "127.0.0.1:0", "--audio", "none"],
        "listening on",
        "metronome:",
    ),
    (
        ["metronome", "pair", "--peer", DEAD, "--listen", "127.0.0.1:0", "--audio", "none"],
        "sending /tick",
        "metronome:",
    ),
    (["netem", "--listen", "127.0.0.1:0", "--forward", DEAD], "netem: 127.0.0.1", "netem reverse"),
    (
        ["send", DEAD, "/x", "1", "--repeat", "100000", "--interval", "0.01"],
        "nothing is listening",
        None,
    ),
    (["demo"], "run: plain ticks", "demo: stopped after 0 of 2 runs"),
]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    ("args", "ready", "summary"), COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_signal_stops_command_cleanly(
    args: list[str], ready: str, summary: str | None, signum: signal.Signals
) -> None:
    args = [arg.replace("127.0.0.1:0", f"127.0.0.1:{free_udp_port()}") for arg in args]
    proc = subprocess.Popen(
        oscsync_command(*args),
        stdin=subprocess.PIPE,  # chat keeps running while its stdin is open
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None and proc.stdout is not None and proc.stdin is not None
    try:
        errors = LineReader(proc.stderr)
        errors.wait_for(lambda line: ready in line, timeout=20)
        proc.send_signal(signum)
        code = proc.wait(15)
        lines = errors.rest()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    assert code == 0, lines
    assert not any("Traceback" in line for line in lines), lines
    if summary is not None:
        assert any(summary in line for line in lines), lines
