"""Real-time priority: asked for per thread through the platform's way, reported, and bounded.

The OS calls are faked here (a POSIX scheduler that refuses or grants, rtkit's D-Bus tools, the
Mach and MMCSS libraries): the macOS and Windows paths run nowhere else in this repository. What
a real grant does to timing is a benchmark's figure (benchmarks/busy.py), not an assertion.
"""

from __future__ import annotations

import itertools
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from oscsync import realtime, threads
from oscsync.cli.main import REALTIME_MODES, cli
from oscsync.cli.runtime import AppContext
from oscsync.clock import FakeClock
from oscsync.realtime import (
    Breather,
    MachTimeConstraint,
    Mmcss,
    Outcome,
    PosixFifo,
    Realtime,
    RealtimeRefused,
    Rtkit,
)
from oscsync.scheduler import Dispatch, Scheduler
from waiting import wait_until


class FakeSched:
    """os's scheduling calls: grants or refuses, and remembers what was asked."""

    SCHED_FIFO = 1
    SCHED_RESET_ON_FORK = 0x40000000

    def __init__(self, refuse: type[OSError] | None = None) -> None:
        self.refuse = refuse
        self.calls: list[tuple[int, int, int]] = []

    @staticmethod
    def sched_param(priority: int) -> int:
        return priority

    def sched_setscheduler(self, tid: int, policy: int, param: int) -> None:
        self.calls.append((tid, policy, param))
        if self.refuse is not None:
            raise self.refuse(1, "Operation not permitted")


class GrantingBackend:
    name = "fake"

    def __init__(self, granted: bool = True) -> None:
        self.granted = granted
        self.threads: list[str] = []

    def promote(self, priority: int) -> Outcome:
        self.threads.append(threading.current_thread().name)
        if self.granted:
            return Outcome(True, f"FAKE {priority}")
        return Outcome(False, f"FAKE {priority}", "not permitted")

    def hint(self) -> str:
        return "join the fake group"


@pytest.fixture
def no_promoter() -> Iterator[None]:
    previous = threads.set_promoter(None)
    interval = sys.getswitchinterval()
    yield
    threads.set_promoter(previous)
    sys.setswitchinterval(interval)


# -- POSIX ----------------------------------------------------------------------------------------


def test_posix_asks_fifo_that_is_not_inherited_for_the_calling_thread() -> None:
    sched = FakeSched()
    outcome = PosixFifo(sched, rtprio_limit=lambda: None).promote(6)
    assert outcome == Outcome(True, "SCHED_FIFO 6")
    assert sched.calls == [
        (threading.get_native_id(), FakeSched.SCHED_FIFO | FakeSched.SCHED_RESET_ON_FORK, 6)
    ]


def test_posix_stays_within_the_rtprio_limit_a_user_was_given() -> None:
    sched = FakeSched()
    assert PosixFifo(sched, rtprio_limit=lambda: 3).promote(6).how == "SCHED_FIFO 3"
    assert sched.calls[0][2] == 3


def test_posix_refused_without_rtkit_says_why() -> None:
    outcome = PosixFifo(FakeSched(PermissionError), rtprio_limit=lambda: 0).promote(6)
    assert not outcome.granted
    assert outcome.reason == "not permitted"


def test_refused_posix_falls_back_to_rtkit_once(monkeypatch: pytest.MonkeyPatch) -> None:
    limited: list[bool] = []  # not this process's own limits: lowered, they stay lowered
    monkeypatch.setattr(realtime, "_limit_rttime", lambda: limited.append(True))
    asked: list[list[str]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        asked.append(command)
        return subprocess.CompletedProcess(command, 0 if len(asked) == 1 else 1, "", "denied")

    backend = PosixFifo(
        FakeSched(PermissionError), rtkit=Rtkit("busctl", "/bin/busctl", run), rtprio_limit=None
    )
    assert backend.promote(6) == Outcome(True, "rtkit SCHED_RR 6")
    assert limited == [True]  # before asking rtkit
    assert "MakeThreadRealtimeWithPID" in asked[0]
    assert asked[0][-3:] == [str(realtime.os.getpid()), str(threading.get_native_id()), "6"]
    refused = backend.promote(6)  # rtkit said no: not asked again for the next thread
    assert not refused.granted and "rtkit: denied" in refused.reason
    assert len(asked) == 2
    assert not backend.promote(6).granted
    assert len(asked) == 2


class FakeResource:
    RLIMIT_RTTIME = 15
    RLIM_INFINITY = -1

    def __init__(self, soft: int, hard: int) -> None:
        self.limits = (soft, hard)

    def getrlimit(self, limit: int) -> tuple[int, int]:
        assert limit == self.RLIMIT_RTTIME
        return self.limits

    def setrlimit(self, limit: int, limits: tuple[int, int]) -> None:
        self.limits = limits


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ((-1, -1), (100_000, 200_000)),  # the default: rtkit reads the hard limit
        ((50_000, -1), (50_000, 200_000)),
        ((100_000, 100_000), (50_000, 100_000)),  # a SIGXCPU before the SIGKILL
    ],
)
def test_rtkit_gets_a_hard_rttime_it_accepts_and_a_soft_one_below_it(
    before: tuple[int, int], after: tuple[int, int]
) -> None:
    res = FakeResource(*before)
    realtime._limit_rttime(res)
    assert res.limits == after


def test_sigxcpu_drops_every_promoted_thread_and_says_so_once(no_promoter: None) -> None:
    sched = FakeSched()
    sched.SCHED_OTHER = 0  # type: ignore[attr-defined]
    policy = Realtime("auto", PosixFifo(sched, rtprio_limit=lambda: None))
    assert policy.probe() is not None and policy.granted
    warnings: list[str] = []
    done = threading.Event()
    with realtime.installed(policy):
        policy.uninstall()
        policy.install(warn=warnings.append)
        handler = signal.getsignal(signal.SIGXCPU)
        assert callable(handler)
        timer = threads.daemon_thread(lambda: done.wait(10), name="t", role=threads.TIMER)
        threads.start(timer)
        wait_until(lambda: len(sched.calls) == 2, 5.0, "the timer thread promoted")
        handler(signal.SIGXCPU, None)
        handler(signal.SIGXCPU, None)
        done.set()
        timer.join(5)
        assert threads.promote(threads.TIMER) is False  # none promoted from then on
    assert signal.getsignal(signal.SIGXCPU) == signal.SIG_DFL
    assert timer.native_id is not None
    # The probe's thread had ended: only the live timer thread is dropped, once.
    assert sched.calls[2:] == [(timer.native_id, FakeSched.SCHED_RESET_ON_FORK, 0)]
    assert len(warnings) == 1 and "SIGXCPU" in warnings[0]
    assert policy.describe().endswith("(dropped: SIGXCPU)")


@pytest.mark.skipif(not hasattr(signal, "SIGXCPU"), reason="no SIGXCPU on this platform")
def test_sigxcpu_landing_while_the_main_thread_holds_the_policys_locks_drops_without_deadlock(
    no_promoter: None,
) -> None:
    # The handler runs in the main thread between two of its bytecodes: inside describe()'s or
    # promote()'s `with lock:` too. With plain Locks the handler waited for itself forever.
    sched = FakeSched()
    sched.SCHED_OTHER = 0  # type: ignore[attr-defined]
    backend = PosixFifo(sched, rtprio_limit=lambda: None)
    policy = Realtime("auto", backend)
    assert policy.probe() is not None and policy.granted
    warnings: list[str] = []
    with realtime.installed(policy):
        policy.uninstall()
        policy.install(warn=warnings.append)
        handler = signal.getsignal(signal.SIGXCPU)
        assert callable(handler)
        with policy._lock, backend._lock:
            handler(signal.SIGXCPU, None)
    assert len(warnings) == 1 and backend.demoted


_SPIN_PAST_RTTIME = """
import os, resource, sys, threading, time
from oscsync import realtime, threads
try:
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
except PermissionError:
    sys.exit(77)
# The soft limit only: the hard one (a SIGKILL) is not raced against this process's main thread
# getting a CPU on a loaded machine, where the handler runs.
resource.setrlimit(resource.RLIMIT_RTTIME, (realtime.RTTIME_SOFT_US, resource.RLIM_INFINITY))
policy = realtime.Realtime("on", realtime.PosixFifo(rtprio_limit=lambda: None))
policy.probe()
policy.install()
done = threading.Event()
def spin():
    end = time.thread_time() + 2.0  # the soft limit (0.1 s) stops it: SIGXCPU, dropped
    while time.thread_time() < end and not policy.dropped:
        pass
    done.set()
thread = threads.daemon_thread(spin, name="spin", role=threads.TIMER)
threads.start(thread)
done.wait()  # no timeout: a wake-up would take the GIL from the spin, which then blocks
thread.join()
print(policy.describe(), round(time.thread_time(), 2))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGXCPU"), reason="no SIGXCPU on this platform")
def test_a_real_time_thread_that_runs_past_its_rttime_is_dropped_not_killed() -> None:
    # Real: SCHED_FIFO (root here) with rtkit's soft limit; without a handler SIGXCPU kills it.
    done = subprocess.run(
        [sys.executable, "-c", _SPIN_PAST_RTTIME], capture_output=True, text=True, timeout=60
    )
    if done.returncode == 77:
        pytest.skip("SCHED_FIFO not permitted here")
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert "real-time priority: dropped" in done.stderr
    assert done.stdout.startswith("realtime SCHED_FIFO 6 (dropped: SIGXCPU)"), done.stdout


@pytest.mark.parametrize("tool", ["busctl", "gdbus", "dbus-send"])
def test_rtkit_command_for_each_dbus_tool_names_pid_thread_and_priority(tool: str) -> None:
    command = " ".join(Rtkit(tool, f"/usr/bin/{tool}").command(100, 200, 7))
    assert command.startswith(f"/usr/bin/{tool} ")
    assert "--system" in command and "MakeThreadRealtimeWithPID" in command
    assert "100" in command and "200" in command and "7" in command


def test_rtkit_is_found_by_the_tools_installed() -> None:
    assert Rtkit.find(lambda name: None) is None
    found = Rtkit.find(lambda name: f"/x/{name}" if name == "gdbus" else None)
    assert found is not None and found.tool == "gdbus"


# -- macOS and Windows, with fakes ------------------------------------------------------------------


class FakeMach:
    def __init__(self, result: int) -> None:
        self.result = result
        self.calls: list[tuple[int, int, int, int]] = []
        self.references = 0
        """Send rights on the thread's port held (mach_thread_self adds one)."""
        self.deallocated: list[tuple[int, int]] = []

    def mach_task_self(self) -> int:
        return 3

    def mach_timebase_info(self, info: Any) -> None:
        info._obj.numer, info._obj.denom = 125, 3  # Apple silicon: 24 MHz ticks

    def mach_thread_self(self) -> int:
        self.references += 1
        return 77

    def mach_port_deallocate(self, task: int, port: int) -> int:
        self.deallocated.append((task, port))
        self.references -= 1
        return 0

    def thread_policy_set(self, thread: int, flavor: int, policy: Any, count: int) -> int:
        self.calls.append((thread, flavor, policy._obj.computation, count))
        return self.result


def test_mach_time_constraint_policy_on_the_calling_thread() -> None:
    lib = FakeMach(0)
    assert MachTimeConstraint(lib).promote(6) == Outcome(True, "Mach time-constraint")
    thread, flavor, computation, count = lib.calls[0]
    assert (thread, flavor, count) == (77, 2, 4)
    assert computation == int(realtime.MACH_COMPUTATION * 1e9 * 3 / 125)
    refused = MachTimeConstraint(FakeMach(5)).promote(6)
    assert not refused.granted and "5" in refused.reason


def test_mach_thread_port_is_released_after_each_request() -> None:
    for lib in (FakeMach(0), FakeMach(5)):
        backend = MachTimeConstraint(lib)
        backend.promote(6)
        backend.promote(6)
        assert lib.references == 0
        assert lib.deallocated == [(3, 77), (3, 77)]


class FakeAvrt:
    def __init__(self, handle: int) -> None:
        self.handle = handle
        self.tasks: list[str] = []

    def AvSetMmThreadCharacteristicsW(self, task: str, index: Any) -> int:
        self.tasks.append(task)
        return self.handle


class FakeWinmm:
    def __init__(self) -> None:
        self.periods: list[int] = []

    def timeBeginPeriod(self, period: int) -> int:
        self.periods.append(period)
        return 0


def test_mmcss_pro_audio_per_thread_and_a_1_ms_timer_once() -> None:
    winmm = FakeWinmm()
    backend = Mmcss(FakeAvrt(1234), winmm)
    assert backend.promote(6) == Outcome(True, "MMCSS Pro Audio, 1 ms timer")
    assert backend.promote(5).granted
    assert winmm.periods == [1]
    refused = Mmcss(FakeAvrt(0), FakeWinmm()).promote(6)
    assert not refused.granted


def test_backends_are_chosen_by_what_the_platform_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(PosixFifo, "available", staticmethod(lambda sched=None: False))
    monkeypatch.setattr(MachTimeConstraint, "load", classmethod(lambda cls: None))
    monkeypatch.setattr(Mmcss, "load", classmethod(lambda cls: Mmcss(FakeAvrt(1), FakeWinmm())))
    assert isinstance(realtime.choose_backend(), Mmcss)
    monkeypatch.setattr(Mmcss, "load", classmethod(lambda cls: None))
    assert isinstance(realtime.choose_backend(), realtime.Unsupported)
    assert not Realtime("auto", realtime.Unsupported()).probe().granted  # type: ignore[union-attr]


def test_mmcss_loads_its_libraries_so_that_a_refusal_says_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AvSetMmThreadCharacteristicsW's error comes from ctypes.get_last_error, which is 0 for
    every call into a library not loaded with use_last_error=True: "failed (0)"."""
    loaded: list[tuple[str, dict[str, Any]]] = []

    def win_dll(name: str, **options: Any) -> Any:
        loaded.append((name, options))
        return FakeAvrt(1) if name == "avrt" else FakeWinmm()

    monkeypatch.setattr(realtime.ctypes, "WinDLL", win_dll, raising=False)
    assert isinstance(Mmcss.load(), Mmcss)
    assert loaded == [("avrt", {"use_last_error": True}), ("winmm", {"use_last_error": True})]


def test_mmcss_and_mach_are_absent_where_their_libraries_are() -> None:
    def no_dll(name: str) -> Any:
        raise OSError(f"{name}.dll not found")

    assert Mmcss.load(no_dll) is None
    assert MachTimeConstraint.load(lambda name: None) is None


# -- the policy: granted, refused, off --------------------------------------------------------------


def test_cli_choices_are_the_modes() -> None:
    assert REALTIME_MODES == realtime.MODES


def test_granted_probe_installs_the_promoter_and_a_short_switch_interval(no_promoter: None) -> None:
    backend = GrantingBackend()
    policy = Realtime("auto", backend)
    assert policy.probe() == Outcome(True, "FAKE 6")
    assert backend.threads == ["oscsync-realtime-probe"]  # asked on a thread, not this one
    assert "granted (FAKE 6" in policy.notice()
    with realtime.installed(policy):
        assert sys.getswitchinterval() == pytest.approx(realtime.SWITCH_INTERVAL)
        thread = threads.daemon_thread(lambda: None, name="r", role=threads.RECEIVE)
        threads.start(thread)
        thread.join(5)
        assert backend.threads[-1] == "r"
        assert policy.to_json()["threads_granted"] == {"receive": 1}
    assert threads.promote(threads.TIMER) is False  # uninstalled: nothing asked any more
    assert sys.getswitchinterval() != pytest.approx(realtime.SWITCH_INTERVAL)
    assert policy.describe() == "realtime FAKE 6"


def test_auto_refused_falls_back_with_a_notice_that_says_how(no_promoter: None) -> None:
    policy = Realtime("auto", GrantingBackend(granted=False))
    outcome = policy.probe()
    assert outcome is not None and not outcome.granted
    notice = policy.notice()
    assert "not granted (not permitted)" in notice and "Join the fake group" in notice
    assert policy.describe() == "realtime refused"
    assert policy.to_json()["granted"] is False
    with realtime.installed(policy):  # threads still ask (and are counted), the GIL untouched
        assert sys.getswitchinterval() != pytest.approx(realtime.SWITCH_INTERVAL)


def test_on_refused_raises_with_the_hint() -> None:
    with pytest.raises(RealtimeRefused, match=r"refused \(not permitted\): join the fake group"):
        Realtime("on", GrantingBackend(granted=False)).probe()


def test_off_asks_nothing() -> None:
    backend = GrantingBackend()
    policy = Realtime("off", backend)
    assert policy.probe() is None
    assert policy.promote(threads.TIMER) is False
    assert backend.threads == []
    assert policy.describe() == "realtime off"


def test_a_promoter_that_raises_leaves_the_thread_running(no_promoter: None) -> None:
    def broken(role: str) -> bool:
        raise OSError("no")

    threads.set_promoter(broken)
    assert threads.promote(threads.TIMER) is False


def _dump_for(policy: Realtime, *options: str) -> Any:
    return CliRunner().invoke(
        cli,
        [*options, "dump", "--listen", "127.0.0.1:0", "--duration", "0"],
        obj=AppContext(clock=FakeClock(), realtime=policy),
    )


def test_a_command_says_once_at_start_and_in_its_summary(no_promoter: None) -> None:
    result = _dump_for(Realtime("auto", GrantingBackend()))
    assert result.exit_code == 0, result.output
    assert result.stderr.count("real-time priority: granted (FAKE 6") == 1
    assert result.stderr.rstrip().endswith("realtime FAKE 6")
    assert threads.set_promoter(None) is None  # the command uninstalled it on its way out


def test_realtime_on_refused_exits_1_with_one_line(no_promoter: None) -> None:
    result = _dump_for(Realtime("on", GrantingBackend(granted=False)))
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        "Error: real-time priority refused (not permitted): join the fake group "
        "(or --realtime auto to go on without it)"
    ]


def test_realtime_option_is_a_choice() -> None:
    result = CliRunner().invoke(cli, ["--realtime", "always", "dump"])
    assert result.exit_code == 2
    assert "'always' is not one of 'auto', 'on', 'off'" in result.output


# -- never locking a core ---------------------------------------------------------------------------


def test_breather_rests_after_a_burst_without_blocking(fake_clock: FakeClock) -> None:
    breather = Breather(fake_clock, burst=0.004, rest=0.001)
    fake_clock.advance(0.003)
    assert not breather.check()
    started = fake_clock.monotonic()
    fake_clock.advance(0.00001)  # a wait woken at once by a submission: not a block
    breather.waited(started)
    fake_clock.advance(0.002)
    before = fake_clock.monotonic()
    assert breather.check()
    assert fake_clock.monotonic() - before == pytest.approx(0.001)
    started = fake_clock.monotonic()
    fake_clock.advance(0.001)  # a real wait: the burst starts over
    breather.waited(started)
    fake_clock.advance(0.0035)
    assert not breather.check()
    assert not Breather(fake_clock, enabled=False).check()


def test_a_flood_of_due_items_on_a_real_time_timer_thread_leaves_the_cpu_to_others(
    autojump_clock: FakeClock, no_promoter: None
) -> None:
    """Each item "works" 100 µs; 400 of them are due at once. A real-time thread that ran them
    back to back would hold its CPU for 40 ms: it must block for REST at least every BURST."""
    threads.set_promoter(lambda role: role == threads.TIMER)
    clock = autojump_clock
    ran: list[float] = []
    finished = threading.Event()
    count = 400

    def work(_: Dispatch) -> None:
        ran.append(clock.monotonic())
        clock.advance(0.0001)
        if len(ran) == count:
            finished.set()

    scheduler = Scheduler(clock)
    with scheduler:
        for _ in range(count):
            scheduler.submit(None, work)
        scheduler.start()
        clock.wait(finished, 10.0)
        assert scheduler.realtime is True
    assert len(ran) == count
    gaps = [b - a - 0.0001 for a, b in itertools.pairwise(ran)]
    rests = [i for i, gap in enumerate(gaps) if gap >= realtime.REST - 1e-9]
    assert rests, "never rested"
    busy_stretches = [b - a for a, b in zip([0, *rests], [*rests, len(gaps)])]
    assert max(busy_stretches) * 0.0001 <= realtime.BURST + 0.0002
    assert len(rests) >= count * 0.0001 / (realtime.BURST + 0.0002) - 1


def test_an_ordinary_timer_thread_does_not_rest(
    autojump_clock: FakeClock, no_promoter: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nor does it give way between due items: an ordinary thread that gives the GIL away
    gets it back from a busy thread only after the switch interval (5 ms late)."""
    gave_way: list[str] = []
    monkeypatch.setattr(
        "oscsync.scheduler.give_way", lambda: gave_way.append(threading.current_thread().name)
    )
    clock = autojump_clock
    ran: list[float] = []
    finished = threading.Event()

    def work(_: Dispatch) -> None:
        ran.append(clock.monotonic())
        clock.advance(0.0001)
        if len(ran) == 100:
            finished.set()

    with Scheduler(clock) as scheduler:
        for _ in range(100):
            scheduler.submit(None, work)
        scheduler.start()
        clock.wait(finished, 10.0)
        assert scheduler.realtime is False
    assert ran[-1] - ran[0] == pytest.approx(99 * 0.0001)
    assert gave_way == []


def test_receive_threads_ask_for_real_time_with_their_role(no_promoter: None) -> None:
    """The GIL case (issue 29): a receive thread left ordinary, preempted while it holds the
    interpreter, keeps a real-time timer thread waiting. UDP and TCP receive threads ask."""
    from oscsync.net.hostport import HostPort
    from oscsync.net.tcplistener import TcpListener
    from oscsync.net.udp import Endpoint

    asked: list[tuple[str, str]] = []
    threads.set_promoter(lambda role: asked.append((role, threading.current_thread().name)) or True)
    with Endpoint(HostPort("127.0.0.1", 0)) as endpoint:
        endpoint.start(lambda received: None)
        wait_until(lambda: asked, 5.0, "the receive thread to ask")
    with TcpListener(HostPort("127.0.0.1", 0), lambda *packet: None) as listener:
        listener.start()
        wait_until(lambda: len(asked) == 2, 5.0, "the TCP receive thread to ask")
    assert asked == [(threads.RECEIVE, "oscsync-recv"), (threads.RECEIVE, "oscsync-tcp-listen")]


def test_a_real_time_receive_thread_rests_under_a_flood(no_promoter: None) -> None:
    """Each datagram "costs" 100 µs of fake time: a receive thread that read 400 queued ones
    back to back would hold its CPU for 40 ms. Promoted, it must rest REST every BURST or so."""
    from oscsync.net.hostport import HostPort
    from oscsync.net.udp import Endpoint

    threads.set_promoter(lambda role: role == threads.RECEIVE)
    clock = FakeClock()  # one thread uses it: the receive thread (its rests are jumps)
    handled: list[float] = []
    count = 400
    with Endpoint(HostPort("127.0.0.1", 0), clock=clock) as endpoint:
        target = endpoint.local_address
        assert target is not None
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for k in range(count):  # queued before the thread starts: one flood
                sender.sendto(codec_message(k), target.sockaddr)

        def handle(_: object) -> None:
            handled.append(clock.monotonic())
            clock.advance(0.0001)

        endpoint.start(handle)
        wait_until(
            lambda: len(handled) == count, 10.0, "the flood to be read", state=lambda: len(handled)
        )
    gaps = [b - a - 0.0001 for a, b in itertools.pairwise(handled)]
    rests = [i for i, gap in enumerate(gaps) if gap >= realtime.REST - 1e-9]
    assert rests, "never rested"
    stretches = [b - a for a, b in itertools.pairwise([0, *rests, len(gaps)])]
    # A look at the Breather every 64 datagrams (6.4 ms of this fake work) at most.
    assert max(stretches) * 0.0001 <= realtime.BURST + 64 * 0.0001


def codec_message(k: int) -> bytes:
    from oscsync.osc import codec

    return codec.encode_message("/flood", [k], "i")
