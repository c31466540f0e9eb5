"""ipfw: FreeBSD's IP firewall, one instance per vnet (sys/netpfil/ipfw, ipfw(8)).

    rule.py     a rule: action, counters, predicates
    parse.py    the rule grammar: tokens -> Rule (predicates + canonical text)
    packet.py   what the rules read of a packet (parsed once per pass)
    table.py    lookup tables (longest-prefix match, a dict per prefix length)
    dyn.py      dynamic rules (keep-state, record-state, limit)
    state.py    `vnet.ipfw`: ruleset, pfil hooks, evaluation, actions, log, tunables
    command.py  the ipfw(8) commands

`reinject` is the entry point divert sockets call to send a packet back (divert(4)).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.netpfil.ipfw import state as _state
from vimage.netpfil.ipfw.parse import IpfwError
from vimage.netpfil.ipfw.state import IpfwState
from vimage.protosw import Protocol

if TYPE_CHECKING:
    from vimage.vnet import Vnet

PROTOCOL = Protocol("ipfw", 25, "ipfw", _state.vnet_attach, _state.vnet_detach,
                    sysctls=_state.SYSCTLS)
"""After IPv4 (20): ipfw links its hooks to `vnet.ip`, and is detached before it."""


def reinject(vnet: Vnet, pkt: bytes, outgoing: bool, ifname: str | None,
             after_rule: int) -> None:
    """Send back a packet a divert socket read (divert(4) sendto): ipfw continues at the
    first rule numbered above `after_rule`, then IPv4 input (incoming: on interface
    `ifname`, else lo0) or output (outgoing) goes on."""
    fw: IpfwState | None = getattr(vnet, "ipfw", None)
    if fw is None or not vnet.alive:
        return
    ifp = vnet.ifaces.get(ifname) if ifname else None
    rules = fw.ruleset()
    start = fw.next_index(after_rule + 1)
    fw.resume(pkt, outgoing, ifp, None if outgoing else ifp, min(start, len(rules) - 1),
              skip=False)


__all__ = ["PROTOCOL", "IpfwError", "IpfwState", "reinject"]
