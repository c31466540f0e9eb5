"""TCP between vnet sockets and the Linux kernel's TCP over a TAP link.

Linux clients (Python's socket module, socat, curl) against vnet servers and vnet
clients against Linux servers: 1 MB echoed and verified by hash both ways, an HTTP
download, refused connections, resets, half-close, the options each side offers
in its SYN (captured on the TAP interface), and loss recovery through a vimage
router whose link drops 2% of the frames.

The vnet side of each test is a thread of this process using blocking calls on a
vnet socket while the kernel loop runs in its background thread; every blocking
call has a timeout, so a failure never leaves a thread behind.

iperf3 is not used: it speaks its own control protocol (JSON over a TCP control
connection) which nothing on the vnet side implements yet.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from vimage.net.bpf import open_capture
from vimage.topo import add_route, connect
from vimage.wire import tcp as wtcp

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from conftest import Lab, Pair
    from vimage.socket.tcp_socket import TcpSocket
    from vimage.vnet import Vnet

MB = 1 << 20
IO_TIMEOUT = 8.0  # any one blocking call of a vnet socket; below the lab's 10 s thread join
TRANSFER_TIMEOUT = 60.0  # a whole Linux program moving a megabyte or two


def payload(size: int) -> bytes:
    """`size` pseudo-random bytes; the Linux snippets make the same ones."""
    return random.Random(size).randbytes(size)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# A Linux client: sends argv[3] pseudo-random bytes to argv[1]:argv[2] while reading
# (concurrently) until EOF, half-closing after the last byte; prints "LEN SHA256" of
# what came back.
LINUX_ECHO_CLIENT = """
import hashlib, random, socket, sys, threading
addr, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = random.Random(size).randbytes(size)
s = socket.create_connection((addr, port), timeout=15)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
h, n = hashlib.sha256(), 0
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    h.update(chunk)
    n += len(chunk)
t.join()
print(n, h.hexdigest())
"""

# A Linux client that connects to a port and reports how that went.
LINUX_CONNECT = """
import errno, socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    print("connected")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc.errno))
"""

# A Linux server for one connection: prints "ready PORT", then "accepted PEER_PORT",
# then never reads (a kill closes the socket: RST if data was left unread, else FIN).
LINUX_IDLE_SERVER = """
import socket, time
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(1)
print("ready", s.getsockname()[1])
c, peer = s.accept()
print("accepted", peer[1])
time.sleep(60)
"""

# A Linux server for one connection: reads until EOF (our half-close), then answers
# "LEN SHA256" of what it read and closes.
LINUX_HALF_CLOSE_SERVER = """
import hashlib, socket
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(1)
print("ready", s.getsockname()[1])
c, peer = s.accept()
c.settimeout(15)
h, n = hashlib.sha256(), 0
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    h.update(chunk)
    n += len(chunk)
c.sendall(f"{n} {h.hexdigest()}".encode())
c.close()
"""

# A Linux client that sends argv[3] pseudo-random bytes, half-closes, and prints the
# whole reply (hex).
LINUX_HALF_CLOSE_CLIENT = """
import random, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
s.sendall(random.Random(int(sys.argv[3])).randbytes(int(sys.argv[3])))
s.shutdown(socket.SHUT_WR)
reply = b""
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    reply += chunk
print(reply.hex())
"""

# A Linux echo server for one connection (prints "ready PORT"); waits for EOF.
LINUX_ECHO_SERVER = """
import socket
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(1)
print("ready", s.getsockname()[1])
c, peer = s.accept()
c.settimeout(15)
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    c.sendall(chunk)
c.close()
"""


# -- the vnet side --------------------------------------------------------------------
class VnetServer:
    """A listening vnet socket and a thread serving `count` connections with `handler`.

    Whatever the thread raises is kept and raised again by `join()`, in the test."""

    def __init__(self, lab: Lab, vnet: Vnet, port: int,
                 handler: Callable[[TcpSocket], None], count: int = 1,
                 rcvbuf: int | None = None) -> None:
        self.listener: TcpSocket = vnet.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if rcvbuf is not None:  # accepted sockets inherit it
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("0.0.0.0", port))
        self.listener.listen(8)
        self.listener.settimeout(IO_TIMEOUT)
        self.handler = handler
        self.count = count
        self.errors: list[BaseException] = []
        self.thread = lab.thread(self._serve)

    def _serve(self) -> None:
        try:
            for _ in range(self.count):
                conn, _peer = self.listener.accept()
                conn.settimeout(IO_TIMEOUT)
                try:
                    self.handler(conn)
                finally:
                    conn.close()
        except BaseException as exc:  # reported by join()
            self.errors.append(exc)
        finally:
            self.listener.close()

    def join(self, timeout: float = TRANSFER_TIMEOUT) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.listener.close()  # wakes accept()
            raise AssertionError("the vnet server did not finish")
        if self.errors:
            raise self.errors[0]


def read_all(sock: TcpSocket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def echo_handler(received: list[bytes]) -> Callable[[TcpSocket], None]:
    """Echo everything until EOF; what came in is appended to `received`."""

    def handle(conn: TcpSocket) -> None:
        got = bytearray()
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
            conn.sendall(chunk)
        received.append(bytes(got))

    return handle


def vnet_connect(vnet: Vnet, addr: str, port: int, wait: float = 5.0) -> TcpSocket:
    """Connect to a Linux server, retrying while it is not listening yet."""
    deadline = time.monotonic() + wait
    while True:
        sock: TcpSocket = vnet.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(IO_TIMEOUT)
        try:
            sock.connect((addr, port))
            return sock
        except ConnectionRefusedError:
            sock.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def vnet_echo_client(lab: Lab, sock: TcpSocket, data: bytes) -> bytes:
    """Send `data` (from a second thread) while reading the echo until EOF."""
    errors: list[BaseException] = []

    def send() -> None:
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:
            errors.append(exc)

    sender = lab.thread(send)
    try:
        back = read_all(sock)
    finally:
        sender.join(TRANSFER_TIMEOUT)
    if errors:
        raise errors[0]
    return back


def ready_port(lab: Lab, proc: subprocess.Popen[bytes]) -> int:
    """The port a Linux server snippet announced with "ready PORT"."""
    word, port = lab.readline(proc).split()
    assert word == "ready"
    return int(port)


def tcp_rows(vnet: Vnet) -> list[list[str]]:
    """The tcp4 rows of `netstat -an`, split into words."""
    out = vnet.cmd("netstat -an -p tcp").output
    return [line.split() for line in out.splitlines() if line.startswith("tcp4")]


# -- bulk data both ways ----------------------------------------------------------------
def test_linux_client_echo_1mb_through_vnet_server(pair: Pair) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    received: list[bytes] = []
    server = VnetServer(lab, vnet, 7000, echo_handler(received))
    res = lab.python(link.ns, LINUX_ECHO_CLIENT, link.our_addr, "7000", str(MB),
                     timeout=TRANSFER_TIMEOUT)
    assert res.returncode == 0, res.stderr
    server.join()
    sent = payload(MB)
    assert received == [sent]  # Linux -> vnet, byte for byte
    assert res.stdout.split() == [str(MB), digest(sent)]  # vnet -> Linux
    stats = vnet.tcp.stats
    assert stats.accepts == 1 and stats.rcvbyte >= MB and stats.sndbyte >= MB


def test_vnet_client_echo_1mb_through_socat(pair: Pair) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    socat = lab.need("socat")
    # -t: after our half-close, socat waits for cat's last bytes this long at most
    proc = lab.spawn(link.ns, socat, "-t", "20", "TCP-LISTEN:7100,reuseaddr", "EXEC:cat")
    data = payload(MB)
    with vnet_connect(vnet, link.linux_addr, 7100) as sock:
        assert sock.getpeername() == (link.linux_addr, 7100)
        back = vnet_echo_client(lab, sock, data)
    assert len(back) == MB
    assert digest(back) == digest(data)
    assert proc.wait(timeout=10) == 0


def test_vnet_client_echo_1mb_through_python_server(pair: Pair) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    proc = lab.spawn_python(link.ns, LINUX_ECHO_SERVER)
    port = ready_port(lab, proc)
    data = payload(MB)
    with vnet_connect(vnet, link.linux_addr, port) as sock:
        back = vnet_echo_client(lab, sock, data)
    assert back == data
    assert proc.wait(timeout=10) == 0


# -- HTTP: curl against a responder on a vnet socket ------------------------------------
HTTP_BODY_SIZE = 200 * 1024


def http_handler(body: bytes, requests: list[str]) -> Callable[[TcpSocket], None]:
    """A minimal HTTP/1.0 responder: GET / gets `body`, anything else 404."""

    def handle(conn: TcpSocket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        requests.append(request_line)
        method, path, _version = request_line.split()
        if method == "GET" and path == "/":
            status, content = "200 OK", body
        else:
            status, content = "404 Not Found", b"not found\n"
        conn.sendall(f"HTTP/1.0 {status}\r\nContent-Type: application/octet-stream\r\n"
                     f"Content-Length: {len(content)}\r\nConnection: close\r\n\r\n".encode()
                     + content)

    return handle


def test_curl_downloads_from_vnet_http_server(pair: Pair, tmp_path: Path) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    curl = lab.need("curl")
    body = payload(HTTP_BODY_SIZE)
    requests: list[str] = []
    server = VnetServer(lab, vnet, 8080, http_handler(body, requests), count=2)
    out = tmp_path / "body"
    url = f"http://{link.our_addr}:8080"
    res = lab.run(link.ns, curl, "-s", "-o", str(out), "-w", "%{http_code} %{size_download}",
                  "--max-time", "20", f"{url}/")
    assert res.returncode == 0, f"curl exit {res.returncode}: {res.stderr}"
    assert res.stdout.split() == ["200", str(HTTP_BODY_SIZE)]
    assert out.read_bytes() == body
    res = lab.run(link.ns, curl, "-s", "-o", "/dev/null", "-w", "%{http_code}",
                  "--max-time", "20", f"{url}/missing")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "404"
    server.join()
    assert requests == ["GET / HTTP/1.1", "GET /missing HTTP/1.1"]


# -- refused connections, resets, half-close --------------------------------------------
def test_linux_connect_to_closed_vnet_port_is_refused(pair: Pair) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    res = lab.python(link.ns, LINUX_CONNECT, link.our_addr, "7999")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ECONNREFUSED"
    curl = lab.need("curl")
    res = lab.run(link.ns, curl, "-s", "--max-time", "10", f"http://{link.our_addr}:7999/")
    assert res.returncode == 7, (res.returncode, res.stderr)  # CURLE_COULDNT_CONNECT
    assert vnet.tcp.stats.resets_sent >= 2


def test_socat_connect_to_closed_vnet_port_is_refused(pair: Pair) -> None:
    lab, link = pair.lab, pair.link
    socat = lab.need("socat")
    res = lab.run(link.ns, socat, "-u", "OPEN:/dev/null", f"TCP:{link.our_addr}:7999")
    assert res.returncode != 0
    assert "Connection refused" in res.stderr, res.stderr


def test_vnet_connect_to_closed_linux_port_is_refused(pair: Pair) -> None:
    vnet, link = pair.vnet, pair.link
    with vnet.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(IO_TIMEOUT)
        with pytest.raises(ConnectionRefusedError):
            sock.connect((link.linux_addr, 7999))
    assert vnet.tcp.stats.resets_rcvd >= 1


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_linux_killed_with_unread_data_resets_us(pair: Pair) -> None:
    """Linux closes a socket with unread data by RST: our recv raises ECONNRESET,
    then writing fails with EPIPE."""
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    proc = lab.spawn_python(link.ns, LINUX_IDLE_SERVER)
    port = ready_port(lab, proc)
    with vnet_connect(vnet, link.linux_addr, port) as sock:
        assert lab.readline(proc).split() == ["accepted", str(sock.getsockname()[1])]
        sock.sendall(b"nobody will read this")
        tcb = sock.tcb
        assert tcb is not None
        assert wait_for(lambda: not tcb.snd_buf), "Linux never acknowledged our data"
        proc.kill()
        proc.wait(timeout=5)
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
        with pytest.raises(BrokenPipeError):
            sock.send(b"more")
    assert vnet.tcp.stats.resets_rcvd == 1
    assert tcp_rows(vnet) == []


def test_linux_killed_cleanly_then_our_write_is_reset(pair: Pair) -> None:
    """Linux closes a socket with nothing unread by FIN: we read EOF and sit in
    CLOSE_WAIT; data we send then meets a closed socket and Linux resets us."""
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    proc = lab.spawn_python(link.ns, LINUX_IDLE_SERVER)
    port = ready_port(lab, proc)
    with vnet_connect(vnet, link.linux_addr, port) as sock:
        lab.readline(proc)
        ours = f"{link.our_addr}.{sock.getsockname()[1]}"
        theirs = f"{link.linux_addr}.{port}"
        assert tcp_rows(vnet) == [["tcp4", "0", "0", ours, theirs, "ESTABLISHED"]]
        proc.kill()
        proc.wait(timeout=5)
        assert sock.recv(100) == b""
        assert tcp_rows(vnet) == [["tcp4", "0", "0", ours, theirs, "CLOSE_WAIT"]]
        deadline = time.monotonic() + 5
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while time.monotonic() < deadline:
                sock.send(b"hello?")
                time.sleep(0.05)
        with pytest.raises(BrokenPipeError):
            sock.send(b"hello?")
    assert vnet.tcp.stats.resets_rcvd == 1


def test_linux_half_close_then_reads_our_reply(pair: Pair) -> None:
    """Linux shuts down its sending side; we read EOF, then answer on the open half."""
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    request = payload(100_000)
    states: list[str] = []

    def handle(conn: TcpSocket) -> None:
        got = read_all(conn)
        tcb = conn.tcb
        assert tcb is not None
        states.append(tcb.state_name)
        conn.sendall(f"{len(got)} {digest(got)}".encode() + got[::-1][:50_000])

    server = VnetServer(lab, vnet, 7300, handle)
    res = lab.python(link.ns, LINUX_HALF_CLOSE_CLIENT, link.our_addr, "7300",
                     str(len(request)))
    assert res.returncode == 0, res.stderr
    server.join()
    assert states == ["CLOSE_WAIT"]
    reply = bytes.fromhex(res.stdout.strip())
    head = f"{len(request)} {digest(request)}".encode()
    assert reply == head + request[::-1][:50_000]


def test_vnet_half_close_then_reads_linux_reply(pair: Pair) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    proc = lab.spawn_python(link.ns, LINUX_HALF_CLOSE_SERVER)
    port = ready_port(lab, proc)
    data = payload(300_000)
    with vnet_connect(vnet, link.linux_addr, port) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        with pytest.raises(BrokenPipeError):
            sock.send(b"after shutdown")
        reply = read_all(sock)  # the receiving half still works
        tcb = sock.tcb
        assert tcb is not None
        assert tcb.state_name == "TIME_WAIT"  # we sent the first FIN
    assert reply.decode().split() == [str(len(data)), digest(data)]
    assert proc.wait(timeout=10) == 0


# -- small and closed windows ---------------------------------------------------------------
# A Linux server with the smallest receive buffer Linux allows (its window is below one
# MSS): sleeps before reading (the window closes), then reads until EOF and answers
# "LEN SHA256".
LINUX_TINY_WINDOW_SERVER = """
import hashlib, socket, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
s.bind(("0.0.0.0", 0))
s.listen(1)
print("ready", s.getsockname()[1])
c, peer = s.accept()
c.settimeout(15)
time.sleep(0.5)
h, n = hashlib.sha256(), 0
while True:
    chunk = c.recv(65536)
    if not chunk:
        break
    h.update(chunk)
    n += len(chunk)
c.sendall(f"{n} {h.hexdigest()}".encode())
c.close()
"""


def test_vnet_sends_into_tiny_then_closed_linux_window(pair: Pair) -> None:
    """Linux offers a window smaller than one segment, then none while it sleeps: we
    must still send (silly window avoidance must not stall) and probe the closed one."""
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    proc = lab.spawn_python(link.ns, LINUX_TINY_WINDOW_SERVER)
    port = ready_port(lab, proc)
    data = payload(200_000)
    with vnet_connect(vnet, link.linux_addr, port) as sock:
        tcb = sock.tcb
        assert tcb is not None
        assert tcb.snd_wnd < tcb.mss  # Linux's whole window is below one MSS
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        reply = read_all(sock)
    assert reply.decode().split() == [str(len(data)), digest(data)]
    assert proc.wait(timeout=10) == 0
    assert vnet.tcp.stats.persisttimeo > 0  # the window closed while Linux slept


def test_linux_sends_into_tiny_then_closed_vnet_window(pair: Pair) -> None:
    """Our receive buffer is smaller than one segment and fills while the reader
    sleeps: Linux probes the closed window, we reopen it when the reader reads."""
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    size = 200_000
    received: list[bytes] = []

    def handle(conn: TcpSocket) -> None:
        assert conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 1000
        time.sleep(0.5)
        got = read_all(conn)
        received.append(got)
        conn.sendall(f"{len(got)} {digest(got)}".encode())

    server = VnetServer(lab, vnet, 7350, handle, rcvbuf=1000)
    res = lab.python(link.ns, LINUX_HALF_CLOSE_CLIENT, link.our_addr, "7350", str(size),
                     timeout=TRANSFER_TIMEOUT)
    assert res.returncode == 0, res.stderr
    server.join()
    data = payload(size)
    assert received == [data]
    assert bytes.fromhex(res.stdout.strip()).decode().split() == [str(size), digest(data)]


# -- options on the wire ------------------------------------------------------------------
def tcp_segments(frames: list[tuple[int, bytes]]) -> list[tuple[str, wtcp.TcpRepr]]:
    """(source address, segment) of each IPv4 TCP frame captured on an Ethernet link."""
    out = []
    for _time, frame in frames:
        if frame[12:14] != b"\x08\x00" or frame[23] != 6:
            continue
        ihl = (frame[14] & 0x0F) * 4
        src = socket.inet_ntoa(frame[26:30])
        out.append((src, wtcp.parse(frame[14 + ihl:])))
    return out


def check_handshake(segs: list[tuple[str, wtcp.TcpRepr]], client: str, server: str,
                    server_port: int) -> None:
    """Both SYNs of the connection to `server_port` offer MSS, WS, SACK and TS, and
    every later segment of it carries a timestamp."""
    conn = [(src, s) for src, s in segs if server_port in (s.sport, s.dport)]
    syn = [s for src, s in conn if s.flags & wtcp.SYN and not s.flags & wtcp.ACK]
    synack = [s for src, s in conn if s.flags & wtcp.SYN and s.flags & wtcp.ACK]
    assert syn and synack, conn
    assert all(src == client for src, s in conn if s is syn[0])
    for seg in (syn[0], synack[0]):
        opts = seg.options
        assert opts.mss == 1460, opts
        assert opts.wscale is not None, opts
        assert opts.sack_perm, opts
        assert opts.ts is not None, opts
    assert synack[0].options.ts is not None and syn[0].options.ts is not None
    assert synack[0].options.ts[1] == syn[0].options.ts[0]  # TSecr echoes the SYN's TSval
    later = [(src, s) for src, s in conn if not s.flags & (wtcp.SYN | wtcp.RST)]
    data = [(src, s) for src, s in later if len(s.payload)]
    assert {src for src, _ in data} == {client, server}, "data both ways"
    missing = [(src, s) for src, s in later if s.options.ts is None]
    assert not missing, missing


def test_options_negotiated_with_linux(pair: Pair) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    session = open_capture(link.tap, filter="tcp")
    try:
        # Linux's SYN, our SYN-ACK
        received: list[bytes] = []
        server = VnetServer(lab, vnet, 7400, echo_handler(received))
        res = lab.python(link.ns, LINUX_ECHO_CLIENT, link.our_addr, "7400", "50000")
        assert res.returncode == 0, res.stderr
        server.join()
        # our SYN, Linux's SYN-ACK; Linux's view of the connection from `ss`
        proc = lab.spawn_python(link.ns, LINUX_ECHO_SERVER)
        port = ready_port(lab, proc)
        with vnet_connect(vnet, link.linux_addr, port) as sock:
            sock.sendall(payload(50_000)[:20_000])
            assert len(sock.recv(65536)) > 0
            tcb = sock.tcb
            assert tcb is not None
            assert (tcb.ts_ok, tcb.sack_ok, tcb.ws_ok) == (True, True, True)
            assert tcb.snd_wscale > 0  # Linux scales its window
            assert tcb.mss == 1448  # 1460 less the timestamp option
            wscales = (tcb.rcv_wscale, tcb.snd_wscale)  # Linux's send shift is our receive
            ss = lab.run(link.ns, "ss", "-tni", "state", "established")
            sock.shutdown(socket.SHUT_WR)
            read_all(sock)
        proc.wait(timeout=10)
    finally:
        session.close()
    assert session.packets is not None
    segs = tcp_segments(session.packets)
    check_handshake(segs, link.linux_addr, link.our_addr, 7400)
    check_handshake(segs, link.our_addr, link.linux_addr, port)
    # Linux's view (`ss -i`; this iproute2 does not print "ts sack" for any connection):
    # the window scales each side offered, and an MSS that leaves room for timestamps
    assert ss.returncode == 0, ss.stderr
    assert f"wscale:{wscales[0]},{wscales[1]}" in ss.stdout, ss.stdout
    assert "mss:1448" in ss.stdout, ss.stdout  # 1460 less the 12 bytes of the TS option


# -- loss recovery through a vimage router ---------------------------------------------------
def linux_tcp_mib(lab: Lab, ns: str) -> dict[str, int]:
    """The namespace's TCP counters (Tcp: and TcpExt: of /proc/net/snmp and
    /proc/net/netstat, which are per namespace) as {"Tcp:RetransSegs": n, ...}."""
    counters = {}
    for path in ("/proc/net/snmp", "/proc/net/netstat"):
        res = lab.run(ns, "cat", path)
        assert res.returncode == 0, res.stderr
        rows = [line.split() for line in res.stdout.splitlines()]
        for names, values in zip(rows[::2], rows[1::2], strict=True):
            if names[0] in ("Tcp:", "TcpExt:"):
                counters.update({names[0] + k: int(v) for k, v in zip(names[1:], values[1:],
                                                                        strict=True)})
    return counters


def test_loss_recovery_through_lossy_vimage_router(lab: Lab) -> None:
    """Linux (10.9.0.2) - TAP - router r - epair dropping 2% each way - server s
    (10.8.0.2): 1 MB echoed intact; both TCPs had to retransmit."""
    router = lab.vnet("r", forwarding=True)
    server_vnet = lab.vnet("s")
    ns = lab.netns()
    lab.tap(router, ns, "10.9.0.1/24", "10.9.0.2/24")
    r_end, s_end = connect(router, "10.8.0.1/24", server_vnet, "10.8.0.2/24")
    add_route(server_vnet, "default", "10.8.0.1")
    lab.ip(ns, "route", "add", "10.8.0.0/24", "via", "10.9.0.1")
    r_end.impair(loss="2%")
    s_end.impair(loss="2%")
    lab.start()
    linux_before = linux_tcp_mib(lab, ns)
    received: list[bytes] = []
    server = VnetServer(lab, server_vnet, 7500, echo_handler(received))
    res = lab.python(ns, LINUX_ECHO_CLIENT, "10.8.0.2", "7500", str(MB),
                     timeout=TRANSFER_TIMEOUT)
    assert res.returncode == 0, res.stderr
    server.join()
    sent = payload(MB)
    assert received == [sent]
    assert res.stdout.split() == [str(MB), digest(sent)]
    assert r_end.pipe is not None and s_end.pipe is not None
    assert r_end.pipe.dropped_loss > 0 and s_end.pipe.dropped_loss > 0
    stats = server_vnet.tcp.stats
    assert stats.sndrexmitpack > 0, "we never retransmitted"
    assert stats.rcvoopack > 0  # Linux's segments after a loss waited for the hole
    assert stats.sack_recovery > 0, "we never recovered with Linux's SACK blocks"
    linux = linux_tcp_mib(lab, ns)
    assert linux["Tcp:RetransSegs"] > linux_before["Tcp:RetransSegs"], "Linux never retransmitted"
    assert linux["TcpExt:TCPSackRecovery"] > linux_before["TcpExt:TCPSackRecovery"], \
        "Linux never recovered with our SACK blocks"
    out = server_vnet.cmd("netstat -s -p tcp").output
    assert re.search(r"^\t\t[1-9]\d* data packets? \(\d+ bytes?\) retransmitted$", out, re.M), out

