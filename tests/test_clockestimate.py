"""The envelope estimator on simulated links: convergence, frequency, the bound, clock steps."""

from __future__ import annotations

import statistics

import pytest

from oscsync.apps.clock import DEFAULT_DURATION, DEFAULT_INTERVAL
from oscsync.sync.estimate import CONFIRM_SPAN, RESTART_AFTER, EnvelopeEstimator
from simlink import SimLink, exponential, pareto, uniform


def _run(
    link: SimLink, duration: float, every: int = 16
) -> tuple[EnvelopeEstimator, list[tuple[float, float, float]]]:
    """Feed the estimator; every ``every`` exchanges note (time, error, bound)."""
    estimator = EnvelopeEstimator()
    notes = []
    for index, exchange in enumerate(link.exchanges(duration)):
        estimator.add_exchange(exchange.t1, exchange.t2, exchange.t3, exchange.t4)
        if index % every:
            continue
        estimate = estimator.estimate(exchange.t4)
        if estimate is not None:
            notes.append((exchange.t4, estimate.offset - link.offset(exchange.t4), estimate.bound))
    return estimator, notes


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[int(0.99 * (len(ordered) - 1))]


def test_no_estimate_before_three_exchanges() -> None:
    estimator = EnvelopeEstimator()
    link = SimLink(uniform())
    exchanges = list(link.exchanges(1.0))
    for exchange in exchanges[:2]:
        estimator.add_exchange(exchange.t1, exchange.t2, exchange.t3, exchange.t4)
        assert estimator.estimate(exchange.t4) is None
    estimator.add_exchange(exchanges[2].t1, exchanges[2].t2, exchanges[2].t3, exchanges[2].t4)
    assert estimator.estimate(exchanges[2].t4) is not None


@pytest.mark.parametrize(
    ("delay", "ppm", "goal"),
    [
        (uniform(), 50.0, 0.25e-3),  # issue #11: ±15 ms uniform, 50 ppm: p99 ≤ 0.25 ms after 10 s
        (exponential(), 200.0, 0.5e-3),  # exponential 10 ms, 200 ppm: ≤ 0.5 ms
        (pareto(), -500.0, 0.25e-3),
    ],
    ids=["uniform-50ppm", "exponential-200ppm", "pareto-minus-500ppm"],
)
def test_offset_converges_within_the_goal_after_ten_seconds(
    delay: object, ppm: float, goal: float
) -> None:
    errors = []
    for seed in range(3):
        link = SimLink(delay, skew=0.15, ppm=ppm, rate=40, seed=seed)  # type: ignore[arg-type]
        _, notes = _run(link, 40.0)
        errors += [abs(error) for t, error, _ in notes if t >= 10.0]
    assert _p99(errors) <= goal


@pytest.mark.parametrize("ppm", [-500.0, 0.0, 50.0, 200.0, 500.0])
def test_frequency_is_found_within_five_ppm(ppm: float) -> None:
    link = SimLink(uniform(), ppm=ppm, rate=40, seed=3)
    estimator, _ = _run(link, 30.0)
    estimate = estimator.estimate(30.0)
    assert estimate is not None
    assert estimate.ppm == pytest.approx(ppm, abs=5.0)


LAWS = {"uniform": uniform(), "exponential": exponential(), "pareto": pareto()}


def _final(link: SimLink, duration: float) -> tuple[float, float, float, float]:
    """``oscsync clock``'s answer after ``duration``: (offset error, bound, ppm error, ppm bound)."""
    estimator = EnvelopeEstimator()
    last = 0.0
    for exchange in link.exchanges(duration):
        estimator.add_exchange(exchange.t1, exchange.t2, exchange.t3, exchange.t4)
        last = exchange.t4
    estimate = estimator.estimate(last)
    assert estimate is not None
    error = estimate.offset - link.offset(last)
    return error, estimate.bound, estimate.ppm - link.ppm, estimate.ppm_bound


@pytest.mark.parametrize("law", LAWS)
def test_oscsync_clock_defaults_find_the_frequency_within_five_ppm(law: str) -> None:
    # Issue #11 goal: the command's defaults (30 s at 100 pings/s) within ±5 ppm in 4 of 5 runs
    # and the offset within 0.3 ms; 20 seeded runs per law, ±50..500 ppm.
    ppm_errors, offset_errors = [], []
    for seed in range(20):
        ppm = (50.0, -200.0, 500.0, -500.0, 30.0)[seed % 5]
        link = SimLink(LAWS[law], skew=0.25, ppm=ppm, rate=1 / DEFAULT_INTERVAL, seed=seed)
        error, _, ppm_error, _ = _final(link, DEFAULT_DURATION)
        ppm_errors.append(abs(ppm_error))
        offset_errors.append(abs(error))
    assert sum(e <= 5.0 for e in ppm_errors) >= 0.85 * len(ppm_errors)
    assert max(offset_errors) <= 0.3e-3


@pytest.mark.parametrize("law", ["uniform", "exponential"])
def test_the_frequency_bound_widens_when_the_path_delay_creeps(law: str) -> None:
    # Both floors rising 10 µs/s (a loaded relay): one shared slope cannot fit them and errs
    # by several ppm; each direction's own slope shows the creep, and the bound takes it in.
    covered, bounds = 0, []
    for seed in range(20):
        link = SimLink(LAWS[law], ppm=30.0, rate=100, creep=10e-6, seed=seed)
        _, _, ppm_error, ppm_bound = _final(link, 20.0)
        covered += abs(ppm_error) <= ppm_bound
        bounds.append(ppm_bound)
    assert covered >= 19
    # The creep seen: without it the median bound is 6.4 ppm (uniform), 3.8 (exponential).
    assert statistics.median(bounds) >= 10.0


@pytest.mark.parametrize("law", LAWS)
def test_the_bound_covers_the_true_error_95_percent_of_the_time(law: str) -> None:
    # Issue #11, honest bound: over many seeded runs and their whole course (every 16th exchange
    # from the third on), with drift ±50..500 ppm, loss, a path that creeps and a fixed timestamp
    # asymmetry of 60 µs (what netem on loopback showed): offset and frequency bounds both.
    covered = ppm_covered = total = ppm_total = 0
    for seed in range(12):
        ppm = (50.0, -200.0, 500.0, -500.0)[seed % 4]
        link = SimLink(
            LAWS[law],
            ppm=ppm,
            rate=100,
            loss=0.05,
            creep=3e-6 if seed % 3 == 1 else 0.0,
            asymmetry=60e-6 if seed % 3 == 2 else 0.0,
            seed=seed,
        )
        estimator = EnvelopeEstimator()
        for index, exchange in enumerate(link.exchanges(20.0)):
            estimator.add_exchange(exchange.t1, exchange.t2, exchange.t3, exchange.t4)
            if index % 16:
                continue
            estimate = estimator.estimate(exchange.t4)
            if estimate is None:
                continue
            total += 1
            covered += abs(estimate.offset - link.offset(exchange.t4)) <= estimate.bound
            if estimate.span >= 2.0:
                ppm_total += 1
                ppm_covered += abs(estimate.ppm - ppm) <= estimate.ppm_bound
    assert covered / total >= 0.95
    assert ppm_covered / ppm_total >= 0.95


def test_loss_and_reordering_only_slow_it_down() -> None:
    # 30 % loss, pongs delivered in arrival order (delays vary by 30 ms: heavily reordered).
    link = SimLink(uniform(), ppm=100.0, rate=40, loss=0.3, seed=5)
    _, notes = _run(link, 40.0)
    assert _p99([abs(e) for t, e, _ in notes if t >= 20.0]) <= 0.25e-3


def test_a_step_of_the_peer_clock_restarts_the_window() -> None:
    link = SimLink(uniform(), ppm=50.0, rate=40, step=0.030, step_at=20.0, seed=2)
    estimator, notes = _run(link, 40.0)
    assert estimator.restarts == 1
    after = [abs(e) for t, e, _ in notes if t >= 30.0]
    assert after and max(after) <= 0.5e-3


def test_a_single_impossible_exchange_is_held_back() -> None:
    link = SimLink(uniform(), ppm=0.0, rate=40, seed=4)
    estimator, _ = _run(link, 10.0)
    before = estimator.estimate(10.0)
    assert before is not None
    # A forged pong claiming the peer is 100 s behind: far below the forward envelope.
    for _ in range(RESTART_AFTER - 1):
        assert not estimator.add_exchange(10.0, 10.0 - 100.0, 10.0 - 100.0, 10.04)
    after = estimator.estimate(10.0)
    assert after is not None
    assert after.offset == before.offset and estimator.restarts == 0


def _forged(estimator: EnvelopeEstimator, start: float, seconds: float, claim: float) -> None:
    """A forger answering 100 pings a second first, all claiming the peer is ``claim`` s off."""
    for k in range(int(seconds * 100)):
        t1 = start + k / 100
        estimator.add_exchange(t1, t1 + 0.005 + claim, t1 + 0.005 + claim, t1 + 0.01)


@pytest.mark.parametrize("claim", [5.0, -5.0, 0.02])
def test_a_forged_burst_shorter_than_the_confirm_span_never_restarts(claim: float) -> None:
    """Issue #27 item 2: a burst that agrees with itself for less than CONFIRM_SPAN seconds is
    held back entirely, counted; the genuine exchanges after it go on from where they were."""
    link = SimLink(uniform(), ppm=0.0, rate=40, seed=4)
    estimator = EnvelopeEstimator()
    for exchange in link.exchanges(10.0):
        estimator.add_exchange(exchange.t1, exchange.t2, exchange.t3, exchange.t4)
    before = estimator.estimate(10.0)
    assert before is not None
    _forged(estimator, 10.0, CONFIRM_SPAN * 0.9, claim)
    assert estimator.restarts == 0 and estimator.refused["offset-jump"] == 180
    after = estimator.estimate(11.8)
    assert after is not None and abs(after.offset - before.offset) < 1e-4


def test_a_run_that_agrees_for_the_confirm_span_is_a_step_of_the_peer_clock() -> None:
    link = SimLink(uniform(), ppm=0.0, rate=40, seed=4)
    estimator = EnvelopeEstimator()
    for exchange in link.exchanges(10.0):
        estimator.add_exchange(exchange.t1, exchange.t2, exchange.t3, exchange.t4)
    _forged(estimator, 10.0, CONFIRM_SPAN + 0.1, 5.0)
    assert estimator.restarts == 1
    assert estimator.last_step == pytest.approx(5.0 - 0.15, abs=0.02)


def test_frequency_fit_optimum_is_kept_for_the_comparison() -> None:
    # benchmarks/clock_sync.py replays each run's exchanges through the fit before issue #11.
    link = SimLink(uniform(), ppm=30.0, rate=100, seed=7)
    mean, optimum = EnvelopeEstimator(), EnvelopeEstimator(frequency_fit="optimum")
    for exchange in link.exchanges(20.0):
        for estimator in (mean, optimum):
            estimator.add_exchange(exchange.t1, exchange.t2, exchange.t3, exchange.t4)
    a, b = mean.estimate(20.0), optimum.estimate(20.0)
    assert a is not None and b is not None
    assert a.frequency != b.frequency and a.frequency_bound == b.frequency_bound
    with pytest.raises(ValueError, match="frequency_fit"):
        EnvelopeEstimator(frequency_fit="median")
