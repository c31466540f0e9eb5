"""Requests from rank 0 to the other ranks of an interactive partitioned experiment.

Rank 0 (the GUI's server) asks rank K to run a tool line on a node K holds, change its
ends of a link, read its counters, capture: one request, one answer, many at once (a
console's `ping` must not hold up the counters). MPI is used only to set this up: rank
0 broadcasts a random key, every other rank listens on a TCP socket of its own (`--bind`
ADDR, an ephemeral port) and gathers its address to rank 0. Requests then travel on
`multiprocessing.connection` connections, which authenticate both sides with the key
(HMAC challenge) before anything is unpickled; rank 0 keeps a pool of connections per
rank, and each connection is served by a thread of its own on the other side. So no
MPI call is made from more than one thread, whatever the MPI library's thread level.

A request names one of the target's allowed operations (`ops`); its exception comes back
as `RankCallError(rank, kind, message)`; a rank that does not answer (dead, or slower
than the timeout) gives `RankUnreachable` naming it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from typing import Any

TIMEOUT = 30.0  # seconds an answer may take (requests that run tools wait without limit)
QUIT = "quit"  # the request that ends a rank's serve_forever


class RankCallError(Exception):
    """The operation raised on the rank that ran it."""

    def __init__(self, rank: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.rank = rank
        self.kind = kind


class RankUnreachable(Exception):
    """The rank did not answer (its process is gone, or it is hung)."""

    def __init__(self, rank: int, why: str) -> None:
        super().__init__(f"rank {rank} does not answer ({why})")
        self.rank = rank


def _dispatch(target: Any, ops: Iterable[str], op: str, args: tuple[Any, ...]) -> Any:
    if op not in ops:
        raise ValueError(f"no operation {op!r}")
    return getattr(target, op)(*args)


class LocalRank:
    """Rank 0's own partition, called as the others are (same errors)."""

    def __init__(self, target: Any, ops: Iterable[str], rank: int = 0) -> None:
        self.target = target
        self.ops = frozenset(ops)
        self.rank = rank

    def call(self, op: str, *args: Any, timeout: float | None = TIMEOUT) -> Any:
        try:
            return _dispatch(self.target, self.ops, op, args)
        except Exception as exc:
            raise RankCallError(self.rank, type(exc).__name__, str(exc)) from exc

    def close(self) -> None:
        pass


class RankClient:
    """Rank 0's side of the requests to rank `rank` at `address`."""

    def __init__(self, rank: int, address: tuple[str, int], key: bytes) -> None:
        self.rank = rank
        self.address = address
        self.key = key
        self._free: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _connection(self) -> Connection:
        with self._lock:
            if self._free:
                return self._free.pop()
        try:
            return Client(self.address, family="AF_INET", authkey=self.key)
        except AuthenticationError:
            raise RankUnreachable(self.rank, "it refused our key") from None
        except (OSError, EOFError) as exc:
            raise RankUnreachable(self.rank, str(exc) or type(exc).__name__) from None

    def call(self, op: str, *args: Any, timeout: float | None = TIMEOUT) -> Any:
        """Run `op(*args)` on the rank; its result, or RankCallError / RankUnreachable."""
        conn = self._connection()
        try:
            conn.send((op, args))
            if timeout is not None and not conn.poll(timeout):
                raise RankUnreachable(self.rank, f"no answer in {timeout:g} s")
            answer = conn.recv()
        except (OSError, EOFError) as exc:
            conn.close()
            raise RankUnreachable(self.rank, str(exc) or type(exc).__name__) from None
        except RankUnreachable:
            conn.close()
            raise
        with self._lock:
            if self._closed:
                conn.close()
            else:
                self._free.append(conn)
        if answer[0] == "ok":
            return answer[1]
        raise RankCallError(self.rank, answer[1], answer[2])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            free, self._free = self._free, []
        for conn in free:
            conn.close()


class RankServer:
    """Rank K's side: serves `target`'s `ops` to authenticated connections, each in a
    thread, until a `quit` request or `stop()`."""

    def __init__(self, target: Any, ops: Iterable[str], bind: str, key: bytes) -> None:
        self.target = target
        self.ops = frozenset(ops)
        self.listener = Listener((bind, 0), family="AF_INET", authkey=key)
        self.address: tuple[str, int] = self.listener.address  # type: ignore[assignment]
        self.quit = threading.Event()
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._accept, name="vimage-rank-server",
                                        daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self.quit.is_set():
            try:
                conn = self.listener.accept()
            except OSError:  # closed by stop()
                return
            except Exception:  # a peer without the key (AuthenticationError), or gone
                continue
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), name="vimage-rank-request",
                             daemon=True).start()

    def _serve(self, conn: Connection) -> None:
        try:
            while True:
                try:
                    op, args = conn.recv()
                except (OSError, EOFError):
                    return
                if op == QUIT:
                    self.quit.set()
                    with contextlib.suppress(OSError):
                        conn.send(("ok", None))
                    return
                try:
                    answer = ("ok", _dispatch(self.target, self.ops, op, tuple(args)))
                except Exception as exc:
                    answer = ("error", type(exc).__name__, str(exc))
                try:
                    conn.send(answer)
                except (OSError, EOFError):
                    return
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def stop(self) -> None:
        """Stop accepting and end every connection (their threads then end)."""
        self.quit.set()
        with contextlib.suppress(OSError):  # wake accept(): it then sees `quit`
            socket.create_connection(self.address, timeout=1).close()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:  # wake their recv() with an end of file
            with contextlib.suppress(OSError), \
                    socket.socket(fileno=os.dup(conn.fileno())) as sock:
                sock.shutdown(socket.SHUT_RDWR)
