"""Every subcommand (lazily imported) answers --help, and start-up imports stay light."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from oscsync.cli.main import COMMANDS, cli


def all_command_paths() -> list[list[str]]:
    paths: list[list[str]] = []
    ctx = click.Context(cli)

    def walk(group: click.Group, prefix: list[str]) -> None:
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            paths.append([*prefix, name])
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])

    walk(cli, [])
    return paths


@pytest.mark.parametrize("path", all_command_paths(), ids=" ".join)
def test_help_works_for_every_subcommand(path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_every_registered_command_is_listed_with_its_own_short_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    ctx = click.Context(cli)
    for name, (_, short_help) in COMMANDS.items():
        assert name in result.output
        command = cli.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(limit=1000) == short_help


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("oscsync, version ")


def test_python_m_oscsync_and_no_heavy_imports_at_start_up() -> None:
    code = (
        "import sys, runpy; sys.argv=['oscsync','--help'];\n"
        "try:\n    runpy.run_module('oscsync', run_name='__main__')\n"
        "except SystemExit: pass\n"
        "heavy = [m for m in ('numpy', 'sounddevice', 'matplotlib', 'playsound',"
        " 'pythonosc', 'oscsync.net.udp', 'zeroconf', 'link', 'aalink') if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "Usage: oscsync" in out.stdout
    assert "HEAVY []" in out.stdout


def test_readmes_command_table_has_every_command() -> None:
    """Issue 30 item 10: the table lacked sequence, record, replay and peers."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `oscsync ")]
    listed = {name for row in rows for name in re.findall(r"(?:`oscsync |/ `)([a-z]+)", row)}
    assert set(COMMANDS) - listed == set()
