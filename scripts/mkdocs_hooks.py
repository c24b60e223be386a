"""mkdocs hook: the CLI reference page, generated from click at build time.

``mkdocs.yml`` loads this file (``hooks:``). On every build it walks ``oscsync``'s lazy group
(``oscsync.cli.main.COMMANDS``), renders each command's help (docstring, usage, options with
their defaults, the ``Examples:`` epilog) as Markdown and adds it to the site as
``reference/cli.md``. Nothing is written into ``docs/``, so the reference cannot go stale: the
page is whatever the installed code says. ``tests/test_docs.py`` imports :func:`render` to check
that every command and option appears and to parse-check the examples the page shows.

Run it by hand to see the page: ``.venv/bin/python scripts/mkdocs_hooks.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

PAGE = "reference/cli.md"
SOURCES = Path(__file__).resolve().parent.parent / "src" / "oscsync" / "cli"

_MD_SPECIAL = re.compile(r"([\\`*_\[\]>|])")


def _escape(text: str) -> str:
    """Plain help text as Markdown that renders literally (no emphasis, links or HTML)."""
    return _MD_SPECIAL.sub(r"\\\1", text).replace("<", "&lt;")


def _code_spans(text: str) -> str:
    """Escape help text, then show --options and /addresses as code."""
    out: list[str] = []
    for word in re.split(r"(\s+)", text):
        core = word.rstrip(".,;:)")
        tail = word[len(core) :]
        lead = ""
        if core.startswith("("):
            lead, core = "(", core[1:]
        if re.fullmatch(r"--?[a-zA-Z][\w-]*(=\S+)?|/[a-z][\w/]*", core):
            out.append(f"{lead}`{core}`{_escape(tail)}")
        else:
            out.append(_escape(word))
    return "".join(out)


def walk(
    group: click.Group, ctx: click.Context, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    """Every command below ``group`` (depth first, in ``--help`` order) with its context."""
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        if command is None or command.hidden:
            continue
        sub_ctx = click.Context(command, info_name=name, parent=ctx, **command.context_settings)
        yield (*prefix, name), command, sub_ctx
        if isinstance(command, click.Group):
            yield from walk(command, sub_ctx, (*prefix, name))


def _paragraphs(text: str) -> Iterator[list[str]]:
    block: list[str] = []
    for line in text.splitlines():
        if line.strip():
            block.append(line)
        elif block:
            yield block
            block = []
    if block:
        yield block


def _help_markdown(text: str) -> list[str]:
    """click help text (paragraphs; ``\\b`` marks a verbatim block) as Markdown lines."""
    text = text.split("\f", 1)[0]
    lines: list[str] = []
    for para in _paragraphs(text):
        if para[0].strip() == "\b":
            verbatim = [line.rstrip() for line in para[1:]]
            if verbatim and verbatim[0].rstrip().endswith(":") and len(verbatim) > 1:
                lines += [f"**{_escape(verbatim[0].strip().rstrip(':'))}**", ""]
                verbatim = verbatim[1:]
            indent = min(len(v) - len(v.lstrip()) for v in verbatim if v.strip())
            body = [v[indent:] for v in verbatim]
            lang = "sh" if all("oscsync " in b for b in body if b.strip()) else "text"
            lines += [f"```{lang}", *body, "```", ""]
        else:
            lines += [_code_spans(" ".join(line.strip() for line in para)), ""]
    return lines


def _options_table(command: click.Command, ctx: click.Context) -> list[str]:
    rows: list[str] = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or isinstance(param, click.Argument):
            continue
        names, help_text = record
        rows.append(f"| `{names}` | {_code_spans(help_text) or ' '} |")
    if not rows:
        return []
    return ["| Option | Description |", "|---|---|", *rows, ""]


def _section(path: tuple[str, ...], command: click.Command, ctx: click.Context) -> list[str]:
    level = "#" * min(len(path) + 1, 4)
    title = " ".join(("oscsync", *path))
    lines = [f"{level} {title}", ""]
    if command.help:
        lines += _help_markdown(command.help)
    usage = " ".join(["Usage:", title, *command.collect_usage_pieces(ctx)])
    lines += ["```text", usage, "```", ""]
    lines += _options_table(command, ctx)
    if isinstance(command, click.Group):
        subs = [(n, command.get_command(ctx, n)) for n in command.list_commands(ctx)]
        lines += ["| Command | What it does |", "|---|---|"]
        for name, sub in subs:
            if sub is not None and not sub.hidden:
                anchor = "-".join(("oscsync", *path, name))
                lines.append(f"| [`{name}`](#{anchor}) | {_escape(sub.get_short_help_str(200))} |")
        lines.append("")
    if command.epilog:
        lines += _help_markdown(command.epilog)
    return lines


def render(cli: click.Group | None = None) -> str:
    """The whole CLI reference page as Markdown."""
    if cli is None:
        from oscsync.cli.main import cli as main_cli

        cli = main_cli
    root = click.Context(cli, info_name="oscsync", **cli.context_settings)
    lines = [
        "# CLI reference",
        "",
        "Generated from the installed `oscsync` at build time (each command's `--help`), so it "
        "always matches the code. In a terminal, `oscsync --help` and `oscsync send --help` "
        "(any command) print the same.",
        "",
    ]
    lines += _section((), cli, root)[2:]  # the page title stands for `oscsync`
    for path, command, ctx in walk(cli, root):
        lines += _section(path, command, ctx)
    return "\n".join(lines).rstrip() + "\n"


# --- mkdocs hook events -------------------------------------------------------------------


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=render()))
    return files


def on_serve(server: Any, config: Any, builder: Any) -> Any:
    # `mkdocs serve` rebuilds the reference when a command's help changes.
    server.watch(str(SOURCES))
    return server


if __name__ == "__main__":
    print(render(), end="")
