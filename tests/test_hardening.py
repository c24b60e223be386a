"""Hardening: fuzzed input, a flood, faults and exposure. Nothing escapes, everything is counted."""

from __future__ import annotations

import os
import queue
import resource
import signal
import socket
import subprocess
import threading
import tracemalloc
from collections import Counter
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import LineReader, free_udp_port, oscsync_command
from osc_strategies import VALID, mutated, nested
from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import FakeClock
from oscsync.net.hostport import HostPort
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.osc.routing import Received
from oscsync.scheduler import Scheduler

WAIT = 5.0
Spawn = Callable[..., subprocess.Popen[str]]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(VALID)
def test_valid_packets_decode(packet: bytes) -> None:
    messages = codec.decode(packet)
    assert all(message.address.startswith("/") for message in messages)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(mutated())
def test_mutated_packets_only_ever_raise_decode_error(packet: bytes) -> None:
    try:
        codec.decode(packet)
    except codec.DecodeError as exc:
        assert exc.reason and " " not in exc.reason


def test_ten_thousand_deep_bundle_is_refused() -> None:
    packet = nested(codec.encode_message("/deep", [1]), 10_000)
    assert len(packet) > 200_000
    try:
        codec.decode(packet)
    except codec.DecodeError as exc:
        assert exc.reason == "too-deep"
    else:
        raise AssertionError("a 10,000-deep bundle was accepted")


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(mutated(), min_size=1, max_size=30))
def test_live_listener_counts_every_bad_datagram_and_serves_the_next_good_one(
    junk: list[bytes],
) -> None:
    inbox: queue.Queue[Received] = queue.Queue()
    with open_endpoint(HostPort("127.0.0.1", 0)) as listener:
        listener.start(inbox.put)
        where = listener.local_address
        assert where is not None
        sendable = [packet for packet in junk if len(packet) <= 65507]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for packet in sendable:
                sock.sendto(packet, where.sockaddr)
            sock.sendto(codec.encode_message("/still/alive", [1]), where.sockaddr)
        while True:  # mutated packets may still be valid OSC: skip their messages
            received = inbox.get(timeout=WAIT)
            if received.address == "/still/alive":
                break
        stats = listener.stats
        assert listener._thread is not None and listener._thread.is_alive()
    assert stats.datagrams == len(sendable) + 1
    good = sum(1 for packet in sendable if _decodes(packet))
    assert stats.dropped == len(sendable) - good
    assert all(" " not in reason for reason in stats.drops)


def _decodes(packet: bytes) -> bool:
    try:
        codec.decode(packet)
    except codec.DecodeError:
        return False
    return True


def test_flood_is_fully_accounted_with_bounded_threads_and_memory() -> None:
    """A burst far beyond what a Python handler keeps up with: sent == received + dropped."""
    heard: Counter[str] = Counter()
    end_heard = threading.Event()
    release = threading.Event()

    def handler(received: Received) -> None:
        release.wait(WAIT)  # a stalled handler: the flood has to overflow the socket buffer
        heard[received.address] += 1
        if received.address == "/end":
            end_heard.set()

    threads_before = threading.active_count()
    with open_endpoint(HostPort("127.0.0.1", 0), recv_buffer=256 * 1024) as listener:
        listener.start(handler)
        where = listener.local_address
        assert where is not None
        assert threading.active_count() == threads_before + 1
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        flood = codec.encode_message("/flood", [1, 2.0, "three"])
        marker = codec.encode_message("/end", [])
        flood_sent = markers_sent = 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(where.sockaddr)
            for _ in range(60_000):
                sock.send(flood)
                flood_sent += 1
            release.set()
            # Loopback keeps order on one socket: once a marker is handled, every flood datagram
            # before it was handled or dropped. A marker may meet a full buffer too: resend.
            while not end_heard.is_set() and markers_sent < 100:
                sock.send(marker)
                markers_sent += 1
                end_heard.wait(0.2)
        stats = listener.stats
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert threading.active_count() == threads_before + 1
    assert end_heard.is_set()
    kernel_drops = stats.drops["kernel-buffer-full"]
    assert kernel_drops > 0  # the burst did overflow the 256 KB buffer
    # Nothing unaccounted: every datagram sent was handled or counted as a kernel drop.
    assert heard["/flood"] + heard["/end"] + kernel_drops == flood_sent + markers_sent
    assert rss_after - rss_before < 50_000  # KB: the flood did not pile up in our memory


def test_default_listen_is_loopback(spawn: Spawn) -> None:
    proc = spawn("dump", "--listen", "0")
    assert proc.stderr is not None
    line = LineReader(proc.stderr).wait_for(lambda text: text.startswith("listening on"))
    assert line.split()[-1].startswith("127.0.0.1:")


def test_dump_allow_drops_a_stranger_on_127_0_0_2(spawn: Spawn) -> None:
    port = free_udp_port()
    proc = spawn("dump", "--listen", f"127.0.0.1:{port}", "--allow", "127.0.0.1", "--count", "1")
    assert proc.stderr is not None and proc.stdout is not None
    errors = LineReader(proc.stderr)
    errors.wait_for(lambda text: text.startswith("listening on"))
    for source, address in (("127.0.0.2", "/stranger"), ("127.0.0.1", "/friend")):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((source, 0))
            sock.sendto(codec.encode_message(address, []), ("127.0.0.1", port))
    out = proc.stdout.read()
    proc.wait(10)
    assert "/friend" in out and "/stranger" not in out
    assert "not-allowed 1" in errors.rest()[-1]


def test_sender_survives_a_peer_restart() -> None:
    port = free_udp_port()
    warnings: list[str] = []
    with open_endpoint(peers=[HostPort("127.0.0.1", port)], on_warning=warnings.append) as sender:
        for k in range(5):  # nobody listening yet: refused, counted, never raised
            sender.send("/n", [k])
        inbox: queue.Queue[Received] = queue.Queue()
        with open_endpoint(HostPort("127.0.0.1", port)) as listener:
            listener.start(inbox.put)
            for k in range(5, 10):
                sender.send("/n", [k])
            got = [inbox.get(timeout=WAIT).args[0] for _ in range(5)]
    assert got == [5, 6, 7, 8, 9]
    assert sender.stats.send_errors["refused"] >= 1
    assert len(warnings) == 1


def test_sigint_during_repeated_send_exits_cleanly() -> None:
    port = free_udp_port()
    proc = subprocess.Popen(
        oscsync_command(
            "send", f"127.0.0.1:{port}", "/x", "1", "--repeat", "1000", "--interval", "0.05"
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    errors = LineReader(proc.stderr)
    # The first refused send proves the loop is running before we interrupt it.
    errors.wait_for(lambda text: "nothing is listening" in text)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 130  # a run with a defined end, cut short (issue #13)
    assert not any("Traceback" in line for line in errors.rest())
    assert proc.stdout is not None
    proc.stdout.close()


def test_unresolvable_host_is_one_line() -> None:
    out = subprocess.run(
        oscsync_command("send", "no-such-host.invalid:9000", "/x"),
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    assert out.returncode == 2
    assert "cannot resolve host" in out.stderr
    assert "Traceback" not in out.stderr


def test_far_future_flood_is_capped_and_immediate_messages_still_run() -> None:
    """python-osc issue #110: 10,000+ bundles an hour ahead must not hold memory or block."""
    clock = FakeClock()
    warnings: list[str] = []
    ran: list[str] = []
    hour_ahead = tt.from_unix(clock.now() + 3600)

    # Default horizon (60 s): every bundle an hour ahead is refused, nothing is held.
    with Scheduler(clock, on_warning=warnings.append) as default:
        accepted = sum(
            default.submit(hour_ahead, lambda d: ran.append("far")) for _ in range(10_000)
        )
        assert accepted == 0
        assert default.held == 0
        assert default.stats().dropped == {"horizon": 10_000}

    # A horizon wide enough to admit them: the held queue stops at its cap.
    tracemalloc.start()
    with Scheduler(clock, horizon=7200, max_items=10_000, on_warning=warnings.append) as capped:
        base = tracemalloc.get_traced_memory()[0]
        accepted = sum(
            capped.submit(hour_ahead, lambda d: ran.append("far")) for _ in range(12_000)
        )
        held_bytes = tracemalloc.get_traced_memory()[0] - base
        assert accepted == 10_000
        assert capped.held == 10_000
        assert capped.stats().dropped == {"cap": 2_000}
        # An immediate message is still taken and runs at once, not after the far ones.
        assert capped.submit(None, lambda d: ran.append(f"now late={d.lateness}"))
        capped.run_due()
        assert ran == ["now late=0.0"]
    tracemalloc.stop()
    assert held_bytes < 10_000 * 400  # a few hundred bytes per held bundle, no thread each
    assert len([w for w in warnings if "refused" in w or "already held" in w]) == 2


# -- issue 27, item 6: every cache keyed by what a peer sends is bounded in bytes ----------------


def test_dump_lines_for_new_addresses_and_long_types_leave_no_memory_behind() -> None:
    """``dump`` remembers the rendered pieces of each address and type string: 100 addresses
    with 16,000 number tags each kept ~10 MB (a cache counted in entries); now they are bounded
    in bytes and long type strings are rendered every time."""
    from oscsync.apps.dump import Dumper, json_line, text_line

    stamp = tt.from_unix(1_795_551_084.0)
    (message,) = codec.decode(codec.encode_message("/flood", list(range(16_000)), "i" * 16_000))
    with open(os.devnull, "w") as sink:
        dumpers = [Dumper(sink, jsonl=jsonl, flush_each=False) for jsonl in (True, False)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for n in range(100):
                plain = message._replace(address=f"/flood/{n:04d}")
                for dumper in dumpers:  # what dump prints on arrival
                    dumper.print_now(Received(plain, ("127.0.0.1", 9000), 1_795_551_084.5))
                    dumper.flush()
                tagged = Received(plain._replace(timetag=stamp), ("127.0.0.1", 9000), 0.5)
                assert json_line(tagged, 0.5).endswith(",15999]}")
                assert text_line(tagged, 0.5).endswith(" 15998 15999")
            kept = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
    assert dumpers[0].written == dumpers[1].written == 100
    assert kept <= 3 << 20  # 1 MiB of shapes at most, and small lookups


def test_warn_once_remembers_keys_bounded_in_bytes() -> None:
    """Some warning keys name a peer (``reply:HOST:PORT``): a stranger cycling through source
    addresses must not grow the set of keys, nor print a line per address."""
    from oscsync.stats import WARN_KEY_BYTES, WarnOnce

    printed: list[str] = []
    warn = WarnOnce(printed.append)
    for port in range(100_000):
        warn(f"reply:192.0.2.1:{port}", f"cannot reply to 192.0.2.1:{port}")
    assert sum(map(len, warn.keys)) <= WARN_KEY_BYTES
    # One line per key remembered, and one (the first turned away) saying the rest are counted.
    assert len(printed) == len(warn.keys) + 1 < 1000
    assert printed[-1].endswith("(too many different warnings: new ones are counted, not shown)")
    assert warn.unwarned == 100_000 - len(warn.keys)
    warn.forget("reply:192.0.2.1:0")
    warn("drop:bad-size", "a new reason, once there is room again")
    assert printed[-1] == "a new reason, once there is room again"
