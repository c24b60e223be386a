"""Finding peers by name on the local network: zeroconf ``@NAME`` and OSCQuery.

Owns multicast DNS as oscsync uses it (:mod:`~oscsync.discovery.mdns`: service types, names,
interfaces, TXT records), browsing and resolving (:mod:`~oscsync.discovery.browsing`), following a
name that moves (:mod:`~oscsync.discovery.follower`), advertising a listener
(:mod:`~oscsync.discovery.advertiser`) and the OSCQuery description of what it answers to
(:mod:`~oscsync.discovery.oscquery`). zeroconf is imported only when a name is used.

May import the rows below it: ``net``, ``scheduler``, ``audio``, ``clock``, ``terminal``, ``osc``,
``stats``, ``threads``, ``install``; not ``sync`` or ``files`` beside it (docs/architecture.md,
"The layers").
"""
