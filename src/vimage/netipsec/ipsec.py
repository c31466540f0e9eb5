"""IPsec per vnet: the SAD and SPD (`vnet.ipsec`), policy checks on output and input,
and ESP (RFC 4303) in transport and tunnel mode (FreeBSD netipsec/ipsec.c,
ipsec_output.c, ipsec_input.c, xform_esp.c, key.c).

Where it hooks in:
- output: a pfil hook at `ip.pfil_out` (it sees every packet sent or forwarded, before
  fragmentation; FreeBSD's ip_output calls IPSEC_OUTPUT at the same place, before the
  firewall's hooks). A packet matching an `out ipsec` policy is encapsulated and the
  ESP packet is sent by `ip.output_packet`, whose hooks see it again (the firewall sees
  ESP, as on FreeBSD); our hook lets it pass because it is the object we just sent (the
  role of FreeBSD's IPSEC_OUT_DONE mbuf tag).
- input: ESP (IP protocol 50) is a protocol-switch descriptor (`PROTOCOL`). Transport
  mode hands the decrypted payload to its protocol's input (ip_protox); tunnel mode
  hands the inner packet to IPv4 input again (FreeBSD requeues it on the IP netisr).
- the inbound policy check (ipsec4_in_reject): a pfil hook at `ip.pfil_in` drops a
  plaintext packet that an `in ipsec .../require` policy says must have come in ESP.
  ESP itself and the inner packets of tunnel mode pass it.
The hooks are linked only while the SPD holds a policy: without IPsec a packet pays
nothing.

Differences from FreeBSD, on purpose: an SA added without `-r` gets the 64-packet
anti-replay window (setkey's default is none); an ESP packet that would exceed the
outgoing MTU is sent with DF clear and fragmented (FreeBSD shrinks TCP's segment by
ipsec_hdrsiz instead), and a tunnel's outer header never sets DF (FreeBSD's default
net.inet.ipsec.dfbit=0). No IKE: a packet with no SA is dropped (no SADB_ACQUIRE).
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from socket import AF_INET, AF_INET6
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.net import pfil
from vimage.netipsec.key import (
    LEVEL_REQUIRE,
    LEVEL_UNIQUE,
    MODE_ANY,
    MODE_TUNNEL,
    Request,
    SecAssoc,
    SecPolicy,
)
from vimage.netipsec.xform import AesGcm16, AuthError
from vimage.protosw import Protocol
from vimage.stats import LazySlots, counters
from vimage.wire import esp as wesp
from vimage.wire import ipv6 as wip6
from vimage.wire._common import WireError
from vimage.wire.checksum import checksum
from vimage.wire.ipv4 import HEADER as IP_HEADER

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

ORDER_IPSEC = -150
"""Before fault injection (-100) and the firewall (0): they see the ESP packet that goes
out, not the plaintext, as FreeBSD's pfil hooks run after IPSEC_OUTPUT."""

IPPROTO_IPV4 = 4
IPPROTO_IPV6 = 41
_from_bytes = int.from_bytes
_EMPTY: Mapping[Any, Any] = MappingProxyType({})
FLAG_DF = 0x40  # in the first byte of the flags/offset field

# FreeBSD's struct espstat (netipsec/esp_var.h) and netstat's print_espstats (ipsec.c)
STAT_LINES = (
    ("hdrops", "{} packets shorter than header shows"),
    ("nopf", "{} packets dropped; protocol family not supported"),
    ("notdb", "{} packets dropped; no TDB"),
    ("badkcr", "{} packets dropped; bad KCR"),
    ("qfull", "{} packets dropped; queue full"),
    ("noxform", "{} packets dropped; no transform"),
    ("badilen", "{} packets dropped; bad ilen"),
    ("wrap", "{} replay counter wraps"),
    ("badenc", "{} packets dropped; bad encryption detected"),
    ("badauth", "{} packets dropped; bad authentication detected"),
    ("replay", "{} possible replay packets detected"),
    ("input", "{} packets in"),
    ("output", "{} packets out"),
    ("invalid", "{} packets dropped; invalid TDB"),
    ("ibytes", "{} bytes in"),
    ("obytes", "{} bytes out"),
    ("toobig", "{} packets dropped; larger than IP_MAXPACKET"),
    ("pdrops", "{} packets blocked due to policy"),
    ("crypto", "{} crypto processing failures"),
    ("tunnel", "{} tunnel sanity check failures"),
)
EspStats = counters("EspStats", tuple(attr for attr, _ in STAT_LINES))
# FreeBSD's struct ipsecstat (netipsec/ipsec.h): policy decisions
IpsecStats = counters("IpsecStats", ("in_polvio", "out_polvio", "out_nosa", "out_inval"))


def _ends(pkt: bytes) -> tuple[int, int, int]:
    """(source, destination, family) of an IPv4 or IPv6 packet."""
    if pkt[0] >> 4 == 6:
        return _from_bytes(pkt[8:24], "big"), _from_bytes(pkt[24:40], "big"), AF_INET6
    return _from_bytes(pkt[12:16], "big"), _from_bytes(pkt[16:20], "big"), AF_INET


class IpsecState(LazySlots):
    """A vnet's SAD, SPD and ESP counters (FreeBSD's V_sahtree/V_sptree, V_espstat)."""

    __slots__ = ("_pstats", "_stats", "by_pair", "by_spi", "decapsulated", "hooks", "hooks6",
                 "next_sadb_seq", "next_spid", "sad", "sent", "spd", "spd6_in", "spd6_out",
                 "spd_in", "spd_out", "vnet")
    lazy = MappingProxyType({"sad": list, "spd": list})

    def __init__(self, vnet: Vnet) -> None:
        # every vnet has one and most never use it: the tables start as shared empty
        # values and the counters are made on first use (a vnet's creation stays cheap)
        self.vnet = vnet
        self._stats: Any = None
        self._pstats: Any = None
        self.sad: list[SecAssoc]  # in the order added (setkey -D prints it so)
        # (spi, dst, family): key_allocsa; (src, dst, family): the SAs between two ends
        self.by_spi: Mapping[tuple[int, int, int], SecAssoc] = _EMPTY
        self.by_pair: Mapping[tuple[int, int, int], list[SecAssoc]] = _EMPTY
        self.spd: list[SecPolicy]  # both made on first read (LazySlots)
        self.spd_in: tuple[SecPolicy, ...] = ()  # IPv4 policies by direction
        self.spd_out: tuple[SecPolicy, ...] = ()
        self.spd6_in: tuple[SecPolicy, ...] = ()  # IPv6 policies by direction
        self.spd6_out: tuple[SecPolicy, ...] = ()
        self.next_spid = 1
        self.next_sadb_seq = 0
        self.hooks: tuple[pfil.HookFn, pfil.HookFn] | None = None  # (out, in) while linked
        self.hooks6: tuple[pfil.HookFn, pfil.HookFn] | None = None  # the same at ip6
        self.sent: bytes | None = None  # the ESP packet being sent (IPSEC_OUT_DONE)
        self.decapsulated: bytes | None = None  # the inner packet being input

    @property
    def stats(self) -> Any:
        """ESP counters (STAT_LINES), made on first use."""
        if self._stats is None:
            self._stats = EspStats()
        return self._stats

    @property
    def pstats(self) -> Any:
        """Policy counters (IpsecStats), made on first use."""
        if self._pstats is None:
            self._pstats = IpsecStats()
        return self._pstats

    # -- the SAD ----------------------------------------------------------------------
    def add_sa(self, sa: SecAssoc) -> None:
        """SADB_ADD; EEXIST if the (SPI, destination) is taken (key_add)."""
        if (sa.spi, sa.dst, sa.family) in self.by_spi:
            raise OSError(errno.EEXIST, "File exists")
        sa.serial = self.next_sadb_seq
        self.next_sadb_seq += 1
        if self.by_spi is _EMPTY:
            self.by_spi, self.by_pair = {}, {}
        self.sad.append(sa)
        self.by_spi[(sa.spi, sa.dst, sa.family)] = sa  # type: ignore[index]
        self.by_pair.setdefault(  # type: ignore[attr-defined]
            (sa.src, sa.dst, sa.family), []).append(sa)

    def get_sa(self, src: int, dst: int, spi: int, family: int = AF_INET) -> SecAssoc:
        sa = self.by_spi.get((spi, dst, family))
        if sa is None or sa.src != src:
            raise OSError(errno.ESRCH, "No such process")
        return sa

    def delete_sa(self, src: int, dst: int, spi: int, family: int = AF_INET) -> None:
        self._remove([self.get_sa(src, dst, spi, family)])

    def delete_all(self, src: int, dst: int, family: int = AF_INET) -> None:
        found = [sa for sa in self.sad
                 if sa.src == src and sa.dst == dst and sa.family == family]
        if not found:
            raise OSError(errno.ESRCH, "No such process")
        self._remove(found)

    def flush_sa(self) -> None:
        self._remove(list(self.sad))

    def _remove(self, gone: list[SecAssoc]) -> None:
        by_spi, by_pair = self.by_spi, self.by_pair
        for sa in gone:
            self.sad.remove(sa)
            del by_spi[(sa.spi, sa.dst, sa.family)]  # type: ignore[attr-defined]
            pair = by_pair[(sa.src, sa.dst, sa.family)]
            pair.remove(sa)
            if not pair:
                del by_pair[(sa.src, sa.dst, sa.family)]  # type: ignore[attr-defined]

    def snapshot(self) -> tuple[list[SecAssoc], list[SecPolicy], int, int]:
        """What `restore` puts back: setkey applies an input whole or not at all."""
        return list(self.sad), list(self.spd), self.next_sadb_seq, self.next_spid

    def restore(self, saved: tuple[list[SecAssoc], list[SecPolicy], int, int]) -> None:
        sad, spd, self.next_sadb_seq, self.next_spid = saved
        self.sad, self.spd = list(sad), list(spd)
        by_pair: dict[tuple[int, int, int], list[SecAssoc]] = {}
        for sa in sad:
            by_pair.setdefault((sa.src, sa.dst, sa.family), []).append(sa)
        self.by_spi = {(sa.spi, sa.dst, sa.family): sa for sa in sad}
        self.by_pair = by_pair
        self._spd_changed()

    # -- the SPD ----------------------------------------------------------------------
    def add_sp(self, sp: SecPolicy) -> None:
        """SADB_X_SPDADD; EEXIST for a second policy with the same selector (key_spdadd)."""
        if any(p.selector_key == sp.selector_key for p in self.spd):
            raise OSError(errno.EEXIST, "File exists")
        sp.spid = self.next_spid
        self.next_spid += 1
        sp.created_ns = self.vnet.kernel.sched.now_ns()
        self.spd.append(sp)
        self._spd_changed()

    def delete_sp(self, selector: tuple) -> None:  # type: ignore[type-arg]
        found = [p for p in self.spd if p.selector_key == selector]
        if not found:
            raise OSError(errno.ESRCH, "No such process")
        self.spd.remove(found[0])
        self._spd_changed()

    def flush_sp(self) -> None:
        self.spd.clear()
        self._spd_changed()

    def _spd_changed(self) -> None:
        def of(direction: str, family: int) -> tuple[SecPolicy, ...]:
            return tuple(p for p in self.spd if p.direction == direction and p.family == family)

        self.spd_in, self.spd_out = of("in", AF_INET), of("out", AF_INET)
        self.spd6_in, self.spd6_out = of("in", AF_INET6), of("out", AF_INET6)
        self.hooks = self._link(self.vnet.ip, bool(self.spd_in or self.spd_out), self.hooks,
                                self.output_hook, self.input_hook)
        ip6 = getattr(self.vnet, "ip6", None)
        if ip6 is not None:
            self.hooks6 = self._link(ip6, bool(self.spd6_in or self.spd6_out), self.hooks6,
                                     self.output_hook, self.input_hook)

    @staticmethod
    def _link(owner: Any, want: bool, hooks: tuple[pfil.HookFn, pfil.HookFn] | None,
              out_fn: pfil.HookFn, in_fn: pfil.HookFn) -> tuple[pfil.HookFn, pfil.HookFn] | None:
        """Link (out, in) at `owner`'s pfil points while policies want them; the hooks
        linked (one bound method each, for unlink), or None."""
        if want and hooks is None:
            hooks = (out_fn, in_fn)
            pfil.link(owner, "pfil_out", hooks[0], order=ORDER_IPSEC, name="ipsec")
            pfil.link(owner, "pfil_in", hooks[1], order=ORDER_IPSEC, name="ipsec")
        elif not want and hooks is not None:
            pfil.unlink(owner, "pfil_out", hooks[0])
            pfil.unlink(owner, "pfil_in", hooks[1])
            hooks = None
        return hooks

    def lookup(self, pkt: bytes, direction: str) -> SecPolicy | None:
        """The first policy of `direction` whose selector matches `pkt` (key_allocsp), an
        IPv4 or IPv6 packet. IPv6 neighbour discovery is never matched: its messages
        must flow before any SA could be used (RFC 4301 4.4.1, as Linux and KAME do)."""
        if pkt[0] >> 4 == 6:
            spd = self.spd6_out if direction == "out" else self.spd6_in
            if not spd or len(pkt) < 40:
                return None
            proto, hlen = pkt[6], 40
            if proto == 58 and len(pkt) > 40 and 133 <= pkt[40] <= 137:
                return None
            src, dst = _from_bytes(pkt[8:24], "big"), _from_bytes(pkt[24:40], "big")
            first = True
        else:
            spd = self.spd_out if direction == "out" else self.spd_in
            hlen, proto = (pkt[0] & 0x0F) << 2, pkt[9]
            src, dst = _from_bytes(pkt[12:16], "big"), _from_bytes(pkt[16:20], "big")
            first = not ((pkt[6] << 8) | pkt[7]) & 0x1FFF
        sport = dport = -1
        if proto in (6, 17) and first and len(pkt) >= hlen + 4:
            sport = (pkt[hlen] << 8) | pkt[hlen + 1]
            dport = (pkt[hlen + 2] << 8) | pkt[hlen + 3]
        for sp in spd:
            if sp.matches(src, dst, proto, sport, dport):
                sp.lastused_ns = self.vnet.kernel.sched.now_ns()
                return sp
        return None

    def find_sa(self, req: Request, src: int, dst: int, family: int) -> SecAssoc | None:
        """The SA for a request (key_allocsa_policy): the oldest one between the
        endpoints whose mode fits, and with a `unique:N` request, whose reqid is N."""
        if req.src is not None and req.dst is not None:
            src, dst, family = req.src, req.dst, req.family
        for sa in self.by_pair.get((src, dst, family), ()):
            if sa.mode != MODE_ANY and sa.mode != req.mode:
                continue
            if req.level == LEVEL_UNIQUE and req.reqid and sa.reqid != req.reqid:
                continue
            return sa
        return None

    # -- output -----------------------------------------------------------------------
    def output_hook(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        """ipsec4_output: apply the outbound policy to a packet about to be sent."""
        if pkt is self.sent:
            return pkt
        sp = self.lookup(pkt, "out")
        if sp is None or sp.action == "none":
            return pkt
        if sp.action == "discard":
            self.pstats.out_polvio += 1
            return None
        out = pkt
        for req in sp.requests:
            sa = self.find_sa(req, *_ends(out))
            if sa is None:
                if req.level in (LEVEL_REQUIRE, LEVEL_UNIQUE):
                    self.pstats.out_nosa += 1  # FreeBSD would ask IKE (SADB_ACQUIRE)
                    return None
                continue  # default and use: plaintext without an SA
            esp = self.esp_output(sa, out, ifp.mtu if ifp is not None else 0xFFFF)
            if esp is None:
                return None
            out = esp
        if out is pkt:
            return pkt
        self.send(out)
        return None

    def send(self, pkt: bytes) -> None:
        """Send an ESP packet through IPv4 or IPv6 output (routed by its destination)."""
        self.sent = pkt
        try:
            if pkt[0] >> 4 == 6:
                ip6 = self.vnet.ip6
                dst = _from_bytes(pkt[24:40], "big")
                ifp, nexthop, route = ip6.route_to(dst)
                ip6.output_packet(pkt, ifp, nexthop, route, dst)
            else:
                self.vnet.ip.output_packet(pkt, _from_bytes(pkt[16:20], "big"))
        except OSError:
            self.pstats.out_inval += 1  # no route to the peer, interface down
        finally:
            self.sent = None

    def esp_output(self, sa: SecAssoc, pkt: bytes, mtu: int) -> bytes | None:
        """esp_output: the ESP packet carrying `pkt` (its payload in transport mode, the
        whole packet in tunnel mode), IPv4 or IPv6 inside and out."""
        st = self.stats
        v6 = pkt[0] >> 4 == 6
        hlen = 40 if v6 else (pkt[0] & 0x0F) << 2
        tunnel = sa.mode == MODE_TUNNEL
        if tunnel:
            inner, nxt = pkt, (IPPROTO_IPV6 if v6 else IPPROTO_IPV4)
        else:  # IPv6: ESP right after the fixed header (extension headers are sealed too)
            inner, nxt = pkt[hlen:], pkt[6] if v6 else pkt[9]
        if sa.seq >= 0xFFFFFFFF:
            st.wrap += 1  # RFC 4303 3.3.3: a new SA must be made before the counter wraps
            return None
        sa.seq += 1
        xform = sa.xform
        head = wesp.header(sa.spi, sa.seq)
        if isinstance(xform, AesGcm16):
            iv = sa.seq.to_bytes(8, "big")  # RFC 4106 3.1: unique per SA; a counter will do
        else:
            iv = self.vnet.rng.getrandbits(xform.ivlen * 8).to_bytes(xform.ivlen, "big")
        plain = inner + wesp.trailer(len(inner), xform.block, nxt)
        body = head + xform.seal(head, plain, iv)
        st.output += 1
        st.obytes += len(inner)
        sa.bytes += len(inner)
        sa.last_ns = self.vnet.kernel.sched.now_ns()
        if tunnel and sa.family == AF_INET6:
            if len(body) > 0xFFFF:
                st.toobig += 1
                return None
            tclass = ((pkt[0] & 0x0F) << 4 | pkt[1] >> 4) if v6 else pkt[1]
            return wip6.build_header(sa.src, sa.dst, wesp.PROTO_ESP, len(body),
                                     self.vnet.ip6.hlim, tclass) + body
        if tunnel:
            total = 20 + len(body)
            if total > 0xFFFF:
                st.toobig += 1
                return None
            ip = self.vnet.ip
            tos = (((pkt[0] & 0x0F) << 4) | (pkt[1] >> 4)) if v6 else pkt[1]
            header = IP_HEADER.pack(0x45, tos, total, ip.next_ident(), 0, ip.ttl,
                                    wesp.PROTO_ESP, 0, sa.src, sa.dst)
        elif v6:
            if len(body) > 0xFFFF:
                st.toobig += 1
                return None
            return (pkt[:4] + len(body).to_bytes(2, "big") + bytes((wesp.PROTO_ESP,))
                    + pkt[7:40] + body)
        else:
            total = hlen + len(body)
            if total > 0xFFFF:
                st.toobig += 1
                return None
            h = bytearray(pkt[:hlen])
            h[2:4] = total.to_bytes(2, "big")
            if total > mtu:
                h[6] &= ~FLAG_DF & 0xFF  # fragment the ESP packet rather than drop it
            h[9] = wesp.PROTO_ESP
            h[10:12] = b"\0\0"
            header = bytes(h)
        return header[:10] + checksum(header).to_bytes(2, "big") + header[12:] + body

    # -- input ------------------------------------------------------------------------
    def input_hook(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        """ipsec4_in_reject: a plaintext packet an inbound policy wants protected."""
        if pkt is self.decapsulated or pkt[6 if pkt[0] >> 4 == 6 else 9] == wesp.PROTO_ESP:
            return pkt
        sp = self.lookup(pkt, "in")
        if sp is None or sp.action == "none":
            return pkt
        if sp.action == "discard" or any(
                r.level in (LEVEL_REQUIRE, LEVEL_UNIQUE) for r in sp.requests):
            self.pstats.in_polvio += 1
            return None
        return pkt

    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        """esp_input and esp_input_cb: find the SA, check replay and the ICV, decrypt,
        strip the trailer, then hand the payload on (ipsec4_common_input_cb)."""
        st = self.stats
        if len(pkt) < hlen + wesp.HEADER_LEN:
            st.hdrops += 1
            return
        spi, seq = wesp.HEADER.unpack_from(pkt, hlen)
        sa = self.by_spi.get((spi, dst, AF_INET6 if pkt[0] >> 4 == 6 else AF_INET))
        if sa is None:
            st.notdb += 1
            return
        replay = sa.replay
        if replay is not None and not replay.check(seq):
            st.replay += 1
            return
        head = pkt[hlen:hlen + wesp.HEADER_LEN]
        try:
            plain = sa.xform.open(head, pkt[hlen + wesp.HEADER_LEN:])
        except AuthError:
            st.badauth += 1
            return
        if replay is not None:
            replay.update(seq)
        try:
            view, nxt = wesp.strip_trailer(plain)
        except WireError as exc:  # bad padding: decryption went wrong
            if exc.reason == "badilen":
                st.badilen += 1
            else:
                st.badenc += 1
            return
        payload = bytes(view)
        st.input += 1
        st.ibytes += len(payload)
        sa.bytes += len(payload)
        sa.last_ns = self.vnet.kernel.sched.now_ns()
        if sa.mode == MODE_TUNNEL:
            self.tunnel_input(ifp, payload, nxt)
        else:
            self.transport_input(ifp, pkt, hlen, payload, nxt, src, dst)

    def input6(self, ifp: Ifnet, pkt: bytes, off: int, src: int, dst: int) -> None:
        """ESP after an IPv6 header (`off`: where the ESP header starts)."""
        self.input(ifp, pkt, off, src, dst)

    def tunnel_input(self, ifp: Ifnet, inner: bytes, nxt: int) -> None:
        """The inner packet to IPv4 or IPv6 input again (ipsec_common_input_cb's
        netisr_queue); the inbound policy hook lets exactly this packet pass."""
        version = inner[0] >> 4 if inner else 0
        ip6 = getattr(self.vnet, "ip6", None)
        if nxt == IPPROTO_IPV4 and len(inner) >= 20 and version == 4:
            protocol_input = self.vnet.ip.input
        elif nxt == IPPROTO_IPV6 and len(inner) >= 40 and version == 6 and ip6 is not None:
            protocol_input = ip6.input
        else:
            self.stats.tunnel += 1
            return
        self.decapsulated = inner
        try:
            protocol_input(ifp, inner)
        finally:
            self.decapsulated = None

    def transport_input(self, ifp: Ifnet, pkt: bytes, hlen: int, payload: bytes, nxt: int,
                        src: int, dst: int) -> None:
        """The decrypted payload to its protocol, under the outer header rewritten as if
        ESP had never been there (ipsec4_common_input_cb / ipsec6_common_input_cb)."""
        if pkt[0] >> 4 == 6:
            self.transport_input6(ifp, pkt, hlen, payload, nxt, src, dst)
            return
        h = bytearray(pkt[:hlen])
        total = hlen + len(payload)
        h[2:4] = total.to_bytes(2, "big")
        h[9] = nxt
        h[10:12] = b"\0\0"
        h[10:12] = checksum(h).to_bytes(2, "big")
        new = bytes(h) + payload
        ip = self.vnet.ip
        handler = ip.protox.get(nxt) or ip.unclaimed(nxt)
        if handler is None:
            ip.noproto(new, dst)
            return
        handler(ifp, new, hlen, src, dst)

    def transport_input6(self, ifp: Ifnet, pkt: bytes, off: int, payload: bytes, nxt: int,
                         src: int, dst: int) -> None:
        prev, o = 6, 40  # find the byte that named ESP (after any extension headers)
        while o < off:
            prev, o = o, o + ((pkt[o + 1] + 1) << 3)
        h = bytearray(pkt[:off])
        h[4:6] = (off - 40 + len(payload)).to_bytes(2, "big")
        h[prev] = nxt
        new = bytes(h) + payload
        ip6 = self.vnet.ip6
        handler = ip6.protox.get(nxt) or ip6.unclaimed(nxt)
        if handler is None:
            ip6.noproto(ifp, new, prev)
            return
        handler(ifp, new, off, src, dst)

    def clear(self) -> None:
        self.flush_sa()
        self.flush_sp()


def vnet_attach(vnet: Vnet) -> None:
    vnet.ipsec = IpsecState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.ipsec.clear()


PROTOCOL = Protocol(
    "esp", 65, "ipsec", vnet_attach, vnet_detach, domain=AF_INET, protocol=wesp.PROTO_ESP,
    input=IpsecState.input, stats=STAT_LINES, stats_order=45)
"""ESP input through the protocol switch (FreeBSD's inetsw entry for IPPROTO_ESP); the
slot `vnet.ipsec` holds the SAD and SPD; `netstat -s -p esp` prints the counters."""


def _attach6(vnet: Vnet) -> None:
    vnet.ipsec6 = vnet.ipsec  # the same databases: one SAD and SPD for both families


PROTOCOL6 = Protocol(
    "esp6", 67, "ipsec6", _attach6, None, domain=AF_INET6, protocol=wesp.PROTO_ESP,
    input=IpsecState.input6)
"""ESP after an IPv6 header (FreeBSD's inet6sw entry for IPPROTO_ESP); `vnet.ipsec6` is
`vnet.ipsec` under a slot of its own, as the protocol switch wants one per descriptor."""
