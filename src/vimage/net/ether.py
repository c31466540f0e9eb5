"""The Ethernet link layer (FreeBSD if_ethersubr.c): input by ethertype, output with a header.

It knows no network protocol: the vnet's ethertype table (`vnet.ethertypes`, filled by
the protocol switch from descriptors with an `ethertype`) says who takes a frame.
`EtherIfnet.input` handles the common case (unicast to us, a known type) inline and
calls `ether_input` for the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage import protosw
from vimage.net import ifnet  # a module reference: ifnet imports this module too

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet


def ether_input(ifp: Ifnet, frame: bytes) -> None:
    """A received frame the fast path did not take: check it, then hand its payload to
    the protocol registered for its ethertype (ether_input_internal / ether_demux)."""
    if len(frame) < 14 or frame[6] & 1:
        ifp.ierrors += 1  # runt, or a multicast source address
        return
    if frame[:6] != ifp.mac and not frame[0] & 1 and not ifp.flags & ifnet.IFF_PROMISC:
        return  # unicast to another station
    demux(ifp, (frame[12] << 8) | frame[13], frame[14:])


def demux(ifp: Ifnet, etype: int, payload: bytes) -> None:
    """Hand `payload` to the protocol registered for `etype` in the vnet's table (the
    first packet binds it), or count an unknown type (ether_demux)."""
    vnet = ifp.vnet
    handler = vnet.ethertypes.get(etype)
    if handler is None and (handler := protosw.late_ethertype(vnet, etype)) is None:
        ifp.iqdrops += 1  # unknown protocol
        return
    handler(ifp, payload)


def ether_output(ifp: Ifnet, dst: bytes, ethertype: bytes, payload: bytes) -> bool:
    """Send `payload` to station `dst` with a header from `ifp`'s address."""
    return ifp.output(b"".join((dst, ifp.mac, ethertype, payload)))  # type: ignore[arg-type]
