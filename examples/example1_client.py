"""Example 1: chat over OSC with Pure Data (pd/example1_client.pd) or another chat.

Each line you type is sent as /chat; each /chat that arrives is printed.
Run:  python examples/example1_client.py      (type lines; Ctrl-D or Ctrl-C quits)
"""

import sys

import oscsync

IP = "127.0.0.1"  # where the other side listens ("127.0.0.1": this machine)
SEND_PORT = 9000  # pd/example1_client.pd listens on 9000 ...
LISTEN_PORT = 9001  # ... and sends to 9001

# `python example1_client.py 9100 9101` uses other ports (SEND_PORT LISTEN_PORT).
if len(sys.argv) > 2:
    SEND_PORT, LISTEN_PORT = int(sys.argv[1]), int(sys.argv[2])


def show(received):
    # Pure Data sends "hello world" as two strings: join them. escape(): text from the
    # network could hold terminal control codes.
    words = " ".join(str(arg) for arg in received.args)
    print(f"[{received.source[0]}] {oscsync.escape(words)}", flush=True)


with oscsync.Endpoint(listen=LISTEN_PORT, peers=f"{IP}:{SEND_PORT}") as endpoint:
    endpoint.on("/chat", show)
    print(f"chat: listening on {endpoint.local_address}, sending to {IP}:{SEND_PORT}", flush=True)
    for line in sys.stdin:
        endpoint.send("/chat", line.rstrip("\n"))
