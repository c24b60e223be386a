"""Following a peer's clock: pings, the estimate of its offset and rate, and the servo.

Owns the clock ping and pong (:mod:`~oscsync.sync.ping`), the estimator of a peer clock's offset
and frequency (:mod:`~oscsync.sync.estimate`), the follower's continuous map onto our clock
(:mod:`~oscsync.sync.servo`), and the :class:`~oscsync.sync.follow.ClockFollower` that runs them
on an endpoint and translates the peer's timetags (:mod:`~oscsync.sync.follow`); a room of
followers on one leader, its multicast sync messages and status reports
(:mod:`~oscsync.sync.room`), and how often a follower there pings (:mod:`~oscsync.sync.poll`);
an Ableton Link session's beat timeline on oscsync's clock (:mod:`~oscsync.sync.link`).

May import the rows below it: ``net``, ``scheduler``, ``audio``, ``clock``, ``terminal``, ``osc``,
``stats``, ``threads``, ``install``; not ``discovery`` or ``files`` beside it
(docs/architecture.md, "The layers").
"""
