"""Dynamic rules: the states keep-state, record-state and limit create (FreeBSD
sys/netpfil/ipfw/ip_fw_dynamic.c).

A state is one bidirectional flow (protocol, addresses, ports). It is kept in a dict
under its key in both directions, so a packet of either direction finds it with one
lookup. Its lifetime follows the TCP flags seen in each direction, as dyn_update_tcp_
state does: a SYN opens it for dyn_syn_lifetime, SYNs both ways make it established
(dyn_ack_lifetime, renewed by every packet), FINs both ways close it (dyn_fin_lifetime),
anything else (a RST, or no SYN at all) gives dyn_rst_lifetime; UDP states live
dyn_udp_lifetime, the rest dyn_short_lifetime. Times are the kernel clock's, so they
run in virtual time. Expired states are dropped when found and by a sweep once a second
while any exist (FreeBSD's dyn_tick).

`limit` also keeps a parent per masked flow id counting its children; a new flow past
the limit is refused. `net.inet.ip.fw.dyn_max` bounds the table: a state past it is
refused and counted (`refused`), and the packet is dropped, as on FreeBSD.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.sched import NS_PER_S
from vimage.wire.ipv4 import PROTO_TCP, PROTO_UDP

if TYPE_CHECKING:
    from vimage.netpfil.ipfw.packet import Args
    from vimage.netpfil.ipfw.rule import Rule
    from vimage.netpfil.ipfw.state import IpfwState
    from vimage.sched import Timer

_SYN, _FIN, _RST = 0x02, 0x01, 0x04
_FLAGS = _SYN | _FIN | _RST
BOTH_SYN = _SYN | (_SYN << 8)
BOTH_FIN = _FIN | (_FIN << 8)

Key = tuple[int, int, int, int, int]


class DynState:
    __slots__ = ("bcnt", "dport", "dst", "expire", "family", "key", "parent", "pcnt", "proto",
                 "rule", "sport", "src", "tcp")

    def __init__(self, rule: Rule, key: Key, parent: Parent | None) -> None:
        self.rule = rule
        self.key = key
        self.proto, self.src, self.sport, self.dst, self.dport = key
        self.parent = parent
        self.family = 4  # the flow's address family (4 or 6)
        self.tcp = 0  # TCP flags seen: forward in the low byte, reverse in the high one
        self.expire = 0
        self.pcnt = 0
        self.bcnt = 0


class Parent:
    """A limit rule's per-flow-id counter (FreeBSD's O_LIMIT_PARENT state)."""

    __slots__ = ("count", "key", "rule")

    def __init__(self, rule: Rule, key: tuple[int, ...]) -> None:
        self.rule = rule
        self.key = key
        self.count = 0


def flow_key(a: Args) -> Key:
    return (a.proto, a.src, max(a.sport, 0), a.dst, max(a.dport, 0))


class DynTable:
    __slots__ = ("by_key", "fw", "parents", "refused", "states", "timer")

    def __init__(self, fw: IpfwState) -> None:
        self.fw = fw
        self.by_key: dict[Key, DynState] = {}  # both directions
        self.states: dict[Key, DynState] = {}  # by forward key, in creation order
        self.parents: dict[tuple[int, ...], Parent] = {}
        self.refused = 0
        self.timer: Timer | None = None

    def __len__(self) -> int:
        return len(self.states)

    def lookup(self, a: Args, now: int) -> DynState | None:
        """The live state `a` belongs to, updated for it (counters, flags, lifetime)."""
        key = (a.proto, a.src, max(a.sport, 0), a.dst, max(a.dport, 0))
        st = self.by_key.get(key)
        if st is None:
            return None
        if st.expire <= now:
            self.remove(st)
            return None
        self.update(st, a, key == st.key, now)
        return st

    def update(self, st: DynState, a: Args, forward: bool, now: int) -> None:
        st.pcnt += 1
        st.bcnt += len(a.pkt)
        fw = self.fw
        if st.proto == PROTO_TCP:
            flags = a.tcpflags & _FLAGS if a.tcpflags >= 0 else 0
            st.tcp |= flags if forward else flags << 8
            seen = st.tcp & (_FLAGS | (_FLAGS << 8))
            if seen == _SYN or seen == _SYN << 8:
                life = fw.dyn_syn_lifetime
            elif seen in (BOTH_SYN, BOTH_SYN | _FIN, BOTH_SYN | (_FIN << 8)):
                life = fw.dyn_ack_lifetime
            elif seen == BOTH_SYN | BOTH_FIN:
                life = fw.dyn_fin_lifetime
            else:
                life = fw.dyn_rst_lifetime
        elif st.proto == PROTO_UDP:
            life = fw.dyn_udp_lifetime
        else:
            life = fw.dyn_short_lifetime
        st.expire = now + life * NS_PER_S

    def install(self, rule: Rule, a: Args, now: int) -> bool:
        """Create the state for `a` matching `rule`; False if refused (table full, limit)."""
        key = flow_key(a)
        if key in self.by_key:  # already there (record-state after a check): refresh it
            st = self.by_key[key]
            self.update(st, a, key == st.key, now)
            return True
        fw = self.fw
        if len(self.states) >= fw.dyn_max:
            self.refused += 1
            fw.log_text(f"ipfw: install_state: Too many dynamic rules, "
                        f"count {len(self.states)}, max {fw.dyn_max}")
            return False
        parent = None
        spec = rule.state
        if spec is not None and spec.kind == "limit":
            fields = {"src-addr": a.src, "src-port": max(a.sport, 0), "dst-addr": a.dst,
                      "dst-port": max(a.dport, 0)}
            pkey = (rule.num, a.proto, *(fields[f] for f in spec.limit_fields))
            parent = self.parents.get(pkey)
            if parent is None:
                parent = self.parents[pkey] = Parent(rule, pkey)
            if parent.count >= spec.limit:
                self.refused += 1
                fw.log_text(f"ipfw: drop session, too many entries for rule {rule.num}")
                return False
            parent.count += 1
        st = DynState(rule, key, parent)
        st.family = a.family
        self.states[key] = st
        self.by_key[key] = st
        self.by_key[(key[0], key[3], key[4], key[1], key[2])] = st
        self.update(st, a, True, now)
        if self.timer is None:
            self.timer = fw.vnet.kernel.sched.call_later(NS_PER_S, self.tick, owner=fw.vnet)
        return True

    def remove(self, st: DynState) -> None:
        key = st.key
        if self.states.pop(key, None) is None:
            return
        self.by_key.pop(key, None)
        self.by_key.pop((key[0], key[3], key[4], key[1], key[2]), None)
        parent = st.parent
        if parent is not None:
            parent.count -= 1
            if parent.count <= 0:
                self.parents.pop(parent.key, None)

    def expire(self, now: int) -> None:
        for st in [s for s in self.states.values() if s.expire <= now]:
            self.remove(st)

    def tick(self) -> None:
        self.timer = None
        self.expire(self.fw.vnet.kernel.sched.now_ns())
        if self.states:
            self.timer = self.fw.vnet.kernel.sched.call_later(NS_PER_S, self.tick,
                                                              owner=self.fw.vnet)

    def drop_rules(self, keep: set[int] | None) -> None:
        """Forget the states of rules no longer in the ruleset (`keep`: ids of the rules
        left; None drops every state), as FreeBSD does when a rule is deleted."""
        for st in list(self.states.values()):
            if keep is None or id(st.rule) not in keep:
                self.remove(st)

    def clear(self) -> None:
        self.by_key.clear()
        self.states.clear()
        self.parents.clear()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
