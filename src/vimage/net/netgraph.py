"""A small netgraph(4): nodes joined by named hooks, mapped onto vimage's interfaces.

FreeBSD's netgraph passes mbufs between nodes; IMUNES builds its topologies with it
(ng_eiface interfaces, ng_hub and ng_bridge for LANs, ng_pipe for shaped links). Here
the graph is the configuration and the data path is vimage's own:

- an `eiface` node is an `ngethN` interface (`Ngeth`, an epair-like Ethernet end with
  no peer until its `ether` hook leads somewhere);
- a `hub` / `bridge` node is a vimage hub / bridge (`hubN`, `bridgeN`); each of its
  connected hooks is a member port, an `Ngeth` named `<hub>_<hook>` in its vnet;
- a `pipe` node (hooks `upper`, `lower`) is the link model's impairment (`LinkPipe`) on
  the two ends it joins: `downstream` shapes what enters at `upper`, `upstream` what
  enters at `lower` (ng_pipe(4)); `bandwidth` and `delay` apply to both;
- a chain of hooks between two such ends, with at most one pipe on it, is one cable:
  the two ends become each other's peer, exactly an epair. `recompute` brings the
  cables in line with the graph after every change.

Each vnet has its own graph (FreeBSD's netgraph is per vnet), made on first use. The
`ngctl` tool's socket node (`.`) lives for one invocation: its hooks go when the tool
exits, and a hub, bridge or pipe left without hooks shuts down (unless `setpersistent`),
as in FreeBSD. Node IDs count per graph from 1.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from vimage.net import ifnet
from vimage.net.if_bridge import Bridge, BridgeCloner
from vimage.net.ifnet import IFF_BROADCAST, IFF_MULTICAST, IFF_RUNNING, IFF_SIMPLEX, Epair
from vimage.net.pipe import configure as configure_pipe
from vimage.net.tunnel import next_unit
from vimage.protosw import Protocol

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

ETHER_MTU = 1500
NG_NODESIZ = 32  # FreeBSD netgraph.h: name length limit (with the NUL)


class Ngeth(Epair):
    """An ng_eiface interface (or a hub/bridge port): an Ethernet end whose peer is set
    by the graph. `ifconfig ngethN vnet X` moves it as any interface."""

    __slots__ = ()


class Hook:
    __slots__ = ("name", "node", "peer")

    def __init__(self, node: Node, name: str) -> None:
        self.node = node
        self.name = name
        self.peer: Hook | None = None


class Node:
    """A netgraph node: `id`, `name` ('' = unnamed), `hooks` by name."""

    TYPE: ClassVar[str] = ""
    TERMINAL: ClassVar[bool] = True  # ends a cable (pipes and sockets do not)

    def __init__(self, graph: Netgraph) -> None:
        self.graph = graph
        graph.last_id += 1
        self.id = graph.last_id
        self.name = ""
        self.hooks: dict[str, Hook] = {}
        self.persistent = False
        graph.nodes[self.id] = self

    def check_hook(self, name: str) -> None:
        """Refuse a hook name this type does not take (EINVAL) or one in use (EISCONN)."""
        if name in self.hooks:
            raise OSError(errno.EISCONN, f"hook {name} is already connected")

    def endpoint(self, hook: Hook) -> Ifnet:
        """The interface that is this node's end of a cable through `hook`."""
        raise NotImplementedError

    def release(self, hook: Hook) -> None:
        """The cable through `hook` is gone."""

    def msg(self, cmd: str, args: str) -> str | None:
        """A control message; the response text, None for none; OSError if unknown."""
        if cmd == "setpersistent" and self.TYPE in ("hub", "bridge"):
            self.persistent = True
            return None
        raise OSError(errno.EINVAL, f"{self.TYPE} node: unknown message {cmd!r}")

    def last_hook_gone(self) -> bool:
        """Whether the node shuts down once it has no hooks (ng_hub, ng_bridge, ng_pipe)."""
        return not self.persistent

    def destroy(self) -> None:
        """Free what backs the node (its hooks are already gone)."""

    @property
    def label(self) -> str:
        return self.name or "<unnamed>"


class SocketNode(Node):
    TYPE = "socket"
    TERMINAL = False

    def __init__(self, graph: Netgraph) -> None:
        super().__init__(graph)
        self.name = f"ngctl{self.id}"  # FreeBSD's ngctl names its node ngctl<pid>

    def last_hook_gone(self) -> bool:
        return False


class EifaceNode(Node):
    """ng_eiface: one hook, `ether`; the node is named after its interface."""

    TYPE = "eiface"

    def __init__(self, graph: Netgraph) -> None:
        super().__init__(graph)
        vnet = graph.vnet
        unit = next_unit(vnet, "ngeth", None)
        self.ifp: Ifnet = Ngeth(vnet, "ngeth", unit, f"ngeth{unit}",
                                IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST, ETHER_MTU,
                                vnet.kernel.random_mac(vnet))
        self.name = self.ifp.name

    def check_hook(self, name: str) -> None:
        if name != "ether":
            raise OSError(errno.EINVAL, f"eiface: no hook {name!r} (only ether)")
        super().check_hook(name)

    def endpoint(self, hook: Hook) -> Ifnet:
        return self.ifp

    def msg(self, cmd: str, args: str) -> str | None:
        if cmd == "getifname":
            return f'"{self.ifp.name}"'
        return super().msg(cmd, args)

    def last_hook_gone(self) -> bool:
        return False

    def destroy(self) -> None:
        if self.ifp.vnet.ifaces.get(self.ifp.name) is self.ifp:
            ifnet.destroy(self.ifp)


class SwitchNode(Node):
    """ng_hub / ng_bridge: a vimage hub or bridge; a cabled hook is a member port."""

    def __init__(self, graph: Netgraph) -> None:
        super().__init__(graph)
        self.bridge: Bridge = graph.vnet.kernel.service(BridgeCloner).create(
            graph.vnet, kind=self.TYPE)
        self.bridge.set_up(True)
        self.ports: dict[str, Ifnet] = {}

    def check_hook(self, name: str) -> None:
        if self.TYPE == "bridge" and not ((name.startswith("link") and name[4:].isdigit())
                                          or (name.startswith("uplink") and name[6:].isdigit())):
            raise OSError(errno.EINVAL, f"bridge: bad hook name {name!r} (linkN, uplinkN)")
        super().check_hook(name)

    def endpoint(self, hook: Hook) -> Ifnet:
        port = self.ports.get(hook.name)
        if port is None:
            vnet = self.graph.vnet
            port = Ngeth(vnet, "ngport", self.id, f"{self.bridge.name}_{hook.name}",
                         IFF_BROADCAST | IFF_SIMPLEX | IFF_MULTICAST, ETHER_MTU,
                         vnet.kernel.random_mac(vnet))
            port.set_up(True)
            self.bridge.add_member(port)
            self.ports[hook.name] = port
        return port

    def release(self, hook: Hook) -> None:
        port = self.ports.pop(hook.name, None)
        if port is not None:
            ifnet.destroy(port)  # leaves the bridge (its ifdetach)

    def destroy(self) -> None:
        for name in list(self.ports):
            port = self.ports.pop(name)
            ifnet.destroy(port)
        ifnet.destroy(self.bridge)


class HubNode(SwitchNode):
    TYPE = "hub"


class BridgeNode(SwitchNode):
    TYPE = "bridge"


class PipeNode(Node):
    """ng_pipe: `upper` and `lower`; `setcfg` / `getcfg` as ng_pipe's ASCII messages."""

    TYPE = "pipe"
    TERMINAL = False

    def __init__(self, graph: Netgraph) -> None:
        super().__init__(graph)
        # ng_pipe's struct ng_pipe_cfg, the parts mapped: bit/s, microseconds, and per
        # direction BER (one bit error in BER bits), duplicate (percent), queuelen
        self.cfg: dict[str, Any] = {"bandwidth": 0, "delay": 0}
        self.dirs: dict[str, dict[str, int]] = {
            "downstream": {"BER": 0, "duplicate": 0, "queuelen": 0},
            "upstream": {"BER": 0, "duplicate": 0, "queuelen": 0}}

    def check_hook(self, name: str) -> None:
        if name not in ("upper", "lower"):
            raise OSError(errno.EINVAL, f"pipe: no hook {name!r} (upper, lower)")
        super().check_hook(name)

    def msg(self, cmd: str, args: str) -> str | None:
        if cmd == "setcfg":
            self.setcfg(parse_struct(args))
            self.graph.recompute()
            return None
        if cmd == "getcfg":
            return self.cfg_text()
        return super().msg(cmd, args)

    def setcfg(self, cfg: dict[str, Any]) -> None:
        """Apply a parsed `{ bandwidth=.. delay=.. upstream={ .. } downstream={ .. } }`;
        other fields of ng_pipe's struct are accepted and ignored (docs/ngctl.md)."""
        for key, value in cfg.items():
            if key in ("bandwidth", "delay"):
                self.cfg[key] = _number(key, value)
            elif key in self.dirs:
                if not isinstance(value, dict):
                    raise OSError(errno.EINVAL, f"setcfg: {key} needs {{ ... }}")
                for field, v in value.items():
                    if field in self.dirs[key]:
                        self.dirs[key][field] = _number(field, v)

    def settings(self, direction: str) -> dict[str, object]:
        """LinkPipe settings for frames travelling `direction`."""
        d = self.dirs[direction]
        out: dict[str, object] = {
            "bandwidth": self.cfg["bandwidth"], "delay": self.cfg["delay"] / 1e6,
            "ber": 1.0 / d["BER"] if d["BER"] > 0 else 0.0,
            "dup": min(d["duplicate"], 100) / 100.0}
        if d["queuelen"] > 0:
            out["queue"] = d["queuelen"]
        return out

    def cfg_text(self) -> str:
        def direction(name: str) -> str:
            d = self.dirs[name]
            return (f"{name}={{ BER={d['BER']} duplicate={d['duplicate']} "
                    f"queuelen={d['queuelen']} }}")
        return (f"{{ bandwidth={self.cfg['bandwidth']} delay={self.cfg['delay']} "
                f"{direction('upstream')} {direction('downstream')} }}")


NODE_TYPES: Mapping[str, type[Node]] = MappingProxyType({
    "eiface": EifaceNode, "hub": HubNode, "bridge": BridgeNode, "pipe": PipeNode})


def _number(key: str, value: object) -> int:
    try:
        number = int(str(value), 0)
    except ValueError:
        raise OSError(errno.EINVAL, f"setcfg: {key}={value}: not a number") from None
    if number < 0:
        raise OSError(errno.EINVAL, f"setcfg: {key}={value}: negative")
    return number


def parse_struct(text: str) -> dict[str, Any]:
    """netgraph's ASCII form of a struct: `{ a=1 b={ c=2 } }` -> {'a': '1', 'b': {...}}."""
    tokens = text.replace("{", " { ").replace("}", " } ").replace("=", " = ").split()
    pos = 0

    def struct() -> dict[str, Any]:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] != "{":
            raise OSError(errno.EINVAL, "expected '{'")
        pos += 1
        out: dict[str, Any] = {}
        while pos < len(tokens) and tokens[pos] != "}":
            if pos + 2 >= len(tokens) or tokens[pos + 1] != "=":
                raise OSError(errno.EINVAL, f"expected NAME=VALUE at {tokens[pos]!r}")
            key = tokens[pos]
            pos += 2
            if tokens[pos] == "{":
                out[key] = struct()
            else:
                out[key] = tokens[pos].strip('"')
                pos += 1
        if pos >= len(tokens):
            raise OSError(errno.EINVAL, "missing '}'")
        pos += 1
        return out

    result = struct()
    if pos != len(tokens):
        raise OSError(errno.EINVAL, f"unexpected {tokens[pos]!r} after the struct")
    return result


class Cable:
    __slots__ = ("a", "b", "ifa", "ifb", "pipe")

    def __init__(self, a: Hook, b: Hook, pipe: PipeNode | None) -> None:
        self.a, self.b, self.pipe = a, b, pipe
        self.ifa = a.node.endpoint(a)
        self.ifb = b.node.endpoint(b)


class Netgraph:
    """One vnet's graph (`vnet.ng`)."""

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.nodes: dict[int, Node] = {}
        self.last_id = 0
        self.cables: dict[frozenset[Hook], Cable] = {}

    # -- lookup ----------------------------------------------------------------------
    def by_name(self, name: str) -> Node | None:
        if name.startswith("[") and name.endswith("]"):
            try:
                return self.nodes.get(int(name[1:-1], 16))
            except ValueError:
                return None
        return next((n for n in self.nodes.values() if n.name == name), None)

    # -- topology --------------------------------------------------------------------
    def make(self, type_: str) -> Node:
        cls = NODE_TYPES.get(type_)
        if cls is None:
            raise OSError(errno.ENXIO, f"no node type {type_!r}")
        return cls(self)

    def connect(self, a: Node, ahook: str, b: Node, bhook: str) -> None:
        if a is b:
            raise OSError(errno.EINVAL, "cannot connect a node to itself")
        a.check_hook(ahook)
        b.check_hook(bhook)
        ha, hb = Hook(a, ahook), Hook(b, bhook)
        ha.peer, hb.peer = hb, ha
        a.hooks[ahook] = ha
        b.hooks[bhook] = hb
        self.recompute()

    def rmhook(self, node: Node, name: str) -> None:
        hook = node.hooks.get(name)
        if hook is None:
            raise OSError(errno.ENOENT, f"no hook {name!r}")
        peer = hook.peer
        del node.hooks[name]
        if peer is not None:
            peer.node.hooks.pop(peer.name, None)
        self.recompute()
        for n in (node, peer.node if peer is not None else None):
            if n is not None and n.id in self.nodes and not n.hooks and n.last_hook_gone():
                self.shutdown(n)

    def name(self, node: Node, name: str) -> None:
        if not name or len(name) >= NG_NODESIZ or any(c in name for c in ".:[]"):
            raise OSError(errno.EINVAL, f"bad node name {name!r}")
        other = self.by_name(name)
        if other is not None and other is not node:
            raise OSError(errno.EADDRINUSE, f"name {name!r} is in use")
        node.name = name

    def shutdown(self, node: Node) -> None:
        """Remove the node and its hooks (neighbours left hookless may follow it)."""
        if self.nodes.pop(node.id, None) is None:
            return
        neighbours = []
        for hook in list(node.hooks.values()):
            peer = hook.peer
            if peer is not None:
                peer.node.hooks.pop(peer.name, None)
                neighbours.append(peer.node)
        node.hooks.clear()
        self.recompute()
        node.destroy()
        for n in neighbours:
            if n.id in self.nodes and not n.hooks and n.last_hook_gone():
                self.shutdown(n)

    # -- cables ----------------------------------------------------------------------
    def _far_end(self, hook: Hook) -> tuple[Hook | None, PipeNode | None, bool]:
        """From terminal `hook`, through at most one pipe: (the terminal hook at the
        other end or None, the pipe, whether `hook`'s side enters the pipe at upper)."""
        cur = hook.peer
        pipe: PipeNode | None = None
        upper = False
        while cur is not None and isinstance(cur.node, PipeNode):
            if pipe is not None:  # a second pipe on one chain: not mapped
                return None, None, False
            pipe = cur.node
            upper = cur.name == "upper"
            other = pipe.hooks.get("lower" if upper else "upper")
            cur = other.peer if other is not None else None
        if cur is None or not cur.node.TERMINAL:
            return None, None, False
        return cur, pipe, upper

    def recompute(self) -> None:
        """Make the cables match the graph: tear down stale ones, build new ones, and
        (re)apply every pipe's settings."""
        wanted: dict[frozenset[Hook], tuple[Hook, Hook, PipeNode | None, bool]] = {}
        for node in self.nodes.values():
            if not node.TERMINAL:
                continue
            for hook in node.hooks.values():
                far, pipe, upper = self._far_end(hook)
                if far is not None:
                    key = frozenset((hook, far))
                    if key not in wanted:
                        wanted[key] = (hook, far, pipe, upper)
        for key in [k for k, c in self.cables.items()
                    if k not in wanted or wanted[k][2] is not c.pipe]:
            self._unplug(self.cables.pop(key))
        for key, (a, b, pipe, upper) in wanted.items():
            cable = self.cables.get(key)
            if cable is None:
                cable = self.cables[key] = Cable(a, b, pipe)
                cable.ifa.peer, cable.ifb.peer = cable.ifb, cable.ifa
                cable.ifa.flags |= IFF_RUNNING
                cable.ifb.flags |= IFF_RUNNING
            self._shape(cable, upper if cable.a is a else not upper)

    @staticmethod
    def _shape(cable: Cable, a_upper: bool) -> None:
        pipe = cable.pipe
        for ifp, upper in ((cable.ifa, a_upper), (cable.ifb, not a_upper)):
            if pipe is None:
                if ifp.pipe is not None:
                    ifp.pipe.flush()
                    ifp.pipe = None
            else:  # what enters at upper travels downstream
                configure_pipe(ifp, pipe.settings("downstream" if upper else "upstream"))

    @staticmethod
    def _unplug(cable: Cable) -> None:
        for ifp in (cable.ifa, cable.ifb):
            ifp.peer = None
            ifp.flags &= ~IFF_RUNNING
            if ifp.pipe is not None:
                ifp.pipe.flush()
                ifp.pipe = None
        cable.a.node.release(cable.a)
        cable.b.node.release(cable.b)

    def clear(self) -> None:
        """The vnet is going: every node shuts down (FreeBSD vnet_netgraph_uninit)."""
        for node in list(self.nodes.values()):
            self.shutdown(node)


def vnet_attach(vnet: Vnet) -> None:
    vnet.ng = Netgraph(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.ng.clear()


PROTOCOL = Protocol("netgraph", 95, "ng", vnet_attach, vnet_detach)
"""Netgraph as a lazy subsystem: a graph only in the vnets that run ngctl."""
