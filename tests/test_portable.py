"""Portable mode (issue #21): the main commands end to end with the Unix-only APIs removed.

Each command runs in a subprocess whose interpreter first imports tests/portable/
sitecustomize.py: no ``select.poll``/``epoll``, no ``SIGALRM``/``setitimer``/``pthread_sigmask``/
``pthread_kill``/``SIGHUP``/``SIGUSR*``, no ``socket.recvmsg``/``sendmsg``, no ``readline``. What
CPython on Windows lacks, so a path that needs one of them fails here. It proves the code paths,
not Windows itself (docs/platforms.md says what is and is not tested).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO, LineReader, free_udp_port, oscsync_command
from test_signals import COMMANDS as SIGNAL_COMMANDS

SHIM = REPO / "tests" / "portable"


def portable_env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SHIM), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


class Portable:
    """Runs oscsync in portable mode; every process it starts is stopped at the end."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            oscsync_command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=portable_env(),
            stdin=None if stdin is not None else subprocess.DEVNULL,
        )
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def start(self, *args: str) -> tuple[subprocess.Popen[str], LineReader]:
        proc = subprocess.Popen(
            oscsync_command(*args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=portable_env(),
        )
        self.started.append(proc)
        assert proc.stderr is not None
        return proc, LineReader(proc.stderr)

    def finish(self, proc: subprocess.Popen[str], errors: LineReader) -> tuple[str, list[str]]:
        """Stdout and stderr lines of a process that stops by itself; asserts a clean exit."""
        assert proc.stdout is not None
        out = proc.stdout.read()
        code = proc.wait(30)
        lines = errors.rest()
        assert code == 0, lines
        assert not any("Traceback" in line for line in lines), lines
        return out, lines

    def stop_all(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def portable() -> Iterator[Portable]:
    runner = Portable()
    yield runner
    runner.stop_all()


def listening_on(errors: LineReader) -> str:
    return errors.wait_for(lambda line: "listening on" in line, timeout=20).split()[-1]


def test_portable_mode_removes_the_unix_only_apis() -> None:
    probe = (
        "import select, selectors, signal, socket\n"
        "missing = [not hasattr(select, 'poll'), selectors.DefaultSelector is selectors.SelectSelector,\n"
        "  not hasattr(signal, 'SIGALRM'), not hasattr(signal, 'setitimer'),\n"
        "  not hasattr(signal, 'pthread_sigmask'), not hasattr(signal, 'pthread_kill'),\n"
        "  not hasattr(signal, 'SIGHUP'), not hasattr(signal, 'SIGUSR1'),\n"
        "  not hasattr(socket.socket, 'recvmsg'), not hasattr(socket.socket, 'sendmsg')]\n"
        "try:\n    import readline\nexcept ImportError:\n    missing.append(True)\n"
        "print(all(missing), len(missing))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=portable_env(),
        check=True,
    ).stdout
    assert out.split() == ["True", "11"]


@pytest.mark.parametrize("schedule", [False, True], ids=["plain", "schedule"])
def test_send_and_dump(portable: Portable, schedule: bool) -> None:
    extra = ["--schedule"] if schedule else []
    proc, errors = portable.start(
        "dump", "--listen", "127.0.0.1:0", "--jsonl", "--count", "2", *extra
    )
    where = listening_on(errors)
    assert portable.run("send", where, "/plain", "1").returncode == 0
    assert portable.run("send", where, "/later", "2", "--in", "0.2").returncode == 0
    out, lines = portable.finish(proc, errors)
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["address"] for r in records] == ["/plain", "/later"]
    assert "2 messages printed" in "\n".join(lines)


def test_send_and_dump_over_tcp_with_both_framings(portable: Portable) -> None:
    # The TCP listener and sender wait on selectors (select() here) and socketpairs only.
    proc, errors = portable.start(
        "dump", "--listen", "tcp://127.0.0.1:0", "--jsonl", "--count", "2"
    )
    where = listening_on(errors)
    assert where.startswith("tcp://")
    assert portable.run("send", where, "/slip", "1").returncode == 0
    assert portable.run("send", where, "/size", "2", "--framing", "size").returncode == 0
    out, _ = portable.finish(proc, errors)
    assert [json.loads(line)["address"] for line in out.splitlines()] == ["/slip", "/size"]


def test_piped_chat(portable: Portable) -> None:
    proc, errors = portable.start("dump", "--listen", "127.0.0.1:0", "--count", "2")
    where = listening_on(errors)
    chat = portable.run(
        "chat", "--peer", where, "--listen", "127.0.0.1:0", "--linger", "0.2",
        stdin="hello from a laptop\nsecond line\n",
    )  # fmt: skip
    assert chat.returncode == 0, chat.stderr
    assert "sent 2 lines" in chat.stderr
    out, _ = portable.finish(proc, errors)
    assert '"hello from a laptop"' in out and '"second line"' in out


def test_metronome_send_and_listen_with_a_log(portable: Portable, tmp_path: Path) -> None:
    log = tmp_path / "ticks.jsonl"
    proc, errors = portable.start(
        "metronome", "listen", "--listen", "127.0.0.1:0", "--count", "4", "--audio", "none",
        "--log", str(log), "--duration", "30",
    )  # fmt: skip
    where = listening_on(errors)
    sender = portable.run(
        "metronome", "send", "--peer", where, "--count", "4", "--bpm", "600", "--offset", "0.1"
    )
    assert sender.returncode == 0, sender.stderr
    portable.finish(proc, errors)
    ticks = [json.loads(line) for line in log.read_text().splitlines()]
    assert [t["beat"] for t in ticks] == [0, 1, 2, 3]
    assert all(t["timetag"] > t["arrival"] for t in ticks)  # sent 100 ms ahead


def test_clock_against_a_skewed_listener(portable: Portable) -> None:
    _, errors = portable.start("--clock-skew", "0.5", "dump", "--listen", "127.0.0.1:0")
    where = listening_on(errors)
    result = portable.run("clock", "--peer", where, "--count", "8", "--json")
    assert result.returncode == 0, result.stderr
    offset_ms = json.loads(result.stdout)["offset_ms"]
    assert abs(offset_ms - 500.0) < 100.0  # loopback: the skew, within a generous bound


def test_netem_relays(portable: Portable) -> None:
    dump, dump_errors = portable.start("dump", "--listen", "127.0.0.1:0", "--count", "1")
    target = listening_on(dump_errors)
    port = free_udp_port()
    relay, relay_errors = portable.start(
        "netem", "--listen", f"127.0.0.1:{port}", "--forward", target, "--delay", "0.01"
    )
    relay_errors.wait_for(lambda line: line.startswith("netem:"), timeout=20)
    assert portable.run("send", f"127.0.0.1:{port}", "/through", "netem").returncode == 0
    out, _ = portable.finish(dump, dump_errors)
    assert "/through" in out
    relay.send_signal(signal.SIGINT)
    assert relay.wait(15) == 0
    assert not any("Traceback" in line for line in relay_errors.rest())


def test_demo(portable: Portable, tmp_path: Path) -> None:
    result = portable.run("demo", "--duration", "1.5", "--out", str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.glob("*.wav"))


@pytest.mark.parametrize(
    ("args", "ready", "summary"),
    SIGNAL_COMMANDS,
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_ctrl_c_stops_every_command_cleanly(
    args: list[str], ready: str, summary: str | None
) -> None:
    # SIGINT alone, as Windows delivers Ctrl-C: no SIGALRM to defer a stop with, no signal
    # masks to steer it to the main thread (tests/test_signals.py has the same commands).
    args = [arg.replace("127.0.0.1:0", f"127.0.0.1:{free_udp_port()}") for arg in args]
    proc = subprocess.Popen(
        oscsync_command(*args),
        stdin=subprocess.PIPE,  # chat keeps running while its stdin is open
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=portable_env(),
    )
    assert proc.stderr is not None and proc.stdin is not None and proc.stdout is not None
    try:
        errors = LineReader(proc.stderr)
        errors.wait_for(lambda line: ready in line, timeout=20)
        proc.send_signal(signal.SIGINT)
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


def test_wav_path_with_a_drive_letter_keeps_its_colon() -> None:
    from oscsync.audio import parse_audio_choice

    choice = parse_audio_choice(r"wav:C:\Users\me\out.wav")
    assert choice.path is not None and str(choice.path) == r"C:\Users\me\out.wav"
