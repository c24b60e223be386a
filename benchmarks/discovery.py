"""Figures for discovery (issue 17), on loopback, with the real CLI in subprocesses.

Per round, a ``dump --listen 0 --advertise NAME`` is started and python-zeroconf (a multicast
ServiceBrowser started beforehand, as any other mDNS program) watches it:

- start → "advertised": process start to the listener's own "advertised as" notice (name check
  and RFC 6762 probing included);
- "advertised" → found: until the independent browser sees ``NAME._osc._udp`` (goal ≤ 2 s;
  negative when the announcement arrives before the notice is printed);
- start → found: the same from process start;
- ``send HOST:PORT`` vs ``send @NAME``: wall time of the whole command (the baseline types the
  address; the difference is what resolving the name costs);
- SIGTERM → gone: until the browser sees the goodbye (Removed).

    .venv/bin/python benchmarks/discovery.py             # 5 rounds, ~30 s
    .venv/bin/python benchmarks/discovery.py --rounds 10
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from zeroconf import IPVersion, ServiceBrowser, Zeroconf

from oscsync.discovery import mdns


class Watch:
    def __init__(self) -> None:
        self.zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        self.seen: dict[tuple[str, str], float] = {}
        self.cond = threading.Condition()
        self.browser = ServiceBrowser(self.zc, [mdns.OSC_UDP], handlers=[self.on_change])

    def on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        with self.cond:
            self.seen.setdefault((state_change.name, name), time.monotonic())
            self.cond.notify_all()

    def wait(self, state: str, name: str, timeout: float = 10.0) -> float:
        key = (state, f"{name}.{mdns.OSC_UDP}")
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.seen, timeout):
                raise SystemExit(f"{state} {name}: not seen in {timeout} s")
            return self.seen[key]

    def close(self) -> None:
        self.browser.cancel()
        self.zc.close()


def oscsync(*args: str) -> list[str]:
    return [sys.executable, "-m", "oscsync", *args]


def timed_run(*args: str) -> float:
    start = time.monotonic()
    subprocess.run(oscsync(*args), check=True, capture_output=True, timeout=60)
    return time.monotonic() - start


def one_round(watch: Watch) -> dict[str, float]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    start = time.monotonic()
    proc = subprocess.Popen(
        oscsync("dump", "--listen", "0", "--advertise", name),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    port = 0
    for line in proc.stderr:
        if line.startswith("listening on"):
            port = int(line.rsplit(":", 1)[1])
        if "advertised as" in line:
            break
    advertised = time.monotonic()
    found = watch.wait("Added", name)
    figures = {
        "start → advertised": advertised - start,
        # Negative: the browser heard the first announcement before the notice was printed.
        "advertised → found": found - advertised,
        "start → found": found - start,
        "send HOST:PORT (baseline)": timed_run("send", f"127.0.0.1:{port}", "/x", "1"),
        "send @NAME": timed_run("send", f"@{name}", "/x", "1"),
    }
    stopped = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    gone = watch.wait("Removed", name)
    figures["SIGTERM → gone"] = gone - stopped
    proc.wait(15)
    proc.stderr.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    watch = Watch()
    try:
        results = [one_round(watch) for _ in range(rounds)]
    finally:
        watch.close()
    print(f"discovery on loopback, {rounds} rounds (median, max), load {os.getloadavg()[0]:.2f}")
    for key in results[0]:
        values = [r[key] for r in results]
        print(
            f"  {key:28s} {statistics.median(values) * 1000:8.0f} ms {max(values) * 1000:8.0f} ms"
        )
    extra = [r["send @NAME"] - r["send HOST:PORT (baseline)"] for r in results]
    print(f"  resolving @NAME costs       {statistics.median(extra) * 1000:8.0f} ms (median)")


if __name__ == "__main__":
    main()
