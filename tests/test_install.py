"""Every "install X" hint works where the user is (issue #13)."""

from __future__ import annotations

from pathlib import Path

import pytest

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
        named = [Path(req).name.split(">")[0].split("=")[0].strip() for req in extras[extra]]
        assert tuple(named) == packages
