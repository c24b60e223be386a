"""The layers hold (issues #12 and #31; docs/architecture.md, "The layers").

1. No import circle, at any level: between modules and between packages. Every import counts:
   at module level, inside a function, and under ``if TYPE_CHECKING:`` (a type two modules need
   from each other belongs in a module below both).
2. The packages are layered (:data:`LAYERS`): a package or top-level module imports only from the
   rows below its own row. A new module inside a package follows its package's row; a new
   top-level module or package must be given a row.
3. ``oscsync/__init__.py`` is the face, not a layer: it names everything (lazily, or for type
   checkers) and nothing inside oscsync imports from it but ``__version__``.
4. docs/architecture.md draws :data:`LAYERS` as they are here, and its "which module owns which
   concept" table names only modules that exist and every module (or its package).
5. The CLI only parses and prints: it builds no endpoint, scheduler, clock pinger or follower,
   sender or listener, and defines no session class.

Each failure names the import (module, line, target) and the rule it breaks.
"""

from __future__ import annotations

import ast
import itertools
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "src" / "oscsync"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
FACE = "oscsync"
"""The public face (``oscsync/__init__.py``)."""
FROM_THE_FACE = {"__version__"}
"""What a module inside oscsync may import from the face: defined before it imports anything."""

LAYERS: tuple[tuple[str, ...], ...] = (
    ("osc", "stats", "threads", "install", "lateness", "outfile"),
    ("clock", "terminal"),
    ("realtime",),
    ("net", "scheduler", "audio"),
    ("sync", "discovery", "files"),
    ("apps",),
    ("cli",),
    ("__main__",),
)
"""The units of oscsync (its packages and top-level modules), bottom row first. A unit imports only
from units in rows below its own; units side by side in a row know nothing of each other. The
picture in docs/architecture.md shows these rows (test_the_picture_shows_the_layers)."""


# -- the import graph ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Import:
    """One import of an oscsync module by another, where it is written."""

    source: str
    target: str
    line: int
    name: str | None = None
    """What ``from PACKAGE import NAME`` took from a package (the face): NAME."""
    type_only: bool = False

    def where(self) -> str:
        kind = " (under TYPE_CHECKING)" if self.type_only else ""
        return f"{self.source} (line {self.line}) imports {self.target}{kind}"


def _module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    marked: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for inner in node.body:
                marked.update(id(n) for n in ast.walk(inner))
    return marked


def _containing_module(target: str, modules: set[str]) -> str | None:
    while target and target not in modules:
        target = target.rpartition(".")[0]
    return target or None


def imports_of(name: str, path: Path, modules: set[str]) -> list[Import]:
    """Every import of an oscsync module written in module ``name`` (at ``path``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    type_only = _type_checking_nodes(tree)
    found: list[Import] = []

    def add(target: str, node: ast.stmt, imported: str | None = None) -> None:
        module = _containing_module(target, modules)
        if module is not None and module != name:
            found.append(Import(name, module, node.lineno, imported, id(node) in type_only))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in modules:
                    add(full, node)
                else:
                    add(base, node, alias.name)
    return found


def all_imports(package: Path = PACKAGE) -> list[Import]:
    paths = {_module_name(p, package): p for p in sorted(package.rglob("*.py"))}
    modules = set(paths)
    return [found for name, path in paths.items() for found in imports_of(name, path, modules)]


def _allowed_from_the_face(edge: Import) -> bool:
    return edge.target == FACE and edge.name in FROM_THE_FACE


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the modules it imports (every import; ``__version__`` from the face aside)."""
    graph: dict[str, set[str]] = {_module_name(p, package): set() for p in package.rglob("*.py")}
    for edge in all_imports(package):
        if not _allowed_from_the_face(edge):
            graph[edge.source].add(edge.target)
    return graph


def unit_of(module: str) -> str:
    """The package (``net``) or top-level module (``scheduler``) a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACE


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    units: dict[str, set[str]] = {}
    for source, targets in graph.items():
        units.setdefault(unit_of(source), set()).update(
            unit_of(t) for t in targets if unit_of(t) != unit_of(source)
        )
    return units


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle once, as a path that starts and ends on the same node."""
    cycles: list[list[str]] = []
    seen: set[frozenset[str]] = set()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                if frozenset(cycle) not in seen:
                    seen.add(frozenset(cycle))
                    cycles.append(cycle)
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return cycles


# -- the rules ----------------------------------------------------------------------------------


def _row_names(row: tuple[str, ...]) -> str:
    return ", ".join(row)


def layering_violations(
    imports: list[Import], layers: tuple[tuple[str, ...], ...] = LAYERS
) -> list[str]:
    """One line per import that breaks the layering or the face's rule, naming both."""
    row_of = {unit: index for index, row in enumerate(layers) for unit in row}
    problems: list[str] = []
    unplaced: set[str] = set()
    for edge in imports:
        source, target = unit_of(edge.source), unit_of(edge.target)
        if target == FACE:
            if source != FACE and not _allowed_from_the_face(edge):
                what = f"{edge.name} from it" if edge.name else "it"
                problems.append(
                    f"{edge.where()}: takes {what}, but oscsync/__init__.py is the public face "
                    f"and a module inside oscsync may import only {sorted(FROM_THE_FACE)} from "
                    f"it; import the name from the module it lives in"
                )
            continue
        if source in (FACE, target):
            continue
        for unit in (source, target):
            if unit not in row_of and unit not in unplaced:
                unplaced.add(unit)
                problems.append(
                    f"oscsync.{unit} has no row in LAYERS (tests/test_architecture.py): give it "
                    f"one above every unit it imports and below every unit that imports it, and "
                    f"draw it in the picture in docs/architecture.md"
                )
        if source not in row_of or target not in row_of:
            continue
        if row_of[target] >= row_of[source]:
            side = "beside" if row_of[target] == row_of[source] else "above"
            below = [u for row in layers[: row_of[source]] for u in row]
            problems.append(
                f"{edge.where()}: {target} is {side} {source} in LAYERS, and {source} may import "
                f"only from the rows below it ({', '.join(below) or 'nothing'}); move the shared "
                f"code down, or the importing code up"
            )
    return problems


def _cycle_lines(graph: dict[str, set[str]], imports: list[Import]) -> list[str]:
    first_line = {}
    for edge in imports:
        first_line.setdefault((edge.source, edge.target), edge)
    lines = []
    for cycle in find_cycles(graph):
        steps = [
            first_line[(a, b)].where() if (a, b) in first_line else f"{a} imports {b}"
            for a, b in itertools.pairwise(cycle)
        ]
        lines.append(" -> ".join(cycle) + ": " + "; ".join(steps))
    return lines


def test_no_import_cycle_between_modules() -> None:
    graph = import_graph()
    assert "oscsync.net.udp" in graph and "oscsync.cli.main" in graph
    cycles = _cycle_lines(graph, all_imports())
    assert not cycles, (
        "import cycles (every import counts, TYPE_CHECKING ones too: move the shared types "
        "down):\n" + "\n".join(cycles)
    )


def test_no_import_cycle_between_packages() -> None:
    cycles = find_cycles(package_graph(import_graph()))
    assert not cycles, "package cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_every_import_follows_the_layers_and_none_takes_more_than_the_version_from_the_face() -> (
    None
):
    problems = layering_violations(all_imports())
    assert not problems, "\n".join(problems)


def test_every_unit_of_oscsync_has_a_row_and_every_row_names_a_unit() -> None:
    units = {unit_of(_module_name(p, PACKAGE)) for p in PACKAGE.rglob("*.py")} - {FACE}
    placed = {unit for row in LAYERS for unit in row}
    assert units - placed == set(), (
        "give these a row in LAYERS (tests/test_architecture.py) and draw them in the picture in "
        "docs/architecture.md"
    )
    assert placed - units == set(), "LAYERS names units that do not exist"


def test_the_transport_does_not_import_the_clock_protocol() -> None:
    graph = import_graph()
    for module in ("oscsync.net.udp", "oscsync.net.core", "oscsync.osc.routing"):
        assert "oscsync.sync.ping" not in graph[module], module


# -- the checks can fail --------------------------------------------------------------------------


def _write(package: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = package / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_cycle_finder_counts_imports_in_functions_and_under_type_checking(
    tmp_path: Path,
) -> None:
    package = tmp_path / "oscsync"
    _write(
        package,
        {
            "__init__.py": "",
            "a.py": "def f():\n    from oscsync import b\n",
            "b.py": "from oscsync.c import thing\n",
            "c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import oscsync.a\n",
            "d.py": "import oscsync.a\n",
        },
    )
    graph = import_graph(package)
    assert graph["oscsync.d"] == {"oscsync.a"}
    assert find_cycles(graph) == [["oscsync.a", "oscsync.b", "oscsync.c", "oscsync.a"]]
    lines = _cycle_lines(graph, all_imports(package))
    assert lines == [
        "oscsync.a -> oscsync.b -> oscsync.c -> oscsync.a: oscsync.a (line 2) imports oscsync.b; "
        "oscsync.b (line 1) imports oscsync.c; "
        "oscsync.c (line 3) imports oscsync.a (under TYPE_CHECKING)"
    ]


def test_the_layer_check_names_the_import_and_the_rule(tmp_path: Path) -> None:
    package = tmp_path / "oscsync"
    _write(
        package,
        {
            "__init__.py": "__version__ = '1'\nfrom typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from oscsync.net.udp import Endpoint\n",
            "osc/__init__.py": "",
            "osc/codec.py": "from oscsync.net import udp\n",  # up a row
            "net/__init__.py": "",
            "net/udp.py": "from oscsync import __version__\nfrom oscsync.osc import codec\n",
            "net/tcp.py": "from oscsync.clock import Clock\n",  # beside
            "net/peers.py": "from oscsync import Endpoint\n",  # through the face
            "clock.py": "",
            "extra.py": "from oscsync.osc import codec\n",  # a new unit, not placed
        },
    )
    layers = (("osc",), ("net", "clock"))
    graph = import_graph(package)
    assert find_cycles(package_graph(graph)) == [
        ["osc", "net", "osc"],
        ["net", "oscsync", "net"],  # Endpoint from the face, which names net.udp
    ]
    assert layering_violations(all_imports(package), layers) == [
        "oscsync.extra has no row in LAYERS (tests/test_architecture.py): give it one above every "
        "unit it imports and below every unit that imports it, and draw it in the picture in "
        "docs/architecture.md",
        "oscsync.net.peers (line 1) imports oscsync: takes Endpoint from it, but "
        "oscsync/__init__.py is the public face and a module inside oscsync may import only "
        "['__version__'] from it; import the name from the module it lives in",
        "oscsync.net.tcp (line 1) imports oscsync.clock: clock is beside net in LAYERS, and net "
        "may import only from the rows below it (osc); move the shared code down, or the "
        "importing code up",
        "oscsync.osc.codec (line 1) imports oscsync.net.udp: net is above osc in LAYERS, and osc "
        "may import only from the rows below it (nothing); move the shared code down, or the "
        "importing code up",
    ]


# -- the picture and the table in docs/architecture.md ------------------------------------------


def _section(title: str) -> str:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def drawn_layers(section: str) -> list[tuple[str, ...]]:
    """The rows of the picture (``names │ what they hold``), bottom row first, face left out."""
    picture = section.split("```")[1]
    rows = []
    for line in picture.splitlines():
        names, bar, _ = line.partition("│")
        if not bar or "__init__.py" in names or not names.strip(" ─┼"):
            continue
        rows.append(tuple(name.rstrip("/") for name in names.split()))
    return rows[::-1]


def test_the_picture_shows_the_layers() -> None:
    assert drawn_layers(_section("The layers")) == list(LAYERS)


OWNER_TABLE = "Which module owns which concept"


def owned_paths(section: str) -> set[str]:
    """Every module (``net/udp.py``) or package (``cli/``) the table's module column names."""
    paths: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if len(cells) >= 4 and not set(cells[2].strip()) <= {"-", ":"}:
            paths.update(re.findall(r"`([\w/.]+(?:\.py|/))`", cells[2]))
    return paths


def test_the_module_table_names_every_module_and_only_modules_that_exist() -> None:
    named = owned_paths(_section(OWNER_TABLE))
    assert len(named) > 20
    missing = sorted(p for p in named if not (PACKAGE / p).exists())
    assert missing == [], f"docs/architecture.md, {OWNER_TABLE}: not under src/oscsync"
    modules = {
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if p.name != "__init__.py" or p.parent == PACKAGE
    }
    unnamed = sorted(
        m for m in modules if m not in named and f"{m.rpartition('/')[0]}/" not in named
    )
    assert unnamed == [], f"docs/architecture.md, {OWNER_TABLE}: add a row for these"


def test_the_table_check_reads_module_and_package_cells() -> None:
    section = (
        "| concept | module |\n|---|---|\n| a | `net/udp.py`, `net/core.py` |\n"
        "| b | `cli/` (`cli/params.py` too) |\n| not a cell `x.py` |\n"
    )
    assert owned_paths(section) == {"net/udp.py", "net/core.py", "cli/", "cli/params.py"}


def test_each_package_says_what_it_owns_and_what_it_may_import() -> None:
    silent = []
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        if "may import" not in docstring.lower():
            silent.append(init.relative_to(PACKAGE).as_posix())
    assert silent == [], "say in the package's docstring what it owns and what it may import"


def test_every_package_and_module_has_a_docstring() -> None:
    undocumented = sorted(
        p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*.py")
        if not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))
    )
    assert undocumented == []


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
