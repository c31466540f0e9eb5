"""The protocol switch: one descriptor per protocol, and the per-vnet tables built from them.

The model is FreeBSD's `struct protosw` + `struct domain` (what a protocol offers:
input, ctlinput, a socket type), VNET_SYSINIT/SYSUNINIT (per-vnet attach in order,
detach in reverse), netisr/ether_type registration (an ethertype -> input) and
`ip_protox[]` (an IP protocol number -> input, raw IP for the rest); gVisor's
stack registers protocol factories the same way. Non-protocol subsystems (routing,
interfaces, the hosts table) register with only `attach`/`detach`.

Nothing here knows a protocol: the standard set is a tuple of descriptors assembled
at the top of the package (`vimage/__init__.py`, as a kernel config would) and set as
`Kernel.standard_protocols`; `Kernel(protocols=...)` or `kernel.register(proto)` adds
others. This module sits in the kernel layer, so it imports nothing above it.

Per vnet, attaching a descriptor creates `vnet.<slot>`, the protocol's state (its
own `attach` does); `bind` makes and fills the vnet's demultiplexing tables:
  vnet.inputs[domain][number]  its bound `input`, for a descriptor with `protocol`
  vnet.ctlinputs[domain][...]  its bound `ctlinput` (ICMP errors quoting it)
  vnet.ethertypes[0x0800] its bound `input`, for a descriptor with `ethertype`
so the hot paths do one dict lookup and call a bound method. The tables are bound on
a vnet's first packet, not at creation: most vnets of a big topology never carry one
before they die, and five tables and eight bound methods per vnet cost a third of the
creation time (mostly in the garbage collector, which walks them) and 700 bytes. Until
then every table is the shared empty UNBOUND; a lookup that misses calls `bind`, and
the protocols that keep a table of their own (IPv4's `protox`, ICMP's `ctlx`) fetch
it again there, so a hit costs no check.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, MethodType
from typing import TYPE_CHECKING, Any

from vimage.sysctl import Oid

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

ANY = -1
"""`protocol=ANY`: the protocol takes what no other claims in its domain (FreeBSD's raw IP
wildcard entry in ip_protox), and its sockets accept any protocol number."""

UNBOUND: Mapping[Any, Callable[..., None]] = MappingProxyType({})
"""What a demultiplexing table is before its vnet is bound: empty, and shared."""

StatLines = tuple[tuple[str, str], ...]
"""`netstat -s` lines: (counter attribute of `state.stats`, format with one `{}`)."""


@dataclass(frozen=True, slots=True)
class Protocol:
    """One protocol (or subsystem) of the stack.

    name        unique; `netstat -p NAME`; the registration key
    order       attach order (ascending); detach runs in reverse
    slot        the Vnet attribute holding the per-vnet state (`vnet.ip`, `vnet.tcp`)
    attach      attach(vnet): create the state and set `vnet.<slot>`
    detach      detach(vnet): release it (sockets, timers)
    domain      address family (2 = AF_INET); 0 for none
    protocol    IP protocol number demultiplexed to `input`, or ANY
    ethertype   Ethernet type demultiplexed to `input` (the link layer strips the header)
    input       unbound, called with the state first: with `protocol`,
                input(state, ifp, pkt, hlen, src, dst); with `ethertype`,
                input(state, ifp, payload)
    ctlinput    ctlinput(state, type, code, quoted, rest): an ICMP error quoted a packet
                of this protocol (FreeBSD pr_ctlinput); `quoted` starts at its IP header
    sysctls     the OIDs (their `slot` names this descriptor's state)
    stats       the `netstat -s` lines; `netstat` orders protocols by `stats_order`
    sockets     (socket type, factory) pairs: factory(vnet, family, type, proto)
    add_addr    add_addr(ifp, text, broadcast): `Ifnet.add_addr` for this domain
                (FreeBSD's pr_control for SIOCAIFADDR)
    ifattach, ifdetach, ifup, iflladdr
                interface events (FreeBSD ifnet_arrival_event, ifnet_departure_event, the
                link coming up, iflladdr_event: its link-level address changed), called
                with the interface in its vnet
    lazy        attach on first use of `vnet.<slot>` instead of at vnet creation (a
                subsystem most vnets never use: a firewall, a shaper, NAT, a tunnel, a
                transport); detached only if it was attached. With packet input, its
                table entries are bound to a stand-in (`_LazyInput`) that attaches the
                state on the first packet and puts the real input in its place.
                Interface events reach it attached or not, so its hooks read the state
                with `existing`.
    """

    name: str
    order: int
    slot: str | None = None
    attach: Callable[[Vnet], None] | None = None
    detach: Callable[[Vnet], None] | None = None
    domain: int = 0
    protocol: int | None = None
    ethertype: int | None = None
    input: Callable[..., None] | None = None
    ctlinput: Callable[..., None] | None = None
    sysctls: tuple[Oid, ...] = ()
    stats: StatLines = ()
    stats_order: int = 0
    sockets: tuple[tuple[int, Callable[..., Any]], ...] = ()
    add_addr: Callable[[Ifnet, str, str | None], None] | None = None
    ifattach: Callable[[Ifnet], None] | None = None
    ifdetach: Callable[[Ifnet], None] | None = None
    ifup: Callable[[Ifnet], None] | None = None
    iflladdr: Callable[[Ifnet], None] | None = None
    lazy: bool = False

    def __post_init__(self) -> None:
        if self.lazy and (self.slot is None or self.attach is None):
            raise ValueError(f"protocol {self.name}: only a state slot with an attach "
                             "can be attached lazily")
        if (self.input is not None or self.ctlinput is not None) and self.slot is None:
            raise ValueError(f"protocol {self.name}: input/ctlinput need a state slot")
        if self.input is not None and self.protocol is None and self.ethertype is None:
            raise ValueError(f"protocol {self.name}: input needs a protocol or an ethertype")
        if self.sockets and not self.domain:
            raise ValueError(f"protocol {self.name}: sockets need a domain")


def check_set(protocols: tuple[Protocol, ...]) -> tuple[Protocol, ...]:
    """`protocols` sorted by attach order; ValueError on a clash (FreeBSD's
    pf_proto_register refuses the same slot twice with EEXIST)."""
    names: set[str] = set()
    slots: set[str] = set()
    numbers: set[tuple[int, int]] = set()
    ethertypes: set[int] = set()
    for proto in protocols:
        clash = None
        if proto.name in names:
            clash = f"name {proto.name!r}"
        elif proto.slot is not None and proto.slot in slots and not _entry_point(proto):
            clash = f"slot {proto.slot!r}"
        elif proto.protocol is not None and (proto.domain, proto.protocol) in numbers:
            clash = f"protocol number {proto.protocol} in domain {proto.domain}"
        elif proto.ethertype is not None and proto.ethertype in ethertypes:
            clash = f"ethertype {proto.ethertype:#06x}"
        if clash is not None:
            raise ValueError(f"protocol {proto.name}: {clash} is already registered")
        names.add(proto.name)
        if proto.slot is not None:
            slots.add(proto.slot)
        if proto.protocol is not None:
            numbers.add((proto.domain, proto.protocol))
        if proto.ethertype is not None:
            ethertypes.add(proto.ethertype)
    return tuple(sorted(protocols, key=lambda p: p.order))


def _entry_point(proto: Protocol) -> bool:
    """A descriptor that only adds an input for another number to a state attached by an
    earlier one (no attach, detach, sysctls or stats): it may name that slot, as several
    of FreeBSD's protosw entries (gif's IPv4 and IPv6 encap handlers) share one softc."""
    return (proto.input is not None and proto.protocol is not None and proto.attach is None
            and proto.detach is None and not proto.sysctls and not proto.stats
            and not proto.lazy)


def build_oids(protocols: tuple[Protocol, ...]) -> dict[str, Oid]:
    """The sysctl OID table of a protocol set, sorted by name."""
    table: dict[str, Oid] = {}
    for proto in protocols:
        for oid in proto.sysctls:
            if oid.name in table:
                raise ValueError(f"protocol {proto.name}: sysctl {oid.name} is already defined")
            table[oid.name] = oid
    return dict(sorted(table.items()))


# -- per vnet ----------------------------------------------------------------------------
def attached(vnet: Vnet, proto: Protocol) -> bool:
    """Whether `proto` has its state in `vnet` (a lazy one may not, yet)."""
    return not proto.lazy or existing(vnet, proto.slot) is not None  # type: ignore[arg-type]


def existing(vnet: Vnet, slot: str) -> Any:
    """`vnet.<slot>` if that state exists, else None, without attaching a lazy protocol
    (for code that has nothing to do unless it was used: no routing socket, no one to tell)."""
    if slot not in vnet.DECLARED:  # a state kept in the instance dict: no exception to pay
        return vnet.__dict__.get(slot)  # (rtsock asks this for every address and route)
    try:
        return object.__getattribute__(vnet, slot)
    except AttributeError:
        return None


def attach(vnet: Vnet, proto: Protocol) -> None:
    """Attach one protocol to a vnet: its state, and its table entries if already bound."""
    if proto.lazy:  # the state on first use (Vnet.lazy_state)
        if vnet.inputs is not None:
            _bind(vnet, proto)
        return
    if proto.attach is not None:
        proto.attach(vnet)
    if vnet.inputs is not None:
        _bind(vnet, proto)


def bind(vnet: Vnet) -> bool:
    """Make and fill `vnet`'s demultiplexing tables; False if they were (or it is dead)."""
    if vnet.inputs is not None or not vnet.alive:
        return False
    vnet.inputs, vnet.ctlinputs, vnet.ethertypes = {}, {}, {}
    for proto in vnet.kernel.protocols:
        _bind(vnet, proto)
    return True


def late_ethertype(vnet: Vnet, etype: int) -> Callable[..., None] | None:
    """After a miss in `vnet.ethertypes`: the input for `etype` if binding the tables
    just now found one."""
    return vnet.ethertypes.get(etype) if bind(vnet) else None


def bound_table(vnet: Vnet, tables: str, domain: int) -> dict[int, Callable[..., None]] | None:
    """For a protocol whose own copy of a table was UNBOUND: bind `vnet`, and its
    `tables` ("inputs" or "ctlinputs") entry for `domain`; None if the vnet is dead."""
    bind(vnet)
    by_domain = getattr(vnet, tables)
    return None if by_domain is None else by_domain.setdefault(domain, {})


def _bind(vnet: Vnet, proto: Protocol) -> None:
    if proto.slot is None:
        return
    # a lazy protocol (or an entry point into a lazy one's state) not attached yet gets
    # stand-ins: binding the tables on a vnet's first packet attaches nothing
    state = existing(vnet, proto.slot)
    if state is None and vnet.kernel.lazy.get(proto.slot) is None:
        state = getattr(vnet, proto.slot)
    assert vnet.inputs is not None and vnet.ctlinputs is not None
    if proto.input is not None:
        bound = (MethodType(proto.input, state) if state is not None else
                 _LazyInput(vnet, proto, proto.input))
        if proto.protocol is not None:
            vnet.inputs.setdefault(proto.domain, {})[proto.protocol] = bound
        if proto.ethertype is not None:
            vnet.ethertypes[proto.ethertype] = bound  # type: ignore[index]
            if vnet.ether_fast is None:  # the first ethertype in protocol order
                vnet.ether_fast_type = proto.ethertype.to_bytes(2, "big")
                vnet.ether_fast = bound
    if proto.ctlinput is not None and proto.protocol is not None:
        vnet.ctlinputs.setdefault(proto.domain, {})[proto.protocol] = (
            MethodType(proto.ctlinput, state) if state is not None else
            _LazyInput(vnet, proto, proto.ctlinput))


class _LazyInput:
    """A lazy protocol's table entry until its first packet: attaches its state, binds
    its real entries in place of the stand-ins (the same dicts, so IPv4's `protox` and
    ICMP's `ctlx` see them) and hands the packet on."""

    __slots__ = ("fn", "proto", "vnet")

    def __init__(self, vnet: Vnet, proto: Protocol, fn: Callable[..., None]) -> None:
        self.vnet, self.proto, self.fn = vnet, proto, fn

    # what a bound method tells: the function, and the state it is for (attached on asking)
    @property
    def __func__(self) -> Callable[..., None]:
        return self.fn

    @property
    def __self__(self) -> Any:
        return getattr(self.vnet, self.proto.slot)  # type: ignore[arg-type]

    def __call__(self, *args: Any) -> None:
        vnet = self.vnet
        if not vnet.alive:
            return
        state = getattr(vnet, self.proto.slot)  # type: ignore[arg-type]
        _bind(vnet, self.proto)
        self.fn(state, *args)


def detach(vnet: Vnet, proto: Protocol) -> None:
    """Undo `attach`: no packet reaches the protocol once its state is released."""
    if vnet.inputs is not None and vnet.ctlinputs is not None:
        if proto.protocol is not None:
            vnet.inputs.get(proto.domain, {}).pop(proto.protocol, None)
            vnet.ctlinputs.get(proto.domain, {}).pop(proto.protocol, None)
        if proto.ethertype is not None:
            vnet.ethertypes.pop(proto.ethertype, None)  # type: ignore
            if vnet.ether_fast_type == proto.ethertype.to_bytes(2, "big"):
                first = next(iter(vnet.ethertypes.items()), None)
                vnet.ether_fast_type = b"" if first is None else first[0].to_bytes(2, "big")
                vnet.ether_fast = None if first is None else first[1]
    if proto.detach is not None and attached(vnet, proto):
        proto.detach(vnet)


# -- sockets ---------------------------------------------------------------------------------
def socket_factory(protocols: tuple[Protocol, ...], family: int, type_: int,
                   proto: int) -> Callable[..., Any]:
    """The factory for socket(family, type, proto), as socreate() finds a protosw.

    Errors as the stdlib's socket() reports FreeBSD's: an unknown family
    EAFNOSUPPORT, a type the family lacks ESOCKTNOSUPPORT, a protocol number no
    protocol of that type takes EPROTONOSUPPORT. `proto` 0 picks the first protocol
    of that type in attach order (UDP for datagrams); a protocol registered with that
    number comes before a catch-all (ANY) one, so divert (258) is not raw IP.
    """
    known_family = False
    known_type = False
    wildcard = None  # as pffindproto: an exact protocol number wins over raw IP's ANY
    for desc in protocols:
        if desc.domain != family or not desc.sockets:
            continue
        known_family = True
        for stype, factory in desc.sockets:
            if stype != type_:
                continue
            known_type = True
            if proto == 0 or desc.protocol == proto:
                return factory
            if desc.protocol == ANY and wildcard is None:
                wildcard = factory
    if wildcard is not None:
        return wildcard
    if not known_family:
        raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
    if not known_type:
        raise OSError(errno.ESOCKTNOSUPPORT, "Socket type not supported")
    raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
