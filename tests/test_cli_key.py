"""``--key-file`` / ``OSCSYNC_KEY`` (issue #27 item 2): one line for a bad key, and a clock that a
forger who sees every ping cannot move once both ends hold the key."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from fakepeers import FakePeer, forged_pong
from oscsync.apps.endpoints import open_endpoint
from oscsync.cli.main import cli
from oscsync.clock import SkewedClock, SystemClock
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc import auth, codec
from oscsync.osc import timetag as tt
from test_cli_help import all_command_paths

SECRET = "a key both machines hold, 32 bytes"


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "oscsync.key"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def leader() -> Iterator[Endpoint]:
    """A listener 250 ms ahead that holds the key (answers signed pings with signed pongs)."""
    key = auth.Key.from_text(SECRET, "test")
    clock = SkewedClock(SystemClock(), skew=0.25)
    with open_endpoint(HostPort("127.0.0.1", 0), clock=clock, auth=auth.PacketAuth(key)) as end:
        end.start(lambda received: None)
        yield end


def _clock(runner: CliRunner, *args: str) -> tuple[int, str]:
    result = runner.invoke(cli, [*args], catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda tmp: (["--key-file", str(tmp / "missing")], {}), "cannot read the key file"),
        (lambda tmp: (["--key-file", str(tmp)], {}), "is a directory"),
        (lambda tmp: ([], {"OSCSYNC_KEY": "short"}), "at least 16"),
        (
            lambda tmp: (["--key-file", str(tmp / "k")], {"OSCSYNC_KEY": SECRET}),
            "give one",
        ),
    ],
    ids=["missing", "directory", "short", "two-keys"],
)
def test_a_key_that_cannot_be_used_is_one_line_and_exit_2(
    tmp_path: Path, setup: object, message: str
) -> None:
    (tmp_path / "k").write_text(SECRET)
    args, env = setup(tmp_path)  # type: ignore[operator]
    result = CliRunner().invoke(cli, [*args, "timetag", "now"], env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "--key-file" in result.output


@pytest.mark.parametrize("path", all_command_paths(), ids=" ".join)
def test_help_works_with_a_key_that_cannot_be_used(tmp_path: Path, path: list[str]) -> None:
    """The group's callback runs before click parses ``COMMAND --help``: the key is read only
    once a command runs, so a missing key file (or a bad OSCSYNC_KEY) never stops --help."""
    missing = ["--key-file", str(tmp_path / "missing")]
    for args, env in ((missing, {}), ([], {"OSCSYNC_KEY": "short"})):
        result = CliRunner().invoke(cli, [*args, *path, "--help"], env=env)
        assert result.exit_code == 0, result.output
        assert "Usage:" in result.output


def test_a_command_that_runs_reads_the_key_after_parsing(tmp_path: Path) -> None:
    """A bad option is still reported first; a command that parsed refuses the missing key."""
    missing = ["--key-file", str(tmp_path / "missing")]
    bad_option = CliRunner().invoke(cli, [*missing, "send", "127.0.0.1:9", "/a", "--in", "x"])
    assert bad_option.exit_code == 2 and "'--in'" in bad_option.output
    result = CliRunner().invoke(cli, [*missing, "send", "127.0.0.1:9", "/a"])
    assert result.exit_code == 2 and "cannot read the key file" in result.output
    assert "Usage: cli [OPTIONS] COMMAND" in result.output  # the group's: it has --key-file


def test_there_is_no_key_on_the_command_line() -> None:
    result = CliRunner().invoke(cli, ["--key", SECRET, "timetag", "now"])
    assert result.exit_code == 2 and "No such option '--key'" in result.output
    assert "visible to every user" in CliRunner().invoke(cli, ["--help"]).output


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX file modes")
def test_a_key_file_others_can_read_gets_a_warning(key_file: Path) -> None:
    key_file.chmod(0o644)
    result = CliRunner().invoke(cli, ["--key-file", str(key_file), "timetag", "now"])
    assert result.exit_code == 0
    assert "can be read by other users (chmod 600" in result.output


def test_with_the_key_a_forger_who_answers_every_ping_first_moves_nothing(
    key_file: Path, leader: Endpoint
) -> None:
    """The forger sits on the path (it sees every ping, answers each first, from the address
    pinged, claiming +5 s, then passes the ping on): with the key, every forged pong is
    refused and the offset measured is the leader's 250 ms."""
    assert leader.local_address is not None
    with FakePeer(relay_to=leader.local_address.sockaddr, forge=forged_pong(5.0)) as tap:
        code, output = _clock(
            CliRunner(),
            "--key-file",
            str(key_file),
            "clock",
            "--peer",
            tap.hostport,
            "--count",
            "60",
            "--interval",
            "0.005",
            "--json",
        )
        forged = tap.forged
    report = json.loads(output.splitlines()[-1])
    assert code == 0, output
    assert forged == 60 and report["ignored"] >= forged  # every forgery counted
    assert report["answered"] >= 50
    assert abs(report["offset_ms"] - 250.0) <= report["error_bound_ms"] + 1.0


def test_with_the_key_from_the_environment_signed_ticks_reach_a_keyed_listener(
    leader: Endpoint,
) -> None:
    """``send --in`` with OSCSYNC_KEY signs its bundle: the keyed listener sees it checked."""
    got = []
    assert leader.local_address is not None
    key = auth.Key.from_text(SECRET, "test")
    with open_endpoint(
        HostPort("127.0.0.1", 0), clock=SystemClock(), auth=auth.PacketAuth(key)
    ) as listener:
        listener.start(got.append)
        assert listener.local_address is not None
        result = CliRunner().invoke(
            cli,
            ["send", str(listener.local_address), "/tick", "1", "--in", "0.5"],
            env={"OSCSYNC_KEY": SECRET},
        )
        assert result.exit_code == 0, result.output
        from waiting import wait_until

        wait_until(lambda: len(got) == 1, 5.0, "the bundle")
    assert got[0].authenticated and got[0].address == "/tick"
    assert got[0].timetag is not None and got[0].timetag != tt.IMMEDIATELY
    assert codec.decode(codec.encode_message("/tick", [1], "i"))[0].args == got[0].args


def test_offset_auto_with_a_key_says_the_answers_were_refused_not_absent(key_file: Path) -> None:
    """A listener without the key answers the pings unsigned: ``--offset auto`` with a key
    refuses those answers and says so, instead of "no peer answered"."""
    with open_endpoint(HostPort("127.0.0.1", 0), clock=SystemClock()) as listener:
        listener.start(lambda received: None)
        result = CliRunner().invoke(
            cli,
            ["--key-file", str(key_file), "metronome", "send", "--peer",
             str(listener.local_address), "--offset", "auto", "--count", "1"],
        )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert "--offset auto: the peers' answers were refused (not signed with this" in result.output


def test_every_command_takes_its_context_through_pass_app() -> None:
    # The key is read by runtime.pass_app, not by the group: a command that took its context
    # with click.pass_obj would run without the key the user gave, unsigned and unchecked.
    cli_dir = Path(__file__).resolve().parent.parent / "src" / "oscsync" / "cli"
    plain = [
        path.name
        for path in sorted(cli_dir.glob("*.py"))
        if path.name != "runtime.py" and "pass_obj" in path.read_text(encoding="utf-8")
    ]
    assert plain == []
