"""griffe extension: oscsync's reST-flavoured docstrings read as Markdown in the API reference.

mkdocstrings renders docstrings as Markdown, but oscsync writes them as Sphinx does:
``:class:`~oscsync.scheduler.Scheduler``` roles and ``>>>`` examples. This extension, loaded by
``mkdocs.yml`` (``plugins: mkdocstrings: handlers: python: options: extensions``), rewrites
each docstring once as it is loaded: a role becomes inline code of the name it shows
(``Scheduler``, or the full dotted name without ``~``), and each run of ``>>>`` lines with its
expected output becomes a ``pycon`` code block, so an example reads as what it is and a ``>``
never turns into a quote. Nothing in ``src/`` changes. ``tests/test_docs.py`` imports
:func:`markdown_docstring` to check the conversion.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):`(~?)([^`]+)`")
_LITERAL_BLOCK = re.compile(r"::\n\n((?:[ \t]+\S.*\n|\n)+)")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    shown = target.rsplit(".", 1)[-1] if short else target
    return f"`{shown}`"


def markdown_docstring(text: str) -> str:
    """``text`` with Sphinx roles as inline code and doctest examples as ``pycon`` blocks."""
    text = _ROLE.sub(_role, text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        if not lines[i].lstrip().startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        block: list[str] = []
        while i < len(lines) and lines[i].strip():  # an example runs until a blank line
            block.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        out.extend([f"{indent}```pycon", *(indent + line for line in block), f"{indent}```"])
    return "\n".join(out)


class RestToMarkdown(griffe.Extension):
    """Converts each docstring of the loaded package (see the module docstring)."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        self._convert(obj)

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        self._convert(obj)

    @staticmethod
    def _convert(obj: griffe.Object) -> None:
        docstring = obj.docstring
        if docstring is not None and not getattr(docstring, "_oscsync_markdown", False):
            docstring.value = markdown_docstring(docstring.value)
            docstring._oscsync_markdown = True  # type: ignore[attr-defined]
