"""Every "install X" hint works where the user is (issue #13)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from packaging.requirements import Requirement

from conftest import REPO
from oscsync import install


def test_install_hints_from_a_clone_use_the_clones_venv_and_an_editable_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(REPO)
    assert install.clone_root() == REPO
    hint = install.install_hint("audio")
    assert hint.endswith(" install -e '.[audio]'")
    assert "oscsync[" not in hint  # not on a package index: that hint could never work


def test_install_hints_outside_a_clone_name_the_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install, "clone_root", lambda: None)
    assert install.install_hint("plot").endswith(" install matplotlib")
    assert install.install_hint("audio").endswith(" install numpy sounddevice")


def test_extras_named_in_hints_match_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    for extra, packages in install.EXTRAS.items():
        # What pip installs for the extra here (a marker may leave a package to other systems).
        wanted = [Requirement(text) for text in extras[extra]]
        named = [req.name for req in wanted if req.marker is None or req.marker.evaluate()]
        assert named == [Requirement(package).name for package in packages]


def test_make_demo_says_how_to_reach_the_venv() -> None:
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    plan = subprocess.run(
        [make, "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "install -q -e '.[test,audio]'" in plan or "scripts/demo.py" in plan
    assert ". .venv/bin/activate" in plan and ".venv/bin/oscsync --help" in plan
    readme = (REPO / "README.md").read_text()
    assert ". .venv/bin/activate" in readme and ".venv/bin/oscsync" in readme


def test_one_demo_duration_everywhere_and_it_matches_the_runs() -> None:
    from oscsync.cli.demo import demo
    from oscsync.cli.main import COMMANDS

    texts = [
        (REPO / "README.md").read_text(),
        (REPO / "docs/two-machines.md").read_text(),
        demo.help or "",
        demo.epilog or "",
        COMMANDS["demo"][1],
    ]
    figures = {
        int(match)
        for text in texts
        for line in text.splitlines()
        if "demo" in line.lower() or "forward synchronisation beating" in line
        for match in re.findall(r"(?:~|about )(\d+) s", line)
    }
    duration = next(p for p in demo.params if p.name == "duration").default
    assert isinstance(duration, float)
    # Two runs of --duration seconds each, plus clock pings and start-up (10.4 s measured).
    assert figures == {round(2 * duration)}
