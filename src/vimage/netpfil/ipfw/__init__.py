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
from vimage.wire.checksum import checksum

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
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
    checked = _checked(vnet, pkt, outgoing)
    if checked is None:
        return
    pkt = checked
    rules = fw.ruleset()
    # div_output tags the packet with rulenum sin_port + 1: ipfw_chk resumes there
    start = min(fw.next_index(after_rule + 1), len(rules) - 1)
    if outgoing:
        # ip_output routes it, and ipfw's out pass sees the interface it leaves by
        try:
            ifp: Ifnet | None = vnet.ip.route_to(int.from_bytes(pkt[16:20], "big")).ifp
        except OSError:
            return  # counted (noroute) by route_to, as ip_output would
        fw.resume(pkt, True, ifp, None, start, skip=False)
        return
    ifp = vnet.ifaces.get(ifname) if ifname else None
    # netisr_queue_src: ip_input takes it from the queue, not inside sendto
    vnet.kernel.call_later(0, fw.resume, pkt, False, ifp, ifp, start, False, owner=vnet)


def _checked(vnet: Vnet, pkt: bytes, outgoing: bool) -> bytes | None:
    """A reinjected datagram as IPv4 would take it, or None (counted in IPv4's counters,
    as ip_input counts what it refuses). Going out, the header checksum is computed, as
    ip_output does for divert(4)'s writes; coming in, it must be right."""
    st = vnet.ip.stats
    n = len(pkt)
    if n < 20:
        st.toosmall += 1
        return None
    if pkt[0] >> 4 != 4:
        st.badvers += 1
        return None
    hlen = (pkt[0] & 0x0F) << 2
    if hlen < 20 or hlen > n:
        st.badhlen += 1
        return None
    total = (pkt[2] << 8) | pkt[3]
    if total < hlen:
        st.badlen += 1
        return None
    if total > n:
        st.tooshort += 1
        return None
    pkt = bytes(pkt[:total])
    if outgoing:
        header = bytearray(pkt[:hlen])
        header[10:12] = b"\x00\x00"
        header[10:12] = checksum(header).to_bytes(2, "big")
        return bytes(header) + pkt[hlen:]
    if checksum(pkt[:hlen]) != 0:
        st.badsum += 1
        return None
    return pkt


__all__ = ["PROTOCOL", "IpfwError", "IpfwState", "reinject"]
