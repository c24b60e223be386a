"""oscsync's background threads leave stop signals to the main thread."""

from __future__ import annotations

import signal

import pytest

from oscsync import threads


@pytest.mark.skipif(not hasattr(signal, "pthread_sigmask"), reason="POSIX signal masks")
def test_started_thread_blocks_stop_signals_and_the_main_thread_does_not() -> None:
    seen: list[set[signal.Signals]] = []
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    thread = threads.daemon_thread(
        lambda: seen.append(signal.pthread_sigmask(signal.SIG_BLOCK, [])), name="t"
    )
    assert not thread.is_alive()  # the owner holds it before it runs
    threads.start(thread)
    thread.join(5)
    assert set(threads.STOP_SIGNALS) <= seen[0]
    assert {signal.SIGINT, signal.SIGTERM, signal.SIGHUP} <= set(threads.STOP_SIGNALS)
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before
    assert signal.SIGINT not in before
    assert thread.daemon and thread.name == "t"
