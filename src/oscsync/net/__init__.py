"""Moving OSC packets: the transports, UDP and TCP, and what their sockets share.

Owns the :class:`~oscsync.net.core.Transport` protocol and the receive core every transport
feeds (:mod:`~oscsync.net.core`); UDP (:mod:`~oscsync.net.udp`, :mod:`~oscsync.net.udpsocket`);
TCP (:mod:`~oscsync.net.tcpendpoint`, :mod:`~oscsync.net.tcplistener`,
:mod:`~oscsync.net.tcpsender`, :mod:`~oscsync.net.tcpsocket`, and the stream framing in
:mod:`~oscsync.net.framing`); the selector every socket loop waits on
(:mod:`~oscsync.net.selector`), binding listening sockets (:mod:`~oscsync.net.listening`) and
``[HOST:]PORT`` text (:mod:`~oscsync.net.hostport`).

May import the rows below it: ``clock``, ``terminal``, ``osc``, ``stats``, ``threads``,
``install``. It knows no clock protocol (``sync``), no names (``discovery``) and no app: those
register their addresses on a transport from above (docs/architecture.md, "The layers").
"""
