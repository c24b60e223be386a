"""Each lever of issue 18's receive path, measured beside what it replaced, in one process.

CPU time per item (``time.process_time``: the load of other processes does not count, though it
still disturbs caches), best of ``--rounds`` rounds, the two variants of a lever alternating so
both see the same conditions:

  * **decode**: the fast path for common type tags (``codec.decode_message``) against
    python-osc's decoder (``tests/osc_reference.py``, the codec's slow path until issue 27) and
    the general path the fast path falls back to now (``codec._decode_message_general``), for
    ``,if`` (the throughput blast's message), ``,s`` (a chat line) and ``,ifsbTFNhdt``;
  * **line**: rendering a ``dump`` line now (``Dumper.print_now``'s renderers) against the
    formatters before issue 18 (datetime for the clock, the JSON encoder for the args),
    written into an in-memory stream;
  * **output**: ``dump``'s lines collected and written once per batch (``flush_each=False``, the
    receive loop's ``on_idle`` flushing) against a write system call per line, into /dev/null;
  * **receive**: ``recvmsg`` (a new bytes object each time, what the transport does) against
    ``recvmsg_into`` a reused buffer plus a copy of the datagram out of it (the copy is needed:
    messages outlive the buffer), on a socket holding ``--count`` queued datagrams.

    .venv/bin/python benchmarks/receive_levers.py              # 20,000 items x 5 rounds
    .venv/bin/python benchmarks/receive_levers.py --count 5000 --rounds 3

``benchmarks/throughput.py`` measures the whole receiver against python-osc's; this one says
which lever paid how much.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import osc_reference  # the tests' python-osc reference decoder
from oscsync.apps import dump
from oscsync.net.udpsocket import MAX_DATAGRAM, set_recv_buffer
from oscsync.osc import codec, timetag
from oscsync.osc.routing import Received
from oscsync.terminal import display

SOURCE = ("127.0.0.1", 40000)
_JSON = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def best_of(rounds: int, variants: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each variant returns µs per item for one round; the best round of each, alternating."""
    best = {name: float("inf") for name in variants}
    names = list(variants)
    for round_number in range(rounds):
        for name in names if round_number % 2 == 0 else names[::-1]:
            best[name] = min(best[name], variants[name]())
    return best


def per_item(count: int, step: Callable[[int], object]) -> float:
    start = time.process_time()
    for k in range(count):
        step(k)
    return (time.process_time() - start) / count * 1e6


def show(title: str, before: tuple[str, float], after: tuple[str, float]) -> None:
    print(
        f"  {title:<22} {after[0]:<38} {after[1]:6.2f} µs   {before[0]:<34} {before[1]:6.2f} µs"
        f"   {before[1] / after[1]:5.2f}x"
    )


# -- the formatters as they were before issue 18 (apps/dump.py at 09a5240), for the line lever --


def old_clock_text(unix: float) -> str:
    return dt.datetime.fromtimestamp(unix, tz=dt.timezone.utc).strftime("%H:%M:%S.%f")


def old_json_line(received: Received, now: float) -> str:
    message = received.message
    tag = message.timetag
    host, port = received.source
    if tag is None:
        stamp = unix = "null"
    else:
        stamp = f'"{timetag.format_hex(tag)}"'
        unix = "null" if tag == timetag.IMMEDIATELY else repr(timetag.to_unix(tag, now))
    ahead = display.headroom_ms(tag, now)
    return (
        f'{{"arrival":{received.arrival:.6f},"source":"{host}:{port}","timetag":{stamp},'
        f'"timetag_unix":{unix},"headroom_ms":{"null" if ahead is None else repr(ahead)},'
        f'"address":{json.encoder.encode_basestring_ascii(message.address)},'
        f'"types":"{message.types}","args":{_JSON.encode(display.json_args(message))}}}'
    )


def old_text_line(received: Received, now: float) -> str:
    message = received.message
    host, port = received.source
    parts = [old_clock_text(received.arrival), f"{host}:{port}"]
    body = f"{display.escape(message.address)} ,{message.types}"
    args = display.format_args(message)
    parts.append(f"{body} {args}" if args else body)
    return "  ".join(parts)


# -- the levers ----------------------------------------------------------------------------------


def decode_lever(count: int, rounds: int) -> None:
    print("decode (per message):")
    cases = {
        ",if": codec.encode_message("/blast/fader", [7, 0.5]),
        ",s": codec.encode_message("/chat", ["hello from oscsync"]),
        ",ifsbTFNhd": codec.encode_message(
            "/all", [1, 0.5, "text", b"\x01\x02", True, False, None, 2**40, 0.25], "ifsbTFNhd"
        ),
    }
    for name, data in cases.items():
        assert codec.decode_message(data) == osc_reference.decode_message(data, None)
        assert codec._decode_message_general(data, None) == codec.decode_message(data)
        best = best_of(
            rounds,
            {
                "fast": lambda data=data: per_item(count, lambda _: codec.decode_message(data)),
                "python-osc": lambda data=data: per_item(
                    count, lambda _: osc_reference.decode_message(data, None)
                ),
                "general": lambda data=data: per_item(
                    count, lambda _: codec._decode_message_general(data, None)
                ),
            },
        )
        show(name, ("through python-osc", best["python-osc"]), ("fast path", best["fast"]))
        show("", ("through python-osc", best["python-osc"]), ("general path", best["general"]))


def line_lever(count: int, rounds: int) -> None:
    print("line (render one plain message, per line):")
    message = codec.decode(codec.encode_message("/blast/fader", [7, 0.5]))[0]
    received = Received(message, SOURCE, 1_795_551_084.123456)
    for jsonl in (True, False):
        now_line = dump._json_now if jsonl else dump._text_now
        old = old_json_line if jsonl else old_text_line
        assert now_line(received) == old(received, received.arrival)
        best = best_of(
            rounds,
            {
                "now": lambda now_line=now_line: per_item(count, lambda _: now_line(received)),
                "old": lambda old=old: per_item(count, lambda _: old(received, received.arrival)),
            },
        )
        show(
            "--jsonl" if jsonl else "text",
            ("formatters before issue 18", best["old"]),
            ("render now", best["now"]),
        )


def output_lever(count: int, rounds: int) -> None:
    print("output (dump --jsonl into /dev/null, per line):")
    message = codec.decode(codec.encode_message("/blast/fader", [7, 0.5]))[0]
    received = Received(message, SOURCE, 1_795_551_084.123456)

    def run(batched: bool) -> float:
        with open(os.devnull, "w") as out:
            dumper = dump.Dumper(out, jsonl=True, flush_each=not batched)
            start = time.process_time()
            for k in range(count):
                dumper.print_now(received)
                if batched and k % 512 == 511:
                    dumper.flush()  # what on_idle does after each batch of a flood
            dumper.flush()
            return (time.process_time() - start) / count * 1e6

    best = best_of(rounds, {"batched": lambda: run(True), "each": lambda: run(False)})
    show(
        "--jsonl",
        ("a write per line", best["each"]),
        ("a write per 512 lines", best["batched"]),
    )


def receive_lever(count: int, rounds: int) -> None:
    print("receive (per datagram, socket holding them all):")
    data = codec.encode_message("/blast/fader", [7, 0.5])

    def filled() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        set_recv_buffer(sock, 64 * 1024 * 1024)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.connect(sock.getsockname())
            for _ in range(count):
                sender.send(data)
        return sock

    def new_bytes() -> float:
        with filled() as sock:
            return per_item(count, lambda _: sock.recvmsg(MAX_DATAGRAM, 64))

    def reused() -> float:
        buffer = bytearray(MAX_DATAGRAM)
        view = memoryview(buffer)
        with filled() as sock:

            def step(_: int) -> bytes:
                size = sock.recvmsg_into([buffer], 64)[0]
                return view[:size].tobytes()

            return per_item(count, step)

    if not hasattr(socket.socket, "recvmsg"):
        print("  (no recvmsg on this platform)")
        return
    best = best_of(rounds, {"new": new_bytes, "reused": reused})
    show(",if", ("recvmsg_into a reused buffer + copy", best["reused"]), ("recvmsg", best["new"]))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(
        f"CPU µs per item, best of {args.rounds} rounds of {args.count}; load average {load};"
        " columns: kept, its µs, what it replaced, its µs, ratio"
    )
    decode_lever(args.count, args.rounds)
    line_lever(args.count, args.rounds)
    output_lever(args.count, args.rounds)
    receive_lever(args.count, args.rounds)


if __name__ == "__main__":
    main()
