"""``--sync`` on the command line: pair and listen follow a clock, ``--sync system`` trusts ours."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
from pathlib import Path

from click.testing import CliRunner

from conftest import free_udp_port
from oscsync.cli.main import cli
from oscsync.cli.runtime import AppContext
from oscsync.clock import FakeClock
from oscsync.osc import codec, timetag
from oscsync.sync.ping import PING


def test_pair_sync_hears_itself_with_the_first_tick_on_time(
    cli_runner: CliRunner, tmp_path: Path
) -> None:
    """The follower pings the tick sender as soon as the first tick arrives; with 300 ms of
    headroom it is synced long before that tick is due: every tick, the first included, is
    scheduled for its translated time with ~300 ms to spare, none dropped as unsynced. (Whether
    the scheduler then met each time is a timing figure, for benchmarks/clock_sync.py.)"""
    port = free_udp_port()
    log = tmp_path / "pair.jsonl"
    result = cli_runner.invoke(
        cli,
        [
            "metronome", "pair", "--peer", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{port}",
            "--bpm", "600", "--count", "4", "--offset", "0.3", "--audio", "none",
            "--log", str(log), "--sync",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    ticks = [json.loads(line) for line in log.read_text().splitlines()]
    assert [t["beat"] for t in ticks] == [0, 1, 2, 3]
    assert all(t["headroom_ms"] > 250 for t in ticks)
    assert "clock sync with 127.0.0.1:" in result.stderr
    assert "locked" in result.stderr
    assert "not played" not in result.stderr


def test_sync_system_trusts_this_clock_and_refuses_a_sync_peer(cli_runner: CliRunner) -> None:
    base = ["metronome", "listen", "-l", "127.0.0.1:0", "--audio", "none", "--duration", "0.1"]
    result = cli_runner.invoke(cli, [*base, "--sync", "system"])
    assert result.exit_code == 0, result.output
    assert "clock sync: system" in result.stderr
    refused = cli_runner.invoke(cli, [*base, "--sync", "system", "--sync-peer", "127.0.0.1:9"])
    assert refused.exit_code == 2
    assert "--sync-peer" in refused.output and "listening" not in refused.output


def test_sync_start_interval_and_sync_interval_time_the_followers_pings(
    autojump_clock: FakeClock,
) -> None:
    """On the fake clock each ping's T1 is exact: --sync-start-interval spaces the burst and the
    first 5 s of pings, --sync-interval the pings after them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as leader:
        leader.bind(("127.0.0.1", 0))
        leader.setblocking(False)
        result = CliRunner().invoke(
            cli,
            [
                "metronome", "listen", "-l", "127.0.0.1:0", "--audio", "none", "--duration", "8",
                "--sync-peer", f"127.0.0.1:{leader.getsockname()[1]}",
                "--sync-start-interval", "0.0625", "--sync-interval", "0.25",
            ],
            obj=AppContext(clock=autojump_clock),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        sent = []
        with contextlib.suppress(BlockingIOError):
            while True:
                sent.append(leader.recv(1024))
    pings = [codec.decode(data)[0] for data in sent]
    assert {ping.address for ping in pings} == {PING}
    t1 = [ping.args[1] for ping in pings]
    gaps = [timetag.to_unix_exact(b) - timetag.to_unix_exact(a) for a, b in itertools.pairwise(t1)]
    # 20 burst pings, then 5 s of acquisition (80 pings), then the steady rate.
    assert gaps[:99] == [0.0625] * 99
    assert gaps[99] == 0.0625 + 0.25  # the last acquisition wait, then the first steady one
    assert len(gaps) > 102 and set(gaps[100:]) == {0.25}


def test_sync_intervals_are_checked_and_need_a_clock_to_follow(cli_runner: CliRunner) -> None:
    base = ["metronome", "listen", "-l", "127.0.0.1:0", "--audio", "none", "--duration", "0.1"]
    for bad in (["--sync-interval", "0"], ["--sync-start-interval", "2s"]):
        refused = cli_runner.invoke(cli, [*base, "--sync", *bad])
        assert refused.exit_code == 2, refused.output
        assert f"Invalid value for '{bad[0]}'" in refused.output
    for without in ([], ["--sync", "system"]):
        refused = cli_runner.invoke(cli, [*base, *without, "--sync-interval", "0.05"])
        assert refused.exit_code == 2, refused.output
        assert "give --sync" in refused.output and "listening" not in refused.output
