"""OSCQuery JSON (keys from Vidvox/OSCQueryProposal) and the bounded HTTP server (issue 17)."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from oscsync.apps.chat import CHAT_METHOD
from oscsync.apps.metronome import TICK_METHOD
from oscsync.apps.sequence import VOICE_METHODS
from oscsync.discovery import oscquery
from oscsync.discovery.oscquery import LiveNamespace, OscQueryServer, answer, host_info, namespace
from oscsync.osc.routing import AddressRegistry, Method
from oscsync.sync.ping import PING, SERVICE_METHODS

# What a metronome listener's and a chat's endpoints register (tests/test_routing.py checks
# that the real sessions register these).
METRONOME = (SERVICE_METHODS[PING], TICK_METHOD)
CHAT = (SERVICE_METHODS[PING], CHAT_METHOD)


def get(server: OscQueryServer, target: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{target}", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def raw_request(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send ``data`` and read the whole reply (the server closes after answering)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(data)
        reply = b""
        try:
            while chunk := conn.recv(65536):
                reply += chunk
        except ConnectionResetError:  # closed by the server with our data unread
            pass
    return reply


@pytest.fixture
def server() -> Iterator[OscQueryServer]:
    tree = namespace(METRONOME)
    with OscQueryServer("127.0.0.1", tree, host_info("alice", 9001), request_timeout=0.5) as srv:
        yield srv


def test_namespace_has_the_documented_keys_for_each_method() -> None:
    tree = namespace(CHAT, "oscsync chat")
    assert tree["FULL_PATH"] == "/"
    assert tree["DESCRIPTION"] == "oscsync chat"
    chat = tree["CONTENTS"]["chat"]
    assert chat["FULL_PATH"] == "/chat"
    assert chat["TYPE"] == "s"  # OSCQuery TYPE is the tag string without the comma
    assert chat["ACCESS"] == oscquery.ACCESS_WRITE
    assert chat["DESCRIPTION"]
    # A nested address becomes containers: /oscsync/clock/ping
    container = tree["CONTENTS"]["oscsync"]
    assert container["FULL_PATH"] == "/oscsync"
    assert container["ACCESS"] == oscquery.ACCESS_NONE
    assert "TYPE" not in container
    assert container["CONTENTS"]["clock"]["CONTENTS"]["ping"]["TYPE"] == "it"


def test_host_info_has_name_port_transport_and_extensions() -> None:
    reply = answer("/anything?HOST_INFO", namespace(()), host_info("alice", 9001))
    assert reply.status == 200
    info = json.loads(reply.body)
    assert info["NAME"] == "alice"
    assert info["OSC_PORT"] == 9001
    assert info["OSC_TRANSPORT"] == "UDP"
    assert info["EXTENSIONS"]["ACCESS"] is True
    assert info["EXTENSIONS"]["LISTEN"] is False


def test_attribute_queries_return_only_that_attribute() -> None:
    tree = namespace(METRONOME)
    info = host_info("a", 1)
    assert json.loads(answer("/tick?TYPE", tree, info).body) == {"TYPE": "i"}
    assert json.loads(answer("/oscsync?TYPE", tree, info).body) == {}  # a container: no TYPE
    assert answer("/tick?VALUE", tree, info).status == 400  # unsupported attribute
    assert answer("/tick#fragment", tree, info).status == 200


def test_http_answers_parse_as_json(server: OscQueryServer) -> None:
    status, root = get(server, "/")
    assert status == 200
    assert root["CONTENTS"]["tick"]["FULL_PATH"] == "/tick"
    status, info = get(server, "/?HOST_INFO")
    assert (status, info["NAME"], info["OSC_PORT"]) == (200, "alice", 9001)
    assert get(server, "/tick")[1]["TYPE"] == "i"


def test_unknown_http_paths_404(server: OscQueryServer) -> None:
    assert get(server, "/nope")[0] == 404
    assert get(server, "/tick/deeper")[0] == 404
    assert get(server, "/tick")[0] == 200


def test_http_methods_other_than_get_and_head_are_refused(server: OscQueryServer) -> None:
    reply = raw_request(server.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
    assert reply.startswith(b"HTTP/1.1 405 ")
    head = raw_request(server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert head.endswith(b"\r\n\r\n")  # headers only


def test_huge_http_request_is_refused_431(server: OscQueryServer) -> None:
    huge = b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * (oscquery.MAX_REQUEST_BYTES + 10)
    reply = raw_request(server.port, huge)
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert server.rejected["request too large"] == 1


def test_too_many_http_headers_are_refused_431(server: OscQueryServer) -> None:
    headers = b"".join(b"X-%d: 1\r\n" % i for i in range(oscquery.MAX_HEADERS + 1))
    reply = raw_request(server.port, b"GET / HTTP/1.1\r\n" + headers + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 431 ")
    assert server.rejected["too many headers"] == 1


def test_malformed_request_line_is_400(server: OscQueryServer) -> None:
    assert raw_request(server.port, b"\x00\xff garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_request(server.port, b"GET http://x/ HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400")


@pytest.fixture
def thread_errors(monkeypatch: pytest.MonkeyPatch) -> list[BaseException | None]:
    """What escapes a thread (each would be a traceback on stderr, even with -q)."""
    errors: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: errors.append(args.exc_value))
    return errors


@pytest.mark.parametrize("target", [b"//[", b"/[", b"/tick]", b"/{a}", b'/"x"', b"/a\\b", b"/\x7f"])
def test_a_malformed_request_target_is_400_and_counted_never_a_traceback(
    server: OscQueryServer, thread_errors: list[BaseException | None], target: bytes
) -> None:
    """Issue 27, item 9: ``GET //[ HTTP/1.1`` printed a traceback per request (urlsplit read
    ``//`` as a host and raised): 3,689 in 5 s, even with -q."""
    for _ in range(3):
        reply = raw_request(server.port, b"GET " + target + b" HTTP/1.1\r\n\r\n")
        assert reply.startswith(b"HTTP/1.1 400 ")
    assert server.rejected["malformed request target"] == 3
    assert get(server, "/tick")[0] == 200
    assert thread_errors == []


def test_double_slashes_in_a_path_are_a_path(server: OscQueryServer) -> None:
    status, node = get(server, "//tick?ACCESS")
    assert (status, node) == (200, {"ACCESS": 2})


def test_a_request_the_server_cannot_answer_is_500_and_counted(
    thread_errors: list[BaseException | None],
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("a bug in building the namespace")

    with OscQueryServer("127.0.0.1", broken, host_info("a", 1)) as srv:
        assert raw_request(srv.port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500 ")
        assert raw_request(srv.port, b"GET / HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 500 ")
        assert srv.rejected["server error"] == 2
    assert thread_errors == []


def test_slow_http_request_is_cut_off_408(server: OscQueryServer) -> None:
    # The head never completes: the server answers 408 once its 0.5 s budget is spent and
    # closes, instead of holding a thread for as long as the client likes.
    reply = raw_request(server.port, b"GET / HTTP/1.1\r\nHost: x\r\n")
    assert reply.startswith(b"HTTP/1.1 408 ")
    assert server.rejected["too slow"] == 1
    assert get(server, "/")[0] == 200  # and it still serves others


def test_connections_beyond_the_cap_get_503() -> None:
    tree = namespace(())
    with OscQueryServer(
        "127.0.0.1", tree, host_info("a", 1), request_timeout=3.0, max_connections=2
    ) as srv:
        idle = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(2)]
        try:
            # The two idle connections hold both slots (each waits for its request head) ...
            for conn in idle:
                conn.sendall(b"GET / HTTP/1.1\r\n")
            reply = raw_request(srv.port, b"GET / HTTP/1.1\r\n\r\n")
            # Refused: a 503, or a reset when the request arrived after the refusal closed.
            assert reply.startswith(b"HTTP/1.1 503 ") or reply == b""
            assert srv.rejected["too many connections"] == 1
            assert srv.served == 0
        finally:
            for conn in idle:
                conn.close()


# -- the live registry (OSCQuery lists what the endpoint really answers to) -----------------


def _ignore(received: object) -> None:
    pass


def test_a_newly_registered_address_appears_in_the_oscquery_json() -> None:
    registry = AddressRegistry()
    registry.add_method(SERVICE_METHODS[PING], _ignore)
    with OscQueryServer("127.0.0.1", LiveNamespace(registry), host_info("a", 1)) as srv:
        assert get(srv, "/lights/dim")[0] == 404
        # Registered while the server runs, with no table to edit: listed from the next request.
        registry.add_method(Method("/lights/dim", "f", "dim the lights: level 0-1"), _ignore)
        status, node = get(srv, "/lights/dim")
        assert status == 200
        assert node == {
            "FULL_PATH": "/lights/dim",
            "TYPE": "f",
            "ACCESS": oscquery.ACCESS_WRITE,
            "DESCRIPTION": "dim the lights: level 0-1",
        }
        assert get(srv, "/")[1]["CONTENTS"]["lights"]["FULL_PATH"] == "/lights"
        assert get(srv, "/lights/dim?TYPE")[1] == {"TYPE": "f"}
        registry.remove("/lights/dim")
        assert get(srv, "/lights/dim")[0] == 404  # gone as soon as it is no longer answered


def test_an_unregistered_address_does_not_appear_in_the_oscquery_json() -> None:
    registry = AddressRegistry()
    registry.add_method(TICK_METHOD, _ignore)
    # A registered pattern answers many addresses but is no address itself: not a node.
    registry.add("/seq/*", _ignore, "fi", "any voice")
    tree = LiveNamespace(registry, "oscsync metronome")()
    assert set(tree["CONTENTS"]) == {"tick"}
    info = host_info("a", 1)
    for unregistered in ("/chat", "/seq/kick", "/seq/*", "/oscsync/clock/ping"):
        assert answer(unregistered, tree, info).status == 404, unregistered


def test_live_namespace_is_rebuilt_only_when_the_registry_changes() -> None:
    registry = AddressRegistry()
    registry.add_method(CHAT_METHOD, _ignore)
    live = LiveNamespace(registry)
    first = live()
    assert live() is first  # the same tree object: a request costs a comparison, not a build
    registry.add_method(VOICE_METHODS[0], _ignore)
    assert live() is not first and "seq" in live()["CONTENTS"]
