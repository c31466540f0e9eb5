"""An Experiment realises a Topology in a Kernel: one vnet per node, an epair per link.

Naming: the experiment is a vnet `EXP` (the topology's name unless given) and every node
a child vnet `EXP.NODE`, so `vimage exec EXP.pc1 -- ...` and every tool reach a node, and
several experiments live side by side in one kernel.

`up()` checks first what the kernel must provide (the bridge interface for lanswitch
nodes, a hub for hubs, IPv6 for IPv6 addresses, a `routed` tool for RIP routers, root,
a TUN driver and the real clock for ext nodes) and refuses before creating anything;
then it creates the vnets, the links (an epair per link, its ends moved into the two
nodes and renamed as the model names them, impaired both ways as IMUNES's netem does:
the delay applies once in each direction, G6; a link to an ext node is a TAP into the
ext node's Linux namespace, vimage.emu.ext), forwarding on routers (G5, both families),
addresses, lo0's extra addresses, static routes (G3), automatic default routes (G2),
the hosts tables (IMUNES hostsAutoAssign), waits for IPv6 DAD to finish, then starts
the routing daemons and the start-up commands (run with `vnet.cmd`). It is all or nothing: any
failure destroys what was made and raises ExperimentError naming the node.
`down()` destroys the experiment vnet; the link ends belong to their nodes (an end's
home is its node's vnet), so a link dies with either node, and nothing is left.

Link units converted to the link model (vimage.net.pipe): bandwidth bit/s as is,
delay and jitter µs -> s, loss and duplicate % -> probability, BER 1/N -> 1/N per bit,
queue in frames; jitter is the pipe's uniform extra delay in [0, jitter], never
reordering (IMUNES's FreeBSD jitter lists arrive as their largest value). A `direct`
link is not impaired.
`link(a, b).set(delay="20ms", ...)` changes a live link (values as in the YAML format).
"""

from __future__ import annotations

import copy
import ipaddress
import socket as _std_socket
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.apps.routed import RipParams
from vimage.cli import TOOLS
from vimage.emu import address
from vimage.emu import ext as linux_ext
from vimage.emu import jobs as timed
from vimage.emu.model import (
    LINK_FIELDS,
    SWITCH_TYPES,
    Link,
    Node,
    Route,
    Topology,
    parse_bandwidth,
    parse_ber,
    parse_duration_us,
    parse_percent,
)
from vimage.kernel import collector_paused
from vimage.net.ifnet import create_loopback
from vimage.net.pipe import DEFAULT_QUEUE
from vimage.netinet6.in6 import IN6_IFF_DUPLICATED, IN6_IFF_TENTATIVE, In6Addr
from vimage.topo import add_route

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

IPV6_PROTOCOL_NAMES = frozenset({"ip6", "ipv6", "inet6"})
SERVICES = MappingProxyType({"routed": "routed", "rip": "routed", "route6d": "route6d",
                             "ripng": "route6d"})
"""The node services vimage provides, by the names a topology may give, and the command
that starts each in the node (IMUNES's own services, ssh, ftp, telnet..., are not here:
they are warned about)."""
DAD_WAIT = 10.0  # seconds up() waits at most for DAD (dad_count probes, 1 s apart)
CONVERGE_WAIT = 60.0  # seconds up(wait_converged=True) waits at most (as vimage topo up)
CONVERGE_STEP = 0.01  # seconds of the kernel's clock between two convergence checks


class ExperimentError(RuntimeError):
    """An experiment that could not be brought up (nothing of it is left)."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


def kernel_has_ipv6(kernel: Kernel) -> bool:
    return any(p.domain in (_std_socket.AF_INET6, 28) or p.name in IPV6_PROTOCOL_NAMES
               for p in kernel.protocols)


def kernel_has_cloner(kernel: Kernel, name: str) -> bool:
    return name in dict(kernel.standard_cloners)


def pipe_settings(link: Link, every: bool = False) -> dict[str, Any]:
    """The link's impairment in vimage.net.pipe's units: the settings that impair
    (nothing for a direct link), or with `every` all of them, defaults included."""
    if link.direct:
        return {}
    out: dict[str, Any] = {
        "bandwidth": link.bandwidth,
        "delay": link.delay / 1e6,
        "jitter": link.jitter / 1e6,
        "loss": link.loss / 100,
        "ber": 1.0 / link.ber if link.ber else 0.0,
        "dup": link.duplicate / 100,
        "queue": link.queue or DEFAULT_QUEUE,
    }
    if every:
        return out
    return {k: v for k, v in out.items() if v and not (k == "queue" and not link.queue)}


_SETTERS: tuple[tuple[str, Callable[[Any], Any]], ...] = (
    ("bandwidth", parse_bandwidth), ("delay", parse_duration_us), ("jitter", parse_duration_us),
    ("loss", parse_percent), ("ber", parse_ber), ("duplicate", parse_percent),
    ("queue", int), ("direct", lambda v: str(v).lower() in ("1", "true", "yes")),
)


@dataclass
class ExpLink:
    """A live link: the model's Link and the two interfaces realising it."""

    model: Link
    ends: tuple[Ifnet, Ifnet]

    def set(self, **params: Any) -> None:
        """Change the link (YAML-style values: delay='20ms', bandwidth='1Mbit/s', loss='1%';
        None puts a parameter back to its default). Everything is checked before anything
        changes; the topology's Link is updated too. Frames already on the wire keep
        their timing (the pipe is reconfigured, as vlink does, not replaced)."""
        updated = copy.copy(self.model)
        setters = dict(_SETTERS)
        defaults = {f.name: f.default for f in fields(Link)}
        for key, value in params.items():
            if key not in setters:
                raise ValueError(f"unknown link parameter '{key}' ({', '.join(LINK_FIELDS)})")
            parsed = defaults[key] if value is None else setters[key](value)
            if key == "queue" and parsed is not None and parsed < 1:
                raise ValueError("queue must be at least 1 frame")
            setattr(updated, key, parsed)
        for key, value in vars(updated).items():
            setattr(self.model, key, value)
        for end in self.ends:
            if updated.direct:
                end.clear_impairment()
            elif pipe_settings(updated) or end.pipe is not None:
                end.impair(**pipe_settings(updated, every=True))

    @property
    def params(self) -> dict[str, Any]:
        return self.model.params()

    def state(self) -> dict[str, Any]:
        """JSON-serialisable: the ends, parameters and counters of each direction."""
        return {
            "a": ":".join(self.model.a), "b": ":".join(self.model.b),
            "params": self.params,
            "counters": [{"ifname": e.name, "opackets": e.opackets, "obytes": e.obytes,
                          "ipackets": e.ipackets, "ibytes": e.ibytes} for e in self.ends],
        }


@dataclass
class Experiment:
    """A topology brought up in a kernel; see the module docstring."""

    topology: Topology
    kernel: Kernel
    name: str | None = None
    skip_ipv6: bool = False  # configure IPv4 only (when the kernel has no IPv6)
    progress: Callable[[int, int, str], None] | None = None  # (done, total, what)
    vnet: Vnet | None = None
    nodes: dict[str, Vnet] = field(default_factory=dict)
    links: list[ExpLink] = field(default_factory=list)
    routing: dict[str, tuple[str, ...]] = field(default_factory=dict)  # RIP intent
    warnings: list[str] = field(default_factory=list)
    resolved: Topology | None = None  # the topology as brought up (automatic addresses)
    ext: dict[str, linux_ext.ExtNode] = field(default_factory=dict)  # ext nodes (Linux)
    jobs: timed.Jobs = field(default_factory=timed.Jobs)  # `at T CMD` lines (emu/jobs.py)
    _subnets: list[int] | None = field(default=None, repr=False)  # converged(): IPv4 nets
    _subnets6: list[int] = field(default_factory=list, repr=False)  # and IPv6 ones
    _last_miss: tuple[int, int] = field(default=(0, 0), repr=False)  # converged(): where
    _table_sizes: dict[int, int] = field(default_factory=dict, repr=False)  # family: subnets

    def __post_init__(self) -> None:
        self.topology.check()
        if self.name is None:
            self.name = self.topology.name

    # -- the public face ------------------------------------------------------------------------
    @property
    def is_up(self) -> bool:
        return self.vnet is not None and self.vnet.alive

    def node(self, name: str) -> Vnet:
        try:
            return self.nodes[name]
        except KeyError:
            if name in self.ext:
                raise LookupError(f"node {name} of experiment {self.name} is an ext node, "
                                  f"Linux network namespace {self.ext[name].netns}") from None
            raise LookupError(f"experiment {self.name} has no node {name!r}") from None

    def link(self, a: str, b: str) -> ExpLink:
        for link in self.links:
            if link.model.nodes in ((a, b), (b, a)):
                return link
        raise LookupError(f"experiment {self.name} has no link between {a} and {b}")

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state: nodes (vnet, interfaces) and links (params, counters)."""
        return {
            "name": self.name, "up": self.is_up,
            "nodes": {name: {"vnet": v.name, "type": self.topology.nodes[name].type,
                             "interfaces": sorted(v.ifaces)} for name, v in self.nodes.items()}
            | {name: node.state() for name, node in self.ext.items()},
            "links": [link.state() for link in self.links],
        }

    def converged(self) -> bool:
        """True when every node running a routing daemon has a route to every subnet of
        its family (IPv4 for rip, IPv6 for ripng) of the experiment (`vimage topo up
        --wait-converged`); True with no such node."""
        topo = self.resolved
        if not self.is_up or topo is None:
            return False
        if self._subnets is None:
            self._subnets = sorted(int(net.network_address) for net in networks(topo, 4)
                                   if net.prefixlen < 32)
            self._subnets6 = sorted(int(net.network_address) for net in networks(topo, 6)
                                    if net.prefixlen < 128 and not net.is_link_local)
        for name, protocols in self.routing.items():  # RIPng routers: every IPv6 subnet
            if "ripng" in protocols:
                lookup6 = self.nodes[name].rt6.lookup
                if any(lookup6(net) is None for net in self._subnets6):
                    return False
        # RIP routers: the router and subnet that failed last time go first; until
        # convergence a check ends at the first miss, so polling a large topology is cheap
        names = [name for name, protocols in self.routing.items() if "rip" in protocols]
        start, first = self._last_miss
        names = names[start:] + names[:start] if start < len(names) else names
        for k, name in enumerate(names):
            lookup = self.nodes[name].rt.lookup
            subnets = self._subnets[first:] + self._subnets[:first] if k == 0 else self._subnets
            for j, net in enumerate(subnets):
                if lookup(net) is None:
                    self._last_miss = ((start + k) % len(names),
                                       (first + j) % len(subnets) if k == 0 else j)
                    return False
        return True

    def __enter__(self) -> Experiment:
        return self if self.is_up else self.up()  # `with exp.up(wait_converged=True):`

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- up and down ------------------------------------------------------------------------
    def up(self, wait_converged: bool = False, timeout: float = CONVERGE_WAIT) -> Experiment:
        """Bring the topology up; with `wait_converged`, return only once `converged()`
        (waiting in the kernel's clock, at most `timeout` seconds: in virtual time that only
        advances the clock), else bring it down again and raise `ExperimentError`."""
        if self.is_up:
            raise ExperimentError(f"experiment {self.name} is already up")
        try:
            topo = self._resolved()
        except ValueError as exc:
            raise ExperimentError(f"experiment {self.name}: {exc}") from None
        self._preflight(topo)
        try:
            self._build(topo)
        except Exception as exc:
            self._teardown()
            problems = exc.problems if isinstance(exc, ExperimentError) else [str(exc)]
            raise ExperimentError(f"experiment {self.name}: {exc}", problems) from exc
        if wait_converged and not self.wait_converged(timeout):
            self._teardown()
            raise ExperimentError(f"experiment {self.name}: the routing daemons did not "
                                  f"converge in {timeout:g} s")
        return self

    def wait_converged(self, timeout: float = CONVERGE_WAIT,
                       step: float = CONVERGE_STEP) -> bool:
        """Wait in the kernel's clock until `converged()`, at most `timeout` seconds,
        checking once per `step` seconds of that clock: a check on a large topology is a
        route lookup per router per subnet, and the kernel would test a wait's predicate
        after every event. A timer every `step` makes sure a check happens then even when
        nothing else is going on, so the wait ends at most `step` after convergence."""
        sched = self.kernel.sched
        step_ns = max(1, int(step * 1e9))
        next_check = sched.now_ns()
        tick: list[Any] = []

        def arm() -> None:
            tick[:] = [sched.call_later(step_ns, arm, owner=self.vnet)]

        def due() -> bool:
            nonlocal next_check
            now = sched.now_ns()
            if now < next_check:
                return False
            next_check = now + step_ns
            return self.converged()

        with sched.cond:
            if self.converged():
                return True
            arm()
        try:
            return self.kernel.wait(due, timeout)
        finally:
            with sched.cond:
                tick[0].cancel()

    def down(self) -> None:
        self._teardown()

    def _teardown(self) -> None:
        kernel = self.kernel
        with kernel.sched.cond:
            if self.vnet is not None and self.vnet.alive:
                kernel.destroy(self.vnet)  # closes the ext nodes' TAPs with their vnets
        for node in self.ext.values():
            problem = linux_ext.destroy(node)
            if problem is not None:
                self.warnings.append(f"node {node.name}: {problem}")
        self.ext = {}
        self.jobs = timed.Jobs()
        self.vnet = None
        self.resolved = None
        self._subnets, self._last_miss = None, (0, 0)
        self._table_sizes = {}
        self.nodes = {}
        self.links = []
        self.routing = {}

    # -- preparation ------------------------------------------------------------------------
    def _resolved(self) -> Topology:
        topo = self.topology
        if topo.auto_address or topo.auto_address6:
            topo = address.auto_assign(topo, topo.auto_address, topo.auto_address6)
        return topo

    def _preflight(self, topo: Topology) -> None:
        """Refuse, before creating anything, what this kernel cannot realise."""
        kernel = self.kernel
        problems = []
        if self.name in kernel:
            problems.append(f"vnet {self.name} already exists")
        has_ipv6 = kernel_has_ipv6(kernel)
        for node in topo.nodes.values():
            problems.extend(self._node_needs(node, has_ipv6))
        problems.extend(self._ext_needs(topo))
        if problems:
            raise ExperimentError(f"experiment {self.name}: {problems[0]}", problems)

    def _node_needs(self, node: Node, has_ipv6: bool) -> list[str]:
        kernel = self.kernel
        out = []
        if node.type == "lanswitch" and not kernel_has_cloner(kernel, "bridge"):
            out.append(f"node {node.name}: lanswitch needs the bridge interface")
        if node.type == "hub" and not (kernel_has_cloner(kernel, "hub")
                                        or kernel_has_cloner(kernel, "bridge")):
            out.append(f"node {node.name}: hub needs the hub or bridge interface")
        if node.routing and "routed" not in TOOLS:
            out.append(f"node {node.name}: model {node.model} needs the routed daemon, "
                       "which this vimage does not have (use model static)")
        elif "ripng" in node.routing and "route6d" not in TOOLS:
            out.append(f"node {node.name}: model {node.model} needs the route6d daemon, "
                       "which this vimage does not have (use model static)")
        wants_ipv6 = any(i.ipv6 for i in node.interfaces.values()) or any(
            r.family == 6 for r in node.routes)
        if wants_ipv6 and not has_ipv6 and not self.skip_ipv6:
            out.append(f"node {node.name}: IPv6 addresses need IPv6 in the kernel "
                       "(or skip_ipv6 / --skip-ipv6)")
        return out

    def _ext_needs(self, topo: Topology) -> list[str]:
        out = []
        exts = [n for n in topo.nodes.values() if n.type == "ext"]
        why = linux_ext.unavailable(self.kernel) if exts else None
        for node in exts:
            if why is not None:
                out.append(f"node {node.name}: {why}")
            elif linux_ext.exists(linux_ext.netns_name(str(self.name), node.name)):
                out.append(f"node {node.name}: Linux network namespace "
                           f"{linux_ext.netns_name(str(self.name), node.name)} already exists")
        for link in topo.links:
            if {topo.nodes[link.a[0]].type, topo.nodes[link.b[0]].type} == {"ext"}:
                out.append(f"link {link.a[0]}-{link.b[0]}: a link between two ext nodes "
                           "has no vnet end")
        return out

    def _step(self, done: int, total: int, what: str) -> None:
        if self.progress is not None:
            self.progress(done, total, what)

    # -- building ---------------------------------------------------------------------------
    def _build(self, topo: Topology) -> None:
        kernel = self.kernel
        use_ipv6 = kernel_has_ipv6(kernel) and not self.skip_ipv6
        total = len(topo.nodes) + len(topo.links)
        self.resolved = topo
        for node in topo.nodes.values():
            if node.type == "ext":  # its Linux namespace, before the kernel lock
                name = linux_ext.netns_name(str(self.name), node.name)
                self.ext[node.name] = linux_ext.create(node.name, name)
        # the collector paused while the nodes and links are made (kernel.collector_paused:
        # a full collection per quarter of growth would walk every node made so far)
        with kernel.sched.cond, collector_paused() as collector_on:
            self.vnet = kernel.create(str(self.name))
            for k, node in enumerate(topo.nodes.values()):
                if node.type == "ext":
                    continue
                self.nodes[node.name] = vnet = kernel.create(f"{self.name}.{node.name}")
                if node.type == "router":
                    vnet.ip.forwarding = 1  # G5 (v4 and v6); pc and host nodes do not forward
                    if use_ipv6:
                        vnet.ip6.forwarding = 1
                self._step(k + 1, total, f"node {node.name}")
            for k, link in enumerate(self.topology.links):
                if link.a[0] in self.ext or link.b[0] in self.ext:
                    self._make_ext_link(topo, link, use_ipv6)
                else:
                    self.links.append(self._make_link(topo, link))
                self._step(len(topo.nodes) + k + 1, total, f"link {link.a[0]}-{link.b[0]}")
            for node in topo.nodes.values():
                if node.type != "ext":
                    self._configure(node, use_ipv6)
            for node in topo.nodes.values():
                if node.type in SWITCH_TYPES:
                    self._switch(node)
            for node in topo.nodes.values():
                self._routes(node, node.routes, use_ipv6)
            for name, routes in address.default_routes(topo).items():
                self._auto_defaults(topo.nodes[name], routes, use_ipv6)
            if topo.hosts:
                self._hosts(topo)
            # a big experiment's vnets are frozen now, not walked by every full collection
            # of the run (vimage.gcpolicy); a small one's are left alone
            kernel.collector.settle(collector_on)
        if use_ipv6:
            self._wait_dad(topo)
        for node in topo.nodes.values():  # tools take the kernel lock themselves
            self._start(node)

    def _make_link(self, topo: Topology, link: Link) -> ExpLink:
        assert self.vnet is not None
        ends = self.kernel.epair(self.vnet)
        for end, (node_name, ifname) in zip(ends, (link.a, link.b), strict=True):
            vnet = self.nodes[node_name]
            end.move_to(vnet)
            _rename(end, ifname)
            end.home = vnet  # the link belongs to its nodes: it dies with either
            iface = topo.nodes[node_name].interfaces[ifname]
            if iface.mac is not None:
                end.mac = bytes.fromhex(iface.mac.replace(":", ""))
            if iface.mtu is not None:
                end.mtu = iface.mtu
        settings = pipe_settings(link)
        if settings:
            for end in ends:
                end.impair(**settings)
        for end in ends:
            end.set_up(True)
        return ExpLink(link, (ends[0], ends[1]))

    def _make_ext_link(self, topo: Topology, link: Link, use_ipv6: bool) -> None:
        """A TAP in the peer node whose Linux side is the ext node's interface."""
        (ext_name, ext_if), (peer_name, peer_if) = (
            (link.a, link.b) if link.a[0] in self.ext else (link.b, link.a))
        vnet = self.nodes[peer_name]
        iface = topo.nodes[ext_name].interfaces[ext_if]
        if not use_ipv6:
            iface = replace(iface, ipv6=[])
        peer = topo.nodes[peer_name].interfaces[peer_if]
        tap = linux_ext.attach(self.ext[ext_name], vnet, iface, peer.mtu)
        _rename(tap, peer_if)
        if peer.mac is not None:
            tap.mac = bytes.fromhex(peer.mac.replace(":", ""))
        if pipe_settings(link):
            self.warnings.append(f"link {link.a[0]}-{link.b[0]}: an ext link is not impaired "
                                 "(a TAP has no link pipe)")
        tap.set_up(True)

    def _configure(self, node: Node, use_ipv6: bool) -> None:
        vnet = self.nodes[node.name]
        for ifname, iface in node.interfaces.items():
            ifp = vnet.ifaces.get(ifname)
            if ifp is None:
                if not ifname.startswith("lo"):
                    if iface.ipv4 or iface.ipv6:
                        self.warnings.append(f"node {node.name}: {ifname} is on no link")
                    continue
                ifp = create_loopback(vnet, int(ifname[2:] or 0))
                ifp.set_up(True)
            for cidr in iface.ipv4:
                try:
                    ifp.add_addr(cidr)
                except (OSError, ValueError) as exc:
                    raise ExperimentError(f"node {node.name}: {ifname} {cidr}: {exc}") from exc
            if use_ipv6:
                for cidr in iface.ipv6:
                    self._cmd(node, f"ifconfig {ifname} inet6 {cidr}")

    def _wait_dad(self, topo: Topology) -> None:
        """Wait (in the kernel's clock) until duplicate address detection has finished on
        every address the topology gives, so `up()` returns with usable IPv6 addresses
        (RFC 4862 5.4: a tentative address is neither a source nor a destination); a
        duplicated address is a warning, as the node's kernel logs it."""
        pending: list[In6Addr] = []
        for node in topo.nodes.values():
            if node.name in self.ext or not any(i.ipv6 for i in node.interfaces.values()):
                continue
            for ifp in self.nodes[node.name].ifaces.values():
                data = (ifp.afdata or {}).get(_std_socket.AF_INET6)
                if data is not None:
                    pending.extend(ia for ia in data.addrs if ia.flags & IN6_IFF_TENTATIVE)

        def done() -> bool:
            while pending and not pending[-1].flags & IN6_IFF_TENTATIVE:
                pending.pop()
            return not pending

        if not done():
            self.kernel.wait(done, DAD_WAIT)
        for ia in pending:
            if ia.flags & IN6_IFF_TENTATIVE:
                self.warnings.append(f"{ia!r}: still tentative after {DAD_WAIT:g} s")
        for node in topo.nodes.values():
            for ifp in self.nodes[node.name].ifaces.values() if node.name in self.nodes else ():
                data = (ifp.afdata or {}).get(_std_socket.AF_INET6)
                for ia in data.addrs if data is not None else ():
                    if ia.flags & IN6_IFF_DUPLICATED:
                        self.warnings.append(f"node {node.name}: duplicate address {ia!r}")

    def _switch(self, node: Node) -> None:
        """A lanswitch is a learning bridge; a hub floods (G6): the hub interface if the
        kernel has one, else a bridge."""
        kind = "hub" if node.type == "hub" and kernel_has_cloner(self.kernel, "hub") else "bridge"
        if node.type == "hub" and kind == "bridge":
            self.warnings.append(f"node {node.name}: hub realised as a learning bridge")
        vnet = self.nodes[node.name]
        created = vnet.cmd(f"ifconfig {kind} create")
        if not created.ok:
            raise ExperimentError(f"node {node.name}: {created.output.strip()}")
        bridge = created.output.strip().split()[-1]
        members = [f"addm {name}" for name in node.interfaces if name in vnet.ifaces]
        self._cmd(node, f"ifconfig {bridge} {' '.join(members)} up")

    def _routes(self, node: Node, routes: list[Route], use_ipv6: bool) -> None:
        if node.name in self.ext:
            wanted = [r for r in routes if use_ipv6 or r.family == 4]
            linux_ext.add_routes(self.ext[node.name], wanted)
            return
        vnet = self.nodes[node.name]
        for route in routes:
            if route.family == 6:
                if use_ipv6:
                    self._cmd(node, f"route add -inet6 {route.dest} {route.gateway}")
                continue
            try:
                add_route(vnet, route.dest, route.gateway)
            except (OSError, ValueError) as exc:
                raise ExperimentError(f"node {node.name}: route {route}: {exc}") from exc

    def _auto_defaults(self, node: Node, routes: list[Route], use_ipv6: bool) -> None:
        """G2's default routes; this stack holds one route per prefix, so the first gateway
        of each family (the preferred one) is used unless a static default exists."""
        have = {ipaddress.ip_network(r.dest).version for r in node.routes
                if ipaddress.ip_network(r.dest).prefixlen == 0}
        chosen = []
        for route in routes:
            if route.family not in have:
                have.add(route.family)
                chosen.append(route)
        self._routes(node, chosen, use_ipv6)

    def _hosts(self, topo: Topology) -> None:
        names = []
        for node in topo.nodes.values():
            first = next((a for i in node.interfaces.values() for a in i.ipv4), None)
            if first is not None:
                names.append((first.partition("/")[0], node.name))
        for vnet in self.nodes.values():
            for addr, name in names:
                vnet.hosts.add(addr, name)

    def _start(self, node: Node) -> None:
        if node.name in self.ext:
            if node.commands:
                self.warnings.append(f"node {node.name}: an ext node's commands are not run")
            return
        if node.routing:
            self.routing[node.name] = node.routing
            if "rip" in node.routing:
                self._cmd(node, f"routed{self._table_size(4)}")
            if "ripng" in node.routing:
                self._cmd(node, f"route6d{self._table_size(6)}")
        for service in node.services:
            line = SERVICES.get(service)
            if line is None:
                self.warnings.append(f"node {node.name}: service {service} is not provided "
                                     f"by vimage (it has {', '.join(sorted(SERVICES))})")
            elif service not in node.routing:  # a routing model already started it
                self._cmd(node, line)
        for line in node.commands:
            if timed.is_job(line):  # `at SECONDS COMMAND`: started then, from the loop
                try:
                    self.jobs.schedule(node.name, self.nodes[node.name], line)
                except timed.JobError as exc:
                    raise ExperimentError(f"node {node.name}: {exc}") from None
            else:
                self._cmd(node, line)

    def _table_size(self, family: int) -> str:
        """routed's/route6d's -P max_routes for this topology: the daemons refuse routes
        beyond their table limit (a guard against a flooding neighbour), so a topology
        with more subnets than the default limit gets a table twice its size."""
        sizes = self._table_sizes
        if family not in sizes:  # once per experiment: every router asks
            assert self.resolved is not None
            sizes[family] = len(networks(self.resolved, family))
        wanted = 2 * sizes[family]
        return f" -P max_routes={wanted}" if wanted > RipParams.max_routes else ""

    def _cmd(self, node: Node, line: str) -> None:
        result = self.nodes[node.name].cmd(line)
        if not result.ok:
            output = " ".join(result.output.split()) or f"status {result.status}"
            raise ExperimentError(f"node {node.name}: '{line}' failed: {output}")


def networks(topo: Topology, family: int) -> set[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The networks of every address of `family` (4 or 6) the topology gives."""
    return {ipaddress.ip_interface(a).network for n in topo.nodes.values()
            for i in n.interfaces.values() for a in (i.ipv4 if family == 4 else i.ipv6)}


def _rename(ifp: Ifnet, name: str) -> None:
    """Give an interface the model's name inside its (new) vnet."""
    vnet = ifp.vnet
    if ifp.name == name:
        return
    if name in vnet.ifaces:
        raise FileExistsError(f"interface {name} already exists in {vnet.display_name}")
    del vnet.ifaces[ifp.name]
    ifp.name = name
    vnet.ifaces[name] = ifp
