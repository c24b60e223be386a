"""The files oscsync reads and writes: recordings, packet captures, pattern files.

Owns the recording format, datagrams kept byte-exact with their arrival times
(:mod:`~oscsync.files.recording`), reading and writing pcap and pcapng captures
(:mod:`~oscsync.files.pcap`), and the sequencer's pattern files (:mod:`~oscsync.files.pattern`).
Reading a file is bounded and reports what it skipped; sending or playing what was read is the
apps' work.

May import the rows below it: ``net``, ``scheduler``, ``audio``, ``clock``, ``terminal``, ``osc``,
``stats``, ``threads``, ``install``; not ``sync`` or ``discovery`` beside it
(docs/architecture.md, "The layers").
"""
