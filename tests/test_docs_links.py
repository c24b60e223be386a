"""Links between the guide's pages work on the repository's web view too (issue #13).

``reference/cli.md`` exists only in the built site (scripts/mkdocs_hooks.py makes it), so a page
that links to it shows a broken link to a reader browsing ``docs/`` on the web.
"""

from __future__ import annotations

import re
import subprocess
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


def test_documented_commands_never_write_over_a_tracked_file() -> None:
    """Issue #13: following the sweep example overwrote docs/img/sweep.png in the clone."""
    tracked = set(
        subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
    )
    pages = [*DOCS.rglob("*.md"), REPO / "README.md"]
    outputs = re.compile(r"oscsync [^\n`]*?(?:--plot|--csv|--json|--log|--out|wav:)[ =]?(\S+)")
    written = {
        (page.name, target)
        for page in pages
        for target in outputs.findall(page.read_text(encoding="utf-8"))
    }
    assert written, "the pattern finds the documented output files"
    clobbered = {(page, target) for page, target in written if target.lstrip("./") in tracked}
    assert clobbered == set()
