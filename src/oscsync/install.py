"""How to install an optional part of oscsync, said in a way that works where the user is.

``pip install 'oscsync[audio]'`` cannot work from a clone: oscsync is not on a package index
(issue #13). From a clone (an editable install, the way ``make demo`` installs it) the hint is
``.venv/bin/pip install -e '.[audio]'``; from anywhere else it names the packages themselves.
The pip shown is the one of the interpreter running oscsync, so the packages land where they are
needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EXTRAS = {
    "audio": ("numpy", "sounddevice"),
    "plot": ("matplotlib",),
    "playsound": ("PyGObject<3.51",) if sys.platform != "darwin" else ("pyobjc-framework-Cocoa",),
}
"""What each extra adds (pyproject.toml's [project.optional-dependencies])."""


def clone_root() -> Path | None:
    """The repository oscsync runs from, when it runs from a clone (src/oscsync layout)."""
    root = Path(__file__).resolve().parent.parent.parent
    if (root / "pyproject.toml").is_file() and (root / "src" / "oscsync").is_dir():
        return root
    return None


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (``.venv/bin/pip``)."""
    try:
        relative = path.relative_to(Path.cwd())
    except ValueError:
        return str(path)
    return str(relative) if str(relative) != "." else "."


def pip_command() -> str:
    """The pip of the running interpreter: ``.venv/bin/pip`` in a clone's venv."""
    scripts = Path(sys.prefix) / ("Scripts" if os.name == "nt" else "bin")
    pip = scripts / ("pip.exe" if os.name == "nt" else "pip")
    if sys.prefix != sys.base_prefix and pip.is_file():
        return _shown(pip)
    return f"{sys.executable} -m pip"


def install_hint(extra: str) -> str:
    """The one command that adds ``extra`` (``audio``, ``plot``) to this installation."""
    root = clone_root()
    if root is not None:
        return f"{pip_command()} install -e '{_shown(root)}[{extra}]'"
    return f"{pip_command()} install {' '.join(EXTRAS[extra])}"


def make_hint(target: str) -> str | None:
    """``make TARGET`` when oscsync runs from the venv ``make`` made in its clone, else None."""
    root = clone_root()
    if root is None or Path(sys.prefix).resolve() != (root / ".venv").resolve():
        return None
    where = _shown(root)
    return f"make {target}" if where == "." else f"make -C {where} {target}"
