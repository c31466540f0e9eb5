"""Offloaded frames reach Linux with correct checksums (issue 16).

A host vnet sends over an epair (checksum offload and TSO on) to a router vnet whose
other link is a TAP into a Linux namespace: the frames cross the epair without
checksums and as 64 KB segments, and must be filled in and cut to the MTU where they
leave the process. Linux drops a segment with a bad checksum (and counts it in
/proc/net/snmp InCsumErrors), so the bytes arriving intact and the counters staying
at zero prove every frame was right.
"""

from __future__ import annotations

import hashlib
import random
import socket
from typing import TYPE_CHECKING

from vimage.net import offload
from vimage.topo import add_route, connect

if TYPE_CHECKING:
    from conftest import Lab

# A Linux TCP sink: prints "ready", reads one connection to EOF, prints "LEN SHA256".
LINUX_SINK = """
import hashlib, socket
s = socket.socket()
s.bind(("0.0.0.0", 5201))
s.listen(1)
s.settimeout(20)
print("ready")
c, _ = s.accept()
c.settimeout(20)
h, n = hashlib.sha256(), 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    h.update(b)
    n += len(b)
print(n, h.hexdigest())
"""

# A Linux UDP sink: prints "ready", then the lengths of argv[1] datagrams.
LINUX_UDP_SINK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 5202))
s.settimeout(10)
print("ready")
print(" ".join(str(len(s.recv(65535))) for _ in range(int(sys.argv[1]))))
"""

# /proc/net/snmp's InCsumErrors of Tcp and Udp in the namespace.
LINUX_CSUM_ERRORS = """
rows = [line.split() for line in open("/proc/net/snmp")]
out = []
for proto in ("Tcp:", "Udp:"):
    names, values = [r for r in rows if r[0] == proto][:2]
    out.append(values[names.index("InCsumErrors")])
print(" ".join(out))
"""


def routed_lab(lab: Lab) -> tuple[object, object, str]:
    """h (10.8.0.1) -- epair -- r (10.8.0.2 / 10.9.0.1) -- TAP -- Linux (10.9.0.2)."""
    h = lab.vnet("h")
    r = lab.vnet("r", forwarding=True)
    ns = lab.netns()
    with lab.kernel.sched.cond:
        connect(h, "10.8.0.1/24", r, "10.8.0.2/24")
        add_route(h, "default", "10.8.0.2")
    link = lab.tap(r, ns, "10.9.0.1/24", "10.9.0.2/24")
    lab.ip(ns, "route", "add", "10.8.0.0/24", "via", "10.9.0.1")
    lab.start()
    return h, r, link.ns


def csum_errors(lab: Lab, ns: str) -> list[int]:
    res = lab.python(ns, LINUX_CSUM_ERRORS)
    assert res.returncode == 0, res.stderr
    return [int(x) for x in res.stdout.split()]


def test_tso_segments_reach_linux_cut_and_checksummed(lab: Lab) -> None:
    h, _r, ns = routed_lab(lab)
    before = csum_errors(lab, ns)
    proc = lab.spawn_python(ns, LINUX_SINK)
    assert lab.readline(proc) == "ready"
    data = random.Random(16).randbytes(512 << 10)
    with h.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # type: ignore[attr-defined]
        s.settimeout(20)
        s.connect(("10.9.0.2", 5201))
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        length, digest = lab.readline(proc, timeout=30).split()
    assert (int(length), digest) == (len(data), hashlib.sha256(data).hexdigest())
    assert offload.state(lab.kernel).segmented > 0  # large segments were cut at the TAP
    assert csum_errors(lab, ns) == before


def test_offloaded_udp_reaches_linux_checksummed(lab: Lab) -> None:
    h, _r, ns = routed_lab(lab)
    before = csum_errors(lab, ns)
    sizes = [1, 100, 1472, 3000]  # 3000: filled before it is fragmented
    proc = lab.spawn_python(ns, LINUX_UDP_SINK, str(len(sizes)))
    assert lab.readline(proc) == "ready"
    with h.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # type: ignore[attr-defined]
        for size in sizes:
            s.sendto(bytes(size), ("10.9.0.2", 5202))
        got = lab.readline(proc, timeout=10)
    assert got.split() == [str(n) for n in sizes]
    assert csum_errors(lab, ns) == before
