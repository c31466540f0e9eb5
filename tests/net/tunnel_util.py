"""Shared by the gif, gre and vxlan tests: two vnets joined by an epair ("the Internet",
192.0.2.0/24) with a tunnel between them configured through ifconfig, and a TCP
transfer across it in virtual time."""

from __future__ import annotations

import contextlib

from vimage.kernel import Kernel
from vimage.topo import connect
from vimage.vnet import Vnet

OUTER = ("192.0.2.1", "192.0.2.2")
INNER = ("10.0.0.1", "10.0.0.2")


def ok(vnet: Vnet, line: str) -> str:
    result = vnet.cmd(line)
    assert result.status == 0, f"{line}: {result.output}"
    return result.output


def sites(kind: str, extra: str = "", seed: int = 1) -> tuple[Kernel, Vnet, Vnet]:
    """Vnets a and b, outer 192.0.2.1/.2, a `kind` tunnel with inner 10.0.0.1/.2."""
    kernel = Kernel(clock="virtual", seed=seed)
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    for vnet, (here, there), (me, peer) in ((a, OUTER, INNER),
                                            (b, OUTER[::-1], INNER[::-1])):
        if kind == "vxlan":
            ok(vnet, f"ifconfig vxlan create vxlanid 42 vxlanlocal {here} "
                     f"vxlanremote {there} {extra}")
            ok(vnet, f"ifconfig vxlan0 inet {me}/24 up")
        else:
            ok(vnet, f"ifconfig {kind} create")
            ok(vnet, f"ifconfig {kind}0 tunnel {here} {there} {extra}")
            ok(vnet, f"ifconfig {kind}0 inet {me} {peer}")
    kernel.run(1)  # the gratuitous ARPs arrive
    return kernel, a, b


def tcp_transfer(a: Vnet, b: Vnet, dst: str, size: int, port: int = 5001) -> bytes:
    """Send `size` bytes from a to b's `dst`; what b received."""
    srv = b.socket(2, 1)
    srv.bind(("", port))
    srv.listen(1)
    cli = a.socket(2, 1)
    cli.connect((dst, port))
    conn, _ = srv.accept()
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    cli.setblocking(False)
    sent = 0
    got = bytearray()
    while len(got) < size:
        if sent < size:
            with contextlib.suppress(BlockingIOError):
                sent += cli.send(data[sent:sent + 65536])
        chunk = conn.recv(1 << 20)
        assert chunk, "connection closed early"
        got += chunk
    for s in (cli, conn, srv):
        s.close()
    assert bytes(got) == data
    return bytes(got)


def tshark(path: str, *fields: str) -> list[list[str]]:
    """tshark's decoding of a pcap file: one row of `fields` per frame, with IP, UDP and
    TCP checksums checked; fails on a frame tshark finds malformed or badly summed."""
    import subprocess

    checks = ("-o", "ip.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
              "-o", "tcp.check_checksum:TRUE")
    wanted = ("_ws.malformed", "ip.checksum.status", "udp.checksum.status", *fields)
    out = subprocess.run(["tshark", "-r", path, *checks, "-T", "fields", "-E", "separator=|",
                          *(x for f in wanted for x in ("-e", f))],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    rows = [line.split("|") for line in out.splitlines()]
    for row in rows:  # Wireshark's checksum status 0 is "Bad"
        assert not row[0] and "0" not in row[1].split(",") + row[2].split(","), row
    return [row[3:] for row in rows]
