"""The control connection: state bytes and length-prefixed JSON, and socket set-up."""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vimage.apps import tasks
from vimage.apps.iperf3.params import CTRL_TIMEOUT, MAX_JSON, IperfError, Settings
from vimage.socket.socket import IP_TOS, IPPROTO_IP, SO_RCVBUF, SO_SNDBUF, SOL_SOCKET
from vimage.socket.tcp_socket import IPPROTO_TCP, TCP_MAXSEG, TCP_NODELAY

if TYPE_CHECKING:
    from vimage.apps.iperf3.session import IperfTest
    from vimage.apps.tasks import Steps
    from vimage.socket.tcp_socket import TcpSocket


def send_state(test: IperfTest, state: int) -> Steps[None]:
    assert test.ctrl is not None
    test.doing = "unable to send control message"
    test.state = state
    yield from tasks.send_all(test.ctrl, struct.pack("b", state), tasks.deadline_in(
        test.kernel, CTRL_TIMEOUT))


def poll_state(test: IperfTest) -> int | None:
    """The next state byte if one has arrived; IperfError if the control connection ended."""
    assert test.ctrl is not None
    test.doing = "unable to receive control message"
    try:
        data = test.ctrl.recv(1)
    except BlockingIOError:
        return None
    except OSError:
        raise IperfError("control socket has closed unexpectedly") from None
    if not data:
        raise IperfError("control socket has closed unexpectedly")
    return struct.unpack("b", data)[0]


def write_json(test: IperfTest, obj: dict[str, Any], doing: str) -> Steps[None]:
    assert test.ctrl is not None
    test.doing = doing
    text = json.dumps(obj, separators=(",", ":")).encode()
    yield from tasks.send_all(test.ctrl, struct.pack(">I", len(text)) + text,
                              tasks.deadline_in(test.kernel, CTRL_TIMEOUT))


def read_json(test: IperfTest, doing: str) -> Steps[object]:
    assert test.ctrl is not None
    test.doing = doing
    deadline = tasks.deadline_in(test.kernel, CTRL_TIMEOUT)
    try:
        (size,) = struct.unpack(">I", (yield from tasks.recv_exact(test.ctrl, 4, deadline)))
        if size > MAX_JSON:
            raise IperfError(f"{doing}: a JSON message of {size} bytes is too long")
        text = yield from tasks.recv_exact(test.ctrl, size, deadline)
        return json.loads(text)
    except (EOFError, ValueError):
        raise IperfError(doing) from None


def wait_state(test: IperfTest, seconds: float,
               between: Callable[[], object] | None = None) -> Steps[int]:
    """The next state byte, waiting at most `seconds`; `between()` runs at every step."""
    deadline = tasks.deadline_in(test.kernel, seconds)
    while True:
        if between is not None:
            between()
        state = poll_state(test)
        if state is not None:
            return state
        if deadline is not None and test.now() >= deadline:
            raise IperfError("timed out waiting for a control message")
        yield deadline


def failure(test: IperfTest, exc: BaseException) -> IperfError:
    """An IperfError with iperf3's wording for an exception met while `test.doing`."""
    if isinstance(exc, IperfError):
        return exc
    if isinstance(exc, EOFError):
        return IperfError("control socket has closed unexpectedly")
    if isinstance(exc, OSError):
        return IperfError(f"{test.doing}: {exc.strerror or exc}")
    return IperfError(f"{test.doing}: {exc}")


def configure(sock: TcpSocket, s: Settings) -> None:
    """Apply a test's socket options to a data connection (as iperf3 does)."""
    if s.nodelay:
        sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
    if s.mss:
        sock.setsockopt(IPPROTO_TCP, TCP_MAXSEG, s.mss)
    if s.window:
        sock.setsockopt(SOL_SOCKET, SO_SNDBUF, s.window)
        sock.setsockopt(SOL_SOCKET, SO_RCVBUF, s.window)
    if s.tos:
        sock.setsockopt(IPPROTO_IP, IP_TOS, s.tos)


def learn_ctrl(test: IperfTest) -> None:
    ctrl = test.ctrl
    assert ctrl is not None
    test.ctrl_local, test.ctrl_remote = ctrl.getsockname(), ctrl.getpeername()
    test.mss_default = int(ctrl.getsockopt(IPPROTO_TCP, TCP_MAXSEG))
    test.sndbuf = int(ctrl.getsockopt(SOL_SOCKET, SO_SNDBUF))
    test.rcvbuf = int(ctrl.getsockopt(SOL_SOCKET, SO_RCVBUF))


def earliest(*times: int | None) -> int | None:
    """The first of the times that are set (kernel ns), or None."""
    known = [t for t in times if t is not None]
    return min(known) if known else None
