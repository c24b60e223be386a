"""Counts in words (issue #13: ``1 messages``, ``sent 1 ticks``, ``(1 bundles)``)."""

from __future__ import annotations

from oscsync.apps.dump import summary
from oscsync.net.core import TransportStats
from oscsync.terminal.wording import drop_warning, plural


def test_plural_says_one_tick_and_two_ticks() -> None:
    assert [plural(n, "tick") for n in (0, 1, 2)] == ["0 ticks", "1 tick", "2 ticks"]
    assert plural(1, "datagram") == "1 datagram"


def test_dump_summary_singular_and_plural() -> None:
    stats = TransportStats(datagrams=1, messages=1, bundles=1)
    assert summary(stats, 1) == (
        "dump: 1 message printed; received 1 message in 1 datagram (1 bundle); dropped 0"
    )


def test_drop_warning_shows_text_datagrams_escaped_and_cut() -> None:
    text = drop_warning("not-osc", ("127.0.0.1", 5), b"x" * 40 + b"\n", "not-osc: neither")
    assert 'it reads "' + "x" * 32 + '..."' in text
    binary = drop_warning("bad-size", ("127.0.0.1", 5), b"\x1b[2J\x00", "bad-size: got 5")
    assert "reads" not in binary and "\x1b" not in binary
