"""Per-vnet ipfw: the ruleset, tables, dynamic states, log and tunables (`vnet.ipfw`),
the pfil glue and the evaluation loop (FreeBSD sys/netpfil/ipfw/ip_fw2.c ipfw_chk,
ip_fw_pfil.c, ip_fw_log.c).

The hooks are linked to IPv4's in and out points (`vnet.ip.pfil_in`/`pfil_out`; a
forwarded packet is seen at both, as on FreeBSD) and IPv6's (`vnet.ip6.pfil_in`/
`pfil_out`, ip_fw_pfil.c's AF_INET6 hooks) only while `net.inet.ip.fw.enable` is 1 and
the ruleset holds more than the default rule: a vnet without a firewall pays nothing.
IPv6 packets meet the same rules (`ip4`/`ip6` tell the families apart); `nat` and
`divert` are IPv4 only (ip_fw2.c denies an IPv6 packet at a nat rule; vimage's divert
sockets are IPv4 ones, so an IPv6 packet at a divert rule is dropped and `tee` passes
it without a copy).

A packet taken by dummynet (`pipe`, `queue`) or diverted and sent back continues where
FreeBSD continues it: at the rule after the one that took it (or past ipfw entirely with
`net.inet.ip.fw.one_pass=1`, the default, for dummynet), then the rest of IPv4 input or
output (`IpState.input_after_pfil` / `output_after_pfil`). Hooks after ipfw on the same
point are not run again for such a packet.
"""

from __future__ import annotations

import bisect
import time as _time
from collections import deque
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.net import pfil
from vimage.netinet import icmp as icmp_mod
from vimage.netpfil.ipfw import rule as R
from vimage.netpfil.ipfw.dyn import DynTable
from vimage.netpfil.ipfw.packet import Args
from vimage.netpfil.ipfw.parse import EX_DATAERR, IpfwError
from vimage.netpfil.ipfw.table import Table
from vimage.sched import NS_PER_S
from vimage.sysctl import Oid, oids
from vimage.wire import icmp as wicmp
from vimage.wire import icmp6 as wicmp6
from vimage.wire import ipv4, ipv6
from vimage.wire import tcp as wtcp
from vimage.wire.checksum import checksum
from vimage.wire.ipv4 import PROTO_ICMP, PROTO_TCP, PROTO_UDP

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

LOG_LINES = 1000  # the per-vnet log keeps the last this many lines
CALLSTACK_SIZE = 16  # IPFW_CALLSTACK_SIZE

SYSCTLS: tuple[Oid, ...] = oids("net.inet.ip.fw", "ipfw", (
    ("enable", "Enable ipfw", 0, 1),
    ("one_pass", "Only do a single pass through ipfw when using dummynet(4)", 0, 1),
    ("verbose", "Log matches to ipfw rules", 0, 1),
    ("verbose_limit", "Set upper limit of matches of ipfw rules logged", 0, 2**31 - 1),
    ("default_to_accept", "Make the default rule accept (read when the ruleset is first "
     "built)", 0, 1),
    ("default_rule", "Number of the default rule", 65535, 65535),
    ("static_count", "Number of static rules", 0, 2**31 - 1),
    ("dyn_count", "Number of dyn. rules", 0, 2**31 - 1),
    ("dyn_max", "Max number of dyn. rules", 0, 2**31 - 1),
    ("dyn_ack_lifetime", "Lifetime of dyn. rules for acks", 1, 86400),
    ("dyn_syn_lifetime", "Lifetime of dyn. rules for syn", 1, 86400),
    ("dyn_fin_lifetime", "Lifetime of dyn. rules for fin", 1, 86400),
    ("dyn_rst_lifetime", "Lifetime of dyn. rules for rst", 1, 86400),
    ("dyn_udp_lifetime", "Lifetime of dyn. rules for UDP", 1, 86400),
    ("dyn_short_lifetime", "Lifetime of dyn. rules for other situations", 1, 86400),
    ("dyn_refused", "Dynamic rules refused (dyn_max or a limit reached)", 0, 2**31 - 1),
))

_LOG_PROTO = MappingProxyType({PROTO_TCP: "TCP", PROTO_UDP: "UDP"})
PROTO_ICMPV6 = 58
NXT_ICMPV6 = 58


def map_icmp_unreach(code: int) -> int:
    """An ICMP unreachable code as the ICMPv6 one `reject`/`unreach` send to an IPv6
    packet (ip_fw2.c map_icmp_unreach)."""
    if code in (wicmp.UNREACH_NET, wicmp.UNREACH_HOST, 5, 6, 7, 11, 12):
        return wicmp6.UNREACH_NOROUTE  # net, host, srcfail, *-unknown, tos*
    if code == wicmp.UNREACH_PORT:
        return wicmp6.UNREACH_NOPORT
    return wicmp6.UNREACH_ADMIN


class IpfwState:
    """One vnet's ipfw instance. Every vnet has one, most never use it: what only a
    used firewall needs (the state table, the log, the bound hooks) is made on demand."""

    __slots__ = (
        "__weakref__",
        "_default_to_accept",
        "_dyn",
        "_enable",
        "_log",
        "bypass",
        "dyn_ack_lifetime",
        "dyn_fin_lifetime",
        "dyn_max",
        "dyn_rst_lifetime",
        "dyn_short_lifetime",
        "dyn_syn_lifetime",
        "dyn_udp_lifetime",
        "fwd_key",
        "fwd_rcvif",
        "fwd_tags",
        "hook_in",
        "hook_in6",
        "hook_out",
        "hook_out6",
        "linked",
        "nums",
        "one_pass",
        "rules",
        "set_disable",
        "tables",
        "verbose",
        "verbose_limit",
        "vnet",
    )

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self._enable = 1
        self.one_pass = 1
        self.verbose = 0
        self.verbose_limit = 0
        self._default_to_accept = 0
        self.dyn_max = 16384
        self.dyn_ack_lifetime = 300
        self.dyn_syn_lifetime = 20
        self.dyn_fin_lifetime = 2
        self.dyn_rst_lifetime = 1
        self.dyn_udp_lifetime = 10
        self.dyn_short_lifetime = 5
        self.rules: list[R.Rule] = []  # empty until the ruleset is first built
        self.nums: list[int] = []  # the rule numbers, for skipto/call (bisect)
        self.set_disable = 0
        self.tables: dict[str, Table] = {}
        self._dyn: DynTable | None = None
        self._log: deque[str] | None = None
        self.linked = False
        # bound once, when first linked: pfil.unlink finds a hook by identity
        self.hook_in: pfil.HookFn | None = None
        self.hook_out: pfil.HookFn | None = None
        self.hook_in6: pfil.HookFn | None = None
        self.hook_out6: pfil.HookFn | None = None
        # the packet being forwarded, seen at in: its out pass finds its receiving
        # interface by these bytes (addresses and IP ID) for `recv IF` (FreeBSD's rcvif)
        self.fwd_key = b""
        self.fwd_rcvif: Ifnet | None = None
        self.fwd_tags: set[int] | None = None
        # set while ipfw sends a RST of its own: FreeBSD marks it M_SKIP_FIREWALL
        self.bypass = False

    @property
    def dyn(self) -> DynTable:
        if self._dyn is None:
            self._dyn = DynTable(self)
        return self._dyn

    @property
    def log(self) -> deque[str]:
        """The last LOG_LINES lines `log` rules wrote (`ipfw log`)."""
        if self._log is None:
            self._log = deque(maxlen=LOG_LINES)
        return self._log

    # -- tunables -------------------------------------------------------------------
    @property
    def enable(self) -> int:
        return self._enable

    @enable.setter
    def enable(self, value: int) -> None:
        self._enable = value
        self.sync_hooks()

    @property
    def default_to_accept(self) -> int:
        return self._default_to_accept

    @default_to_accept.setter
    def default_to_accept(self, value: int) -> None:
        if self.rules and value != self._default_to_accept:
            # a boot-time tunable on FreeBSD (CTLFLAG_RDTUN): read when the ruleset starts
            raise ValueError("net.inet.ip.fw.default_to_accept: read-only once the ruleset "
                             "exists (set it before the first ipfw command)")
        self._default_to_accept = value

    @property
    def default_rule(self) -> int:
        return R.DEFAULT_RULE

    @default_rule.setter
    def default_rule(self, value: int) -> None:
        raise ValueError("net.inet.ip.fw.default_rule is read-only")

    @property
    def static_count(self) -> int:
        return len(self.rules) or 1  # reading it does not start the ruleset

    @static_count.setter
    def static_count(self, value: int) -> None:
        raise ValueError("net.inet.ip.fw.static_count is read-only")

    @property
    def dyn_count(self) -> int:
        if self._dyn is None:
            return 0
        self._dyn.expire(self.vnet.kernel.sched.now_ns())
        return len(self._dyn)

    @dyn_count.setter
    def dyn_count(self, value: int) -> None:
        raise ValueError("net.inet.ip.fw.dyn_count is read-only")

    @property
    def dyn_refused(self) -> int:
        return 0 if self._dyn is None else self._dyn.refused

    @dyn_refused.setter
    def dyn_refused(self, value: int) -> None:
        raise ValueError("net.inet.ip.fw.dyn_refused is read-only")

    def check_fib(self, fib: int) -> None:
        """`setfib N`: N below net.fibs when that sysctl exists, else only 0."""
        fibs = 1
        if "net.fibs" in self.vnet.kernel.oids:
            from vimage.sysctl import sysctl_get

            fibs = int(sysctl_get(self.vnet, "net.fibs"))
        if fib >= fibs:
            raise IpfwError(f"invalid fib number {fib}: net.fibs is {fibs}", EX_DATAERR)

    # -- the ruleset -------------------------------------------------------------------
    def ruleset(self) -> list[R.Rule]:
        """The rules in order, the default rule last; built on first use, when
        default_to_accept is read."""
        if not self.rules:
            default = R.Rule(R.DEFAULT_RULE, R.A_ALLOW if self._default_to_accept else R.A_DENY)
            default.set_set(R.RESVD_SET)
            default.text = f"{'allow' if self._default_to_accept else 'deny'} ip from any to any"
            self.rules = [default]
            self.nums = [R.DEFAULT_RULE]
        return self.rules

    def install(self, rules: list[R.Rule], set_disable: int | None = None,
                tables: dict[str, Table] | None = None) -> None:
        """Replace the ruleset (and tables) at once: states of rules gone are dropped."""
        for i, r in enumerate(rules):
            r.idx = i
        self.rules = rules
        self.nums = [r.num for r in rules]
        if set_disable is not None:
            self.set_disable = set_disable
        if tables is not None:
            self.tables = tables
        if self._dyn is not None:
            self._dyn.drop_rules({id(r) for r in rules})
        self.sync_hooks()

    def sync_hooks(self) -> None:
        """Link the hooks while enabled with rules beyond the default one (ip_fw_pfil.c
        ipfw_hook attaches them when the module loads; vimage only when they can act)."""
        want = bool(self._enable) and len(self.rules) > 1 and self.vnet.alive
        if want == self.linked:
            return
        if want:
            self._link()
        else:
            self._unlink()
        self.linked = want

    def _link(self) -> None:
        if self.hook_in is None or self.hook_out is None:
            self.hook_in, self.hook_out = self._hook_in, self._hook_out
            self.hook_in6, self.hook_out6 = self._hook_in6, self._hook_out6
        pfil.link(self.vnet.ip, "pfil_in", self.hook_in, name="ipfw")
        pfil.link(self.vnet.ip, "pfil_out", self.hook_out, name="ipfw")
        ip6 = getattr(self.vnet, "ip6", None)
        if ip6 is not None:
            pfil.link(ip6, "pfil_in", self.hook_in6, name="ipfw")
            pfil.link(ip6, "pfil_out", self.hook_out6, name="ipfw")

    def _unlink(self) -> None:
        assert self.hook_in is not None and self.hook_out is not None
        pfil.unlink(self.vnet.ip, "pfil_in", self.hook_in)
        pfil.unlink(self.vnet.ip, "pfil_out", self.hook_out)
        ip6 = getattr(self.vnet, "ip6", None)
        if ip6 is not None and self.hook_in6 is not None and self.hook_out6 is not None:
            pfil.unlink(ip6, "pfil_in", self.hook_in6)
            pfil.unlink(ip6, "pfil_out", self.hook_out6)

    def after(self, r: R.Rule) -> int:
        """Index of the rule after `r` in the ruleset as it is now: r's slot while the
        ruleset is unchanged, else the first rule numbered above r's (ip_fw2.c keeps the
        slot and chain id with a held packet, and looks up by number when they differ)."""
        i = r.idx
        if i < len(self.rules) and self.rules[i] is r:
            return i + 1
        return bisect.bisect_right(self.nums, r.num)

    def next_index(self, num: int) -> int:
        """Index of the first rule numbered >= num."""
        return bisect.bisect_left(self.nums, num)

    # -- pfil hooks ----------------------------------------------------------------------
    def _hook_in(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        a = Args(pkt, False, ifp, ifp)
        out = self.check(a, 0)
        if out is not None:
            self.note_forward(out, ifp, a.tags)
            if a.fib >= 0:
                self.vnet.ip.mfib = (out, a.fib)
        return out

    def _hook_in6(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        a = Args(pkt, False, ifp, ifp)
        out = self.check(a, 0)
        if out is not None:
            self.note_forward6(out, ifp, a.tags)
        return out

    def note_forward6(self, pkt: bytes, ifp: Ifnet | None, tags: set[int] | None) -> None:
        """note_forward for IPv6: the key is the header without its hop limit (which
        forwarding lowers) and the start of the payload."""
        dst = int.from_bytes(pkt[24:40], "big")
        ip6 = self.vnet.ip6
        if dst in ip6.local or dst >> 120 == 0xFF or dst >> 118 == 0x3FA:
            return
        self.fwd_key = pkt[:7] + pkt[8:80]
        self.fwd_rcvif = ifp
        self.fwd_tags = tags

    def _hook_out6(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        if self.bypass:
            return pkt
        if self.fwd_key == pkt[:7] + pkt[8:80]:  # the packet being forwarded
            a = Args(pkt, True, ifp, self.fwd_rcvif)
            if self.fwd_tags:
                a.tags = set(self.fwd_tags)
            return self.check(a, 0)
        return self.check(Args(pkt, True, ifp, None), 0)

    def note_forward(self, pkt: bytes, ifp: Ifnet | None, tags: set[int] | None) -> None:
        """Remember a packet that passed the in rules and will be forwarded, as it leaves
        them (an incoming packet `nat` rewrote to an inside address is forwarded too):
        its out pass finds its receiving interface (`recv IF`) and its tags by these
        bytes (addresses and IP ID), as FreeBSD's mbuf keeps rcvif and its tags."""
        if int.from_bytes(pkt[16:20], "big") in self.vnet.ip.local:
            return
        self.fwd_key = pkt[4:6] + pkt[12:20]
        self.fwd_rcvif = ifp
        self.fwd_tags = tags

    def _hook_out(self, pkt: bytes, ifp: Ifnet | None) -> bytes | None:
        if self.bypass:
            return pkt
        if self.fwd_key == pkt[4:6] + pkt[12:20]:  # the packet being forwarded
            a = Args(pkt, True, ifp, self.fwd_rcvif)
            if self.fwd_tags:
                a.tags = set(self.fwd_tags)
            return self.check(a, 0)
        a = Args(pkt, True, ifp, None)
        out = self.check(a, 0)
        if out is not None and a.fib >= 0:
            self.vnet.ip.mfib = (out, a.fib)
        return out

    # -- evaluation (ipfw_chk) --------------------------------------------------------------
    def check(self, a: Args, i: int) -> bytes | None:
        """Run the rules from index `i`: the packet to pass on, or None if dropped/taken."""
        rules = self.rules
        disabled = self.set_disable
        probed = False
        stack: list[int] | None = None
        while True:
            r = rules[i]
            if r.plain:  # the common rule: a test of its set and one call
                if r.setbit & disabled or not r.match(a):
                    i += 1
                    continue
            else:
                if r.setbit & disabled:
                    i += 1
                    continue
                hit = None
                if r.probe and not probed:  # the first keep-state/limit/check-state rule
                    probed = True
                    dyn = self._dyn
                    if dyn is not None and dyn.by_key:
                        hit = dyn.lookup(a, self.vnet.kernel.sched.now_ns())
                if hit is not None:  # the parent rule's action, and its counters
                    r = hit.rule
                    i = r.idx
                elif (r.action == R.A_CHECK_STATE
                      or (r.prob < 1.0 and self.vnet.rng.random() >= r.prob)
                      or not r.match(a)):
                    i += 1
                    continue
                elif r.state is not None and not self.dyn.install(
                        r, a, self.vnet.kernel.sched.now_ns()):
                    return None  # refused (dyn_max, limit): FreeBSD denies the packet
            r.pcnt += 1
            r.bcnt += len(a.pkt)
            r.timestamp = self.vnet.kernel.sched.now_ns() // NS_PER_S or 1
            if r.tag or r.untag:
                self.tagging(r, a)
            if r.log:
                self.log_packet(r, a)
            act = r.action
            arg = a.tablearg if r.arg == R.TABLEARG else r.arg
            if act == R.A_ALLOW:
                return a.pkt
            if act == R.A_COUNT:
                i += 1
                continue
            if act == R.A_SETFIB:  # M_SETFIB: the packet's routes come from FIB arg
                a.fib = arg if arg < self.fibs() else 0
                i += 1
                continue
            if act == R.A_SKIPTO:
                i = self.next_index(arg) if arg > r.num else i + 1
                continue
            if act == R.A_CALL:
                if stack is None:
                    stack = []
                if len(stack) >= CALLSTACK_SIZE or arg <= r.num:
                    self.log_text("ipfw: call stack error, go to next rule")
                    i += 1
                    continue
                stack.append(i)
                i = self.next_index(arg)
                continue
            if act == R.A_RETURN:
                i = stack.pop() + 1 if stack else i + 1
                continue
            if act == R.A_NAT:
                if a.family != 4:
                    return None  # ip_fw2.c: NAT only for IPv4, else IP_FW_DENY
                out = self.nat(arg, a)
                if out is None or self.one_pass:
                    return out
                tags = a.tags
                a = Args(out, a.out, a.ifp, a.rcvif)
                a.tags = tags
                i += 1
                continue
            return self.terminal(r, act, arg, a, i)

    def terminal(self, r: R.Rule, act: int, arg: int, a: Args, i: int) -> bytes | None:
        """The actions that end the pass."""
        vnet = self.vnet
        if act == R.A_DENY:
            return None
        if act == R.A_REJECT or act == R.A_UNREACH6:
            if a.family == 6:
                self.reject6(a, arg if act == R.A_UNREACH6 or arg == R.CODE_RST
                             else map_icmp_unreach(arg))
            elif act == R.A_REJECT:
                self.reject(a, arg)
            return None
        if act == R.A_PIPE or act == R.A_QUEUE:
            dn = getattr(vnet, "dummynet", None)
            if dn is None:
                return None  # no dummynet: FreeBSD drops (ip_dn_io_ptr is NULL)
            out, ifp, rcvif, tags = a.out, a.ifp, a.rcvif, a.tags
            one_pass = self.one_pass  # ipfw_chk marks the packet IPFW_ONEPASS at the rule

            def resume(pkt: bytes) -> None:
                self.resume(pkt, out, ifp, rcvif, self.after(r), bool(one_pass), tags)
            dn.enqueue(arg, act == R.A_QUEUE, a.pkt, ifp, out, resume)
            return None
        if act == R.A_DIVERT or act == R.A_TEE:
            if a.family != 4:  # divert(4) sockets here are IPv4 ones
                return a.pkt if act == R.A_TEE else None
            dv = getattr(vnet, "divert", None)
            if dv is not None:  # ip_fw_pfil.c ipfw_divert: tee hands divert a copy
                dv.deliver(arg, a.pkt, a.ifp, a.out, r.num, tee=act == R.A_TEE)
            if act == R.A_TEE:
                return a.pkt  # the original is accepted (ipfw(8) tee)
            return None  # taken, or dropped if no socket listens on the port
        if act == R.A_FWD:
            assert r.fwd is not None
            if a.family != r.fwd[2]:
                return None  # a next hop of the other family: nowhere to send it
            if a.family == 6:
                self.forward6(a, r.fwd[0])
            else:
                self.forward(a, r.fwd[0])
            return None
        return None

    def nat(self, number: int, a: Args) -> bytes | None:
        nat = getattr(self.vnet, "ipfw_nat", None)
        if nat is None:
            return None
        out: bytes | None = nat.translate(number, a.pkt, a.ifp, a.out)
        return out

    def tagging(self, r: R.Rule, a: Args) -> None:
        """tag/untag: FreeBSD's mbuf tags. They last for the packet's pass, and a
        forwarded packet carries them from its in pass to its out pass."""
        if r.tag:
            if a.tags is None:
                a.tags = set()
            a.tags.add(r.tag)
        if r.untag and a.tags is not None:
            a.tags.discard(r.untag)

    # -- actions -----------------------------------------------------------------------------
    def reject(self, a: Args, code: int) -> None:
        """send_reject(): an ICMP unreachable, or a RST for `reset` (TCP only, never in
        answer to a RST), through the stack's own ICMP and TCP code."""
        pkt = a.pkt
        if code == R.CODE_RST:
            if a.proto != PROTO_TCP or a.tcpflags < 0 or a.tcpflags & 0x04:
                return
            from vimage.netinet.tcp.output import respond_rst
            from vimage.wire import tcp as wtcp

            try:
                seg = wtcp.parse(memoryview(pkt)[a.hlen:a.iplen])
            except Exception:
                return
            self.bypass = True  # ipfw_send_pkt: M_SKIP_FIREWALL
            try:
                respond_rst(self.vnet.tcp, seg, a.src, a.dst)
            finally:
                self.bypass = False
            return
        if a.proto == PROTO_ICMP and a.icmptype in wicmp.ERROR_TYPES:
            return
        icmp_mod.error(self.vnet, pkt, wicmp.UNREACH, code)

    def fibs(self) -> int:
        """net.fibs: how many FIBs the vnet has (1 without the routing FIBs)."""
        route = getattr(self.vnet, "route", None)
        return int(route.fibs) if route is not None else 1

    def reject6(self, a: Args, code: int) -> None:
        """send_reject6(): an ICMPv6 destination unreachable with `code`, or a RST for
        `reset` to TCP; never about a fragment after the first, an ICMPv6 error or a
        multicast destination (ip_fw2.c O_UNREACH6)."""
        if a.off or a.dst >> 120 == 0xFF:
            return
        if code == R.CODE_RST:
            if a.proto == PROTO_TCP and a.tcpflags >= 0 and not a.tcpflags & wtcp.RST:
                self.send_rst6(a)
            return
        if a.proto == PROTO_ICMPV6 and 0 <= a.icmp6type < 128:
            return  # not about an error message (is_icmp6_query)
        ifp = a.rcvif if a.rcvif is not None else a.ifp
        if ifp is None:
            return
        self.vnet.icmp6.error(ifp, a.pkt, wicmp6.DST_UNREACH, code, 0)

    def send_rst6(self, a: Args) -> None:
        """A RST answering the TCP segment in `a` (tcp_respond's rules, RFC 9293
        3.10.7.1), sent past the firewall as ipfw_send_pkt marks it."""
        pkt, at = a.pkt, a.hlen
        flags = a.tcpflags
        seq = int.from_bytes(pkt[at + 4:at + 8], "big")
        ack = int.from_bytes(pkt[at + 8:at + 12], "big")
        data = max(len(pkt) - at - ((pkt[at + 12] >> 4) << 2), 0)
        if flags & wtcp.ACK:
            rseq, rack, rflags = ack, 0, wtcp.RST
        else:
            seglen = data + (1 if flags & wtcp.SYN else 0) + (1 if flags & wtcp.FIN else 0)
            rseq, rack, rflags = 0, (seq + seglen) & 0xFFFFFFFF, wtcp.RST | wtcp.ACK
        seg = bytearray(wtcp.build(a.dport, a.sport, rseq, rack, rflags, 0, b"", src=0, dst=0))
        seg[16:18] = b"\x00\x00"
        seg[16:18] = checksum(seg, ipv6.pseudo_sum(a.dst, a.src, len(seg), PROTO_TCP)) \
            .to_bytes(2, "big")
        self.bypass = True
        try:
            self.vnet.ip6.output(PROTO_TCP, a.dst, a.src, bytes(seg),
                                 ifp=a.rcvif if ipv6.needs_zone(a.src) else None)
        except OSError:
            pass
        finally:
            self.bypass = False

    def forward6(self, a: Args, nexthop: int) -> None:
        """fwd for IPv6 (O_FORWARD_IP6): to a local address, deliver it here; else send
        it to `nexthop`, forwarding it first if it came in for someone else."""
        ip6 = self.vnet.ip6
        pkt = a.pkt
        if nexthop in ip6.local:
            ifp = a.ifp if a.ifp is not None and not a.out else self.vnet.ifaces.get("lo0")
            if ifp is not None:
                ip6.deliver(ifp, pkt, a.src, a.dst)
            return
        if not a.out and a.dst not in ip6.local:
            if not ip6.forwarding:
                ip6.stats.cantforward += 1
                return
            if pkt[7] <= 1:
                if a.ifp is not None:
                    self.vnet.icmp6.error(a.ifp, pkt, wicmp6.TIME_EXCEEDED,
                                          wicmp6.TIME_EXCEED_TRANSIT, 0)
                return
            pkt = pkt[:7] + bytes((pkt[7] - 1,)) + pkt[8:]
            ip6.stats.forward += 1
            try:
                ifp = ip6.route_to(nexthop)[0]
            except OSError:
                return
            if ip6.pfil_out is not None:
                passed = pfil.run(ip6.pfil_out, pkt, ifp)
                if passed is None:
                    return
                pkt = passed
        ip6.output_after_pfil(pkt, nexthop)

    def forward(self, a: Args, nexthop: int) -> None:
        """fwd: send the packet to `nexthop` instead of where its route says; to a local
        address, deliver it here (FreeBSD's transparent-proxy use)."""
        ip = self.vnet.ip
        pkt = a.pkt
        if nexthop in ip.local:
            ifp = a.ifp if a.ifp is not None and not a.out else self.vnet.ifaces.get("lo0")
            if ifp is not None:
                ip.deliver(ifp, pkt, a.hlen, a.src, a.dst)
            return
        if not a.out:
            if a.dst not in ip.local:
                if not ip.forwarding:
                    ip.stats.cantforward += 1
                    return
                if pkt[8] <= 1:
                    icmp_mod.error(self.vnet, pkt, wicmp.TIMXCEED, wicmp.TIMXCEED_INTRANS)
                    return
                header = bytearray(pkt[:a.hlen])
                header[8] -= 1
                header[10:12] = b"\x00\x00"
                header[10:12] = checksum(header).to_bytes(2, "big")
                pkt = bytes(header) + pkt[a.hlen:]
                ip.stats.forward += 1
            try:
                route = ip.route_to(nexthop)
            except OSError:
                return
            if ip.pfil_out is not None:
                passed = pfil.run(ip.pfil_out, pkt, route.ifp)
                if passed is None:
                    return
                pkt = passed
        ip.output_after_pfil(pkt, None, nexthop)

    # -- continuation after dummynet / divert --------------------------------------------------
    def resume(self, pkt: bytes, out: bool, ifp: Ifnet | None, rcvif: Ifnet | None,
               start: int, skip: bool, tags: set[int] | None = None) -> None:
        """Continue a packet ipfw handed out (dummynet's resume, divert's reinjection)
        at rule index `start`, or past ipfw if `skip`, then the rest of IPv4. `tags`:
        the packet's tags (FreeBSD keeps mbuf tags across dummynet)."""
        vnet = self.vnet
        if not vnet.alive or len(pkt) < 20 or pkt[0] >> 4 not in (4, 6):
            return
        if pkt[0] >> 4 == 6:
            self.resume6(pkt, out, ifp, rcvif, start, skip, tags)
            return
        if not skip and self.linked and start < len(self.rules):
            a = Args(pkt, out, ifp, rcvif)
            a.tags = tags
            passed = self.check(a, start)
            if passed is None:
                return
            pkt, tags = passed, a.tags
        if not out:
            self.note_forward(pkt, rcvif, tags)
        if out:
            vnet.ip.output_after_pfil(pkt, ifp)
        else:
            if ifp is None:
                ifp = vnet.ifaces.get("lo0")
                if ifp is None:
                    return
            vnet.ip.input_after_pfil(pkt, ifp)

    def resume6(self, pkt: bytes, out: bool, ifp: Ifnet | None, rcvif: Ifnet | None,
                start: int, skip: bool, tags: set[int] | None) -> None:
        """`resume` for an IPv6 packet: the rest of ip6_input or ip6_output."""
        vnet = self.vnet
        if len(pkt) < 40:
            return
        if not skip and self.linked and start < len(self.rules):
            a = Args(pkt, out, ifp, rcvif)
            a.tags = tags
            passed = self.check(a, start)
            if passed is None:
                return
            pkt, tags = passed, a.tags
        if out:
            vnet.ip6.output_after_pfil(pkt)
            return
        self.note_forward6(pkt, rcvif, tags)
        if ifp is None:
            ifp = vnet.ifaces.get("lo0")
            if ifp is None:
                return
        vnet.ip6.input_after_pfil(pkt, ifp)

    # -- log (ip_fw_log.c ipfw_log) ---------------------------------------------------------------
    def log_text(self, line: str) -> None:
        self.log.append(line)

    def log_packet(self, r: R.Rule, a: Args) -> None:
        if not self.verbose:
            return  # FreeBSD then logs only to the ipfw0 bpf tap
        if r.logamount and r.log_left <= 0:
            return
        action = log_action(r, a)
        if a.family == 6:
            self.log.append(f"ipfw: {r.num} {action} {_log_proto6(a)} {_log_where(a)}"
                            f"{_log_frag6(a)}")
            self._logged(r)
            return
        src, dst = ipv4.ntoa(a.src), ipv4.ntoa(a.dst)
        name = _LOG_PROTO.get(a.proto)
        if name is not None:
            proto = (f"{name} {src}:{a.sport} {dst}:{a.dport}" if a.off == 0 and a.sport >= 0
                     else f"{name} {src} {dst}")
        elif a.proto == PROTO_ICMP:
            code = a.pkt[a.hlen + 1] if a.off == 0 and len(a.pkt) > a.hlen + 1 else 0
            proto = (f"ICMP:{a.icmptype}.{code} {src} {dst}" if a.icmptype >= 0
                     else f"ICMP {src} {dst}")
        else:
            proto = f"P:{a.proto} {src} {dst}"
        frag = ""
        if a.off or a.mf:
            frag = (f" (frag {a.ipid}:{a.iplen - a.hlen}@{a.off * 8}"
                    f"{'+' if a.mf else ''})")
        self.log.append(f"ipfw: {r.num} {action} {proto} {_log_where(a)}{frag}")
        self._logged(r)

    def _logged(self, r: R.Rule) -> None:
        if r.logamount:
            r.log_left -= 1
            if r.log_left == 0:
                self.log.append(f"ipfw: limit {r.logamount} reached on entry {r.num}")

    def wall_time(self) -> float:
        """Seconds for `ipfw -t`: the kernel clock (virtual time starts at the epoch)."""
        return self.vnet.kernel.sched.now_ns() / NS_PER_S if self.vnet.kernel.sched.virtual \
            else _time.time()

    def clear(self) -> None:
        if self._dyn is not None:
            self._dyn.clear()
        if self.linked and self.hook_in is not None and self.hook_out is not None:
            self._unlink()
            self.linked = False
        self.rules = []
        self.nums = []
        self.tables.clear()
        self._log = None


def _log_where(a: Args) -> str:
    ifp = a.ifp
    return f"{'out' if a.out else 'in'} via {ifp.name if ifp is not None else '?'}"


def _log_proto6(a: Args) -> str:
    """ipfw_log's protocol part for IPv6: addresses in brackets (`[2001:db8::1]:53`)."""
    src, dst = f"[{ipv6.ntoa(a.src)}]", f"[{ipv6.ntoa(a.dst)}]"
    name = _LOG_PROTO.get(a.proto)
    if name is not None:
        if a.off == 0 and a.sport >= 0:
            return f"{name} {src}:{a.sport} {dst}:{a.dport}"
        return f"{name} {src} {dst}"
    if a.proto == PROTO_ICMPV6:
        if a.off == 0 and a.icmp6type >= 0 and len(a.pkt) > a.hlen + 1:
            return f"ICMPv6:{a.icmp6type}.{a.pkt[a.hlen + 1]} {src} {dst}"
        return f"ICMPv6 {src} {dst}"
    return f"P:{a.proto} {src} {dst}"


def _log_frag6(a: Args) -> str:
    if not (a.off or a.mf):
        return ""
    return (f" (frag {a.ipid:08x}:{len(a.pkt) - a.hlen}@{a.off * 8}"
            f"{'+' if a.mf else ''})")


def log_action(r: R.Rule, a: Args) -> str:
    act, arg = r.action, (a.tablearg if r.arg == R.TABLEARG else r.arg)
    if act == R.A_ALLOW:
        return "Accept"
    if act == R.A_DENY:
        return "Deny"
    if act == R.A_UNREACH6:  # ip_fw_log.c: "Reset" for reset6, else "Unreach %d"
        return "Reset" if arg == R.CODE_RST else f"Unreach {arg}"
    if act == R.A_REJECT:
        return "Reset" if arg == R.CODE_RST else "Reject" if arg == 1 else f"Unreach {arg}"
    if act == R.A_FWD:
        assert r.fwd is not None
        addr, port, family = r.fwd
        text = ipv6.ntoa(addr) if family == 6 else ipv4.ntoa(addr)
        return f"Forward to {text}" + (f":{port}" if port else "")
    names = {R.A_COUNT: "Count", R.A_SKIPTO: "SkipTo", R.A_CALL: "Call", R.A_RETURN: "Return",
             R.A_CHECK_STATE: "Check-State", R.A_PIPE: "Pipe", R.A_QUEUE: "Queue",
             R.A_NAT: "Nat", R.A_DIVERT: "Divert", R.A_TEE: "Tee", R.A_SETFIB: "SetFib"}
    name = names[act]
    if act in (R.A_COUNT, R.A_RETURN, R.A_CHECK_STATE):
        return name
    return f"{name} {arg}"


def vnet_attach(vnet: Vnet) -> None:
    vnet.ipfw = IpfwState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.ipfw.clear()
