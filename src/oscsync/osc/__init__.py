"""OSC itself, with no socket and no clock: what a packet is, as bytes and as values.

Owns timetags, exactly (:mod:`~oscsync.osc.timetag`), packets to and from bytes
(:mod:`~oscsync.osc.codec`), and which handler answers which address, patterns included, with
the :class:`~oscsync.osc.routing.Received` record a handler gets (:mod:`~oscsync.osc.routing`).

May import nothing else of oscsync: it is the bottom row of the layers (docs/architecture.md),
beside ``stats``, ``threads`` and ``install``.
"""
