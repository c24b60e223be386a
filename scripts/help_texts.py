"""Print the ``--help`` of every oscsync command and subcommand, to diff two trees.

A refactoring keeps every help text byte-identical; check it against another checkout with
``PYTHONPATH``::

    git worktree add /tmp/ref main
    PYTHONPATH=/tmp/ref/src .venv/bin/python scripts/help_texts.py > /tmp/before.txt
    PYTHONPATH=src .venv/bin/python scripts/help_texts.py > /tmp/after.txt
    cmp /tmp/before.txt /tmp/after.txt
"""

from __future__ import annotations

import click
from click.testing import CliRunner

from oscsync.cli.main import cli


def print_help(command: click.Command, path: list[str]) -> None:
    result = CliRunner().invoke(cli, [*path, "--help"], terminal_width=100)
    print(f"===== oscsync {' '.join(path)} --help (exit {result.exit_code})")
    print(result.output)
    if isinstance(command, click.Group):
        context = click.Context(command)
        for name in command.list_commands(context):
            sub = command.get_command(context, name)
            if sub is not None:
                print_help(sub, [*path, name])


if __name__ == "__main__":
    print_help(cli, [])
