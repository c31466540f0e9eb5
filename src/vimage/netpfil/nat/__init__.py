"""In-kernel NAT for ipfw (FreeBSD sys/netpfil/ipfw/ip_fw_nat.c over libalias).

Per vnet, `vnet.ipfw_nat` (a `NatState`) holds the `ipfw nat N` instances
(`alias.NatInstance`), the `net.inet.ip.alias.*` tunables (libalias's timeouts, named as
sysctls here, and the per-instance link limit) and the drop counters. ipfw's `nat N`
action calls `vnet.ipfw_nat.translate(N, pkt, ifp, outgoing)`; its tool hands
`ipfw nat ...` to `command(vnet, argv)`. Both names are the issue-12 contract.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.netpfil.nat.alias import NatInstance
from vimage.netpfil.nat.config import format_config, parse_config
from vimage.protosw import Protocol
from vimage.stats import counters
from vimage.sysctl import Oid, oids

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

SYSCTLS: tuple[Oid, ...] = oids("net.inet.ip.alias", "ipfw_nat", (
    ("tcp_initial", "TCP link lifetime before both sides sent SYN (s)", 1, 2**31 - 1),
    ("tcp_connected", "TCP link lifetime once established (s)", 1, 2**31 - 1),
    ("tcp_singledead", "TCP link lifetime after one side closed (s)", 1, 2**31 - 1),
    ("tcp_dead", "TCP link lifetime after both sides closed or a reset (s)", 1, 2**31 - 1),
    ("udp_expire", "UDP link lifetime (s)", 1, 2**31 - 1),
    ("icmp_expire", "ICMP echo link lifetime (s)", 1, 2**31 - 1),
    ("proto_expire", "Lifetime of links of other IP protocols (s)", 1, 2**31 - 1),
    ("max_links", "Most links one NAT instance holds; new flows beyond are dropped",
     1, 2**24),
))

NatStateStats = counters("NatStateStats", ("noinstance",))


class NatState:
    """`vnet.ipfw_nat`: the NAT instances of one vnet, by number."""

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.instances: dict[int, NatInstance] = {}
        self.stats = NatStateStats()
        # libalias alias_db.c
        self.tcp_initial = 300  # TCP_EXPIRE_INITIAL
        self.tcp_connected = 86400  # TCP_EXPIRE_CONNECTED
        self.tcp_singledead = 90  # TCP_EXPIRE_SINGLEDEAD
        self.tcp_dead = 10  # TCP_EXPIRE_DEAD
        self.udp_expire = 60  # UDP_EXPIRE_TIME
        self.icmp_expire = 60  # ICMP_EXPIRE_TIME
        self.proto_expire = 60  # PROTO_EXPIRE_TIME
        self.max_links = 65536

    def translate(self, number: int, pkt: bytes, ifp: Ifnet | None,
                  outgoing: bool) -> bytes | None:
        """The contract's entry for ipfw's `nat N`: the translated datagram, the same
        bytes when nothing applies, or None when dropped (counted)."""
        inst = self.instances.get(number)
        if inst is None:
            self.stats.noinstance += 1  # ip_fw_nat.c: no such instance, IP_FW_DENY
            return None
        return inst.translate(pkt, ifp, outgoing)

    def configure(self, number: int, argv: list[str]) -> NatInstance:
        cfg = parse_config(number, argv)
        inst = self.instances.get(number)
        if inst is None:
            inst = self.instances[number] = NatInstance(self.vnet, cfg)
        else:
            inst.configure(cfg)
        return inst

    def delete(self, number: int) -> None:
        inst = self.instances.pop(number, None)
        if inst is None:
            raise ValueError(f"nat {number} not found")  # ipfw: ENOENT on delete
        inst.close()

    def clear(self) -> None:
        for inst in self.instances.values():
            inst.close()
        self.instances.clear()


def _number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"illegal nat id: {text}")
    return int(text)


def _show_log(inst: NatInstance) -> list[str]:
    """An instance with `log`: libalias's LibAliasLog line (ShowAliasStats, what
    `ipfw nat show log` prints), then vimage's translation and drop counters."""
    if "log" not in inst.cfg.modes:
        return []  # no log buffer: FreeBSD prints nothing for the instance
    c = inst.link_counts()
    frags = len(inst.frags)
    total = sum(c.values()) + frags
    s = inst.stats
    return [
        f"nat {inst.cfg.number}: icmp={c['icmp']}, udp={c['udp']}, tcp={c['tcp']}, sctp=0, "
        f"pptp=0, proto={c['proto']}, frag_id={frags} frag_ptr=0 / tot={total}",
        f"nat {inst.cfg.number}: translated out {s.translated_out}, in {s.translated_in}, "
        f"passed {s.passed}; links made {s.created}, expired {s.expired}; dropped: "
        f"deny_in {s.deny_in}, table full {s.limit}, no free port {s.noport}, "
        f"malformed {s.bad}",
    ]


def command(vnet: Vnet, argv: list[str]) -> str:
    """`nat N config ...` (prints the resulting config, as ipfw does unless -q),
    `nat N delete`, `nat [N] show [config|log]` (`show` alone is `show log`); argv
    starts with `nat`; the output text. ValueError with ipfw's message for bad input."""
    state: NatState = vnet.ipfw_nat
    if not argv or argv[0] != "nat":
        raise ValueError("nat: expected ``nat''")
    rest = argv[1:]
    if not rest:
        raise ValueError("missing nat id")
    number = None
    if rest[0] != "show":
        number = _number(rest[0])
        rest = rest[1:]
        if not rest:
            raise ValueError("missing option")
    verb, rest = rest[0], rest[1:]
    if verb == "config" and number is not None:
        if not rest:
            raise ValueError("missing option")
        inst = state.configure(number, rest)
        return format_config(inst.cfg) + "\n"
    if verb == "delete" and number is not None and not rest:
        state.delete(number)
        return ""
    if verb == "show" and len(rest) <= 1:
        what = rest[0] if rest else "log"
        if what not in ("config", "log"):
            raise ValueError("Please specify action. Available: config,log")
        if number is None:
            chosen = [state.instances[n] for n in sorted(state.instances)]
        elif number in state.instances:
            chosen = [state.instances[number]]
        else:
            raise ValueError(f"Error getting nat {number} instance info")
        lines: list[str] = []
        for inst in chosen:
            lines += [format_config(inst.cfg)] if what == "config" else _show_log(inst)
        return "".join(line + "\n" for line in lines)
    raise ValueError(f"unrecognised option ``{verb}''")


def vnet_attach(vnet: Vnet) -> None:
    vnet.ipfw_nat = NatState(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.ipfw_nat.clear()


PROTOCOL = Protocol("ipfw_nat", 85, "ipfw_nat", vnet_attach, vnet_detach, sysctls=SYSCTLS)
"""The NAT subsystem's descriptor (attach/detach and sysctls only: it sees packets
through ipfw's `nat N` action, not through the protocol switch)."""

__all__ = ["PROTOCOL", "NatInstance", "NatState", "command"]
