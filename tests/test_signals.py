"""Ctrl-C (SIGINT) and SIGTERM stop every long-running command cleanly: summary, no traceback.

Commands that run until stopped exit 0; a run with a defined end (send --repeat, metronome send
--count, demo) cut short exits 128 + the signal's number: 130 for Ctrl-C, 143 for SIGTERM.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
from pathlib import Path

import pytest

from conftest import REPO, LineReader, free_udp_port, oscsync_command
from oscsync.files.recording import header_line
from oscsync.osc import codec

BEAT = REPO / "patterns" / "beat.txt"

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
]

# Runs with a defined end: cut short, they exit 128 + signal number (issue #13).
DEFINED_END = [
    (
        ["send", DEAD, "/x", "1", "--repeat", "100000", "--interval", "0.01"],
        "nothing is listening",
        "send: stopped after",
    ),
    (["metronome", "send", "--peer", DEAD, "--count", "1000"], "sending /tick", "of 1000 ticks"),
    (["demo"], "run: plain ticks", "demo: stopped after 0 of 2 runs"),
    (["demo", "--duration", "1.5"], "run: forward sync", "demo: stopped after 1 of 2 runs"),
    (["timetag", "sweep", "--offsets", "0,10ms"], "sweep:", "interrupted: the table shows"),
]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    ("args", "ready", "summary"), COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, list) else ""
)
def test_signal_stops_command_cleanly(
    args: list[str], ready: str, summary: str | None, signum: signal.Signals
) -> None:
    assert _stop(args, ready, summary, signum) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize(
    ("args", "ready", "summary"),
    DEFINED_END,
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_interrupted_run_with_a_defined_end_exits_130_with_partial_summary(
    args: list[str], ready: str, summary: str, signum: signal.Signals
) -> None:
    assert _stop(args, ready, summary, signum) == 128 + signum


def _stop(args: list[str], ready: str, summary: str | None, signum: signal.Signals) -> int:
    """Start the command, signal it once it is running; check it stopped cleanly; its exit code."""
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
    assert not any("Traceback" in line for line in lines), lines
    if summary is not None:
        assert any(summary in line for line in lines), lines
    return code


# Issue 30 item 9: replay and sequence send have a defined end too, and said nothing of it.
def _long_recording(path: Path) -> Path:
    """A recording of 100 datagrams a second apart: replaying it takes 99 s."""
    header = header_line(
        host="test", clock="system", started_unix=1796642856.0, listen="127.0.0.1:9001",
        software="oscsync test",
    )  # fmt: skip
    tick = base64.b64encode(codec.encode_message("/tick", [1])).decode()
    lines = [
        json.dumps({"m": float(k), "t": 1796642856.0 + k, "from": "127.0.0.1:5", "raw": tick})
        for k in range(100)
    ]
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_replay_says_so_and_exits_130(tmp_path: Path, signum: signal.Signals) -> None:
    take = _long_recording(tmp_path / "take.jsonl")
    args = ["replay", str(take), "--peer", DEAD]
    assert _stop(args, "replay: 100 datagrams", "replay: stopped after", signum) == 128 + signum


def test_replay_until_ctrl_c_exits_0(tmp_path: Path) -> None:
    take = _long_recording(tmp_path / "take.jsonl")
    args = ["replay", str(take), "--peer", DEAD, "--loop", "0"]
    assert _stop(args, "replay: 100 datagrams", "replay: sent", signal.SIGINT) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_sequence_send_with_bars_exits_130(signum: signal.Signals) -> None:
    args = ["sequence", "send", str(BEAT), "--peer", DEAD, "--bars", "100"]
    assert _stop(args, "sending", "sequence: sent", signum) == 128 + signum
