"""Options for commands that run a :class:`~oscsync.scheduler.Scheduler`: --late, --horizon."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from oscsync.cli.params import DurationType, ParsedType, parse_duration
from oscsync.scheduler import DEFAULT_HORIZON, KEEP, LatePolicy

F = TypeVar("F", bound=Callable[..., Any])


def parse_late_policy(text: str) -> LatePolicy:
    """``keep`` (run late bundles at once, count them) or ``drop:DURATION`` (e.g. ``drop:5ms``)."""
    value = text.strip().lower()
    if value == "keep":
        return KEEP
    kind, _, bound = value.partition(":")
    if kind != "drop" or not bound:
        raise ValueError(f"{text!r} is not a late policy: use 'keep' or 'drop:DURATION' (drop:5ms)")
    seconds = parse_duration(bound)
    if seconds < 0:
        raise ValueError(f"{text!r}: the drop bound cannot be negative")
    return LatePolicy(drop_after=seconds)


class LatePolicyType(ParsedType):
    """``keep`` or ``drop:DURATION``."""

    name = "late-policy"
    metavar = "keep|drop:DURATION"
    parsed = (LatePolicy,)

    def parse(self, text: str) -> Any:
        return parse_late_policy(text)


LATE_POLICY = LatePolicyType()


def late_option() -> Callable[[F], F]:
    return click.option(
        "--late",
        "late_policy",
        type=LATE_POLICY,
        default=None,
        help="What to do with a bundle whose timetag has passed: 'keep' runs it at once and "
        "counts it late (OSC 1.0; the default), 'drop:5ms' drops bundles more than 5 ms late.",
    )


def horizon_option() -> Callable[[F], F]:
    return click.option(
        "--horizon",
        type=DurationType(minimum=0.0),
        default=None,
        help=f"Refuse bundles timetagged further ahead than this [default: {DEFAULT_HORIZON:g}s].",
    )
