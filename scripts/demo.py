"""``make demo``: run ``oscsync demo`` (or, before it exists, a loopback send/dump round trip)."""

from __future__ import annotations

import subprocess
import sys


def main() -> int:
    oscsync = [sys.executable, "-m", "oscsync"]
    probe = subprocess.run([*oscsync, "demo", "--help"], capture_output=True, text=True)
    if probe.returncode == 0:
        return subprocess.call([*oscsync, "demo"])
    # Round trip on loopback: a dump on a free port, three messages sent to it.
    dump = subprocess.Popen(
        [*oscsync, "dump", "--listen", "127.0.0.1:0", "--count", "3", "--duration", "5"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert dump.stderr is not None
    line = dump.stderr.readline()  # "listening on 127.0.0.1:PORT"
    print(line.strip())
    peer = line.split()[-1]
    subprocess.check_call([*oscsync, "send", peer, "/chat", "hello from oscsync"])
    subprocess.check_call([*oscsync, "send", peer, "/tick", "0", "--in", "0.25"])
    subprocess.check_call([*oscsync, "send", peer, "/synth", "440.0", "1", "true"])
    dump.wait(10)
    print(dump.stderr.read().strip())
    return dump.returncode


if __name__ == "__main__":
    sys.exit(main())
