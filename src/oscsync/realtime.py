"""Real-time priority for the threads that keep time: asked for where the OS grants it, reported.

On a busy laptop the tail of every timing figure is the OS preempting our threads: with both
cores of the workshop VM kept busy by ``yes``, the scheduler ran one item in four more than 1 ms
late (p99 5.2 ms); the same process under ``chrt -f 50`` ran none (p99 8 µs; issue 29). JACK,
scsynth and Pure Data (``-rt``) ask for the same thing. Here the threads that keep time (the
scheduler's timer thread, which also sends for ``metronome send`` and ``replay``, and the
receive threads) ask for it on themselves as they start (:func:`oscsync.threads.promote`),
through one :class:`Backend` chosen by what the platform offers (never by its name):

* **POSIX** (``os.sched_setscheduler``; per thread on Linux): ``SCHED_FIFO`` with
  ``SCHED_RESET_ON_FORK`` (threads and processes the promoted one starts do not inherit it),
  at a priority below JACK's and PipeWire's audio threads (:data:`PRIORITIES`), lowered to the
  ``rtprio`` limit when that is smaller. Granted to root (``CAP_SYS_NICE``), to a user with an
  ``rtprio`` limit (Debian's jackd2 gives the ``audio`` group 95 in
  ``/etc/security/limits.d/audio.conf``), or else through **rtkit** over D-Bus as PipeWire does:
  ``MakeThreadRealtimeWithPID`` sent with the system's own ``busctl``, ``gdbus`` or
  ``dbus-send`` (no Python D-Bus library), which rtkit grants as ``SCHED_RR`` up to its
  priority 20 once the process's hard ``RLIMIT_RTTIME`` is at most :data:`RTKIT_RTTIME_US`.
  A thread that then runs that long without blocking gets the process killed, so the soft
  limit is set below it (:data:`RTTIME_SOFT_US`): the kernel sends ``SIGXCPU`` there, whose
  handler (installed from the main thread by :meth:`Realtime.install`) drops every promoted
  thread to ordinary scheduling and says so once.
* **macOS**: the Mach time-constraint policy Core Audio's threads use (``thread_policy_set``
  through ctypes), which needs no privilege.
* **Windows**: MMCSS's "Pro Audio" task (``AvSetMmThreadCharacteristicsW``) and a 1 ms timer
  resolution (``timeBeginPeriod(1)``) for the process.

The macOS and Windows paths are exercised only with fakes in this repository's tests.

**Never locking a core.** A ``SCHED_FIFO`` thread that does not block keeps its CPU from every
ordinary process (Linux keeps back 5 % of each second, ``sched_rt_runtime_us``). The scheduler
spins only the last stretch before a due time, and a real-time thread keeps a
:class:`Breather`: after :data:`BURST` seconds without blocking it sleeps :data:`REST`, so a
flood of due items or datagrams leaves others at least a fifth of the CPU.

**The GIL.** A timer thread with real-time priority still waits for the GIL; a receive thread
that holds it while preempted by an ordinary process is priority inversion. The receive thread
is therefore promoted too (one step below the timer), and a promoted process shortens Python's
switch interval (:data:`SWITCH_INTERVAL`), which bounds how long a thread that wants the GIL
waits for one that computes (benchmarks/busy.py measures both).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from oscsync import threads
from oscsync.clock import Clock

try:
    import resource  # POSIX only
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]

Mode = Literal["auto", "on", "off"]
MODES: tuple[Mode, ...] = ("auto", "on", "off")
"""``--realtime``: ``auto`` asks and falls back quietly (a notice says which), ``on`` fails
with how to get it, ``off`` does not ask."""

PRIORITIES = {threads.TIMER: 6, threads.RECEIVE: 5}
"""``SCHED_FIFO`` priority per role: above every ordinary process, below the audio threads of
JACK (its default ``-P 10``) and PipeWire (rtkit's 20), so a sound card's callback still
preempts us. The timer is above the receive thread: when it wakes on the receive thread's CPU
it runs first."""

RTKIT_RTTIME_US = 200_000
"""rtkit refuses a process whose hard ``RLIMIT_RTTIME`` is above its cap (default 200 ms of CPU
without blocking; it reads the hard limit): the hard limit is lowered to that before asking.
Reaching it is a SIGKILL. The :class:`Breather` blocks far more often."""
RTTIME_SOFT_US = RTKIT_RTTIME_US // 2
"""The soft limit: reaching it sends ``SIGXCPU`` (by default a core dump), which
:meth:`Realtime.install`'s handler turns into dropping real-time priority, before the hard one."""

RT_SPIN = 0.0005
"""The scheduler's spin (s) on a real-time timer thread, instead of its 2 ms default: a
promoted thread's timed wait ends within p99 ~150 µs of its deadline with both cores busy (1.6 ms
at worst seen on the shared VM), where an ordinary one's ends up to 10 ms late; a shorter spin
is CPU given back to the rest of the machine."""

SWITCH_INTERVAL = RT_SPIN
"""Python's switch interval while real-time threads run (default 5 ms): how long a thread that
wants the GIL waits before it makes the holder let go. Equal to the spin, because the timer thread
wakes RT_SPIN before a due time and must (a) get the GIL from a busy receive thread within that
time, and (b) keep it until the due time against the receive thread's own request, which comes
one interval after it started waiting: both hold only with the interval equal to the spin.
Measured (benchmarks/busy.py, 20,000 plain datagrams/s into the same process, both cores busy,
timer and receive threads real-time): max lateness 0.2 µs at 0.5 ms, 0.37-0.8 ms at the
default 5 ms; with the receive thread left ordinary, p99 1.3-4.3 ms whatever the interval (it
holds the GIL while preempted)."""

BURST = 0.004
"""Seconds a real-time thread may run without blocking before its :class:`Breather` rests."""
REST = 0.001
"""Seconds it then sleeps: others get at least REST / (BURST + REST) = 20 % of its CPU."""
MIN_BLOCK = 0.00005
"""A wait at least this long counts as having given the CPU away (the wake-up alone costs the
OS about as much); one woken at once by a submission does not."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one request for the calling thread came to."""

    granted: bool
    how: str
    """What was asked or granted, e.g. ``SCHED_FIFO 6``, ``rtkit SCHED_RR 6``."""
    reason: str = ""
    """Why not (when refused), one phrase."""

    def __str__(self) -> str:
        return self.how if self.granted else f"{self.how} refused: {self.reason}"


class Backend(Protocol):
    """One platform's way to ask real-time priority for the calling thread."""

    name: str

    def promote(self, priority: int) -> Outcome:
        """Ask for the calling thread; ``priority`` is the POSIX one (others ignore it)."""

    def hint(self) -> str:
        """One sentence: how a user gets it granted on this platform."""


# -- POSIX (Linux) ----------------------------------------------------------------------------


class Rtkit:
    """Asks rtkit (``org.freedesktop.RealtimeKit1``, on the system bus) to promote a thread,
    with whichever of ``busctl``, ``gdbus`` or ``dbus-send`` is installed."""

    name = "rtkit"

    def __init__(
        self,
        tool: str,
        path: str,
        run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run,
    ) -> None:
        self.tool = tool
        self.path = path
        self._run = run

    @classmethod
    def find(cls, which: Callable[[str], str | None] = shutil.which) -> Rtkit | None:
        for tool in ("busctl", "gdbus", "dbus-send"):
            path = which(tool)
            if path is not None:
                return cls(tool, path)
        return None

    def command(self, pid: int, tid: int, priority: int) -> list[str]:
        service, obj, method = (
            "org.freedesktop.RealtimeKit1",
            "/org/freedesktop/RealtimeKit1",
            "MakeThreadRealtimeWithPID",
        )
        if self.tool == "busctl":
            numbers = (str(pid), str(tid), str(priority))
            return [
                *(self.path, "call", "--system", "--timeout=1", service, obj, service, method),
                *("ttu", *numbers),
            ]
        if self.tool == "gdbus":
            return [
                *(self.path, "call", "--system", "--timeout", "1", "--dest", service),
                *("--object-path", obj),
                *("--method", f"{service}.{method}"),
                *(f"uint64 {pid}", f"uint64 {tid}", f"uint32 {priority}"),  # GVariant text
            ]
        return [
            *(self.path, "--system", "--print-reply", "--reply-timeout=1000", f"--dest={service}"),
            obj,
            f"{service}.{method}",
            *(f"uint64:{pid}", f"uint64:{tid}", f"uint32:{priority}"),
        ]

    def make_realtime(self, tid: int, priority: int) -> Outcome:
        how = f"rtkit SCHED_RR {priority}"
        _limit_rttime()
        try:
            done = self._run(
                self.command(os.getpid(), tid, priority),
                capture_output=True,
                text=True,
                timeout=1.5,  # a command's start waits for this once: never long
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return Outcome(False, how, f"{self.tool}: {exc}")
        if done.returncode != 0:
            lines = (done.stderr or done.stdout or "").strip().splitlines()
            return Outcome(False, how, lines[-1] if lines else f"{self.tool} failed")
        return Outcome(True, how)


def _limit_rttime(res: Any = resource) -> None:
    """Hard ``RLIMIT_RTTIME`` at most :data:`RTKIT_RTTIME_US` (rtkit's condition), soft at
    most half of it (a ``SIGXCPU`` before the SIGKILL: see :meth:`Realtime.install`)."""
    if res is None:
        return
    limit = getattr(res, "RLIMIT_RTTIME", None)
    if limit is None:
        return
    infinity = res.RLIM_INFINITY
    with contextlib.suppress(OSError, ValueError):
        soft, hard = res.getrlimit(limit)
        new_hard = RTKIT_RTTIME_US if hard == infinity else min(hard, RTKIT_RTTIME_US)
        new_soft = new_hard * RTTIME_SOFT_US // RTKIT_RTTIME_US
        if soft != infinity:
            new_soft = min(soft, new_soft)
        if (new_soft, new_hard) != (soft, hard):
            res.setrlimit(limit, (new_soft, new_hard))


class PosixFifo:
    """``SCHED_FIFO`` for the calling thread (``os.sched_setscheduler`` on its native id), then
    rtkit when that is not permitted."""

    name = "SCHED_FIFO"

    def __init__(
        self,
        sched: Any = os,
        rtkit: Rtkit | None = None,
        rtprio_limit: Callable[[], int | None] | None = None,
    ) -> None:
        self._sched = sched
        self.rtkit = rtkit
        self._rtprio_limit = rtprio_limit if rtprio_limit is not None else _rtprio_limit
        self._rtkit_failed = False
        # Reentrant: demote_all runs in the SIGXCPU handler, which may interrupt the main
        # thread inside this lock (a plain Lock would deadlock it).
        self._lock = threading.RLock()
        self._promoted: dict[int, threading.Thread] = {}
        """Threads granted, by native id (:meth:`demote_all` drops the live ones)."""
        self.demoted = False
        """True once :meth:`demote_all` ran: no thread is promoted from then on."""

    @staticmethod
    def available(sched: Any = os) -> bool:
        return hasattr(sched, "sched_setscheduler") and hasattr(sched, "SCHED_FIFO")

    def promote(self, priority: int) -> Outcome:
        if self.demoted:
            return Outcome(False, f"SCHED_FIFO {priority}", "dropped after SIGXCPU")
        outcome = self._promote(priority)
        if outcome.granted:
            with self._lock:
                self._promoted[threading.get_native_id()] = threading.current_thread()
            # SIGXCPU is sent to the process: blocked here, it interrupts the main thread's
            # waits, where its handler runs, not this one (which may be computing). Never
            # blocked in the main thread, which must take it.
            block = getattr(signal, "pthread_sigmask", None)
            xcpu = getattr(signal, "SIGXCPU", None)
            main = threading.current_thread() is threading.main_thread()
            if block is not None and xcpu is not None and not main:
                block(signal.SIG_BLOCK, {xcpu})
        return outcome

    def demote_all(self) -> int:
        """Every live thread granted so far back to ordinary scheduling, and none promoted
        from now on (after ``SIGXCPU``); returns how many were dropped."""
        sched = self._sched
        self.demoted = True
        policy = getattr(sched, "SCHED_OTHER", 0) | getattr(sched, "SCHED_RESET_ON_FORK", 0)
        with self._lock:
            promoted = [tid for tid, thread in self._promoted.items() if thread.is_alive()]
            self._promoted.clear()
        dropped = 0
        for tid in promoted:
            try:  # lowering needs no privilege (nor rtkit)
                sched.sched_setscheduler(tid, policy, sched.sched_param(0))
                dropped += 1
            except OSError:  # ended meanwhile
                pass
        return dropped

    def _promote(self, priority: int) -> Outcome:
        sched = self._sched
        limit = self._rtprio_limit()
        if limit is not None and 0 < limit < priority:
            priority = limit  # the limit a user was given is what they may use
        policy = sched.SCHED_FIFO | getattr(sched, "SCHED_RESET_ON_FORK", 0)
        how = f"SCHED_FIFO {priority}"
        tid = threading.get_native_id()
        try:
            sched.sched_setscheduler(tid, policy, sched.sched_param(priority))
            return Outcome(True, how)
        except PermissionError:
            reason = "not permitted"
        except OSError as exc:
            reason = exc.strerror or str(exc)
        if self.rtkit is not None and not self._rtkit_failed:
            outcome = self.rtkit.make_realtime(tid, min(priority, 20))
            if outcome.granted:
                return outcome
            self._rtkit_failed = True  # once: asking again would only cost a process each time
            reason += f"; rtkit: {outcome.reason}"
        return Outcome(False, how, reason)

    def hint(self) -> str:
        return (
            "to get it, join the audio group (Debian's jackd2 gives it rtprio 95: "
            "sudo usermod -aG audio $USER, then log in again), or add 'USER - rtprio 95' to "
            "/etc/security/limits.conf, or run as root"
        )


def _rtprio_limit() -> int | None:
    if resource is None:
        return None
    limit = getattr(resource, "RLIMIT_RTPRIO", None)
    if limit is None:
        return None
    try:
        soft, _ = resource.getrlimit(limit)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


# -- macOS ------------------------------------------------------------------------------------


class _TimeConstraintPolicy(ctypes.Structure):
    _fields_ = (
        ("period", ctypes.c_uint32),
        ("computation", ctypes.c_uint32),
        ("constraint", ctypes.c_uint32),
        ("preemptible", ctypes.c_int),
    )


class _TimebaseInfo(ctypes.Structure):
    _fields_ = (("numer", ctypes.c_uint32), ("denom", ctypes.c_uint32))


THREAD_TIME_CONSTRAINT_POLICY = 2
THREAD_TIME_CONSTRAINT_POLICY_COUNT = 4
MACH_COMPUTATION = 0.0005
"""Seconds of CPU the time-constraint policy promises a thread per period (a spin of RT_SPIN
plus an action); a thread that uses more is demoted by the kernel, not the machine locked."""
MACH_CONSTRAINT = 0.001
"""...within this many seconds of being woken (Core Audio asks its buffer's length)."""


class MachTimeConstraint:
    """The Mach time-constraint policy for the calling thread (``thread_policy_set``)."""

    name = "Mach time-constraint"

    def __init__(self, lib: Any) -> None:
        self._lib = lib

    @classmethod
    def load(
        cls, find: Callable[[str], str | None] = ctypes.util.find_library
    ) -> MachTimeConstraint | None:
        path = find("System")
        if path is None:
            return None
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            return None
        wanted = ("thread_policy_set", "mach_thread_self", "mach_port_deallocate")
        if not all(hasattr(lib, f) for f in wanted):
            return None
        return cls(lib)

    def _ticks(self, seconds: float) -> int:
        info = _TimebaseInfo()
        self._lib.mach_timebase_info(ctypes.byref(info))
        return int(seconds * 1e9 * info.denom / max(1, info.numer))

    def _task_self(self) -> int:
        # mach_task_self() is a macro that reads the global mach_task_self_.
        try:
            return ctypes.c_uint32.in_dll(self._lib, "mach_task_self_").value
        except (AttributeError, TypeError, ValueError):  # not a real library, or no such symbol
            return int(self._lib.mach_task_self())

    def promote(self, priority: int) -> Outcome:
        policy = _TimeConstraintPolicy(
            0, self._ticks(MACH_COMPUTATION), self._ticks(MACH_CONSTRAINT), 1
        )
        # mach_thread_self() adds a reference to the thread's port each call: give it back,
        # or every promoted thread leaks one.
        port = self._lib.mach_thread_self()
        try:
            result = self._lib.thread_policy_set(
                port,
                THREAD_TIME_CONSTRAINT_POLICY,
                ctypes.byref(policy),
                THREAD_TIME_CONSTRAINT_POLICY_COUNT,
            )
        finally:
            self._lib.mach_port_deallocate(self._task_self(), port)
        if result != 0:
            return Outcome(False, self.name, f"thread_policy_set returned {result}")
        return Outcome(True, self.name)

    def hint(self) -> str:
        return "macOS refused the time-constraint policy (it needs no privilege: please report it)"


# -- Windows ----------------------------------------------------------------------------------


class Mmcss:
    """MMCSS's "Pro Audio" task for the calling thread, and 1 ms timer resolution (once)."""

    name = "MMCSS Pro Audio"
    TASK = "Pro Audio"

    def __init__(self, avrt: Any, winmm: Any) -> None:
        self._avrt = avrt
        self._winmm = winmm
        self._period_set = False
        self._lock = threading.Lock()

    @classmethod
    def load(cls, loader: Callable[[str], Any] | None = None) -> Mmcss | None:
        if loader is None:
            win_dll = getattr(ctypes, "WinDLL", None)
            if win_dll is None:
                return None
            # Only a library loaded so keeps the error for ctypes.get_last_error (else it is 0).
            loader = functools.partial(win_dll, use_last_error=True)
        try:
            avrt, winmm = loader("avrt"), loader("winmm")
        except OSError:
            return None
        if not hasattr(avrt, "AvSetMmThreadCharacteristicsW"):
            return None
        return cls(avrt, winmm)

    def promote(self, priority: int) -> Outcome:
        with self._lock:
            if not self._period_set:
                # Sleeps and waits end on a 15.6 ms tick otherwise; the process keeps 1 ms.
                self._period_set = self._winmm.timeBeginPeriod(1) == 0
        index = ctypes.c_uint32(0)
        handle = self._avrt.AvSetMmThreadCharacteristicsW(self.TASK, ctypes.byref(index))
        if not handle:
            error = getattr(ctypes, "get_last_error", lambda: 0)()
            return Outcome(False, self.name, f"AvSetMmThreadCharacteristicsW failed ({error})")
        return Outcome(True, self.name + (", 1 ms timer" if self._period_set else ""))

    def hint(self) -> str:
        return "Windows refused MMCSS: is the Multimedia Class Scheduler service running?"


class Unsupported:
    name = "none"

    def promote(self, priority: int) -> Outcome:
        return Outcome(False, "real-time priority", "this platform offers no way to ask for it")

    def hint(self) -> str:
        return "this platform offers no real-time priority that oscsync knows how to ask for"


def choose_backend() -> Backend:
    """The first way the platform offers: POSIX scheduling, Mach, MMCSS; else none."""
    if PosixFifo.available():
        return PosixFifo(rtkit=Rtkit.find())
    mach = MachTimeConstraint.load()
    if mach is not None:
        return mach
    mmcss = Mmcss.load()
    if mmcss is not None:
        return mmcss
    return Unsupported()


# -- the policy ---------------------------------------------------------------------------------


class RealtimeRefused(RuntimeError):
    """``--realtime on`` and the OS said no; the message says how to get it (one line)."""


@dataclass
class Realtime:
    """A process's ``--realtime`` request and what came of it, thread by thread.

    :meth:`probe` asks once on a short-lived thread (the answer a command states at start);
    :meth:`install` makes every thread started with a role ask on itself from then on.
    """

    mode: Mode = "auto"
    backend: Backend | None = None
    switch_interval: float = SWITCH_INTERVAL
    outcome: Outcome | None = None
    """The probe's answer (None before :meth:`probe`, and with ``off``)."""
    granted_roles: dict[str, int] = field(default_factory=dict)
    refused_roles: dict[str, int] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    """Reentrant: :meth:`drop` runs in the SIGXCPU handler, which may interrupt the main thread
    inside it (:meth:`describe` in a summary)."""
    dropped: str = ""
    """Why real-time priority was dropped while running (``SIGXCPU``), else empty."""
    _installed: tuple[threads.Promoter | None, float] | None = field(default=None, repr=False)
    _xcpu_previous: Any = field(default=None, repr=False)
    _warn: Callable[[str], None] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"realtime mode must be one of {', '.join(MODES)}, got {self.mode!r}")

    def _backend(self) -> Backend:
        if self.backend is None:
            self.backend = choose_backend()
        return self.backend

    @property
    def granted(self) -> bool:
        return self.outcome is not None and self.outcome.granted

    def probe(self) -> Outcome | None:
        """Ask once, on a thread that ends at once (None with ``off``); with ``on`` a refusal
        raises :class:`RealtimeRefused` with the hint."""
        if self.mode == "off":
            return None
        answer: list[Outcome] = []
        asker = threads.daemon_thread(
            lambda: answer.append(self._backend().promote(PRIORITIES[threads.TIMER])),
            name="oscsync-realtime-probe",
        )
        threads.start(asker)
        asker.join()
        self.outcome = (
            answer[0] if answer else Outcome(False, "real-time priority", "the probe failed")
        )
        if self.mode == "on" and not self.outcome.granted:
            raise RealtimeRefused(self.refusal())
        return self.outcome

    def promote(self, role: str) -> bool:
        """Ask for the calling thread (``role`` picks the priority); counted per role."""
        if self.mode == "off":
            return False
        outcome = self._backend().promote(PRIORITIES.get(role, PRIORITIES[threads.RECEIVE]))
        with self._lock:
            book = self.granted_roles if outcome.granted else self.refused_roles
            book[role] = book.get(role, 0) + 1
        return outcome.granted

    def install(self, warn: Callable[[str], None] | None = None) -> None:
        """From now on threads started with a role ask on themselves, and, once granted, the GIL
        changes hands every :attr:`switch_interval`. Undo with :meth:`uninstall`.

        Called from the main thread where the platform has ``SIGXCPU`` (sent when a real-time
        thread reaches the soft ``RLIMIT_RTTIME``; by default it kills the process), it also
        handles that signal: every promoted thread is dropped to ordinary scheduling and
        ``warn`` (default: stderr) says so once."""
        if self._installed is not None or self.mode == "off":
            return
        previous = threads.set_promoter(self.promote)
        interval = sys.getswitchinterval()
        if self.granted:
            sys.setswitchinterval(min(interval, self.switch_interval))
        self._installed = (previous, interval)
        self._warn = warn
        xcpu = getattr(signal, "SIGXCPU", None)
        if (
            xcpu is not None
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(xcpu) == signal.SIG_DFL
        ):
            self._xcpu_previous = signal.signal(xcpu, self._on_xcpu)

    def _on_xcpu(self, signum: int, frame: object) -> None:
        self.drop("a real-time thread ran its RLIMIT_RTTIME without blocking (SIGXCPU)")

    def drop(self, reason: str) -> None:
        """Drop every thread's real-time priority (and ask for none from now on); say so once."""
        demote = getattr(self._backend(), "demote_all", None)
        if demote is not None:
            demote()
        with self._lock:
            first = not self.dropped
            self.dropped = self.dropped or reason
        if first:
            line = f"real-time priority: dropped: {reason}; timing may run late from now on"
            # In a signal handler: the main thread may be inside a write to stderr already.
            with contextlib.suppress(RuntimeError, OSError):
                if self._warn is not None:
                    self._warn(line)
                else:
                    print(line, file=sys.stderr)

    def uninstall(self) -> None:
        if self._installed is None:
            return
        previous, interval = self._installed
        threads.set_promoter(previous)
        sys.setswitchinterval(interval)
        self._installed = None
        xcpu = getattr(signal, "SIGXCPU", None)
        if self._xcpu_previous is not None and xcpu is not None:
            with contextlib.suppress(ValueError):  # not the main thread
                signal.signal(xcpu, self._xcpu_previous)
            self._xcpu_previous = None

    def refusal(self) -> str:
        """``--realtime on``'s error: what was refused and how to get it, one line."""
        reason = "" if self.outcome is None else self.outcome.reason
        return (
            f"real-time priority refused ({reason}): {self._backend().hint()} "
            "(or --realtime auto to go on without it)"
        )

    def notice(self) -> str:
        """The line a command prints at start."""
        if self.mode == "off" or self.outcome is None:
            return "real-time priority: off (--realtime off): timing may run late on a busy machine"
        if self.outcome.granted:
            return f"real-time priority: granted ({self.outcome.how} for the timing threads)"
        hint = self._backend().hint()
        return (
            f"real-time priority: not granted ({self.outcome.reason}); on a busy machine "
            f"ticks may be played late by milliseconds. {hint[:1].upper()}{hint[1:]}."
        )

    def describe(self) -> str:
        """For a summary line: ``realtime SCHED_FIFO 6``, ``realtime refused``, ``realtime off``."""
        if self.mode == "off" or self.outcome is None:
            return "realtime off"
        if not self.outcome.granted:
            return "realtime refused"
        with self._lock:
            refused = sum(self.refused_roles.values())
        if self.dropped:
            return f"realtime {self.outcome.how} (dropped: SIGXCPU)"
        return f"realtime {self.outcome.how}" + (f" ({refused} threads refused)" if refused else "")

    def to_json(self) -> dict[str, Any]:
        """For JSON output: the mode, whether granted, how, why not, and per-role counts."""
        with self._lock:
            return {
                "mode": self.mode,
                "granted": self.granted,
                "how": None if self.outcome is None else self.outcome.how,
                "reason": None if self.outcome is None or self.granted else self.outcome.reason,
                "threads_granted": dict(self.granted_roles),
                "threads_refused": dict(self.refused_roles),
            }


@contextlib.contextmanager
def installed(policy: Realtime) -> Iterator[Realtime]:
    """``with installed(policy):`` — :meth:`Realtime.install` for the block."""
    policy.install()
    try:
        yield policy
    finally:
        policy.uninstall()


# -- a real-time thread gives way ----------------------------------------------------------------


class Breather:
    """Keeps a real-time thread from holding its CPU: a thread that has run :data:`BURST`
    seconds since it last blocked sleeps :data:`REST` seconds at its next :meth:`check`.

    The thread tells it how long each of its waits lasted (:meth:`waited`: a wait of at least
    :data:`MIN_BLOCK` gave the CPU away; one that returned at once, woken by a submission, did
    not) and calls :meth:`check` between items. ``enabled`` False (an ordinary thread, which the
    OS preempts anyway) makes both free.
    """

    def __init__(
        self, clock: Clock, *, enabled: bool = True, burst: float = BURST, rest: float = REST
    ) -> None:
        self.clock = clock
        self.enabled = enabled
        self.burst = burst
        self.rest = rest
        self.rests = 0
        """How many times it rested (tests and benchmarks read it)."""
        self._since = clock.monotonic()

    def waited(self, started: float) -> None:
        """The thread's wait that began at monotonic ``started`` has ended."""
        if self.enabled:
            now = self.clock.monotonic()
            if now - started >= MIN_BLOCK:
                self._since = now

    def check(self) -> bool:
        """Rest if the thread has run too long; True if it did."""
        if not self.enabled:
            return False
        clock = self.clock
        if clock.monotonic() - self._since < self.burst:
            return False
        clock.sleep(self.rest)
        self.rests += 1
        self._since = clock.monotonic()
        return True


_SCHED_YIELD: Callable[[], None] | None = getattr(os, "sched_yield", None)


def give_way() -> None:
    """Let another thread run now: the GIL is released around ``sched_yield``, and a thread of
    the same real-time priority gets the CPU (Windows: nothing)."""
    if _SCHED_YIELD is not None:
        _SCHED_YIELD()
