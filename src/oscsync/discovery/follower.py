"""Following a name: an ``@NAME`` peer that re-registers elsewhere is sent to where it is now.

:class:`PeerFollower` listens for the announcements of the names a command resolved at start
(:mod:`oscsync.discovery.browsing`) and calls ``on_move`` when one of them answers at another
address or port.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from oscsync.discovery import mdns
from oscsync.discovery.browsing import preferred_address, resolve_info

if TYPE_CHECKING:
    from zeroconf import Zeroconf

Moved = Callable[[str, tuple[str, int]], "bool | None"]
"""``on_move(name, (address, port))``: an ``@NAME`` peer now answers at another address or port.
False refuses the move (the new address could not be verified): the name stays where it was,
and its next announcement there is tried again."""


class PeerFollower:
    """Follows ``@NAME`` peers after the start: when one re-registers elsewhere (restarted on
    another port, moved to another machine), ``on_move(name, (address, port))`` is called.

    A multicast ServiceBrowser on ``_osc._udp`` hears the new announcement (RFC 6762 §8.3:
    a responder announces at start, and again when a record changes). The browser's handler
    only notes which followed name changed (a set no larger than the names followed, however
    many announcements arrive); this object's own thread resolves it from the cache, so
    zeroconf's thread never waits on the network, and the last announcement is what counts.
    A goodbye (the peer stopped) moves nothing: the peer may come back at the same address,
    and a send to a stopped peer is only counted. ``current`` maps each followed name to the
    address it was resolved to at start; ``protocols`` names the peers that were found as
    ``_osc._tcp`` (``"tcp"``): those are followed on ``_osc._tcp``, the others on ``_osc._udp``.
    """

    def __init__(
        self,
        current: dict[str, tuple[str, int]],
        on_move: Moved,
        interface: str | None = None,
        protocols: dict[str, str] | None = None,
    ) -> None:
        self._current = {mdns.check_name(name).lower(): where for name, where in current.items()}
        self._names = {mdns.check_name(name).lower(): name for name in current}
        tcp = {
            mdns.check_name(name).lower()
            for name, kind in (protocols or {}).items()
            if kind == "tcp"
        }
        self._types = {key: mdns.OSC_TCP if key in tcp else mdns.OSC_UDP for key in self._current}
        self.on_move = on_move
        self.interface = mdns.check_interface(interface or mdns.default_interface())
        self.moves = 0
        self._lock = threading.Lock()
        self._changed: dict[str, str] = {}  # followed name (lower case) -> its full DNS-SD name
        self._wake = threading.Event()
        self._stopped = False
        self._zc: Zeroconf | None = None
        self._browser: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> PeerFollower:
        from oscsync import threads

        module = mdns.import_zeroconf()
        self._zc = zc = mdns.open_zeroconf(self.interface)
        try:
            self._thread = threads.daemon_thread(self._run, name="oscsync-peer-follower")
            threads.start(self._thread)
            self._browser = module.ServiceBrowser(
                zc,
                sorted(set(self._types.values())),
                handlers=[self._on_change],
                question_type=module.DNSQuestionType.QM,
            )
        except BaseException:
            self.close()  # zeroconf and the thread: ``with PeerFollower(...)`` never exits
            raise
        return self

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        if str(state_change.name) == "Removed":
            return
        key = mdns.instance_name(name, service_type).lower()
        if key in self._current and service_type.lower() == self._types[key].lower():
            with self._lock:
                self._changed[key] = name
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            with self._lock:
                self._wake.clear()
                changed, self._changed = self._changed, {}
            zc = self._zc
            if self._stopped or zc is None:
                return
            for key, full in changed.items():
                try:
                    peer = resolve_info(zc, self._types[key], full, 1.0)
                except Exception:  # zeroconf closing under us, or a record it cannot parse
                    continue
                address = None if peer is None else preferred_address(peer.addresses)
                if peer is None or address is None or self._current[key] == (address, peer.port):
                    continue
                if self.on_move(self._names[key], (address, peer.port)) is False:
                    continue  # refused (not verified): still where it was
                self._current[key] = (address, peer.port)
                self.moves += 1

    def close(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            browser.cancel()
        self._stopped = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(2.0)
        zc, self._zc = self._zc, None
        if zc is not None:
            zc.close()

    def __enter__(self) -> PeerFollower:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
