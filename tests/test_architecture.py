"""The layers hold: the CLI only parses and prints (issue #12, item 1; docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

import oscsync

PACKAGE = Path(oscsync.__file__).parent
CLI = PACKAGE / "cli"

WIRED_BELOW_THE_CLI = {
    "Endpoint",
    "Scheduler",
    "ClockFollower",
    "ClockSync",
    "PeerClocks",
    "TickSender",
    "SequenceSender",
    "MetronomeListener",
    "SequenceListener",
}
"""What a session (apps/) builds and wires; a command calls the session instead."""


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _cli_trees() -> list[tuple[str, ast.Module]]:
    files = sorted(CLI.glob("*.py"))
    assert len(files) > 10, f"expected the CLI modules in {CLI}"
    return [(path.name, ast.parse(path.read_text(encoding="utf-8"))) for path in files]


def _session_wiring(tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _called_name(node) in WIRED_BELOW_THE_CLI:
            found.append(f"line {node.lineno}: {_called_name(node)}(...)")
        if isinstance(node, ast.ClassDef) and "session" in node.name.lower():
            found.append(f"line {node.lineno}: class {node.name}")
    return found


def test_cli_builds_no_session_parts_and_defines_no_session_classes() -> None:
    wiring = {name: found for name, tree in _cli_trees() if (found := _session_wiring(tree))}
    assert wiring == {}


def test_the_architecture_check_sees_a_command_that_wires_its_own_endpoint() -> None:
    # The check above must be able to fail: the shape issue #12 found in cli/metronome.py.
    wired = ast.parse(
        "class _Session:\n"
        "    pass\n"
        "def listen():\n"
        "    endpoint = Endpoint(listen)\n"
        "    scheduler = sched.Scheduler(clock)\n"
    )
    assert _session_wiring(wired) == [
        "line 1: class _Session",
        "line 4: Endpoint(...)",
        "line 5: Scheduler(...)",
    ]
