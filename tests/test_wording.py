"""Counts in words (issue #13: ``1 messages``, ``sent 1 ticks``, ``(1 bundles)``)."""

from __future__ import annotations

from oscsync.apps import demo
from oscsync.apps.demo import PhaseSummary
from oscsync.apps.dump import summary
from oscsync.apps.scoring import Score
from oscsync.apps.sequence import SequenceSender
from oscsync.cli.sequence import _sent_summary
from oscsync.clock import FakeClock
from oscsync.files.pattern import parse
from oscsync.net.core import TransportStats
from oscsync.scheduler import Scheduler
from oscsync.terminal.wording import drop_warning, fit, milliseconds, plural


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


def test_milliseconds_to_the_microsecond_without_trailing_zeros() -> None:
    """Issue 30 item 10: `--offset auto` printed "timetagged 52.8859 ms ahead"."""
    assert [milliseconds(s) for s in (0.1, 0.0528859, 0.25, 0.005, 1e-7)] == [
        "100 ms", "52.886 ms", "250 ms", "5 ms", "0 ms",
    ]  # fmt: skip


def test_sequence_summary_says_one_pattern_change() -> None:
    """Issue 30 item 10: "1 pattern changes"."""
    clock = FakeClock()
    sender = SequenceSender(lambda data: 1, Scheduler(clock), parse("kick: x"))
    sender.reloads = 1
    assert _sent_summary(sender, None) == "sequence: sent 0 steps, 1 pattern change"
    assert _sent_summary(sender, 128) == "sequence: sent 0 of 128 steps, 1 pattern change"


def test_fit_wraps_notices_at_word_boundaries_for_a_narrow_terminal() -> None:
    """Issue 30 item 10: at 60 columns the audio notice broke mid-word."""
    notice = (
        "audio: playsound starts a new player for every tick: expect tens of milliseconds of "
        "latency that varies from tick to tick (use --audio sounddevice for sample-accurate "
        "onsets)"
    )
    lines = fit(notice, 60).split("\n")
    assert all(len(line) <= 60 for line in lines)
    assert [line.startswith("  ") for line in lines] == [False] + [True] * (len(lines) - 1)
    assert " ".join(line.strip() for line in lines) == notice  # no word was cut
    assert fit(notice, None) == notice  # not a terminal: as it was
    assert fit("short", 60) == "short"


def _phase(title: str, jitter: float, timed: bool) -> PhaseSummary:
    scores = [
        Score(20, 20, jitter, jitter, 0, 0, timed),
        Score(20, 20, jitter * 1.5, jitter, 0, 0, timed),
    ]
    return PhaseSummary(title, title, scores, [0.00823, 0.0283])


def test_demo_table_fits_a_60_column_terminal() -> None:
    summaries = [_phase("plain ticks", 0.00993, False), _phase("forward sync 50 ms", 2e-5, True)]
    names = ["A", "B (+150 ms, synced)"]
    wide = demo.table(summaries, names)
    assert max(len(line) for line in wide.splitlines()) > 60  # what a piped demo prints
    assert demo.table(summaries, names, 120) == wide
    narrow = demo.table(summaries, names, 60)
    assert max(len(line) for line in narrow.splitlines()) <= 60
    assert narrow.splitlines() == [
        "plain ticks",
        "  A                    jitter 9.93 ms  lost 0",
        "  B (+150 ms, synced)  jitter 14.9 ms  lost 0",
        "  A↔B spread p50 / p99 / max 18.3 ms / 28.3 ms / 28.3 ms",
        "forward sync 50 ms",
        "  A                    jitter 0.020 ms  lost 0",
        "    arrived late 0/20  played late 0/20",
        "  B (+150 ms, synced)  jitter 0.030 ms  lost 0",
        "    arrived late 0/20  played late 0/20",
        "  A↔B spread p50 / p99 / max 18.3 ms / 28.3 ms / 28.3 ms",
    ]
