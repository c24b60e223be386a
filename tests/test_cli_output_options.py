"""One output convention for every command (issue #12, item 6).

``--jsonl`` is a stream (one JSON object per line, as things happen), ``--json`` one object at the
end, a file is ``--NAME-out PATH``; ``-q`` hides notices and live lines, never data lines.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from conftest import free_udp_port
from oscsync.apps.endpoints import open_endpoint
from oscsync.cli.main import cli
from oscsync.net.hostport import HostPort


def _tick_log(path: Path) -> None:
    period = 0.25
    rows = [
        {"seq": k, "beat": k % 4, "arrival": 1000.0 + k * period - 0.01,
         "timetag": 1000.0 + k * period, "onset": 1000.0 + k * period, "late": False}
        for k in range(8)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def test_options_convention_stats_jsonl_is_a_stream_and_old_json_still_works(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    _tick_log(first)
    _tick_log(second)
    new = cli_runner.invoke(cli, ["stats", str(first), str(second), "--jsonl"])
    assert new.exit_code == 0, new.output
    rows = [json.loads(line) for line in new.stdout.splitlines()]
    assert [row["file"] for row in rows] == [str(first), str(second)]
    old = cli_runner.invoke(cli, ["stats", str(first), str(second), "--json"])
    assert old.exit_code == 0, old.output
    assert old.stdout == new.stdout
    assert "warning: --json is now --jsonl" in old.stderr
    assert "--json " not in cli_runner.invoke(cli, ["stats", "--help"]).output  # hidden


def test_options_convention_sweep_writes_its_json_file_with_json_out(
    tmp_path: Path, cli_runner: CliRunner
) -> None:
    help_text = cli_runner.invoke(cli, ["timetag", "sweep", "--help"]).output
    assert "--json-out FILE" in help_text and "--json FILE" not in help_text
    # The old spelling still names the option it was given as, in a refusal too.
    target = tmp_path / "missing-dir" / "out.json"
    old = cli_runner.invoke(cli, ["timetag", "sweep", "--json", str(target)])
    assert old.exit_code == 2
    assert f"Invalid value for '--json': cannot write {target}" in old.output


def test_options_convention_quiet_keeps_the_tick_lines_and_drops_the_notices(
    cli_runner: CliRunner,
) -> None:
    port = free_udp_port()
    args = [
        "metronome", "pair", "--peer", f"127.0.0.1:{port}", "--listen", f"127.0.0.1:{port}",
        "--bpm", "600", "--count", "3", "--offset", "0.05", "--audio", "none",
    ]  # fmt: skip
    loud = cli_runner.invoke(cli, args)
    quiet = cli_runner.invoke(cli, ["-q", *args])
    assert loud.exit_code == 0 and quiet.exit_code == 0, (loud.output, quiet.output)
    # Data: one line per tick on stdout, with or without -q (its help: "only data, warnings and
    # errors"); notices: the summary on stderr, only without -q.
    assert len(quiet.stdout.splitlines()) == len(loud.stdout.splitlines()) == 3
    assert "ticks 3" in loud.stderr and quiet.stderr == ""


def test_options_convention_clock_json_is_one_object_and_jsonl_a_stream(
    cli_runner: CliRunner,
) -> None:
    with open_endpoint(HostPort("127.0.0.1", 0)) as listener:
        listener.start(lambda _: None)  # a command's endpoint answers clock pings
        peer = str(listener.local_address)
        one = cli_runner.invoke(cli, ["clock", "--peer", peer, "-c", "4", "--watch", "--json"])
        stream = cli_runner.invoke(cli, ["clock", "--peer", peer, "-c", "4", "--jsonl"])
        both = cli_runner.invoke(cli, ["clock", "--peer", peer, "-c", "4", "--json", "--jsonl"])
    assert one.exit_code == 0 and stream.exit_code == 0, (one.output, stream.output)
    assert json.loads(one.stdout)["answered"] == 4  # one object, even with --watch
    reports = [json.loads(line) for line in stream.stdout.splitlines()]
    assert len(reports) >= 2  # the first report goes out at once, the final one last
    assert reports[-1]["answered"] == 4 and reports[-1]["sent"] == 4
    assert both.exit_code == 2 and "not both" in both.output
