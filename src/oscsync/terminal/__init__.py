"""Text for a person at a terminal: safe to print, easy to read, redrawn in place.

Owns escaping what the network sent and turning received OSC into text
(:mod:`~oscsync.terminal.display`), the live status line (:mod:`~oscsync.terminal.liveline`),
printing above a line being typed (:mod:`~oscsync.terminal.console`), and counts and warnings in
words (:mod:`~oscsync.terminal.wording`).

May import only the bottom row (``osc``, ``stats``, ``threads``, ``install``): nothing here moves
packets or reads the time (docs/architecture.md, "The layers").
"""
