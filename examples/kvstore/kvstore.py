"""A small replicated key-value store in plain asyncio (streams only, no vimage).

N replicas, each a TCP server speaking one line protocol to clients and to its peers:

    client:  SET key value      -> OK | ERR unavailable
             GET key            -> VALUE value | NOTFOUND | ERR unavailable
    peers:   FETCH key          -> HAVE counter node value | NONE
             PUT key counter node value -> ACK       (kept if newer than what is held)
             DUMP               -> ITEM key counter node value ... END

Keys and node names are single words, a value is the rest of the line. Any replica
coordinates the requests it receives:

- Every value carries a version (counter, node), compared as a tuple: the node name
  breaks ties between writes that chose the same counter.
- SET first reads the key's version from a read quorum R, picks (highest counter + 1,
  own name), and answers OK once a write quorum W stored it. With W + R > N every
  read quorum meets every write quorum, so the new version is above every
  acknowledged one.
- GET reads from R replicas and returns the newest value. If fewer than W of those
  replies held it, it is written back to the stale ones before answering (so a value
  once returned is never "unreturned" by a later read); late, stale replies are
  repaired in the background (read repair).
- Every `sync_interval` seconds a replica exchanges its whole table with the next
  peer in turn (anti-entropy), so a replica cut off by a partition or a crash
  catches up afterwards. Fine for a small store; a real one would compare digests.
- Every peer call has a timeout (`asyncio.wait_for`): a partitioned or crashed
  peer costs at most `timeout`, and a request without a quorum in time gets
  `ERR unavailable` instead of an answer that might be stale.

`store`, a dict given by the caller, is the replica's durable storage (its disk): a
replica rebuilt on the same dict after a crash keeps what it acknowledged. A quorum
system whose replicas forget acknowledged writes on a restart is not safe, whatever
the quorums.

The deliberately broken variant (`variant="broken"`) is what a first attempt often
looks like: SET stores locally, answers OK at once and replicates in the background
(one attempt, errors ignored); GET answers from the local table. It is fast, and a
client that reads where it wrote sees its writes, but a read elsewhere soon after an
acknowledged write can miss it, and a replica cut off from the others keeps
accepting writes nobody else sees and answering reads with values overwritten
elsewhere. Anti-entropy still runs, so the replicas converge after a heal; what fails
is the promise that a read after an acknowledged write returns it.

Run it for real on localhost (three replicas in one process, ports 7001-7003):

    python examples/kvstore/kvstore.py cluster 3 --base-port 7001
    python examples/kvstore/kvstore.py call 127.0.0.1:7002 SET colour blue
    python examples/kvstore/kvstore.py call 127.0.0.1:7003 GET colour

or one replica per process:

    python kvstore.py serve n1 --listen 127.0.0.1:7001 \\
        --peer n2=127.0.0.1:7002 --peer n3=127.0.0.1:7003 [-w 2 -r 2] [--variant broken]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Awaitable, Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")
Version = tuple[int, str]
Entry = tuple[Version, str]  # (version, value)
ZERO: Version = (0, "")
VARIANTS = ("quorum", "broken")
MAX_IDLE = 4  # idle connections kept per peer


class Unavailable(Exception):
    """Fewer replicas than a quorum answered in time."""


class ProtocolError(Exception):
    """A reply that is not in the protocol."""


def _entry_line(verb: str, key: str, entry: Entry) -> str:
    (counter, node), value = entry
    return f"{verb} {key} {counter} {node} {value}"


def _parse_entry(fields: list[str]) -> Entry:
    """[counter, node, value] -> ((counter, node), value)."""
    counter, node, value = fields
    if not counter.isdigit() or not node:
        raise ProtocolError(f"bad version {counter!r} {node!r}")
    return (int(counter), node), value


class Peer:
    """Calls to one other replica over a small pool of connections.

    A connection whose call failed or timed out is aborted, since where its byte
    stream stands is unknown; a reused connection that turns out dead (the peer
    restarted) is replaced once within the same call.
    """

    def __init__(self, name: str, host: str, port: int, timeout: float) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.timeout = timeout
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def call(self, line: str, multi: bool = False) -> list[str]:
        """Send one request line; the reply line, or with `multi` every line up to END."""
        return await asyncio.wait_for(self._call(line, multi), self.timeout)

    async def _call(self, line: str, multi: bool) -> list[str]:
        while self.idle:
            conn = self.idle.pop()
            try:
                return await self._exchange(conn, line, multi)
            except (ConnectionError, asyncio.IncompleteReadError):
                continue  # stale connection: try the next, then a new one
        conn = await asyncio.open_connection(self.host, self.port)
        return await self._exchange(conn, line, multi)

    async def _exchange(self, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                        line: str, multi: bool) -> list[str]:
        reader, writer = conn
        try:
            writer.write(line.encode() + b"\n")
            await writer.drain()
            lines = []
            while True:
                raw = await reader.readline()
                if not raw.endswith(b"\n"):
                    raise ConnectionResetError(f"{self.name} closed the connection")
                text = raw.decode().rstrip("\n")
                if not multi or text == "END":
                    lines.append(text)
                    break
                lines.append(text)
        except BaseException:
            writer.transport.abort()
            raise
        if len(self.idle) < MAX_IDLE:
            self.idle.append(conn)
        else:
            writer.close()
        return lines

    def close(self) -> None:
        for _, writer in self.idle:
            writer.transport.abort()
        self.idle.clear()


class Replica:
    """One replica: `await replica.serve()` runs it until cancelled.

    `peers` maps the other replicas' names to (host, port). `w` and `r` default to a
    majority of the N = len(peers) + 1 replicas and must satisfy W + R > N.
    """

    def __init__(self, name: str, peers: Mapping[str, tuple[str, int]], *,
                 host: str = "0.0.0.0", port: int = 7000, w: int | None = None,
                 r: int | None = None, timeout: float = 1.0, sync_interval: float = 5.0,
                 variant: str = "quorum", store: dict[str, Entry] | None = None) -> None:
        if not name or " " in name:
            raise ValueError(f"replica name must be one word: {name!r}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
        n = len(peers) + 1
        self.w = n // 2 + 1 if w is None else w
        self.r = n // 2 + 1 if r is None else r
        if not (1 <= self.w <= n and 1 <= self.r <= n and self.w + self.r > n):
            raise ValueError(f"need 1 <= W, R <= N and W + R > N (N={n}, W={self.w}, "
                             f"R={self.r})")
        self.name = name
        self.host = host
        self.port = port
        self.timeout = timeout
        self.sync_interval = sync_interval
        self.variant = variant
        self.store: dict[str, Entry] = {} if store is None else store
        self.peers = [Peer(p, h, pt, timeout) for p, (h, pt) in sorted(peers.items())]
        self.clock = max((v[0] for v, _ in self.store.values()), default=0)  # Lamport
        self.server: asyncio.Server | None = None
        self.ready = asyncio.Event()  # set once the server listens
        self.stats = dict.fromkeys(("sets", "gets", "unavailable", "repairs", "syncs",
                                    "sync_failures"), 0)
        self._background: set[asyncio.Task[Any]] = set()
        self._next_sync = 0

    # -- life cycle ------------------------------------------------------------------------
    async def serve(self) -> None:
        """Listen, then run anti-entropy until cancelled."""
        await self.start()
        await self.run()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, self.host, self.port)
        self.ready.set()

    async def run(self) -> None:
        assert self.server is not None, "start() first"
        try:
            async with self.server:
                while True:
                    await asyncio.sleep(self.sync_interval)
                    await self.anti_entropy()
        finally:
            for task in list(self._background):
                task.cancel()
            for peer in self.peers:
                peer.close()

    def _spawn(self, coro: Awaitable[T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        """A background call is done; its failure is only a replica that did not answer."""
        self._background.discard(task)
        if not task.cancelled():
            task.exception()

    # -- local table -----------------------------------------------------------------------
    def local(self, key: str) -> Entry | None:
        return self.store.get(key)

    def apply(self, key: str, entry: Entry) -> bool:
        """Keep `entry` if it is newer than what is held; True if it was."""
        held = self.store.get(key)
        if held is not None and held[0] >= entry[0]:
            return False
        self.store[key] = entry
        self.clock = max(self.clock, entry[0][0])
        return True

    # -- serving ---------------------------------------------------------------------------
    async def _handle(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            while raw := await reader.readline():
                if not raw.endswith(b"\n"):
                    break  # the client went away mid-line
                try:
                    reply = await self.dispatch(raw.decode().rstrip("\r\n"))
                except Unavailable:
                    self.stats["unavailable"] += 1
                    reply = "ERR unavailable"
                except (ProtocolError, ValueError, UnicodeDecodeError):
                    reply = "ERR bad request"
                writer.write(reply.encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass  # reset, or a line longer than the stream limit
        except asyncio.CancelledError:
            # shutting down; ending quietly spares 3.11's start_server a spurious error log
            pass
        finally:
            writer.close()

    async def dispatch(self, line: str) -> str:
        verb, _, rest = line.partition(" ")
        if verb == "SET":
            key, sep, value = rest.partition(" ")
            if not key or not sep:
                raise ProtocolError("SET key value")
            await self.set(key, value)
            return "OK"
        if verb == "GET" and rest and " " not in rest:
            value = await self.get(rest)
            return "NOTFOUND" if value is None else f"VALUE {value}"
        if verb == "FETCH" and rest and " " not in rest:
            entry = self.local(rest)
            if entry is None:
                return "NONE"
            (counter, node), value = entry
            return f"HAVE {counter} {node} {value}"
        if verb == "PUT":
            key, *fields = rest.split(" ", 3)
            if len(fields) != 3 or not key:
                raise ProtocolError("PUT key counter node value")
            self.apply(key, _parse_entry(fields))
            return "ACK"
        if verb == "DUMP" and not rest:
            lines = [_entry_line("ITEM", k, e) for k, e in sorted(self.store.items())]
            return "\n".join([*lines, "END"])
        raise ProtocolError(line)

    # -- coordinating ----------------------------------------------------------------------
    async def set(self, key: str, value: str) -> None:
        self.stats["sets"] += 1
        if self.variant == "broken":
            # BROKEN: acknowledged before anyone else has it
            self.clock += 1
            entry = ((self.clock, self.name), value)
            self.apply(key, entry)
            for peer in self.peers:
                self._spawn(self._put(peer, key, entry))
            return
        held = await self._quorum([self._fetch(p, key) for p in self._all()], self.r)
        counter = max([self.clock, *(e[0][0] for e in held if e is not None)]) + 1
        entry = ((counter, self.name), value)
        await self._quorum([self._put(p, key, entry) for p in self._all()], self.w)

    async def get(self, key: str) -> str | None:
        self.stats["gets"] += 1
        if self.variant == "broken":
            entry = self.local(key)  # BROKEN: whatever this replica happens to hold
            return None if entry is None else entry[1]
        fetches = {p: self._spawn(self._fetch(p, key)) for p in self._all()}
        got = await self._quorum(list(fetches.values()), self.r)
        best = max(got, key=lambda e: ZERO if e is None else e[0])
        if best is None:
            return None
        answered = {p: t.result() for p, t in fetches.items()
                    if t.done() and not t.cancelled() and t.exception() is None}
        holders = [p for p, e in answered.items() if e is not None and e[0] == best[0]]
        if len(holders) < self.w:
            # write back before answering: once returned, a value stays returned
            self.stats["repairs"] += 1
            others = [p for p in self._all() if p not in holders]
            await self._quorum([self._put(p, key, best) for p in others],
                               self.w - len(holders))
            return best[1]
        for p, entry in answered.items():  # read repair, in the background
            if self._older(entry, best):
                self.stats["repairs"] += 1
                self._spawn(self._put(p, key, best))
        for p, task in fetches.items():  # and of answers still to come
            if not task.done():
                task.add_done_callback(lambda t, p=p: self._repair_late(t, p, key, best))
        return best[1]

    @staticmethod
    def _older(entry: Entry | None, best: Entry) -> bool:
        return entry is None or entry[0] < best[0]

    def _repair_late(self, task: asyncio.Task[Entry | None], peer: Peer | None, key: str,
                     best: Entry) -> None:
        if not task.cancelled() and task.exception() is None and self._older(
                task.result(), best):
            self.stats["repairs"] += 1
            self._spawn(self._put(peer, key, best))

    def _all(self) -> list[Peer | None]:
        """Every replica: None is this one."""
        return [None, *self.peers]

    async def _fetch(self, peer: Peer | None, key: str) -> Entry | None:
        if peer is None:
            return self.local(key)
        (reply,) = await peer.call(f"FETCH {key}")
        if reply == "NONE":
            return None
        verb, *fields = reply.split(" ", 3)
        if verb != "HAVE" or len(fields) != 3:
            raise ProtocolError(reply)
        entry = _parse_entry(fields)
        self.clock = max(self.clock, entry[0][0])
        return entry

    async def _put(self, peer: Peer | None, key: str, entry: Entry) -> None:
        if peer is None:
            self.apply(key, entry)
            return
        (reply,) = await peer.call(_entry_line("PUT", key, entry))
        if reply != "ACK":
            raise ProtocolError(reply)

    async def _quorum(self, calls: Iterable[Awaitable[T]], need: int) -> list[T]:
        """Run `calls` at once; the first `need` results, or Unavailable if fewer
        succeed within `timeout`. Calls still running go on in the background."""
        pending = {self._spawn(c) for c in calls}
        results: list[T] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while len(results) < need and pending:
            left = deadline - loop.time()
            if left <= 0:
                break
            done, pending = await asyncio.wait(pending, timeout=left,
                                               return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is None:
                    results.append(task.result())
        if len(results) < need:
            raise Unavailable(f"{len(results)} of {need} replicas answered")
        return results

    # -- anti-entropy ----------------------------------------------------------------------
    async def anti_entropy(self) -> None:
        """Exchange the whole table with the next peer in turn: pull what it has newer,
        push what it lacks."""
        if not self.peers:
            return
        peer = self.peers[self._next_sync % len(self.peers)]
        self._next_sync += 1
        try:
            theirs: dict[str, Version] = {}
            for line in await peer.call("DUMP", multi=True):
                if line == "END":
                    break
                verb, key, *fields = line.split(" ", 4)
                if verb != "ITEM" or len(fields) != 3:
                    raise ProtocolError(line)
                entry = _parse_entry(fields)
                theirs[key] = entry[0]
                if self.apply(key, entry):
                    self.stats["repairs"] += 1
            for key, entry in sorted(self.store.items()):
                if theirs.get(key, ZERO) < entry[0]:
                    await self._put(peer, key, entry)
                    self.stats["repairs"] += 1
            self.stats["syncs"] += 1
        except (OSError, TimeoutError, ValueError, ProtocolError, asyncio.IncompleteReadError):
            self.stats["sync_failures"] += 1  # try the next peer next time


class Client:
    """A client of one replica: one connection, opened again after a failure.

    `request` returns the reply line as it is; `set` and `get` raise Unavailable on
    `ERR unavailable`. All raise TimeoutError or OSError when the replica does not
    answer within `timeout`.
    """

    def __init__(self, host: str, port: int = 7000, timeout: float = 5.0) -> None:
        self.peer = Peer(host, host, port, timeout)

    async def request(self, line: str) -> str:
        (reply,) = await self.peer.call(line)
        return reply

    async def _checked(self, line: str) -> str:
        reply = await self.request(line)
        if reply == "ERR unavailable":
            raise Unavailable(f"{self.peer.host}: {reply}")
        if reply.startswith("ERR"):
            raise ProtocolError(f"{self.peer.host}: {reply}")
        return reply

    async def set(self, key: str, value: str) -> None:
        if "\n" in value or " " in key or not key:
            raise ValueError("a key is one word and a value one line")
        reply = await self._checked(f"SET {key} {value}")
        if reply != "OK":
            raise ProtocolError(reply)

    async def get(self, key: str) -> str | None:
        reply = await self._checked(f"GET {key}")
        if reply == "NOTFOUND":
            return None
        if not reply.startswith("VALUE "):
            raise ProtocolError(reply)
        return reply[len("VALUE "):]

    def close(self) -> None:
        self.peer.close()


# -- command line -----------------------------------------------------------------------------
def _address(text: str, default_port: int = 7000) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    if not port.isdigit():
        raise argparse.ArgumentTypeError(f"bad port in {text!r}")
    return host, int(port)


def _peer(text: str) -> tuple[str, tuple[str, int]]:
    """NAME=HOST:PORT, or HOST:PORT / NAME (then the name is the host)."""
    name, sep, where = text.partition("=")
    address = _address(where if sep else text)
    return (name if sep else address[0]), address


async def _cluster(n: int, base_port: int, variant: str) -> None:
    names = [f"n{i}" for i in range(1, n + 1)]
    replicas = [
        Replica(name, {p: ("127.0.0.1", base_port + j) for j, p in enumerate(names) if p != name},
                host="127.0.0.1", port=base_port + i, variant=variant)
        for i, name in enumerate(names)]
    tasks = [asyncio.create_task(replica.serve()) for replica in replicas]
    for replica in replicas:
        await replica.ready.wait()
        print(f"{replica.name} listening on 127.0.0.1:{replica.port}", flush=True)
    await asyncio.gather(*tasks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvstore", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run one replica")
    serve.add_argument("name")
    serve.add_argument("--listen", type=_address, default=("0.0.0.0", 7000))
    serve.add_argument("--peer", type=_peer, action="append", default=[])
    serve.add_argument("-w", type=int, default=None, help="write quorum (majority)")
    serve.add_argument("-r", type=int, default=None, help="read quorum (majority)")
    serve.add_argument("--timeout", type=float, default=1.0)
    serve.add_argument("--sync-interval", type=float, default=5.0)
    serve.add_argument("--variant", choices=VARIANTS, default="quorum")
    cluster = sub.add_parser("cluster", help="N replicas on 127.0.0.1 in one process")
    cluster.add_argument("n", type=int, nargs="?", default=3)
    cluster.add_argument("--base-port", type=int, default=7001)
    cluster.add_argument("--variant", choices=VARIANTS, default="quorum")
    call = sub.add_parser("call", help="send one request: SET key value | GET key")
    call.add_argument("address", type=_address)
    call.add_argument("request", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            replica = Replica(args.name, dict(args.peer), host=args.listen[0],
                              port=args.listen[1], w=args.w, r=args.r, timeout=args.timeout,
                              sync_interval=args.sync_interval, variant=args.variant)
            asyncio.run(replica.serve())
        elif args.command == "cluster":
            asyncio.run(_cluster(args.n, args.base_port, args.variant))
        else:
            async def one() -> str:
                client = Client(*args.address)
                try:
                    multi = args.request[0] == "DUMP"
                    return "\n".join(await client.peer.call(" ".join(args.request), multi))
                finally:
                    client.close()
            print(asyncio.run(one()))
    except ValueError as exc:
        print(f"kvstore: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError) as exc:
        print(f"kvstore: {exc or type(exc).__name__}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
