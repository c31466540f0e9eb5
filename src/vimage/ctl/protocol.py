"""The control protocol: length-prefixed JSON frames over a unix stream socket.

A frame is a 4-byte big-endian length and that many bytes of UTF-8 JSON (one
object). Descriptors travel with a frame as SCM_RIGHTS ancillary data on its first
byte. docs/vimage.md describes the requests and replies; this module only moves
frames and knows the limits.
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import struct
import time
from typing import Any

VERSION = 1
"""Protocol version, exchanged in the hello; a daemon answers other versions with an error."""

MAX_REQUEST = 1 << 20
"""Largest request frame (bytes of JSON) a daemon reads; a larger one is refused."""

MAX_REPLY = 64 << 20
"""Largest reply frame a client reads."""

MAX_FDS = 16
"""Most descriptors one frame may carry."""

FRAME_TIMEOUT = 10.0
"""Seconds a frame has, from its first byte, to arrive whole (and a reply to be taken);
the daemon closes a connection that takes longer (`vimaged --frame-timeout`)."""

MAX_STDIN = 512 << 10
"""Most bytes of standard input a client forwards with a `tool` request (`tcpdump -r -`):
base64 of this much, with the rest of the request, stays under MAX_REQUEST."""

HEADER = struct.Struct("!I")

# error codes (docs/vimage.md lists them with their meaning)
MALFORMED = "malformed"
TOO_BIG = "too-big"
BAD_VERSION = "version"
NO_HELLO = "no-hello"
UNKNOWN_OP = "unknown-op"
BAD_REQUEST = "bad-request"
PERMISSION = "permission"
NOT_FOUND = "not-found"
EXISTS = "exists"
BUSY = "busy"
FAILED = "failed"
INTERNAL = "internal"
MOVED = "moved"  # served by another daemon: `detail` names its socket and host
UNAVAILABLE = "unavailable"  # client side only: no daemon, or it went away


class CtlError(Exception):
    """An error reply (or a client-side failure) with a code and a one-line message."""

    def __init__(self, code: str, message: str, fatal: bool = False,
                 detail: dict[str, Any] | None = None) -> None:
        super().__init__(one_line(message))
        self.code = code
        self.message = one_line(message)
        self.fatal = fatal  # the connection cannot go on (framing lost, or refused)
        self.detail = detail  # machine-readable extras (`moved`: socket, host, rank)

    def reply(self, rid: Any = None) -> dict[str, Any]:
        reply = error_reply(rid, self.code, self.message)
        if self.detail:
            reply["error"]["detail"] = self.detail
        return reply


def one_line(text: object) -> str:
    """`text` as a single line (messages are shown to users as one line), and text:
    non-UTF-8 bytes in it (a path, say) are shown escaped, so it can always be sent."""
    return " ".join(shown(str(text)).split()) or "error"


def error_reply(rid: Any, code: str, message: str) -> dict[str, Any]:
    return {"id": rid, "ok": False, "error": {"code": code, "message": one_line(message)}}


def shown(text: str) -> str:
    """`text` for a message: bytes that are not UTF-8 (a command line's, decoded with
    surrogateescape as Python does) appear as `\\xff`."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def not_text(obj: Any) -> str | None:
    """The first string in `obj` (a JSON-able value) that is not valid Unicode text, i.e.
    holds surrogates: non-UTF-8 bytes of argv, the environment or a path."""
    if isinstance(obj, str):
        try:
            obj.encode()
        except UnicodeEncodeError:
            return obj
        return None
    if isinstance(obj, dict):
        parts: list[Any] = [*obj, *obj.values()]
    elif isinstance(obj, list | tuple):
        parts = list(obj)
    else:
        return None
    for part in parts:
        bad = not_text(part)
        if bad is not None:
            return bad
    return None


def encode(obj: dict[str, Any]) -> bytes:
    """One frame. CtlError (bad-request) if a string in `obj` is not valid UTF-8: frames
    carry text, and a lone surrogate would be neither UTF-8 nor what the user typed."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        payload = text.encode()
    except UnicodeEncodeError:
        bad = not_text(obj)
        raise CtlError(BAD_REQUEST, f"'{shown(bad or '')}' is not valid UTF-8 (the vimage "
                                    "control protocol carries text)") from None
    return HEADER.pack(len(payload)) + payload


def send(sock: socket.socket, obj: dict[str, Any], fds: list[int] | tuple[int, ...] = ()) -> None:
    """Send one frame, with `fds` attached to its first byte."""
    data = encode(obj)
    if fds:
        sent = sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                      array.array("i", fds))])
        data = data[sent:]
    if data:
        sock.sendall(data)


class FrameTimeout(TimeoutError):
    """A frame was begun and not finished in time (see FRAME_TIMEOUT)."""


class _FrameClock:
    """How long the rest of a frame may take once its first byte is in: until then the
    socket's own timeout applies (an idle connection between frames is no fault)."""

    __slots__ = ("deadline", "saved", "seconds", "sock")

    def __init__(self, sock: socket.socket, seconds: float | None) -> None:
        self.sock = sock
        self.seconds = seconds
        self.saved = sock.gettimeout()
        self.deadline: float | None = None

    def before_read(self) -> None:
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise FrameTimeout(f"a frame was not finished within {self.seconds} s")
        self.sock.settimeout(left)

    def got_data(self) -> None:
        if self.deadline is None and self.seconds is not None:
            self.deadline = time.monotonic() + self.seconds

    def restore(self) -> None:
        if self.deadline is not None:
            self.sock.settimeout(self.saved)


def _recv_exact(sock: socket.socket, n: int, fds: list[int],
                clock: _FrameClock) -> bytes | None:
    """Read exactly n bytes (collecting descriptors); None on EOF before the first byte."""
    buf = bytearray()
    space = socket.CMSG_SPACE(MAX_FDS * 4)
    while len(buf) < n:
        clock.before_read()
        try:
            data, anc, flags, _ = sock.recvmsg(n - len(buf), space)
        except TimeoutError:
            if clock.deadline is None:
                raise
            raise FrameTimeout(f"a frame was not finished within {clock.seconds} s") from None
        fds.extend(take_fds(anc))
        if flags & socket.MSG_CTRUNC:
            raise CtlError(BAD_REQUEST, f"more than {MAX_FDS} descriptors in one frame",
                           fatal=True)
        if not data:
            if not buf:
                return None
            raise ConnectionError("connection closed in the middle of a frame")
        clock.got_data()
        buf += data
    return bytes(buf)


def take_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of SCM_RIGHTS ancillary data."""
    fds: list[int] = []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            arr = array.array("i")
            arr.frombytes(data[: len(data) - len(data) % arr.itemsize])
            fds.extend(arr)
    return fds


def recv(sock: socket.socket, limit: int,
         frame_timeout: float | None = None) -> tuple[Any, list[int]] | None:
    """Read one frame: (decoded JSON, descriptors), or None on a clean EOF.

    Raises CtlError: `too-big` (fatal: the rest of the frame is not read) or
    `malformed` (the frame was read whole, so the connection can go on); FrameTimeout
    if `frame_timeout` seconds pass between the frame's first byte and its last.
    Descriptors received with a frame that fails are closed here.
    """
    fds: list[int] = []
    clock = _FrameClock(sock, frame_timeout)
    try:
        head = _recv_exact(sock, HEADER.size, fds, clock)
        if head is None:
            return None
        (length,) = HEADER.unpack(head)
        if length > limit:
            raise CtlError(TOO_BIG, f"frame of {length} bytes is over the limit of {limit}",
                           fatal=True)
        payload = _recv_exact(sock, length, fds, clock) if length else b""
        if payload is None:
            raise ConnectionError("connection closed in the middle of a frame")
        try:
            obj = json.loads(payload.decode())
        except (ValueError, RecursionError) as exc:
            raise CtlError(MALFORMED, f"frame is not valid JSON: {exc}") from None
    except BaseException:
        close_fds(fds)
        raise
    finally:
        clock.restore()
    return obj, fds


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    fds.clear()
