"""The headless-PD harness itself: ready means ready, sends arrive, failures are seen, PD stops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from pdharness import PdError, PdProcess, fudi_atom

ECHO_PATCH = """\
#N canvas 0 0 400 300 12;
#X obj 20 20 r probe;
#X obj 20 50 print probe;
#X obj 20 80 loadbang;
#X msg 20 110 loaded;
#X obj 20 140 print probe;
#X connect 0 0 1 0;
#X connect 2 0 3 0;
#X connect 3 0 4 0;
"""


@pytest.fixture
def echo_patch(tmp_path: Path) -> Path:
    path = tmp_path / "echo.pd"
    path.write_text(ECHO_PATCH)
    return path


def test_fudi_atoms_escape_what_pd_would_split() -> None:
    assert fudi_atom(120) == "120"
    assert fudi_atom(0.5) == "0.5"
    assert fudi_atom("a;b,c$1 d") == "a\\;b\\,c\\$1\\ d"


def test_ready_after_loadbang_and_startup_sends(
    run_pd: Callable[..., PdProcess], echo_patch: Path
) -> None:
    pd = run_pd(echo_patch, sends=["probe hello world"])
    # Both happened before "ready": loadbang first, then the -send.
    assert pd.printed("probe") == ["loaded", "hello world"]
    assert pd.creation_failures() == []


def test_send_reaches_named_receiver_while_running(
    run_pd: Callable[..., PdProcess], echo_patch: Path
) -> None:
    pd = run_pd(echo_patch)
    pd.send("probe", "héllo", 7)
    pd.send("probe", 42)
    pd.wait_for_all(r"^probe: ", 3)
    assert pd.printed("probe") == ["loaded", "héllo 7", "42"]


def test_couldnt_create_is_reported(run_pd: Callable[..., PdProcess], tmp_path: Path) -> None:
    broken = tmp_path / "broken.pd"
    broken.write_text(ECHO_PATCH + "#X obj 200 20 no_such_object 1 2;\n")
    pd = run_pd(broken)
    failures = pd.creation_failures()
    assert len(failures) == 1
    assert "no_such_object 1 2" in failures[0]


def test_stop_quits_pd_and_is_idempotent(echo_patch: Path) -> None:
    from conftest import require_peer

    process = PdProcess(echo_patch, pd=require_peer("pd")).start()
    assert process.running
    assert process.stop() == 0  # `pd quit`, not a signal
    assert not process.running
    process.stop()


def test_wait_for_times_out_with_what_pd_printed(
    run_pd: Callable[..., PdProcess], echo_patch: Path
) -> None:
    pd = run_pd(echo_patch)
    with pytest.raises(PdError, match="probe: loaded"):
        pd.wait_for("never printed", timeout=0.2)


def test_extra_pd_flags_are_passed(run_pd: Callable[..., PdProcess], echo_patch: Path) -> None:
    pd = run_pd(echo_patch, sends=["probe flags"], args=["-sleepgrain", "0.5"])
    assert pd.printed("probe") == ["loaded", "flags"]
    with open(f"/proc/{pd.pid}/cmdline", "rb") as cmdline:
        assert b"\0-sleepgrain\x000.5\0" in cmdline.read()
