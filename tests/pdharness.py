"""Headless Pure Data for tests: start a patch, wait until ready, read what it prints, stop it.

:class:`PdProcess` runs

    pd -nogui -nosound -nomidi -stderr -noprefs -path <pd-osc> -path <pd-mrpeach-net>
       -open <control patch> -open PATCH [-send "RECEIVER MESSAGE" ...] -send "pdharness-init PORT"

and collects every stderr line on a thread (``[print LABEL]`` writes ``LABEL: message`` there).

**Ready** means PD has opened every patch (so each ``[udpreceive]`` is bound and every
``[loadbang]`` has fired) and handled the test's ``-send`` messages: PD sends ``-send`` messages in
order after opening the files, and the last one makes the harness's own control patch print
``pdharness: ready``. That control patch also opens a loopback FUDI port (``[netreceive -u]``),
so :meth:`PdProcess.send` can talk to any named receiver (``[r oscsync-metro]``, ``pd``) while
the patch runs, exactly as ``-send`` does at start-up.

Stopping sends ``pd quit`` and falls back to SIGTERM, then SIGKILL: PD never outlives a test.
Use the :func:`run_pd` fixture (registered in ``tests/conftest.py``).
"""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from waiting import wait_until

# Where Debian's pd-osc and pd-mrpeach-net put their objects (`dpkg -L pd-osc pd-mrpeach-net`).
PD_OSC_DIR = "/usr/lib/pd/extra/osc"  # packOSC unpackOSC routeOSC pipelist
PD_NET_DIR = "/usr/lib/pd/extra/mrpeach/net"  # udpsend udpreceive
PD_SEARCH_PATHS = (PD_OSC_DIR, PD_NET_DIR)

READY_LINE = "pdharness: ready"
COULD_NOT_CREATE = "couldn't create"
"""PD 0.53 with -stderr prints the failed box text, then ``... couldn't create``."""

# The control patch: [r pdharness-init] gets the FUDI port, opens [netreceive -u] on loopback,
# then prints "ready". Each FUDI message "RECEIVER ATOMS...;" is forwarded with [send]: the
# trigger sets the receiver name (right inlet) before [list trim] restores the message's selector,
# so `send("pd", "quit")` reaches PD as `quit` and `send("oscsync-bpm", 90)` arrives as a float.
_CONTROL_PATCH = """\
#N canvas 0 0 520 320 12;
#X obj 20 20 r pdharness-init;
#X obj 20 50 t b f;
#X msg 120 80 listen \\$1 127.0.0.1;
#X obj 120 110 netreceive -u;
#X msg 20 140 ready;
#X obj 20 170 print pdharness;
#X obj 120 140 t a a;
#X obj 260 170 list split 1;
#X obj 120 170 list split 1;
#X obj 120 200 list trim;
#X obj 120 230 send;
#X connect 0 0 1 0;
#X connect 1 0 4 0;
#X connect 1 1 2 0;
#X connect 2 0 3 0;
#X connect 3 0 6 0;
#X connect 4 0 5 0;
#X connect 6 0 8 0;
#X connect 6 1 7 0;
#X connect 7 0 10 1;
#X connect 8 1 9 0;
#X connect 9 0 10 0;
"""

_FUDI_SPECIAL = re.compile(r"([;,$\\])")


def fudi_atom(value: object) -> str:
    """One atom in PD's FUDI text: numbers as they are, symbols with ; , $ \\ and spaces escaped."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, (int, float)):
        return repr(value)
    return _FUDI_SPECIAL.sub(r"\\\1", str(value)).replace(" ", "\\ ")


def pd_command(
    patch: Path,
    control_patch: Path,
    sends: Sequence[str],
    init_port: int,
    args: Sequence[str] = (),
    audio: Sequence[str] = ("-nosound",),
) -> list[str]:
    """The argv that runs ``patch`` headless with the OSC libraries on the search path.

    ``-noprefs`` keeps a developer's saved Pd preferences (paths, libraries, audio) out of tests;
    ``args`` adds flags such as ``-sleepgrain 0.2`` (Pd then reads its sockets more often);
    ``audio`` replaces ``-nosound`` (``-jack -callback -r 64000``: PD plays through JACK).
    """
    argv = ["pd", "-nogui", *audio, "-nomidi", "-stderr", "-noprefs", *args]
    for path in PD_SEARCH_PATHS:
        argv += ["-path", path]
    argv += ["-open", str(control_patch), "-open", str(patch)]
    for message in sends:
        argv += ["-send", message]
    argv += ["-send", f"pdharness-init {init_port}"]
    return argv


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PdError(AssertionError):
    """PD did not start, or did not print what a test waited for."""


class PdProcess:
    """One headless PD running one patch; see the module docstring."""

    def __init__(
        self,
        patch: Path | str,
        sends: Sequence[str] = (),
        *,
        pd: str = "pd",
        args: Sequence[str] = (),
        audio: Sequence[str] = ("-nosound",),
    ) -> None:
        self.patch = Path(patch).resolve()
        if not self.patch.is_file():
            raise FileNotFoundError(self.patch)
        self.sends = list(sends)
        self.args = list(args)
        self.audio = list(audio)
        self.pd = pd
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="pdharness-")
        self._control_port = 0
        self._control: socket.socket | None = None

    # -- life cycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> PdProcess:
        """Start PD and wait until the patch is open and the ``-send`` messages are handled."""
        control_patch = Path(self._tmp.name) / "pdharness-control.pd"
        control_patch.write_text(_CONTROL_PATCH)
        self._control_port = _free_udp_port()
        argv = pd_command(
            self.patch, control_patch, self.sends, self._control_port, self.args, self.audio
        )
        argv[0] = self.pd
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="backslashreplace",
            cwd=self.patch.parent,
        )
        self._reader = threading.Thread(target=self._pump, name="pdharness-stderr", daemon=True)
        self._reader.start()
        try:
            self.wait_for(lambda line: line == READY_LINE, timeout=timeout)
        except PdError:
            self.stop()
            raise
        self._control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        return self

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        try:
            for line in self._proc.stderr:
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        except (OSError, ValueError):
            pass
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def stop(self, timeout: float = 3.0) -> int | None:
        """Quit PD (``pd quit``, then SIGTERM, then SIGKILL); return its exit code. Idempotent."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            if self._control is not None:
                self.send("pd", "quit")
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self._reader is not None:
            self._reader.join(timeout)
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()
        if self._control is not None:
            self._control.close()
            self._control = None
        self._tmp.cleanup()
        return None if proc is None else proc.returncode

    def __enter__(self) -> PdProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- talking to the patch ------------------------------------------------------------------

    def send(self, receiver: str, *atoms: object) -> None:
        """Send ``atoms`` to ``[r receiver]`` now, like ``-send "receiver atoms..."`` at start."""
        if not atoms:
            raise ValueError("send needs at least one atom (use 'bang' for a bang)")
        if self._control is None:
            raise PdError("PD is not running")
        text = " ".join([fudi_atom(receiver), *(fudi_atom(a) for a in atoms)]) + ";\n"
        self._control.sendto(text.encode("utf-8"), ("127.0.0.1", self._control_port))

    # -- reading what it printed ---------------------------------------------------------------

    def snapshot(self) -> list[str]:
        with self._cond:
            return list(self.lines)

    def wait_for(
        self,
        match: str | re.Pattern[str] | Callable[[str], bool],
        timeout: float = 10.0,
        start: int = 0,
    ) -> str:
        """The first line (from index ``start``) matching; a ``str`` is a regex searched for."""
        return self.wait_for_all(match, 1, timeout=timeout, start=start)[0]

    def wait_for_all(
        self,
        match: str | re.Pattern[str] | Callable[[str], bool],
        count: int,
        timeout: float = 10.0,
        start: int = 0,
    ) -> list[str]:
        """The first ``count`` lines (from index ``start``) matching; PdError after ``timeout``."""
        if callable(match) and not isinstance(match, re.Pattern):
            predicate = match
        else:
            pattern = re.compile(match)

            def predicate(line: str) -> bool:
                return pattern.search(line) is not None

        found: list[str] = []

        def enough() -> bool:
            with self._cond:
                found[:] = [line for line in self.lines[start:] if predicate(line)]
                if len(found) < count and self._eof:
                    raise PdError(
                        f"PD exited with {len(found)}/{count} matching lines; PD printed: "
                        f"{self.lines[-15:]!r}"
                    )
                return len(found) >= count

        try:
            wait_until(enough, timeout, f"{count} matching lines")
        except AssertionError:
            raise PdError(
                f"timed out after {timeout} s with {len(found)}/{count} matching lines; "
                f"PD printed: {self.snapshot()[-15:]!r}"
            ) from None
        return found[:count]

    def printed(self, label: str, start: int = 0) -> list[str]:
        """What ``[print label]`` printed so far (the text after ``label: ``)."""
        prefix = f"{label}: "
        return [line[len(prefix) :] for line in self.snapshot()[start:] if line.startswith(prefix)]

    def creation_failures(self) -> list[str]:
        """Lines where PD reported an object it could not create (and the line naming it)."""
        lines = self.snapshot()
        failures = []
        for i, line in enumerate(lines):
            if COULD_NOT_CREATE in line:
                failures.append(f"{lines[i - 1]} {line}" if i else line)
        return failures


@pytest.fixture
def run_pd() -> Iterator[Callable[..., PdProcess]]:
    """Start headless PD patches (``run_pd(patch, sends=[...], args=[...], audio=[...])``,
    ready on return).

    Every PD started is stopped at the end of the test, whatever happened.
    """
    from conftest import require_peer

    pd = require_peer("pd")
    for directory in PD_SEARCH_PATHS:
        if not Path(directory).is_dir():
            require_peer(f"{directory} (pd-osc / pd-mrpeach-net)")
    started: list[PdProcess] = []

    def start(
        patch: Path | str,
        sends: Sequence[str] = (),
        timeout: float = 10.0,
        args: Sequence[str] = (),
        audio: Sequence[str] = ("-nosound",),
    ) -> PdProcess:
        process = PdProcess(patch, sends, pd=pd, args=args, audio=audio)
        started.append(process)
        return process.start(timeout)

    yield start
    for process in started:
        process.stop()
