"""UDP between vnet sockets and Linux sockets over a TAP link, byte for byte,
including datagrams large enough to be fragmented, and port unreachable errors."""

from __future__ import annotations

import random
import re
import socket
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pathlib import Path

    from conftest import Pair

# payload sizes: empty, the largest unfragmented on a 1500-byte link, the smallest
# fragmented one, two and several fragments
SIZES = [0, 1472, 1473, 3000, 8000]

# A Linux UDP echo server: prints "ready PORT", then for one datagram prints
# "HEX PEER_ADDR PEER_PORT" and sends the datagram back reversed.
LINUX_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.settimeout(10)
print("ready", s.getsockname()[1])
data, peer = s.recvfrom(65535)
print(data.hex() or "-", peer[0], peer[1])
s.sendto(data[::-1], peer)
"""

# A Linux UDP client: sends argv[3] (hex) to argv[1]:argv[2], prints the answer and its source.
LINUX_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))
data, peer = s.recvfrom(65535)
print(data.hex() or "-", peer[0], peer[1])
"""

# A connected Linux UDP socket sending to a closed port: the ICMP port unreachable
# that comes back must surface as ECONNREFUSED on the next recv.
LINUX_REFUSED = """
import errno, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"?" * int(sys.argv[3]))
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError as exc:
    print(errno.errorcode[exc.errno])
except TimeoutError:
    print("timeout")
"""


def payload(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def from_hex(text: str) -> bytes:
    return b"" if text == "-" else bytes.fromhex(text)


@pytest.mark.parametrize("size", SIZES)
def test_linux_client_vnet_server(pair: Pair, size: int) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    sent = payload(size)
    got: list[tuple[bytes, tuple[str, int]]] = []
    server = vnet.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("0.0.0.0", 7000))
    server.settimeout(5)

    def serve() -> None:
        data, peer = server.recvfrom(65535)
        got.append((data, peer))
        server.sendto(data[::-1], peer)

    lab.thread(serve)
    res = lab.python(link.ns, LINUX_CLIENT, link.our_addr, "7000", sent.hex())
    assert res.returncode == 0, res.stderr
    answer, src, sport = res.stdout.split()
    assert got, "the vnet server received nothing"
    data, (peer_addr, _peer_port) = got[0]
    assert data == sent
    assert peer_addr == link.linux_addr
    assert from_hex(answer) == sent[::-1]
    assert (src, int(sport)) == (link.our_addr, 7000)
    server.close()


@pytest.mark.parametrize("size", SIZES)
def test_vnet_client_linux_server(pair: Pair, size: int) -> None:
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    sent = payload(size)
    proc = lab.spawn_python(link.ns, LINUX_ECHO)
    ready, port = lab.readline(proc).split()
    assert ready == "ready"
    with vnet.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        client.sendto(sent, (link.linux_addr, int(port)))
        data, peer = client.recvfrom(65535)
        our_port = client.getsockname()[1]
    received, peer_addr, peer_port = lab.readline(proc).split()
    assert from_hex(received) == sent
    assert (peer_addr, int(peer_port)) == (link.our_addr, our_port)
    assert data == sent[::-1]
    assert peer == (link.linux_addr, int(port))
    assert proc.wait(timeout=5) == 0


def test_socat_both_ways(pair: Pair, tmp_path: Path) -> None:
    """socat receives our datagram and sends one from a file; both arrive intact."""
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    socat = lab.need("socat")
    # socat as a receiver: one datagram to stdout
    proc = lab.spawn(link.ns, socat, "-u", "UDP4-RECVFROM:7101", "STDOUT")
    sent = payload(3000)
    with vnet.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        deadline = time.monotonic() + 5
        while proc.poll() is None and time.monotonic() < deadline:  # until socat is bound
            tx.sendto(sent, (link.linux_addr, 7101))
            time.sleep(0.1)
    out, err = proc.communicate(timeout=5)
    assert proc.returncode == 0, err
    assert out == sent
    # socat as a sender: a file's content as one datagram
    with vnet.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("0.0.0.0", 7102))
        rx.settimeout(5)
        path = f"{tmp_path}/payload"
        with open(path, "wb") as f:
            f.write(sent[::-1])
        res = lab.run(link.ns, socat, "-u", "-b", "65536", f"OPEN:{path}",
                      f"UDP4-SENDTO:{link.our_addr}:7102")
        assert res.returncode == 0, res.stderr
        data, peer = rx.recvfrom(65535)
    assert data == sent[::-1]
    assert peer[0] == link.linux_addr


@pytest.mark.parametrize("size", [13, 3000])
def test_linux_gets_econnrefused(pair: Pair, size: int) -> None:
    """Our port unreachable (about a reassembled datagram, too) reaches the Linux socket."""
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    res = lab.python(link.ns, LINUX_REFUSED, link.our_addr, "7999", str(size))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ECONNREFUSED"
    stats = vnet.cmd("netstat -s -p udp").output
    assert re.search(r"^\s*[1-9]\d* dropped due to no socket$", stats, re.MULTILINE), stats
    icmp = vnet.cmd("netstat -s -p icmp").output
    assert re.search(r"destination unreachable: [1-9]", icmp), icmp


def test_vnet_gets_econnrefused(pair: Pair) -> None:
    """Linux's port unreachable reaches our connected socket as ECONNREFUSED."""
    vnet, link = pair.vnet, pair.link
    with vnet.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect((link.linux_addr, 7999))
        s.send(b"anyone there?")
        with pytest.raises(ConnectionRefusedError):
            s.recv(100)


# A Linux sender without UDP checksums (SO_NO_CHECK), unicast then to our subnet broadcast.
LINUX_NO_CHECKSUM_AND_BROADCAST = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK: checksum field 0
s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
s.sendto(b"no checksum", (sys.argv[1], 7000))
s.sendto(b"broadcast", (sys.argv[2], 7000))
"""

# A Linux receiver of two datagrams (prints "ready PORT" first).
LINUX_RECV_TWO = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
s.settimeout(5)
print("ready", s.getsockname()[1])
for _ in range(2):
    data, peer = s.recvfrom(100)
    print(data.decode(), peer[0])
"""


def test_broadcast_and_no_checksum(pair: Pair) -> None:
    """Linux's checksum-less and broadcast datagrams reach our socket bound to
    INADDR_ANY; our subnet and limited broadcasts reach a Linux socket."""
    lab, vnet, link = pair.lab, pair.vnet, pair.link
    with vnet.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
        rx.bind(("0.0.0.0", 7000))
        rx.settimeout(5)
        res = lab.python(link.ns, LINUX_NO_CHECKSUM_AND_BROADCAST, link.our_addr, "10.9.0.255")
        assert res.returncode == 0, res.stderr
        got = {rx.recvfrom(100)[0] for _ in range(2)}
    assert got == {b"no checksum", b"broadcast"}
    stats = vnet.cmd("netstat -s -p udp").output
    assert re.search(r"^\s*2 with no checksum$", stats, re.MULTILINE), stats
    proc = lab.spawn_python(link.ns, LINUX_RECV_TWO)
    ready, port = lab.readline(proc).split()
    with vnet.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        tx.sendto(b"subnet", ("10.9.0.255", int(port)))
        tx.sendto(b"limited", ("255.255.255.255", int(port)))
    lines = {lab.readline(proc), lab.readline(proc)}
    assert lines == {f"subnet {link.our_addr}", f"limited {link.our_addr}"}
