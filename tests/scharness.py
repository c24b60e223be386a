"""SuperCollider's scsynth for tests and benchmarks: on JACK's dummy driver, playing a synthdef
this harness writes itself, its sound recorded through JACK and measured against the timetags.

There is no sclang here (Debian's ``supercollider-server`` is scsynth alone), so the one synthdef
the tests need is written by :func:`synthdef` in SuperCollider's binary format (``SCgf`` version
2, "Synth Definition File Format" in SuperCollider's help) and sent with ``/d_recv``:

    oscsync-click: OffsetOut.ar(0, Line.ar(1, 1, 0.01, doneAction: 2))

a 10 ms pulse of full scale that frees itself. ``OffsetOut`` starts it at the sample its bundle's
timetag falls on, not at the start of the 64-frame block that holds it (``Out`` would): what
scsynth promises for timetagged bundles, and what :func:`onset_errors` measures.

:func:`scsynth` starts ``scsynth -u PORT -t PORT`` (UDP, and TCP: size-prefixed OSC 1.0 streams
only) as a client of a :class:`~jackharness.JackServer` with its output on ``system:playback_1``,
where :class:`~jackharness.Recorder` listens; it stops it whatever happens.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from conftest import free_udp_port
from jackharness import JackServer, Recorder
from oscsync.audio import find_onsets
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from waiting import wait_until

BLOCK = 64
"""scsynth's control block (frames): 1.3 ms at 48 kHz, the granularity ``Out`` would have."""
CLICK = "oscsync-click"
CLICK_SECONDS = 0.01
READY_LINE = "SuperCollider 3 server ready."


class ScUnavailable(Exception):
    """scsynth is missing or did not start (its last lines say why)."""


# -- SynthDef files (SCgf version 2) -------------------------------------------------------------

SCALAR, CONTROL, AUDIO = 0, 1, 2
CONSTANT = -1


@dataclass(frozen=True)
class UGen:
    """One unit generator of a synthdef: its class, rate, inputs and number of outputs. An
    input is (index of an earlier UGen, its output) or (:data:`CONSTANT`, index of a constant)."""

    name: str
    rate: int
    inputs: tuple[tuple[int, int], ...]
    outputs: int = 1
    special: int = 0


def _pstring(text: str) -> bytes:
    raw = text.encode("ascii")
    return bytes([len(raw)]) + raw


def synthdef(name: str, constants: Sequence[float], ugens: Sequence[UGen]) -> bytes:
    """One synthdef (no parameters, no variants) as an ``SCgf`` version 2 file."""
    parts = [b"SCgf", struct.pack(">iH", 2, 1), _pstring(name)]
    parts.append(struct.pack(">i", len(constants)))
    parts += [struct.pack(">f", value) for value in constants]
    parts.append(struct.pack(">ii", 0, 0))  # parameters, parameter names
    parts.append(struct.pack(">i", len(ugens)))
    for ugen in ugens:
        parts.append(_pstring(ugen.name))
        parts.append(struct.pack(">biih", ugen.rate, len(ugen.inputs), ugen.outputs, ugen.special))
        parts += [struct.pack(">ii", source, index) for source, index in ugen.inputs]
        parts += [struct.pack(">b", ugen.rate)] * ugen.outputs
    parts.append(struct.pack(">H", 0))  # variants
    return b"".join(parts)


def click_synthdef(seconds: float = CLICK_SECONDS) -> bytes:
    """``oscsync-click``: a full-scale pulse of ``seconds`` on bus 0, from the sample its
    bundle's timetag names (OffsetOut), then the synth frees itself (doneAction 2)."""
    one, length, free_self, bus = 0, 1, 2, 3
    return synthdef(
        CLICK,
        [1.0, seconds, 2.0, 0.0],
        [
            UGen(
                "Line",
                AUDIO,
                ((CONSTANT, one), (CONSTANT, one), (CONSTANT, length), (CONSTANT, free_self)),
            ),
            UGen("OffsetOut", AUDIO, ((CONSTANT, bus), (0, 0)), outputs=0),
        ],
    )


def s_new(name: str = CLICK) -> bytes:
    """``/s_new NAME -1 0 0``: a new synth with an id of scsynth's choosing, at the head of the
    default group's parent (node 0), which needs no group to exist."""
    return codec.encode_message("/s_new", [name, -1, 0, 0], "siii")


# -- the server ----------------------------------------------------------------------------------


@dataclass
class ScServer:
    """A running scsynth: where it listens, and what it printed (``late`` lines included)."""

    process: subprocess.Popen[str]
    udp: HostPort
    tcp: HostPort
    """``tcp+size://``: scsynth reads only size-prefixed streams."""
    lines: list[str] = field(default_factory=list)

    def request(self, message: bytes, reply: str, timeout: float = 10.0) -> codec.Message:
        """Send ``message`` over UDP and wait for the message at ``reply`` (``/done``...)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(timeout)
            sock.sendto(message, self.udp.sockaddr)
            while True:
                data = sock.recv(65536)
                for answer in codec.decode(data):
                    if answer.address == reply:
                        return answer
                    if answer.address == "/fail":
                        raise ScUnavailable(f"scsynth refused {message[:24]!r}: {answer.args}")

    @property
    def late(self) -> list[str]:
        """scsynth's ``late 0.001234`` lines: bundles it executed after their timetag."""
        return [line for line in list(self.lines) if line.startswith("late ")]


def _read_lines(stream: object, lines: list[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        lines.append(line.rstrip("\n"))


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def scsynth(jack: JackServer, block: int = BLOCK) -> Iterator[ScServer]:
    """scsynth on ``jack``, its output into ``system:playback_1``, :func:`click_synthdef`
    loaded; always stopped on exit."""
    program = shutil.which("scsynth")
    if program is None:
        raise ScUnavailable("scsynth is not installed (Debian: supercollider-server)")
    udp, tcp = free_udp_port(), _free_tcp_port()
    env = {
        **jack.env,
        "SC_JACK_DEFAULT_OUTPUTS": "system:playback_1",
        "SC_JACK_DEFAULT_INPUTS": "",
    }
    # -i 0 -o 1: no inputs, one output; -R 0: no zeroconf; -D 0: no synthdef directory to load.
    command = [program, "-u", str(udp), "-t", str(tcp), "-i", "0", "-o", "1", "-z", str(block)]
    process = subprocess.Popen(
        [*command, "-R", "0", "-D", "0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    server = ScServer(
        process, HostPort("127.0.0.1", udp), HostPort("127.0.0.1", tcp, "tcp", "size")
    )
    assert process.stdout is not None
    threading.Thread(target=_read_lines, args=(process.stdout, server.lines), daemon=True).start()
    try:
        try:
            wait_until(
                lambda: READY_LINE in server.lines or process.poll() is not None,
                30,
                "scsynth to say it is ready",
                state=lambda: server.lines[-5:],
            )
        except AssertionError:
            raise ScUnavailable(f"scsynth did not start: {server.lines[-5:]}") from None
        if process.poll() is not None:
            raise ScUnavailable(f"scsynth exited {process.returncode}: {server.lines[-5:]}")
        server.request(codec.encode_message("/d_recv", [click_synthdef()], "b"), "/done")
        yield server
    finally:
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(codec.encode_message("/quit"), server.udp.sockaddr)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# -- measuring -----------------------------------------------------------------------------------


def wall_minus_monotonic() -> float:
    """``time.time() - time.monotonic()``, from the closest of a few readings."""
    import time

    best = None
    for _ in range(20):
        before = time.monotonic()
        wall = time.time()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) / 2)
    assert best is not None
    return best[1]


def onset_errors(
    recorder: Recorder, timetags: Sequence[int], threshold: int = 16_000
) -> list[float]:
    """Seconds each recorded click left the (dummy) device after its timetag, in order: the
    driver's frame clock at the onset plus the playback latency the server reports
    (:meth:`~jackharness.Recorder.leaves_device_mono`), on the wall clock the timetags use.
    Needs exactly one click per timetag."""
    onsets = find_onsets(recorder.samples_int16(), threshold, min_gap=round(recorder.rate * 0.02))
    if len(onsets) != len(timetags):
        raise AssertionError(f"{len(onsets)} clicks recorded for {len(timetags)} timetags")
    offset = wall_minus_monotonic()
    return [
        recorder.leaves_device_mono(frame) + offset - float(tt.to_unix(stamp))
        for frame, stamp in zip(onsets, timetags)
    ]


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]
