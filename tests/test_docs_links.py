"""Links between the guide's pages work on the repository's web view too (issue #13).

``reference/cli.md`` exists only in the built site (scripts/mkdocs_hooks.py makes it), so a page
that links to it shows a broken link to a reader browsing ``docs/`` on the web.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO

DOCS = REPO / "docs"
_LINK = re.compile(r"\]\(([^)\s#]+\.md)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", sorted(DOCS.rglob("*.md")), ids=lambda p: p.name)
def test_docs_link_only_to_pages_that_exist_in_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = [
        target
        for target in _LINK.findall(text)
        if "://" not in target and not (page.parent / target).resolve().is_file()
    ]
    assert missing == [], f"{page.relative_to(REPO)} links to {missing}"


def test_readme_links_exist() -> None:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
        if "://" not in target:
            assert (REPO / target).exists(), target
