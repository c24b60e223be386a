"""One output convention for every command (issue #12, item 6).

``--jsonl`` is a stream (one JSON object per line, as things happen), ``--json`` one object at the
end, a file is ``--NAME-out PATH``; ``-q`` hides notices and live lines, never data lines.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import free_udp_port, oscsync_command
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


# -- issue 27, item 12: one rule for every file a command writes --------------------------------

OUTPUTS = [
    ("metronome listen --log", ["metronome", "listen", "--audio", "none", "--log", "{path}"]),
    ("metronome listen wav:", ["metronome", "listen", "--audio", "wav:{path}"]),
    ("sequence listen --log", ["sequence", "listen", "--audio", "none", "--log", "{path}"]),
    ("timetag sweep --csv", ["timetag", "sweep", "--offsets", "0", "--csv", "{path}"]),
    ("timetag sweep --json-out", ["timetag", "sweep", "--offsets", "0", "--json-out", "{path}"]),
    ("record FILE", ["record", "{path}"]),
    ("record --pcap", ["record", "--pcap", "{path}"]),
]


@pytest.mark.parametrize(("name", "args"), OUTPUTS, ids=[name for name, _ in OUTPUTS])
def test_no_command_replaces_an_existing_file_without_overwrite(
    tmp_path: Path, cli_runner: CliRunner, name: str, args: list[str]
) -> None:
    """``--log``, ``wav:``, ``--csv`` and ``--json-out`` replaced an existing file silently
    while ``record`` refused: now every one refuses (exit 2, the file untouched)."""
    path = tmp_path / "precious.txt"
    path.write_text("precious\n")
    argv = [arg.replace("{path}", str(path)) for arg in args]
    result = cli_runner.invoke(
        cli, [*argv, "--listen", "127.0.0.1:0"] if "listen" in name else argv
    )
    assert result.exit_code == 2, result.output
    assert f"{path} already exists" in result.output and "--overwrite" in result.output
    assert path.read_text() == "precious\n"


def test_overwrite_replaces_an_existing_log(tmp_path: Path, cli_runner: CliRunner) -> None:
    path = tmp_path / "ticks.jsonl"
    path.write_text("old run\n")
    args = ["metronome", "listen", "--audio", "none", "--listen", "127.0.0.1:0", "--log"]
    result = cli_runner.invoke(cli, [*args, str(path), "--overwrite", "--duration", "0.1"])
    assert result.exit_code == 0, result.output
    assert path.read_text() == ""  # replaced (no tick came)
    empty = tmp_path / "empty.jsonl"
    empty.touch()  # an empty file holds nothing to lose: written without --overwrite
    result = cli_runner.invoke(cli, [*args, str(empty), "--duration", "0.1"])
    assert result.exit_code == 0, result.output


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize(("name", "args"), OUTPUTS, ids=[name for name, _ in OUTPUTS])
def test_a_named_pipe_nobody_reads_is_one_line_not_a_silent_wait(
    tmp_path: Path, name: str, args: list[str]
) -> None:
    """A FIFO as output made every command wait, silently, for a reader (open blocks)."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    argv = [arg.replace("{path}", str(path)) for arg in args]
    if "listen" in name or name.startswith("record"):
        argv += ["--listen", "127.0.0.1:0", "--duration", "30"]
    done = subprocess.run(oscsync_command(*argv), capture_output=True, text=True, timeout=60)
    assert done.returncode in (1, 2), done.stderr
    [error] = [line for line in done.stderr.splitlines() if "Error" in line]
    assert f"cannot write {path}: a named pipe (FIFO) that nothing reads" in error
    assert "Traceback" not in done.stderr


def test_demo_does_not_replace_the_wav_files_in_out(tmp_path: Path, cli_runner: CliRunner) -> None:
    (tmp_path / "plain-A.wav").write_bytes(b"RIFF precious")
    result = cli_runner.invoke(cli, ["demo", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "plain-A.wav already exists" in result.output
    assert (tmp_path / "plain-A.wav").read_bytes() == b"RIFF precious"
