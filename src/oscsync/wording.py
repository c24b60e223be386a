"""Counts in words for people: ``1 tick``, ``2 ticks`` (issue #13: ``sent 1 ticks`` read wrong)."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``"1 tick"``, ``"0 ticks"``, ``"3 ticks"``; ``plural_form`` for irregular words."""
    word = singular if count == 1 else (plural_form or singular + "s")
    return f"{count} {word}"
