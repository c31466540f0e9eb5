"""Helpers of the dummynet tests: packets get into dummynet through ipfw rules.

`shape(vnet, *rules)` adds ipfw rules numbered 100, 110, ... (by default `pipe 1 ip from
any to any out`: every IPv4 packet the vnet transmits) and `65000 allow ip from any to
any` for the rest (ipfw's default rule denies). With `net.inet.ip.fw.one_pass=1`, the
default, what dummynet releases leaves without a second pass through the rules.

`shape_direct(vnet)` is the direct-API path kept for one test: a pfil hook calling
`vnet.dummynet.enqueue` itself, as ipfw's `pipe` action does (the issue-12 contract).
"""

from __future__ import annotations

from vimage.net import pfil
from vimage.net.ifnet import Ifnet
from vimage.vnet import Vnet


def shape(vnet: Vnet, *rules: str) -> None:
    for n, rule in enumerate(rules or ("pipe 1 ip from any to any out",)):
        _ipfw(vnet, f"add {100 + 10 * n} {rule}")
    _ipfw(vnet, "add 65000 allow ip from any to any")


def _ipfw(vnet: Vnet, args: str) -> None:
    result = vnet.cmd(f"ipfw -q {args}")
    assert result.ok, result.output


def shape_direct(vnet: Vnet, number: int = 1) -> None:
    """Every IPv4 packet `vnet` sends into pipe `number` by the dummynet API, resumed
    by IPv4 output after the hooks (`IpState.output_after_pfil`)."""
    ip = vnet.ip

    def hook(pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        vnet.dummynet.enqueue(number, False, pkt, ifp, True, ip.output_after_pfil)
        return None

    pfil.link(ip, "pfil_out", hook, name="dummynet-test")


def dport(pkt: bytes) -> int:
    hlen = (pkt[0] & 0x0F) << 2
    return int.from_bytes(pkt[hlen + 2:hlen + 4], "big")
