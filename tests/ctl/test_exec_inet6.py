"""`vimage exec` processes with AF_INET6 sockets: the relay carries IPv6 streams and
datagrams (4-tuple addresses), names from the vnet's hosts table, dual-stack servers."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap

import pytest
from tests.ctl.test_exec_sockets import run_in, start

SERVER = textwrap.dedent("""
    import socket, threading
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    tcp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    tcp.bind(("::", 9000))
    tcp.listen()
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp.bind(("::", 9001))
    def echo_udp():
        while True:
            data, addr = udp.recvfrom(2048)
            udp.sendto(repr(addr).encode(), addr)
    threading.Thread(target=echo_udp, daemon=True).start()
    print("listening", tcp.getsockname(), flush=True)
    while True:
        conn, addr = tcp.accept()
        conn.sendall(repr((addr, conn.getsockname())).encode())
        conn.close()
""")


@pytest.fixture
def dual(vimaged):
    d = vimaged
    for name in ("a", "b"):
        d.ok("-c", name)
        d.ok(name, "sysctl", "net.inet6.ip6.dad_count=0")  # real clock: no DAD wait
    end = d.ok("ifconfig", "epair", "create").strip()[:-1]
    d.ok("ifconfig", f"{end}a", "vnet", "a")
    d.ok("ifconfig", f"{end}b", "vnet", "b")
    for name, side, last in (("a", "a", 1), ("b", "b", 2)):
        d.ok(name, "ifconfig", f"{end}{side}", f"10.0.0.{last}/24", "up")
        d.ok(name, "ifconfig", f"{end}{side}", "inet6", f"2001:db8::{last}/64", "alias")
    d.ok("a", "hosts", "add", "2001:db8::2", "web6")
    procs: list[subprocess.Popen[str]] = []
    yield d, procs
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def test_exec_process_streams_and_datagrams_over_ipv6(dual):
    d, procs = dual
    procs.append(start(d, "b", SERVER))
    out = run_in(d, "a", """
        import socket
        for host, family in (("2001:db8::2", socket.AF_INET6), ("web6", socket.AF_INET6),
                             ("10.0.0.2", socket.AF_INET)):
            s = socket.socket(family, socket.SOCK_STREAM)
            s.settimeout(10)
            s.connect((host, 9000))
            print(s.getpeername()[:2], s.recv(200).decode())
            s.close()
        u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        u.settimeout(10)
        u.sendto(b"hi", ("web6", 9001))
        data, addr = u.recvfrom(200)
        print(addr, data.decode(), u.getsockname()[0])
    """)
    lines = out.splitlines()
    assert lines[0].startswith("('2001:db8::2', 9000) (('2001:db8::1', ")
    assert "('2001:db8::2', 9000, 0, 0)" in lines[0]
    assert lines[1].startswith("('2001:db8::2', 9000) (('2001:db8::1', ")
    # the dual-stack server saw the IPv4 client as a mapped address
    assert lines[2].startswith("('10.0.0.2', 9000) (('::ffff:10.0.0.1', ")
    assert lines[3].startswith("('2001:db8::2', 9001, 0, 0) ('2001:db8::1', ")
    assert lines[3].endswith(" ::")
