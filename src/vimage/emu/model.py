"""The topology model: a pure graph of nodes, interfaces and links, with no kernel in sight.

As Mininet keeps `Topo` apart from `Mininet`, this module only describes a network;
`vimage.emu.experiment` realises one in a kernel, `vimage.emu.yamlfmt` reads and writes
it as YAML and `vimage.emu.imn` imports IMUNES files into it.

`Topology.to_dict()` gives plain JSON-serialisable data (the YAML format's structure,
docs/emulator.md) and `Topology.from_dict()` reads it back, reporting every mistake as a
`Problem`: a field path such as ("nodes", "r1", "type") and a one-line message, which the
file readers turn into `FILE:LINE: nodes.r1.type: unknown node type 'wlan'`.

Units held by the model are IMUNES's (docs/emulator.md): bandwidth in bit/s, delay and
jitter in microseconds, loss and duplication in percent, BER as 1/N (0: none).
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field, fields
from typing import Any

FORMAT_VERSION = 1
NODE_TYPES: tuple[str, ...] = ("pc", "host", "router", "lanswitch", "hub", "ext")
L3_TYPES: tuple[str, ...] = ("pc", "host", "router", "ext")
SWITCH_TYPES: tuple[str, ...] = ("lanswitch", "hub")
ROUTING_PROTOCOLS: tuple[str, ...] = ("rip", "ripng")
LINK_FIELDS: tuple[str, ...] = ("bandwidth", "delay", "jitter", "loss", "ber", "duplicate",
                                "queue", "direct")
LINK_HINTS: tuple[str, ...] = ("weight",)  # for the partitioner only (docs/mpi.md)
NODE_FIELDS: tuple[str, ...] = ("type", "model", "interfaces", "routes", "auto_default_routes",
                                "services", "commands", "position", "partition")
IFACE_FIELDS: tuple[str, ...] = ("ipv4", "ipv6", "mac", "mtu")
OPTION_FIELDS: tuple[str, ...] = ("auto_address", "auto_address6", "hosts")

_NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}\Z")  # a vnet name component (vimage.vnet)
_IFNAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,14}\Z")
_MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}\Z")

Path = tuple[str | int, ...]


class Problem(ValueError):
    """One mistake in a topology: where (a field path) and what."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message

    @property
    def where(self) -> str:
        return ".".join(str(p) for p in self.path)

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.path else self.message


class TopologyError(ValueError):
    """A topology refused: the first problem as one line, all of them in `problems`."""

    def __init__(self, line: str, problems: list[Problem] | None = None,
                 lines: list[str] | None = None) -> None:
        line = one_line(line)
        super().__init__(line)
        self.problems = problems or []
        self.lines = [one_line(t) for t in lines or [line]]  # every problem, one line each


def one_line(text: str) -> str:
    """`text` with control characters (a newline quoted from a file) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# -- units --------------------------------------------------------------------------------------
def parse_bandwidth(value: Any) -> int:
    """'10Mbit/s', '100kbps', '1.5M', 64000 -> bit/s (0 = unlimited)."""
    if isinstance(value, bool):
        raise ValueError(f"bad bandwidth {value!r}")
    if isinstance(value, (int, float)):
        number, scale = float(value), 1
    else:
        text = str(value).strip().lower()
        for suffix in ("bit/s", "bps", "b/s", "bit"):
            if text.endswith(suffix):
                text = text[: -len(suffix)]
                break
        scale = 1
        if text and text[-1] in "kmg":
            scale = {"k": 10**3, "m": 10**6, "g": 10**9}[text[-1]]
            text = text[:-1]
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"bad bandwidth {value!r}") from None
    if not 0 <= number < math.inf:
        raise ValueError(f"bad bandwidth {value!r}")
    return round(number * scale)


def parse_duration_us(value: Any) -> int:
    """'5ms', '1.5s', '200us', or a bare number of microseconds (IMUNES's unit) -> µs."""
    if isinstance(value, bool):
        raise ValueError(f"bad duration {value!r}")
    if isinstance(value, (int, float)):
        number, scale = float(value), 1.0
    else:
        text = str(value).strip().lower()
        scale = 1.0
        for suffix, mult in (("ms", 1e3), ("us", 1.0), ("µs", 1.0), ("ns", 1e-3), ("s", 1e6)):
            if text.endswith(suffix):
                text, scale = text[: -len(suffix)], mult
                break
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"bad duration {value!r}") from None
    if not 0 <= number < math.inf:
        raise ValueError(f"bad duration {value!r}")
    return round(number * scale)


def parse_percent(value: Any) -> float:
    """'1%', '0.5', 2 -> percent in [0, 100]."""
    if isinstance(value, bool):
        raise ValueError(f"bad percentage {value!r}")
    text = str(value).strip()
    try:
        number = float(text[:-1] if text.endswith("%") else text)
    except ValueError:
        raise ValueError(f"bad percentage {value!r}") from None
    if not 0.0 <= number <= 100.0:
        raise ValueError(f"percentage {value!r} is not between 0 and 100")
    return number


def parse_ber(value: Any) -> int:
    """BER as IMUNES writes it, N meaning 1 bit in N is wrong ('1/1000000' also): N, 0 = none."""
    if isinstance(value, bool):
        raise ValueError(f"bad bit error rate {value!r}")
    text = str(value).strip()
    if text.startswith("1/"):
        text = text[2:]
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"bad bit error rate {value!r}") from None
    if not 0 <= number < math.inf or number != int(number):
        raise ValueError(f"bad bit error rate {value!r} (a whole N for 1/N)")
    return int(number)


def format_bandwidth(bps: int) -> str | int:
    for scale, unit in ((10**9, "G"), (10**6, "M"), (10**3, "k")):
        if bps and bps % scale == 0:
            return f"{bps // scale}{unit}bit/s"
    return bps


def format_duration(us: int) -> str:
    if us and us % 1_000_000 == 0:
        return f"{us // 1_000_000}s"
    if us and us % 1000 == 0:
        return f"{us // 1000}ms"
    return f"{us}us"


# -- the graph ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Route:
    """A static route, `dest` a prefix ('0.0.0.0/0' for the default) via `gateway`."""

    dest: str
    gateway: str

    @property
    def family(self) -> int:
        return ipaddress.ip_network(self.dest, strict=False).version

    def __str__(self) -> str:
        return f"{self.dest} {self.gateway}"


@dataclass
class Interface:
    name: str
    ipv4: list[str] = field(default_factory=list)  # 'a.b.c.d/len'
    ipv6: list[str] = field(default_factory=list)
    mac: str | None = None
    mtu: int | None = None


@dataclass
class Node:
    name: str
    type: str
    routing: tuple[str, ...] = ()  # routing protocols ("rip", "ripng"); () is model static
    interfaces: dict[str, Interface] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    auto_default_routes: bool = False
    services: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)  # start-up commands, vimage tools
    position: tuple[float, float] | None = None
    partition: int | None = None  # pinned to this partition (MPI rank) by the user

    @property
    def model(self) -> str:
        return " ".join(self.routing) if self.routing else "static"

    @property
    def is_l3(self) -> bool:
        return self.type in L3_TYPES

    def new_interface(self) -> Interface:
        """A new interface under the next free name (eth0.. on L3 nodes, e0.. on switches)."""
        prefix = "e" if self.type in SWITCH_TYPES else "eth"
        unit = 0
        while f"{prefix}{unit}" in self.interfaces:
            unit += 1
        iface = self.interfaces[f"{prefix}{unit}"] = Interface(f"{prefix}{unit}")
        return iface


@dataclass
class Link:
    a: tuple[str, str]  # (node, interface)
    b: tuple[str, str]
    bandwidth: int = 0  # bit/s, 0 = unlimited
    delay: int = 0  # µs, each way
    jitter: int = 0  # µs
    loss: float = 0.0  # %
    ber: int = 0  # 1/N, 0 = none
    duplicate: float = 0.0  # %
    queue: int | None = None  # frames
    direct: bool = False  # no impairment at all (IMUNES "direct")
    weight: float = 1.0  # expected traffic, relative: the partitioner avoids cutting heavy links

    @property
    def nodes(self) -> tuple[str, str]:
        return self.a[0], self.b[0]

    def params(self) -> dict[str, Any]:
        """The parameters that differ from an unimpaired link."""
        defaults = {f.name: f.default for f in fields(self)}
        return {k: getattr(self, k) for k in LINK_FIELDS if getattr(self, k) != defaults[k]}


@dataclass
class Topology:
    name: str = "topology"
    nodes: dict[str, Node] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    auto_address: bool = False  # IMUNES addressing for interfaces without addresses (v4)
    auto_address6: bool = False  # the same in fc00:N::/64
    hosts: bool = False  # every node's hosts table names every node (IMUNES hostsAutoAssign)

    # -- building ------------------------------------------------------------------------------
    def add_node(self, name: str, type: str = "pc", **kwargs: Any) -> Node:
        if name in self.nodes:
            raise Problem(("nodes", name), f"duplicate node name '{name}'")
        node = self.nodes[name] = Node(name, type, **kwargs)
        return node

    def connect(self, a: str, b: str, a_iface: str | None = None, b_iface: str | None = None,
                **params: Any) -> Link:
        """Link nodes `a` and `b`, on new interfaces unless named; params in model units."""
        ends = []
        for node_name, iface_name in ((a, a_iface), (b, b_iface)):
            node = self.nodes.get(node_name)
            if node is None:
                raise Problem(("links",), f"link to a missing node '{node_name}'")
            if iface_name is None:
                iface_name = node.new_interface().name
            elif iface_name not in node.interfaces:
                node.interfaces[iface_name] = Interface(iface_name)
            ends.append((node_name, iface_name))
        link = Link(ends[0], ends[1], **params)
        self.links.append(link)
        return link

    def link_between(self, a: str, b: str) -> Link:
        for link in self.links:
            if link.nodes in ((a, b), (b, a)):
                return link
        raise LookupError(f"no link between {a} and {b}")

    def link_of(self, node: str, iface: str) -> Link | None:
        for link in self.links:
            if (node, iface) in (link.a, link.b):
                return link
        return None

    # -- checking ---------------------------------------------------------------------------
    def problems(self) -> list[Problem]:
        """Everything wrong with this topology (empty when it can be realised)."""
        out: list[Problem] = []
        for name, node in self.nodes.items():
            out.extend(_node_problems(name, node))
        used: dict[tuple[str, str], int] = {}
        for i, link in enumerate(self.links):
            out.extend(self._link_problems(i, link, used))
        return out

    def check(self) -> Topology:
        problems = self.problems()
        if problems:
            raise TopologyError(str(problems[0]), problems)
        return self

    def _link_problems(self, i: int, link: Link, used: dict[tuple[str, str], int]) -> list[Problem]:
        out = []
        for side, (node_name, iface) in (("a", link.a), ("b", link.b)):
            node = self.nodes.get(node_name)
            if node is None:
                out.append(Problem(("links", i, side), f"link to a missing node '{node_name}'"))
            elif iface not in node.interfaces:
                out.append(Problem(("links", i, side),
                                   f"node '{node_name}' has no interface '{iface}'"))
            elif (node_name, iface) in used:
                out.append(Problem(("links", i, side), f"interface {node_name}:{iface} is "
                                   f"already used by link {used[(node_name, iface)]}"))
            else:
                used[(node_name, iface)] = i
        if link.a[0] == link.b[0]:
            out.append(Problem(("links", i), f"link from node '{link.a[0]}' to itself"))
        return out

    # -- plain data (the YAML/JSON structure) -------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"version": FORMAT_VERSION, "name": self.name}
        options = {k: getattr(self, k) for k in OPTION_FIELDS if getattr(self, k)}
        if options:
            data["options"] = options
        data["nodes"] = {name: _node_dict(node) for name, node in self.nodes.items()}
        data["links"] = [_link_dict(link) for link in self.links]
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Topology:
        """Read the plain structure; TopologyError (with every Problem) if it is wrong."""
        problems: list[Problem] = []
        topo = _read_topology(data, problems)
        problems.extend(topo.problems())
        if problems:
            raise TopologyError(str(problems[0]), problems)
        return topo


# -- checks --------------------------------------------------------------------------------------
def _node_problems(name: str, node: Node) -> list[Problem]:
    at: Path = ("nodes", name)
    out = []
    if not _NAME_RE.match(name):
        out.append(Problem(at, f"bad node name '{name}' (letters, digits, '_' or '-')"))
    if node.type not in NODE_TYPES:
        out.append(Problem((*at, "type"), f"unknown node type '{node.type}'"))
    for proto in node.routing:
        if proto not in ROUTING_PROTOCOLS:
            out.append(Problem((*at, "model"), f"unknown router model '{proto}'"))
    if node.routing and node.type != "router":
        out.append(Problem((*at, "model"), f"a {node.type} runs no routing protocol"))
    for ifname, iface in node.interfaces.items():
        out.extend(_iface_problems((*at, "interfaces", ifname), node, iface))
    for i, route in enumerate(node.routes):
        out.extend(_route_problems((*at, "routes", i), route))
    return out


def _iface_problems(at: Path, node: Node, iface: Interface) -> list[Problem]:
    out = []
    if not _IFNAME_RE.match(iface.name):
        out.append(Problem(at, f"bad interface name '{iface.name}'"))
    if (iface.ipv4 or iface.ipv6) and node.type in SWITCH_TYPES:
        out.append(Problem(at, f"a {node.type} has no addresses"))
    for family, key in ((4, "ipv4"), (6, "ipv6")):
        for j, text in enumerate(getattr(iface, key)):
            try:
                parsed = ipaddress.ip_interface(text)
            except ValueError:
                out.append(Problem((*at, key, j), f"bad address '{text}'"))
                continue
            if parsed.version != family or "/" not in str(text):
                out.append(Problem((*at, key, j),
                                   f"bad address '{text}' (an IPv{family} address/length)"))
    if iface.mac is not None and not _MAC_RE.match(iface.mac):
        out.append(Problem((*at, "mac"), f"bad MAC address '{iface.mac}'"))
    if iface.mtu is not None and not 68 <= iface.mtu <= 65535:
        out.append(Problem((*at, "mtu"), f"bad MTU {iface.mtu}"))
    return out


def _route_problems(at: Path, route: Route) -> list[Problem]:
    try:
        dest = ipaddress.ip_network(route.dest, strict=False)
    except ValueError:
        return [Problem(at, f"bad route destination '{route.dest}'")]
    try:
        gateway = ipaddress.ip_address(route.gateway)
    except ValueError:
        return [Problem(at, f"bad gateway address '{route.gateway}'")]
    if dest.version != gateway.version:
        return [Problem(at, f"route {route} mixes IPv{dest.version} and IPv{gateway.version}")]
    return []


# -- to plain data ---------------------------------------------------------------------------------
def _node_dict(node: Node) -> dict[str, Any]:
    out: dict[str, Any] = {"type": node.type}
    if node.type == "router":
        out["model"] = node.routing[0] if len(node.routing) == 1 else (
            list(node.routing) if node.routing else "static")
    if node.interfaces:
        out["interfaces"] = {name: _iface_dict(i) for name, i in node.interfaces.items()}
    if node.routes:
        out["routes"] = [str(r) for r in node.routes]
    if node.auto_default_routes:
        out["auto_default_routes"] = True
    if node.services:
        out["services"] = list(node.services)
    if node.commands:
        out["commands"] = list(node.commands)
    if node.position is not None:
        out["position"] = [_number(node.position[0]), _number(node.position[1])]
    if node.partition is not None:
        out["partition"] = node.partition
    return out


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _iface_dict(iface: Interface) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if iface.ipv4:
        out["ipv4"] = list(iface.ipv4)
    if iface.ipv6:
        out["ipv6"] = list(iface.ipv6)
    if iface.mac is not None:
        out["mac"] = iface.mac
    if iface.mtu is not None:
        out["mtu"] = iface.mtu
    return out


def _link_dict(link: Link) -> dict[str, Any]:
    out: dict[str, Any] = {"a": ":".join(link.a), "b": ":".join(link.b)}
    for key, value in link.params().items():
        if key == "bandwidth":
            out[key] = format_bandwidth(value)
        elif key in ("delay", "jitter"):
            out[key] = format_duration(value)
        elif key in ("loss", "duplicate"):
            out[key] = f"{_number(value)}%"
        else:
            out[key] = value
    if link.weight != 1.0:
        out["weight"] = _number(link.weight)
    return out


# -- from plain data ------------------------------------------------------------------------------
def _read_topology(data: Any, problems: list[Problem]) -> Topology:
    topo = Topology()
    if not isinstance(data, dict):
        problems.append(Problem((), "a topology is a mapping (version, name, nodes, links)"))
        return topo
    _unknown(data, ("version", "name", "options", "nodes", "links"), (), problems)
    if data.get("version") != FORMAT_VERSION:
        problems.append(Problem(("version",), f"unsupported version {data.get('version')!r} "
                                f"(this reader knows version {FORMAT_VERSION})"))
    topo.name = str(data.get("name", "topology"))
    if not _NAME_RE.match(topo.name):
        problems.append(Problem(("name",), f"bad topology name '{topo.name}'"))
    options = data.get("options") or {}
    if _mapping(options, ("options",), problems):
        _unknown(options, OPTION_FIELDS, ("options",), problems)
        for key in OPTION_FIELDS:
            if key in options:
                setattr(topo, key, _bool(options[key], ("options", key), problems))
    nodes = data.get("nodes") or {}
    if _mapping(nodes, ("nodes",), problems):
        for name, spec in nodes.items():
            topo.nodes[str(name)] = _read_node(str(name), spec, problems)
    links = data.get("links") or []
    if not isinstance(links, list):
        problems.append(Problem(("links",), "links is a list"))
        links = []
    for i, spec in enumerate(links):
        link = _read_link(topo, i, spec, problems)
        if link is not None:
            topo.links.append(link)
    return topo


def _mapping(value: Any, at: Path, problems: list[Problem]) -> bool:
    if isinstance(value, dict):
        return True
    problems.append(Problem(at, f"expected a mapping, not {type(value).__name__}"))
    return False


def _unknown(spec: dict[str, Any], known: tuple[str, ...], at: Path,
             problems: list[Problem]) -> None:
    for key in spec:
        if key not in known:
            problems.append(Problem((*at, str(key)), f"unknown field '{key}'"))


def _bool(value: Any, at: Path, problems: list[Problem]) -> bool:
    if isinstance(value, bool):
        return value
    problems.append(Problem(at, f"expected true or false, not {value!r}"))
    return False


def _strings(value: Any, at: Path, problems: list[Problem]) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int, float)) for v in value):
        problems.append(Problem(at, "expected a list of strings"))
        return []
    return [str(v) for v in value]


def _read_node(name: str, spec: Any, problems: list[Problem]) -> Node:
    at: Path = ("nodes", name)
    node = Node(name, "pc")
    if not _mapping(spec, at, problems):
        return node
    _unknown(spec, NODE_FIELDS, at, problems)
    if "type" not in spec:
        problems.append(Problem(at, "no type (pc, host, router, lanswitch, hub or ext)"))
    node.type = str(spec.get("type", "pc"))
    model = spec.get("model", "static")
    models = _strings(model, (*at, "model"), problems)
    node.routing = tuple(m for m in models if m != "static")
    interfaces = spec.get("interfaces") or {}
    if _mapping(interfaces, (*at, "interfaces"), problems):
        for ifname, ispec in interfaces.items():
            node.interfaces[str(ifname)] = _read_iface(
                str(ifname), ispec or {}, (*at, "interfaces", str(ifname)), problems)
    for i, text in enumerate(_strings(spec.get("routes"), (*at, "routes"), problems)):
        dest, _, gateway = text.strip().partition(" ")
        dest = {"default": "0.0.0.0/0", "default6": "::/0"}.get(dest, dest)
        node.routes.append(Route(dest, gateway.strip()))
        if not gateway.strip():
            problems.append(Problem((*at, "routes", i), f"route '{text}' has no gateway "
                                    "(write 'PREFIX GATEWAY')"))
    if "auto_default_routes" in spec:
        node.auto_default_routes = _bool(spec["auto_default_routes"],
                                         (*at, "auto_default_routes"), problems)
    node.services = _strings(spec.get("services"), (*at, "services"), problems)
    node.commands = _strings(spec.get("commands"), (*at, "commands"), problems)
    position = spec.get("position")
    if position is not None:
        if (isinstance(position, list) and len(position) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        for v in position)):
            node.position = (position[0], position[1])
        else:
            problems.append(Problem((*at, "position"), "position is [x, y]"))
    pin = spec.get("partition")
    if pin is not None:
        if isinstance(pin, int) and not isinstance(pin, bool) and pin >= 0:
            node.partition = pin
        else:
            problems.append(Problem((*at, "partition"), f"bad partition {pin!r} (0, 1, ...)"))
    return node


def _read_iface(name: str, spec: Any, at: Path, problems: list[Problem]) -> Interface:
    iface = Interface(name)
    if not _mapping(spec, at, problems):
        return iface
    _unknown(spec, IFACE_FIELDS, at, problems)
    iface.ipv4 = _strings(spec.get("ipv4"), (*at, "ipv4"), problems)
    iface.ipv6 = _strings(spec.get("ipv6"), (*at, "ipv6"), problems)
    if spec.get("mac") is not None:
        iface.mac = str(spec["mac"])
    mtu = spec.get("mtu")
    if mtu is not None:
        if isinstance(mtu, int) and not isinstance(mtu, bool):
            iface.mtu = mtu
        else:
            problems.append(Problem((*at, "mtu"), f"bad MTU {mtu!r}"))
    return iface


_PARSERS: tuple[tuple[str, Any], ...] = (
    ("bandwidth", parse_bandwidth), ("delay", parse_duration_us),
    ("jitter", parse_duration_us), ("loss", parse_percent), ("ber", parse_ber),
    ("duplicate", parse_percent),
)


def _read_link(topo: Topology, i: int, spec: Any, problems: list[Problem]) -> Link | None:
    at: Path = ("links", i)
    if isinstance(spec, list) and len(spec) == 2:  # the short form [a, b]
        spec = {"a": spec[0], "b": spec[1]}
    if not _mapping(spec, at, problems):
        return None
    _unknown(spec, ("a", "b", *LINK_FIELDS, *LINK_HINTS), at, problems)
    ends: list[tuple[str, str]] = []
    for side in ("a", "b"):
        end = spec.get(side)
        if not isinstance(end, str) or not end:
            problems.append(Problem((*at, side), f"link end {side} is 'NODE' or 'NODE:IFACE'"))
            return None
        node_name, _, iface = end.partition(":")
        node = topo.nodes.get(node_name)
        if node is None:
            problems.append(Problem((*at, side), f"link to a missing node '{node_name}'"))
            return None
        if not iface:
            iface = _free_iface(topo, node)
        node.interfaces.setdefault(iface, Interface(iface))
        ends.append((node_name, iface))
    link = Link(ends[0], ends[1])
    for key, parse in _PARSERS:
        if key in spec:
            try:
                setattr(link, key, parse(spec[key]))
            except ValueError as exc:
                problems.append(Problem((*at, key), str(exc)))
    if "queue" in spec:
        queue = spec["queue"]
        if isinstance(queue, int) and not isinstance(queue, bool) and queue >= 1:
            link.queue = queue
        else:
            problems.append(Problem((*at, "queue"), f"bad queue length {queue!r} (frames, >= 1)"))
    if "direct" in spec:
        link.direct = _bool(spec["direct"], (*at, "direct"), problems)
    if "weight" in spec:
        weight = spec["weight"]
        if isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight > 0 \
                and math.isfinite(weight):
            link.weight = float(weight)
        else:
            problems.append(Problem((*at, "weight"), f"bad weight {weight!r} (a number > 0)"))
    return link


def _free_iface(topo: Topology, node: Node) -> str:
    """The first interface of `node` not on a link, else a new one (eth0.., e0..)."""
    for name in node.interfaces:
        if name != "lo0" and topo.link_of(node.name, name) is None:
            return name
    return node.new_interface().name
