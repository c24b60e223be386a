"""A receive session: one endpoint, one handler, and a scheduler when bundles are held.

``dump``, ``timetag monitor``, ``record`` and ``chat`` build one of these rather than an
endpoint (issue #12: the CLI wires nothing). It stays light on purpose: it imports neither the
metronome nor audio (:mod:`oscsync.apps.sessions` does), so these commands start quickly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from oscsync.apps.endpoints import open_endpoint
from oscsync.clock import Clock
from oscsync.hostport import HostPort
from oscsync.scheduler import DEFAULT_HORIZON, KEEP, LatePolicy, Scheduler
from oscsync.transport import DatagramHandler, MessageHandler, Network


class ReceiveSession:
    """An endpoint that hands what arrives to one handler (``dump``, ``timetag monitor``,
    ``record``, ``chat``), and with ``schedule`` a scheduler (``late_policy``, ``horizon``) for
    that handler to hold bundles on (``dump --schedule``)."""

    def __init__(
        self,
        listen: HostPort | None = None,
        peers: Sequence[HostPort] = (),
        *,
        clock: Clock,
        allow: Sequence[Network] = (),
        multicast_interface: str | None = None,
        warn: Callable[[str], None],
        schedule: bool = False,
        late_policy: LatePolicy = KEEP,
        horizon: float = DEFAULT_HORIZON,
    ) -> None:
        self.scheduler = (
            Scheduler(clock, late_policy=late_policy, horizon=horizon, on_warning=warn)
            if schedule
            else None
        )
        try:
            self.endpoint = open_endpoint(
                listen,
                peers,
                clock=clock,
                allow=allow,
                on_warning=warn,
                multicast_interface=multicast_interface,
            )
        except BaseException:
            if self.scheduler is not None:
                self.scheduler.close()
            raise

    def start(
        self,
        handler: MessageHandler | None = None,
        *,
        on_datagram: DatagramHandler | None = None,
    ) -> None:
        if self.scheduler is not None:
            self.scheduler.start()
        self.endpoint.start(handler, on_datagram=on_datagram)

    def close(self) -> bool:
        """Close the endpoint, then the scheduler; False if the receive thread did not stop (a
        handler stuck writing to a pipe nobody reads)."""
        receiver_stopped = self.endpoint.close()
        if self.scheduler is not None:
            self.scheduler.close()
        return receiver_stopped
