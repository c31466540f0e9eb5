"""Suite-wide settings: property tests draw the same examples on every run.

A random search that finds a new case only sometimes would make the suite flaky;
`VIMAGE_HYPOTHESIS=explore` turns the randomness back on for a bug hunt, and
`--hypothesis-profile long` (which overrides both) runs the fuzz tests without end.
Also suite-wide: an exception caught in a kernel loop fails the test, and the `stack`
fixture hands out the helpers of the isolation, determinism and fuzz tests.

The tree mirrors src/vimage (tests/net for vimage.net, tests/netinet/tcp for
vimage.netinet.tcp, tests/test_kernel.py for vimage.kernel, ...); tests/interop (real
Linux peers), tests/fuzz and tests/examples cut across the layers.
"""

from __future__ import annotations

import logging
import os
from typing import Any, NamedTuple

import pytest
from hypothesis import settings

from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.netinet import arp, icmp, ip, udp
from vimage.socket.socket import AF_INET, IPPROTO_ICMP, SOCK_DGRAM, SOCK_RAW
from vimage.topo import Net
from vimage.vnet import Vnet
from vimage.wire import icmp as wicmp

settings.register_profile("repeatable", derandomize=True, database=None, deadline=None)
settings.register_profile("explore", deadline=None)
# `pytest -m fuzz --hypothesis-profile long`: the fuzz tests run for hours (docs/testing.md);
# random, with the example database on so a failure found is replayed first next time
settings.register_profile("long", max_examples=1_000_000, deadline=None, print_blob=True)
settings.load_profile("explore" if os.environ.get("VIMAGE_HYPOTHESIS") == "explore"
                      else "repeatable")


@pytest.fixture(autouse=True)
def _no_loop_errors(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """An exception caught in a kernel loop (Scheduler.record_error) is a bug unless the
    test provokes it on purpose (`@pytest.mark.loop_errors`): the loop survives such an
    exception by design, so without this check a broken path can pass unnoticed."""
    from vimage.sched import Scheduler

    caught: list[tuple[object, Exception]] = []
    original = Scheduler.record_error

    def record(self: Scheduler, where: object, exc: Exception) -> None:
        caught.append((where, exc))
        original(self, where, exc)

    monkeypatch.setattr(Scheduler, "record_error", record)
    yield
    if caught and request.node.get_closest_marker("loop_errors") is None:
        where, exc = caught[-1]
        pytest.fail(f"{len(caught)} exception(s) in a kernel loop, the last in {where!r}: "
                    f"{exc!r}", pytrace=False)


# -- the `stack` fixture: helpers shared by the isolation, determinism and fuzz tests --
logging.getLogger("scapy").setLevel(logging.ERROR)
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

A_ADDR = "10.0.0.1"
B_ADDR = "10.0.0.2"


class Pair(NamedTuple):
    a: Vnet
    b: Vnet
    ifa: Ifnet  # a's end of the link
    ifb: Ifnet  # b's end of the link


class Stack:
    """Plain helper functions, handed to tests by the `stack` fixture."""

    A = A_ADDR
    B = B_ADDR

    @staticmethod
    def pair(kernel: Kernel, prefix: str) -> Pair:
        """vnets `<prefix>a` (10.0.0.1/24) and `<prefix>b` (10.0.0.2/24) on one epair."""
        net = Net(kernel)
        a, b = net.hosts(f"{prefix}a", f"{prefix}b")
        ifa, ifb = net.link(a, b)  # the first link: 10.0.0.0/24
        kernel.run(0)
        return Pair(a, b, ifa, ifb)

    @staticmethod
    def counters(vnet: Vnet) -> dict[str, Any]:
        """Every counter of a vnet and its ARP table, for before/after comparisons."""
        out: dict[str, Any] = {}
        for prefix, stats, lines in (("ip", vnet.ip.stats, ip.STAT_LINES),
                                     ("udp", vnet.udp.stats, udp.STAT_LINES),
                                     ("icmp", vnet.icmp.stats, icmp.STAT_LINES),
                                     ("arp", vnet.arp.stats, arp.STAT_LINES)):
            for name, _ in lines:
                out[f"{prefix}.{name}"] = getattr(stats, name)
        out["icmp.inhist"] = tuple(vnet.icmp.stats.inhist)
        out["icmp.outhist"] = tuple(vnet.icmp.stats.outhist)
        for ifp in vnet.ifaces.values():
            for name in ("ipackets", "ierrors", "iqdrops", "ibytes", "opackets", "oerrors",
                         "oqdrops", "obytes"):
                out[f"{ifp.name}.{name}"] = getattr(ifp, name)
        out["arp.table"] = tuple((e.addr, e.mac, e.state) for e in vnet.arp.entries())
        out["reass"] = len(vnet.ip.reass or ())
        out["sockets"] = tuple((s.lport, s._rcvbytes) for s in vnet.udp.sockets())
        return out

    @staticmethod
    def udp_exchange(src: Vnet, dst: Vnet, dst_addr: str, port: int, payload: bytes) -> bool:
        """Send one datagram from `src` to `dst_addr:port` and echo it back; True if both
        directions arrived intact."""
        rx = dst.socket(AF_INET, SOCK_DGRAM)
        rx.bind((dst_addr, port))
        tx = src.socket(AF_INET, SOCK_DGRAM)
        tx.settimeout(5)
        rx.settimeout(5)
        try:
            tx.sendto(payload, (dst_addr, port))
            data, peer = rx.recvfrom(65535)
            if data != payload:
                return False
            rx.sendto(data[::-1], peer)
            back, frm = tx.recvfrom(65535)
            return back == payload[::-1] and frm == (dst_addr, port)
        except TimeoutError:
            return False
        finally:
            rx.close()
            tx.close()

    @staticmethod
    def ping(src: Vnet, dst_addr: str, ident: int = 0x1234, seq: int = 1,
             payload: bytes = b"vimage-ping") -> bytes | None:
        """An ICMP echo over a raw socket; the reply's whole IP packet, or None."""
        s = src.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
        s.settimeout(5)
        try:
            s.sendto(wicmp.build_echo(wicmp.ECHO, ident, seq, payload), (dst_addr, 0))
            while True:
                pkt = s.recv(65535)
                hl = (pkt[0] & 0x0F) << 2
                msg = wicmp.parse(pkt[hl:])
                if msg.type == wicmp.ECHO_REPLY and msg.ident == ident and msg.seq == seq:
                    return pkt if bytes(msg.payload) == payload else None
        except TimeoutError:
            return None
        finally:
            s.close()


@pytest.fixture
def stack() -> type[Stack]:
    return Stack
