"""What gif(4) and gre(4) share: a point-to-point interface whose packets travel
inside IP packets between two outer addresses (FreeBSD if_gif.c, if_gre.c).

The code is family-neutral: a tunnel has an outer `family` and its outer addresses
as ints, the per-vnet table of tunnels is keyed by (family, local, remote), and the
inner packet's version picks its protocol. The outer packet goes out through
`vnet.ip.output` (AF_INET) or `vnet.ip6.output` (AF_INET6, FreeBSD in6_gif_output,
in6_gre_output); each kind registers its input for both outer families.

Output is synchronous: the inner packet's ip output calls `Tunnel.output`, whose
`transmit` encapsulates and calls ip output again for the outer packet. FreeBSD
bounds that recursion with an mbuf tag per tunnel crossed (gif_check_nesting); here
the tunnels a packet is crossing are the per-vnet `state.stack` for the duration of
the call. A tunnel already on it is a loop (its outer route goes through itself, or
through a tunnel that leads back to it), more than `max_nesting` is too deep: both
are counted (`loops`, `nesting`, and the interface's oerrors) and dropped.

Input: the protocol switch hands the outer packet to the kind's `input`, which finds
the tunnel by (outer destination, outer source) and queues the inner packet for the
tunnel interface (the kernel loop delivers it: no recursion on input either). A
packet no tunnel matches goes to raw IP, as FreeBSD's encap_input passes it on.
"""

from __future__ import annotations

import errno
from socket import AF_INET, AF_INET6
from typing import TYPE_CHECKING, Any, ClassVar

from vimage.net import ether
from vimage.net.ifnet import IFF_MULTICAST, IFF_POINTOPOINT, IFF_UP, Ifnet
from vimage.net.offload import IFCAP_VXLAN_HWTSO, LARGE, TUNNEL_CAPS, VXLAN, resolve_ip
from vimage.net.route import RTF_REJECT
from vimage.stats import counters
from vimage.wire.ethernet import ETHERTYPE_IP
from vimage.wire.ipv6 import needs_zone

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.vnet import Vnet

ETHERTYPE_IPV6 = 0x86DD
IP6_HEADER_LEN = 40
# the largest outer payload a whole (GSO) packet may have: an IPv4 total length less
# its header, an IPv6 payload length
MAX_OUTER4 = 0xFFFF - 20
MAX_OUTER6 = 0xFFFF
# an inner packet's IP version -> the ethertype its input is registered under
_INNER_TYPES: tuple[int, ...] = tuple(ETHERTYPE_IPV6 if v == 6 else ETHERTYPE_IP
                                      for v in range(16))

TUNNEL_STATS = ("loops", "nesting", "noroute", "nomatch")
TunnelStats = counters("TunnelStats", TUNNEL_STATS)


class TunnelState:
    """Per-vnet state of one tunnel kind: its tunnels by outer addresses, tunables.

    Every vnet has one per kind, most never use it: the table and the counters are
    made on first use, the stack is an immutable tuple (the empty one is shared).
    """

    __slots__ = ("_stats", "max_nesting", "softcs", "stack", "ttl", "vnet")

    def __init__(self, vnet: Vnet, ttl: int) -> None:
        self.vnet = vnet
        # (family, local, remote) -> the tunnels with those outer addresses (gre may
        # have several, told apart by key); None until a tunnel is set
        self.softcs: dict[tuple[int, int, int], list[Tunnel]] | None = None
        self.stack: tuple[Tunnel, ...] = ()  # tunnels the packet being sent is crossing
        self.max_nesting = 1  # net.link.{gif,gre}.max_nesting
        self.ttl = ttl  # net.inet.ip.{gif,gre}ttl
        self._stats: Any = None

    @property
    def stats(self) -> Any:
        """Counters (TUNNEL_STATS), made on first use."""
        if self._stats is None:
            self._stats = TunnelStats()
        return self._stats

    def lookup(self, family: int, local: int, remote: int) -> list[Tunnel] | None:
        softcs = self.softcs
        return softcs.get((family, local, remote)) if softcs else None

    def attach_tunnel(self, tun: Tunnel) -> None:
        if self.softcs is None:
            self.softcs = {}
        self.softcs.setdefault((tun.family, tun.src, tun.dst), []).append(tun)

    def detach_tunnel(self, tun: Tunnel) -> None:
        key = (tun.family, tun.src, tun.dst)
        tuns = self.softcs.get(key) if self.softcs else None
        if tuns is not None and tun in tuns:
            tuns.remove(tun)
            if not tuns:
                del self.softcs[key]  # type: ignore[union-attr]

    def ifdetach(self, ifp: Ifnet) -> None:
        """An interface leaving its vnet loses its tunnel (FreeBSD gif_reassign)."""
        if isinstance(ifp, Tunnel) and getattr(ifp.vnet, ifp.SLOT) is self:
            ifp.delete_tunnel()
            ifp.peers.clear()
            ifp.peers6.clear()

    def clear(self) -> None:
        self.softcs = None
        self.stack = ()


class Tunnel(Ifnet):
    """A point-to-point tunnel interface; subclasses give `encap` and the constants."""

    __slots__ = ("dst", "family", "peers", "peers6", "src")

    KIND: ClassVar[str] = ""
    SLOT: ClassVar[str] = ""  # the per-vnet TunnelState's Vnet attribute
    MTU: ClassVar[int] = 1280

    def __init__(self, vnet: Vnet, unit: int) -> None:
        self.family = 0  # outer address family; 0 while no tunnel is set
        self.src = 0
        self.dst = 0
        self.peers: dict[int, int] = {}  # inner local address -> point-to-point destination
        self.peers6: dict[int, int] = {}  # the same for IPv6 addresses
        super().__init__(vnet, self.KIND, unit, f"{self.KIND}{unit}",
                         IFF_POINTOPOINT | IFF_MULTICAST, self.MTU, None)
        self.capabilities = self.capenable = TUNNEL_CAPS  # (vimage: see Tunnel.relays)

    # -- configuration ------------------------------------------------------------------
    def set_tunnel(self, src: int, dst: int, family: int = AF_INET) -> None:
        """`ifconfig IF tunnel SRC DST`. EADDRNOTAVAIL if a tunnel of this kind with those
        outer addresses exists and this kind cannot tell them apart (FreeBSD's
        in_gif_checkdup)."""
        if not src or not dst:
            raise OSError(errno.EADDRNOTAVAIL, "tunnel addresses must be set")
        state: TunnelState = getattr(self.vnet, self.SLOT)
        others = [t for t in state.lookup(family, src, dst) or () if t is not self]
        if any(not self.can_share(t) for t in others):
            raise OSError(errno.EADDRNOTAVAIL,
                          f"{others[0].name} already uses these tunnel addresses")
        self.delete_tunnel()
        self.family, self.src, self.dst = family, src, dst
        state.attach_tunnel(self)

    def can_share(self, other: Tunnel) -> bool:
        """Whether input can tell this tunnel and `other` (same outer addresses) apart."""
        return False

    def delete_tunnel(self) -> None:
        """`ifconfig IF -tunnel`."""
        if self.dst:
            getattr(self.vnet, self.SLOT).detach_tunnel(self)
        self.family = self.src = self.dst = 0

    # -- data path ----------------------------------------------------------------------
    def encap(self, pkt: bytes) -> tuple[int, bytes]:
        """(outer IP protocol, outer payload) for an inner packet."""
        raise NotImplementedError

    def relays(self, frame: bytes) -> bool:
        """An offloaded inner packet is encapsulated as it is: the outer packet goes
        out under the same mark, and wherever it is resolved (a capture, a hook, a link
        out of the process) the inner packet is filled (offload.resolve_ip looks inside
        IP-in-IP and GRE). A large TCP segment (TSO) is encapsulated whole when the
        outer packet's interface takes it (tunnel GSO, `encap_gso`), else cut into
        pieces that fit the tunnel, left unfilled, and each encapsulated
        (`gso_transmit`)."""
        return self.tx_takes(frame)

    def whole_ok(self) -> bool:
        """Whether a large segment may be encapsulated whole: its pieces' outer headers
        must be copies but for lengths and IDs (not so with a GRE sequence number)."""
        return True

    def transmit(self, frame: bytes) -> bool:
        """Encapsulate and send (gif_transmit / gre_transmit), refusing loops."""
        state: TunnelState = getattr(self.vnet, self.SLOT)
        if not self.dst or not frame:
            self.oerrors += 1
            return False
        offl = self.offl
        count = 1
        cut = 0
        whole: tuple[int, bytes] | None = None
        if offl.partial & LARGE:  # whole (tunnel GSO) or one outer packet per piece
            gso = encap_gso(self, frame, 0, self.family, self.dst) if self.whole_ok() else None
            if gso is None:
                return self.gso_transmit(frame, self.transmit)
            cut, count = gso
            whole = self.encap(frame)  # (no side effect: whole_ok)
            if len(whole[1]) > (MAX_OUTER4 if self.family == AF_INET else MAX_OUTER6):
                return self.gso_transmit(frame, self.transmit)  # (rare: 64 KB and more)
        stack = state.stack
        if self in stack:  # FreeBSD gif_check_nesting: "loop detected"
            state.stats.loops += count
            self.oerrors += count
            return False
        if len(stack) >= state.max_nesting:  # "if_output recursively called too many times"
            state.stats.nesting += count
            self.oerrors += count
            return False
        proto, payload = whole if whole is not None else self.encap(frame)
        tos = _outer_tos(frame)
        state.stack = (*stack, self)
        saved = offl.gso
        if count > 1:
            offl.gso = cut  # the outer packet's mark: its inner segment is cut at `cut`
        try:
            tunnel_output(self.vnet, self.family, proto, self.src, self.dst, payload,
                          state.ttl, tos)
        except OSError:
            state.stats.noroute += count
            self.oerrors += count
            return False
        finally:
            state.stack = stack
            if count > 1:
                offl.gso = saved
                reserve_ids(self.vnet, self.family, count)
        return True

    def decap(self, inner: bytes) -> None:
        """Queue a decapsulated packet for this interface's input (the kernel loop
        delivers it, as FreeBSD's netisr does)."""
        if not self.flags & IFF_UP:
            self.iqdrops += 1
            return
        if not inner:
            self.ierrors += 1
            return
        self.queue_input(inner, ~0)  # an offloaded outer packet's inner one stays so

    def input(self, frame: bytes) -> None:
        """An inner packet: counted, captured, then to its family's input by version."""
        if not self.flags & IFF_UP:
            self.iqdrops += 1
            return
        self.ipackets += 1
        self.ibytes += len(frame)
        if self.bpf is not None:
            offl = self.offl
            if offl.partial:  # captures see wire packets (vimage.net.offload)
                for piece in resolve_ip(frame, offl.gso, self.mtu,
                                        bool(offl.partial & VXLAN)):
                    self.bpf.tap(piece, False)
            else:
                self.bpf.tap(frame, False)
        ether.demux(self, _INNER_TYPES[frame[0] >> 4], frame)


def encap_gso(ifp: Ifnet, frame: bytes, off: int, family: int,
              dst: int) -> tuple[int, int] | None:
    """Tunnel GSO (Linux's SKB_GSO_IPXIP4/6, SKB_GSO_GRE, SKB_GSO_UDP_TUNNEL): whether
    tunnel `ifp` may encapsulate the large TCP segment `frame` (its IP header at `off`)
    whole, as one outer packet to `dst` of `family` that travels under the LARGE mark
    and is cut only where it must be (vimage.net.offload, `_encap_cut`). Then (the
    payload bytes per piece, the number of pieces): what the tunnel would have cut in
    software. Not when the outer packet's route leaves by an interface without
    VXLAN_HWTSO (another tunnel: nested tunnels cut first; a TAP), the vnet has pfil
    hooks (they see wire packets), no unicast route is found (the software path counts
    its errors), or the frame is no large plain TCP segment for this tunnel's MTU."""
    vnet = ifp.vnet
    offl = ifp.offl
    if vnet in offl.hooked or len(frame) < off + 40:
        return None
    version = frame[off] >> 4
    if version == 4:
        hl = (frame[off] & 0x0F) << 2
        if frame[off + 9] != 6 or frame[off + 6] & 0x3F or frame[off + 7]:
            return None
        end = off + ((frame[off + 2] << 8) | frame[off + 3])
    elif version == 6:
        hl = 40
        if frame[off + 6] != 6:
            return None
        end = off + 40 + ((frame[off + 4] << 8) | frame[off + 5])
    else:
        return None
    at = off + hl
    if end != len(frame) or end - at < 20:
        return None
    doff = (frame[at + 12] >> 4) << 2
    payload = end - at - doff
    cut = ifp.mtu - hl - doff
    if offl.gso < cut:
        cut = offl.gso
    if end - off <= ifp.mtu or cut <= 0 or payload <= cut:
        return None  # not large for this tunnel: sent on as one piece
    if family == AF_INET:
        route = vnet.rt.lookup(dst)
    elif family == AF_INET6 and not needs_zone(dst) and dst >> 120 != 0xFF:
        route = vnet.rt6.lookup(dst)
    else:
        return None
    if route is None or route.slots or route.flags & RTF_REJECT \
            or not route.ifp.capenable & IFCAP_VXLAN_HWTSO:
        return None
    return cut, -(-payload // cut)


def reserve_ids(vnet: Vnet, family: int, count: int) -> None:
    """After a whole (GSO) outer IPv4 packet of `count` pieces: the IP IDs its pieces
    take when it is cut (the outer one and the `count - 1` after it, as Linux's
    inet_gso_segment numbers them) are not handed out again, so the next packet has
    the ID it has when the tunnel sends the pieces one by one."""
    if family == AF_INET:
        ip = vnet.ip
        ip.ident = (ip.ident + count - 1) & 0xFFFF


def _outer_tos(frame: bytes) -> int:
    """The outer TOS / traffic class: the inner one without ECN (ip_ecn_ingress with
    ECN_NOCARE), from an IPv4 TOS byte or an IPv6 traffic class."""
    if len(frame) < 2:
        return 0
    version = frame[0] >> 4
    if version == 4:
        return frame[1] & 0xFC
    if version == 6:
        return (((frame[0] & 0x0F) << 4) | (frame[1] >> 4)) & 0xFC
    return 0


def tunnel_output(vnet: Vnet, family: int, proto: int, src: int, dst: int, payload: bytes,
                  ttl: int, tos: int) -> None:
    """Send an outer packet of `family` (AF_INET or AF_INET6); OSError as ip output.
    Over IPv6 the outer packet may be fragmented at the source (RFC 2473 7.1: a tunnel
    whose path MTU is below the inner packet fragments the outer one)."""
    if family == AF_INET:
        vnet.ip.output(proto, src, dst, payload, ttl=ttl, tos=tos)
        return
    if family == AF_INET6:
        vnet.ip6.output(proto, src, dst, payload, hlim=ttl, tclass=tos)
        return
    raise OSError(errno.EAFNOSUPPORT, f"tunnel address family {family} is not supported")


def outer_nomatch(state: TunnelState, family: int, ifp: Ifnet, pkt: bytes, off: int,
                  src: int, dst: int) -> None:
    """An outer packet no tunnel takes: counted, then raw IP's (IPv4: rip_input); over
    IPv6, with no raw IPv6 socket layer, a parameter problem at the next header when it
    directly follows the fixed header (rip6_input with no socket), else dropped."""
    state.stats.nomatch += 1
    vnet = state.vnet
    if family == AF_INET:
        vnet.raw.ip_input(ifp, pkt, off, src, dst)
        return
    ip6 = vnet.ip6
    handler = ip6.unclaimed(-1)
    if handler is not None:  # a raw IPv6 protocol registered for any next header
        handler(ifp, pkt, off, src, dst)
    elif off == IP6_HEADER_LEN:
        ip6.noproto(ifp, pkt, 6)


def next_unit(vnet: Vnet, kind: str, wanted: int | None) -> int:
    """The unit of a new `kind` interface in `vnet`: `wanted`, or the lowest free one
    (FreeBSD's cloners number per vnet)."""
    used = {i.unit for i in vnet.ifaces.values() if i.kind == kind}
    if wanted is not None:
        if wanted in used:
            raise FileExistsError(f"interface {kind}{wanted} already exists")
        return wanted
    unit = 0
    while unit in used:
        unit += 1
    return unit


class TunnelCloner:
    """An interface cloner (kernel service): `create(vnet, unit=None)`."""

    IFCLASS: ClassVar[type[Ifnet]]

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel

    def create(self, vnet: Vnet, unit: int | None = None) -> Ifnet:
        with self.kernel.sched.cond:
            kind = self.IFCLASS.KIND  # type: ignore[attr-defined]
            return self.IFCLASS(vnet, next_unit(vnet, kind, unit))  # type: ignore[call-arg]
