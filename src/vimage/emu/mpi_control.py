"""Control of a partitioned experiment: the rank-to-rank request layer (docs/mpi.md).

`mpirun -n N vimage topo serve FILE` runs a vimaged Daemon on every rank, each holding
its partition of the experiment; any rank's daemon can be asked about any node, and asks
the rank holding it. `PartitionedControl` is that asking: a TCP connection between every
two ranks (a full mesh, on the --bind addresses, exchanged once over MPI at the start),
carrying the control protocol's frames (vimage.ctl.protocol: a 4-byte length, JSON):

    {"kind": "hello", "rank": R}                 first frame of a dialled connection
    {"kind": "req", "id": N, "body": REQUEST}    a daemon request (no descriptors)
    {"kind": "rep", "id": N, "body": REPLY}      its reply
    {"kind": "stop", "why": TEXT}                the sender ends the experiment

A request runs on the receiving rank through `handler(body) -> reply` (the daemon's own
`Daemon.handle` on a host session) in a thread of its own, so a tool that waits (ping)
holds up nothing else. The API over it -- `node_tool`, `node_cmd`, `node_info`,
`link_info`, `link_set`, `capture_start`/`capture_poll`/`capture_stop` and `capture`,
`stats`, `show` -- is what the daemon's front (vimage.ctl.partops) and the GUI use; the
`part_*` requests it sends are served by vimage.ctl.partops on each rank.

Why TCP rather than MPI point-to-point: a rank that dies is an end of file on each of its
connections at once, where an MPI receive from a killed rank waits for ever (MPI has no
portable failure detection); every request can time out; any thread may send, whatever
thread level the MPI library grants; and it is the same on one host or many. A
connection that ends without a `stop` is a dead rank: `on_dead(rank)` is called once and
requests to it fail at once, naming it.
"""

from __future__ import annotations

import base64
import contextlib
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from vimage.ctl import protocol
from vimage.ctl.protocol import FAILED, CtlError

if TYPE_CHECKING:
    from vimage.emu.model import Link, Topology

REQUEST_TIMEOUT = 10.0
"""Seconds a forwarded control request (show, link, capture, stats) may take."""
TOOL_TIMEOUT = 300.0
"""Seconds a forwarded tool (ping, traceroute...) may take before the asker gives up."""
CONNECT_TIMEOUT = 30.0
"""Seconds the ranks have to connect to each other at the start."""
MAX_FRAME = 64 << 20
"""Largest frame a rank reads from another (a show of a large experiment)."""
POLL_WAIT = 0.5
"""Seconds a capture poll waits on the holding rank for frames before answering empty."""

OP_SHOW = "part_show"
OP_LINK = "part_link"
OP_CAPTURE = "part_capture"
OP_STATS = "part_stats"

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class _Pending:
    __slots__ = ("done", "error", "rank", "reply")

    def __init__(self, rank: int) -> None:
        self.rank = rank
        self.done = threading.Event()
        self.reply: dict[str, Any] | None = None
        self.error: CtlError | None = None


class _Peer:
    """The connection to one other rank."""

    __slots__ = ("rank", "send_lock", "sock", "state", "thread", "why")

    def __init__(self, rank: int, sock: socket.socket) -> None:
        self.rank = rank
        self.sock = sock
        self.send_lock = threading.Lock()
        self.state = "open"  # open | stopped (it said stop) | dead | closed (by us)
        self.why = ""
        self.thread: threading.Thread | None = None

    def send(self, obj: dict[str, Any]) -> None:
        with self.send_lock:
            protocol.send(self.sock, obj)


class PartitionedControl:
    """One rank's side of the control mesh; see the module docstring.

    `topology` and `assignment` (node -> rank) are the same on every rank; `name` is the
    experiment's full vnet name; `handler(request) -> reply` runs a daemon request here.
    """

    def __init__(self, rank: int, size: int, topology: Topology, assignment: dict[str, int],
                 handler: Handler, name: str, bind: str = "127.0.0.1") -> None:
        self.rank = rank
        self.size = size
        self.topology = topology
        self.assignment = dict(assignment)
        self.handler = handler
        self.name = name
        self.bind = bind
        self.on_dead: Callable[[int], None] | None = None  # a rank died (reader thread)
        self.on_stop: Callable[[int, str], None] | None = None  # a rank said stop
        self.peers: dict[int, _Peer] = {}
        self.dead: list[int] = []  # ranks found dead, in the order seen
        self._lock = threading.Lock()
        self._waiting: dict[int, _Pending] = {}
        self._next_id = 0
        self._listener: socket.socket | None = None
        self._closing = False

    # -- who holds what -------------------------------------------------------------------------
    def owner(self, node: str) -> int:
        """The rank holding `node`; LookupError if the experiment has none."""
        try:
            return self.assignment[node]
        except KeyError:
            raise LookupError(f"experiment {self.name} has no node {node!r}") from None

    def nodes_of(self, rank: int) -> list[str]:
        return sorted(n for n, r in self.assignment.items() if r == rank)

    def describe(self, rank: int) -> str:
        """`rank 1 of 2 (nodes pc2, r2)`: for the lines that name a rank."""
        nodes = self.nodes_of(rank)
        shown = ", ".join(nodes[:8]) + (f" ... ({len(nodes)} nodes)" if len(nodes) > 8 else "")
        return f"rank {rank} of {self.size} (nodes {shown or '-'})"

    def find_link(self, a: str, b: str) -> tuple[int, Link]:
        """The index and model of the link between nodes `a` and `b` (either order)."""
        for index, link in enumerate(self.topology.links):
            if link.nodes in ((a, b), (b, a)):
                return index, link
        raise LookupError(f"experiment {self.name} has no link between {a} and {b}")

    def link_ranks(self, index: int) -> list[int]:
        """The ranks holding the ends of link `index`: one, or two for a cut link."""
        link = self.topology.links[index]
        return sorted({self.assignment[link.a[0]], self.assignment[link.b[0]]})

    # -- the mesh ---------------------------------------------------------------------------
    def listen(self) -> tuple[str, int]:
        """Listen on the bind address (an ephemeral port); the address to tell the others."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind((self.bind, 0))
            listener.listen(max(8, self.size))
        except OSError:
            listener.close()
            raise
        self._listener = listener
        host, port = listener.getsockname()[:2]
        return str(host), int(port)

    def connect(self, addresses: list[tuple[str, int]], timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect to every other rank (`addresses[r]`, from listen() on each): dial the
        lower ranks, accept the higher ones; then start reading."""
        assert self._listener is not None
        deadline = time.monotonic() + timeout
        for rank in range(self.rank):
            sock = socket.create_connection(tuple(addresses[rank]), timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            protocol.send(sock, {"kind": "hello", "rank": self.rank})
            self.peers[rank] = _Peer(rank, sock)
        while len(self.peers) < self.size - 1:
            self._listener.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                missing = sorted(set(range(self.size)) - set(self.peers) - {self.rank})
                raise CtlError(FAILED, f"ranks {missing} did not connect within "
                                       f"{timeout:g} s") from None
            sock.settimeout(max(0.1, deadline - time.monotonic()))
            frame = protocol.recv(sock, 4096)
            hello = frame[0] if frame is not None else None
            rank = hello.get("rank") if isinstance(hello, dict) else None
            if type(rank) is not int or not self.rank < rank < self.size or rank in self.peers:
                sock.close()  # not one of ours
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.peers[rank] = _Peer(rank, sock)
        self._listener.close()
        self._listener = None
        for peer in self.peers.values():
            peer.sock.settimeout(None)
            peer.thread = threading.Thread(target=self._read, args=(peer,),
                                           name=f"vimage-rank-{peer.rank}", daemon=True)
            peer.thread.start()

    def _read(self, peer: _Peer) -> None:
        while True:
            try:
                frame = protocol.recv(peer.sock, MAX_FRAME)
            except (OSError, CtlError):
                frame = None
            if frame is None:
                break
            obj, fds = frame
            protocol.close_fds(fds)
            if not isinstance(obj, dict):
                continue
            kind = obj.get("kind")
            if kind == "rep":
                with self._lock:
                    pending = self._waiting.pop(obj.get("id"), None)  # type: ignore[arg-type]
                if pending is not None:
                    body = obj.get("body")
                    pending.reply = body if isinstance(body, dict) else {}
                    pending.done.set()
            elif kind == "req" and isinstance(obj.get("body"), dict):
                threading.Thread(target=self._serve, args=(peer, obj.get("id"), obj["body"]),
                                 name="vimage-rank-req", daemon=True).start()
            elif kind == "stop":
                with self._lock:
                    if peer.state == "open":
                        peer.state = "stopped"
                        peer.why = str(obj.get("why", ""))
                if self.on_stop is not None:
                    self.on_stop(peer.rank, peer.why)
        with self._lock:
            died = peer.state == "open" and not self._closing
            if died:
                peer.state = "dead"
                self.dead.append(peer.rank)
            failed = [(k, p) for k, p in self._waiting.items() if p.rank == peer.rank]
            for key, _ in failed:
                del self._waiting[key]
        for _, pending in failed:
            pending.error = CtlError(FAILED, self._gone(peer))
            pending.done.set()
        if died and self.on_dead is not None:
            self.on_dead(peer.rank)

    def _serve(self, peer: _Peer, rid: Any, body: dict[str, Any]) -> None:
        try:
            reply = self.handler(body)
        except Exception as exc:  # the handler should never raise; say so if it does
            reply = protocol.error_reply(None, protocol.INTERNAL, f"internal error: {exc!r}")
        with contextlib.suppress(OSError, CtlError):
            peer.send({"kind": "rep", "id": rid, "body": reply})

    def _gone(self, peer: _Peer) -> str:
        if peer.state == "stopped":
            return f"{self.describe(peer.rank)} has stopped ({peer.why})"
        return f"{self.describe(peer.rank)} died (its control connection closed)"

    # -- requests ---------------------------------------------------------------------------
    def send(self, rank: int, body: dict[str, Any]) -> _Pending:
        """Send a daemon request to `rank` (run here if it is this rank); wait() it."""
        pending = _Pending(rank)
        if rank == self.rank:
            pending.reply = self.handler({"id": 0, **body})
            pending.done.set()
            return pending
        peer = self.peers.get(rank)
        if peer is None:
            raise LookupError(f"no rank {rank} (ranks 0-{self.size - 1})")
        with self._lock:
            if peer.state != "open":
                pending.error = CtlError(FAILED, self._gone(peer))
                pending.done.set()
                return pending
            self._next_id += 1
            rid = self._next_id
            self._waiting[rid] = pending
        try:
            peer.send({"kind": "req", "id": rid, "body": {"id": rid, **body}})
        except (OSError, CtlError):
            with self._lock:
                self._waiting.pop(rid, None)
            pending.error = CtlError(FAILED, self._gone(peer))
            pending.done.set()
        return pending

    def wait(self, pending: _Pending, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        """The reply's fields (CtlError if refused, if the rank died or did not answer)."""
        if not pending.done.wait(timeout):
            with self._lock:
                for key, other in list(self._waiting.items()):
                    if other is pending:
                        del self._waiting[key]
            raise CtlError(FAILED, f"{self.describe(pending.rank)} did not answer within "
                                   f"{timeout:g} s")
        if pending.error is not None:
            raise pending.error
        reply = pending.reply or {}
        if not reply.get("ok"):
            error = reply.get("error") or {}
            detail = error.get("detail")
            raise CtlError(str(error.get("code", FAILED)), str(error.get("message", "failed")),
                           detail=detail if isinstance(detail, dict) else None)
        return {k: v for k, v in reply.items() if k not in ("id", "ok")}

    def call(self, rank: int, body: dict[str, Any],
             timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
        """Run daemon request `body` ({"op": ..., fields}) on `rank`; its reply's fields."""
        return self.wait(self.send(rank, body), timeout)

    def call_all(self, body: dict[str, Any], ranks: list[int] | None = None,
                 timeout: float = REQUEST_TIMEOUT) -> list[dict[str, Any]]:
        """`call` on every rank (or `ranks`) at once; the replies in rank order."""
        ranks = list(range(self.size)) if ranks is None else ranks
        pendings = [self.send(r, body) for r in ranks if r != self.rank]
        mine = [self.call(self.rank, body, timeout)] if self.rank in ranks else []
        replies = {p.rank: self.wait(p, timeout) for p in pendings}
        if mine:
            replies[self.rank] = mine[0]
        return [replies[r] for r in ranks]

    # -- the API: nodes ---------------------------------------------------------------------
    def node_tool(self, node: str, argv: list[str],
                  timeout: float = TOOL_TIMEOUT) -> tuple[int, str]:
        """Run a vimage tool in `node`, wherever it is: (status, output)."""
        reply = self.call(self.owner(node), {"op": "tool", "vnet": f"{self.name}.{node}",
                                             "argv": list(argv)}, timeout)
        return int(reply["status"]), str(reply["output"])

    def node_cmd(self, node: str, line: str, timeout: float = TOOL_TIMEOUT) -> str:
        """`node_tool` of a command line (`ping -c 1 10.0.2.20`): its output."""
        return self.node_tool(node, shlex.split(line), timeout)[1]

    def node_info(self, node: str) -> dict[str, Any]:
        """The node as `topo show NAME NODE` gives it: name, type, vnet, interfaces."""
        reply = self.call(self.owner(node), {"op": "topo_show", "name": self.name, "node": node})
        return dict(reply["node"])

    # -- links ------------------------------------------------------------------------------
    def link_info(self, a: str, b: str) -> dict[str, Any]:
        """The link between `a` and `b` as `topo show NAME A B` gives it; the counters of a
        cut link come from both ranks."""
        return self.link_set(a, b, None)

    def link_set(self, a: str, b: str, params: dict[str, str | None] | None) -> dict[str, Any]:
        """Change the link between `a` and `b` (model fields -> YAML-style values, None
        for the default) on every rank holding an end (both ends' pipes of a cut link);
        None only reads it. The first rank checks the values before anything changes."""
        index, _ = self.find_link(a, b)
        body: dict[str, Any] = {"op": OP_LINK, "name": self.name, "index": index}
        if params is not None:
            body["params"] = params
        parts = [self.call(r, body) for r in self.link_ranks(index)]  # in turn: a bad value
        return merge_link(parts)                                      # stops at the first

    # -- captures ---------------------------------------------------------------------------
    def capture_start(self, a: str, b: str, count: int | None = None,
                      filter: str | None = None) -> dict[str, Any]:
        """Start capturing at `a`'s end of the link between `a` and `b` on the rank holding
        it; a handle (rank, id, ifname, linktype) for capture_poll and capture_stop."""
        index, link = self.find_link(a, b)
        side = "a" if link.a[0] == a else "b"
        rank = self.owner(a)
        body: dict[str, Any] = {"op": OP_CAPTURE, "name": self.name, "action": "start",
                                "index": index, "side": side}
        if count is not None:
            body["count"] = count
        if filter:
            body["filter"] = filter
        reply = self.call(rank, body)
        return {"rank": rank, "id": reply["id"], "ifname": reply["ifname"],
                "linktype": reply["linktype"]}

    def capture_poll(self, handle: dict[str, Any], wait: float = POLL_WAIT
                     ) -> tuple[list[tuple[int, bytes]], bool]:
        """The frames captured since the last poll, as (time ns, bytes), and whether the
        capture is still open; waits up to `wait` seconds on the holding rank for some."""
        reply = self.call(handle["rank"], {"op": OP_CAPTURE, "name": self.name,
                                           "action": "poll", "id": handle["id"], "wait": wait},
                          REQUEST_TIMEOUT + wait)
        frames = [(int(ts), base64.b64decode(data)) for ts, data in reply["frames"]]
        return frames, bool(reply["open"])

    def capture_stop(self, handle: dict[str, Any]) -> dict[str, Any]:
        """End the capture; its counters (captured, received, dropped) and error if any."""
        return self.call(handle["rank"], {"op": OP_CAPTURE, "name": self.name,
                                          "action": "stop", "id": handle["id"]})

    def capture(self, a: str, b: str, count: int | None = None,
                duration: float | None = None) -> Iterator[tuple[int, bytes]]:
        """Live frames at `a`'s end of the link to `b`, until `count` frames or `duration`
        seconds (or the caller stops iterating); the capture is stopped in every case."""
        handle = self.capture_start(a, b, count)
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while True:
                left = POLL_WAIT if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    return
                frames, still = self.capture_poll(handle, min(POLL_WAIT, left))
                yield from frames
                if not still:
                    return
        finally:
            with contextlib.suppress(CtlError):
                self.capture_stop(handle)

    # -- the whole ---------------------------------------------------------------------------
    def stats(self) -> list[dict[str, Any]]:
        """Per rank: nodes, tunnel frames out and in, dropped datagrams, loop errors..."""
        return [r["stats"] for r in self.call_all({"op": OP_STATS, "name": self.name})]

    def show(self) -> dict[str, Any]:
        """Every node row and link row, in the topology's order, from all the ranks."""
        parts = self.call_all({"op": OP_SHOW, "name": self.name})
        node_rows: dict[str, Any] = {}
        link_parts: dict[int, list[dict[str, Any]]] = {}
        warnings: list[str] = []
        for part in parts:
            node_rows.update(part["nodes"])
            for index, row in part["links"].items():
                link_parts.setdefault(int(index), []).append(row)
            warnings.extend(part.get("warnings", ()))
        nodes = [node_rows[n] for n in self.topology.nodes if n in node_rows]
        links = [merge_link(link_parts[i]) for i in sorted(link_parts)]
        return {"nodes": nodes, "links": links, "warnings": warnings}

    # -- the end ----------------------------------------------------------------------------
    def stop(self, why: str) -> None:
        """Tell every rank still there that this one ends the experiment."""
        with self._lock:
            peers = [p for p in self.peers.values() if p.state in ("open", "stopped")]
        for peer in peers:
            with contextlib.suppress(OSError, CtlError):
                peer.send({"kind": "stop", "why": why})

    def finish(self, wait: float = 2.0) -> list[int]:
        """After stop(): wait (at most `wait` s) until every other rank said stop or its
        connection ended; the ranks that died (connection ended, or silent, without stop)."""
        deadline = time.monotonic() + wait
        for peer in list(self.peers.values()):
            while peer.state == "open" and peer.thread is not None and peer.thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                peer.thread.join(min(left, 0.05))
        with self._lock:
            for peer in self.peers.values():
                if peer.state == "open":  # neither stop nor end in time: it is not well
                    peer.state = "dead"
                    self.dead.append(peer.rank)
            return list(self.dead)

    def close(self) -> None:
        """Close every connection (after finish()); the reader threads end."""
        with self._lock:
            self._closing = True
            for peer in self.peers.values():
                if peer.state == "open":
                    peer.state = "closed"
        for peer in self.peers.values():
            with contextlib.suppress(OSError):
                peer.sock.shutdown(socket.SHUT_RDWR)
            peer.sock.close()
        for peer in self.peers.values():
            if peer.thread is not None and peer.thread is not threading.current_thread():
                peer.thread.join(2.0)
        if self._listener is not None:
            self._listener.close()
            self._listener = None


def merge_link(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One link row from the `part_link` rows of the ranks holding its ends: the row of
    `topo show` (a, b, params, shown, ends, counters in the order a, b)."""
    first = dict(parts[0].get("link", parts[0]))
    counters: dict[str, Any] = {}
    for part in parts:
        row = part.get("link", part)
        counters.update(zip(row["held"], row["counters"], strict=True))
    first["counters"] = [counters[s] for s in ("a", "b") if s in counters]
    first.pop("held", None)
    return first
