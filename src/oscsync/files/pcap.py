"""Packet captures: read the UDP datagrams out of pcap and pcapng files, and write a pcap.

Reading (``oscsync replay capture.pcapng``) understands the files tcpdump, tshark and Wireshark
write: classic pcap (microsecond and nanosecond, either byte order) and pcapng (section, interface,
enhanced and obsolete packet blocks; ``if_tsresol`` and ``if_tsoffset`` honoured). Link types:
Ethernet (with 802.1Q/802.1ad VLAN tags), Linux cooked capture v1 and v2 (``tcpdump -i any``),
BSD loopback/null (macOS ``lo0``, either byte order) and raw IP. Only UDP over IPv4 or IPv6 is
taken; every other frame (TCP, ARP, IP fragments, frames cut short by the snap length, unknown
link types, pcapng simple packets with no time) is skipped and counted by reason.

Writing (``oscsync record --pcap``) produces a nanosecond pcap with raw-IP framing (link type 101)
and an IPv4 or IPv6 + UDP header around each datagram, with valid checksums, so Wireshark and
tshark show it as a normal capture (enable the ``osc_udp`` heuristic dissector, see
docs/wireshark.md).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

from oscsync.files.recording import Datagram, DatagramFileError
from oscsync.outfile import WholeRecords

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
_BYTE_ORDER_MAGIC = 0x1A2B3C4D

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276
_RAW_IP_TYPES = {LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6, 12, 14}  # 12/14: raw IP on BSDs

_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_IPV6 = 0x86DD
_ETHERTYPE_VLAN = (0x8100, 0x88A8, 0x9100)
_IPV6_EXTENSIONS = (0, 43, 60)  # hop-by-hop, routing, destination options
_IPV6_FRAGMENT = 44
_UDP = 17
_AF_IPV6_VALUES = (10, 24, 28, 30)  # Linux, NetBSD/OpenBSD, FreeBSD, macOS
_MAX_BLOCK = 16 * 1024 * 1024
"""A pcapng block or pcap record larger than this is damage, not a packet (snap lengths are at
most 256 KiB); refusing it keeps a corrupt length from allocating gigabytes."""


class CaptureError(DatagramFileError):
    """A capture file that cannot be read; ``frame`` is the 1-based packet number (0: header)."""

    unit = "frame"

    @property
    def frame(self) -> int:
        return self.position


@dataclass
class CaptureReport:
    """What reading skipped, by reason, and how many frames it looked at."""

    frames: int = 0
    skipped: Counter[str] = field(default_factory=Counter)


def is_capture(start: bytes) -> bool:
    """True if these first bytes open a pcap or pcapng file."""
    if len(start) < 4:
        return False
    magic_le, magic_be = struct.unpack("<I", start[:4])[0], struct.unpack(">I", start[:4])[0]
    return magic_le == PCAPNG_SHB or any(
        m in (PCAP_MAGIC_US, PCAP_MAGIC_NS) for m in (magic_le, magic_be)
    )


def read_capture(
    stream: IO[bytes], *, skip_bad: bool = False, report: CaptureReport | None = None
) -> Iterator[Datagram]:
    """The UDP datagrams of a pcap or pcapng file, lazily, with offsets from the first frame."""
    report = report if report is not None else CaptureReport()
    start = stream.read(4)
    if len(start) < 4 or not is_capture(start):
        raise CaptureError(0, "not-a-capture", "not a pcap or pcapng file")
    if start == struct.pack("<I", PCAPNG_SHB):
        frames = _pcapng_frames(stream)
    else:
        frames = _pcap_frames(stream, *_pcap_header(stream, start))
    first: int | None = None
    try:
        for ns, linktype, frame in frames:
            report.frames += 1
            try:
                found = _udp_of_frame(linktype, frame)
            except _Skip as skip:
                report.skipped[skip.reason] += 1
                continue
            if ns is None:
                report.skipped["no-timestamp"] += 1
                continue
            if first is None:
                first = ns
            payload, source, destination = found
            yield Datagram(
                offset=(ns - first) / 1e9,
                data=payload,
                source=source,
                wall=ns / 1e9,
                line=report.frames,
                destination=destination,
            )
    except CaptureError as exc:
        if not skip_bad:
            raise CaptureError(report.frames + 1, exc.reason, exc.detail) from None
        report.skipped[exc.reason] += 1


# -- containers -------------------------------------------------------------------------------

Frame = tuple[int | None, int, bytes]
"""(timestamp in Unix nanoseconds or None, link type, frame bytes)."""


def _read_exact(stream: IO[bytes], size: int, what: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise CaptureError(0, "truncated", f"the file ends inside {what} (capture cut short?)")
    return data


def _pcap_header(stream: IO[bytes], magic: bytes) -> tuple[str, int, int]:
    """Byte order, nanoseconds per time unit, and link type, from a pcap file header."""
    order = "<" if struct.unpack("<I", magic)[0] in (PCAP_MAGIC_US, PCAP_MAGIC_NS) else ">"
    (magic_value,) = struct.unpack(order + "I", magic)
    scale = 1 if magic_value == PCAP_MAGIC_NS else 1000
    rest = _read_exact(stream, 20, "the pcap header")
    linktype = struct.unpack(order + "I", rest[16:20])[0] & 0x0FFFFFFF  # upper bits: FCS info
    return order, scale, linktype


def _pcap_frames(stream: IO[bytes], order: str, scale: int, linktype: int) -> Iterator[Frame]:
    record = struct.Struct(order + "IIII")
    while True:
        head = stream.read(16)
        if not head:
            return
        if len(head) < 16:
            raise CaptureError(0, "truncated", "the file ends inside a packet header")
        seconds, fraction, captured, _ = record.unpack(head)
        if captured > _MAX_BLOCK:
            raise CaptureError(0, "damaged", f"a packet claims {captured} bytes (damaged file?)")
        yield (
            seconds * 1_000_000_000 + fraction * scale,
            linktype,
            _read_exact(stream, captured, "a packet"),
        )


@dataclass
class _Interface:
    linktype: int
    units_per_second: int = 1_000_000
    offset_seconds: int = 0


def _pcapng_frames(stream: IO[bytes]) -> Iterator[Frame]:
    order = "<"
    interfaces: list[_Interface] = []
    block_type = PCAPNG_SHB
    while True:
        if block_type == PCAPNG_SHB:
            # A section header: its byte-order magic decides how the rest of the section reads.
            length_bytes = _read_exact(stream, 8, "a section header")
            bom = length_bytes[4:8]
            if struct.unpack("<I", bom)[0] == _BYTE_ORDER_MAGIC:
                order = "<"
            elif struct.unpack(">I", bom)[0] == _BYTE_ORDER_MAGIC:
                order = ">"
            else:
                raise CaptureError(0, "damaged", "pcapng section header has no byte-order magic")
            (length,) = struct.unpack(order + "I", length_bytes[:4])
            _check_block_length(length, 28)
            _read_exact(stream, length - 12, "a section header")
            interfaces = []
        else:
            length_bytes = _read_exact(stream, 4, "a block header")
            (length,) = struct.unpack(order + "I", length_bytes)
            _check_block_length(length, 12)
            body = _read_exact(stream, length - 12, "a block")[: length - 12]
            _read_exact(stream, 4, "a block trailer")
            if block_type == 1:  # interface description
                interfaces.append(_interface(order, body))
            elif block_type in (6, 2):  # enhanced packet, obsolete packet
                yield _packet_block(order, block_type, body, interfaces)
            elif block_type == 3:  # simple packet: no interface number, no time
                if not interfaces or len(body) < 4:
                    raise CaptureError(0, "damaged", "a simple packet block without its interface")
                (captured,) = struct.unpack(order + "I", body[:4])
                yield None, interfaces[0].linktype, body[4 : 4 + captured]
            # other blocks (name resolution, statistics, custom) carry no packets
        head = stream.read(4)
        if not head:
            return
        if len(head) < 4:
            raise CaptureError(0, "truncated", "the file ends inside a block header")
        (block_type,) = struct.unpack(order + "I", head)


def _check_block_length(length: int, minimum: int) -> None:
    if length < minimum or length % 4 or length > _MAX_BLOCK:
        raise CaptureError(0, "damaged", f"a pcapng block claims {length} bytes (damaged file?)")


def _interface(order: str, body: bytes) -> _Interface:
    if len(body) < 8:
        raise CaptureError(0, "damaged", "interface description block too short")
    (linktype,) = struct.unpack(order + "H", body[:2])
    interface = _Interface(linktype)
    pos = 8
    while pos + 4 <= len(body):
        code, size = struct.unpack(order + "HH", body[pos : pos + 4])
        value = body[pos + 4 : pos + 4 + size]
        if code == 0:
            break
        if code == 9 and size >= 1:  # if_tsresol: 10^-n, or 2^-n when the top bit is set
            n = value[0]
            interface.units_per_second = 2 ** (n & 0x7F) if n & 0x80 else 10**n
        elif code == 14 and size >= 8:  # if_tsoffset: seconds to add to every time
            (interface.offset_seconds,) = struct.unpack(order + "q", value[:8])
        pos += 4 + ((size + 3) & ~3)
    return interface


def _packet_block(order: str, block_type: int, body: bytes, interfaces: list[_Interface]) -> Frame:
    if block_type == 6:
        if len(body) < 20:
            raise CaptureError(0, "damaged", "enhanced packet block too short")
        index, high, low, captured = struct.unpack(order + "IIII", body[:16])
        data_start = 20
    else:
        if len(body) < 20:
            raise CaptureError(0, "damaged", "packet block too short")
        index, _, high, low, captured = struct.unpack(order + "HHIII", body[:16])
        data_start = 20
    if index >= len(interfaces):
        raise CaptureError(0, "damaged", f"a packet names interface {index}, which is not declared")
    interface = interfaces[index]
    if captured > len(body) - data_start:
        raise CaptureError(0, "damaged", "a packet is longer than its block")
    units = (high << 32) | low
    ns = units * 1_000_000_000 // interface.units_per_second
    ns += interface.offset_seconds * 1_000_000_000
    return ns, interface.linktype, body[data_start : data_start + captured]


# -- layers -----------------------------------------------------------------------------------


class _Skip(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _udp_of_frame(linktype: int, frame: bytes) -> tuple[bytes, str, str]:
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            raise _Skip("truncated")
        pos, ethertype = 14, int.from_bytes(frame[12:14], "big")
        while ethertype in _ETHERTYPE_VLAN and len(frame) >= pos + 4:
            ethertype = int.from_bytes(frame[pos + 2 : pos + 4], "big")
            pos += 4
        return _udp_of_ip(ethertype, frame[pos:])
    if linktype == LINKTYPE_LINUX_SLL:
        if len(frame) < 16:
            raise _Skip("truncated")
        return _udp_of_ip(int.from_bytes(frame[14:16], "big"), frame[16:])
    if linktype == LINKTYPE_LINUX_SLL2:
        if len(frame) < 20:
            raise _Skip("truncated")
        return _udp_of_ip(int.from_bytes(frame[0:2], "big"), frame[20:])
    if linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
        if len(frame) < 4:
            raise _Skip("truncated")
        # NULL: the capturing host's byte order (unknown here: try both); LOOP: network order.
        families = {int.from_bytes(frame[:4], "big")}
        if linktype == LINKTYPE_NULL:
            families.add(int.from_bytes(frame[:4], "little"))
        if 2 in families:
            return _udp_of_ip(_ETHERTYPE_IPV4, frame[4:])
        if families.intersection(_AF_IPV6_VALUES):
            return _udp_of_ip(_ETHERTYPE_IPV6, frame[4:])
        raise _Skip("not-ip")
    if linktype in _RAW_IP_TYPES:
        version = frame[0] >> 4 if frame else 0
        if version == 4:
            return _udp_of_ip(_ETHERTYPE_IPV4, frame)
        if version == 6:
            return _udp_of_ip(_ETHERTYPE_IPV6, frame)
        raise _Skip("not-ip")
    raise _Skip(f"link-type-{linktype}")


def _udp_of_ip(ethertype: int, packet: bytes) -> tuple[bytes, str, str]:
    if ethertype == _ETHERTYPE_IPV4:
        if len(packet) < 20 or packet[0] >> 4 != 4:
            raise _Skip("truncated" if len(packet) < 20 else "not-ip")
        header = (packet[0] & 0x0F) * 4
        flags_fragment = int.from_bytes(packet[6:8], "big")
        if flags_fragment & 0x3FFF:  # more-fragments flag or a fragment offset
            raise _Skip("ip-fragment")
        if packet[9] != _UDP:
            raise _Skip("not-udp")
        total = int.from_bytes(packet[2:4], "big")
        src = socket.inet_ntop(socket.AF_INET, packet[12:16])
        dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
        return _udp(packet[header : max(total, header)], src, dst)
    if ethertype == _ETHERTYPE_IPV6:
        if len(packet) < 40:
            raise _Skip("truncated")
        next_header, pos = packet[6], 40
        while next_header in _IPV6_EXTENSIONS and len(packet) >= pos + 8:
            next_header, pos = packet[pos], pos + (packet[pos + 1] + 1) * 8
        if next_header == _IPV6_FRAGMENT:
            raise _Skip("ip-fragment")
        if next_header != _UDP:
            raise _Skip("not-udp")
        src = socket.inet_ntop(socket.AF_INET6, packet[8:24])
        dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
        return _udp(packet[pos:], f"[{src}]", f"[{dst}]")
    raise _Skip("not-ip")


def _udp(segment: bytes, src: str, dst: str) -> tuple[bytes, str, str]:
    if len(segment) < 8:
        raise _Skip("truncated")
    sport, dport, length = struct.unpack(">HHH", segment[:6])
    if length < 8:
        raise _Skip("damaged")
    if length > len(segment):
        raise _Skip("truncated")  # the snap length cut the datagram: not the bytes that were sent
    return segment[8:length], f"{src}:{sport}", f"{dst}:{dport}"


# -- writing ----------------------------------------------------------------------------------


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


MAX_UDP_PAYLOAD = 65_507
"""The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers)."""
MAX_UDP6_PAYLOAD = 65_527
"""The largest UDP payload over IPv6 (65,535 minus the UDP header: the IPv6 payload length
does not count the IP header)."""


def max_udp_payload(source: str) -> int:
    """The largest payload :func:`ip_udp_packet` can write from ``source`` (``HOST:PORT``),
    whose family is the packet's."""
    host, _ = _split_host_port(source)
    return (
        MAX_UDP_PAYLOAD
        if ipaddress.ip_address(host.split("%")[0]).version == 4
        else MAX_UDP6_PAYLOAD
    )


def ip_udp_packet(payload: bytes, source: str, destination: str) -> bytes:
    """An IPv4 or IPv6 packet carrying ``payload`` in UDP, from and to ``HOST:PORT`` strings."""
    src_host, src_port = _split_host_port(source)
    dst_host, dst_port = _split_host_port(destination)
    src = ipaddress.ip_address(src_host.split("%")[0])
    dst = ipaddress.ip_address(dst_host.split("%")[0])
    if src.version != dst.version:
        # A dual-stack listener (::) sees IPv4 senders as ::ffff:a.b.c.d: write the pair in the
        # sender's family.
        dst = ipaddress.ip_address("0.0.0.0" if src.version == 4 else "::")
    length = 8 + len(payload)
    if src.version == 4:
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, _UDP, length)
    else:
        pseudo = src.packed + dst.packed + struct.pack("!IxxxB", length, _UDP)
    udp = struct.pack("!HHHH", src_port, dst_port, length, 0) + payload
    checksum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + struct.pack("!H", checksum) + udp[8:]
    if src.version == 4:
        header = struct.pack("!BBHHHBBH", 0x45, 0, 20 + length, 0, 0x4000, 64, _UDP, 0)
        header += src.packed + dst.packed
        header = header[:10] + struct.pack("!H", _checksum(header)) + header[12:]
        return header + udp
    return struct.pack("!IHBB", 0x60000000, length, _UDP, 64) + src.packed + dst.packed + udp


class PcapWriter:
    """Writes a nanosecond, raw-IP pcap: :meth:`add` one datagram at a time.

    The caller flushes ``out`` and then calls :meth:`flushed`; after a write that failed,
    :meth:`cut` truncates the file at its last whole packet (see
    :class:`~oscsync.outfile.WholeRecords`) and says how many packets are not in it."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.records = WholeRecords()
        header = struct.pack("<IHHiIII", PCAP_MAGIC_NS, 2, 4, 0, 0, 262144, LINKTYPE_RAW)
        out.write(header)
        self.records.added(len(header))

    def add(self, wall_ns: int, payload: bytes, source: str, destination: str) -> bool:
        """Write one datagram; False (nothing written) for a payload larger than a UDP datagram
        can carry in the source's family (:func:`max_udp_payload`: a TCP packet), whose length
        fields would not fit."""
        if len(payload) > max_udp_payload(source):
            return False
        packet = ip_udp_packet(payload, source, destination)
        seconds, ns = divmod(wall_ns, 1_000_000_000)
        record = struct.pack("<IIII", seconds, ns, len(packet), len(packet)) + packet
        self.out.write(record)
        self.records.added(len(record), len(payload))
        return True

    def flush(self) -> None:
        self.out.flush()
        self.records.flushed()

    def cut(self) -> tuple[int, int]:
        """After a failed write: (packets, payload bytes) handed over but not in the file."""
        return self.records.cut(self.out)
