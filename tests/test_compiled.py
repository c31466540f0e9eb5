"""Which build runs: pure Python or the compiled modules (vimage.compiled, docs/internals.md
"Compiled builds").

A build is all or nothing: every module of `MODULES` compiled, or none (a mixture is a
stale or broken build). CI's compiled step sets VIMAGE_EXPECT_COMPILED=1 and its pure
run may set 0, so a build that silently fell back to pure Python fails there.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest

import vimage
from vimage import compiled
from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.sched import Scheduler
from vimage.topo import connect

SRC = Path(vimage.__file__).resolve().parent.parent


def _imported() -> dict[str, bool]:
    for path in compiled.MODULES:
        importlib.import_module(compiled.module_name(path))
    return compiled.active()


def test_every_listed_module_exists_and_is_reported():
    for path in compiled.MODULES:
        assert (SRC / path).is_file(), path
    assert set(_imported()) == {compiled.module_name(p) for p in compiled.MODULES}


def test_the_build_is_all_compiled_or_all_pure():
    state = _imported()
    assert len(set(state.values())) == 1, f"a mixed build: {state}"


@pytest.mark.skipif("VIMAGE_EXPECT_COMPILED" not in os.environ,
                    reason="set VIMAGE_EXPECT_COMPILED=1 (compiled) or 0 (pure) to check it")
def test_the_expected_build_is_active():
    want = os.environ["VIMAGE_EXPECT_COMPILED"] == "1"
    assert set(_imported().values()) == {want}


def test_mypyc_attr_leaves_the_class_itself():
    class C:
        pass

    assert compiled.mypyc_attr(native_class=False)(C) is C


def test_what_the_compiled_classes_must_still_allow():
    """Either way: interfaces subclassed outside the compiled set, a stand-in peer, and the
    scheduler's methods wrapped on an instance (as the fuzz harness does)."""

    class Tapped(Ifnet):
        __slots__ = ("seen",)

    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    ea, _ = connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    assert issubclass(Tapped, Ifnet)
    seen: list[bytes] = []

    class Wire:
        def input(self, frame: bytes) -> None:
            seen.append(frame)

    ea.peer = Wire()
    calls: list[int] = []
    inner = k.sched.call_later

    def call_later(delay_ns, callback, *args, owner=None):  # type: ignore[no-untyped-def]
        calls.append(delay_ns)
        return inner(delay_ns, callback, *args, owner=owner)

    k.sched.call_later = call_later  # type: ignore[method-assign]
    assert isinstance(k.sched, Scheduler)
    a.cmd("ping -c 1 -t 1 10.0.0.2")
    assert seen and seen[0][12:14] == b"\x08\x06"  # the ARP request went to the stand-in
    assert calls  # ARP's retransmission timer went through the wrapper


def test_what_the_compiled_socket_layer_must_still_allow():
    """Either way: sockets are weakly referenced (descriptors, the TCP block's owner) and
    subclassed outside the compiled set (RouteSocket); an AF_INET6 stream connects with a
    four-item address."""
    import gc
    import weakref
    from socket import AF_INET6, SOCK_STREAM

    from vimage.socket.rtsock import AF_ROUTE, RouteSocket
    from vimage.socket.tcp_socket import TcpSocket

    k = Kernel(clock="virtual", seed=1)
    a = k.create("a")
    srv = a.socket(AF_INET6, SOCK_STREAM)
    srv.bind(("::1", 80))
    srv.listen()
    cli = a.socket(AF_INET6, SOCK_STREAM)
    assert isinstance(cli, TcpSocket)
    cli.connect(("::1", 80, 0, 0))
    conn, _ = srv.accept()
    cli.sendall(b"hello")
    assert conn.recv(10) == b"hello"
    fd = cli.fileno()
    assert k.fds[fd] is cli and cli.tcb.sock is cli
    ref = weakref.ref(cli)
    cli.close()
    del cli
    gc.collect()
    assert ref() is None and fd not in k.fds
    route = a.socket(AF_ROUTE, 3, 0)
    assert isinstance(route, RouteSocket) and route.fileno() > 0
    route.close()
