"""Shared fixtures: real peers (required under CI), free loopback ports, running the CLI."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest
from click.testing import CliRunner

import jackharness
from jackharness import JackServer
from linkpeer import interface_names, multicast_route_on_lo
from oscsync.clock import FakeClock
from waiting import wait_until

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Issue 27: no test sends mDNS out of this machine. Every `--interface` and every `@NAME`
# lookup without one reads this (subprocesses inherit it); a test that means another interface
# says so explicitly. `make test` also runs the suite in a network namespace with only `lo`.
os.environ["OSCSYNC_MDNS_INTERFACE"] = "loopback"
# Issue 27 item 2: a developer's own key must not sign the suite's traffic; a test that wants a
# key gives one.
os.environ.pop("OSCSYNC_KEY", None)
os.environ.pop("OSCSYNC_KEY_FILE", None)

# Real-time priority is asked for only where a test says so (tests/test_realtime.py, with fake
# backends): what the OS grants depends on the machine and on who runs the suite, and a notice
# on stderr would change every command's output. benchmarks/busy.py measures the real thing.
os.environ["OSCSYNC_REALTIME"] = "off"


def missing(message: str) -> NoReturn:
    """A real peer the test needs is missing (``message`` says which and how to get it): skip
    locally, **fail** under CI=true."""
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def unusable(what: str, reason: str) -> NoReturn:
    """:func:`missing`: ``what`` is installed but cannot be used, for ``reason``."""
    missing(f"{what} is not usable: {reason} (make test installs it)")


def require_peer(program: str) -> str:
    """Path of a peer program: missing skips locally and **fails** under CI=true."""
    path = shutil.which(program)
    if path is None:
        missing(f"{program} is not installed (make test installs it with apt-get)")
    return path


def require_module(name: str) -> Any:
    """An optional Python module a test needs (from the test extra): missing skips locally and
    **fails** under CI=true, as a missing peer program does."""
    try:
        return importlib.import_module(name)
    except ImportError as error:
        missing(f"{name} is not importable ({error}); make test installs it with .[test,audio]")


@contextlib.contextmanager
def private_jack(
    monkeypatch: pytest.MonkeyPatch,
    rate: int = jackharness.RATE,
    period: int = jackharness.PERIOD,
    modules: tuple[str, ...] = ("jack",),
) -> Iterator[JackServer]:
    """A private ``jackd -d dummy`` at ``rate`` Hz with ``period``-frame periods
    (tests/jackharness.py), named in ``JACK_DEFAULT_SERVER`` for what the test starts, always
    stopped afterwards. jackd, jack_wait or a Python module of ``modules`` (``jack``: the
    JACK-Client package) missing or unusable: :func:`missing`."""
    require_peer("jackd")
    require_peer("jack_wait")
    for module in modules:
        try:
            __import__(module)
        except (ImportError, OSError) as exc:
            unusable("JACK-Client" if module == "jack" else module, str(exc))
    try:
        with jackharness.jack_server(rate, period) as server:
            monkeypatch.setenv("JACK_DEFAULT_SERVER", server.name)
            yield server
    except jackharness.JackUnavailable as exc:
        unusable("jackd", str(exc))


def require_link_network(*modules: str) -> None:
    """Link finds its peers by multicast: its tests run only in a network namespace whose only
    interface is ``lo``, with multicast routed on it (``scripts/isolated``, as ``make test``
    runs pytest), never where a real network could hear them; and with the Link bindings
    (``modules``) installed. Otherwise skipped with the reason, and failed under CI=true."""
    reason = None
    names = interface_names()
    if names != ["lo"]:
        reason = (
            f"Link's multicast must not reach a real network: not in a namespace with only lo "
            f"(interfaces here: {', '.join(names) or 'unknown'}); run pytest through scripts/isolated"
        )
    elif not multicast_route_on_lo():
        reason = "no 224.0.0.0/4 route on lo: Link's peers cannot find each other (scripts/isolated adds it)"
    else:
        import importlib.util

        absent = [name for name in modules if importlib.util.find_spec(name) is None]
        if absent:
            reason = f"{', '.join(absent)} not installed (pip install -e '.[test]')"
    if reason is not None:
        missing(reason)


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now (bind to 0, read it, release it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def udp_port() -> int:
    return free_udp_port()


@pytest.fixture
def fake_clock() -> FakeClock:
    """One-thread fake time: a sleep or wait on it is itself the jump."""
    return FakeClock()


@pytest.fixture
def autojump_clock() -> FakeClock:
    """Fake time for threads (trio's ``autojump_clock``): made by the test thread, it jumps to the
    earliest deadline once the test thread and every thread waiting on it are blocked there."""
    return FakeClock(autojump_threshold=0)


@pytest.fixture
def cli_runner() -> CliRunner:
    return CliRunner()


def oscsync_command(*args: str) -> list[str]:
    """argv that runs the CLI in a subprocess with this interpreter (no PATH lookup needed)."""
    return [sys.executable, "-m", "oscsync", *args]


class ChildProcesses:
    """Programs run in child processes for a test (unbuffered, stdin closed unless given,
    output piped as text); :meth:`close`, or the end of ``with``, stops every one still running
    (SIGTERM, then kill) and closes its pipes."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen[str]] = []

    def popen(
        self,
        argv: list[str],
        *,
        stdin: int | None = subprocess.DEVNULL,
        stderr: int = subprocess.PIPE,
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.started.append(proc)
        return proc

    def oscsync(self, *args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
        """``oscsync ARGS...`` (:func:`oscsync_command`)."""
        return self.popen(oscsync_command(*args), stdin=stdin)

    def close(self) -> None:
        for proc in self.started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    stream.close()

    def __enter__(self) -> ChildProcesses:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


Spawn = Callable[..., subprocess.Popen[str]]
"""What the ``spawn`` fixture gives: ``spawn("dump", "-l", ...)`` starts ``oscsync dump -l ...``."""


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start oscsync subprocesses; every one is stopped (SIGTERM, then kill) at test end."""
    with ChildProcesses() as children:
        yield children.oscsync


def leader_through_bridge(
    start: Spawn, *bridge: str, ticks: int, bpm: float, offset: float, skew: float
) -> tuple[str, str, list[float]]:
    """Issue 28's bridge done-when, as the tests and benchmarks/scsynth.py run it: ``oscsync
    dump`` and ``oscsync bridge -l PORT BRIDGE...`` started through ``start`` (``spawn``), each
    on a port of its own; once both listen, a leader, ``metronome send`` with its clock ``skew``
    ahead, sends both ``ticks`` ticks at ``bpm``, each ``offset`` ahead. Once all three have
    exited (each with 0): the bridge's stdout and stderr, and the true time (Unix, this clock)
    each tick meant: its timetag as dump received it, less ``skew``."""
    bridge_port, dump_port = free_udp_port(), free_udp_port()
    count = str(ticks)
    dump = start("dump", "-l", f"127.0.0.1:{dump_port}", "--jsonl", "--count", count)
    bridging = start("bridge", "-l", f"127.0.0.1:{bridge_port}", *bridge, "--count", count)
    for proc in (dump, bridging):
        _read_until_listening(proc)
    leader = start(
        "--clock-skew", str(skew), "metronome", "send", "--peer", f"127.0.0.1:{bridge_port}",
        "--peer", f"127.0.0.1:{dump_port}", "--bpm", f"{bpm:g}", "--offset", str(offset),
        "--count", count,
    )  # fmt: skip
    _, leader_err = leader.communicate(timeout=ticks * 60 / bpm + 60)
    assert leader.returncode == 0, leader_err
    bridge_out, bridge_err = bridging.communicate(timeout=60)
    dump_out, dump_err = dump.communicate(timeout=60)
    assert bridging.returncode == 0 and dump.returncode == 0, (bridge_err, dump_err)
    truth = [json.loads(line)["timetag_unix"] - skew for line in dump_out.splitlines()]
    return bridge_out, bridge_err, truth


def _read_until_listening(proc: subprocess.Popen[str]) -> None:
    """Read ``proc``'s stderr up to its ``listening on`` line (the rest is left for
    ``communicate``); AssertionError if it exits first."""
    assert proc.stderr is not None
    for line in iter(proc.stderr.readline, ""):
        if line.startswith("listening on"):
            return
    raise AssertionError(f"exited before listening: {proc.wait()}")


class LineReader:
    """Collects a pipe's lines on a thread, so tests can wait for one without blocking forever."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                self._queue.put(line.rstrip("\n"))
        except (OSError, ValueError):
            pass
        self._queue.put(None)

    def wait_for(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        """The first new line matching ``predicate``; AssertionError after ``timeout`` seconds."""
        found: list[str] = []

        def matched() -> bool:
            while True:
                try:
                    line = self._queue.get_nowait()
                except queue.Empty:
                    return False
                if line is None:
                    self._queue.put(None)  # a later wait_for fails at once too
                    raise AssertionError(f"stream ended; last lines: {self.lines[-10:]!r}")
                self.lines.append(line)
                if predicate(line):
                    found.append(line)
                    return True

        wait_until(matched, timeout, "a matching line", state=lambda: self.lines[-10:])
        return found[0]

    def rest(self, timeout: float = 10.0) -> list[str]:
        """Every remaining line until the stream closes (the process has exited)."""
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.lines


# Headless Pure Data for tests (tests/pdharness.py): the `run_pd` fixture.
from pdharness import run_pd  # noqa: E402, F401
