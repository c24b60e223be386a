"""``oscsync link``, and the ``--link`` options of ``metronome send`` and ``sequence send``."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from oscsync.apps.link import DEFAULT_BPM, DEFAULT_QUANTUM, LinkGrid
from oscsync.cli.params import DURATION, DurationType, beats_per_bar_option, bpm_option, options
from oscsync.cli.runtime import AppContext, Stop, leave_without_stdout, pass_app, running
from oscsync.sync.link import LinkUnavailable

F = TypeVar("F", bound=Callable[..., Any])

DISCOVERY = 2.0
"""Seconds ``--link`` waits for a peer before it starts (Link finds one in about 0.5 s)."""


@dataclass(frozen=True)
class LinkOptions:
    """``--link``, ``--link-lead``, ``--link-start-stop``, ``--link-wait`` as one value."""

    link: bool = False
    link_lead: bool = False
    link_start_stop: bool = False
    link_wait: float = DISCOVERY

    @classmethod
    def given(
        cls,
        link: bool = False,
        link_lead: bool = False,
        link_start_stop: bool = False,
        link_wait: float = DISCOVERY,
    ) -> LinkOptions:
        """The options of the command line: a ``--link-*`` option without ``--link`` is a
        usage error (exit 2), as ``--sync-interval`` without ``--sync`` is."""
        if not link:
            context = click.get_current_context()
            extras = ("link_lead", "link_start_stop", "link_wait")
            given = [
                "--" + name.replace("_", "-")
                for name in extras
                if context.get_parameter_source(name) not in (None, ParameterSource.DEFAULT)
            ]
            if given:
                raise click.UsageError(f"{', '.join(given)}: only with --link", context)
        return cls(link, link_lead, link_start_stop, link_wait)


def link_options() -> Callable[[F], F]:
    return options(
        click.option(
            "--link",
            is_flag=True,
            help="Play in an Ableton Link session (Live, Bitwig, Link apps on this network): "
            "tempo and bar phase from the session (--beats-per-bar is Link's quantum), each "
            "step timetagged at its beat; --bpm is used only if no peer is there. Needs "
            "pip install 'oscsync[link]' (GPL: see docs/link.md).",
        ),
        click.option(
            "--link-lead",
            is_flag=True,
            help="With --link: propose --bpm to the session (every peer takes it).",
        ),
        click.option(
            "--link-start-stop",
            is_flag=True,
            help="With --link: share start/stop with the peers that do: steps sound only while "
            "the session plays (with --link-lead, this run starts it at the next bar).",
        ),
        click.option(
            "--link-wait",
            type=DurationType(minimum=0.0, maximum=60.0),
            default=DISCOVERY,
            show_default=True,
            help="With --link: seconds to wait for a peer before starting (no wait once one "
            "is found).",
        ),
    )


@contextlib.contextmanager
def linked(
    app: AppContext,
    choice: LinkOptions,
    *,
    bpm: float,
    beats_per_bar: int,
    steps_per_beat: int = 1,
    swing: float = 0.0,
) -> Iterator[LinkGrid | None]:
    """The Link session's grid while the block runs (None without ``--link``); a missing
    extra is one ``Error:`` line (exit 1)."""
    if not choice.link:
        yield None
        return
    try:
        grid = LinkGrid(
            bpm,
            beats_per_bar=beats_per_bar,
            steps_per_beat=steps_per_beat,
            swing=swing,
            lead=choice.link_lead,
            start_stop=choice.link_start_stop,
            wait_for_peers=choice.link_wait,
            clock=app.clock,
        )
    except LinkUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    try:
        app.note(grid.describe())
        yield grid
    finally:
        try:
            if choice.link_lead and choice.link_start_stop:
                grid.session.set_playing(False)
        finally:
            grid.close()  # leave the session even if stopping its transport failed


@click.command(
    epilog="""\b
Examples:
  oscsync link                        # the session on this network: peers, tempo, beat, phase
  oscsync link --jsonl -d 10          # ten times a second, one JSON object a line, for 10 s
  oscsync link --lead --bpm 97        # set the session's tempo (every peer follows)
"""
)
@bpm_option(999, DEFAULT_BPM, "The tempo if this is the session's only peer (or with --lead).")
@beats_per_bar_option(DEFAULT_QUANTUM, "Link's quantum: the phase is the beat modulo this.")
@click.option("--lead", is_flag=True, help="Propose --bpm to the session.")
@click.option("--start-stop", is_flag=True, help="Share start/stop: show playing or stopped.")
@click.option("--jsonl", is_flag=True, help="One JSON object per line instead of a live line.")
@click.option(
    "--interval",
    type=DurationType(minimum=0.01, maximum=60.0),
    default=0.1,
    show_default=True,
    help="Seconds between two looks at the session.",
)
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@pass_app
def link(
    app: AppContext,
    bpm: float,
    beats_per_bar: int,
    lead: bool,
    start_stop: bool,
    jsonl: bool,
    interval: float,
    duration: float | None,
) -> None:
    """Join the Ableton Link session on this network and show it: peers, tempo, beat, phase.

    On a terminal a live line; piped (or with -q), or with --jsonl, one line per look
    (--interval). Needs pip install 'oscsync[link]'. Ctrl-C stops.
    """
    # A leader waits for the session first, so that its tempo is proposed to it.
    wait_for = DISCOVERY if lead else 0.0
    choice = LinkOptions(link=True, link_lead=lead, link_start_stop=start_stop, link_wait=wait_for)
    live = None if jsonl else app.live_line()
    stop = threading.Event()
    closed = False
    with running(), linked(app, choice, bpm=bpm, beats_per_bar=beats_per_bar) as grid:
        assert grid is not None
        deadline = None if duration is None else app.clock.monotonic() + duration
        try:
            while not stop.is_set():
                status = grid.status()
                if live is not None and live.enabled:
                    live.show(status.line())
                elif jsonl:
                    print(json.dumps(status.record(), separators=(",", ":")), flush=True)
                else:  # piped, or -q (no live line): these lines are the data, as bridge's
                    print(status.line(), flush=True)
                left = None if deadline is None else deadline - app.clock.monotonic()
                if left is not None and left <= 0:
                    break
                app.clock.wait(stop, interval if left is None else min(interval, left))
        except Stop:
            pass  # Ctrl-C: the session is left below
        except BrokenPipeError:  # | head
            closed = True
        finally:
            if live is not None:
                live.end()
                app.live = None
    if closed:
        leave_without_stdout(stopped_cleanly=True)
