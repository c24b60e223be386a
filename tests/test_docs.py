"""The workshop guide in ``docs/``: every ``oscsync`` command it shows parses, the short loopback
ones run for real, and the generated CLI reference covers every command and option.

What counts as "shown": each line of a fenced ``sh``/``bash``/``shell`` block, each ``$ ``-line of
a ``console`` block, and each inline code span that starts with ``oscsync `` — in ``docs/**/*.md``
and in the CLI reference page that ``scripts/mkdocs_hooks.py`` generates at build time (so the
``Examples:`` epilogs of ``--help`` are checked too). Output pasted from real runs goes in
``text`` blocks (or the non-``$`` lines of a ``console`` block) and is not parsed. A command for a
feature that has not landed yet must not be shown this way: put it in a ``text`` block under a
"not yet available" note.

Parsing is strict (``make_context`` without resilient parsing): unknown options, bad values and
missing arguments fail, so examples use real values (``127.0.0.1:9000``), not placeholders.
Running is limited to commands that finish quickly and only touch loopback: their ports are
remapped to free ones so a test never talks to a real workshop session on 9000/9001.

The strict ``mkdocs build`` (broken links, missing images) runs in ``make test``, next to pytest.
"""

from __future__ import annotations

import contextlib
import doctest
import importlib
import importlib.util
import io
import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import click
import pytest
from click.testing import CliRunner

from conftest import REPO, LineReader, free_udp_port
from oscsync.apps.endpoints import open_endpoint
from oscsync.cli.main import COMMANDS, cli
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint
from oscsync.osc.routing import Received
from waiting import wait_until

DOCS = REPO / "docs"
SHELL_LANGS = {"sh", "bash", "shell", "console"}
GENERATED = "reference/cli.md (generated)"
Spawn = Callable[..., subprocess.Popen[str]]


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mkdocs_hooks", REPO / "scripts/mkdocs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = load_hooks()


# --- extraction ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shown:
    """One ``oscsync`` command as the docs show it."""

    page: str
    line: int
    argv: tuple[str, ...]  # after "oscsync"
    stdin: str | None = None  # what `echo ... |` / `printf ... |` pipes into it
    inline: bool = False  # an inline code span in prose, not a code block

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: oscsync {shlex.join(self.argv)}"


_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*\{?\s*\.?(?P<lang>[\w-]*)")
_INLINE = re.compile(r"(?<!`)`(oscsync [^`]+)`(?!`)")
_SEPARATORS = {"|", "||", "&&", ";", "&"}


def code_blocks(text: str) -> Iterator[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced block; indentation removed."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, indent = match.group("fence"), len(match.group("indent"))
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][indent:])
            j += 1
        yield match.group("lang").lower(), i + 2, body
        i = j + 1


def prose_lines(text: str) -> Iterator[tuple[int, str]]:
    """Lines outside fenced blocks, with their line numbers."""
    inside: str | None = None
    for number, line in enumerate(text.splitlines(), 1):
        match = _FENCE.match(line)
        if inside is None and match:
            inside = match.group("fence")
        elif inside is not None and line.strip().startswith(inside):
            inside = None
        elif inside is None:
            yield number, line


def _echo_output(segment: list[str]) -> str | None:
    if segment and segment[0] == "echo":
        return " ".join(segment[1:]) + "\n"
    if segment and segment[0] == "printf" and len(segment) > 1:
        return str(segment[1].encode().decode("unicode_escape"))
    return None


def commands_in_line(line: str) -> Iterator[tuple[tuple[str, ...], str | None]]:
    """(argv after "oscsync", piped stdin) for each oscsync command in one shell line."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    segments: list[list[str]] = [[]]
    joins: list[str] = []
    for token in tokens:
        if token in _SEPARATORS:
            segments.append([])
            joins.append(token)
        else:
            segments[-1].append(token)
    for index, segment in enumerate(segments):
        if segment[:1] == ["oscsync"]:
            argv = tuple(segment[1:])
        elif segment[:3] in (["python", "-m", "oscsync"], ["python3", "-m", "oscsync"]):
            argv = tuple(segment[3:])
        else:
            continue
        stdin = None
        if index > 0 and joins[index - 1] == "|":
            stdin = _echo_output(segments[index - 1])
        yield argv, stdin


def commands_in_page(page: str, text: str) -> Iterator[Shown]:
    for lang, first, body in code_blocks(text):
        if lang not in SHELL_LANGS:
            continue
        pending, start = "", 0
        for offset, raw in enumerate(body):
            line = raw.rstrip()
            if not pending:
                start = offset
                if lang == "console":
                    if not line.startswith("$ "):
                        continue  # output
                    line = line[2:]
            if line.endswith("\\"):
                pending += line[:-1] + " "
                continue
            line, pending = pending + line, ""
            for argv, stdin in commands_in_line(line):
                yield Shown(page, first + start, argv, stdin)
    for number, line in prose_lines(text):
        for match in _INLINE.finditer(line):
            for argv, stdin in commands_in_line(match.group(1)):
                yield Shown(page, number, argv, stdin, inline=True)


def pages() -> dict[str, str]:
    found = {str(p.relative_to(DOCS)): p.read_text("utf-8") for p in sorted(DOCS.rglob("*.md"))}
    found[GENERATED] = HOOKS.render()
    return found


def all_shown() -> list[Shown]:
    return [shown for page, text in pages().items() for shown in commands_in_page(page, text)]


SHOWN = all_shown()


# --- parsing ------------------------------------------------------------------------------


@dataclass
class Parsed:
    path: list[str] = field(default_factory=list)  # e.g. ["timetag", "now"]
    params: dict[str, object] = field(default_factory=dict)  # of the innermost command
    root: dict[str, object] = field(default_factory=dict)  # the group's own options
    exited: bool = False  # --help / --version


def parse(argv: Sequence[str]) -> Parsed:
    """Parse ``oscsync ARGV`` exactly as a run would (types converted), without running it.

    Raises ``click.UsageError`` (unknown option, bad value, missing argument, no such command).
    """
    parsed = Parsed()
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            ctx = cli.make_context("oscsync", list(argv))
            parsed.root = dict(ctx.params)
            command: click.Command = cli
            while isinstance(command, click.Group):
                rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
                if not rest:
                    break
                name, sub, rest = command.resolve_command(ctx, rest)
                assert name is not None and sub is not None
                parsed.path.append(name)
                ctx = sub.make_context(name, rest, parent=ctx)
                command = sub
            parsed.params = dict(ctx.params)
        except click.exceptions.Exit as exc:
            if exc.exit_code != 0:
                raise
            parsed.exited = True
            return parsed
    if ctx.ignore_unknown_options:
        # `send` lets negative numbers through as arguments; a misspelt --option would slip
        # through the same way, so look for it in the arguments.
        for value in parsed.params.values():
            if isinstance(value, tuple):
                for item in value:
                    if isinstance(item, str) and re.fullmatch(r"--?[a-zA-Z][\w-]*", item):
                        raise click.NoSuchOption(item)
    return parsed


def is_command_path(argv: Sequence[str]) -> bool:
    """True if ``argv`` is only command names, e.g. ``["metronome", "send"]``."""
    ctx = click.Context(cli, info_name="oscsync")
    command: click.Command | None = cli
    for name in argv:
        if not isinstance(command, click.Group):
            return False
        command = command.get_command(ctx, name)
        if command is None:
            return False
    return True


def test_docs_show_commands_from_every_page_kind() -> None:
    # Guards the extraction itself: a regex that silently matched nothing would pass every
    # parse test below.
    by_page = {shown.page for shown in SHOWN}
    assert GENERATED in by_page
    assert "getting-started.md" in by_page
    assert len(SHOWN) >= 20
    assert any(shown.stdin for shown in SHOWN) or "chat" not in COMMANDS


@pytest.mark.parametrize("shown", SHOWN, ids=str)
def test_every_command_shown_in_the_docs_parses(shown: Shown) -> None:
    if shown.argv and shown.argv[0] in ("-h", "--help", "-V", "--version"):
        return
    name = next((a for a in shown.argv if not a.startswith("-")), None)
    assert name is not None, f"{shown}: no subcommand"
    if shown.inline and is_command_path(shown.argv):
        return  # prose naming a command ("`oscsync chat` prints..."): it exists, that is all
    try:
        parse(shown.argv)
    except click.UsageError as exc:
        hint = "" if name in COMMANDS else " (not registered: show it in a `text` block as pending)"
        pytest.fail(f"{shown}\n  {exc.format_message()}{hint}")


def test_parse_rejects_what_a_typo_would_break() -> None:
    with pytest.raises(click.NoSuchOption):
        parse(["dump", "--jsnol"])
    with pytest.raises(click.BadParameter):
        parse(["send", "127.0.0.1:99999", "/x"])
    with pytest.raises(click.NoSuchOption):
        parse(["send", "127.0.0.1:9000", "/x", "--inn", "0.25"])
    with pytest.raises(click.UsageError):
        parse(["nosuchcommand"])
    assert parse(["send", "127.0.0.1:9000", "/x", "-1", "-0.5"]).params["args"] == ("-1", "-0.5")
    assert parse(["--clock-skew", "0.2", "timetag", "now", "-f", "hex"]).path == ["timetag", "now"]
    assert parse(["send", "--help"]).exited
    assert is_command_path(["timetag", "now"])
    assert not is_command_path(["timetag", "nope"])
    assert not is_command_path(["send", "127.0.0.1:9000"])


def test_extraction_reads_blocks_pipes_and_inline_code() -> None:
    text = "\n".join(
        [
            "Run `oscsync dump --count 1` first.",
            "```console",
            "$ oscsync send 127.0.0.1:9001 /a \\",
            "    1 2",
            "20:12:42.156768  127.0.0.1:55945  /a ,ii 1 2",
            "```",
            "```sh",
            'echo "hi there" | oscsync chat --peer 127.0.0.1:9000  # comment',
            "```",
            "```text",
            "oscsync not-a-command",
            "```",
        ]
    )
    got = [(s.line, s.argv, s.stdin) for s in commands_in_page("x.md", text)]
    assert got == [
        (3, ("send", "127.0.0.1:9001", "/a", "1", "2"), None),
        (8, ("chat", "--peer", "127.0.0.1:9000"), "hi there\n"),
        (1, ("dump", "--count", "1"), None),
    ]


# --- the generated CLI reference ------------------------------------------------------------


def test_cli_reference_has_every_command_and_option() -> None:
    page = HOOKS.render()
    # "## oscsync send" ... up to the next heading: that command's section.
    parts = re.split(r"^#{2,4} (oscsync(?: [\w-]+)*)$", page, flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2], strict=True))
    root = click.Context(cli, info_name="oscsync", **cli.context_settings)
    seen = 0
    for path, command, ctx in HOOKS.walk(cli, root):
        title = " ".join(("oscsync", *path))
        assert title in sections, title
        section = sections[title]
        assert f"Usage: {title} " in section, title
        for param in command.get_params(ctx):
            if isinstance(param, click.Option) and not param.hidden:
                row = next(
                    (
                        line
                        for line in section.splitlines()
                        if line.startswith("| `") and param.opts[0] in line
                    ),
                    None,
                )
                assert row is not None, (title, param.opts)
        if command.help:
            first = command.help.split("\n", 1)[0].strip()
            assert HOOKS._code_spans(first) in section, (title, first)
        seen += 1
    assert seen >= len(COMMANDS)
    assert "```text\nUsage: oscsync send [OPTIONS] HOST:PORT|@NAME ADDRESS [ARGS]..." in page


def test_cli_reference_renders_help_as_literal_markdown() -> None:
    @click.command(epilog="\b\nExamples:\n  oscsync x --n 1   # one\n")
    @click.option("--n", default=2, show_default=True, help="A *star*, a <tag> and x_y_z.")
    def x(n: int) -> None:
        """First line.

        \b
        keep
          this layout
        """

    group = click.Group("oscsync", commands={"x": x})
    page = HOOKS.render(group)
    assert "| `--n INTEGER` | A \\*star\\*, a &lt;tag\\> and x\\_y\\_z.  \\[default: 2\\] |" in page
    assert "```text\nkeep\n  this layout\n```" in page
    assert "**Examples**\n\n```sh\noscsync x --n 1   # one\n```" in page


# --- running the short loopback ones for real ------------------------------------------------

_LOOPBACK = re.compile(r"^(127\.0\.0\.1|localhost|\[::1\]):(\d+)$")
_ANY_HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:]+\]|[\w.-]+):(\d+)$")
_LISTEN_OPTS = ("--listen", "-l")
_SCHEME = re.compile(
    r"^((?:osc\.)?(?:tcp|udp)(?:\+s(?:ize|lip))?://)(.*?)/?$"
)  # tcp://, tcp+size:// (#16, #28)


@dataclass
class Plan:
    argv: list[str]
    ports: dict[int, int]  # port shown in the docs -> free port used by the test
    tcp: set[int] = field(default_factory=set)  # the free ports that a tcp:// URL names


def loopback_plan(argv: Sequence[str]) -> Plan | None:
    """``argv`` with every loopback port remapped; None if it names any non-loopback address."""
    ports: dict[int, int] = {}
    tcp: set[int] = set()

    def remap(port: str) -> str:
        old = int(port)
        if old not in ports:
            ports[old] = free_udp_port()
        return str(ports[old])

    out: list[str] = []
    previous = ""
    for token in argv:
        value, prefix = token, ""
        if token.startswith("--") and "=" in token:
            prefix, value = token.split("=", 1)
            prefix += "="
        if value.startswith("@") or token == "--advertise":
            return None  # @NAME / --advertise need a partner found over mDNS: parse only
        if scheme := _SCHEME.match(value):
            prefix, value = prefix + scheme.group(1), scheme.group(2)
            if "tcp" in scheme.group(1) and (match := _LOOPBACK.match(value)):
                tcp.add(int(remap(match.group(2))))
        if match := _LOOPBACK.match(value):
            value = f"{match.group(1)}:{remap(match.group(2))}"
        elif _ANY_HOSTPORT.match(value):
            return None  # another machine, a multicast group or 0.0.0.0: never from a test
        elif previous in _LISTEN_OPTS and value.isdigit():
            value = remap(value)
        out.append(prefix + value)
        previous = token
    return Plan(out, ports, tcp)


def _peers(parsed: Parsed) -> list[HostPort]:
    """Every HOST:PORT a command sends to (all its address parameters but --listen)."""
    found: list[HostPort] = []
    for name, value in parsed.params.items():
        if name == "listen":
            continue
        values = value if isinstance(value, tuple) else (value,)
        found += [v for v in values if isinstance(v, HostPort)]
    return found


class Collector:
    """Loopback listeners on the remapped ports, recording what the command sends."""

    def __init__(self, ports: Sequence[int], tcp: set[int] | None = None) -> None:
        self.received: list[Received] = []
        self.endpoints = [
            open_endpoint(HostPort("127.0.0.1", port, "tcp" if port in (tcp or ()) else "udp"))
            for port in ports
        ]
        for endpoint in self.endpoints:
            endpoint.start(self.received.append)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        wait_until(
            lambda: len(self.received) >= count,
            timeout,
            f"{count} messages at the loopback listeners",
            state=lambda: [r.address for r in self.received],
        )
        return self.received

    def close(self) -> None:
        for endpoint in self.endpoints:
            endpoint.close()


def run_send(shown: Shown, parsed: Parsed, plan: Plan, spawn: Spawn) -> None:
    params = parsed.params
    repeat = int(params["repeat"])  # type: ignore[call-overload]
    peers = len(_peers(parsed))
    collector = Collector([port for port in plan.ports.values()], plan.tcp)
    try:
        result = CliRunner().invoke(cli, plan.argv)
        assert result.exit_code == 0, f"{shown}\n{result.output}"
        got = collector.wait_for(repeat * peers)
    finally:
        collector.close()
    assert [r.address for r in got] == [params["address"]] * repeat * peers, shown
    if params["ahead"] is not None or params["at"] is not None:
        assert all(r.timetag is not None for r in got), shown


def _probe_plain(tx: Endpoint, n: int) -> None:
    tx.send("/docs/probe", [n])


def _probe_tick(tx: Endpoint, n: int) -> None:
    tx.send("/tick", [n])


def _probe_bundle(tx: Endpoint, n: int) -> None:
    tx.send("/docs/probe", [n], timetag=tx.clock.now_timetag() + (1 << 32) // 20)  # +50 ms


def run_listener(shown: Shown, parsed: Parsed, plan: Plan, spawn: Spawn) -> None:
    """A listener with a --count (or --count 3 added): fed that many probes, it must exit 0
    having handled each one."""
    path, params = parsed.path, parsed.params
    name = path[-1]
    argv = [a for a in plan.argv if a not in ("-q", "--quiet")]
    at = argv.index(name) + 1
    count = params["count"]
    if count is None:
        argv += ["--count", "3"]
    probes = int(count or 3)  # type: ignore[call-overload]
    listen = params["listen"]
    assert isinstance(listen, HostPort)
    port = plan.ports.get(listen.port) or free_udp_port()
    if listen.port not in plan.ports:  # the default 9001: listen elsewhere
        argv[at:at] = ["--listen", f"127.0.0.1:{port}"]
    where = HostPort("127.0.0.1", port, listen.protocol)
    if path == ["metronome", "listen"]:
        argv += ["--audio", "none"] if params["audio_choice"].kind != "wav" else []  # type: ignore[attr-defined]
    proc = spawn(*argv)
    assert proc.stderr is not None and proc.stdout is not None
    LineReader(proc.stderr).wait_for(lambda line: f" on {where}" in line)
    probe = PROBES[tuple(path)]
    stdout = LineReader(proc.stdout)
    with open_endpoint(peers=[where]) as tx:
        for n in range(probes):
            probe(tx, n)
            # The next probe once this one is handled: order on the wire stays simple.
            stdout.wait_for(lambda line: True)
    assert proc.wait(10) == 0, shown
    lines = stdout.rest()
    out = "\n".join(lines)
    assert len(lines) == probes, (shown, out)
    if params.get("jsonl"):
        assert [json.loads(line)["args"] for line in lines] == [[n] for n in range(probes)]
    elif path == ["dump"]:
        assert all("/docs/probe ,i" in line for line in lines), out
    elif path == ["metronome", "listen"]:
        per_bar = params["beats_per_bar"]
        assert isinstance(per_bar, int)
        assert [line.split()[:4] for line in lines] == [
            ["tick", str(n), "beat", f"{n}*" if n % per_bar == 0 else str(n)] for n in range(probes)
        ], out
    else:  # timetag monitor
        assert all("headroom +" in line for line in lines), out


PROBES: dict[tuple[str, ...], Callable[[Endpoint, int], None]] = {
    ("dump",): _probe_plain,
    ("metronome", "listen"): _probe_tick,
    ("timetag", "monitor"): _probe_bundle,
}


def run_metronome_send(shown: Shown, parsed: Parsed, plan: Plan, spawn: Spawn) -> None:
    """Two ticks (a later --count wins), each received as /tick with its beat."""
    params = parsed.params
    argv = [*plan.argv, "--count", "2"]
    peers = len(_peers(parsed))
    collector = Collector(list(plan.ports.values()), plan.tcp)
    try:
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 0, f"{shown}\n{result.output}"
        got = collector.wait_for(2 * peers)
    finally:
        collector.close()
    per_bar = params["beats_per_bar"]
    assert isinstance(per_bar, int)
    assert sorted(r.args[0] for r in got) == sorted([k % per_bar for k in range(2)] * peers), shown
    assert {r.address for r in got} == {"/tick"}
    bundled = params["offset"] not in (0, 0.0)
    assert all((r.timetag is not None) == bundled for r in got), shown


def run_clock(shown: Shown, parsed: Parsed, plan: Plan, spawn: Spawn) -> None:
    """Against a loopback listener (every Endpoint answers clock pings): a small offset."""
    collector = Collector(list(plan.ports.values()), plan.tcp)
    try:
        result = CliRunner().invoke(cli, [*plan.argv, "--count", "4", "--json"])
    finally:
        collector.close()
    assert result.exit_code == 0, f"{shown}\n{result.output}"
    assert "offset" in result.output


def run_chat(shown: Shown, parsed: Parsed, plan: Plan, spawn: Spawn) -> None:
    params = parsed.params
    assert shown.stdin is not None
    argv = list(plan.argv)
    listen = params["listen"]
    assert isinstance(listen, HostPort)
    if listen.port not in plan.ports:  # the default 9001: listen elsewhere
        argv[argv.index("chat") + 1 : argv.index("chat") + 1] = ["--listen", "127.0.0.1:0"]
    peer_ports = [plan.ports[p.port] for p in _peers(parsed)]
    collector = Collector(peer_ports, plan.tcp)
    try:
        proc = spawn(*argv, stdin=subprocess.PIPE)
        assert proc.stdin is not None
        proc.stdin.write(shown.stdin)
        proc.stdin.close()
        proc.stdin = None
        assert proc.wait(10) == 0, shown
        lines = [line for line in shown.stdin.splitlines() if line]
        got = collector.wait_for(len(lines) * len(peer_ports))
    finally:
        collector.close()
    assert sorted(" ".join(map(str, r.args)) for r in got) == sorted(lines * len(peer_ports))
    assert {r.address for r in got} == {"/chat"}


def run_timetag_now(shown: Shown, parsed: Parsed, plan: Plan, spawn: Spawn) -> None:
    result = CliRunner().invoke(cli, plan.argv)
    assert result.exit_code == 0, f"{shown}\n{result.output}"
    fmt = parsed.params["fmt"]
    lines = result.output.splitlines()
    assert len(lines) == (4 if fmt == "all" else 1), result.output


RUNNERS: dict[tuple[str, ...], Callable[[Shown, Parsed, Plan, Spawn], None]] = {
    ("send",): run_send,
    ("dump",): run_listener,
    ("chat",): run_chat,
    ("timetag", "now"): run_timetag_now,
    ("timetag", "monitor"): run_listener,
    ("metronome", "listen"): run_listener,
    ("metronome", "send"): run_metronome_send,
    ("clock",): run_clock,
}


def runnable(shown: Shown) -> tuple[Parsed, Plan] | None:
    """The parse and the port plan of a command that is quick and loopback-only, else None."""
    try:
        parsed = parse(shown.argv)
    except click.UsageError:
        return None  # reported by the parse test
    if parsed.exited or tuple(parsed.path) not in RUNNERS:
        return None
    plan = loopback_plan(shown.argv)
    if plan is None:
        return None
    params = parsed.params
    if parsed.path == ["send"]:
        # Quick only: at most 2 s of repeats.
        repeat, interval = params["repeat"], params["interval"]
        assert isinstance(repeat, int) and isinstance(interval, float)
        if (repeat - 1) * interval > 2.0:
            return None
    if parsed.path == ["chat"] and shown.stdin is None:
        return None  # interactive
    if "listen" in params and "count" in params and (params.get("duration") or 0) > 3:  # type: ignore[operator]
        return None
    if parsed.path == ["metronome", "listen"] and (params["sync"] or params["sync_peer"]):
        return None  # needs a leader that answers clock pings: parse only
    return parsed, plan


# The same command shown on several pages runs once.
RUNNABLE = list(
    {(s.argv, s.stdin): s for s in reversed(SHOWN) if runnable(s) is not None}.values()
)[::-1]


def test_some_documented_commands_are_run_for_real() -> None:
    kinds = {tuple(parse(shown.argv).path) for shown in RUNNABLE}
    assert {("send",), ("dump",), ("timetag", "now")} <= kinds


@pytest.mark.parametrize("shown", RUNNABLE, ids=str)
def test_short_loopback_commands_run_for_real(
    shown: Shown, spawn: Spawn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # files a command writes (--log, wav:) land here
    plan_and_parse = runnable(shown)
    assert plan_and_parse is not None
    parsed, plan = plan_and_parse
    RUNNERS[tuple(parsed.path)](shown, parsed, plan, spawn)


def test_loopback_plan_never_targets_other_machines() -> None:
    assert loopback_plan(["send", "192.168.1.20:9000", "/x"]) is None
    assert loopback_plan(["dump", "--listen", "0.0.0.0:9001"]) is None
    assert loopback_plan(["send", "239.0.0.1:9001", "/x"]) is None
    plan = loopback_plan(["send", "tcp://127.0.0.1:9001", "/x"])
    assert plan is not None and plan.argv == ["send", f"tcp://127.0.0.1:{plan.ports[9001]}", "/x"]
    assert plan.tcp == {plan.ports[9001]}
    assert loopback_plan(["send", "osc.tcp://192.168.1.20:9000", "/x"]) is None
    plan = loopback_plan(["chat", "--listen", "9000", "--peer=127.0.0.1:9001"])
    assert plan is not None
    assert plan.argv == [
        "chat",
        "--listen",
        str(plan.ports[9000]),
        f"--peer=127.0.0.1:{plan.ports[9001]}",
    ]


def test_docs_pages_exist_in_nav() -> None:
    # mkdocs --strict only reports nav entries without a file; this is the other direction:
    # a page written but forgotten in mkdocs.yml would be built yet unreachable from the menu.
    nav = (REPO / "mkdocs.yml").read_text("utf-8")
    for page in pages():
        if page != GENERATED:
            assert page in nav, f"docs/{page} is not in mkdocs.yml's nav"


if __name__ == "__main__":  # list what the docs show: python tests/test_docs.py
    for shown in SHOWN:
        mark = "run " if shown in RUNNABLE else "parse"
        print(mark, shown, file=sys.stdout)
    print(Path(__file__).name, len(SHOWN), "shown,", len(RUNNABLE), "run")


def test_a_listener_summary_shown_after_a_logging_command_says_logged() -> None:
    """Issue 30 item 10: example 3 showed `metronome listen --log ticks.jsonl --count 8` with a
    summary line that lacked the `logged 8` the command prints."""
    fence = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.M | re.S)
    checked = 0
    for page in sorted((REPO / "docs").glob("*.md")):
        logging = False
        for kind, body in fence.findall(page.read_text(encoding="utf-8")):
            if kind in ("sh", "console") and "metronome listen" in body:
                logging = "--log" in body.split("metronome listen", 1)[1].split("\n", 1)[0]
            elif kind == "text" and logging:
                for line in map(str.strip, body.splitlines()):
                    if line.startswith("metronome: ticks "):
                        checked += 1
                        ticks = line.split()[2]
                        assert f"logged {ticks}" in line, f"{page.name}: {line}"
                logging = False
    assert checked


# The first line a command that keeps time prints after the notice (cli/runtime keep_time).
_STARTS_AFTER_THE_NOTICE = re.compile(
    r"^(listening on |recording on |monitoring timetags on |replay: \d+ datagrams,|sweep: "
    r"|peer \S+: \d+ of \d+ pings answered)"
)


def test_a_real_run_shown_from_its_start_has_the_real_time_notice_first() -> None:
    """Every command that keeps time prints "real-time priority: ..." before anything else
    (issue 31); most output blocks showing a run from its start left it out. Those blocks are
    the ones that show the command's first line of its own (``listening on ...``)."""
    checked = 0
    for page in sorted(DOCS.glob("*.md")):
        for lang, number, body in code_blocks(page.read_text(encoding="utf-8")):
            if lang not in ("text", "console"):
                continue
            for i, line in enumerate(body):
                if _STARTS_AFTER_THE_NOTICE.match(line):
                    checked += 1
                    before = [ln for ln in body[:i] if ln.startswith("real-time priority: ")]
                    assert before, f"{page.name}:{number + i}: {line}"
    assert checked >= 10


# --- the Python API page (issue 28) ---------------------------------------------------------

API_PAGE = DOCS / "python-api.md"
DOCTEST_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def pycon_examples(text: str) -> str:
    """Every ``pycon`` block of a page, in order, as one doctest text (a blank line ends each
    block's expected output, as the closing fence does on the page)."""
    return "\n\n".join("\n".join(body) for lang, _, body in code_blocks(text) if lang == "pycon")


def run_doctest(text: str, name: str, globs: dict[str, object]) -> doctest.TestResults:
    test = doctest.DocTestParser().get_doctest(text, globs, name, name, 0)
    runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
    out = io.StringIO()
    runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()
    return runner.summarize(verbose=False)


def test_every_example_on_the_python_api_page_runs() -> None:
    text = API_PAGE.read_text("utf-8")
    examples = pycon_examples(text)
    assert examples.count(">>>") >= 30  # the extraction found the tutorial
    results = run_doctest(examples, "python-api.md", {})
    assert results.attempted >= 30


def _public_objects() -> dict[str, object]:
    import oscsync

    return {name: getattr(oscsync, name) for name in oscsync.__all__}


def test_every_example_in_the_api_reference_runs() -> None:
    """The reference is generated from these docstrings: each ``>>>`` in them runs here."""
    import oscsync

    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = finder.find(oscsync, "oscsync")
    for name, value in _public_objects().items():
        if callable(value):
            tests += finder.find(value, f"oscsync.{name}", globs={})
        module = importlib.import_module(getattr(value, "__module__", "oscsync"))
        if module.__doc__ and ">>>" in module.__doc__:
            tests += finder.find(module.__doc__, module.__name__, globs={})
    ran = 0
    seen: set[str] = set()
    for test in tests:
        if not test.examples or test.name in seen:
            continue
        seen.add(test.name)
        runner = doctest.DocTestRunner(optionflags=DOCTEST_FLAGS)
        out = io.StringIO()
        runner.run(test, out=out.write)
        assert runner.failures == 0, out.getvalue()
        ran += len(test.examples)
    assert ran >= 25, sorted(seen)


def test_the_reference_lists_every_public_name_and_no_private_path() -> None:
    text = API_PAGE.read_text("utf-8")
    rendered = set(re.findall(r"^::: oscsync\.(\w+)$", text, re.M))
    assert rendered == set(_public_objects())
    assert not re.search(r"oscsync\.(apps|net|osc|sync|cli)\.", text)


def test_public_names_are_listed_once_and_imported_lazily() -> None:
    import oscsync

    assert len(oscsync.__all__) == len(set(oscsync.__all__))
    assert set(oscsync.__all__) == set(oscsync._PUBLIC)
    code = (
        "import sys, oscsync\n"
        "print(sorted(m for m in sys.modules if m.startswith('oscsync')))\n"
        "oscsync.Endpoint\n"
        "print('oscsync.net.udp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["['oscsync']", "True"]


def test_griffe_extension_turns_roles_and_doctests_into_markdown() -> None:
    spec = importlib.util.spec_from_file_location("griffe_rest", REPO / "scripts/griffe_rest.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = (
        "See :class:`~oscsync.scheduler.Scheduler` and :func:`oscsync.now`.\n\n"
        "    >>> 1 + 1\n    2\n\nAfter."
    )
    assert module.markdown_docstring(text) == (
        "See `Scheduler` and `oscsync.now`.\n\n"
        "    ```pycon\n    >>> 1 + 1\n    2\n    ```\n\nAfter."
    )
