"""The ``oscsync chat`` command: its options and output (the work: :mod:`oscsync.apps.chat`)."""

from __future__ import annotations

import contextlib
import sys
import threading

import click

from oscsync.apps.chat import RETRY, ChatSession
from oscsync.cli.params import (
    DURATION,
    advertise_option,
    allow_option,
    framing_option,
    listen_option,
    peers_option,
)
from oscsync.cli.peers import Advertising, following, resolve_peers
from oscsync.cli.runtime import AppContext, color_wanted, pass_app, running, wait
from oscsync.net.core import Network
from oscsync.net.framing import Framing
from oscsync.net.hostport import HostPort, is_own_address
from oscsync.osc import codec
from oscsync.terminal import display
from oscsync.terminal.console import Console


@click.command(
    epilog="""\b
Examples:
  oscsync chat --peer 127.0.0.1:9000            # talk to pd/example1_client.pd
  oscsync chat --listen 9000 --peer 127.0.0.1:9001   # ... or to another `oscsync chat`
  echo "hello" | oscsync chat --peer 127.0.0.1:9000  # send from a script, then exit
  oscsync chat --listen 0.0.0.0:9001 --peer 192.168.1.20:9000   # with a friend on Wi-Fi
  oscsync chat --listen 0.0.0.0:9001 --advertise bob --peer @alice   # ... found by name
""",
)
@peers_option("Where to send each line (repeatable). Pure Data's example patch listens on 9000.")
@listen_option()
@allow_option()
@click.option(
    "--linger",
    type=DURATION,
    default=0.5,
    show_default=True,
    help="With stdin not a terminal: keep printing replies this long after the last line.",
)
@click.option(
    "--wait",
    "wait_for_peer",
    type=DURATION,
    default=5.0,
    show_default=True,
    help="With stdin not a terminal: hold the first line until the peer listens (no ICMP port "
    "unreachable), trying again for up to this long; 0 sends at once.",
)
@advertise_option()
@framing_option()
@pass_app
def chat(
    app: AppContext,
    peers: tuple[HostPort, ...],
    listen: HostPort,
    allow: tuple[Network, ...],
    linger: float,
    wait_for_peer: float,
    advertise: str | None,
    interface: str,
    framing: Framing,
) -> None:
    """Chat over OSC: each line you type is sent as /chat, each /chat received is printed.

    Received lines show the time and the sender, arguments joined with spaces; other messages are
    shown dimmed with their address. On a terminal, incoming lines appear above your prompt without
    breaking what you are typing; Ctrl-D or Ctrl-C ends the chat. With stdin not a terminal, every
    line of stdin is sent (the first one once the peer listens, see --wait), replies are printed
    for --linger seconds, then chat exits.
    """
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    if not interactive:
        sys.stdin.reconfigure(errors="replace")  # type: ignore[union-attr]
    console = Console(sys.stdout, prompt="> ", interactive=interactive)
    styled = color_wanted(sys.stdout)

    def show(text: str, is_chat: bool) -> None:
        console.print(text if is_chat or not styled else click.style(text, dim=True))

    def warn(text: str) -> None:
        if interactive:
            label = click.style("warning: ", fg="yellow") if styled else "warning: "
            console.print(label + display.printable(text))
        else:
            app.warn(text)

    with (
        running(),
        Advertising(app, advertise, interface, role="chat", allow=allow) as advertised,
        contextlib.ExitStack() as follow,
    ):
        given, peers = peers, resolve_peers(peers)
        setup = app.setup(allow, framing=framing, warn=warn)
        endpoint = setup.open_public_endpoint(listen, peers)
        # On a terminal the note goes above the prompt, like other system lines.
        say = (lambda text: show(display.printable(text), False)) if interactive else None
        follow.enter_context(following(app, given, peers, endpoint.set_peers, say=say))
        session = ChatSession(endpoint, show)
        for peer in peers:
            if is_own_address(endpoint.local_address or listen, peer):
                warn(
                    f"--peer {peer} is this chat's own --listen address: your lines come back "
                    "to you (they are not answers from anyone else)"
                )
        try:
            targets = ", ".join(str(peer) for peer in peers)
            app.note(f"chat: listening on {endpoint.local_address}, sending to {targets}")
            # Before the prompt: it takes ~2 s. OSCQuery lists the endpoint's live registry.
            advertised.publish(endpoint.local_address, endpoint.transport.registry)
            if interactive:
                app.note("type a line and press Enter; Ctrl-D or Ctrl-C to quit")
            # Piped (a script, PD's headless recipe): the first line waits for a peer that is
            # not listening yet, instead of being lost (issue 30). Unicast UDP only: a TCP
            # sender connects and queues by itself, and a multicast group never refuses.
            waiting = (
                not interactive
                and wait_for_peer > 0
                and not any(peer.is_tcp or peer.is_multicast for peer in peers)
            )
            while (line := console.read_line()) is not None:
                try:
                    if waiting and line:
                        waiting = False
                        waited = session.send_when_heard(line, wait_for_peer)
                        if waited is None:
                            raise click.ClickException(
                                f"nothing listened at {targets} within {wait_for_peer:g} s "
                                "(ICMP port unreachable each time): no line was delivered; "
                                "start the peer first, or give --wait more time"
                            )
                        if waited >= RETRY:
                            app.note(f"chat: {targets} is listening (after {waited:.1f} s)")
                    else:
                        session.send_line(line)
                except codec.EncodeError as exc:
                    warn(f"line not sent: {exc}")
            if not interactive:
                wait(threading.Event(), app.clock, linger)
        finally:
            endpoint.close()
            console.close()
            app.note(session.summary())
            if console.dropped:
                app.warn(
                    f"{console.dropped} incoming lines arrived faster than they could be shown"
                )
