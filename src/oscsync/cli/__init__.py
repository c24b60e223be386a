"""The command line: options, ``--help``, what is printed, and exit codes; no work.

Owns one module per command (:mod:`~oscsync.cli.main` lists them and imports each only when it
runs), the options several commands share (:mod:`~oscsync.cli.params`), running a session and
printing its records (:mod:`~oscsync.cli.records`), and what every command shares at run time:
the clock, notices, Ctrl-C and SIGTERM (:mod:`~oscsync.cli.runtime`). A command builds one
session or calls one function of :mod:`oscsync.apps` and prints what it reports.

May import ``apps`` and every package below it; only ``__main__`` imports it
(docs/architecture.md, "The layers").
"""
