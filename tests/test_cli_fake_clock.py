"""CLI commands run in-process on an injected FakeClock (issue #12 item 7).

``CliRunner().invoke(cli, args, obj=AppContext(clock=...))``: the group keeps the given clock
(wrapping it for --clock-skew / --clock-drift), so a command's timetags are exact and its waits
take no real time. On an autojump clock the command's own sleeps move time.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from oscsync.cli.main import cli
from oscsync.cli.runtime import AppContext
from oscsync.clock import FakeClock
from oscsync.osc import codec

START = 1_700_000_000.0  # FakeClock's default: 2023-11-14T22:13:20Z, NTP 3908988800 = 0xe8fe6f80
MONO = 1000.0  # its default monotonic start


def invoke(clock: FakeClock, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), obj=AppContext(clock=clock))


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        yield sock


def test_timetag_now_prints_the_injected_clock_in_every_format() -> None:
    result = invoke(FakeClock(START, MONO), "timetag", "now")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "hex   e8fe6f80.00000000",
        "ntp   3908988800.000000000",
        "unix  1700000000.000000000",
        "iso   2023-11-14T22:13:20.000000000Z",
    ]


def test_clock_skew_applies_on_top_of_an_injected_clock() -> None:
    clock = FakeClock(START, MONO)
    result = invoke(clock, "--clock-skew", "0.5", "timetag", "now", "-f", "hex")
    assert result.exit_code == 0, result.output
    assert result.output == "e8fe6f80.80000000\n"  # half a second: fraction 0x80000000
    clock.advance(0.25)
    result = invoke(clock, "--clock-skew", "-0.25", "timetag", "now", "-f", "unix")
    assert result.output == "1700000000.000000000\n"  # 0.25 s later, 0.25 s behind


def test_metronome_send_count_ticks_on_the_fake_clock_with_no_real_waiting(
    autojump_clock: FakeClock, receiver: socket.socket
) -> None:
    port = receiver.getsockname()[1]
    began = time.monotonic()
    # 1 bpm: a tick a minute, so three ticks span 120 s of the fake clock.
    result = invoke(
        autojump_clock,
        *("metronome", "send", "--peer", f"127.0.0.1:{port}", "--bpm", "1"),
        *("--count", "3", "--offset", "0.25"),
    )
    real = time.monotonic() - began
    assert result.exit_code == 0, result.output
    assert (
        "sent 3 ticks; send time after grid: mean 0 µs, p99 0 µs, max 0 µs, sent late 0"
        in result.output
    )
    assert autojump_clock.monotonic() == MONO + 120.0
    assert real < 60.0  # a system clock would have waited the whole 120 s
    ticks = [codec.decode(receiver.recv(1024)) for _ in range(3)]
    assert ticks == [
        [codec.Message("/tick", (beat,), "i", (0xE8FE6F80 + 60 * beat) << 32 | 0x40000000)]
        for beat in range(3)
    ]  # the grid from START, each timetagged exactly 250 ms after its grid time


def test_dump_duration_passes_on_the_fake_clock(autojump_clock: FakeClock) -> None:
    result = invoke(autojump_clock, "dump", "--listen", "127.0.0.1:0", "--duration", "3600")
    assert result.exit_code == 0, result.output
    assert autojump_clock.monotonic() == MONO + 3600.0  # an hour, to the nanosecond
    assert "dump: 0 messages printed" in result.output


@pytest.mark.parametrize("command", [["metronome", "listen"], ["sequence", "listen"]])
def test_a_listener_that_heard_nothing_says_what_to_check(
    autojump_clock: FakeClock, command: list[str]
) -> None:
    """Issue 30 item 5: "ticks 0" alone left a participant whose patch had stopped sending
    without a clue."""
    args = [*command, "--listen", "127.0.0.1:0", "--audio", "none", "--duration", "60"]
    result = invoke(autojump_clock, *args)
    assert result.exit_code == 0, result.output
    assert re.search(
        r"warning: nothing arrived on 127\.0\.0\.1:\d+: is the sender running, and sending to "
        r"this address and port\? \(Pure Data's example patches send to 127\.0\.0\.1:9001; "
        r"docs/troubleshooting\.md#nothing-arrives\)",
        result.output,
    ), result.output


def test_a_pair_that_hears_its_own_ticks_gives_no_such_hint() -> None:
    """On the real clock: autojump cannot see a datagram in flight."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(
        cli,
        ["metronome", "pair", "--peer", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{port}",
         "--audio", "none", "--count", "2", "--bpm", "600"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "metronome: ticks 2" in result.output
    assert "nothing arrived" not in result.output
