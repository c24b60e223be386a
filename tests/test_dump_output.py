"""Issue 18: how ``dump`` writes its lines into a pipe (batched under load, at once when idle)."""

from __future__ import annotations

import os
import subprocess

import pytest

from conftest import LineReader, oscsync_command
from oscsync.net.hostport import HostPort
from oscsync.net.udp import Endpoint

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("schedule", [False, True], ids=["on-arrival", "scheduled"])
def test_dump_line_reaches_a_pipe_at_once_without_pythonunbuffered(schedule: bool) -> None:
    """A pipe's stdout is block-buffered by Python: a line must not wait for 8 KB more or for
    exit (``dump | grep`` showed nothing until then). The tests' PYTHONUNBUFFERED hid it."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        oscsync_command("dump", "--listen", "127.0.0.1:0", *(["--schedule"] if schedule else [])),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        errors = LineReader(proc.stderr)
        where = errors.wait_for(lambda text: text.startswith("listening on")).split()[-1]
        lines = LineReader(proc.stdout)
        with Endpoint(peers=[HostPort("127.0.0.1", int(where.rsplit(":", 1)[1]))]) as tx:
            tx.send("/hello", [1])
            tx.send("/tagged", [2], timetag=1)  # a bundle (IMMEDIATELY): printed at once too
            assert lines.wait_for(lambda text: "/hello" in text).endswith("/hello ,i 1")
            assert lines.wait_for(lambda text: "/tagged" in text).endswith("/tagged ,i 2")
    finally:
        proc.terminate()
        proc.wait(10)
