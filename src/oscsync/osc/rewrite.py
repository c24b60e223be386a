"""Address rewriting: ``--map`` rules that turn a received message into the one an application
expects (``/tick`` into SuperCollider's ``/s_new``, TouchOSC's ``/1/led1``, ...).

A rule is one line of text, ``PATTERN[=ADDRESS [ARG ...]]``:

* ``/tick`` — pass ``/tick`` on unchanged;
* ``/tick=/beat`` — rename it, with the arguments it came with;
* ``/tick=/s_new s:tick i:-1 i:0 i:0 s:beat i:$1`` — a new message built from a template.

``PATTERN`` is an OSC 1.0 address pattern (``/seq/*``, ``/{tick,beat}``) matched against each
received address (:func:`oscsync.osc.routing.matches`). A template argument is

* ``TYPE:VALUE``, a literal: ``i:-1`` (int32), ``h:7`` (int64), ``f:0.5`` (float32),
  ``d:0.5`` (float64), ``s:tick`` (string; ``s:"two words"``, ``s:$$`` for a literal ``$``);
* ``TYPE:$N``, the received argument N (from 1) converted to TYPE (numbers to numbers, a float
  to an int by rounding, anything printable to a string);
* ``$N``, the received argument N with its own type; ``$*``, every received argument as it came;
* ``T``, ``F``, ``N``: true, false, nil (no value).

Parsing refuses anything else with one line (:class:`RuleError`); the limits below bound what a
rule may cost. At run time a message that a rule cannot fill (argument N missing, a string where
a number is wanted, an int out of range) is not sent: :meth:`Rewriter.rewrite` raises
:class:`RewriteError`, whose ``reason`` is a short key for drop counters.
"""

from __future__ import annotations

import math
import re
import shlex
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from oscsync.osc import codec
from oscsync.osc.routing import MAX_PATTERN_LENGTH, AddressPattern, is_pattern

MAX_RULES = 64
MAX_RULE_LENGTH = 1024
MAX_TEMPLATE_ARGS = 64
MAX_ARG_NUMBER = 999
"""``$N`` goes up to this (an OSC message holds at most a datagram's worth of arguments)."""

LITERAL_TYPES = "ihfds"
"""Types a template argument may name with a value (``i:1``)."""
FLAG_TYPES = "TFN"
"""Types that are a whole template argument on their own (no value)."""
_INT_RANGES = {"i": (-(2**31), 2**31 - 1), "h": (-(2**63), 2**63 - 1)}
_ARG_NUMBER = re.compile(r"\$([1-9][0-9]{0,2})")


class RuleError(ValueError):
    """A ``--map`` rule that cannot be used; the message is one line for the user."""


class RewriteError(ValueError):
    """A message a rule cannot fill; ``reason`` is a short key for drop counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True)
class TemplateArg:
    """One argument of a template: a literal (``value``), received argument ``index`` (from 0)
    converted to ``tag`` (``tag`` empty: as it came), or every received argument (``spread``)."""

    tag: str
    value: Any = None
    index: int | None = None
    spread: bool = False


@dataclass(frozen=True)
class Rule:
    """``pattern`` → ``address`` (None: unchanged) with ``template`` (None: the args as they
    came); ``text`` is the rule as written."""

    text: str
    pattern: str
    address: str | None = None
    template: tuple[TemplateArg, ...] | None = None
    compiled: AddressPattern | None = field(default=None, compare=False, repr=False)

    def takes(self, address: str, incoming: AddressPattern | None = None) -> bool:
        """Whether this rule's pattern matches ``address``; ``incoming`` is ``address`` as
        :func:`incoming_pattern` compiled it, given by :class:`Rewriter` so that a message is
        compiled once, not once per rule (None: compiled here if it is a pattern)."""
        if address == self.pattern:
            return True
        if self.compiled is not None and is_pattern(self.pattern):
            return self.compiled.matches(address)
        if incoming is None:
            incoming = incoming_pattern(address)
        # OSC 1.0: an incoming pattern reaches every address it matches, this one included.
        return incoming is not None and incoming.matches(self.pattern)

    def rewrite(self, message: codec.Message) -> codec.Message:
        """The message to send for ``message`` (which this rule's pattern matched)."""
        address = message.address if self.address is None else self.address
        if self.template is None:
            return message._replace(address=address)
        values: list[Any] = []
        tags: list[str] = []
        for arg in self.template:
            if arg.spread:  # every type is sent as it came (issue 28: arrays, S c t r I too)
                values.extend(message.args)
                tags.append(message.types)
            elif arg.index is None:
                values.append(arg.value)
                tags.append(arg.tag)
            else:
                if arg.index >= len(message.args):
                    raise RewriteError(
                        "map-missing-arg",
                        f"{self.text!r} wants argument {arg.index + 1}, "
                        f"{message.address} has {len(message.args)}",
                    )
                value = message.args[arg.index]
                tag = codec.top_level_tags(message.types)[arg.index]
                if arg.tag:
                    values.append(_convert(value, tag, arg.tag))
                    tags.append(arg.tag)
                else:
                    values.append(value)
                    tags.append(tag)
        return codec.Message(address, tuple(values), "".join(tags), message.timetag)


def incoming_pattern(address: str) -> AddressPattern | None:
    """A received address compiled, when it is a pattern a rule may match (None otherwise)."""
    if is_pattern(address) and len(address) <= MAX_PATTERN_LENGTH:
        return AddressPattern(address)
    return None


def _convert(value: Any, tag: str, wanted: str) -> Any:
    """A received argument (of type ``tag``) as type ``wanted``, or RewriteError."""
    if wanted == "s":
        if isinstance(value, str):
            return value
        if isinstance(value, bool) or value is None or isinstance(value, (bytes, bytearray)):
            raise RewriteError("map-type", f"a {tag!r} argument cannot become a string")
        if isinstance(value, (int, float)):
            return repr(value)
        raise RewriteError("map-type", f"a {tag!r} argument cannot become a string")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RewriteError("map-type", f"a {tag!r} argument is not a number ({wanted!r} wanted)")
    if wanted in "fd":
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RewriteError("map-range", f"{value!r} is not a whole number")
        value = round(value)  # Pure Data sends every number as a float: beat 2 is 2.0
    low, high = _INT_RANGES[wanted]
    if not low <= value <= high:
        raise RewriteError("map-range", f"{value} does not fit type {wanted!r}")
    return value


# -- parsing ----------------------------------------------------------------------------------


def _check_address(address: str, what: str, forbidden: str) -> None:
    if not address.startswith("/"):
        raise RuleError(f"{what} {address!r} must start with '/'")
    if len(address) > MAX_PATTERN_LENGTH:
        raise RuleError(f"{what} is longer than {MAX_PATTERN_LENGTH} characters")
    bad = sorted({ch for ch in address if ch in forbidden or not ch.isprintable()})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        raise RuleError(f"{what} {address!r} may not hold {shown}")


def _literal(tag: str, text: str, token: str) -> Any:
    if tag == "s":
        # A string is taken as written; "$$" at its start stands for one "$" (so that "$1" can
        # be written as a literal: s:$$1).
        return "$" + text[2:] if text.startswith("$$") else text
    kind = "an int" if tag in _INT_RANGES else "a number"
    try:
        # Bounded before converting: int() of thousands of digits is slow, and no OSC number
        # needs more than 24 characters.
        number: Any = (int if tag in _INT_RANGES else float)(text) if len(text) <= 24 else None
    except ValueError:
        number = None
    if number is None:
        raise RuleError(f"{token!r}: {text!r} is not {kind}")
    if tag in _INT_RANGES:
        low, high = _INT_RANGES[tag]
        if not low <= number <= high:
            raise RuleError(f"{token!r}: {number} does not fit type {tag!r}")
    elif not math.isfinite(number):
        raise RuleError(f"{token!r}: give a finite number")
    elif tag == "f" and not _fits_float32(number):
        # Would fail to encode with every message the rule takes: said once, now.
        raise RuleError(f"{token!r}: {text} does not fit type 'f' (float32; use d:)")
    return number


def _fits_float32(number: float) -> bool:
    try:
        struct.pack(">f", number)  # what the encoder does (codec._encode_arg)
    except OverflowError:
        return False
    return True


_NUMBERS_HINT = f"argument numbers go from $1 to ${MAX_ARG_NUMBER}"


def _template_arg(token: str) -> TemplateArg:
    if token == "$*":
        return TemplateArg("", spread=True)
    if token in FLAG_TYPES:
        return TemplateArg(token, {"T": True, "F": False, "N": None}[token])
    if token.startswith("$"):
        number = _ARG_NUMBER.fullmatch(token)
        if number is None:
            raise RuleError(f"{token!r}: {_NUMBERS_HINT}, or $* for all of them")
        return TemplateArg("", index=int(number.group(1)) - 1)
    tag, colon, text = token.partition(":")
    if not colon or len(tag) != 1 or tag not in LITERAL_TYPES:
        raise RuleError(
            f"{token!r} is not a template argument: write TYPE:VALUE (TYPE one of "
            f"{', '.join(LITERAL_TYPES)}), TYPE:$N, $N, $* or one of T F N"
        )
    if text.startswith("$") and not text.startswith("$$"):
        reference = _ARG_NUMBER.fullmatch(text)
        if reference is None:
            hint = " (write $$ for a literal '$')" if tag == "s" else ""
            raise RuleError(f"{token!r}: {_NUMBERS_HINT}{hint}")
        return TemplateArg(tag, index=int(reference.group(1)) - 1)
    return TemplateArg(tag, _literal(tag, text, token))


def parse_rule(text: str) -> Rule:
    """One ``--map`` rule (see the module docstring); RuleError says what is wrong."""
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"a --map rule is at most {MAX_RULE_LENGTH} characters")
    if not text.isprintable():
        raise RuleError("a --map rule may not hold control characters")
    pattern, equals, rest = text.strip().partition("=")
    pattern = pattern.strip()
    _check_address(pattern, "pattern", " #")
    compiled = AddressPattern(pattern)
    if not compiled.valid:
        raise RuleError(f"pattern {pattern!r} has an unclosed '[' or '{{'")
    if not equals:
        return Rule(text, pattern, compiled=compiled)
    try:
        tokens = shlex.split(rest, comments=False, posix=True)
    except ValueError as exc:  # an unclosed quote
        raise RuleError(f"{text!r}: {exc}") from None
    if not tokens:
        raise RuleError(f"{text!r}: give an address after '=' (or leave out '=' to pass it on)")
    address, *arguments = tokens
    # What the encoder refuses in an address (codec.encode_message), said now, not per message;
    # ',' it takes (a pattern sent on: /{kick,snare}).
    _check_address(address, "address", " \t#")
    if not arguments:
        return Rule(text, pattern, address, compiled=compiled)
    if len(arguments) > MAX_TEMPLATE_ARGS:
        raise RuleError(f"a template holds at most {MAX_TEMPLATE_ARGS} arguments")
    template = tuple(_template_arg(token) for token in arguments)
    return Rule(text, pattern, address, template, compiled=compiled)


class Rewriter:
    """Rules in order: a message takes the first rule whose pattern matches its address. With no
    rules every message passes unchanged; with rules, a message none matches is not sent."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        if len(rules) > MAX_RULES:
            raise RuleError(f"at most {MAX_RULES} --map rules")
        seen: set[str] = set()
        for rule in rules:
            if rule.pattern in seen:
                raise RuleError(f"{rule.pattern} is mapped twice (the first rule would win)")
            seen.add(rule.pattern)
        self.rules = tuple(rules)

    def rewrite(self, message: codec.Message) -> codec.Message | None:
        """What to send for ``message`` (None: no rule takes it); RewriteError if its rule
        cannot be filled from it."""
        if not self.rules:
            return message
        address = message.address
        # Compiled once per message, not once per rule: /x/* through 64 rules took 125 µs a
        # message compiled per rule, 25 µs compiled once (a flood of patterns, a loaded VM).
        incoming = incoming_pattern(address)
        for rule in self.rules:
            if rule.takes(address, incoming):
                return rule.rewrite(message)
        return None
