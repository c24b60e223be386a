"""The layers hold (issue #12; docs/architecture.md).

The module graph of src/oscsync has no import cycle (item 2): every import counts, at module
level or inside a function; only ``if TYPE_CHECKING:`` imports are left out (they never run). A
cycle is reported with the modules that make it. And the CLI only parses and prints (item 1): it
builds no endpoint, scheduler, clock pinger or follower, sender or listener, and defines no
session class.
"""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SOURCE / "oscsync"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SOURCE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                skipped.update(id(n) for n in ast.walk(inner))
    return skipped


def _imported(name: str, path: Path, modules: set[str]) -> set[str]:
    """The oscsync modules that module ``name`` (at ``path``) imports when it runs."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    skipped = _type_checking_nodes(tree)
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in modules else base)
    found = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    paths = {_module_name(p): p for p in package.rglob("*.py")}
    modules = set(paths)
    return {name: _imported(name, path, modules) for name, path in paths.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle once, as a path that starts and ends on the same module."""
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
            elif target not in state:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)
    return cycles


def test_no_import_cycle_in_oscsync() -> None:
    graph = import_graph()
    assert "oscsync.net.udp" in graph and "oscsync.cli.main" in graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_the_transport_does_not_import_the_clock_protocol() -> None:
    graph = import_graph()
    for module in ("oscsync.net.udp", "oscsync.net.core", "oscsync.osc.routing"):
        assert "oscsync.sync.ping" not in graph[module], module


def test_the_cycle_finder_finds_function_level_cycles_and_skips_type_checking(
    tmp_path: Path,
) -> None:
    package = tmp_path / "oscsync"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from oscsync import b\n")
    (package / "b.py").write_text("from oscsync.c import thing\n")
    (package / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from oscsync import b\n"
        "import oscsync.a\n"
    )
    (package / "d.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from oscsync import a\n"
    )
    global SOURCE
    saved, SOURCE = SOURCE, tmp_path
    try:
        graph = import_graph(package)
    finally:
        SOURCE = saved
    assert graph["oscsync.d"] == set()
    assert find_cycles(graph) == [["oscsync.a", "oscsync.b", "oscsync.c", "oscsync.a"]]


# -- the CLI wires nothing (item 1) ------------------------------------------------------------

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
