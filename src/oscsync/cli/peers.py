"""``oscsync peers`` and ``peers advertise``, plus the two hooks listening and sending commands
share: :class:`Advertising` (``--advertise NAME``) and :func:`resolve_peers` (``@NAME``)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from oscsync.cli.params import (
    DURATION,
    SERVICE_NAME,
    PeerName,
    allow_option,
    interface_option,
    renamed_option,
)
from oscsync.cli.runtime import AppContext, pass_app, running, wait
from oscsync.net.core import Network
from oscsync.net.hostport import HostPort
from oscsync.osc.routing import AddressRegistry
from oscsync.terminal.display import escape

RESOLVE_TIMEOUT = 3.0
"""Seconds ``@NAME`` waits for an answer (found peers answer within ~0.2 s on a LAN)."""


def resolve_peers(values: Iterable[object], timeout: float = RESOLVE_TIMEOUT) -> tuple[Any, ...]:
    """Each ``@NAME`` replaced by the address it is advertised at; addresses pass through.

    Called at the start of a command (never while parsing). An unknown name is a one-line error
    (exit 1) that lists the names that *were* found.
    """
    items = tuple(values)
    if not any(isinstance(item, PeerName) for item in items):
        return items
    from oscsync.apps.endpoints import resolve_name  # what oscsync.Endpoint("@NAME") does
    from oscsync.discovery.mdns import DiscoveryError

    resolved: list[object] = []
    for item in items:
        if isinstance(item, PeerName):
            try:
                resolved.append(resolve_name(item.name, timeout=timeout))
            except DiscoveryError as exc:
                raise click.ClickException(f"@{escape(item.name)}: {escape(str(exc))}") from None
        else:
            resolved.append(item)
    return tuple(resolved)


def resolve_peer(value: Any, timeout: float = RESOLVE_TIMEOUT) -> Any:
    """:func:`resolve_peers` for one optional value (None passes through)."""
    return value if value is None else resolve_peers((value,), timeout)[0]


@contextlib.contextmanager
def following(
    app: AppContext,
    values: Iterable[object],
    resolved: Sequence[HostPort],
    replace: Callable[[tuple[HostPort, ...]], object],
    say: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """While the block runs, follow each ``@NAME`` among ``values`` (the peers as given;
    ``resolved`` as :func:`resolve_peers` returned them): when one re-registers at another
    address or port, ``replace`` gets the new peer list (``endpoint.set_peers``) and a note
    says so (``say``, by default ``app.note``; it is called from the follower's thread).
    Without ``@NAME`` it does nothing; if mDNS cannot be watched it warns and the command goes
    on with the addresses found at start."""
    given = tuple(values)
    current = list(resolved)
    named = {
        item.name: current[index]
        for index, item in enumerate(given)
        if isinstance(item, PeerName) and index < len(current)
    }
    if not named:
        yield
        return
    from oscsync.apps.endpoints import answers_with_key
    from oscsync.discovery.follower import PeerFollower
    from oscsync.discovery.mdns import DiscoveryError

    lock = threading.Lock()

    def on_move(name: str, where: tuple[str, int]) -> bool:
        moved = HostPort(*where, protocol=named[name].protocol)
        # Anyone on the local network can announce the name (issue #27 item 5: a stranger
        # re-announcing @bob took its ticks and the clock). With a key, only a peer that
        # answers a signed ping with a pong signed with the same key is followed.
        if app.auth is not None and not answers_with_key(moved, clock=app.clock, auth=app.auth):
            app.warn(
                escape(
                    f"@{name} re-registered at {moved}, which does not answer with this "
                    "--key-file key: not followed (anyone can announce a name)"
                )
            )
            return False
        with lock:  # two names moving at once must not lose one of the two replacements
            old = tuple(current)
            for index, item in enumerate(given):
                if isinstance(item, PeerName) and item.name.lower() == name.lower():
                    current[index] = moved
            peers = tuple(current)
            try:
                replace(peers)
            except Exception as exc:  # TransportError (no socket), or the endpoint closing
                current[:] = old
                app.warn(escape(f"@{name} re-registered at {moved}, but cannot send there: {exc}"))
                return False
        (say or app.note)(escape(f"@{name} re-registered: now sending to {moved}"))
        if app.auth is None:
            app.warn(
                escape(
                    f"@{name}'s new address {moved} is not verified: anyone on the local network "
                    f"can announce @{name} (give both machines the same --key-file to follow only "
                    "a peer that holds it, or type the address)"
                )
            )
        return True

    try:
        follower = PeerFollower(
            {name: (peer.host, peer.port) for name, peer in named.items()},
            on_move,
            protocols={name: peer.protocol for name, peer in named.items()},
        ).start()
    except DiscoveryError as exc:
        app.warn(escape(f"cannot follow @NAME peers after the start: {exc}"))
        yield
        return
    try:
        yield
    finally:
        follower.close()


@dataclass
class Advertising:
    """What ``--advertise NAME`` does for a listening command; a no-op without a name.

    ``with Advertising(...) as adv: ... adv.publish(endpoint.local_address, endpoint.registry)``;
    the services are unregistered (goodbye packets) when the block ends, by Ctrl-C and SIGTERM
    too. A TCP listener (``tcp://`` in ``--listen``) is advertised as ``_osc._tcp``.
    """

    app: AppContext
    name: str | None
    interface: str
    role: str
    extra_txt: dict[str, str] | None = None
    allow: Sequence[Network] = ()
    advertiser: Any = field(default=None, init=False)
    """The running :class:`~oscsync.discovery.advertiser.Advertiser`, once :meth:`publish`
    started it."""

    def __enter__(self) -> Advertising:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def publish(self, listening: HostPort | None, registry: AddressRegistry | None = None) -> None:
        """Advertise the listener bound at ``listening`` (blocks ~2 s: the name check and mDNS
        probing); its OSCQuery lists ``registry`` (the endpoint's, live), or nothing without
        one."""
        if self.name is None or listening is None:
            return
        from oscsync.discovery.advertiser import Advertiser
        from oscsync.discovery.mdns import DiscoveryError, OptionError

        try:
            advertiser = Advertiser(
                self.name,
                role=self.role,
                port=listening.port,
                listen_host=listening.host,
                interface=self.interface,
                extra_txt=self.extra_txt,
                clock=self.app.clock,
                warn=lambda text: self.app.warn(escape(text)),
                allow=self.allow,
                transport=listening.protocol,
                registry=registry,
            )
            # Kept only once started: a start that failed (or a Ctrl-C during its ~2 s) closed
            # itself, and close() must not then say "no longer advertised".
            self.advertiser = advertiser.start()
        except OptionError as exc:
            raise click.UsageError(str(exc)) from None
        except DiscoveryError as exc:
            raise click.ClickException(str(exc)) from None
        describe = escape(advertiser.describe())
        (self.app.warn if advertiser.renamed else self.app.note)(describe)

    def close(self) -> None:
        if self.advertiser is not None:
            advertiser, self.advertiser = self.advertiser, None
            http = advertiser.http
            advertiser.close()
            self.app.note(f"no longer advertised as {escape(advertiser.name)!r}")
            if http is not None and (http.served or http.rejected):
                refused = ", ".join(f"{why} {n}" for why, n in sorted(http.rejected.items()))
                self.app.note(
                    f"OSCQuery: answered {http.served} requests"
                    + (f"; refused: {refused}" if refused else "")
                )


# -- oscsync peers ----------------------------------------------------------------------------


def _peer_line(peer: Any) -> str:
    addresses = ", ".join(f"{a}:{peer.port}" for a in peer.addresses) or f"?:{peer.port}"
    role = f"  role={peer.role}" if peer.role else ""
    return escape(f"{peer.name}  {peer.transport}  {addresses}{role}  host={peer.host}")


@click.group(
    invoke_without_command=True,
    epilog="""\b
Examples:
  oscsync peers                              # what is advertised on the network, in 2 s
  oscsync peers --json --timeout 1
  oscsync peers --watch                      # services as they come and go (Ctrl-C stops)
  oscsync peers advertise mypatch --port 9000   # announce a Pure Data patch (this machine)
""",
)
@click.option(
    "--timeout",
    "-t",
    type=DURATION,
    default=2.0,
    show_default=True,
    help="How long to listen for answers.",
)
@click.option("--jsonl", "as_json", is_flag=True, help="One JSON object per service and line.")
@renamed_option("--json", "--jsonl", "old_json", is_flag=True)
@click.option(
    "--watch", "-w", is_flag=True, help="Keep listening: print services as they come and go."
)
@interface_option(default="all", help="Network interface for mDNS: all, loopback or an address.")
@click.pass_context
def peers(
    ctx: click.Context, timeout: float, as_json: bool, old_json: bool, watch: bool, interface: str
) -> None:
    """List OSC services on the network (zeroconf), or advertise one for a Pure Data patch.

    Lists every _osc._udp, _osc._tcp and _oscjson._tcp (OSCQuery) service, from oscsync and
    from other programs: name, transport, addresses and port, role. A name can be used as
    @NAME wherever a peer address goes (oscsync send @alice /chat hi).
    """
    if ctx.invoked_subcommand is not None:
        return
    from oscsync.discovery import browsing
    from oscsync.discovery.mdns import DiscoveryError

    app: AppContext = ctx.obj
    as_json = as_json or old_json

    # Names, hosts and TXT come from anyone on the network: text lines escape them, JSON lines
    # are ASCII (U+202E and the like as \\u escapes, which JSON readers decode).
    def show(peer: Any) -> None:
        if as_json:
            click.echo(json.dumps(peer.to_json()))
        else:
            click.echo(_peer_line(peer))

    def unreadable(name: str) -> None:
        app.warn(
            f"left out a service whose name python-zeroconf cannot read (control characters): "
            f"'{escape(name)}'"
        )

    with running():
        try:
            if watch:
                app.note("watching for OSC services; Ctrl-C stops")

                def on_change(kind: str, item: Any) -> None:
                    if kind == "removed":
                        if as_json:
                            click.echo(json.dumps({"removed": item}))
                        else:
                            click.echo(escape(f"gone: {item}"))
                    elif kind == "unreadable":
                        unreadable(item)
                    else:
                        show(item)

                for _ in browsing.watch(interface, on_change):
                    pass
                return
            refused: list[str] = []
            found = browsing.browse(interface, timeout, clock=app.clock, unreadable=refused)
        except DiscoveryError as exc:
            raise click.ClickException(str(exc)) from None
        for peer in found:
            show(peer)
        for name in refused:
            unreadable(name)
        if not found:
            app.note(f"no OSC services answered within {timeout:g} s")


@peers.command(
    epilog="""\b
Examples:
  oscsync peers advertise mypatch --port 9000            # pd/example1_client.pd listens on 9000
  oscsync peers advertise mypatch --port 9000 --host 0.0.0.0   # ... for the other machines too
  oscsync peers advertise mypatch --port 9000 --role pd --duration 1 --interface loopback
"""
)
@click.argument("name", type=SERVICE_NAME)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    required=True,
    help="The UDP port the patch listens on.",
)
@click.option(
    "--role", default="pd", show_default=True, help="The role oscsync peers shows (a TXT item)."
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="The address the patch listens on. 127.0.0.1 is announced on this machine only (as "
    "every oscsync listener is by default); --host 0.0.0.0 (like [udpreceive PORT]) announces "
    "this machine's network addresses.",
)
@click.option(
    "--txt",
    "txt",
    multiple=True,
    metavar="KEY=VALUE",
    help="An extra TXT item (repeatable; DNS-SD limits: 255 bytes each, 1300 in all).",
)
@click.option("--duration", "-d", type=DURATION, help="Stop after this many seconds.")
@interface_option()
@allow_option(" Applies to the OSCQuery server (TCP); the patch itself is not covered.")
@pass_app
def advertise(
    app: AppContext,
    name: str,
    port: int,
    role: str,
    host: str,
    txt: tuple[str, ...],
    duration: float | None,
    interface: str,
    allow: tuple[Network, ...],
) -> None:
    """Announce a listener that cannot announce itself (a Pure Data patch) until Ctrl-C.

    Registers NAME._osc._udp with PORT and NAME._oscjson._tcp (OSCQuery), and sends goodbye
    packets when stopped (Ctrl-C, SIGTERM or --duration).
    """
    from oscsync.net.hostport import AddressError, resolve_host

    extra: dict[str, str] = {}
    for item in txt:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint="'--txt'")
        extra[key] = value
    try:
        listen_host = resolve_host(host)
    except AddressError as exc:
        raise click.BadParameter(str(exc), param_hint="'--host'") from None
    with running(), Advertising(app, name, interface, role, extra, allow) as advertised:
        advertised.publish(HostPort(listen_host, port))
        wait(threading.Event(), app.clock, duration)
