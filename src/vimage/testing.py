"""The pytest toolkit's topology builders, under the names its users know.

They live in `vimage.topo` (one implementation for tests, benches and the plugin):
`Net` builds anything (hosts, routers, impaired links, shortest-path routes, names),
`star` and `line` are the plugin's factory fixtures.

`nat_via` and `divert_via` stand in for the ipfw rules `ipfw add nat N ip from any to
any via IF` and `ipfw add divert PORT ip from any to any via IF` until ipfw is part of
the build: the NAT and divert tests, the interop tests and examples/natd.py call them,
so switching them to the real rules is a change here only. With ipfw, mind its default
rule (deny, unless `net.inet.ip.fw.default_to_accept=1`): the stand-ins let everything
else through, so the switch adds `ipfw add 65000 allow ip from any to any` — and a
reinjected packet resumes after the divert rule's number, which `rule` gives here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.net import pfil
from vimage.topo import Net, line, star

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet


def nat_via(vnet: Vnet, number: int, ifname: str | None) -> None:
    """Translate with NAT instance `number` what `vnet` receives on or sends through
    `ifname` (as `ipfw add nat N ip from any to any via IF`), or through any interface
    if `ifname` is None (as `ipfw add nat N ip from any to any`)."""
    def nat_in(pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        if ifname is not None and (ifp is None or ifp.name != ifname):
            return pkt
        return vnet.ipfw_nat.translate(number, pkt, ifp, False)

    def nat_out(pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        if ifname is not None and (ifp is None or ifp.name != ifname):
            return pkt
        return vnet.ipfw_nat.translate(number, pkt, ifp, True)

    name = f"nat {number}" + (f" via {ifname}" if ifname else "")
    pfil.link(vnet.ip, "pfil_in", nat_in, name=name)
    pfil.link(vnet.ip, "pfil_out", nat_out, name=name)


def divert_via(vnet: Vnet, port: int, ifname: str, rule: int = 100) -> None:
    """Divert to `port` what `vnet` receives on or sends through `ifname`, as rule
    `rule` (as `ipfw add RULE divert PORT ip from any to any via IF`)."""
    def divert(outgoing: bool) -> pfil.HookFn:
        def hook(pkt: bytes, ifp: Ifnet | None) -> bytes | None:
            if ifp is None or ifp.name != ifname:
                return pkt
            vnet.divert.deliver(port, pkt, ifp, outgoing, rule)
            return None  # consumed (or dropped and counted: nobody on the port)
        return hook

    pfil.link(vnet.ip, "pfil_in", divert(False), name=f"divert {port} via {ifname}")
    pfil.link(vnet.ip, "pfil_out", divert(True), name=f"divert {port} via {ifname}")


__all__ = ["Net", "divert_via", "line", "nat_via", "star"]
