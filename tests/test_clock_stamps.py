"""Kernel receive stamps on a clock that is not the kernel's (issue #27 item 16).

Under libfaketime (a test rig for two machines) every pong was refused, "pong-before-ping": the
kernel stamps datagrams on the real clock, the process reads a shifted one; and ``oscsync
clock`` asked whether a listener was running. The same happens when the OS clock steps during a
session (NTP after sleep). Here: :class:`oscsync.clock.KernelStamps` on a fake clock, endpoints
whose clock disagrees with the kernel's from the start or from a moment on, and real
libfaketime.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from conftest import require_peer
from oscsync.apps.endpoints import open_endpoint
from oscsync.cli.main import cli
from oscsync.cli.runtime import AppContext
from oscsync.clock import STAMP_CHECK_EVERY, FakeClock, KernelStamps, SystemClock
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint

QUEUED = 2**-14
"""How long each datagram waits between the kernel's stamp and the read (61 µs: a binary
fraction, so that on the fake clock every sum is exact)."""


class _Reads:
    """A fake clock that counts how often it is read."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.reads = 0
        self.clock_now = self.clock.now
        self.clock.now = self._now  # type: ignore[method-assign]

    def _now(self) -> float:
        self.reads += 1
        return self.clock_now()


def _stamps(os_ahead: float = 0.0) -> tuple[FakeClock, KernelStamps, list[tuple[float, object]]]:
    clock = FakeClock()
    heard: list[tuple[float, object]] = []
    stamps = KernelStamps(clock, lambda correction, step: heard.append((correction, step)))
    return clock, stamps, heard


def _arrive(clock: FakeClock, stamps: KernelStamps, os_ahead: float) -> float:
    """One datagram: stamped by a kernel whose clock is ``os_ahead`` s ahead of ``clock``,
    read QUEUED s later; returns where it was placed, minus its true arrival."""
    stamp = clock.now() + os_ahead
    clock.advance(QUEUED)
    placed = stamps.place(stamp)
    error = placed - (clock.now() - QUEUED)
    clock.advance(2**-7)
    return error


def test_agreeing_stamps_are_taken_as_they_are_and_checked_once_in_a_while() -> None:
    reads = _Reads()
    stamps = KernelStamps(reads.clock)
    for _ in range(80):
        stamp = reads.clock_now()
        reads.clock.advance(QUEUED)
        assert stamps.place(stamp) == stamp
    assert reads.reads == 80 // STAMP_CHECK_EVERY
    assert stamps.reanchors == 0 and stamps.correction == 0.0


@pytest.mark.parametrize("os_ahead", [5.0, -5.0, -0.25])
def test_a_step_of_the_os_clock_is_re_anchored(os_ahead: float) -> None:
    """The OS clock steps by ``os_ahead`` mid-session; a step ahead makes stamps from the
    future (re-anchored at the first check), one back makes them old (at the second, 1 s of
    age or more, on the second stamp)."""
    clock, stamps, heard = _stamps()
    for _ in range(20):
        assert _arrive(clock, stamps, 0.0) == 0.0
    errors = [_arrive(clock, stamps, os_ahead) for _ in range(40)]
    if os_ahead > 0 or abs(os_ahead) >= 1.0:
        # At most STAMP_CHECK_EVERY stamps before the check; none of them after it.
        wrong = [e for e in errors if abs(e) > 1e-3]
        assert len(wrong) <= STAMP_CHECK_EVERY
        assert all(abs(e) <= QUEUED + 1e-9 for e in errors[STAMP_CHECK_EVERY + 1 :])
        assert stamps.reanchors == 1 and len(heard) == 1
        assert heard[0][0] == pytest.approx(-os_ahead, abs=1e-3)
        assert heard[0][1] is None  # a fake clock does not follow the OS's
    else:
        assert stamps.reanchors == 0  # 0.3 s old could be a stalled thread: not this test's


def test_a_clock_that_is_not_the_kernels_is_re_anchored_from_the_first_stamps() -> None:
    """libfaketime +5 s: every stamp 5 s behind the process's clock. The first is taken as
    read (late rather than 5 s early), the second confirms, and from then on the correction
    settles on the smallest queueing delay seen, not on the first one."""
    clock, stamps, heard = _stamps()
    first = _arrive(clock, stamps, -5.0)
    assert first == pytest.approx(QUEUED)  # taken as read: QUEUED late, never 5 s early
    errors = [_arrive(clock, stamps, -5.0) for _ in range(30)]
    assert all(abs(e) <= QUEUED + 1e-9 for e in errors)
    assert len(heard) == 1 and heard[0][0] == pytest.approx(5.0, abs=1e-3)


def test_one_old_stamp_is_a_stalled_thread_not_another_clock() -> None:
    clock, stamps, heard = _stamps()
    stamp = clock.now()
    clock.advance(2.0)  # the receive thread was held up for 2 s
    assert stamps.place(stamp) == clock.now()
    for _ in range(20):
        assert _arrive(clock, stamps, 0.0) == 0.0
    assert heard == [] and stamps.correction == 0.0


def test_a_correction_that_comes_back_ends() -> None:
    clock, stamps, heard = _stamps()
    for _ in range(10):
        _arrive(clock, stamps, 3.0)
    for _ in range(10):
        _arrive(clock, stamps, 0.0)  # stepped back: the stamps are old now, by 3 s
    assert stamps.correction == 0.0
    assert [round(correction) for correction, _ in heard] == [-3, 0]


def test_the_system_clock_says_how_far_the_os_clock_stepped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = SystemClock()
    assert abs(clock.system_clock_step() or 0.0) < 0.01
    real = clock.system_clock_step.__globals__["time"].time
    monkeypatch.setattr("oscsync.clock.time.time", lambda: real() + 5.0)
    assert clock.system_clock_step() == pytest.approx(5.0, abs=0.01)
    assert FakeClock().system_clock_step() is None


# -- endpoints and oscsync clock ----------------------------------------------------------


class KernelDisagrees(SystemClock):
    """The system clock, except that the kernel's stamps are ``os_ahead`` s off this process's
    reading (from the ``after``-th stamp on): what libfaketime does from the start, and a step
    of the OS clock (NTP) does mid-session."""

    def __init__(self, os_ahead: float, after: int = 0) -> None:
        super().__init__()
        self.os_ahead = os_ahead
        self.after = after
        self.stamped = 0

    def system_time_to_wall(self, system_time: float) -> float | None:
        self.stamped += 1
        return system_time + (self.os_ahead if self.stamped > self.after else 0.0)

    def system_clock_step(self) -> float | None:
        return self.os_ahead if self.stamped > self.after else 0.0


@pytest.fixture
def listener() -> Iterator[Endpoint]:
    with open_endpoint(HostPort("127.0.0.1", 0), clock=SystemClock()) as endpoint:
        endpoint.start(lambda received: None)
        yield endpoint


def _clock_cli(peer: Endpoint, clock: SystemClock, *extra: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        cli,
        ["clock", "--peer", str(peer.local_address), "--interval", "0.005", "--json", *extra],
        obj=AppContext(clock=clock),
    )
    return result.exit_code, result.stdout, result.stderr


def test_oscsync_clock_on_a_clock_that_is_not_the_kernels(listener: Endpoint) -> None:
    """This process's clock 5 s ahead of the kernel's stamps (libfaketime +5 s): every pong is
    used, the offset is the listener's −5 s, and the warning says what happened."""

    class FivePast(KernelDisagrees):
        def monotonic_to_wall(self, mono: float) -> float:
            return super().monotonic_to_wall(mono) + 5.0

        def system_clock_step(self) -> float | None:
            return 0.0  # libfaketime moves time.time() along with this clock

    code, out, err = _clock_cli(listener, FivePast(0.0), "--count", "50")
    report = json.loads(out)
    assert code == 0, out + err
    assert report["answered"] == 50 and report["ignored"] == 0
    assert report["offset_ms"] == pytest.approx(-5000.0, abs=1.0)
    assert "the kernel stamps datagrams -5.000 s from this process's clock" in err


def test_a_listener_whose_os_clock_steps_mid_session_is_not_blamed(listener: Endpoint) -> None:
    """The listener's OS clock steps +5 s after 40 stamps (NTP after sleep): its arrival
    stamps (T2) are re-anchored, so its pongs stay usable (before: negative-turnaround, the
    peer blamed for this machine's clock)."""
    assert listener.local_address is not None
    stepped = KernelDisagrees(5.0, after=40)
    warnings: list[str] = []
    with open_endpoint(
        HostPort("127.0.0.1", 0), clock=stepped, on_warning=warnings.append
    ) as leader:
        leader.start(lambda received: None)
        code, out, err = _clock_cli(leader, SystemClock(), "--count", "150")
    report = json.loads(out)
    assert code == 0, out + err
    assert report["ignored"] <= 1 and report["answered"] >= 149, report["ignored_by_reason"]
    assert abs(report["offset_ms"]) < 1.0
    assert leader.stats.arrival_reanchors == 1
    assert warnings == [
        "arrival times: the system clock was stepped by +5.000 s while this ran (NTP, or "
        "someone setting the time); this run keeps its own time scale; re-anchored on this "
        "process's clock"
    ]


def test_answers_that_arrive_but_are_refused_are_said_to_have_arrived(listener: Endpoint) -> None:
    """Never "no answer ... is a listener running?" when answers came: say what was wrong with
    them (here: not signed with the key this command holds)."""
    result = CliRunner().invoke(
        cli,
        ["clock", "--peer", str(listener.local_address), "--count", "10", "--interval", "0.005"],
        env={"OSCSYNC_KEY": "a key the listener does not hold"},
    )
    assert result.exit_code == 1
    assert (
        f"Error: 10 answers from {listener.local_address} arrived but none could be used "
        "(unauthenticated-pong 10): they are not signed with this key" in result.stderr
    )


def test_under_real_libfaketime_oscsync_clock_uses_every_pong(listener: Endpoint) -> None:
    """The rig itself: ``oscsync clock`` under libfaketime +5 s (monotonic left alone, as
    Python needs: with it faked, threading waits hang)."""
    faketime = require_peer("faketime")
    run = subprocess.run(
        ["env", "DONT_FAKE_MONOTONIC=1", faketime, "-f", "+5s", sys.executable, "-m", "oscsync",
         "clock", "--peer", str(listener.local_address), "--count", "50", "--interval", "0.005",
         "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report = json.loads(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert report["answered"] == 50
    assert report["offset_ms"] == pytest.approx(-5000.0, abs=5.0)
    assert "re-anchored on this process's clock" in run.stderr
