"""Helpers of the dummynet tests: a test-only pfil hook standing in for ipfw.

Until ipfw selects packets with rules, `shape(vnet)` links a hook at `vnet.ip.pfil_out`
that sends every IPv4 packet the vnet transmits into dummynet (`pipe 1`, or what
`classify(pkt)` says) and, when dummynet releases it, resumes what the hook
interrupted: the link output of ip_output / ip_forward (`IpState._link_output`, toward
the next hop of the packet's route).
"""

from __future__ import annotations

from collections.abc import Callable

from vimage.net import pfil
from vimage.net.ifnet import Ifnet
from vimage.net.route import RTF_GATEWAY
from vimage.vnet import Vnet

Classify = Callable[[bytes], tuple[int, bool]]


def pipe_one(pkt: bytes) -> tuple[int, bool]:
    return 1, False


def shape(vnet: Vnet, classify: Classify = pipe_one) -> None:
    ip = vnet.ip

    def hook(pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        number, is_queue = classify(pkt)
        dst = int.from_bytes(pkt[16:20], "big")

        def resume(out: bytes) -> None:
            assert ifp is not None
            route = ip.route_to(dst)
            nexthop = route.gateway if route.flags & RTF_GATEWAY else dst
            ip._link_output(ifp, out, nexthop, False)

        vnet.dummynet.enqueue(number, is_queue, pkt, ifp, True, resume)
        return None

    pfil.link(ip, "pfil_out", hook, name="dummynet-test")


def dport(pkt: bytes) -> int:
    hlen = (pkt[0] & 0x0F) << 2
    return int.from_bytes(pkt[hlen + 2:hlen + 4], "big")
