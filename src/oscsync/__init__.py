"""oscsync: Open Sound Control with exact timetags, for networked music in time.

Import the module that holds the concept you need: :mod:`oscsync.osc.timetag`, :mod:`oscsync.clock`,
:mod:`oscsync.osc.codec`, :mod:`oscsync.net.udp`, :mod:`oscsync.scheduler`.
"""

__version__ = "0.1.0"
