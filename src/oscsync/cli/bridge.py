"""``oscsync bridge``."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from oscsync.apps.bridge import (
    AT_TIMETAG,
    MODES,
    RETIMETAG,
    BridgeSession,
    Forwarded,
    record_json,
    record_line,
)
from oscsync.cli.hangup import hangup_stops
from oscsync.cli.params import (
    DURATION,
    PEER,
    DurationType,
    ParsedType,
    advertise_option,
    allow_option,
    collect,
    framing_option,
    iface_option,
    listen_option,
)
from oscsync.cli.peers import Advertising, following, resolve_peers
from oscsync.cli.runtime import AppContext, leave_without_stdout, pass_app, running
from oscsync.cli.scheduling import horizon_option, late_option
from oscsync.cli.syncing import Syncing, sync_options
from oscsync.net.core import Network
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort, is_own_address
from oscsync.osc.rewrite import Rewriter, Rule, RuleError, parse_rule
from oscsync.scheduler import DEFAULT_HORIZON, KEEP, LatePolicy

SHOW_EVERY = 0.1
"""Seconds between looks at the session's records (printed) and its live line (redrawn)."""


class RuleType(ParsedType):
    """A ``--map`` rule (:mod:`oscsync.osc.rewrite`)."""

    name = "rule"
    metavar = "PATTERN[=ADDRESS [ARG...]]"
    parsed = (Rule,)

    def parse(self, text: str) -> Any:
        return parse_rule(text)

    def errors(self) -> tuple[type[Exception], ...]:
        return (RuleError,)


@click.command(
    epilog="""\b
Examples:
  # scsynth schedules bundles itself: re-timetag the leader's ticks onto this clock
  oscsync bridge --listen 0.0.0.0:9001 --sync --to 127.0.0.1:57110 \\
      --map '/tick=/s_new s:tick i:-1 i:0 i:0'
  # Pure Data, Max, TouchOSC play on arrival: send each message at its timetag
  oscsync bridge --listen 0.0.0.0:9001 --sync --to 127.0.0.1:9000 --mode at-timetag
  # ... 10 ms early, to make up for the receiver's own output latency
  oscsync bridge --sync-peer @leader --to 127.0.0.1:9000 --mode at-timetag --latency=-10ms
  oscsync bridge --sync --to 192.168.1.30:8000 --mode at-timetag --map '/tick=/1/led1 f:1'
"""
)
@listen_option(help_extra=" The leader sends here.")
@click.option(
    "--to",
    "targets",
    type=PEER,
    multiple=True,
    required=True,
    metavar="HOST:PORT|@NAME",
    help="The application to forward to (repeatable: every one gets every message); "
    "tcp://HOST:PORT for TCP.",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    default=RETIMETAG,
    show_default=True,
    help=f"{RETIMETAG}: forward at once in a bundle timetagged on this machine's clock, for "
    f"receivers that schedule bundles themselves (scsynth, liblo). {AT_TIMETAG}: hold each "
    "message and send it plain at its timetag, for receivers that play what arrives at once "
    "(Pure Data, Max, TouchOSC, phone apps).",
)
@click.option(
    "--latency",
    type=DurationType(minimum=-1.0, maximum=10.0),
    default=0.0,
    show_default=True,
    help="Seconds added to every timetag on the way (e.g. 20ms for the receiver's headroom); "
    "negative sends that much earlier, to make up for the receiver's own output latency "
    "(write --latency=-10ms).",
)
@click.option(
    "--map",
    "rules",
    type=RuleType(),
    multiple=True,
    help="Rewrite what is forwarded (repeatable; the first rule that matches wins; with rules, "
    "what none matches is not forwarded). PATTERN passes it on; PATTERN=ADDRESS renames it; "
    "PATTERN=ADDRESS ARG... builds a new message, each ARG TYPE:VALUE (i h f d s), TYPE:$N "
    "(received argument N converted), $N, $* (all received), T, F or N. "
    "E.g. '/tick=/s_new s:tick i:-1 i:0 i:0 i:$1'.",
)
@late_option()
@horizon_option()
@sync_options("the leader", "a timetagged message")
@click.option(
    "--jsonl", is_flag=True, help="One JSON object per message handled, even on a terminal."
)
@click.option("--count", "-c", type=click.IntRange(min=1), help="Stop after forwarding this many.")
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@allow_option(" The leader must be allowed (its ticks and clock pongs).")
@iface_option()
@framing_option()
@advertise_option()
@pass_app
@collect("syncing", Syncing)
def bridge(
    app: AppContext,
    listen: HostPort,
    targets: tuple[Any, ...],
    mode: str,
    latency: float,
    rules: tuple[Rule, ...],
    late_policy: LatePolicy | None,
    horizon: float | None,
    syncing: Syncing,
    jsonl: bool,
    count: int | None,
    duration: float | None,
    allow: tuple[Network, ...],
    iface: str | None,
    framing: Framing,
    advertise: str | None,
    interface: str,
) -> None:
    """Follow a leader's clock and forward its OSC to an application that cannot.

    Listens for the leader's timetagged messages (metronome, sequence, your own), translates each
    timetag onto this machine's clock (--sync, as metronome listen does) and forwards the message
    to every --to: re-timetagged at once (--mode retimetag) or plain at its timetag (--mode
    at-timetag). Plain messages are forwarded at once. Before the clock is locked, timetagged
    messages are held and sent at lock; those already due then are dropped and counted.

    On a terminal a live line counts what was forwarded, late and dropped; piped (or --jsonl),
    one line per message. Ctrl-C stops and prints a summary.
    """
    if horizon is not None and mode != AT_TIMETAG:
        raise click.UsageError("--horizon applies to --mode at-timetag (held messages) only")
    try:
        rewriter = Rewriter(rules)
    except RuleError as exc:
        raise click.BadParameter(str(exc), param_hint="'--map'") from None
    syncing = syncing.checked()
    resolved = resolve_peers(targets)
    # Not only ==: --listen 0.0.0.0:9001 also receives what is sent to 127.0.0.1:9001, and
    # each forwarded message would come back to be forwarded again.
    for target in resolved:
        if target == listen or is_own_address(listen, target):
            raise click.BadParameter(
                f"{target} reaches the bridge's own --listen {listen}: forwarding there would loop",
                param_hint="'--to'",
            )
    live = app.live_line() if not jsonl else None
    lines = jsonl or live is None or not live.enabled
    show: Callable[[Forwarded], str] = record_json if jsonl else record_line
    app.keep_time()
    with (
        running(),
        hangup_stops(),
        Advertising(app, advertise, interface, role="bridge", allow=allow) as advertised,
    ):
        session = BridgeSession(
            listen,
            resolved,
            app.setup(allow, iface, framing),
            mode=mode,
            latency=latency,
            rewriter=rewriter,
            late_policy=late_policy or KEEP,
            horizon=DEFAULT_HORIZON if horizon is None else horizon,
            limit=count,
        )
        output_closed = False
        try:
            session.start(
                syncing.sync,
                syncing.sync_peer,
                sync_interval=syncing.sync_interval,
                sync_start_interval=syncing.sync_start_interval,
            )
            app.note(_describe(mode, resolved, latency, rules))
            with (
                following(app, targets, resolved, session.endpoint.set_peers),
                syncing.following(app, session.move_sync_peer),
            ):
                advertised.publish(session.endpoint.local_address, session.endpoint.registry)
                output_closed = _show_until_done(app, session, show if lines else None, duration)
        finally:
            session.close()
            if not output_closed:
                output_closed = _print(session, show if lines else None)
            if live is not None:
                live.end()
                app.live = None
            first, *rest = session.summary()
            app.note(f"{first}; {app.realtime_text()}")
            for line in rest:
                app.note(line)
            if output_closed:
                leave_without_stdout(stopped_cleanly=True)


def _describe(
    mode: str, targets: tuple[HostPort, ...], latency: float, rules: tuple[Rule, ...]
) -> str:
    where = ", ".join(str(target) for target in targets)
    how = "re-timetagged onto this clock" if mode == RETIMETAG else "plain, at their timetag"
    if latency:
        how += f", {latency * 1e3:+g} ms"
    mapped = (
        f"; {len(rules)} --map rules" if len(rules) > 1 else ("; 1 --map rule" if rules else "")
    )
    return f"forwarding to {where}, {how}{mapped}"


def _show_until_done(
    app: AppContext,
    session: BridgeSession,
    show: Callable[[Forwarded], str] | None,
    duration: float | None,
) -> bool:
    """Print records and redraw the live line until done, ``duration`` or a stop; True when
    stdout went away (``| head``)."""
    clock = app.clock
    deadline = None if duration is None else clock.monotonic() + duration
    while not session.done.is_set():
        remaining = (
            SHOW_EVERY if deadline is None else min(SHOW_EVERY, deadline - clock.monotonic())
        )
        if remaining <= 0:
            break
        clock.wait(session.done, remaining)
        if _print(session, show):
            return True
        if app.live is not None:
            app.live.show(session.status())
    return False


def _print(session: BridgeSession, show: Callable[[Forwarded], str] | None) -> bool:
    """Print the session's new records (or drop them without ``show``); True when stdout went
    away."""
    records = session.take_records()
    if show is None or not records:
        return False
    try:
        sys.stdout.write("".join(show(record) + "\n" for record in records))
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):  # ValueError: stdout already closed
        session.done.set()
        return True
    return False
