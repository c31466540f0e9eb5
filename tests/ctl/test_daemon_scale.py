"""vimaged's create and destroy at scale (issue 16), in process: a destroy looks at the
subtree it destroys, not at every vnet the daemon knows, and the vnets it creates one by
one get the kernel's collector policy (vimage.gcpolicy). Structure only, never timing."""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator

import pytest

from vimage.ctl import ops, paths
from vimage.ctl.daemon import Daemon, Session
from vimage.kernel import Kernel


@pytest.fixture
def daemon(tmp_path) -> Iterator[tuple[Daemon, Session]]:
    """A daemon object that is never started: its ops are called directly."""
    d = Daemon(paths.resolve(str(tmp_path)), Kernel(clock="virtual", seed=1))
    a, b = socket.socketpair()
    try:
        yield d, Session(a, d.kernel.base, False)
    finally:
        d._shutdown()
        a.close()
        b.close()
        gc.unfreeze()


def _op(d: Daemon, s: Session, op: str, name: str) -> None:
    handler = {"create": ops.op_create, "destroy": ops.op_destroy}[op]
    handler(d, s, ops.Request(0, op, {"name": name}, []))


def test_destroy_forgets_its_subtree_only(daemon, monkeypatch):
    d, s = daemon
    for name in ("a", "a.x", "a.x.y", "b", "c"):
        _op(d, s, "create", name)
    looked_at = []
    retire = d.cgroups.retire_dead
    monkeypatch.setattr(d.cgroups, "retire_dead",
                        lambda among=None: (looked_at.append(among), retire(among)))
    _op(d, s, "destroy", "a")
    assert sorted(v.name for v in d.meta) == ["b", "c"]
    assert [sorted(v.name for v in among) for among in looked_at] == [["a", "a.x", "a.x.y"]]
    _op(d, s, "destroy", "c")
    assert [v.name for v in d.meta] == ["b"]


def test_vnets_created_through_the_daemon_get_the_collector_policy(daemon):
    if gc.get_freeze_count() or not gc.isenabled():
        pytest.skip("objects are frozen already, or the collector is off: the policy stays off")
    d, s = daemon
    d.kernel.collector.batch = 10
    for i in range(25):
        _op(d, s, "create", f"v{i}")
    assert d.kernel.collector.freezes == 2 and gc.get_freeze_count() > 0
    for i in range(25):
        _op(d, s, "destroy", f"v{i}")
    assert d.meta == {} and gc.get_freeze_count() == 0
