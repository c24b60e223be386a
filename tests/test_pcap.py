"""Packet captures (issue #15): UDP datagrams read from pcap and pcapng, others counted; pcap out."""

from __future__ import annotations

import contextlib
import io
import json
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import require_peer
from oscsync.files.pcap import (
    LINKTYPE_ETHERNET,
    LINKTYPE_LINUX_SLL,
    LINKTYPE_LINUX_SLL2,
    LINKTYPE_LOOP,
    LINKTYPE_NULL,
    LINKTYPE_RAW,
    CaptureError,
    CaptureReport,
    PcapWriter,
    ip_udp_packet,
    read_capture,
)
from oscsync.osc import codec

T0 = 1_795_779_000_123_456_000  # ns; a multiple of 1000 so microsecond files keep it exactly
TICK = codec.encode_message("/tick", [1])
CHAT = codec.encode_message("/chat", ["hello"])
BUNDLE = codec.encode_bundle(0xDD9D15A7922F48C2, [TICK, CHAT])
V4 = ip_udp_packet(TICK, "127.0.0.1:50000", "127.0.0.1:9001")
V6 = ip_udp_packet(CHAT, "[::1]:50001", "[::1]:9001")
TCP = bytearray(ip_udp_packet(b"x" * 12, "127.0.0.1:1", "127.0.0.1:2"))
TCP[9] = 6  # the protocol field: now "TCP"
FRAGMENT = bytearray(ip_udp_packet(BUNDLE, "10.0.0.1:1", "10.0.0.2:9001"))
FRAGMENT[6] = 0x20  # more fragments follow
ARP_ETHERTYPE = 0x0806


def ethernet(ethertype: int, payload: bytes, vlan: bool = False) -> bytes:
    tag = struct.pack("!HH", 0x8100, 5) if vlan else b""
    ethertype_field = struct.pack("!H", ethertype)
    if vlan:
        return b"\x02" * 6 + b"\x04" * 6 + tag[:2] + tag[2:] + ethertype_field + payload
    return b"\x02" * 6 + b"\x04" * 6 + ethertype_field + payload


def sll(ethertype: int, payload: bytes) -> bytes:
    return struct.pack("!HHH8sH", 0, 772, 6, b"\x00" * 8, ethertype) + payload


def sll2(ethertype: int, payload: bytes) -> bytes:
    return struct.pack("!HHIHBB8s", ethertype, 0, 1, 772, 0, 6, b"\x00" * 8) + payload


def pcap_file(linktype: int, frames: list[bytes], order: str = "<", ns: bool = False) -> bytes:
    magic = 0xA1B23C4D if ns else 0xA1B2C3D4
    out = struct.pack(order + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for index, frame in enumerate(frames):
        at = T0 + index * 10_000_000
        seconds, rest = divmod(at, 1_000_000_000)
        fraction = rest if ns else rest // 1000
        out += struct.pack(order + "IIII", seconds, fraction, len(frame), len(frame)) + frame
    return out


def block(order: str, kind: int, body: bytes) -> bytes:
    body += b"\x00" * (-len(body) % 4)
    length = len(body) + 12
    return struct.pack(order + "II", kind, length) + body + struct.pack(order + "I", length)


def pcapng_file(linktype: int, frames: list[bytes], order: str = "<", tsresol: int = 9) -> bytes:
    shb = struct.pack(order + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    option = struct.pack(order + "HH", 9, 1) + bytes([tsresol]) + b"\x00" * 3
    idb = struct.pack(order + "HHI", linktype, 0, 65535) + option + struct.pack(order + "HH", 0, 0)
    out = block(order, 0x0A0D0D0A, shb) + block(order, 1, idb)
    out += block(order, 4, b"\x00" * 8)  # a name resolution block: carries no packet
    units = 10**tsresol
    for index, frame in enumerate(frames):
        stamp = (T0 + index * 10_000_000) * units // 1_000_000_000
        head = struct.pack(
            order + "IIIII", 0, stamp >> 32, stamp & 0xFFFFFFFF, len(frame), len(frame)
        )
        out += block(order, 6, head + frame)
    return out


def read(data: bytes, **kwargs: bool) -> tuple[list[tuple[float, bytes, str, str]], CaptureReport]:
    report = CaptureReport()
    got = [
        (d.offset, d.data, d.source, d.destination)
        for d in read_capture(io.BytesIO(data), report=report, **kwargs)
    ]
    return got, report


EXPECTED = [
    (0.0, TICK, "127.0.0.1:50000", "127.0.0.1:9001"),
    (0.01, CHAT, "[::1]:50001", "[::1]:9001"),
]


@pytest.mark.parametrize("order", ["<", ">"])
@pytest.mark.parametrize("ns", [False, True])
def test_pcap_ethernet_udp_only_others_skipped_and_counted(order: str, ns: bool) -> None:
    frames = [
        ethernet(0x0800, V4),
        ethernet(0x86DD, V6, vlan=True),
        ethernet(0x0800, bytes(TCP)),
        ethernet(ARP_ETHERTYPE, b"\x00" * 28),
        ethernet(0x0800, bytes(FRAGMENT)),
        ethernet(0x0800, V4)[:40],  # cut by the snap length
    ]
    got, report = read(pcap_file(LINKTYPE_ETHERNET, frames, order, ns))
    assert got == EXPECTED
    assert report.frames == 6
    assert report.skipped == {"not-udp": 1, "not-ip": 1, "ip-fragment": 1, "truncated": 1}


@pytest.mark.parametrize(
    ("linktype", "frame_v4", "frame_v6"),
    [
        (LINKTYPE_LINUX_SLL, sll(0x0800, V4), sll(0x86DD, V6)),
        (LINKTYPE_LINUX_SLL2, sll2(0x0800, V4), sll2(0x86DD, V6)),
        (LINKTYPE_NULL, struct.pack("<I", 2) + V4, struct.pack("<I", 30) + V6),  # macOS lo0
        (LINKTYPE_NULL, struct.pack(">I", 2) + V4, struct.pack(">I", 24) + V6),
        (LINKTYPE_LOOP, struct.pack(">I", 2) + V4, struct.pack(">I", 28) + V6),
        (LINKTYPE_RAW, V4, V6),
    ],
)
@pytest.mark.parametrize("container", ["pcap", "pcapng-le", "pcapng-be"])
def test_pcap_linux_cooked_loopback_and_raw_link_types(
    linktype: int, frame_v4: bytes, frame_v6: bytes, container: str
) -> None:
    if container == "pcap":
        data = pcap_file(linktype, [frame_v4, frame_v6])
    else:
        data = pcapng_file(linktype, [frame_v4, frame_v6], "<" if container.endswith("le") else ">")
    got, report = read(data)
    assert got == EXPECTED
    assert not report.skipped


def test_pcapng_microsecond_resolution_and_unknown_link_type_counted() -> None:
    got, _ = read(pcapng_file(LINKTYPE_RAW, [V4, V6], tsresol=6))
    assert got == EXPECTED
    got, report = read(pcapng_file(147, [V4]))  # a user link type: not ours to guess
    assert got == [] and report.skipped == {"link-type-147": 1}


def test_pcap_not_a_capture_and_truncated_file_are_one_line_errors() -> None:
    with pytest.raises(CaptureError, match="not a pcap or pcapng file"):
        read(b"hello world, not a capture")
    whole = pcap_file(LINKTYPE_RAW, [V4, V6, V4])
    with pytest.raises(CaptureError, match=r"^frame 3: the file ends inside a packet") as caught:
        read(whole[:-10])
    assert caught.value.reason == "truncated"
    got, report = read(whole[:-10], skip_bad=True)
    assert got == EXPECTED and report.skipped == {"truncated": 1}


def test_pcap_damaged_block_length_is_refused() -> None:
    data = bytearray(pcapng_file(LINKTYPE_RAW, [V4]))
    data[-4 - len(V4) - 24 - 4 + 4 : -len(V4) - 24] = b"\xff\xff\xff\x7f"  # the EPB's length
    with pytest.raises(CaptureError, match="claims"):
        read(bytes(data))


def test_pcap_writer_round_trips_datagrams_and_checksums() -> None:
    out = io.BytesIO()
    writer = PcapWriter(out)
    writer.add(T0, BUNDLE, "127.0.0.1:50000", "127.0.0.1:9001")
    writer.add(T0 + 1_500, CHAT, "[::1]:50001", "[::]:9001")
    got, _ = read(out.getvalue())
    assert got == [
        (0.0, BUNDLE, "127.0.0.1:50000", "127.0.0.1:9001"),
        (1.5e-6, CHAT, "[::1]:50001", "[::]:9001"),
    ]
    ipv4 = ip_udp_packet(BUNDLE, "127.0.0.1:50000", "127.0.0.1:9001")
    words = struct.unpack("!10H", ipv4[:20])
    assert sum(words) % 0xFFFF == 0  # a header with its checksum sums to all ones


def test_pcap_written_by_record_decodes_in_tshark_as_osc(tmp_path: Path) -> None:
    tshark = require_peer("tshark")
    path = tmp_path / "osc.pcap"
    with path.open("wb") as out:
        writer = PcapWriter(out)
        writer.add(T0, BUNDLE, "127.0.0.1:50000", "127.0.0.1:9001")
        writer.add(T0 + 10_000_000, CHAT, "[::1]:50001", "[::1]:9001")
    result = subprocess.run(
        [
            *(tshark, "-r", str(path), "--enable-heuristic", "osc_udp", "-T", "json"),
            *("-o", "udp.check_checksum:TRUE", "-o", "ip.check_checksum:TRUE"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    packets = json.loads(result.stdout)
    assert len(packets) == 2
    text = result.stdout  # not re-encoded: tshark repeats keys (one per bundle element)
    # Wireshark's checksum states: 0 bad, 1 good, 2 not verified.
    assert text.count('"udp.checksum.status": "1"') == 2
    assert text.count('"ip.checksum.status": "1"') == 1  # IPv6 has no header checksum
    assert (
        '"osc.message.header.path": "/tick"' in text
        and '"osc.message.header.path": "/chat"' in text
    )
    assert '"osc.message.string": "hello"' in text
    assert text.count('"osc.message.header.path": "/chat"') == 2  # in the bundle, and alone


def test_pcapng_written_by_tshark_reads_back(tmp_path: Path) -> None:
    tshark = require_peer("tshark")
    source = tmp_path / "in.pcap"
    source.write_bytes(pcap_file(LINKTYPE_ETHERNET, [ethernet(0x0800, V4), ethernet(0x86DD, V6)]))
    converted = tmp_path / "out.pcapng"
    subprocess.run(
        [tshark, "-r", str(source), "-F", "pcapng", "-w", str(converted)],
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert converted.read_bytes()[:4] == b"\x0a\x0d\x0d\x0a"
    got, _ = read(converted.read_bytes())
    assert got == EXPECTED


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_pcap_damaged_files_raise_capture_error_only(data: st.DataObject) -> None:
    """Any cut or flipped byte in a capture: datagrams or a CaptureError, never a traceback."""
    whole = bytearray(
        data.draw(
            st.sampled_from(
                [
                    pcap_file(LINKTYPE_ETHERNET, [ethernet(0x0800, V4), ethernet(0x86DD, V6)]),
                    pcapng_file(LINKTYPE_LINUX_SLL, [sll(0x0800, V4), sll(0x86DD, V6)], ">"),
                    pcapng_file(LINKTYPE_NULL, [struct.pack("<I", 2) + V4]),
                ]
            )
        )
    )
    for _ in range(data.draw(st.integers(0, 4))):
        at = data.draw(st.integers(0, len(whole) - 1))
        whole[at] = data.draw(st.integers(0, 255))
    cut = bytes(whole[: data.draw(st.integers(0, len(whole)))])
    for skip_bad in (False, True):
        with contextlib.suppress(CaptureError):  # anything else fails the test
            read(cut, skip_bad=skip_bad)


def test_pcap_writer_keeps_every_datagram_its_family_can_carry() -> None:
    """IPv6's payload length does not count its 40-byte header: UDP carries 65,527 bytes over
    IPv6, 20 more than over IPv4 (65,507), and those are datagrams, not TCP packets."""
    out = io.BytesIO()
    writer = PcapWriter(out)
    largest_v6, largest_v4 = b"6" * 65_527, b"4" * 65_507
    assert writer.add(T0, largest_v6, "[::1]:50001", "[::1]:9001")
    assert not writer.add(T0, largest_v6 + b"6", "[::1]:50001", "[::1]:9001")
    assert writer.add(T0, largest_v4, "127.0.0.1:50000", "127.0.0.1:9001")
    assert not writer.add(T0, largest_v4 + b"4", "127.0.0.1:50000", "127.0.0.1:9001")
    got, _ = read(out.getvalue())
    assert [(data, source) for _, data, source, _ in got] == [
        (largest_v6, "[::1]:50001"),
        (largest_v4, "127.0.0.1:50000"),
    ]
