"""The control protocol: every bad request gets an error reply, and the daemon goes on."""

from __future__ import annotations

import os
import socket

import pytest

from vimage.ctl import protocol
from vimage.ctl.client import daemon_pid

from .conftest import hello, recv_frame, send_frame, until


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_hello_reports_version_and_scope(shared_vimaged):
    with shared_vimaged.raw() as sock:
        reply = hello(sock)
    assert reply["version"] == protocol.VERSION
    assert reply["vnet"] == "vnet0" and reply["scoped"] is False
    assert reply["pid"] == daemon_pid(shared_vimaged.paths)


def test_wrong_version_is_refused_and_the_connection_closed(shared_vimaged):
    with shared_vimaged.raw() as sock:
        send_frame(sock, {"id": 1, "op": "hello", "version": 99})
        reply = recv_frame(sock)
        assert reply["ok"] is False and reply["id"] == 1
        assert reply["error"]["code"] == "version"
        assert "99" in reply["error"]["message"] and "1" in reply["error"]["message"]
        assert recv_frame(sock) is None  # closed
    with shared_vimaged.client() as c:  # and the daemon is fine
        assert c.request("nop") == {}


def test_requests_before_hello_are_refused(shared_vimaged):
    with shared_vimaged.raw() as sock:
        send_frame(sock, {"id": 1, "op": "list"})
        reply = recv_frame(sock)
        assert reply["error"]["code"] == "no-hello"
        hello(sock)
        send_frame(sock, {"id": 2, "op": "nop"})
        assert recv_frame(sock) == {"id": 2, "ok": True}


@pytest.mark.parametrize(("payload", "code"), [
    (b"{not json", "malformed"),
    (b"", "malformed"),
    (b"\xff\xfe", "malformed"),
    (b"[1, 2]", "malformed"),
    (b'"hello"', "malformed"),
    (b'{"op": "nop"}', "malformed"),  # no id
    (b'{"id": "7", "op": "nop"}', "malformed"),
    (b'{"id": true, "op": "nop"}', "malformed"),
    (b'{"id": 7}', "malformed"),  # no op
    (b'{"id": 7, "op": "format-disk"}', "unknown-op"),
    (b'{"id": 7, "op": "nop", "scope": ""}', "bad-request"),
    (b'{"id": 7, "op": "create", "name": 5}', "bad-request"),
    (b'{"id": 7, "op": "create", "name": "a/b"}', "bad-request"),
    (b'{"id": 7, "op": "tool", "argv": "ifconfig"}', "bad-request"),
    (b'{"id": 7, "op": "tool", "argv": []}', "bad-request"),
    (b'{"id": 7, "op": "list", "recursive": "yes"}', "bad-request"),
    (b"[" * 100_000 + b"]" * 100_000, "malformed"),  # deeper than the parser goes
    (b'{"id": 7, "op": "nop", "n": 1' + b"0" * 5000 + b"}", "malformed"),
])
def test_bad_requests_get_an_error_reply_and_the_connection_goes_on(shared_vimaged, payload,
                                                                     code):
    with shared_vimaged.raw() as sock:
        hello(sock)
        sock.sendall(protocol.HEADER.pack(len(payload)) + payload)
        reply = recv_frame(sock)
        assert reply["ok"] is False and reply["error"]["code"] == code, reply
        assert "\n" not in reply["error"]["message"] and reply["error"]["message"]
        send_frame(sock, {"id": 8, "op": "nop"})
        assert recv_frame(sock) == {"id": 8, "ok": True}


def test_an_oversized_frame_is_refused_without_being_read(shared_vimaged):
    with shared_vimaged.raw() as sock:
        hello(sock)
        sock.sendall(protocol.HEADER.pack(protocol.MAX_REQUEST + 1) + b"{")
        reply = recv_frame(sock)
        assert reply["error"]["code"] == "too-big"
        assert str(protocol.MAX_REQUEST) in reply["error"]["message"]
        assert recv_frame(sock) is None
    with shared_vimaged.raw() as sock:  # a frame at the limit is read (and judged)
        hello(sock)
        prefix, suffix = b'{"id": 3, "op": "nop", "pad": "', b'"}'
        body = prefix + b"x" * (protocol.MAX_REQUEST - len(prefix) - len(suffix)) + suffix
        assert len(body) == protocol.MAX_REQUEST
        sock.sendall(protocol.HEADER.pack(len(body)) + body)
        reply = recv_frame(sock)
        assert reply["id"] == 3 and reply["error"]["code"] == "bad-request"  # field "pad"


def test_descriptors_on_a_request_that_takes_none_are_refused_and_closed(shared_vimaged):
    pid = daemon_pid(shared_vimaged.paths)
    with shared_vimaged.raw() as sock:
        hello(sock)

        def alone() -> bool:  # earlier connections are closed on the daemon's side too
            send_frame(sock, {"id": 1, "op": "status"})
            return recv_frame(sock)["connections"] == 1

        assert until(alone)
        before = fd_count(pid)
        r, w = os.pipe()
        try:
            protocol.send(sock, {"id": 4, "op": "nop"}, [r, w])
        finally:
            os.close(r)
            os.close(w)
        reply = recv_frame(sock)
        assert reply["error"]["code"] == "bad-request"
        assert fd_count(pid) == before


def test_a_client_dying_mid_frame_or_mid_request_costs_nothing(shared_vimaged):
    daemon = shared_vimaged
    pid = daemon_pid(daemon.paths)
    daemon.ok("-c", "dying")
    with daemon.client() as c:
        baseline = c.request("status")["connections"]
        fds = fd_count(pid)
        # half a frame, then gone
        sock = daemon.raw()
        hello(sock)
        sock.sendall(protocol.HEADER.pack(100) + b'{"id": 1')
        sock.close()
        # a request that takes a while (ping waits for its reply), then gone
        sock = daemon.raw()
        hello(sock)
        send_frame(sock, {"id": 2, "op": "tool", "vnet": "dying",
                          "argv": ["ping", "-c", "1", "-t", "1", "127.0.0.2"]})
        sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        # others are served meanwhile, and the daemon ends up where it was
        assert c.request("nop") == {}
        assert until(lambda: c.request("status")["connections"] == baseline)
        assert until(lambda: fd_count(pid) == fds)
    daemon.ok("-d", "dying")


def test_replies_carry_the_request_id(shared_vimaged):
    with shared_vimaged.raw() as sock:
        hello(sock)
        for rid in (5, 1 << 40, -3):
            send_frame(sock, {"id": rid, "op": "nop"})
            assert recv_frame(sock)["id"] == rid


def test_a_session_of_mixed_garbage_leaves_the_daemon_serving(shared_vimaged):
    with shared_vimaged.raw() as sock:
        for payload in (b"\x00" * 10, b"{}", b"null"):
            sock.sendall(protocol.HEADER.pack(len(payload)) + payload)
            assert recv_frame(sock)["ok"] is False
    with shared_vimaged.client() as c:
        assert c.request("status")["pid"] == daemon_pid(shared_vimaged.paths)
