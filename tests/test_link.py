"""Link's logic on a FakeClock (issue 32): the clock map, the beat grid, tempo changes, senders.

The real Link session, with another peer in another process, is tests/test_link_session.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fakelink import FakeLink
from oscsync.apps.link import LinkGrid
from oscsync.apps.metronome import TickSender
from oscsync.apps.sequence import SequenceSender
from oscsync.clock import FakeClock
from oscsync.files.pattern import parse
from oscsync.osc import codec
from oscsync.osc import timetag as tt
from oscsync.scheduler import Scheduler
from oscsync.sync import link as synclink
from oscsync.sync.link import LinkClockMap, LinkSession, LinkTimeline

START = 1_700_000_000.0


def session_on(link: FakeLink, *, quantum: float = 4, start_stop: bool = False) -> LinkSession:
    return LinkSession(link.clock, bpm=120, quantum=quantum, start_stop=start_stop, backend=link)


def unix_of_beat(link: FakeLink, session: LinkSession, beat: float) -> float:
    """Where the fake Link says ``beat`` is, on the fake clock's wall time (the ground truth)."""
    micros = link.micros_at_beat(beat)
    seconds = micros / 1e6 / (1 + link.ppm * 1e-6) - link.offset / 1e6
    return link.clock.monotonic_to_wall(seconds)


# -- the clock map ----------------------------------------------------------------------------


def test_the_clock_map_finds_the_offset_and_then_the_rate_of_links_clock() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, offset=-123_456_789.0, ppm=60.0)  # NTP slewing CLOCK_MONOTONIC
    clock_map = LinkClockMap(clock, link.micros)
    assert clock_map.rate == 1.0  # one bracket: no rate yet
    # Offset right at the bracket: within Link's 1 µs resolution.
    now = clock.monotonic()
    assert clock_map.to_monotonic(link.micros()) == pytest.approx(now, abs=1e-6)
    # Without the rate, a time 10 s ahead is off by 60 ppm of it (600 µs)...
    ahead = link.micros() + 10e6
    truth = (ahead / (1 + 60e-6) - link.offset) / 1e6
    assert abs(clock_map.to_monotonic(ahead) - truth) == pytest.approx(600e-6, rel=0.01)
    for _ in range(12):  # ...calibrated every 0.25 s for 3 s, the rate is measured
        clock.advance(synclink.CALIBRATE_EVERY)
        clock_map.fresh()
    assert clock_map.rate == pytest.approx(1 + 60e-6, abs=1e-6)
    ahead = link.micros() + 10e6
    truth = (ahead / (1 + 60e-6) - link.offset) / 1e6
    assert clock_map.to_monotonic(ahead) == pytest.approx(truth, abs=5e-6)
    assert clock_map.to_micros(truth) == pytest.approx(ahead, abs=5)


def test_a_rate_beyond_1000_ppm_is_not_believed() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock)
    clock_map = LinkClockMap(clock, link.micros)
    clock.advance(3.0)
    link.offset += 50_000  # Link's clock jumped 50 ms (a suspended machine): 16,000 ppm
    clock_map.calibrate()
    assert clock_map.rate == 1.0
    assert clock_map.to_monotonic(link.micros()) == pytest.approx(clock.monotonic(), abs=1e-6)


def test_a_timetag_after_the_2036_rollover_is_read_in_the_era_of_now() -> None:
    """NTP seconds wrap on 7 Feb 2036: a timetag then is small, and read in era 0 (1900) it
    named a Link time 136 years before the session."""
    clock = FakeClock(start=2_100_000_000.0)  # 2036-07
    session = session_on(FakeLink(clock))
    stamp = session.timetag_at_beat(8.0)
    assert tt.split(stamp)[0] < 365 * 86400  # wrapped: months into era 1
    assert session.beat_at_timetag(stamp) == pytest.approx(8.0, abs=1e-6)


def test_the_timeline_phase_is_in_the_bar_for_negative_beats_too() -> None:
    line = LinkTimeline(0, -1.25, 500_000.0, 120.0, 4, 0, False, 0)
    assert line.phase_at(0) == 2.75  # as Link's phaseAtTime, not fmod's -1.25
    assert line.beat_at(500_000) == -0.25
    assert line.micros_at(0.75) == 1_000_000


# -- the grid ---------------------------------------------------------------------------------


def test_the_grid_starts_at_the_next_beat_with_its_place_in_the_bar() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=97, beat=5.3)  # joined mid-bar: the session is at beat 5.3
    session = session_on(link)
    grid = LinkGrid(97, beats_per_bar=4, session=session)
    ticks = list(grid.ticks(count=6))
    # Beat 6 first: bar 1 (beats 4-7), beat 2 of it; then 7, then 8 = the next bar's accent.
    assert [(t.bar, t.beat, t.accent) for t in ticks[:3]] == [
        (1, 2, False),
        (1, 3, False),
        (2, 0, True),
    ]
    for k, tick in enumerate(ticks):
        assert tt.to_unix(tick.timetag) == pytest.approx(
            unix_of_beat(link, session, 6 + k), abs=1e-6
        )
        assert tick.index == k
    assert grid.period == pytest.approx(60 / 97)


def test_steps_and_swing_subdivide_the_sessions_beats() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120, beat=3.9)
    session = session_on(link)
    grid = LinkGrid(120, beats_per_bar=4, steps_per_beat=4, swing=50, session=session)
    ticks = list(grid.ticks(count=5))
    # Step 16 (beat 4.0, the bar line) is first; odd steps are half a step late.
    assert [(t.bar, t.step) for t in ticks] == [(1, 0), (1, 1), (1, 2), (1, 3), (1, 4)]
    beats = [4.0, 4.25 + 0.125, 4.5, 4.75 + 0.125, 5.0]
    for tick, beat in zip(ticks, beats):
        assert tt.to_unix(tick.timetag) == pytest.approx(
            unix_of_beat(link, session, beat), abs=1e-6
        )


def test_a_tempo_set_by_another_peer_is_followed_from_the_next_beat() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120)
    session = session_on(link)
    ticks = LinkGrid(120, session=session).ticks()
    first = next(ticks)
    assert tt.to_unix(first.timetag) == pytest.approx(unix_of_beat(link, session, 0), abs=1e-6)
    clock.advance(0.2)  # between beats 0 and 1, the other musician sets 97 bpm
    link.peer_sets_tempo(97)
    second = next(ticks)
    # Beat 0.4 at the change, so beat 1 is 0.6 beats of 97 bpm later.
    expected = START + 0.2 + 0.6 * 60 / 97
    assert tt.to_unix(second.timetag) == pytest.approx(expected, abs=1e-6)
    assert tt.to_unix(next(ticks).timetag) == pytest.approx(expected + 60 / 97, abs=1e-6)


def test_beats_that_jump_back_do_not_repeat_a_tick() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120)
    session = session_on(link)
    ticks = LinkGrid(120, session=session).ticks()
    times = [tt.to_unix(next(ticks).timetag)]
    clock.advance(0.1)
    link.segments.append(type(link.segments[0])(link.micros(), -3.8, 120.0))  # forced re-map
    times.append(tt.to_unix(next(ticks).timetag))
    assert times[1] > times[0]
    assert times[1] == pytest.approx(START + 0.1 + 0.8 * 0.5, abs=1e-6)  # beat -3.0


def test_leading_proposes_the_tempo_and_starts_the_transport() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=97)
    session = session_on(link, start_stop=True)
    grid = LinkGrid(133, session=session, lead=True)
    assert link.segments[-1].bpm == 133
    assert link.playing
    assert link.start_stop
    assert grid.status().tempo == 133


def test_steps_are_silent_while_the_session_is_stopped() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120)
    session = session_on(link, start_stop=True)
    link.set_playing(True, link.micros() + 1_250_000, 4)  # starts 1.25 s from now
    grid = LinkGrid(120, session=session)
    sounding = [grid.sounds(tick) for tick in grid.ticks(count=5)]
    assert sounding == [False, False, False, True, True]  # beats 0, 1, 2 before the start


def test_a_grid_with_a_session_of_another_quantum_is_refused() -> None:
    link = FakeLink(FakeClock(start=START))
    with pytest.raises(ValueError, match="quantum is 4"):
        LinkGrid(session=session_on(link), beats_per_bar=3)


def test_without_the_extra_the_error_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_link(name: str, *args: object, **kwargs: object) -> object:
        if name == "link":
            raise ImportError("No module named 'link'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_link)
    with pytest.raises(synclink.LinkUnavailable, match=r"pip install 'oscsync\[link\]'"):
        synclink.open_link(120)


# -- the senders on a Link grid -----------------------------------------------------------------


class Wire:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, codec.Message]] = []

    def __call__(self, data: bytes) -> int:
        (message,) = codec.decode(data)  # one message per step here
        self.sent.append((self.clock.now(), message))
        return 1


def run(sender: TickSender, count: int, until: float | None = None) -> None:
    sender.start(count)
    run_on(sender, until)


def run_on(sender: TickSender, until: float | None = None) -> None:
    """Run the sender's scheduler on its fake clock until it is done (or until ``until``)."""
    clock = sender.clock
    assert isinstance(clock, FakeClock)
    while True:
        wait = sender.scheduler.run_due()
        if sender.done.is_set():
            return
        assert wait is not None
        if until is not None and clock.now() + wait > until:
            clock.advance(until - clock.now())
            return
        clock.advance(wait)


def test_metronome_ticks_are_sent_on_the_sessions_beats_and_follow_a_tempo_change() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120, beat=1.5)
    session = session_on(link)
    wire = Wire(clock)
    sender = TickSender(wire, Scheduler(clock), offset=0.1, grid=LinkGrid(session=session))
    run(sender, 8, until=START + 1.9)  # beats 2, 3, 4, 5 sent (at +0.25, +0.75, +1.25, +1.75)
    link.peer_sets_tempo(60)  # at beat 5.3: beat 6 is 0.7 s later, not 0.35
    run_on(sender)
    sent_at = [when - START for when, _ in wire.sent]
    assert sent_at[:4] == pytest.approx([0.25, 0.75, 1.25, 1.75], abs=1e-6)
    # The tick already scheduled for beat 6 is sent at its old time, timetagged at its new one;
    # from beat 7 on the new tempo rules both.
    assert sent_at[4] == pytest.approx(2.25, abs=1e-6)
    assert sent_at[5:] == pytest.approx([2.6 + 1.0, 2.6 + 2.0, 2.6 + 3.0], abs=1e-6)
    stamps = [tt.to_unix(message.timetag) - START for _, message in wire.sent]
    assert stamps == pytest.approx([0.35, 0.85, 1.35, 1.85, 2.7, 3.7, 4.7, 5.7], abs=1e-6)
    beats = [message.args[0] for _, message in wire.sent]
    assert beats == [2, 3, 0, 1, 2, 3, 0, 1]  # the session's phase, quantum 4


def test_ticks_of_a_stopped_session_are_counted_silent_not_sent() -> None:
    """``metronome send --link --link-start-stop`` on a stopped session said "sent 3 ticks"."""
    from oscsync.cli.metronome import _sent_summary

    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120)
    session = session_on(link, start_stop=True)
    link.set_playing(True, link.micros() + 1_250_000, 4)  # beats 0, 1, 2 before the start
    wire = Wire(clock)
    sender = TickSender(wire, Scheduler(clock), grid=LinkGrid(session=session))
    run(sender, 5)
    assert (len(wire.sent), sender.sent, sender.silent) == (2, 2, 3)
    assert _sent_summary(sender, 5) == (
        "metronome: sent 2 ticks, silent 3 while the session was stopped; " + sender.lateness_text()
    )
    assert _sent_summary(sender, 8).startswith("metronome: sent 2 of 8 ticks, silent 3 ")


def test_a_pattern_starts_on_the_sessions_bar_line() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120, beat=2.0)  # half-way through a bar of 4
    session = session_on(link)
    pattern = parse("kick: x... x...\n")  # 8 steps: 2 beats of 4 steps
    wire = Wire(clock)
    sender = SequenceSender(
        wire,
        Scheduler(clock),
        pattern,
        steps_per_beat=4,
        offset=0.05,
        grid=LinkGrid(session=session, steps_per_beat=4),
    )
    run_on_count(sender, 16)
    steps = [message.args[1] for _, message in wire.sent]
    # Session step 8 (beat 2) is pattern step 0 (8 mod 8), not because it is the first sent.
    assert steps == [0, 4, 0, 4]
    stamps = [tt.to_unix(message.timetag) - START for _, message in wire.sent]
    assert stamps == pytest.approx([0.05, 0.55, 1.05, 1.55], abs=1e-6)


def run_on_count(sender: TickSender, count: int) -> None:
    sender.start(count)
    run_on(sender)


def test_a_leader_proposes_its_tempo_again_when_a_peer_joins() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120, peers=0)
    grid = LinkGrid(133, session=session_on(link), lead=True)
    assert link.segments[-1].bpm == 133
    link.peers = 1
    link.peer_sets_tempo(97)  # an older session met: its tempo came with it
    tick = grid.tick(0)
    assert link.segments[-1].bpm == 133
    assert grid.status().tempo == 133
    link.peer_sets_tempo(90)  # a musician changes it later: a leader does not fight that
    grid.tick(1)
    assert link.segments[-1].bpm == 90
    assert tick.index == 0


def test_a_leading_grid_started_by_a_sender_still_leads() -> None:
    # A sender starts its grid with starting_at (TickSender.start): the grid it then ticks on
    # must still propose the leader's tempo to a peer that joins.
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120, peers=0)
    grid = LinkGrid(133, session=session_on(link), lead=True)
    started = grid.starting_at(clock.now_timetag())
    link.peers = 1
    link.peer_sets_tempo(97)  # an older session met: its tempo came with it
    started.tick(0)
    assert link.segments[-1].bpm == 133


def test_waiting_for_peers_stops_when_one_is_found() -> None:
    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=120, peers=0)
    grid = LinkGrid(session=session_on(link), wait_for_peers=2.0)
    assert grid.peers_found is False
    assert clock.now() == pytest.approx(START + 2.0)
    assert "no peer yet" in grid.describe()


def test_link_options_without_the_extra_are_one_error_line(
    monkeypatch: pytest.MonkeyPatch, udp_port: int
) -> None:
    import sys

    from click.testing import CliRunner

    from oscsync.cli.main import cli

    monkeypatch.setitem(sys.modules, "link", None)  # import link: ImportError, as when absent
    args = ["metronome", "send", "--link", "--peer", f"127.0.0.1:{udp_port}", "--count", "1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: Ableton Link needs the link extra, which is not installed: "
        "pip install 'oscsync[link]'"
    )
    assert "Traceback" not in result.output


@pytest.mark.parametrize("quiet", [[], ["-q"]], ids=["piped", "quiet"])
def test_link_prints_one_line_per_look_when_there_is_no_live_line(
    monkeypatch: pytest.MonkeyPatch, quiet: list[str]
) -> None:
    """-q takes away the live line and the notices, not the data: `oscsync -q link` printed
    nothing at all, on a terminal or piped."""
    from click.testing import CliRunner

    from oscsync.cli import link as cli_link
    from oscsync.cli.main import cli
    from oscsync.cli.runtime import AppContext

    clock = FakeClock(start=START)
    link = FakeLink(clock, bpm=97)

    def on_the_fake(bpm: float, **options: object) -> LinkGrid:
        options.pop("clock", None)
        return LinkGrid(bpm, **options, clock=clock, backend=link)  # type: ignore[arg-type]

    monkeypatch.setattr(cli_link, "LinkGrid", on_the_fake)
    args = [*quiet, "link", "--duration", "0.35", "--interval", "0.1"]
    result = CliRunner().invoke(cli, args, obj=AppContext(clock=clock))
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "  beat " in line]
    assert len(lines) == 5  # at 0, 0.1, 0.2, 0.3 s and the end (0.35 s)
    assert all("97.00 bpm" in line for line in lines)


def test_a_session_the_grid_opened_is_left_when_waiting_for_peers_is_interrupted() -> None:
    # Ctrl-C during --link-wait: the session LinkGrid had joined itself stayed open.
    class Interrupted(FakeClock):
        def sleep(self, seconds: float) -> None:
            raise KeyboardInterrupt

    clock = Interrupted(start=START)
    link = FakeLink(clock, bpm=120, peers=0)
    with pytest.raises(KeyboardInterrupt):
        LinkGrid(clock=clock, backend=link, wait_for_peers=2.0)
    assert not link.enabled
    # A session given by the caller stays theirs to close.
    given = session_on(FakeLink(clock, bpm=120, peers=0))
    with pytest.raises(KeyboardInterrupt):
        LinkGrid(session=given, wait_for_peers=2.0)
    assert given.backend.enabled  # type: ignore[attr-defined]


def test_a_session_that_fails_to_start_leaves_the_link_it_opened_and_not_a_given_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock()
    opened = FakeLink(clock)
    opened.enabled = True  # as a Link that has started its threads

    def enable_fails(start_stop: bool) -> None:
        raise KeyboardInterrupt  # Ctrl-C while Link starts

    monkeypatch.setattr(opened, "enable", enable_fails)
    monkeypatch.setattr(synclink, "open_link", lambda bpm: opened)
    with pytest.raises(KeyboardInterrupt):
        LinkSession(clock, bpm=120, quantum=4)
    assert not opened.enabled  # closed: without the fix Link's threads kept running
    given = FakeLink(clock)
    given.enabled = True
    monkeypatch.setattr(given, "enable", enable_fails)
    with pytest.raises(KeyboardInterrupt):
        LinkSession(clock, bpm=120, quantum=4, backend=given)  # type: ignore[arg-type]
    assert given.enabled  # the caller's to close


@pytest.mark.parametrize(
    "extra",
    [["--link-lead"], ["--link-start-stop"], ["--link-wait", "0"], ["--link-wait", "2"]],
    ids=["lead", "start-stop", "wait", "wait-default"],
)
@pytest.mark.parametrize("command", ["metronome", "sequence"])
def test_a_link_option_without_link_is_a_usage_error(
    tmp_path: Path, command: str, extra: list[str]
) -> None:
    """``--link-wait`` alone was ignored, ``--link-lead``/``--link-start-stop`` alone turned
    Link on, while the help says "With --link:"; now each one names --link, exit 2."""
    from click.testing import CliRunner

    from oscsync.cli.main import cli

    pattern = tmp_path / "beat.txt"
    pattern.write_text("hat: x\n")
    what = [str(pattern)] if command == "sequence" else []
    args = [command, "send", *what, "--peer", "127.0.0.1:9", "--duration", "0.1", *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert result.output.splitlines()[-1] == f"Error: {extra[0]}: only with --link"


def test_the_session_is_left_even_when_stopping_its_transport_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``--link-lead --link-start-stop`` stops the transport at the end: when that raised, the
    grid was never closed (the Link session was not left)."""
    from oscsync.cli import link as cli_link
    from oscsync.cli.runtime import AppContext

    class StopFails(FakeLink):
        def set_playing(self, playing: bool, micros: int, quantum: float) -> None:
            if not playing:
                raise RuntimeError("the session went away")
            super().set_playing(playing, micros, quantum)

    clock = FakeClock(start=START)
    link = StopFails(clock, bpm=97)

    def on_the_fake(bpm: float, **options: object) -> LinkGrid:
        options.pop("clock", None)
        return LinkGrid(bpm, **options, clock=clock, backend=link)  # type: ignore[arg-type]

    monkeypatch.setattr(cli_link, "LinkGrid", on_the_fake)
    choice = cli_link.LinkOptions(link=True, link_lead=True, link_start_stop=True, link_wait=0)
    app = AppContext(clock=clock, quiet=True)
    with (
        pytest.raises(RuntimeError, match="went away"),
        cli_link.linked(app, choice, bpm=97, beats_per_bar=4) as grid,
    ):
        assert grid is not None and link.enabled and link.playing
    assert not link.enabled
