"""``oscsync clock`` against peers whose clocks cannot be right (issue #27 item 4): it said
"locked" with a small ± to a peer claiming +9.2 years, one that stepped 10 s, one whose stamps
were frozen. The peers here are real loopback sockets answering pings as told
(tests/fakepeers.py)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fakepeers import FakePeer, claims, frozen
from oscsync.apps import clock as clock_app
from oscsync.cli.main import cli

YEARS_9_2 = 9.2 * 365.25 * 86400


def _measure(peer: FakePeer, seconds: float, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        ["clock", "--peer", peer.hostport, "--duration", str(seconds), "--interval", "0.005",
         *extra],
    )  # fmt: skip
    return result.exit_code, result.stdout


def test_a_peer_claiming_nine_years_is_flagged_absurd() -> None:
    with FakePeer(answer=claims(lambda elapsed: YEARS_9_2)) as peer:
        code, output = _measure(peer, 0.5, "--json")
    report = json.loads(output)
    assert code == 3, output
    assert report["problems"] == ["absurd-offset"]
    assert "+9.2 years" in report["warnings"][0]


def test_the_text_report_says_why_and_the_live_line_says_suspect() -> None:
    with FakePeer(answer=claims(lambda elapsed: -YEARS_9_2)) as peer:
        code, output = _measure(peer, 0.5)
        watched = _measure(peer, 0.6, "--watch")[1]
    assert code == 3
    (line,) = [line for line in output.splitlines() if line.startswith("suspect:")]
    assert "-9.2 years" in line and "a wrong date or time zone" in line
    assert "SUSPECT: absurd-offset" in watched


def test_a_step_of_ten_seconds_that_holds_is_flagged_stepped() -> None:
    with FakePeer(answer=claims(lambda elapsed: 0.0 if elapsed < 0.3 else 10.0)) as peer:
        code, output = _measure(peer, 2.9, "--json")
    report = json.loads(output)
    assert code == 3, output
    assert "stepped" in report["problems"]
    stepped = report["warnings"][report["problems"].index("stepped")]
    assert "+10.0" in stepped  # "+10.000 s"
    assert report["offset_ms"] == pytest.approx(10_000.0, abs=5.0)  # after the step


def test_a_step_too_short_to_confirm_is_flagged_jumped_and_not_used() -> None:
    with FakePeer(answer=claims(lambda elapsed: 0.0 if elapsed < 0.3 else 10.0)) as peer:
        code, output = _measure(peer, 1.0, "--json")
    report = json.loads(output)
    assert code == 3, output
    assert report["problems"] == ["jumped"]
    assert "jumped by about +10.0" in report["warnings"][0]
    assert abs(report["offset_ms"]) < 5.0  # the clock before the jump, not +10 s
    assert report["ignored_by_reason"]["offset-jump"] > 10


def test_frozen_stamps_are_flagged() -> None:
    with FakePeer(answer=frozen()) as peer:
        code, output = _measure(peer, 1.0, "--json")
    report = json.loads(output)
    assert code == 3, output
    assert "frozen" in report["problems"]


def test_a_clock_running_five_percent_fast_is_flagged() -> None:
    with FakePeer(answer=claims(lambda elapsed: 0.05 * elapsed)) as peer:
        code, output = _measure(peer, 1.0, "--json")
    report = json.loads(output)
    assert code == 3, output
    assert "wrong-rate" in report["problems"]
    assert "+5.0 %" in report["warnings"][report["problems"].index("wrong-rate")]


def test_an_honest_peer_a_second_off_is_not_suspect() -> None:
    with FakePeer(answer=claims(lambda elapsed: 1.5)) as peer:
        code, output = _measure(peer, 0.5, "--json")
    report = json.loads(output)
    assert code == 0, output
    assert report["problems"] == [] and report["offset_ms"] == pytest.approx(1500.0, abs=1.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (YEARS_9_2, "+9.2 years"),
        (-2 * 86400, "-2.0 days"),
        (10.0, "+10.000 s"),
        (-0.0125, "-12.500 ms"),
    ],
)
def test_span_text(seconds: float, text: str) -> None:
    assert clock_app.span_text(seconds) == text
