"""``--sync`` on the command line: pair and listen follow a clock, ``--sync system`` trusts ours."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from conftest import free_udp_port
from oscsync.cli.main import cli


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
