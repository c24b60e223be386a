"""A tick log given to replay, a recording given to stats: one line naming the right command
(issue 30 item 6: the guide once called both files ticks.jsonl)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from oscsync.cli.main import cli
from oscsync.files.kinds import file_kind
from oscsync.files.recording import header_line

# First lines as the commands write them (metronome listen --log, sequence listen --log).
TICK = (
    '{"seq":0,"beat":0,"accent":true,"arrival":1796642857.4504235,"timetag":null,'
    '"timetag_hex":null,"onset":1796642857.4507291,"handled":1796642857.4507291,"late":false,'
    '"headroom_ms":null,"source":"127.0.0.1:43317"}\n'
)
EVENT = (
    '{"voice":"kick","step":0,"velocity":1.0,"note":null,"arrival":1796642857.45,'
    '"timetag":1796642857.55,"onset":1796642857.55,"late":false,"source":"127.0.0.1:43317"}\n'
)
DATAGRAM = (
    '{"m":0.19,"t":1796642856.22,"from":"127.0.0.1:47640","size":16,'
    '"raw":"L3RpY2sAAAAsaQAAAAAAAA==","osc":[{"address":"/tick","types":"i","args":[0],'
    '"timetag":null}]}\n'
)


def recording(tmp_path: Path) -> Path:
    path = tmp_path / "take.jsonl"
    header = header_line(
        host="vm", clock="system", started_unix=1796642856.0, listen="127.0.0.1:9001",
        software="oscsync test",
    )  # fmt: skip
    path.write_text(header + "\n" + DATAGRAM)
    return path


def log(tmp_path: Path, line: str) -> Path:
    path = tmp_path / "ticks.jsonl"
    path.write_text("\n" + line * 3)
    return path


def test_file_kind_tells_the_formats_apart(tmp_path: Path) -> None:
    assert file_kind(recording(tmp_path)) == "recording"
    assert file_kind(log(tmp_path, TICK)) == "tick log"
    assert file_kind(log(tmp_path, EVENT)) == "event log"
    assert file_kind(log(tmp_path, "not json\n")) is None
    assert file_kind(tmp_path / "missing.jsonl") is None


def test_stats_on_a_recording_says_to_replay_it(tmp_path: Path) -> None:
    path = recording(tmp_path)
    result = CliRunner().invoke(cli, ["stats", str(path)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: {path}: this is a recording (oscsync record), not a tick log: send it again "
        f"with `oscsync replay {path} --peer HOST:PORT`; `oscsync metronome listen --log "
        "ticks.jsonl` writes a tick log\n"
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (TICK, "this is a tick log (metronome listen --log), not a recording: use `oscsync stats"),
        (EVENT, "this is an event log (sequence listen --log), not a recording: read it with jq"),
    ],
)
def test_replay_on_a_log_says_what_it_is(tmp_path: Path, line: str, expected: str) -> None:
    path = log(tmp_path, line)
    for extra in ([], ["--skip-bad"]):
        result = CliRunner().invoke(cli, ["replay", str(path), "--peer", "127.0.0.1:9", *extra])
        assert result.exit_code == 1
        assert expected in result.output
        assert "--skip-bad skips" not in result.output
        assert len(result.output.splitlines()) == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
def test_a_pipe_is_not_looked_into(tmp_path: Path) -> None:
    """Its first line, once read to tell the kind, would be gone for the command (and opening a
    named pipe waits for a writer)."""
    pipe = tmp_path / "ticks.jsonl"
    os.mkfifo(pipe)
    kinds: list[object] = []
    looker = threading.Thread(target=lambda: kinds.append(file_kind(pipe)), daemon=True)
    looker.start()
    looker.join(5.0)
    if looker.is_alive():  # blocked opening the pipe: give it a writer, so it ends
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        looker.join(5.0)
        pytest.fail("file_kind opened the named pipe")
    assert kinds == [None]
