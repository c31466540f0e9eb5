"""IMUNES `.imn` import: the JSON formats (versions 1 and 2) and the legacy Tcl-list format.

The grammar and the semantics followed are IMUNES's (imunes/imunes runtime/cfgparse.tcl
loadCfgLegacy and loadCfgJson, config/ and nodes/; summarised in ../shared/imunes/):

- a file whose first non-blank character is `{` is JSON, anything else legacy;
- every L3 node has lo0 with 127.0.0.1/8 and ::1/128 (G1): the model leaves those
  implied and keeps only lo0's other addresses;
- `auto_default_routes` is "enabled" or not (absent, and always in legacy files, means
  disabled) (G2); static routes are "PREFIX GATEWAY" (G3);
- a router of model frr/quagga runs the protocols its router_config enables (rip, ripng;
  others are reported and not modelled); model "static" runs none, whatever its
  router_config says (G4);
- link units are kept as IMUNES writes them: bandwidth bit/s, delay µs, ber 1/N, loss
  and duplicate %, jitter µs (the largest value of the jitter lists, G7);
- in the legacy format a link's ends are found as IMUNES does: for nodes {A B}, A's
  interface is the first, in ifc order (logical interfaces, then physical ones, each
  sorted in Tcl dictionary order), whose interface-peer is B and no earlier link took;
- version 1 cross-canvas links (two `pseudo` nodes and a `mirror` pair of links) are
  merged into one link, as IMUNES's 1 -> 2 migration does.

Node types the emulator does not model (wlan, packgen, nat64, rj45, ...) are refused
with the list of them, or left out with their links when `skip_unsupported=True`.
What is read but not modelled (custom configs, other routing protocols, VLAN
interfaces, queue disciplines) is reported in `warnings`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path as FsPath
from typing import Any

from vimage.emu.model import (
    NODE_TYPES,
    ROUTING_PROTOCOLS,
    Interface,
    Link,
    Node,
    Problem,
    Route,
    Topology,
    TopologyError,
)

DEFAULT_LO = frozenset({"::1/128"})


def _is_default_lo(addr: str) -> bool:
    """127.x/N (old files wrote 127.0.0.1/24) and ::1/128: lo0's implied addresses (G1)."""
    return addr.startswith("127.") or addr in DEFAULT_LO


# -- the intermediate form both syntaxes are read into ------------------------------------------
@dataclass
class RawIface:
    id: str
    name: str
    type: str = "phys"
    ipv4: list[str] = field(default_factory=list)
    ipv6: list[str] = field(default_factory=list)
    mac: str | None = None
    mtu: int | None = None
    queue_len: int | None = None
    peer: str | None = None  # legacy interface-peer
    link: str | None = None  # JSON "link"


@dataclass
class RawNode:
    id: str
    type: str
    name: str
    model: str = ""
    protocols: set[str] = field(default_factory=set)
    ifaces: list[RawIface] = field(default_factory=list)
    routes: list[str] = field(default_factory=list)
    auto_default_routes: bool = False
    services: list[str] = field(default_factory=list)
    position: tuple[float, float] | None = None
    custom: bool = False


@dataclass
class RawLink:
    id: str
    peers: tuple[str, str]
    ifaces: tuple[str, str] | None = None  # ifc ids, when the file says
    params: dict[str, Any] = field(default_factory=dict)
    mirror: str = ""


# -- entry points --------------------------------------------------------------------------------
def load(path: str | FsPath, skip_unsupported: bool = False,
         warnings: list[str] | None = None) -> Topology:
    path = FsPath(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError(f"{path}: {exc.strerror or exc}") from None
    return loads(text, str(path), skip_unsupported, warnings, name=_name_from(path))


def _name_from(path: FsPath) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", path.stem).strip("-")
    return name or "topology"


def loads(text: str, filename: str = "<imn>", skip_unsupported: bool = False,
          warnings: list[str] | None = None, name: str = "topology") -> Topology:
    """Import IMUNES text; TopologyError (one line naming the file) if it is refused."""
    warnings = [] if warnings is None else warnings
    try:
        if text.lstrip().startswith("{"):
            nodes, links, hosts = _read_json(text, warnings)
        else:
            nodes, links, hosts = _read_legacy(text, warnings)
        topo = _build(nodes, links, skip_unsupported, warnings)
    except (Problem, ValueError) as exc:
        raise TopologyError(f"{filename}: {exc}") from None
    except (AttributeError, TypeError, KeyError, OverflowError) as exc:
        # a value of another shape than IMUNES writes (a list for a mapping, ...)
        raise TopologyError(f"{filename}: malformed IMUNES configuration ({exc})") from None
    topo.name = name
    topo.hosts = hosts
    problems = topo.problems()
    if problems:
        raise TopologyError(f"{filename}: {problems[0]}", problems,
                            [f"{filename}: {p}" for p in problems])
    return topo


# -- JSON ----------------------------------------------------------------------------------------
def _read_json(text: str, warnings: list[str]) -> tuple[list[RawNode], list[RawLink], bool]:
    try:
        data = json.loads(text, strict=False)  # IMUNES writes raw newlines in strings
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {exc.lineno}: bad JSON: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError("not an IMUNES configuration (a JSON object)")
    options = data.get("options") or {}
    version = str(options.get("version", ""))
    if version not in ("1", "2"):
        raise ValueError(f"unsupported IMUNES configuration version {version!r} (1 or 2)")
    gui = (data.get("gui") or {}).get("nodes") or {}
    nodes = [_json_node(nid, spec, gui.get(nid) or spec, warnings)
             for nid, spec in (data.get("nodes") or {}).items()]
    links = []
    for lid, spec in (data.get("links") or {}).items():
        peers = str(spec.get("peers", "")).split()
        if len(peers) != 2:
            raise ValueError(f"links.{lid}.peers: a link joins two nodes, not {peers}")
        ifaces = str(spec.get("peers_ifaces", "")).split()
        params = {k: spec[k] for k in spec if k not in ("peers", "peers_ifaces", "mirror")}
        links.append(RawLink(lid, (peers[0], peers[1]),
                             (ifaces[0], ifaces[1]) if len(ifaces) == 2 else None,
                             params, str(spec.get("mirror", ""))))
    gui_options = (data.get("gui") or {}).get("options") or {}
    hosts = str(options.get("hostsAutoAssign", gui_options.get("hostsAutoAssign", "0")))
    if version == "1":
        nodes, links = _merge_mirrors(nodes, links)
    return nodes, links, hosts in ("1", "yes", "true")


def _json_node(nid: str, spec: dict[str, Any], gui: dict[str, Any],
               warnings: list[str]) -> RawNode:
    node = RawNode(nid, str(spec.get("type", "")), str(spec.get("name", nid)))
    node.model = str(spec.get("model", ""))
    words = str(spec.get("router_config", "")).split()
    node.protocols = {k for k, v in zip(words[::2], words[1::2], strict=False) if v == "1"}
    for iid, ispec in (spec.get("ifaces") or {}).items():
        iface = RawIface(iid, str(ispec.get("name", iid)), str(ispec.get("type", "phys")))
        iface.ipv4 = [str(a) for a in ispec.get("ipv4_addrs") or []]
        iface.ipv6 = [str(a) for a in ispec.get("ipv6_addrs") or []]
        iface.mac = str(ispec["mac"]) if ispec.get("mac") else None
        iface.mtu = int(ispec["mtu"]) if ispec.get("mtu") else None
        iface.queue_len = int(ispec["queue_len"]) if ispec.get("queue_len") else None
        iface.link = ispec.get("link") or None
        node.ifaces.append(iface)
    node.routes = [str(r) for r in (spec.get("croutes4") or []) + (spec.get("croutes6") or [])]
    node.auto_default_routes = spec.get("auto_default_routes") == "enabled"
    node.services = [str(s) for s in spec.get("services") or []]
    node.position = _coords(gui.get("iconcoords"))
    node.custom = str(spec.get("custom_enabled", "")) == "true"
    return node


def _coords(text: Any) -> tuple[float, float] | None:
    numbers = re.findall(r"-?\d+(?:\.\d+)?", str(text or ""))
    if len(numbers) < 2:
        return None
    return float(numbers[0]), float(numbers[1])


def _merge_mirrors(nodes: list[RawNode],
                   links: list[RawLink]) -> tuple[list[RawNode], list[RawLink]]:
    """Version 1 cross-canvas links: `pseudo` - real and its mirror become real - real."""
    by_id = {n.id: n for n in nodes}
    links_by_id = {link.id: link for link in links}
    gone: set[str] = set()
    merged = []
    for link in links:
        if link.id in gone:
            continue
        mirror = links_by_id.get(link.mirror)
        if mirror is None:
            merged.append(link)
            continue
        gone.add(mirror.id)
        ends = []
        for half in (link, mirror):
            real = [(i, p) for i, p in enumerate(half.peers)
                    if by_id.get(p) is None or by_id[p].type != "pseudo"]
            i, peer = real[0] if real else (1, half.peers[1])
            ends.append((peer, half.ifaces[i] if half.ifaces else None))
        ifaces = None if None in (ends[0][1], ends[1][1]) else (ends[0][1], ends[1][1])
        merged.append(RawLink(link.id, (ends[0][0], ends[1][0]), ifaces, link.params))
        for (peer, _), half in zip(ends, (link, mirror), strict=True):
            for iface in by_id[peer].ifaces if peer in by_id else ():
                if iface.link == half.id:
                    iface.link = link.id
    return [n for n in nodes if n.type != "pseudo"], merged


# -- legacy Tcl lists ------------------------------------------------------------------------------
def tcl_words(text: str) -> list[str]:
    """Split a Tcl list into its words: whitespace separates, {...} nests and loses one
    level of braces, "..." quotes, a backslash escapes the next character."""
    words: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            return words
        if text[i] == "{":
            depth, j = 1, i + 1
            while j < n and depth:
                if text[j] == "\\":
                    j += 2
                    continue
                depth += {"{": 1, "}": -1}.get(text[j], 0)
                j += 1
            if depth:
                raise ValueError("unbalanced braces in a Tcl list")
            words.append(text[i + 1:j - 1])
            i = j
        elif text[i] == '"':
            j, out = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                out.append(text[j])
                j += 1
            if j >= n:
                raise ValueError("unterminated quote in a Tcl list")
            words.append("".join(out))
            i = j + 1
        else:
            out = []
            while i < n and not text[i].isspace():
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                out.append(text[i])
                i += 1
            words.append("".join(out))


def _pairs(body: str) -> list[tuple[str, str]]:
    words = tcl_words(body)
    return [(words[k], words[k + 1]) for k in range(0, len(words) - 1, 2)]


LEGACY_CLASSES = ("node", "link", "canvas", "option", "annotation", "image")


def _read_legacy(text: str, warnings: list[str]) -> tuple[list[RawNode], list[RawLink], bool]:
    words = tcl_words(text)
    if len(words) % 3:
        raise ValueError("a legacy .imn file is a list of CLASS ID {BODY} triples")
    nodes: list[RawNode] = []
    links: list[RawLink] = []
    hosts = False
    for k in range(0, len(words), 3):
        cls, oid, body = words[k:k + 3]
        if cls not in LEGACY_CLASSES:
            raise ValueError(f"unknown object class '{cls}' (node, link, canvas, option, "
                             "annotation, image)")
        if cls == "node":
            nodes.append(_legacy_node(oid, body, warnings))
        elif cls == "link":
            links.append(_legacy_link(oid, body))
        elif cls == "option" and oid == "show":
            hosts = dict(_pairs(body)).get("hostsAutoAssign") == "yes"
    _resolve_legacy_ends(nodes, links)
    return nodes, links, hosts


def _legacy_node(nid: str, body: str, warnings: list[str]) -> RawNode:
    node = RawNode(nid, "", nid)
    by_name: dict[str, RawIface] = {}
    for key, value in _pairs(body):
        if key == "type":
            node.type = value
        elif key == "model":
            node.model = value
        elif key == "network-config":
            _network_config(node, value, by_name)
        elif key == "interface-peer":
            parts = tcl_words(value)
            ifname = parts[0] if parts else ""
            iface = by_name.get(ifname)
            if iface is None:  # created on the fly, as loadCfgLegacy does
                iface = by_name[ifname] = RawIface("", ifname)
            iface.peer = parts[1] if len(parts) > 1 and parts[1] else None
        elif key == "iconcoords":
            node.position = _coords(value)
        elif key == "services":
            node.services = tcl_words(value)
        elif key in ("custom-enabled",):
            node.custom = value == "true"
    node.ifaces = _ifc_order(list(by_name.values()))
    node.auto_default_routes = False  # legacy files always get "disabled" (G2)
    return node


def _network_config(node: RawNode, text: str, by_name: dict[str, RawIface]) -> None:
    current: RawIface | None = None
    block = ""
    for raw in text.split("\n"):
        line = raw[1:] if raw.startswith("\t") else raw
        if not line.strip():
            continue
        if line.startswith(" "):
            if block == "interface" and current is not None:
                _iface_line(current, line.split())
            continue  # router blocks' lines: IMUNES regenerates them (ignored)
        words = line.split()
        current, block = None, ""
        if words[0] == "hostname" and len(words) > 1:
            node.name = words[1]
        elif words[0] == "interface" and len(words) > 1:
            current = by_name.setdefault(words[1], RawIface("", words[1]))
            block = "interface"
        elif words[:2] in (["ip", "route"], ["ipv6", "route"]) and len(words) >= 4:
            node.routes.append(f"{words[2]} {words[3]}")
        elif words[0] == "router" and len(words) > 1:
            node.protocols.add(words[1])
            block = "router"


def _iface_line(iface: RawIface, words: list[str]) -> None:
    if words[:2] == ["ip", "address"] and len(words) > 2 and words[2] != "dhcp":
        iface.ipv4.append(words[2])
    elif words[:2] == ["ipv6", "address"] and len(words) > 2:
        iface.ipv6.append(words[2])
    elif words[:2] == ["mac", "address"] and len(words) > 2:
        iface.mac = words[2]
    elif words[0] == "type" and len(words) > 1:
        iface.type = words[1]
    elif words[0] == "mtu" and len(words) > 1:
        iface.mtu = int(words[1])
    elif words[0] == "queue-len" and len(words) > 1:
        iface.queue_len = int(words[1])


def _dict_key(name: str) -> list[Any]:
    """Tcl's `lsort -dictionary`: case-insensitive, digit runs compared as numbers."""
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r"(\d+)", name)]


def _ifc_order(ifaces: list[RawIface]) -> list[RawIface]:
    """ifc0, ifc1, ...: logical interfaces (a type set) first, then physical ones."""
    logical = sorted((i for i in ifaces if i.type != "phys"), key=lambda i: _dict_key(i.name))
    physical = sorted((i for i in ifaces if i.type == "phys"), key=lambda i: _dict_key(i.name))
    ordered = logical + physical
    for k, iface in enumerate(ordered):
        iface.id = f"ifc{k}"
    return ordered


def _legacy_link(lid: str, body: str) -> RawLink:
    pairs = dict(_pairs(body))
    peers = tcl_words(pairs.get("nodes", ""))
    if len(peers) != 2:
        raise ValueError(f"link {lid}: nodes must name two nodes")
    params = {k.replace("-", "_"): v for k, v in pairs.items() if k not in ("nodes", "ifaces")}
    return RawLink(lid, (peers[0], peers[1]), None, params)


def _resolve_legacy_ends(nodes: list[RawNode], links: list[RawLink]) -> None:
    """For nodes {A B}: A's interface is the first, in ifc order, peering with B that no
    earlier link took; likewise for B (FORMAT.txt)."""
    by_id = {n.id: n for n in nodes}
    taken: set[tuple[str, str]] = set()
    for link in links:
        ends = []
        for me, other in (link.peers, link.peers[::-1]):
            node = by_id.get(me)
            found = None
            for iface in node.ifaces if node else ():
                if iface.peer == other and (me, iface.id) not in taken:
                    found = iface.id
                    break
            if found is None:
                raise ValueError(f"link {link.id}: node {me} has no interface-peer {other}")
            taken.add((me, found))
            ends.append(found)
        link.ifaces = (ends[0], ends[1])


# -- building the model ---------------------------------------------------------------------------
def _build(nodes: list[RawNode], links: list[RawLink], skip_unsupported: bool,
           warnings: list[str]) -> Topology:
    unsupported = [n for n in nodes if n.type not in NODE_TYPES]
    if unsupported and not skip_unsupported:
        kinds = sorted({n.type or "(none)" for n in unsupported})
        listed = ", ".join(f"{n.name} ({n.type or 'no type'})" for n in unsupported)
        raise ValueError(f"unsupported node types {', '.join(kinds)}: {listed} "
                         "(import with skip_unsupported / --skip-unsupported to leave them out)")
    dropped = {n.id for n in unsupported}
    for node in unsupported:
        warnings.append(f"node {node.name}: type {node.type} left out, with its links")
    topo = Topology()
    names: dict[str, str] = {}
    ifnames: dict[tuple[str, str], str] = {}
    for raw in nodes:
        if raw.id in dropped:
            continue
        if raw.name in topo.nodes:
            raise Problem(("nodes", raw.name), f"duplicate node name '{raw.name}'")
        names[raw.id] = raw.name
        topo.nodes[raw.name] = _model_node(raw, warnings)
        ifnames.update({(raw.id, i.id): i.name for i in raw.ifaces})
    queues = {(n.id, i.id): i.queue_len for n in nodes for i in n.ifaces}
    by_id = {n.id: n for n in nodes}
    for raw_link in links:
        if set(raw_link.peers) & dropped:
            continue
        for peer in raw_link.peers:
            if peer not in names:
                raise ValueError(f"link {raw_link.id}: no node {peer}")
        ifaces = raw_link.ifaces or _ifaces_by_link(by_id, raw_link)
        a = (names[raw_link.peers[0]], ifnames.get((raw_link.peers[0], ifaces[0]), ifaces[0]))
        b = (names[raw_link.peers[1]], ifnames.get((raw_link.peers[1], ifaces[1]), ifaces[1]))
        link = Link(a, b, **_link_params(raw_link, warnings))
        qlens = [q for q in (queues.get((raw_link.peers[0], ifaces[0])),
                             queues.get((raw_link.peers[1], ifaces[1]))) if q]
        if qlens:
            link.queue = max(qlens)
        topo.links.append(link)
    return topo


def _ifaces_by_link(by_id: dict[str, RawNode], link: RawLink) -> tuple[str, str]:
    found = []
    for peer in link.peers:
        ifc = next((i.id for i in by_id[peer].ifaces if i.link == link.id), None)
        if ifc is None:
            raise ValueError(f"link {link.id}: node {peer} has no interface on it")
        found.append(ifc)
    return found[0], found[1]


def _model_node(raw: RawNode, warnings: list[str]) -> Node:
    node = Node(raw.name, raw.type)
    if raw.type == "router":
        if raw.model == "static":
            node.routing = ()  # G4: a static router runs no routing protocol
        else:
            node.routing = tuple(p for p in ROUTING_PROTOCOLS if p in raw.protocols)
            other = sorted(raw.protocols - set(ROUTING_PROTOCOLS))
            if other:
                warnings.append(f"node {raw.name}: routing {', '.join(other)} not modelled")
    for iface in raw.ifaces:
        if iface.type not in ("phys", "lo"):
            warnings.append(f"node {raw.name}: {iface.type} interface {iface.name} left out")
            continue
        ipv4, ipv6 = list(iface.ipv4), list(iface.ipv6)
        if iface.type == "lo" and iface.name == "lo0":
            ipv4 = [a for a in ipv4 if not _is_default_lo(a)]
            ipv6 = [a for a in ipv6 if not _is_default_lo(a)]
            if not ipv4 and not ipv6:
                continue  # G1: lo0 with its defaults is implied on every L3 node
        node.interfaces[iface.name] = Interface(iface.name, ipv4, ipv6, iface.mac, iface.mtu)
    for text in raw.routes:
        dest, _, gateway = text.strip().partition(" ")
        node.routes.append(Route(dest, gateway.strip()))
    node.auto_default_routes = raw.auto_default_routes and node.is_l3
    node.services = list(raw.services)
    node.position = raw.position
    if raw.custom:
        warnings.append(f"node {raw.name}: custom configuration not imported")
    return node


def _number(value: Any, what: str, link: str) -> float:
    text = str(value).strip()
    if not text:
        return 0.0
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not 0 <= number < math.inf:
        raise ValueError(f"link {link}: bad {what} {value!r}")
    return number


def _link_params(link: RawLink, warnings: list[str]) -> dict[str, Any]:
    """IMUNES's link keys in its units (G7) as model fields."""
    p = link.params
    out: dict[str, Any] = {
        "bandwidth": int(_number(p.get("bandwidth", ""), "bandwidth", link.id)),
        "delay": int(_number(p.get("delay", ""), "delay", link.id)),
        "ber": int(_number(p.get("ber", ""), "ber", link.id)),
        "loss": _number(p.get("loss", ""), "loss", link.id),
        "duplicate": _number(p.get("duplicate", ""), "duplicate", link.id),
        "direct": str(p.get("direct", "0")) == "1",
    }
    jitter = [_number(v, "jitter", link.id) for key in ("jitter_upstream", "jitter_downstream")
              for v in str(p.get(key, "")).replace("{", " ").replace("}", " ").split()]
    out["jitter"] = int(max(jitter, default=0))
    if out["loss"] > 100 or out["duplicate"] > 100:
        raise ValueError(f"link {link.id}: a percentage above 100")
    return out
