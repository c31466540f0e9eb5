"""The control protocol, fuzzed against a running vimaged: it answers with an error or
closes the connection, never dies, and `vimage -l` works afterwards.

A connection sends a few frames (requests with fuzzed ops, ids and fields, payloads that
are not JSON, lengths that lie or are over the limit), closes its sending side and reads
what comes back. Requests that would block a session by design (`sock.connect`,
`sock.accept`), stop the daemon (`stop`), or run tools that wait in real time are not
generated.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vimage.ctl import protocol
from vimage.ctl.client import daemon_pid
from vimage.ctl.ops import OPS
from vimage.ctl.sockops import OPS as SOCK_OPS

from ..ctl.conftest import Vimaged, private_daemon
from .conftest import fuzz_settings

pytestmark = pytest.mark.fuzz

NEVER = {"stop", "sock.connect", "sock.accept"}
OP_NAMES = tuple(sorted((set(OPS) | set(SOCK_OPS)) - NEVER))
FIELDS = ("name", "params", "recursive", "vnet", "ifname", "newname", "argv", "version",
          "client", "sid", "host", "port", "type", "proto", "backlog", "level", "option",
          "value", "buflen", "call", "args", "kwargs", "scope", "peer", "wait", "id", "op")
SAFE_TOOLS = ("ifconfig", "netstat", "route", "sysctl", "arp", "hosts", "vlink", "fault")
# the error codes protocol.py defines (upper-case string constants), less the client's own
CODES = {v for k, v in vars(protocol).items() if k.isupper() and isinstance(v, str)} - {
    protocol.UNAVAILABLE}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12)
    | st.sampled_from(("fz", "fz.a", "", ".", "..", "a/b", "epair0a", "lo0", "0", "-1",
                       "net.inet.ip.forwarding=1", "children.max=1")),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=3),
    max_leaves=10)
tool_argv = st.tuples(st.sampled_from(SAFE_TOOLS),
                      st.lists(st.sampled_from(("-a", "-n", "-s", "-l", "add", "delete",
                                                "epair0a", "10.0.0.1", "junk", "-Z", "é")),
                               max_size=4)).map(lambda t: [t[0], *t[1]])


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.one_of(st.sampled_from(OP_NAMES), st.text(max_size=10)))
    req: dict[str, Any] = {"id": draw(st.one_of(st.integers(0, 2**31), st.integers(),
                                                json_values)), "op": op}
    for key in draw(st.lists(st.one_of(st.sampled_from(FIELDS), st.text(max_size=6)),
                             max_size=4)):
        req[key] = draw(json_values)
    if op == "tool" and draw(st.booleans()):
        req["argv"] = draw(tool_argv)
    if isinstance(req.get("op"), str) and req["op"] in NEVER:  # a field may have replaced it
        req["op"] = "nop"
    return req


class Frame(NamedTuple):
    kind: str  # "json", "raw" (bytes that may not be JSON), "lie" (a length that lies)
    body: Any
    declared: int = 0

    def encode(self) -> bytes:
        if self.kind == "json":
            return protocol.encode(self.body)
        if self.kind == "raw":
            return protocol.HEADER.pack(len(self.body)) + self.body
        return protocol.HEADER.pack(self.declared) + self.body


frames = st.one_of(
    st.builds(Frame, st.just("json"), requests()),
    st.builds(Frame, st.just("json"), requests()),
    st.builds(Frame, st.just("raw"), st.one_of(
        st.binary(max_size=64), st.text(max_size=30).map(str.encode),
        st.sampled_from((b"{", b"[]", b"null", b'"hello"', b"{}", b'{"id":1}', b"\xff\xfe",
                         b'{"id": 1, "op": "nop"}' + b" " * 100, b"[" * 5000, b"NaN")))),
)
tails = st.one_of(
    st.none(), st.none(),
    st.builds(Frame, st.just("lie"), st.binary(max_size=16),
              st.one_of(st.integers(17, 1000), st.just(protocol.MAX_REQUEST + 1),
                        st.just(2**32 - 1))))


@pytest.fixture(scope="module")
def daemon() -> Iterator[Vimaged]:
    with private_daemon() as d:
        d.start()
        yield d


def exchange(d: Vimaged, hello: bool, sent: list[Frame], tail: Frame | None) -> list[Any]:
    """Send the frames, close our side, and read every reply until the daemon closes."""
    sock = d.raw()
    sock.settimeout(30)
    with contextlib.closing(sock):
        data = b""
        if hello:
            data += protocol.encode({"id": 0, "op": "hello", "version": protocol.VERSION})
        data += b"".join(f.encode() for f in sent) + (tail.encode() if tail else b"")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        replies = []
        with contextlib.suppress(ConnectionResetError):
            while True:
                frame = protocol.recv(sock, protocol.MAX_REPLY)
                if frame is None:
                    break
                obj, fds = frame
                protocol.close_fds(fds)
                replies.append(obj)
    return replies


def check_reply(reply: Any) -> None:
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        error = reply["error"]
        assert error["code"] in CODES, reply
        assert error["code"] != protocol.INTERNAL, reply  # an exception the daemon caught
        assert "\n" not in error["message"] and error["message"], reply


@fuzz_settings(50)
@given(hello=st.sampled_from((True, True, True, False)),
       sent=st.lists(frames, max_size=6), tail=tails)
def test_fuzz_control_protocol(daemon, hello, sent, tail):
    pid = daemon_pid(daemon.paths)
    replies = exchange(daemon, hello, sent, tail)
    assert len(replies) <= len(sent) + 2  # hello, each frame, and a last error at most
    for reply in replies:
        check_reply(reply)
    assert daemon_pid(daemon.paths) == pid, "the daemon went away"
    status, out, err = daemon.cli("-l")
    assert status == 0, (out, err)
