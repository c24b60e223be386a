"""Example 3's companion: the current time as an OSC timetag, in each of its spellings.

An OSC timetag is NTP time: seconds since 1900-01-01 UTC in the high 32 bits, fractions of a
second (units of 2^-32 s, ~233 ps) in the low 32. python-osc takes Unix seconds (since 1970) as
a float; oscsync keeps the exact 64-bit integer.
Run:  python examples/example3_print_timestamp.py
"""

import sys

import oscsync

timetagOffset = 0.1  # seconds: what example3_client.py adds to each tick's timetag

if len(sys.argv) > 1:  # `python example3_print_timestamp.py 0.25` (OFFSET)
    timetagOffset = float(sys.argv[1])

now = oscsync.now()
later = oscsync.add_seconds(now, timetagOffset)
for label, tag in (("now", now), (f"now + {timetagOffset:g} s", later)):
    seconds, fraction = tag >> 32, tag & 0xFFFFFFFF
    print(f"{label}:")
    print(f"  timetag     {seconds:08x}.{fraction:08x}   (hex, as liblo and oscsync dump show it)")
    print(f"  NTP         {seconds} s + {fraction}/2^32 s since 1900-01-01 UTC")
    print(f"  Unix        {oscsync.to_unix(tag):.6f} s since 1970 (python-osc's float)")
