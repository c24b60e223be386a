"""What Pure Data's [packOSC] really sends (issue #13: docs/protocol.md said `,ss` and floats).

Captured from the workshop patches, headless, with a plain UDP socket on our side.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest

from conftest import REPO, free_udp_port
from oscsync.osc import codec
from pdharness import PdProcess

RunPd = Callable[..., PdProcess]


@pytest.fixture
def capture() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        yield sock


def _next_message(sock: socket.socket) -> codec.Message:
    (message,) = codec.decode(sock.recv(65535))
    return message


def test_packosc_sends_whole_numbers_as_int_and_words_as_strings(
    run_pd: RunPd, capture: socket.socket
) -> None:
    port = capture.getsockname()[1]
    run_pd(
        REPO / "pd" / "example1_client.pd",
        sends=[
            f"oscsync-listen {free_udp_port()}",
            f"oscsync-connect 127.0.0.1 {port}",
            "oscsync-chat hello 42 3.5 world",
        ],
    )
    message = _next_message(capture)
    assert (message.address, message.types, message.args) == (
        "/chat",
        "sifs",
        ("hello", 42, 3.5, "world"),
    )


def test_pd_metronome_sends_tick_as_int(run_pd: RunPd, capture: socket.socket) -> None:
    port = capture.getsockname()[1]
    run_pd(
        REPO / "pd" / "example2_client.pd",
        sends=[
            f"oscsync-listen {free_udp_port()}",
            f"oscsync-connect 127.0.0.1 {port}",
            "oscsync-bpm 600",
            "oscsync-metro 1",
        ],
    )
    first, second = _next_message(capture), _next_message(capture)
    assert (first.address, first.types, first.args) == ("/tick", "i", (0,))
    assert (second.types, second.args) == ("i", (1,))
