"""The live status line (issue #13): fits the terminal measured when drawn, warnings above it."""

from __future__ import annotations

import io
import os
import re
import select
import struct
import subprocess

import pytest

from conftest import oscsync_command
from oscsync.terminal.liveline import LiveLine, fit, terminal_columns
from waiting import wait_until

ERASE = "\r\x1b[2K"


def test_fit_cuts_to_one_column_less_than_the_terminal_with_an_ellipsis() -> None:
    assert fit("ticks 12  late 0", 80) == "ticks 12  late 0"
    assert fit("x" * 100, 20) == "x" * 18 + "…"
    assert len(fit("x" * 100, 20)) == 19


def test_fit_counts_wide_characters_as_two_columns() -> None:
    cut = fit("音" * 30, 11)  # 10 columns of room: four wide characters and the ellipsis
    assert cut == "音" * 4 + "…"


def test_warnings_go_on_their_own_line_and_the_live_line_is_redrawn_below(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    screen = io.StringIO()  # stdout and stderr on one terminal
    live = LiveLine(screen)
    live.show("sent 1 tick")
    live.above("warning: nothing is listening at 127.0.0.1:9", screen)
    live.end()
    assert screen.getvalue() == (
        f"{ERASE}sent 1 tick"
        f"{ERASE}warning: nothing is listening at 127.0.0.1:9\n"
        f"{ERASE}sent 1 tick\n"
    )


def test_a_disabled_live_line_draws_nothing_but_still_passes_lines_through() -> None:
    out, err = io.StringIO(), io.StringIO()
    live = LiveLine(out, enabled=False)
    live.show("ticks 1")
    live.above("warning: x", err)
    live.end()
    assert (out.getvalue(), err.getvalue()) == ("", "warning: x\n")


# -- on a real terminal: a pseudo-terminal with a known width ----------------------------------

try:
    import fcntl
    import pty
    import termios
except ImportError:  # Windows: no pseudo-terminals
    pty = None  # type: ignore[assignment]

needs_pty = pytest.mark.skipif(pty is None, reason="no pty module on this platform")


def _set_width(fd: int, columns: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))


def _read_ready(master: int, chunks: list[bytes]) -> bool:
    """Append what the pty has for us now; True once the other side has closed it."""
    while select.select([master], [], [], 0)[0]:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the other side closed
            return True
        if not data:
            return True
        chunks.append(data)
    return False


def _read_until_exit(master: int, proc: subprocess.Popen[bytes], timeout: float) -> str:
    chunks: list[bytes] = []

    def ended() -> bool:
        if _read_ready(master, chunks):
            return True
        if proc.poll() is None:
            return False
        _read_ready(master, chunks)  # what it wrote between the read above and its exit
        return True

    wait_until(
        ended,
        timeout,
        "the command to exit and its terminal to close",
        state=lambda: b"".join(chunks)[-300:],
    )
    return b"".join(chunks).decode("utf-8", "replace")


@needs_pty
def test_live_line_width_is_measured_when_drawn() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(os.dup(slave), "w", encoding="utf-8") as out:
            _set_width(slave, 30)
            assert terminal_columns(out) == 30
            live = LiveLine(out)
            live.show("y" * 100)
            _set_width(slave, 50)  # the window was resized between two draws
            live.show("z" * 100)
            drawn = ""
            while drawn.count("…") < 2 and select.select([master], [], [], 5)[0]:
                drawn += os.read(master, 4096).decode()
        segments = [part for part in drawn.split(ERASE) if part]
        assert segments == ["y" * 28 + "…", "z" * 48 + "…"]
    finally:
        os.close(master)
        os.close(slave)


@needs_pty
def test_metronome_send_live_line_fits_a_40_column_terminal_and_warnings_stand_alone() -> None:
    master, slave = pty.openpty()
    _set_width(slave, 40)
    proc = subprocess.Popen(
        oscsync_command(
            "metronome", "send", "--peer", "127.0.0.1:9", "--count", "6", "--bpm", "1200"
        ),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )
    os.close(slave)
    try:
        text = _read_until_exit(master, proc, timeout=30)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    rows = re.split(r"\r\n|\r\x1b\[2K|\n", re.sub(r"\x1b\[\d*m", "", text))  # colours off
    assert "sent 6 ticks" in text
    assert all(len(row) <= 39 for row in rows if row.startswith("sent ")), rows
    # The ICMP warning is a row of its own, never spliced into "sent N ticks".
    assert any(row.startswith("warning: nothing is listening") for row in rows), rows
    assert not any("sent" in row and "warning" in row for row in rows), rows


@needs_pty
def test_metronome_listen_live_line_fits_a_narrow_terminal(udp_port: int) -> None:
    master, slave = pty.openpty()
    _set_width(slave, 32)
    listener = subprocess.Popen(
        oscsync_command(
            "metronome",
            "listen",
            "--listen",
            f"127.0.0.1:{udp_port}",
            "--audio",
            "none",
            "--count",
            "4",
        ),
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env={k: v for k, v in os.environ.items() if k != "COLUMNS"},
    )
    os.close(slave)
    try:
        chunks: list[bytes] = []
        wait_until(
            lambda: _read_ready(master, chunks) or b"listening on" in b"".join(chunks),
            20,
            "the listener to say it is listening",
            state=lambda: b"".join(chunks),
        )
        seen = b"".join(chunks)
        subprocess.run(
            oscsync_command(
                "metronome",
                "send",
                "--peer",
                f"127.0.0.1:{udp_port}",
                "--count",
                "4",
                "--bpm",
                "1200",
                "--offset",
                "0.05",
            ),
            check=True,
            capture_output=True,
            timeout=30,
        )
        text = seen.decode() + _read_until_exit(master, listener, timeout=30)
        assert listener.wait(10) == 0
    finally:
        if listener.poll() is None:
            listener.kill()
            listener.wait()
        os.close(master)
    live_rows = [row for row in re.split(r"\r\n|\r\x1b\[2K|\n", text) if row.startswith("ticks ")]
    assert live_rows, text
    assert all(len(row) <= 31 for row in live_rows), live_rows
    assert live_rows[-1].endswith("…")  # the full line is longer than 31 columns


def test_monitor_live_line_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    from oscsync.apps.monitor import MonitorView
    from oscsync.clock import FakeClock
    from oscsync.osc import codec
    from oscsync.osc import timetag as tt
    from oscsync.osc.routing import Received

    monkeypatch.setenv("COLUMNS", "40")
    clock = FakeClock(start=1_700_000_000.0)
    out = io.StringIO()
    view = MonitorView(out, clock, mode="live")
    stamp = tt.from_unix(clock.now() + 0.25)
    view.on_message(
        Received(codec.Message("/tick", (1,), "i", stamp), ("127.0.0.1", 9000), clock.now())
    )
    view.finish()
    drawn = out.getvalue().split(ERASE)[-1].rstrip("\n")
    assert drawn.startswith("headroom +250.000 ms") and drawn.endswith("…")
    assert len(drawn) == 39
