"""The kernel: clock, scheduler, RNG, the vnet registry, the protocol set and services."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import threading
import weakref
from collections.abc import Callable, Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

from vimage import protosw
from vimage.cpu import DEFAULT_WEIGHT, check_weight
from vimage.gcpolicy import CollectorPolicy, collector_paused
from vimage.protosw import Protocol
from vimage.sched import FOREVER, NS_PER_S, Scheduler, Timer
from vimage.sysctl import Oid
from vimage.vnet import LAZY_SLOTS, Vnet, check_name

FD_BASE = 1 << 28
"""Socket descriptors of a kernel start here, above any real descriptor (Linux caps those
at 2**20), so a selector can tell the two kinds apart and never hands ours to the OS."""

if TYPE_CHECKING:
    from vimage.cli import CmdResult
    from vimage.net.ifnet import Ifnet

S = TypeVar("S")


def _lazy_only_in_a_lazy_slot(proto: Protocol) -> Protocol:
    """`proto`, attached at creation instead if it is marked lazy but its slot is not one
    of Vnet's lazy ones (vnet.LAZY_SLOTS): nothing would attach it on first use."""
    if proto.lazy and proto.slot not in LAZY_SLOTS:
        return dataclasses.replace(proto, lazy=False)
    return proto


class UnitSet(set[int]):
    """The unit numbers a cloner has in use, with a hint: every unit below `hint` is taken.
    Freeing a unit lowers the hint to it, so the lowest free unit is still the one
    handed out (an epair destroyed leaves its number for the next one, as on FreeBSD)."""

    def __init__(self) -> None:
        super().__init__()
        self.hint = 0

    def discard(self, unit: int) -> None:
        if unit in self:
            super().discard(unit)
            self.hint = min(self.hint, unit)

    def remove(self, unit: int) -> None:
        super().remove(unit)
        self.hint = min(self.hint, unit)

    def clear(self) -> None:
        super().clear()
        self.hint = 0


class Kernel:
    """One process-local "machine" holding many independent network stacks.

    `clock="virtual"` makes time discrete-event: `run()` jumps through timers and
    returns at once. All randomness (MACs, ports, IDs, loss) comes from `rng`,
    seeded by `seed`, so a virtual-time run is reproducible byte for byte.

    `protocols` is the protocol set (vimage.protosw) every vnet attaches, by default
    `standard_protocols`, which the package's `__init__` sets once to the standard set
    (ARP, IPv4, ICMP, UDP, TCP, raw IP, ...): this layer cannot import the protocols,
    which sit above it. `register()` adds one later, to every vnet. Interface cloners
    (`standard_cloners`, the epair one) are named there the same way.
    """

    standard_protocols: tuple[Protocol, ...] = ()
    standard_cloners: tuple[tuple[str, type], ...] = ()  # (name, service class), likewise

    def __init__(self, clock: str = "real", seed: int | None = None,
                 protocols: tuple[Protocol, ...] | None = None, keyed: bool = False) -> None:
        if clock not in ("real", "virtual"):
            raise ValueError(f"clock must be 'real' or 'virtual', not {clock!r}")
        self.clock = clock
        self.seed = seed
        self.rng = random.Random(seed)
        # the root of every vnet's secret (Vnet.secret): from the seed when there is one
        self._secret = (os.urandom(32) if seed is None else
                        hashlib.blake2b(repr(seed).encode(), person=b"vimage.kernel").digest())
        self._vnet_serial = 0
        self.sched = Scheduler(virtual=clock == "virtual")
        # keyed: what a vnet draws and the order of its timers depend on its name, not on
        # which vnets share the kernel (experiments across MPI ranks, docs/mpi.md)
        self.keyed = keyed
        self.sched.keyed = keyed
        self._mac_rng = random.Random(self._secret) if keyed else self.rng
        self._mac_counts: dict[str, int] = {}  # keyed: MACs made per vnet name
        self.protocols: tuple[Protocol, ...] = ()
        self.oids: dict[str, Oid] = {}
        # what creating a vnet and an interface arriving run, gathered once (hot enough)
        self.attaches: tuple[Callable[[Vnet], None], ...] = ()
        self.ifattaches: tuple[Callable[[Ifnet], None], ...] = ()
        self._set_protocols(self.standard_protocols if protocols is None else tuple(protocols))
        self._vnets: dict[str, Vnet] = {}
        self._services: dict[type, Any] = {}
        # objects told of interface and vnet events (services, traces): see subscribe()
        self._listeners: list[Any] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self.fds: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._next_fd = FD_BASE
        self.base: Vnet = Vnet(self, "", None)
        self.sched.cpu_base = self.base  # charged for timers of no vnet (vimage.cpu)
        self._weighted: set[Vnet] = set()  # vnets whose cpu.weight is not the default
        # freezes the vnets made one by one in batches (vimage.gcpolicy; batch 0: off)
        self.collector = CollectorPolicy()
        self.base.attach()

    # -- vnets ----------------------------------------------------------------
    def vnet_serial(self, name: str = "") -> int:
        """A new vnet's creation serial: what its secret is derived from. A keyed kernel
        derives it from the vnet's name instead (unique, 63 bits)."""
        if self.keyed:
            digest = hashlib.blake2b(name.encode(), digest_size=8, person=b"vimage.vnet")
            return int.from_bytes(digest.digest(), "big") >> 1
        self._vnet_serial += 1
        return self._vnet_serial

    def vnet_secret(self, serial: int) -> bytes:
        """The 64-byte secret of the vnet created `serial`th (see Vnet.secret): a keyed
        hash under the kernel's root, so no vnet's secret tells anything of another's."""
        return hashlib.blake2b(serial.to_bytes(8, "big"), key=self._secret).digest()

    def create(self, name: str, **params: int) -> Vnet:
        """Create vnet `name`; `a.b` is a child of `a`, which must exist. `params` are
        creation parameters its subsystems read when they attach (`fibs=4`: net.fibs)."""
        with self.sched.lock:
            check_name(name)
            if name in self._vnets:
                raise FileExistsError(f"vnet {name!r} already exists")
            parent_name, _, _ = name.rpartition(".")
            parent = self._vnets.get(parent_name) if parent_name else self.base
            if parent is None:
                raise LookupError(f"parent vnet {parent_name!r} does not exist")
            vnet = Vnet(self, name, parent)
            vnet.params = params
            self._vnets[name] = vnet
            parent.add_child(vnet)
            vnet.attach()
            self.collector.created()
            return vnet

    def create_many(self, names: Iterable[str], **params: int) -> list[Vnet]:
        """Create a vnet for each of `names` (as `create`, each with `params`), with the
        garbage collector paused meanwhile (see `vimage.gcpolicy.collector_paused`); the
        kernel's collector policy may freeze them after."""
        with self.sched.lock:
            with collector_paused() as was_on:
                vnets = [self.create(name, **params) for name in names]
                self.collector.settle(was_on)
            return vnets

    def get(self, name: str) -> Vnet:
        if name in ("", "0", "vnet0"):
            return self.base
        try:
            return self._vnets[name]
        except KeyError:
            raise LookupError(f"no such vnet: {name!r}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._vnets

    def vnets(self) -> list[Vnet]:
        """Every vnet except the base one, in name order."""
        return [self._vnets[n] for n in sorted(self._vnets)]

    def destroy(self, vnet: Vnet | str) -> None:
        """Destroy a vnet and, first, its children (deepest first)."""
        with self.sched.lock:
            if isinstance(vnet, str):
                vnet = self.get(vnet)
            if vnet is self.base:
                raise PermissionError("the base vnet cannot be destroyed")
            if not vnet.alive:
                raise LookupError(f"vnet {vnet.name!r} is already destroyed")
            for child in list(vnet.children or ()):
                self.destroy(child)
            vnet.detach()
            self.sched.cpu_dirty.discard(vnet.cpu)  # load not yet folded: nobody to fold for
            if self._weighted:
                self.set_cpu_weight(vnet, DEFAULT_WEIGHT)
            del self._vnets[vnet.name]
            self._mac_counts.pop(vnet.name, None)  # its interfaces died with it
            if vnet.parent is not None:
                vnet.parent.remove_child(vnet)
            self.collector.destroyed()

    # -- CPU accounting (vimage.cpu) -------------------------------------------------
    @property
    def cpu_accounting(self) -> int:
        """kern.vnet_cpu_accounting: 1 if the loop charges vnets for their work."""
        return int(self.sched.accounting)

    @cpu_accounting.setter
    def cpu_accounting(self, value: int) -> None:
        self.sched.accounting = bool(value)

    def set_cpu_weight(self, vnet: Vnet, weight: int) -> None:
        """Give `vnet` a share of the kernel loop in proportion to `weight` (cgroup v2's
        cpu.weight scale, default 100) when several vnets have frames queued. While every
        vnet has the default, the loop serves frames in arrival order, as ever."""
        vnet.cpu.weight = check_weight(weight)
        if weight == DEFAULT_WEIGHT:
            self._weighted.discard(vnet)
        else:
            self._weighted.add(vnet)
        self.sched.weighted = bool(self._weighted)

    # -- the protocol set -------------------------------------------------------------
    def register(self, proto: Protocol) -> None:
        """Add a protocol to this kernel and attach it to every live vnet (and to their
        interfaces), as loading a protocol module does; ValueError if it clashes."""
        with self.sched.lock:
            proto = _lazy_only_in_a_lazy_slot(proto)
            self._set_protocols((*self.protocols, proto))
            for vnet in (self.base, *self._vnets.values()):
                protosw.attach(vnet, proto)
                if proto.ifattach is not None:
                    for ifp in list(vnet.ifaces.values()):
                        proto.ifattach(ifp)

    def unregister(self, name: str) -> None:
        """Detach protocol `name` from every vnet and remove it from the set."""
        with self.sched.lock:
            proto = next((p for p in self.protocols if p.name == name), None)
            if proto is None:
                raise LookupError(f"no protocol {name!r}")
            for vnet in (self.base, *self._vnets.values()):
                if proto.ifdetach is not None:
                    for ifp in list(vnet.ifaces.values()):
                        proto.ifdetach(ifp)
                protosw.detach(vnet, proto)
            self._set_protocols(tuple(p for p in self.protocols if p is not proto))

    def _set_protocols(self, protocols: tuple[Protocol, ...]) -> None:
        protocols = protosw.check_set(tuple(_lazy_only_in_a_lazy_slot(p) for p in protocols))
        oids = protosw.build_oids(protocols)
        self.protocols, self.oids = protocols, oids
        self.attaches = tuple(p.attach for p in protocols if p.attach is not None and not p.lazy)
        # slot -> protocol attached on first use (Vnet.lazy_state), detached if it was
        self.lazy = MappingProxyType({p.slot: p for p in protocols if p.lazy})
        self.ifattaches = tuple(p.ifattach for p in protocols if p.ifattach is not None)

    def socket_factory(self, family: int, type_: int, proto: int) -> Callable[..., Any]:
        return protosw.socket_factory(self.protocols, family, type_, proto)

    # -- services and events --------------------------------------------------------------
    def service(self, cls: type[S]) -> S:
        """The kernel's instance of service `cls` (fault injection, the epair cloner...),
        made with `cls(kernel)` on first use and subscribed to events (see subscribe)."""
        svc = self._services.get(cls)
        if svc is None:
            svc = self._services[cls] = cls(self)  # type: ignore[call-arg]
            self.subscribe(svc)
        return svc  # type: ignore[no-any-return]

    @property
    def services(self) -> tuple[Any, ...]:
        return tuple(self._services.values())

    def subscribe(self, listener: Any) -> None:
        """Tell `listener` of events through whichever of these methods it has:
        ifattach(ifp) when an interface arrives in a vnet (created or moved in),
        ifdetach(ifp) before it leaves one, vnet_detach(vnet) when a vnet is destroyed
        (FreeBSD's ifnet_arrival_event, ifnet_departure_event, vnet shutdown)."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def unsubscribe(self, listener: Any) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def ifnet_arrival(self, ifp: Ifnet) -> None:
        """`ifp` arrived in `ifp.vnet`: protocols in attach order, then listeners."""
        for ifattach in self.ifattaches:
            ifattach(ifp)
        if self._listeners:
            for listener in list(self._listeners):
                hook = getattr(listener, "ifattach", None)
                if hook is not None:
                    hook(ifp)

    def ifnet_departure(self, ifp: Ifnet) -> None:
        """`ifp` is leaving `ifp.vnet`: listeners, then protocols in reverse order."""
        for listener in list(self._listeners):
            hook = getattr(listener, "ifdetach", None)
            if hook is not None:
                hook(ifp)
        for proto in reversed(self.protocols):
            if proto.ifdetach is not None:
                proto.ifdetach(ifp)

    def ifnet_up(self, ifp: Ifnet) -> None:
        """`ifp` came up (gratuitous ARP and the like)."""
        for proto in self.protocols:
            if proto.ifup is not None:
                proto.ifup(ifp)

    def ifnet_lladdr(self, ifp: Ifnet) -> None:
        """`ifp` has a new link-level address (FreeBSD's iflladdr_event): the neighbour
        caches rebuild the link headers they prebuilt with the old one."""
        for proto in self.protocols:
            if proto.iflladdr is not None:
                proto.iflladdr(ifp)

    def vnet_departure(self, vnet: Vnet) -> None:
        for listener in list(self._listeners):
            hook = getattr(listener, "vnet_detach", None)
            if hook is not None:
                hook(vnet)

    # -- interface units --------------------------------------------------------
    def alloc_unit(self, units: set[int], wanted: int | None = None) -> int:
        """Take unit `wanted`, else the lowest free one (FreeBSD's alloc_unr). With a
        `UnitSet` the search starts at its hint, below which every unit is taken, so
        creating n interfaces in a row is linear, not quadratic."""
        if wanted is not None:
            if wanted in units:
                raise FileExistsError(f"unit {wanted} is in use")
            unit = wanted
        else:
            unit = units.hint if isinstance(units, UnitSet) else 0
            while unit in units:
                unit += 1
            if isinstance(units, UnitSet):
                units.hint = unit + 1
        units.add(unit)
        return unit

    def cloner(self, name: str) -> Any:
        """The interface cloner `name` ("epair"), a service of this kernel."""
        cls = dict(self.standard_cloners).get(name)
        if cls is None:
            raise LookupError(f"no interface cloner {name!r}")
        return self.service(cls)

    def epair(self, vnet: Vnet | None = None) -> tuple[Ifnet, Ifnet]:
        """Create an epair in `vnet` (default: the base vnet); returns both ends."""
        with self.sched.cond:
            return self.cloner("epair").create(vnet or self.base)  # type: ignore[no-any-return]

    def alloc_fd(self, sock: Any) -> int:
        """A descriptor number for `sock`, unique in this kernel (see FD_BASE)."""
        fd = self._next_fd
        self._next_fd += 1
        self.fds[fd] = sock
        return fd

    def random_mac(self, vnet: Vnet | None = None) -> bytes:
        """A locally administered unicast MAC from the kernel RNG. A keyed kernel draws
        from a stream of its own, and for an interface made in `vnet` from that vnet's
        count of them: the same MACs whichever vnets share the kernel."""
        if self.keyed and vnet is not None:
            count = self._mac_counts[vnet.name] = self._mac_counts.get(vnet.name, 0) + 1
            digest = hashlib.blake2b(f"{vnet.name}/{count}".encode(), digest_size=6,
                                     key=self._secret[:32], person=b"vimage.mac")
            raw = bytearray(digest.digest())
        else:
            raw = bytearray(self._mac_rng.getrandbits(48).to_bytes(6, "big"))
        raw[0] = (raw[0] & 0xFC) | 0x02
        return bytes(raw)

    # -- time -------------------------------------------------------------------
    @property
    def now(self) -> float:
        """Seconds since the kernel started (virtual or real)."""
        return self.sched.now_ns() / NS_PER_S

    def now_ns(self) -> int:
        return self.sched.now_ns()

    def call_later(self, seconds: float, callback: Callable[..., Any], *args: Any,
                   owner: Vnet | None = None) -> Timer:
        return self.sched.call_later(int(seconds * NS_PER_S), callback, *args, owner=owner)

    def run(self, seconds: float = 0.0) -> None:
        """Advance the kernel by `seconds`, processing every packet and timer due."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        deadline = self.sched.now_ns() + int(seconds * NS_PER_S)
        self.sched.advance(deadline)

    def run_until(self, predicate: Callable[[], bool], timeout: float | None = None) -> bool:
        """Run until `predicate()` is true; False if `timeout` seconds pass first."""
        deadline = FOREVER if timeout is None else self.sched.now_ns() + int(timeout * NS_PER_S)
        return self.sched.advance(deadline, predicate)

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        """Used by blocking calls: drive (or wait for) the loop until `predicate()`."""
        return self.run_until(predicate, timeout)

    # -- background thread (real clock) ------------------------------------------
    def start(self) -> None:
        """Run the loop in a background thread (real clock only)."""
        if self.clock != "real":
            raise RuntimeError("a background kernel thread needs the real clock")
        if self._thread is not None:
            return
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="vimage-kernel", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        self.sched.advance(FOREVER, lambda: self._stopping)

    def stop(self) -> None:
        if self._thread is None:
            return
        with self.sched.cond:
            self._stopping = True
            self.sched.cond.notify_all()
        self._thread.join()
        self._thread = None

    # -- convenience ----------------------------------------------------------------
    def cmd(self, line: str | list[str]) -> CmdResult:
        """Run a userland tool in the base vnet."""
        return self.base.cmd(line)

    def interfaces(self) -> list[Ifnet]:
        out = list(self.base.ifaces.values())
        for v in self._vnets.values():
            out.extend(v.ifaces.values())
        return out

    def __repr__(self) -> str:
        return f"<Kernel clock={self.clock} vnets={len(self._vnets)}>"
