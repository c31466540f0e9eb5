"""vlan(4): IEEE 802.1Q VLAN interfaces on an Ethernet parent of the same vnet.

A VLAN interface (`vlan0`, or `epair0a.10`) has its parent's MAC address; what it
transmits gets a tag (its VID and PCP) and goes out through the parent's `output`;
what the parent receives with the 802.1Q ethertype is demultiplexed by (parent, VID):
the parent's `l2` is its trunk (FreeBSD's ifvlantrunk), which `EtherIfnet.input`
consults for every frame (as FreeBSD's ether_input hands 0x8100 frames to
vlan_input_p before ether_demux: the network-protocol ethertype table gets the payload
without the MAC addresses the VLAN interface needs). A tagged frame for a VID without
an interface is counted (the parent's `iqdrops`, FreeBSD's IFCOUNTER_NOPROTO, and the
trunk's `unknown_vid`) and dropped; a tagged frame on a parent without VLANs reaches the
ethertype table, which counts it as an unknown type. The MTU is the parent's when the
parent has the VLAN_MTU capability (epair and tap, as FreeBSD's epair and tap), else
the parent's less the 4 bytes of the tag. A parent destroyed or moved away leaves its
VLANs detached (vlan_ifdetach). Follows FreeBSD sys/net/if_vlan.c and vlan(4).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from vimage.net.ifnet import (
    ETHER_MTU,
    IFF_BROADCAST,
    IFF_L2,
    IFF_MULTICAST,
    IFF_RUNNING,
    IFF_SIMPLEX,
    EtherIfnet,
    Ifnet,
    destroy,
)
from vimage.net.offload import RELAY_CAPS
from vimage.wire.vlan import PCP_MAX, TAG_LEN, TPID_BYTES, VID_MAX, VID_MIN, tci

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.vnet import Vnet

VLAN_MTU_KINDS = frozenset(("epair", "tap"))
"""Interface kinds with FreeBSD's IFCAP_VLAN_MTU: a tagged full-size frame fits."""


class Trunk:
    """The VLANs of one parent, by VID: FreeBSD's struct ifvlantrunk."""

    __slots__ = ("parent", "unknown_vid", "vlans")

    def __init__(self, parent: Ifnet) -> None:
        self.parent = parent
        self.vlans: dict[int, Vlan] = {}
        self.unknown_vid = 0

    def l2input(self, ifp: Ifnet, frame: bytes) -> bool:
        """vlan_input: take a tagged frame to its VLAN interface; False for others."""
        if frame[12:14] != TPID_BYTES:
            return False
        if len(frame) < 18:
            ifp.ierrors += 1
            return True
        vlan = self.vlans.get(((frame[14] << 8) | frame[15]) & 0x0FFF)
        if vlan is None:
            self.unknown_vid += 1
            ifp.iqdrops += 1  # IFCOUNTER_NOPROTO
            return True
        vlan.input_offloaded(frame[:12] + frame[16:])  # (an offloaded frame: its RXCSUM)
        return True


class Vlan(EtherIfnet):
    """One VLAN interface; `parent` None while unconfigured (or after `-vlandev`)."""

    __slots__ = ("parent", "pcp", "tag", "vid")

    def __init__(self, vnet: Vnet, unit: int, name: str) -> None:
        self.parent: Ifnet | None = None
        self.vid = 0
        self.pcp = 0
        self.tag = b""
        super().__init__(vnet, "vlan", unit, name, IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST,
                         ETHER_MTU, bytes(6))
        self.capabilities = self.capenable = RELAY_CAPS

    def configure(self, parent: Ifnet | None, vid: int | None, pcp: int | None = None) -> None:
        """`vlan VID vlandev PARENT` and `vlanpcp N` (SIOCSETVLAN); OSError on refusal."""
        if pcp is not None:
            if not 0 <= pcp <= PCP_MAX:
                raise OSError(errno.EINVAL, f"vlanpcp {pcp}: must be 0..{PCP_MAX}")
            self.pcp = pcp
        new_parent = parent if parent is not None else self.parent
        new_vid = vid if vid is not None else self.vid
        if vid is not None and not VID_MIN <= vid <= VID_MAX:
            raise OSError(errno.EINVAL, f"vlan {vid}: must be {VID_MIN}..{VID_MAX}")
        if new_parent is not None and (new_parent is not self.parent or new_vid != self.vid):
            if not new_vid:
                raise OSError(errno.EINVAL, "a vlan tag is needed (vlan N)")
            _check_parent(self, new_parent, new_vid)
            self.unconfigure()
            trunk = new_parent.l2
            if trunk is None:
                trunk = new_parent.l2 = Trunk(new_parent)
                new_parent.flags |= IFF_L2
            trunk.vlans[new_vid] = self
            self.parent = new_parent
            if self.mac != new_parent.mac:
                self.mac = new_parent.mac
                self.vnet.kernel.ifnet_lladdr(self)  # headers built with the old one
            self.mtu = new_parent.mtu - (0 if new_parent.kind in VLAN_MTU_KINDS else TAG_LEN)
            self.flags |= IFF_RUNNING
        self.vid = new_vid
        self.tag = TPID_BYTES + tci(self.vid, self.pcp).to_bytes(2, "big")

    def unconfigure(self) -> None:
        """`-vlandev` (SIOCSETVLAN with no parent), or the parent left: vlan_unconfig."""
        parent = self.parent
        if parent is None:
            return
        trunk = parent.l2
        if isinstance(trunk, Trunk) and trunk.vlans.get(self.vid) is self:
            del trunk.vlans[self.vid]
            if not trunk.vlans:
                parent.l2 = None
                parent.flags &= ~IFF_L2
        self.parent = None
        self.flags &= ~IFF_RUNNING

    def relays(self, frame: bytes) -> bool:
        """An offloaded frame goes to the parent tagged and still offloaded: the parent
        keeps it whole for an in-process peer or fills it (vimage.net.offload)."""
        return self.parent is not None and self.tx_takes(frame)

    def transmit(self, frame: bytes) -> bool:
        """Insert the tag after the MAC addresses and send through the parent."""
        parent = self.parent
        if parent is None or not self.flags & IFF_RUNNING:
            self.oerrors += 1
            return False
        return parent.output(b"".join((frame[:12], self.tag, frame[12:])))


def _check_parent(vlan: Vlan, parent: Ifnet, vid: int) -> None:
    if parent.vnet is not vlan.vnet:
        raise OSError(errno.ENOENT, f"{parent.name}: no such interface")
    if parent is vlan or parent.mac is None or not isinstance(parent, EtherIfnet):
        raise OSError(errno.EINVAL, f"{parent.name} cannot be a vlan parent")
    trunk = parent.l2
    if trunk is not None and not isinstance(trunk, Trunk):
        raise OSError(errno.EBUSY, f"{parent.name} is a bridge member")
    if trunk is not None and trunk.vlans.get(vid) not in (None, vlan):
        raise OSError(errno.EEXIST, f"vlan {vid} already exists on {parent.name}")


class VlanCloner:
    """The vlan cloner, a kernel service; told when interfaces leave a vnet, so that a
    parent going away detaches its VLANs and a VLAN going away leaves its trunk."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def create(self, vnet: Vnet, name: str | None = None) -> Vlan:
        """`vlanN` (the first free N if `name` is None) or a dotted `PARENT.VID`."""
        if name is None or name == "vlan":
            unit = 0
            while f"vlan{unit}" in vnet.ifaces:
                unit += 1
            return Vlan(vnet, unit, f"vlan{unit}")
        if name.startswith("vlan") and name[4:].isdigit():
            return Vlan(vnet, int(name[4:]), name)
        parent_name, dot, vid_text = name.rpartition(".")
        if not dot or not vid_text.isdigit():
            raise ValueError(f"{name}: not a vlan interface name")
        parent = vnet.ifaces.get(parent_name)
        if parent is None:
            raise OSError(errno.ENOENT, f"{parent_name}: no such interface")
        vid = int(vid_text)
        vlan = Vlan(vnet, vid, name)
        try:
            vlan.configure(parent, vid)
        except OSError:
            destroy(vlan)
            raise
        return vlan

    def ifdetach(self, ifp: Ifnet) -> None:
        if isinstance(ifp, Vlan):
            ifp.unconfigure()
            return
        trunk = ifp.l2
        if isinstance(trunk, Trunk):
            for vlan in list(trunk.vlans.values()):
                vlan.unconfigure()


def create_vlan(vnet: Vnet, name: str | None = None) -> Vlan:
    return vnet.kernel.service(VlanCloner).create(vnet, name)
