"""cli/runtime.py: stop signals end a command cleanly, even one landing inside Thread.start/join."""

from __future__ import annotations

import _thread
import contextlib
import signal
import sys
import threading
import types

import pytest
from click.testing import CliRunner

from oscsync import threads
from oscsync.cli import runtime
from oscsync.cli.main import cli
from oscsync.cli.runtime import running
from waiting import wait_until

_THREADING_FILE = threading.__file__


def _in_join(thread_id: int) -> bool:
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        if frame.f_code.co_filename == _THREADING_FILE and frame.f_code.co_name == "join":
            return True
        frame = frame.f_back
    return False


@pytest.mark.parametrize("has_pthread_kill", [True, False], ids=["pthread_kill", "windows-like"])
def test_stop_landing_inside_thread_join_is_raised_after_the_join_without_a_timer(
    has_pthread_kill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not has_pthread_kill:
        monkeypatch.delattr(signal, "pthread_kill", raising=False)
    elif not hasattr(signal, "pthread_kill"):
        pytest.skip("no pthread_kill on this platform")
    main_id = threading.get_ident()
    signalled = threading.Event()

    def interrupt_main_once_it_joins() -> None:
        # If the main thread never joins, the stop below still comes and the test fails on it.
        with contextlib.suppress(AssertionError):
            wait_until(lambda: _in_join(main_id), 10, "the main thread to be inside join")
        # Simulates a Ctrl-C arriving in the main thread (the way Windows delivers it).
        _thread.interrupt_main(signal.SIGINT)
        signalled.set()

    joined = False
    ran_on = False
    helper = threads.daemon_thread(interrupt_main_once_it_joins, name="interrupter")
    with running():
        threads.start(helper)
        helper.join(10)
        joined = True
        # The deferred stop surfaces here, once outside join, and ends this wait.
        wait_until(lambda: False, 10, "the deferred stop to interrupt the main thread")
        ran_on = True
    assert signalled.is_set()
    assert joined and not ran_on
    assert not helper.is_alive()
    helper.join(0)  # threading's bookkeeping is intact: joining again is fine
    # running() gave the handlers back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


class _SignalsWhenFreed:
    def __del__(self) -> None:
        # The handler runs inside raise_signal, so Stop is raised inside this finalizer, where
        # Python swallows it ("Exception ignored in ...").
        signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("lands_in_hook", [False, True], ids=["after the hook", "inside the hook"])
def test_stop_swallowed_by_a_finalizer_is_delivered_again(
    lands_in_hook: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if lands_in_hook:
        # The courier's delivery can come while the main thread is still inside the unraisable
        # hook (seen under load): a Stop raised there would be swallowed a second time.
        courier_defer = runtime._StopCourier.defer
        redelivered: list[int] = []

        def defer_then_deliver_at_once(courier: runtime._StopCourier, signum: int) -> None:
            courier_defer(courier, signum)
            if not redelivered:
                redelivered.append(signum)
                signal.raise_signal(signal.SIGINT)

        monkeypatch.setattr(runtime._StopCourier, "defer", defer_then_deliver_at_once)
    hook_before = sys.unraisablehook
    ran_on = False
    with running() as run:
        finalized = _SignalsWhenFreed()
        del finalized
        # The stop comes back through the courier and ends this wait.
        wait_until(lambda: False, 10, "the swallowed stop to be delivered again")
        ran_on = True
    assert not ran_on
    assert run.stopped_by == signal.SIGINT
    assert sys.unraisablehook is hook_before


def test_stop_landing_while_asyncio_is_being_imported_is_a_clean_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # SIGTERM during `import asyncio` (dump --advertise imports it after "listening on"): the
    # handler looked for a running loop in the half-made module and raised AttributeError, so
    # the command exited 1 with a traceback instead of stopping.
    with running() as run, monkeypatch.context() as patch:
        patch.setitem(sys.modules, "asyncio", types.ModuleType("asyncio"))
        runtime._on_stop_signal(signal.SIGTERM, None)
    assert run.stopped_by == signal.SIGTERM


def test_running_installs_no_alarm_handler() -> None:
    # Portable: no SIGALRM/setitimer on Windows (issue #21).
    if not hasattr(signal, "SIGALRM"):
        return
    before = signal.getsignal(signal.SIGALRM)
    with running():
        assert signal.getsignal(signal.SIGALRM) is before


@pytest.mark.parametrize("no_color", ["1", ""], ids=["NO_COLOR=1", "NO_COLOR empty"])
def test_no_color_strips_styles_even_when_colour_is_possible(no_color: str) -> None:
    # A refused peer gives a styled "warning:"; color=True plays a terminal (cmd.exe included).
    result = CliRunner().invoke(
        cli,
        ["send", "127.0.0.1:9", "/x", "--repeat", "3", "--interval", "0.01"],
        env={"NO_COLOR": no_color},
        color=True,
    )
    assert result.exit_code == 1, result.output  # refused: a send nothing received (issue 30)
    assert "warning: " in result.output
    assert ("\x1b[" in result.output) == (no_color == "")  # "" means unset (no-color.org)
