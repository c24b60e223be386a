"""``oscsync replay`` (issue #15): recorded timing through the scheduler, byte-exact payloads."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import Popen

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import LineReader, free_udp_port
from osc_strategies import VALID
from oscsync.apps.replay import (
    Replayer,
    ReplayError,
    Selection,
    TimetagMode,
    address_matcher,
    plain_messages,
    plan,
    shift_timetags,
)
from oscsync.cli.main import cli
from oscsync.clock import FakeClock, SkewedClock, SystemClock
from oscsync.files.pcap import PcapWriter
from oscsync.files.recording import Datagram, RecordingWriter, read_recording
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.scheduler import Scheduler
from test_recording import EVERY_TYPE, NESTED

Spawn = Callable[..., "Popen[str]"]
EVERYTHING = Selection()


def msg(address: str, *args: object) -> bytes:
    return codec.encode_message(address, list(args))


def datagrams(offsets: list[float], packets: list[bytes] | None = None) -> list[Datagram]:
    packets = packets or [msg("/n", i) for i in range(len(offsets))]
    return [
        Datagram(offset=o, data=p, source="127.0.0.1:1", wall=1_795_779_000.0 + o, line=i + 2)
        for i, (o, p) in enumerate(zip(offsets, packets))
    ]


def drive(replayer: Replayer, scheduler: Scheduler, clock: FakeClock) -> int:
    """Begin, then step the scheduler and jump the clock until the last send; return the most
    entries the scheduler held at once."""
    replayer.begin()
    most_held = 0
    for _ in range(100_000):
        wait = scheduler.run_due()
        most_held = max(most_held, scheduler.held)
        if replayer.finished.is_set():
            break
        assert wait is not None, "nothing scheduled but the replay is not finished"
        clock.advance(wait)
    assert replayer.finished.is_set() and replayer.failure is None
    return most_held


def run_replay(
    recorded: list[Datagram],
    clock: FakeClock,
    *,
    selection: Selection = EVERYTHING,
    mode: TimetagMode = "keep",
    **kwargs: object,
) -> tuple[list[tuple[float, bytes]], Replayer]:
    """Replay on a fake clock, stepping the scheduler by hand: (send time from start, bytes)."""
    scheduler = Scheduler(clock)
    sent: list[tuple[float, bytes]] = []
    replayer = Replayer(
        lambda: iter(recorded),
        lambda data: sent.append((clock.monotonic(), data)),
        scheduler,
        plan(recorded, selection, mode),
        selection=selection,
        mode=mode,
        **kwargs,  # type: ignore[arg-type]
    )
    drive(replayer, scheduler, clock)
    return [(t - replayer.start_monotonic, data) for t, data in sent], replayer


def times(sent: list[tuple[float, bytes]]) -> list[float]:
    return [round(t, 6) for t, _ in sent]


OFFSETS = [2.0, 2.001, 2.5, 2.5, 3.25]


def test_replay_sends_each_datagram_at_its_recorded_time_relative_to_the_first(
    fake_clock: FakeClock,
) -> None:
    sent, replayer = run_replay(datagrams(OFFSETS), fake_clock)
    assert times(sent) == [0.0, 0.001, 0.5, 0.5, 1.25]
    assert [data for _, data in sent] == [msg("/n", i) for i in range(5)]  # order kept
    assert replayer.stats.lateness.maximum == 0.0  # a fake clock: every send exactly on time


def test_replay_speed_2_halves_the_span_and_half_speed_doubles_it(fake_clock: FakeClock) -> None:
    sent, _ = run_replay(datagrams(OFFSETS), fake_clock, speed=2.0)
    assert times(sent) == [0.0, 0.0005, 0.25, 0.25, 0.625]
    sent, _ = run_replay(datagrams(OFFSETS), fake_clock, speed=0.5)
    assert times(sent) == [0.0, 0.002, 1.0, 1.0, 2.5]


def test_replay_loop_repeats_with_the_streams_rhythm(fake_clock: FakeClock) -> None:
    # Span 0.3 s over 3 intervals: the loop lasts span + mean interval = 0.4 s.
    sent, replayer = run_replay(datagrams([0.0, 0.1, 0.2, 0.3]), fake_clock, loops=3)
    assert times(sent) == [round(0.1 * k, 6) for k in range(12)]
    assert replayer.stats.loops_started == 3


def test_replay_from_to_selects_a_window_and_loops_it(fake_clock: FakeClock) -> None:
    window = Selection(start=2.4, end=3.0)
    sent, _ = run_replay(datagrams(OFFSETS), fake_clock, selection=window, loops=2)
    # Zero is --from (2.4): the datagrams at 2.5 leave 0.1 s in; a loop lasts to - from = 0.6 s.
    assert times(sent) == [0.1, 0.1, 0.7, 0.7]


def test_replay_long_silence_is_not_refused_by_the_scheduler_horizon(fake_clock: FakeClock) -> None:
    sent, replayer = run_replay(datagrams([0.0, 300.0]), fake_clock)
    assert times(sent) == [0.0, 300.0] and replayer.stats.refused == 0


def test_replay_filter_keeps_whole_datagrams_or_strips_to_matching_messages(
    fake_clock: FakeClock,
) -> None:
    bundle = codec.encode_bundle(tt.IMMEDIATELY, [msg("/synth/freq", 440), msg("/light", 1)])
    recorded = datagrams([0.0, 0.1, 0.2], [msg("/light", 0), bundle, b"garbage!"])
    synth = Selection(pattern="/synth/*")
    sent, replayer = run_replay(recorded, fake_clock, selection=synth)
    assert [d for _, d in sent] == [bundle]
    assert replayer.plan.skipped == {"filtered": 1, "not-osc": 1}
    sent, _ = run_replay(recorded, fake_clock, selection=synth, mode="strip")
    assert [d for _, d in sent] == [msg("/synth/freq", 440)]
    sent, _ = run_replay(recorded, fake_clock, mode="strip")
    assert [d for _, d in sent] == [msg("/light", 0), msg("/synth/freq", 440), msg("/light", 1)]


def test_replay_shift_moves_every_bundle_timetag_by_how_far_the_replay_moved_it(
    fake_clock: FakeClock,
) -> None:
    arrival = 1_795_779_000.0
    ahead = tt.from_unix(arrival + 0.05)  # recorded 50 ms ahead of its arrival
    inner = tt.from_unix(arrival + 0.08)
    nested = codec.encode_bundle(
        ahead,
        [
            msg("/a", 1),
            codec.encode_bundle(inner, [msg("/b")]),
            codec.encode_bundle(1, [msg("/c")]),
        ],
    )
    recorded = [Datagram(offset=0.0, data=nested, source="x:1", wall=arrival)]
    sent, replayer = run_replay(recorded, fake_clock, mode="shift")
    ((when, data),) = sent
    sent_wall = fake_clock.monotonic_to_wall(replayer.start_monotonic + when)
    messages = codec.decode(data)
    assert [m.address for m in messages] == ["/a", "/b", "/c"]
    assert tt.to_unix(messages[0].timetag or 0) - sent_wall == pytest.approx(0.05, abs=1e-6)
    assert tt.to_unix(messages[1].timetag or 0) - sent_wall == pytest.approx(0.08, abs=1e-6)
    assert messages[2].timetag == tt.IMMEDIATELY  # "immediately" stays immediately
    assert len(data) == len(nested) and data[:8] == nested[:8]  # only timetag bytes changed
    assert [data[i] == nested[i] for i in range(16, 36)] == [True] * 20


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(VALID, st.sampled_from([EVERY_TYPE, NESTED])), min_size=1, max_size=6))
def test_replay_keep_mode_sends_byte_identical_payloads(packets: list[bytes]) -> None:
    """Recorded to the file format, read back and replayed: every OSC type, nested bundles."""
    out = io.StringIO()
    writer = RecordingWriter(out, monotonic_start=0.0)
    writer.write_header(host="h", clock="fake", started_unix=0.0, listen="x:1", software="t")
    for n, packet in enumerate(packets):
        writer.add(packet, "127.0.0.1:9", 1.0 + n / 100, n / 100)
    recorded = list(read_recording(io.StringIO(out.getvalue())))
    sent, _ = run_replay(recorded, FakeClock())
    assert [data for _, data in sent] == packets
    assert times(sent) == [round(n / 100, 6) for n in range(len(packets))]


def test_plain_messages_and_shift_leave_messages_alone() -> None:
    plain = msg("/x", 1.5, "s")
    assert plain_messages(plain) == [plain]
    assert shift_timetags(plain, 10.0) == plain


@pytest.mark.parametrize(
    ("pattern", "address", "matches"),
    [
        ("/synth/*", "/synth/freq", True),
        ("/synth/*", "/synth/a/b", False),
        ("/s?nth", "/synth", True),
        ("/ch[0-9]", "/ch7", True),
        ("/ch[!0-9]", "/ch7", False),
        ("/{tick,tock}", "/tock", True),
        ("/{tick,tock}", "/tack", False),
        ("//freq", "/a/b/freq", True),
        ("/a.b", "/axb", False),  # '.' is literal, not a regex wildcard
    ],
)
def test_replay_filter_is_osc_address_pattern_matching(
    pattern: str, address: str, matches: bool
) -> None:
    assert address_matcher(pattern)(address) is matches


def test_replay_filter_pattern_errors_are_one_line() -> None:
    with pytest.raises(ReplayError, match="starts with '/'"):
        address_matcher("synth")
    result = CliRunner().invoke(cli, ["replay", "x.jsonl", "-p", "127.0.0.1:9", "--filter", "/[a"])
    assert result.exit_code == 2 and "unclosed '['" in result.output


# -- the command, for real on loopback ------------------------------------------------------


def write_recording(path: Path, packets: list[bytes], spacing: float = 0.01) -> None:
    with path.open("w") as out:
        writer = RecordingWriter(out, monotonic_start=0.0)
        writer.write_header(
            host="h", clock="system", started_unix=1e9, listen="127.0.0.1:9", software="t"
        )
        for n, packet in enumerate(packets):
            writer.add(packet, "127.0.0.1:5000", 1e9 + n * spacing, n * spacing)
        writer.close(len(packets) * spacing, {})


def receive(sock: socket.socket, count: int) -> list[bytes]:
    sock.settimeout(10)
    return [sock.recv(65535) for _ in range(count)]


@pytest.fixture
def receiver() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock  # type: ignore[misc]
    sock.close()


PACKETS = [
    msg("/chat", "hi"),
    codec.encode_bundle(0xDD9D15A7922F48C2, [msg("/a", 1), codec.encode_bundle(1, [msg("/b")])]),
    b"not osc at all!!",
]


def test_replay_cli_sends_a_recording_byte_exact(tmp_path: Path, receiver: socket.socket) -> None:
    path = tmp_path / "take.jsonl"
    write_recording(path, PACKETS)
    peer = f"127.0.0.1:{receiver.getsockname()[1]}"
    result = CliRunner().invoke(cli, ["replay", str(path), "--peer", peer])
    assert result.exit_code == 0, result.output
    assert receive(receiver, 3) == PACKETS
    assert "replay: sent 3 datagrams" in result.output


def _malformed_bundle(element_size: int) -> bytes:
    """A bundle (as ``record`` keeps it) whose one element claims ``element_size`` bytes and is
    not a message: the walk that shifts timetags took it for a bundle of that size."""
    stamp = tt.to_bytes(tt.from_unix(1_795_779_000.0))
    return b"#bundle\x00" + stamp + element_size.to_bytes(4, "big") + b"#bundle\x00" + bytes(8)


@pytest.mark.parametrize("size", [0x100000, 0xFFFFFFF0, 0, 6, 20])
def test_shift_leaves_a_malformed_bundle_alone(size: int) -> None:
    """Issue 27, item 10: an element size of 0xFFFFFFF0 made shift_timetags walk ~10^9 empty
    elements (20 s of CPU, 3.8 GB). A bundle whose elements do not fit has nothing sure to shift:
    None, at once (0x100000 shows it without taking minutes before the fix)."""
    assert shift_timetags(_malformed_bundle(size), 10.0) is None


def test_replay_cli_shift_sends_a_malformed_bundle_as_recorded(
    tmp_path: Path, receiver: socket.socket
) -> None:
    """The docs' own capture example replays with --timetags shift, and record keeps malformed
    datagrams on purpose: the replay goes on, the bad bundle is sent as recorded and counted."""
    bad = _malformed_bundle(0x100000)
    path = tmp_path / "take.jsonl"
    write_recording(path, [PACKETS[1], bad, PACKETS[1]])
    peer = f"127.0.0.1:{receiver.getsockname()[1]}"
    result = CliRunner().invoke(cli, ["replay", str(path), "--peer", peer, "--timetags", "shift"])
    assert result.exit_code == 0, result.output
    sent = receive(receiver, 3)
    assert sent[1] == bad and len(sent[0]) == len(sent[2]) == len(PACKETS[1])
    assert "; 1 malformed bundles sent as recorded (timetags not shifted)" in result.output


def test_replay_cli_reads_a_pcap_capture_and_its_port_filter(
    tmp_path: Path, receiver: socket.socket
) -> None:
    path = tmp_path / "capture.pcap"
    with path.open("wb") as out:
        writer = PcapWriter(out)
        writer.add(10**18, PACKETS[0], "127.0.0.1:5000", "127.0.0.1:9001")
        writer.add(10**18 + 10**6, msg("/reply"), "127.0.0.1:9001", "127.0.0.1:5000")
        writer.add(10**18 + 2 * 10**6, PACKETS[1], "127.0.0.1:5000", "127.0.0.1:9001")
    peer = f"127.0.0.1:{receiver.getsockname()[1]}"
    result = CliRunner().invoke(cli, ["replay", str(path), "--port", "9001", "--peer", peer])
    assert result.exit_code == 0, result.output
    assert receive(receiver, 2) == PACKETS[:2]


def test_replay_cli_bad_files_name_the_line_or_skip_counted(
    tmp_path: Path, receiver: socket.socket
) -> None:
    path = tmp_path / "take.jsonl"
    write_recording(path, PACKETS[:2] * 2)
    lines = path.read_text().splitlines(keepends=True)
    damaged = [*lines[:2], "{not json\n", *lines[3:-1], lines[-1][:10]]
    path.write_text("".join(damaged))
    peer = f"127.0.0.1:{receiver.getsockname()[1]}"
    result = CliRunner().invoke(cli, ["replay", str(path), "--peer", peer])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {path}: line 3: damaged line (not JSON) (--skip-bad skips what cannot be read)"
    ]
    result = CliRunner().invoke(cli, ["replay", str(path), "--peer", peer, "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert receive(receiver, 3) == [PACKETS[0], PACKETS[0], PACKETS[1]]
    assert "skipped damaged 1, truncated 1" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"just some text\n", "not an oscsync recording"),
        (b'{"oscsync":"recording","version":9}\n', "version 9 is newer"),
        (struct.pack("<I", 0xA1B2C3D4) + b"\x00" * 5, "file ends inside the pcap header"),
    ],
)
def test_replay_cli_not_a_recording_is_a_one_line_error(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "file"
    path.write_bytes(content)
    result = CliRunner().invoke(cli, ["replay", str(path), "--peer", "127.0.0.1:9"])
    assert result.exit_code == 1, result.output
    assert len(result.output.strip().splitlines()) == 1 and message in result.output


def test_replay_cli_option_errors_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "take.jsonl"
    write_recording(path, PACKETS)
    base = ["replay", str(path), "--peer", "127.0.0.1:9"]
    for extra, text in [
        (["--speed", "0"], "between 0.001 and 1000"),
        (["--speed", "nan"], "between 0.001 and 1000"),
        (["--from", "2", "--to", "1"], "--to must be later than --from"),
        (["--port", "9001"], "--port only applies to pcap"),
    ]:
        result = CliRunner().invoke(cli, base + extra)
        assert result.exit_code == 2 and text in result.output, (extra, result.output)
    result = CliRunner().invoke(cli, ["replay", str(tmp_path / "nope"), "--peer", "127.0.0.1:9"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_record_then_replay_round_trip_over_loopback(
    spawn: Spawn, tmp_path: Path, receiver: socket.socket
) -> None:
    port = free_udp_port()
    path = tmp_path / "take.jsonl"
    proc = spawn("record", str(path), "--listen", f"127.0.0.1:{port}", "--count", "3")
    assert proc.stderr is not None
    LineReader(proc.stderr).wait_for(lambda line: "recording on" in line)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        for packet in PACKETS:
            tx.sendto(packet, ("127.0.0.1", port))
    assert proc.wait(10) == 0
    peer = f"127.0.0.1:{receiver.getsockname()[1]}"
    result = CliRunner().invoke(cli, ["replay", str(path), "--peer", peer, "--speed", "4"])
    assert result.exit_code == 0, result.output
    assert receive(receiver, 3) == PACKETS
    closing = json.loads(path.read_text().splitlines()[-1])
    assert closing["datagrams"] == 3 and closing["dropped_total"] == 0


def test_replay_holds_a_bounded_number_of_datagrams_and_bytes(fake_clock: FakeClock) -> None:
    big = codec.encode_message("/blob", [b"x" * 60_000])
    recorded = datagrams([n / 10_000 for n in range(400)], [big] * 400)  # 40 ms, 24 MB
    scheduler = Scheduler(fake_clock)
    sent: list[bytes] = []
    replayer = Replayer(
        lambda: iter(recorded),
        sent.append,
        scheduler,
        plan(recorded, EVERYTHING, "keep"),
        max_ahead=50,
        max_ahead_bytes=1_000_000,
    )
    most_held = drive(replayer, scheduler, fake_clock)
    assert len(sent) == 400
    # 1 MB / 60 kB: 17 datagrams ahead at most, plus the refill action itself.
    assert most_held <= 18


def test_replay_reading_past_filtered_lines_never_delays_a_send(fake_clock: FakeClock) -> None:
    """Reading costs time (here 0.1 ms per line, on the fake clock): a long run of lines left
    out by --filter is read in pieces between sends, not in one stretch that makes them late."""
    recorded: list[Datagram] = []
    for k in range(10):
        recorded += datagrams([k * 0.1], [msg("/keep", k)])
        recorded += datagrams([k * 0.1 + 0.001] * 300, [msg("/noise")] * 300)  # 30 ms to read

    def slow_source() -> Iterator[Datagram]:
        for datagram in recorded:
            fake_clock.advance(0.0001)
            yield datagram

    keep = Selection(pattern="/keep")
    scheduler = Scheduler(fake_clock)
    sent: list[bytes] = []
    replayer = Replayer(
        slow_source, sent.append, scheduler, plan(recorded, keep, "keep"), selection=keep
    )
    drive(replayer, scheduler, fake_clock)
    assert sent == [msg("/keep", k) for k in range(10)]
    assert replayer.stats.lateness.maximum == 0.0


def test_replay_from_starts_the_clock_after_reading_up_to_the_first_datagram(
    fake_clock: FakeClock,
) -> None:
    before = datagrams([n / 2000 for n in range(2000)])  # 1 s of lines before --from
    recorded = before + datagrams([1.0, 1.1], [msg("/a"), msg("/b")])

    def slow_source() -> Iterator[Datagram]:
        for datagram in recorded:
            fake_clock.advance(0.0001)  # 0.2 s to read the lines before --from
            yield datagram

    window = Selection(start=1.0)
    scheduler = Scheduler(fake_clock)
    sent: list[tuple[float, bytes]] = []
    replayer = Replayer(
        slow_source,
        lambda data: sent.append((fake_clock.monotonic(), data)),
        scheduler,
        plan(recorded, window, "keep"),
        selection=window,
    )
    drive(replayer, scheduler, fake_clock)
    assert [round(t - replayer.start_monotonic, 6) for t, _ in sent] == [0.0, 0.1]
    assert replayer.stats.lateness.maximum == 0.0


def test_replay_gives_way_right_after_each_datagram_before_reading_on(
    fake_clock: FakeClock,
) -> None:
    """The receiver a send wakes on this machine runs before the replay reads more lines or
    spins (give_way; measured: without it the receiving process saw sends up to 0.5 ms late)."""
    bundle = codec.encode_bundle(1, [msg("/a"), msg("/b")])
    recorded = datagrams([0.0, 0.001, 0.002, 0.5], [bundle, msg("/c"), msg("/d"), msg("/e")])
    events: list[str] = []

    def source() -> Iterator[Datagram]:
        for datagram in recorded:
            events.append("read")
            yield datagram

    scheduler = Scheduler(fake_clock)
    replayer = Replayer(
        source,
        lambda data: events.append("send"),
        scheduler,
        plan(recorded, EVERYTHING, "strip"),
        mode="strip",
        after_send=lambda: events.append("give way"),
    )
    drive(replayer, scheduler, fake_clock)
    sends = "".join({"send": "s", "give way": "g", "read": "r"}[e] for e in events)
    # Two packets of the stripped bundle, then one give-way per datagram, always before a read.
    assert sends.count("g") == 4
    assert "ssg" in sends
    assert all(sends[i + 1] == "g" for i, c in enumerate(sends) if c == "s" and sends[i + 1] != "s")


def thread_timer_slack() -> int:
    """The calling thread's timer slack in ns (Linux prctl PR_GET_TIMERSLACK)."""
    import ctypes

    return int(ctypes.CDLL(None).prctl(30, 0, 0, 0, 0))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timer slack is Linux's")
def test_replay_timer_thread_asks_for_1us_timer_slack_and_only_that_thread() -> None:
    """SPIN is 0.2 ms on Linux because the replay's timer thread waits with 1 µs timer slack."""
    seen: list[int] = []
    scheduler = Scheduler(SystemClock())
    recorded = datagrams([0.0])
    replayer = Replayer(
        lambda: iter(recorded),
        lambda data: seen.append(thread_timer_slack()),  # on the timer thread
        scheduler,
        plan(recorded, EVERYTHING, "keep"),
    )
    before = thread_timer_slack()
    with scheduler:
        scheduler.start()
        replayer.begin()
        assert replayer.finished.wait(10)
    assert seen == [1000]  # the scheduler's timer thread asked for it (Scheduler._loop)
    assert thread_timer_slack() == before != 1000  # this (main) thread is left alone
    assert FakeClock().sharpen_waits() is False
    answers: list[bool] = []  # on a thread of its own: the slack stays with that thread
    skewed = threading.Thread(
        target=lambda: answers.append(SkewedClock(SystemClock()).sharpen_waits())
    )
    skewed.start()
    skewed.join()
    assert answers == [True]  # the base clock's answer


@pytest.mark.skipif(not Path("/dev/fd").is_dir(), reason="needs /dev/fd (bash's <(...))")
def test_replay_of_a_pipe_is_one_line_saying_to_save_it_first(tmp_path: Path) -> None:
    """`oscsync replay <(cat take.jsonl)`: the file is read to check it, then once per pass,
    which a pipe cannot be (the check took its first 64 bytes, the first pass the rest)."""
    path = tmp_path / "take.jsonl"
    write_recording(path, PACKETS)
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, path.read_bytes())
        os.close(write_end)
        result = CliRunner().invoke(cli, ["replay", f"/dev/fd/{read_end}", "-p", "127.0.0.1:9"])
    finally:
        os.close(read_end)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == (
        f"Error: Invalid value for FILE: /dev/fd/{read_end} is not a regular file (a pipe?): "
        "replay reads its file more than once (to check it, then once per pass); save it to a "
        "file first"
    )
