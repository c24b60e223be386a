"""The ``oscsync clock`` command: its options and output (the work: :mod:`oscsync.apps.clock`)."""

from __future__ import annotations

import signal

import click

from oscsync.apps.clock import DEFAULT_DURATION, DEFAULT_INTERVAL, PeerClockReport, peer_clock
from oscsync.cli.params import DURATION, PEER, allow_option
from oscsync.cli.peers import following, resolve_peer
from oscsync.cli.runtime import AppContext, Stop, pass_app, running
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort
from oscsync.terminal.wording import plural


@click.command(
    epilog="""\b
Examples:
  oscsync clock --peer 127.0.0.1:9001              # any oscsync listener answers (30 s)
  oscsync clock --peer 127.0.0.1:9001 --count 50   # quicker: offset only
  oscsync clock --peer 192.168.1.21:9001 --watch   # a live line until Ctrl-C
  oscsync --clock-skew 0.15 dump -l 9001 &          # a listener 150 ms ahead ...
  oscsync clock --peer 127.0.0.1:9001 --count 32   # ... measured: offset +150 ms

\b
Exit status:
  0    measured, and nothing implausible about the peer's clock
  1    no usable answer (nothing listening, or every answer refused), or an error
  2    a bad option
  3    measured, but the peer's clock is suspect: an absurd offset (an hour or more), a step
       or a jump of it, frozen stamps, or a rate 1 % or more off (each said on a suspect:
       line, and in --json's "problems")
  130  interrupted (Ctrl-C; 143 for SIGTERM), except with --watch
"""
)
@click.option(
    "--peer", "-p", type=PEER, required=True, metavar="HOST:PORT|@NAME", help="Who to ask."
)
@click.option(
    "--duration",
    "-d",
    type=DURATION,
    help=f"Seconds to measure [default: {DEFAULT_DURATION:g}, or until Ctrl-C with --watch].",
)
@click.option("--count", "-c", type=click.IntRange(1, 1_000_000), help="Send this many pings.")
@click.option(
    "--interval",
    type=DURATION,
    default=DEFAULT_INTERVAL,
    show_default=True,
    help="Seconds between pings.",
)
@click.option(
    "--timeout",
    type=DURATION,
    default=1.0,
    show_default=True,
    help="How long to wait for the last answers.",
)
@click.option("--watch", is_flag=True, help="Keep a live line (offset, bound, ppm, rtt, state).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object at the end instead of text.")
@click.option(
    "--jsonl",
    is_flag=True,
    help="One JSON object per line: a report every quarter second, the final one last.",
)
@allow_option(" Matters for a multicast --peer: a unicast one's socket hears that peer only.")
@pass_app
def clock(
    app: AppContext,
    peer: HostPort,
    duration: float | None,
    count: int | None,
    interval: float,
    timeout: float,
    watch: bool,
    as_json: bool,
    jsonl: bool,
    allow: tuple[Network, ...],
) -> None:
    """Measure how far a peer's clock is from this one (and the round trip to it).

    It also finds how fast the two drift apart: it pings an oscsync listener
    (/oscsync/clock/ping) every INTERVAL and fits the peer's offset and frequency on the fastest
    one-way trips each way (the same estimator as metronome listen --sync). ± covers the true
    offset 95 % of the time if the path's minimum delay is the same both ways (no two-way method
    can see a fixed asymmetry). Positive: the peer's clock is ahead. The frequency (ppm, with its
    own 95 % ±) needs 2 s or more; through a jittery link, 30 s for a few ppm.
    """
    if count is not None and duration is not None:
        raise click.UsageError("use --count or --duration, not both")
    if as_json and jsonl:
        raise click.UsageError("use --json (one object at the end) or --jsonl (a stream), not both")
    if count is None and duration is None and not watch:
        duration = DEFAULT_DURATION
    as_json = as_json or jsonl  # the final report as JSON either way
    live = watch and not as_json
    # The shared live line: fits the terminal, warnings go above it (issue #13).
    line = app.live_line() if live else None

    def show(report: PeerClockReport) -> None:
        if jsonl:
            click.echo(report.json())
        elif line is not None:  # -q hides the live line, not the data lines (issue #12 item 6)
            if line.enabled:
                line.show(_live(report))
            else:
                click.echo(_live(report))

    given, peer = peer, resolve_peer(peer)
    stopped_by: signal.Signals | None = None
    app.keep_time()
    with (
        running(),
        peer_clock(peer, clock=app.clock, allow=allow, warn=app.warn, auth=app.auth) as probe,
        # @NAME re-registered elsewhere: measure the new address, from scratch (issue 17).
        following(
            app,
            (given,),
            (peer,),
            probe.move_to,
            say=lambda text: app.note(f"{text}; the measurement starts over"),
        ),
    ):
        try:
            report = probe.run(
                count=count,
                duration=duration,
                interval=interval,
                timeout=timeout,
                on_update=show if watch or jsonl else None,
            )
        except (KeyboardInterrupt, Stop) as stop:  # report what we have (issue #13)
            report = probe.report()
            stopped_by = signal.Signals.__members__.get(str(stop), signal.SIGINT)
        if line is not None:
            line.end()
            app.live = None
        if as_json:
            click.echo(report.json({"realtime": app.realtime_json()}))
        else:
            click.echo(report.text())
            app.note(app.realtime_text())
        if stopped_by is not None and not watch:
            # A measurement with a defined end, cut short: 130 after Ctrl-C (issue #13);
            # --watch runs until stopped, so Ctrl-C is how it ends (exit 0).
            app.note(f"clock: interrupted after {plural(report.sent, 'ping')}")
            raise click.exceptions.Exit(128 + int(stopped_by))
        if report.estimate is None:
            raise click.ClickException(_unusable(report))
        if report.suspect:
            raise click.exceptions.Exit(EXIT_SUSPECT)


EXIT_SUSPECT = 3
"""Measured, but the peer's clock is not to be trusted (see the epilog)."""

_WHY_REFUSED = {
    "unauthenticated-pong": "they are not signed with this key: does the peer have the same "
    "--key-file?",
    "pong-before-ping": "this machine's own stamps contradict each other (its clock moved)",
    "slow-pong": "they came back more than 10 s after their pings",
    "offset-jump": "each implied a jump of the peer's clock",
}


def _unusable(report: PeerClockReport) -> str:
    """Why there is no estimate: nothing came back, or what came back and why it was refused
    (issue #27 item 16: every pong arrived, and the user was asked whether anything listens)."""
    if not report.ignored:
        return f"no answer from {report.peer} (is an oscsync listener running there?)"
    reasons = dict(report.ignored_reasons)
    listed = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items()))
    main = max(reasons, key=lambda reason: reasons[reason])
    why = _WHY_REFUSED.get(main)
    text = (
        f"{plural(report.ignored, 'answer')} from {report.peer} arrived but none could be used "
        f"({listed})"
    )
    return f"{text}: {why}" if why else text


def _live(report: PeerClockReport) -> str:
    estimate = report.estimate
    state = "SUSPECT: " + ", ".join(p.code for p in report.problems) if report.suspect else ""
    state = state or report.state
    if estimate is None:
        return f"{state}  {report.answered}/{report.sent} answered"
    ppm = "- ppm"
    if estimate.span >= 2.0:
        ppm = f"{estimate.ppm:+.1f} ± {estimate.ppm_bound:.1f} ppm"
    rtt = "-" if report.min_rtt is None else f"{report.min_rtt * 1e3:.2f}"
    return (
        f"offset {estimate.offset * 1e3:+.3f} ± {estimate.bound * 1e3:.3f} ms  {ppm}  "
        f"rtt {rtt} ms  {state}  {report.answered}/{report.sent}"
    )
