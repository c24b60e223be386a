"""``--sync``, ``--sync-peer`` and the ping intervals: following a leader's clock, for every
command that receives timetags (``metronome``/``sequence`` ``listen`` and ``pair``, ``dump``,
``bridge``), declared once here with what they mean once parsed (:class:`Syncing`)."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click

from oscsync.cli.params import PEER, DurationType, options
from oscsync.cli.peers import following, resolve_peer
from oscsync.cli.runtime import AppContext
from oscsync.net.hostport import HostPort
from oscsync.sync import follow

F = TypeVar("F", bound=Callable[..., Any])

PING_INTERVAL = DurationType(minimum=0.001, maximum=1.0)
"""A follower's ping interval. At 1 ms (1,000 pings a second) it costs ~20 % of a core, ten times
the default's ~2 % (see ``follow.INTERVAL``); at 1 s the estimator's 30 s window
(``clockestimate.WINDOW``) holds at most 30 exchanges a direction, a coarse fit."""


def sync_options(
    sender: str = "the tick sender", first: str = "a timetagged tick"
) -> Callable[[F], F]:
    """The four options; ``sender`` and ``first`` say whose clock is followed by default in
    this command's words (``the leader``, ``a timetagged message``)."""
    return options(
        click.option(
            "--sync",
            type=click.Choice(["peer", "system"]),
            is_flag=False,
            flag_value="peer",
            default=None,
            help=f"peer (or --sync alone): follow {sender}'s clock: ping it (a burst, "
            "200 then 100 times a second), fit its offset and frequency, and translate its "
            "timetags through a map that is slewed, never stepped; what is due before the first "
            "estimate is not played. system: trust this machine's clock (both machines "
            "disciplined by chrony or PTP): timetags are used as they are.",
        ),
        click.option(
            "--sync-peer",
            type=PEER,
            metavar="HOST:PORT|@NAME",
            help=f"Whose clock to follow with --sync (default: the first sender of {first}, "
            "whoever it is, or with oscsync --key-file the first that signs with the key; give "
            "it to refuse anyone else's timetags and to sync before the first one). An "
            "@NAME that re-registers elsewhere is followed there, syncing from scratch.",
        ),
        click.option(
            "--sync-start-interval",
            type=PING_INTERVAL,
            default=follow.ACQUIRE_INTERVAL,
            show_default=True,
            help=f"With --sync: seconds between clock pings for the first "
            f"{follow.ACQUIRE_TIME:g} s, while the first estimates are made.",
        ),
        click.option(
            "--sync-interval",
            type=PING_INTERVAL,
            default=follow.INTERVAL,
            show_default=True,
            help="With --sync: seconds between clock pings after that (more seconds: less "
            "traffic, a noisier estimate).",
        ),
    )


@dataclass(frozen=True)
class Syncing:
    """The options of :func:`sync_options`, handed to a command as one value
    (:func:`oscsync.cli.params.collect`)."""

    sync: str | None = None
    sync_peer: Any = None
    """``--sync-peer``: a HostPort once :meth:`checked` (a ``PeerName`` as parsed)."""
    sync_start_interval: float = follow.ACQUIRE_INTERVAL
    sync_interval: float = follow.INTERVAL
    sync_peer_given: object = None
    """``--sync-peer`` as given (an ``@NAME`` stays one), for :meth:`following`."""

    @property
    def requested(self) -> bool:
        """Whether a peer's clock is to be followed (``--sync``/``--sync peer``/``--sync-peer``)."""
        return self.sync == "peer" or (self.sync is None and self.sync_peer is not None)

    def checked(self) -> Syncing:
        """These options with ``--sync-peer @NAME`` resolved (when the command starts, never
        while parsing); ``--sync system`` with ``--sync-peer``, or ping intervals without a
        peer's clock to follow, is a usage error."""
        if self.sync == "system" and self.sync_peer is not None:
            raise click.UsageError("--sync-peer follows a peer's clock: not with --sync system")
        intervals = (self.sync_start_interval, self.sync_interval)
        if not self.requested and intervals != (follow.ACQUIRE_INTERVAL, follow.INTERVAL):
            raise click.UsageError(
                "--sync-start-interval and --sync-interval time the pings of --sync (peer): "
                "give --sync"
            )
        return dataclasses.replace(
            self, sync_peer=resolve_peer(self.sync_peer), sync_peer_given=self.sync_peer
        )

    @contextlib.contextmanager
    def following(
        self, app: AppContext, move: Callable[[Sequence[HostPort]], None]
    ) -> Iterator[None]:
        """While the block runs, a ``--sync-peer @NAME`` that re-registers elsewhere is
        followed: ``move`` (a session's ``move_sync_peer``) gets the new address, and the clock
        follower measures it from scratch (issue 17, as ``clock --peer @NAME``)."""
        if self.sync_peer is None:
            yield
            return
        with following(
            app,
            (self.sync_peer_given,),
            (self.sync_peer,),
            move,
            say=lambda text: app.note(
                text.replace("now sending to", "now following the clock at")
                + "; clock sync starts over"
            ),
        ):
            yield
