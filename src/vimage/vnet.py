"""A vnet: one complete, independent network stack instance."""

from __future__ import annotations

import errno
import random
import re
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from vimage import protosw
from vimage.cpu import VnetCpu

if TYPE_CHECKING:
    from vimage.cli import CmdResult
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet
    from vimage.net.route import RouteState, RouteTable
    from vimage.netdb import HostsTable
    from vimage.netinet.arp import ArpState
    from vimage.netinet.icmp import IcmpState
    from vimage.netinet.ip import IpState
    from vimage.netinet.raw import RawState
    from vimage.netinet.tcp import TcpState
    from vimage.netinet.udp import UdpState
    from vimage.socket.socket import Socket

LAZY_SLOTS = ("arp", "divert", "dummynet", "gif", "gre", "hosts", "icmp", "icmp6", "ip6",
              "ipfw", "ipfw_nat", "ipsec", "ipsec6", "nd6", "ng", "raw", "raw6", "rt6",
              "rtsock", "tcp", "tcp6", "udp", "udp6", "vxlan")
"""The Vnet attributes a lazy protocol may keep its state in (the standard set's): each is
a `_LazyState` descriptor. A protocol marked lazy with another slot attaches at creation
(Kernel._set_protocols)."""

_NAME_RE = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\Z")


def check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > 255:
        raise ValueError(
            f"bad vnet name {name!r}: use letters, digits, '_' or '-', components joined by '.'")


@dataclass(frozen=True, slots=True)
class _LazyState:
    """`Vnet.<slot>` of a lazy protocol: a non-data descriptor, so the state, once
    attached into the instance dict, shadows it and a read is a plain dict lookup; until
    then a read lands here and attaches it (Vnet.lazy_state). Unlike a __getattr__ on
    Vnet, it leaves CPython free to specialise every other attribute read of a vnet."""

    slot: str

    def __get__(self, vnet: Vnet | None, owner: type | None = None) -> Any:
        if vnet is None:
            return self
        return vnet.lazy_state(self.slot)


class Vnet:
    """Every piece of networking state of one stack hangs off this object.

    Protocols (vimage.protosw) fill their slot in `attach` and empty it in `detach`;
    `inputs`, `ctlinputs` and `ethertypes` are the demultiplexing tables built from
    their descriptors.
    """

    # the eager protocols' states (route, ip) are declared slots; a lazy protocol's state
    # (LAZY_SLOTS) is kept in the instance __dict__ under a `_LazyState` descriptor, as is
    # that of a protocol registered later. No __getattr__: CPython 3.11 specialises no
    # attribute read on a class that has one, and the packet paths read the vnet's
    # attributes (ip, ifaces, kernel, alive...) on every packet
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_rng",
        "_secret",
        "alive",
        "children",
        "cpu",
        "ctlinputs",
        "ether_fast",
        "ether_fast_type",
        "ethertypes",
        "ifaces",
        "inputs",
        "ip",
        "kernel",
        "name",
        "next_ifindex",
        "params",
        "parent",
        "pfil_link_in",
        "pfil_link_out",
        "route",
        "rt",
        "serial",
    )

    DECLARED: ClassVar[frozenset[str]] = frozenset(__slots__)

    def __init__(self, kernel: Kernel, name: str, parent: Vnet | None) -> None:
        self.kernel = kernel
        self.name = name
        self.parent = parent
        # an insertion-ordered set (a dict's keys): destroying one of 100,000 children
        # of the base vnet is O(1), not a scan of a list
        self.children: dict[Vnet, None] | None = None
        self.alive = True
        self.ifaces: dict[str, Ifnet] = {}
        self.cpu = VnetCpu(kernel.sched.now_ns())  # CPU figures and load (vimage.cpu)
        self.next_ifindex = 1  # never reused, as Linux does: an index names one attachment
        # this vnet's own secret, keyed from the kernel's by a creation serial: still
        # reproducible from the seed, but no vnet's secret, random draws or what it sees of
        # them (ISNs, ports, IP IDs) tells anything of another's, and one vnet's activity
        # does not shift another's draws. Drawn from no shared generator (a Mersenne
        # Twister's state can be recovered from its outputs).
        self.serial = kernel.vnet_serial(name)  # the secret is derived from it on first use
        self._secret: bytes | None = None
        self._rng: random.Random | None = None  # made on first use: most vnets never draw
        # domain -> IP protocol number -> bound input / ctlinput; ethertype -> input:
        # made on the first packet (protosw.bind)
        self.inputs: dict[int, dict[int, Callable[..., None]]] | None = None
        self.ctlinputs: dict[int, dict[int, Callable[..., None]]] | None = None
        self.ethertypes: Mapping[int, Callable[..., None]] = protosw.UNBOUND
        # the first ethertype in protocol order (IPv4 in the standard set) and its input,
        # tested by Ethernet input before the table: a bytes compare, no hash per frame
        self.ether_fast_type = b""
        self.ether_fast: Callable[..., None] | None = None
        # the link layer's pfil hook points (vimage.net.pfil; FreeBSD's "ethernet" head):
        # every Ethernet frame received / about to be sent by this vnet's interfaces
        self.pfil_link_in: tuple[Any, ...] | None = None
        self.pfil_link_out: tuple[Any, ...] | None = None
        self.params: dict[str, int] = {}  # creation parameters (Kernel.create)
        self.rt: RouteTable  # fib 0; every fib in route.tables
        self.route: RouteState
        self.ip: IpState
        self.arp: ArpState
        self.icmp: IcmpState
        self.udp: UdpState
        self.tcp: TcpState
        self.raw: RawState
        self.hosts: HostsTable

    # -- lifecycle ----------------------------------------------------------
    def attach(self) -> None:
        for attach in self.kernel.attaches:  # a new vnet's demux tables are not bound yet
            attach(self)

    def detach(self) -> None:
        kernel = self.kernel
        sched = kernel.sched
        sched.purge_queue(set(self.ifaces.values()))  # frames for this vnet are dropped
        self.alive = False
        kernel.vnet_departure(self)
        for proto in reversed(kernel.protocols):  # a lazy one only if it was attached
            protosw.detach(self, proto)
        sched.purge_timers(self)

    if TYPE_CHECKING:  # for type checkers (and mypyc) only: protocol states read as
        # `vnet.ip6`, `vnet.tcp`, ... are the `_LazyState` descriptors' or attached ones
        def __getattr__(self, name: str) -> Any: ...

    def lazy_state(self, name: str) -> Any:
        """A lazy protocol's state (protosw.Protocol.lazy), attached now: the first read
        of `vnet.<name>` lands here (`_LazyState`); the attach puts the state in the
        instance dict, where every later read finds it without a call."""
        proto = self.kernel.lazy.get(name)
        if proto is None or not self.alive:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        with self.kernel.sched.lock:  # a socket call and the kernel thread may race here
            state = self.__dict__.get(name)
            if state is None:
                proto.attach(self)
                state = self.__dict__[name]
        return state

    def pfil_changed(self, head: str) -> None:
        """A link-layer pfil point changed (vimage.net.pfil): the interfaces re-mark."""
        for ifp in self.ifaces.values():
            ifp.sync_link_hooks()

    @property
    def secret(self) -> bytes:
        """This vnet's own 64 secret bytes, made on first use (most vnets never need
        them): [0:16] TCP's key (ISNs, cookies, syncache hash; RFC 6528), [16:32] the seed
        of `rng`, [32:34] the first IP ID, [34:38] the multipath flow-hash key, [40:48]
        the seed of routed's RNG (triggered-update damping), [48:56] route6d's."""
        secret = self._secret
        if secret is None:
            secret = self._secret = self.kernel.vnet_secret(self.serial)
        return secret

    @property
    def rng(self) -> random.Random:
        """This vnet's own random stream (ephemeral ports and the like)."""
        if self._rng is None:
            self._rng = random.Random(self.secret[16:32])
        return self._rng

    @property
    def draws(self) -> random.Random:
        """The stream for the draws a plain kernel takes from its shared `kernel.rng`
        (dummynet's loss and RED, iperf3's payload; link impairment inlines the same
        choice): this vnet's own `rng` in a keyed kernel, so what it draws does not
        depend on which vnets share the kernel (docs/mpi.md); the kernel's otherwise,
        so a seed keeps its results there."""
        return self.rng if self.kernel.keyed else self.kernel.rng

    def add_child(self, child: Vnet) -> None:
        if self.children is None:
            self.children = {}
        self.children[child] = None

    def remove_child(self, child: Vnet) -> None:
        if self.children:
            del self.children[child]
            if not self.children:
                self.children = None

    # -- user-facing API ------------------------------------------------------
    @property
    def display_name(self) -> str:
        return self.name or "vnet0"

    def socket(self, family: int = 2, type: int = 1, proto: int = 0) -> Socket:
        """A socket in this vnet, with the stdlib's method names and semantics; the
        protocol switch finds its factory by (family, type, proto)."""
        if not self.alive:
            raise OSError(errno.ENETDOWN, "vnet is destroyed")
        factory = self.kernel.socket_factory(family, type & 0xF, proto)
        return factory(self, family, type, proto)  # type: ignore[no-any-return]

    def activate(self) -> AbstractContextManager[Vnet]:
        """`with vnet.activate():` runs the block inside this vnet.

        Code in the block, and tasks and threads it starts with a copied context
        (asyncio tasks, `asyncio.to_thread`, `contextvars.copy_context().run`), acts
        on this vnet: the vimage event loop's networking methods, and the stdlib's
        `socket.socket`, `socket.create_connection`, `socket.getaddrinfo` and what is
        built on them (`urllib.request`, `http.client`). Outside any such block the
        stdlib is the host's own (see vimage.stdlib).
        """
        from vimage.context import Userland  # vimage.stdlib's hook, once it is imported

        return Userland.activate(self)

    def cmd(self, line: str | list[str], stdin: bytes | None = None) -> CmdResult:
        """Run a userland tool (ifconfig, route, netstat, ...) inside this vnet; `stdin`
        is what it reads for a file operand `-` (`tcpdump -r -`)."""
        from vimage.context import Userland

        if Userland.cmd is None:  # only when vimage.cli was loaded without the package
            raise RuntimeError("the userland tools (vimage.cli) are not loaded")
        return Userland.cmd(self, line, stdin)

    def iface(self, name: str) -> Ifnet:
        try:
            return self.ifaces[name]
        except KeyError:
            raise LookupError(f"interface {name} does not exist") from None

    def sysctl(self, name: str, value: Any = None) -> Any:
        """Read (or, with `value`, write) a sysctl of this vnet."""
        from vimage.sysctl import sysctl_get, sysctl_set

        if value is None:
            return sysctl_get(self, name)
        sysctl_set(self, name, value)
        return sysctl_get(self, name)

    def resolve(self, name: str) -> Vnet:
        """Find vnet `name` relative to this one (a child), else by its full name."""
        kernel = self.kernel
        if self.name and f"{self.name}.{name}" in kernel:
            return kernel.get(f"{self.name}.{name}")
        return kernel.get(name)

    def __repr__(self) -> str:
        state = "" if self.alive else " destroyed"
        return f"<Vnet {self.display_name}{state}>"


for _slot in LAZY_SLOTS:
    setattr(Vnet, _slot, _LazyState(_slot))
del _slot
