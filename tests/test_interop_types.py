"""Every OSC type both ways (issue 28), messages and bundles, over UDP and TCP, against two
independent implementations: liblo 0.31 (oscsend, oscsendfile, oscdump) and osc.js 2.4.5 (node,
installed from the npm registry into tests/node by ``make peers``).

What each peer cannot do is left out for that peer only, and said where: liblo 0.31 knows neither
``r`` nor arrays (its server refuses such a message as invalid), its ``oscsend`` cannot write
``t`` or ``b`` and no liblo tool sends a bundle with a timetag of our choosing (``oscsendfile``
stamps its own); osc.js reads a ``c`` as a UTF-16 code unit and only one level of arrays.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import REPO, LineReader, free_udp_port, missing, oscsync_command, require_peer
from test_interop_liblo import start_oscdump, wait_until_listening
from test_interop_liblo_tcp import free_tcp_port, start_oscdump_tcp

Spawn = Callable[..., subprocess.Popen[str]]
STAMP = "dd9d15a7.922f48c2"
NODE_DIR = REPO / "tests" / "node"

# (tag, the word `oscsync send -t` takes, the canonical value both sides must show: i f d
# numbers, h a decimal string, s S c strings, t b m r hex, T F N true/false/null, I "inf").
EVERY_TYPE: list[tuple[str, str | None, Any]] = [
    ("i", "-7", -7),
    ("h", "-9000000000123", "-9000000000123"),
    ("f", "0.5", 0.5),
    ("d", "-1234.125", -1234.125),
    ("s", "naïve ✓", "naïve ✓"),
    ("S", "sym", "sym"),
    ("c", "é", "é"),
    ("t", STAMP, STAMP),
    ("b", "cafe", "cafe"),
    ("b", "0x", ""),  # an empty blob
    ("m", "00903c64", "00903c64"),
    ("r", "ff0000ff", "ff0000ff"),
    ("T", None, True),
    ("F", None, False),
    ("N", None, None),
    ("I", None, "inf"),
]
# An array holding the types that are aliases on the wire (c t I: issue 28's decoding bug).
ARRAY_TAGS = "[ictIS]"
ARRAY_WORDS = ["1", "x", "00000000.00000001", "sym"]
ARRAY_VALUE = [1, "x", "00000000.00000001", "inf", "sym"]
ADDRESS = "/{a,b}/x"  # a pattern with ',' (OSC 1.0 allows it)


def _types(cases: list[tuple[str, str | None, Any]]) -> str:
    return "".join(tag for tag, _, _ in cases)


def _words(cases: list[tuple[str, str | None, Any]]) -> list[str]:
    return [word for _, word, _ in cases if word is not None]


def _walk(types: str, args: list[Any], convert: Callable[[Any], Any]) -> list[Any]:
    """Convert each leaf of ``args`` by its tag, arrays by the brackets of ``types`` (a MIDI
    value is a JSON list too, so the tags decide, not the shapes)."""
    out: list[Any] = []
    stack: list[list[Any]] = [out]
    values: list[Iterator[Any]] = [iter(args)]
    for tag in types:
        if tag == "[":
            inner: list[Any] = []
            stack[-1].append(inner)
            stack.append(inner)
            values.append(iter(next(values[-1])))
        elif tag == "]":
            stack.pop()
            values.pop()
        else:
            stack[-1].append(convert(_Leaf(tag, next(values[-1]))))
    return out


class _Leaf:
    def __init__(self, tag: str, value: Any) -> None:
        self.tag = tag
        self.value = value


def _canonical_leaf(leaf: _Leaf) -> Any:
    if leaf.tag == "h":
        return str(leaf.value)
    if leaf.tag == "m":
        return bytes(leaf.value).hex()
    if leaf.tag == "r":
        return f"{leaf.value:08x}"
    return leaf.value


def from_dump(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "address": record["address"],
        "types": record["types"],
        "args": _walk(record["types"], record["args"], _canonical_leaf),
        "timetag": record["timetag"],
    }


def expected(cases: list[tuple[str, str | None, Any]], timetag: str | None, array: bool) -> dict:
    types = _types(cases) + (ARRAY_TAGS if array else "")
    args = [value for _, _, value in cases] + ([ARRAY_VALUE] if array else [])
    return {"address": ADDRESS, "types": types, "args": args, "timetag": timetag}


def send_args(cases: list[tuple[str, str | None, Any]], array: bool, *options: str) -> list[str]:
    """``oscsync send`` arguments after the target (the words after ``--``: "-7" is data)."""
    types = _types(cases) + (ARRAY_TAGS if array else "")
    words = [*_words(cases), *(ARRAY_WORDS if array else [])]
    return [ADDRESS, "--types", types, *options, "--", *words]


def start_dump(spawn: Spawn, listen: str, count: int) -> tuple[subprocess.Popen[str], str]:
    dump = spawn("dump", "--listen", listen, "--jsonl", "--count", str(count))
    assert dump.stderr is not None
    where = LineReader(dump.stderr).wait_for(lambda t: t.startswith("listening on")).split()[-1]
    return dump, where


def dumped(dump: subprocess.Popen[str]) -> list[dict[str, Any]]:
    assert dump.stdout is not None
    out = dump.stdout.read()
    assert dump.wait(20) == 0
    return [from_dump(json.loads(line)) for line in out.splitlines()]


# -- osc.js ------------------------------------------------------------------------------------


def require_oscjs() -> list[str]:
    """The command that runs tests/node/oscjs_peer.js; missing osc.js fails under CI=true."""
    node = require_peer("node")
    if not (NODE_DIR / "node_modules" / "osc" / "package.json").exists():
        missing("osc.js is not installed (make peers runs npm ci in tests/node)")
    return [node, str(NODE_DIR / "oscjs_peer.js")]


def oscjs_packets(cases: list[tuple[str, str | None, Any]], timetag: str | None) -> list[dict]:
    args: list[Any] = [
        {"type": tag} if word is None else {"type": tag, "value": value}
        for tag, word, value in cases
    ]
    array = [
        {"type": tag} if tag == "I" else {"type": tag, "value": value}
        for tag, value in zip(ARRAY_TAGS[1:-1], ARRAY_VALUE)
    ]
    return [{"address": ADDRESS, "args": [*args, array], "timetag": timetag}]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_oscsync_sends_every_type_to_oscjs(transport: str) -> None:
    peer = subprocess.Popen(
        [*require_oscjs(), "listen", transport, "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert peer.stdout is not None
        lines = LineReader(peer.stdout)
        port = lines.wait_for(lambda line: line.startswith("listening")).split()[1]
        target = f"{'tcp://' if transport == 'tcp' else ''}127.0.0.1:{port}"
        for options in ([], ["--at", STAMP]):
            args = send_args(EVERY_TYPE, True, *options)
            subprocess.run(oscsync_command("send", target, *args), check=True, capture_output=True)
        received = [json.loads(lines.wait_for(lambda line: line.startswith("{"))) for _ in "ab"]
        assert peer.wait(20) == 0
    finally:
        peer.kill()
        peer.wait(5)
    assert received == [
        expected(EVERY_TYPE, None, array=True),
        expected(EVERY_TYPE, STAMP, array=True),
    ]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_oscjs_sends_every_type_to_oscsync(spawn: Spawn, transport: str) -> None:
    oscjs = require_oscjs()
    dump, where = start_dump(spawn, f"{transport}://127.0.0.1:0", count=2)
    port = where.rsplit(":", 1)[1]
    packets = oscjs_packets(EVERY_TYPE, None) + oscjs_packets(EVERY_TYPE, STAMP)
    subprocess.run([*oscjs, "send", transport, port, json.dumps(packets)], check=True, timeout=20)
    assert dumped(dump) == [
        expected(EVERY_TYPE, None, array=True),
        expected(EVERY_TYPE, STAMP, array=True),
    ]


# -- liblo -------------------------------------------------------------------------------------

# liblo 0.31: no r, no arrays; its char is one byte ('x'); oscdump's own notation for each.
LIBLO_TYPES = [case for case in EVERY_TYPE if case[0] not in "rc"] + [("c", "x", "x")]
OSCDUMP_ARGS = (
    '-7 -9000000000123 0.500000 -1234.125000 "naïve ✓" \'sym '
    f"{STAMP} [2b 0xca 0xfe] [0b ] MIDI [0x00 0x90 0x3c 0x64] #T #F Nil Infinitum 'x'"
)


@pytest.mark.parametrize("target", ["udp", "tcp-slip", "tcp-size"])
def test_oscsync_sends_every_liblo_type_to_oscdump(target: str) -> None:
    types = _types(LIBLO_TYPES)
    if target == "udp":
        port = free_udp_port()
        proc, lines = start_oscdump(port)
        where, options = f"127.0.0.1:{port}", []
    else:
        port = free_tcp_port()
        proc, lines = start_oscdump_tcp(port)
        where, options = f"tcp://127.0.0.1:{port}", ["--framing", target.split("-")[1]]
    try:
        if target == "udp":  # inside the try: oscdump never exits by itself
            wait_until_listening(port, lines)
        received = []
        for timetag in ([], ["--at", STAMP]):
            args = send_args(LIBLO_TYPES, False, *options, *timetag)
            subprocess.run(oscsync_command("send", where, *args), check=True, capture_output=True)
            received.append(lines.wait_for(lambda text: ADDRESS in text))
        message, bundle = received
    finally:
        proc.terminate()
        proc.wait(5)
    # A message's line starts with oscdump's own clock; a bundle's with its timetag.
    assert message.split(" ", 1)[1] == f"{ADDRESS} {types} {OSCDUMP_ARGS}"
    assert bundle == f"{STAMP} {ADDRESS} {types} {OSCDUMP_ARGS}"


# What oscsend and oscsendfile can write (no t, no b; oscsendfile splits words at spaces).
OSCSEND_TYPES = [case for case in LIBLO_TYPES if case[0] not in "tbs"] + [("s", "naïve", "naïve")]


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_liblo_sends_every_type_it_has_to_oscsync(
    spawn: Spawn, transport: str, tmp_path: Any
) -> None:
    oscsend = require_peer("oscsend")
    oscsendfile = require_peer("oscsendfile")
    dump, where = start_dump(spawn, f"{transport}://127.0.0.1:0", count=2)
    url = f"osc.{transport}://127.0.0.1:{where.rsplit(':', 1)[1]}"
    types = _types(OSCSEND_TYPES)
    words = _words(OSCSEND_TYPES)
    subprocess.run([oscsend, url, ADDRESS, types, *words], check=True, timeout=20)
    # oscsendfile sends each line in a bundle (stamped with its own clock, not the line's), and
    # writes a symbol as a string: liblo 0.31's, not a decoding question.
    script = tmp_path / "lines.txt"
    script.write_text(f"{STAMP} {ADDRESS} {types} {' '.join(words)}\n")
    subprocess.run([oscsendfile, url, str(script)], check=True, timeout=20)
    message, bundle = dumped(dump)
    assert message == expected(OSCSEND_TYPES, None, array=False)
    assert bundle["timetag"] is not None
    as_sent = expected(OSCSEND_TYPES, bundle["timetag"], array=False)
    assert bundle == {**as_sent, "types": as_sent["types"].replace("S", "s")}
