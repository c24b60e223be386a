"""The work each command does, as objects a script can use too; nothing here prints.

Owns one module per command's behaviour (:mod:`~oscsync.apps.dump`,
:mod:`~oscsync.apps.metronome`, :mod:`~oscsync.apps.netem`, ...), the sessions that wire an
endpoint, a scheduler, a clock follower and a player together (:mod:`~oscsync.apps.receiving`,
:mod:`~oscsync.apps.sessions`), the public :class:`~oscsync.apps.endpoints.Endpoint`,
:class:`~oscsync.apps.grid.Grid` and :class:`~oscsync.apps.playing.SoundPlayer`, and the lab
with its scoring and tables. Notices and warnings go to the callables a session is given;
a failure the user must see is an exception with a one-line message.

May import every package below it (``sync``, ``discovery``, ``files``, ``net``, ``scheduler``,
``audio``, ``clock``, ``terminal``, ``osc``, ``stats``, ``threads``, ``install``), never ``cli``
(docs/architecture.md, "The layers").
"""
