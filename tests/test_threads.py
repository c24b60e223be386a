"""oscsync's background threads leave stop signals to the main thread."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import pytest

from oscsync import threads
from oscsync.apps.netem import Relay
from oscsync.apps.netemlink import ImpairmentSpec
from oscsync.net.hostport import HostPort
from oscsync.net.tcplistener import TcpListener
from oscsync.net.tcpsender import TcpSender


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


def test_join_waits_for_the_thread_and_says_whether_it_ended() -> None:
    release = threading.Event()
    thread = threads.start(threads.daemon_thread(release.wait, name="waits"))
    assert threads.join(thread, 0.01) is False  # blocked on the event: still running
    release.set()
    assert threads.join(thread, 5) is True
    assert threads.join(None, 5) is True


def test_join_skips_the_calling_thread_and_one_that_never_started() -> None:
    never = threads.daemon_thread(lambda: None, name="never")
    assert threads.join(never, 5) is True  # Thread.join would raise RuntimeError
    from_itself: list[bool] = []
    thread = threads.daemon_thread(
        lambda: from_itself.append(threads.join(threading.current_thread(), 5)), name="self"
    )
    threads.join(threads.start(thread), 5)
    assert from_itself == [False]  # it is still running while it asks


def _listener() -> tuple[Callable[[], object], Callable[[], object]]:
    listener = TcpListener(HostPort("127.0.0.1", 0, "tcp"), lambda p, s, a: None)
    return listener.start, listener.close


def _sender() -> tuple[Callable[[], object], Callable[[], object]]:
    sender = TcpSender(HostPort("127.0.0.1", 9, "tcp"))
    return lambda: sender.send(b"/x\0\0,\0\0\0"), sender.close


def _relay() -> tuple[Callable[[], object], Callable[[], object]]:
    relay = Relay(HostPort("127.0.0.1", 0), HostPort("127.0.0.1", 9), ImpairmentSpec())
    return relay.start, relay.close


@pytest.mark.parametrize(
    ("make", "thread_name", "closed"),
    [
        (_listener, "oscsync-tcp-listen", True),  # True: no thread left running
        (_sender, "oscsync-tcp-send", True),
        (_relay, "oscsync-netem", None),
    ],
)
def test_close_after_a_stop_between_creating_and_starting_the_thread(
    monkeypatch: pytest.MonkeyPatch,
    make: Callable[[], tuple[Callable[[], object], Callable[[], object]]],
    thread_name: str,
    closed: bool | None,
) -> None:
    # As the UDP endpoint's and the follower's (tests/test_transport.py): a Ctrl-C between
    # creating the thread and starting it must not make close() join a thread that never ran.
    start_thread = threads.start

    def interrupted(thread: threading.Thread) -> threading.Thread:
        if thread.name == thread_name:
            raise KeyboardInterrupt
        return start_thread(thread)

    begin, close = make()
    monkeypatch.setattr(threads, "start", interrupted)
    with pytest.raises(KeyboardInterrupt):
        begin()
    monkeypatch.undo()
    assert close() is closed
