"""What every session starts from, and the receive session.

A command gives each session a :class:`SessionSetup`: the clock, where notices and warnings go,
who may send (``--allow``) and the multicast interface (``--iface``). :class:`SendingSession` is
the endpoint and scheduler every sending session starts from (``metronome send``, ``sequence
send``, ``replay``). :class:`ReceivingSession` is an endpoint, a scheduler when bundles are
held and a follower of a leader's clock with ``--sync``: ``bridge`` starts from it, and so does
:class:`ReceiveSession`, one handler on it, which ``dump``, ``timetag monitor`` and ``record``
build rather than an endpoint (issue #12: the CLI wires nothing); ``chat`` opens the public
:class:`~oscsync.apps.endpoints.Endpoint` (:meth:`SessionSetup.open_public_endpoint`).
This module stays light on purpose: it imports neither the metronome nor audio
(:mod:`oscsync.apps.sessions` does), so these commands start quickly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict, TypeVar

from oscsync.apps.endpoints import DEFAULT_INBOX_SIZE, Endpoint, open_endpoint
from oscsync.clock import Clock
from oscsync.net import udp
from oscsync.net.core import MessageHandler, Network, ReceiveHooks
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort
from oscsync.osc.auth import PacketAuth
from oscsync.scheduler import DEFAULT_HORIZON, KEEP, LatePolicy, Scheduler
from oscsync.sync import follow
from oscsync.sync.follow import ClockFollower

if TYPE_CHECKING:
    from typing import Unpack  # Python 3.11; only in annotations, so 3.10 runs this module

S = TypeVar("S", bound="Session")


class _EndpointOptions(TypedDict):
    """What a setup gives every endpoint it opens, the command's or the public one."""

    clock: Clock
    allow: Sequence[Network]
    on_warning: Callable[[str], None]
    multicast_interface: str | None
    framing: Framing


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class SessionSetup:
    """What a command gives every session it builds."""

    clock: Clock
    note: Callable[[str], None] = _quiet
    """Notices (``-q`` silences them)."""
    warn: Callable[[str], None] = _quiet
    allow: Sequence[Network] = ()
    multicast_interface: str | None = None
    framing: Framing = "slip"
    """How packets to ``tcp://`` peers are framed (issue #16)."""
    auth: PacketAuth | None = None
    """The shared key (``--key-file``): pings, pongs and timetagged bundles are signed with it,
    and what arrives signed is checked (:mod:`oscsync.osc.auth`)."""

    def open_endpoint(
        self, listen: HostPort | None = None, peers: Sequence[HostPort] = ()
    ) -> udp.Endpoint:
        """The session's endpoint: a command's, which answers clock pings (``open_endpoint``)."""
        return open_endpoint(listen, peers, auth=self.auth, **self._endpoint_options())

    def sender(self, endpoint: udp.Endpoint) -> Callable[[bytes], int]:
        """How this session sends to its peers: ``endpoint.send_bytes``, with each bundle signed
        when there is a key (plain messages stay as they are: nothing translates them)."""
        auth = self.auth
        if auth is None:
            return endpoint.send_bytes
        send_bytes, sign = endpoint.send_bytes, auth.sign_bundles

        def send_signed(data: bytes) -> int:
            return send_bytes(sign(data))

        return send_signed

    def open_public_endpoint(
        self,
        listen: HostPort | None = None,
        peers: Sequence[HostPort] = (),
        *,
        scheduler: Scheduler | None = None,
        inbox_size: int = DEFAULT_INBOX_SIZE,
    ) -> Endpoint:
        """The public :class:`~oscsync.apps.endpoints.Endpoint` (``oscsync.Endpoint``) with
        this setup, its callbacks on ``scheduler`` when given (``inbox_size`` 0: what no
        callback takes is dropped and counted as it arrives)."""
        return Endpoint(
            listen,
            peers,
            scheduler=scheduler,
            key=self.auth,
            inbox_size=inbox_size,
            **self._endpoint_options(),
        )

    def follower(
        self,
        endpoint: udp.Endpoint,
        sync: str | None,
        sync_peer: HostPort | None,
        *,
        interval: float = follow.INTERVAL,
        start_interval: float = follow.ACQUIRE_INTERVAL,
    ) -> ClockFollower | None:
        """``--sync peer`` on ``endpoint``: a ClockFollower; ``--sync system`` or none: None
        (timetags as they are).

        It pings every ``start_interval`` for its first seconds (the burst and the acquisition
        both: by default both 5 ms), then every ``interval`` (``--sync-start-interval``,
        ``--sync-interval``); with a key its pings are signed and only authenticated pongs and
        timetags count."""
        if sync == "system":
            self.note("clock sync: system (timetags used as they are: this clock is trusted)")
            return None
        if sync is None and sync_peer is None:
            return None
        peer = None if sync_peer is None else sync_peer.sockaddr
        return ClockFollower(
            endpoint,
            peer=peer,
            on_warning=self.warn,
            interval=interval,
            burst_interval=start_interval,
            acquire_interval=start_interval,
            auth=self.auth,
        )

    def _endpoint_options(self) -> _EndpointOptions:
        return _EndpointOptions(
            clock=self.clock,
            allow=self.allow,
            on_warning=self.warn,
            multicast_interface=self.multicast_interface,
            framing=self.framing,
        )


class Session:
    """What every session shares: its setup, and ``with session:`` closes it."""

    def __init__(self, setup: SessionSetup) -> None:
        self.setup = setup
        self.clock = setup.clock
        self.note = setup.note
        self.warn = setup.warn

    def close(self) -> object:
        raise NotImplementedError

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SendingSession(Session):
    """An endpoint to ``peers`` and a scheduler (spinning ``spin`` s before each item) that
    sends on it: what :class:`~oscsync.apps.sessions.SendSession` and
    :class:`~oscsync.apps.replay.ReplaySession` start from; :meth:`close` closes both."""

    def __init__(self, peers: Sequence[HostPort], setup: SessionSetup, *, spin: float) -> None:
        super().__init__(setup)
        self.scheduler = Scheduler(self.clock, spin=spin, on_warning=self.warn)
        # The public Endpoint (oscsync.Endpoint), receiving at once: its clock services answer
        # listeners that follow this sender's clock. The session starts the scheduler. Nothing
        # reads what else the peers send back: no inbox, so it is dropped and counted on the
        # receive thread, never held on the ticks' scheduler (where a peer's bundles timetagged
        # ahead filled it, and the ticks were refused).
        try:
            self.api = setup.open_public_endpoint(
                None, peers, scheduler=self.scheduler, inbox_size=0
            )
        except BaseException:
            self.scheduler.close()
            raise
        self.endpoint = self.api.transport

    def close(self) -> None:
        self.scheduler.close()
        self.api.close()


class ReceivingSession(Session):
    """An endpoint on ``listen`` (sending to ``peers``), with ``schedule`` a scheduler
    (``late_policy``, ``horizon``, ``inline_due``) to hold bundles on, and with ``--sync`` a
    follower of the leader's clock (:meth:`follow`): what :class:`ReceiveSession` and the bridge
    (:class:`~oscsync.apps.bridge.BridgeSession`) start from. Each says what gets what arrives,
    and starts receiving with :meth:`_receive`."""

    def __init__(
        self,
        listen: HostPort | None,
        peers: Sequence[HostPort],
        setup: SessionSetup,
        *,
        schedule: bool = False,
        late_policy: LatePolicy = KEEP,
        horizon: float = DEFAULT_HORIZON,
        inline_due: bool = False,
    ) -> None:
        super().__init__(setup)
        self.follower: ClockFollower | None = None
        """Set when receiving starts with ``--sync``: timetags are translated from the leader's."""
        self.scheduler = (
            Scheduler(
                self.clock,
                late_policy=late_policy,
                horizon=horizon,
                on_warning=self.warn,
                inline_due=inline_due,
            )
            if schedule
            else None
        )
        try:
            self.endpoint = setup.open_endpoint(listen, peers)
        except BaseException:
            if self.scheduler is not None:
                self.scheduler.close()
            raise

    def _receive(
        self,
        handler: MessageHandler | None,
        follower: ClockFollower | None,
        **hooks: Unpack[ReceiveHooks],
    ) -> None:
        """Start the scheduler, then the receive thread with ``handler`` (``hooks``: see
        ``Endpoint.start``), then ``follower`` (kept as :attr:`follower`)."""
        self.follower = follower
        if self.scheduler is not None:
            self.scheduler.start()
        self.endpoint.start(handler, **hooks)
        if follower is not None:
            follower.start()

    def follow(
        self,
        sync: str | None,
        sync_peer: HostPort | None,
        *,
        interval: float = follow.INTERVAL,
        start_interval: float = follow.ACQUIRE_INTERVAL,
    ) -> ClockFollower | None:
        """``--sync``: a follower of the leader's clock on this session's endpoint (None for
        ``--sync system`` or none: timetags as they are). With a key (``--key-file``) the
        leader's pongs and timetags must be signed with it."""
        return self.setup.follower(
            self.endpoint, sync, sync_peer, interval=interval, start_interval=start_interval
        )

    def move_sync_peer(self, peers: Sequence[HostPort]) -> None:
        """Follow the clock of ``peers[0]`` from now on, from scratch (``--sync-peer @NAME``
        re-registered elsewhere)."""
        if self.follower is not None:
            self.follower.move_to(peers[0].sockaddr)


class ReceiveSession(ReceivingSession):
    """An endpoint that hands what arrives to one handler (``dump``, ``timetag monitor``,
    ``record``), on the receive thread, and with ``schedule`` a scheduler (``late_policy``,
    ``horizon``) for that handler to hold bundles on (``dump --schedule``)."""

    def start(
        self,
        handler: MessageHandler | None = None,
        follower: ClockFollower | None = None,
        **hooks: Unpack[ReceiveHooks],
    ) -> None:
        """Start the scheduler, then the receive thread (``hooks``: see ``Endpoint.start``);
        with a ``follower`` (:meth:`follow`) the handler gets timetags on our clock."""
        if follower is not None and handler is not None:
            handler = follower.wrap(handler)
        self._receive(handler, follower, **hooks)

    def close(self) -> bool:
        """Close the follower, the endpoint, then the scheduler; False if the receive thread did
        not stop (a handler stuck writing to a pipe nobody reads)."""
        if self.follower is not None:
            self.follower.close()
        receiver_stopped = self.endpoint.close()
        if self.scheduler is not None:
            self.scheduler.close()
        return receiver_stopped
