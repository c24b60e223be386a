"""Another musician's Link app, in a process of its own, on another binding (aalink, asyncio).

    python tests/linkpeer.py --bpm 97 [--quantum 4]

It joins the Link session, prints ``{"event": "ready"}`` and then answers one line of JSON per
command read on stdin:

``status``     peers, tempo, beat and phase now, with the Unix time of that beat: the beat is
               read between two readings of ``time.time()`` (the session's grid as this peer
               sees it, on the system's wall clock, independent of oscsync's code)
``tempo BPM``  sets the session's tempo
``quit``       leaves

The tests (tests/test_link_session.py) and benchmarks/link.py drive it through
:class:`LinkPeer`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

PROGRAM = Path(__file__).resolve()


def interface_names() -> list[str]:
    """This network namespace's interfaces: Link's multicast may run only where it is ``["lo"]``."""
    if not hasattr(socket, "if_nameindex"):
        return []
    return sorted(name for _, name in socket.if_nameindex())


def multicast_route_on_lo() -> bool:
    """Whether 224.0.0.0/4 is routed on ``lo`` (``scripts/isolated`` adds it): Link's peers find
    each other only then."""
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return False
    # 224.0.0.0/4 as the kernel writes it: little-endian hex destination and mask.
    return any(
        f[:1] == ["lo"] and f[1] == "000000E0" and f[7] == "000000F0" for f in map(str.split, lines)
    )


class LinkPeer:
    """This program in a process of its own: ask it for its session's status, set the tempo."""

    def __init__(self, bpm: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PROGRAM), "--bpm", str(bpm)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._read()["event"] == "ready"

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, "the Link peer exited"
        return dict(json.loads(line))

    def ask(self, command: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self._read()

    def status(self) -> dict[str, Any]:
        return self.ask("status")

    def unix_of_beat(self, beat: float, status: dict[str, Any]) -> float:
        """Where this peer puts session beat ``beat``, on the system's wall clock."""
        return float(status["unix"] + (beat - status["beat"]) * 60 / status["tempo"])

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def status(link: object) -> dict[str, object]:
    best: tuple[float, float, float] | None = None
    for _ in range(5):  # the tightest bracket of five
        before = time.time()
        beat = link.beat  # type: ignore[attr-defined]
        after = time.time()
        if best is None or after - before < best[1] - best[0]:
            best = (before, after, beat)
    assert best is not None
    before, after, beat = best
    return {
        "event": "status",
        "peers": link.num_peers,  # type: ignore[attr-defined]
        "tempo": link.tempo,  # type: ignore[attr-defined]
        "beat": beat,
        "phase": link.phase,  # type: ignore[attr-defined]
        "unix": (before + after) / 2,
        "bracket": after - before,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bpm", type=float, default=97.0)
    parser.add_argument("--quantum", type=float, default=4.0)
    args = parser.parse_args()
    import aalink

    link = aalink.Link(args.bpm)
    link.quantum = args.quantum
    link.enabled = True
    print(json.dumps({"event": "ready"}), flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "status":
            print(json.dumps(status(link)), flush=True)
        elif words[0] == "tempo":
            link.tempo = float(words[1])
            print(json.dumps({"event": "tempo", "tempo": link.tempo}), flush=True)
    link.enabled = False


if __name__ == "__main__":
    asyncio.run(main())
