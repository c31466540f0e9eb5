"""pytest plugin (entry point `vimage`): topologies as fixtures, async tests in virtual time.

Fixtures:
    vimage_kernel   a Kernel in virtual time (seed: `@pytest.mark.vimage(seed=N)`, else
                    --vimage-seed, default 0; `clock="real"` in the marker for real time)
    net             a vimage.testing.Net on that kernel (build anything; routes are
                    computed before the test body runs)
    hosts, routers  net.hosts / net.routers: `a, b = hosts("a", "b")`, `routers(2)`
    star, line      factories: `star(5, delay="10ms")`, `line(4)` (see vimage.testing)
    topology        a factory: `exp = topology("routing.yaml")` loads a topology file (YAML
                    or IMUNES .imn; a relative path from the test file's directory, else
                    the rootdir) and brings it up in vimage_kernel as a
                    vimage.emu.Experiment (keyword arguments go to it); down at teardown

An `async def` test that uses any of them runs on a vimage event loop, inside the
kernel's base vnet, in virtual time: start programs with `vimage.spawn(vnet, coro)`.

When such a test fails, the frames every interface saw during the test body are
written as a pcapng file (default directory `.vimage-traces` under the rootdir, or
--vimage-trace-dir) and the failure report names it. The topologies the test built with
net, star or line are written beside it as the emulator's YAML (`vimage gui FILE` draws
one; `vimage topo up FILE` brings it up again).
"""

from __future__ import annotations

import inspect
import os
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import vimage
from vimage import testing
from vimage.kernel import Kernel
from vimage.net.pcapng import TraceRecorder

KERNEL_KEY = pytest.StashKey[Kernel]()
TRACE_KEY = pytest.StashKey[TraceRecorder]()
NETS_KEY = pytest.StashKey[list[testing.Net]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("vimage", "vimage network topologies")
    group.addoption("--vimage-seed", type=int, default=0,
                    help="seed of vimage_kernel when the test sets none (default 0)")
    group.addoption("--vimage-trace-dir", default=None,
                    help="directory for packet traces of failing tests "
                         "(default: .vimage-traces under the rootdir)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vimage(seed=None, clock='virtual'): settings of the vimage_kernel fixture")


@pytest.fixture
def vimage_kernel(request: pytest.FixtureRequest) -> Iterator[Kernel]:
    marker = request.node.get_closest_marker("vimage")
    settings = dict(marker.kwargs) if marker else {}
    seed = settings.get("seed")
    kernel = Kernel(clock=settings.get("clock", "virtual"),
                    seed=request.config.getoption("--vimage-seed") if seed is None else seed)
    request.node.stash[KERNEL_KEY] = kernel
    yield kernel
    recorder = request.node.stash.get(TRACE_KEY, None)
    if recorder is not None:
        recorder.close()
    kernel.stop()
    for vnet in reversed(kernel.vnets()):
        if vnet.alive and vnet.parent is kernel.base:
            kernel.destroy(vnet)


def _built(request: pytest.FixtureRequest, net: testing.Net) -> testing.Net:
    """Remember a Net the test built, for the failure report's topology file."""
    request.node.stash.setdefault(NETS_KEY, []).append(net)
    return net


@pytest.fixture
def net(vimage_kernel: Kernel, request: pytest.FixtureRequest) -> testing.Net:
    return _built(request, testing.Net(vimage_kernel))


@pytest.fixture
def hosts(net: testing.Net) -> Callable[..., Any]:
    return net.hosts


@pytest.fixture
def routers(net: testing.Net) -> Callable[..., Any]:
    return net.routers


@pytest.fixture
def star(vimage_kernel: Kernel, request: pytest.FixtureRequest) -> Callable[..., testing.Net]:
    def make(n: int, **kwargs: Any) -> testing.Net:
        return _built(request, testing.star(vimage_kernel, n, **kwargs))
    return make


@pytest.fixture
def line(vimage_kernel: Kernel, request: pytest.FixtureRequest) -> Callable[..., testing.Net]:
    def make(n: int, **kwargs: Any) -> testing.Net:
        return _built(request, testing.line(vimage_kernel, n, **kwargs))
    return make


@pytest.fixture
def topology(vimage_kernel: Kernel, request: pytest.FixtureRequest) -> Iterator[Callable[..., Any]]:
    from vimage.emu import Experiment, load  # the emulator only for the tests that use it

    made: list[Any] = []

    def make(path: str | os.PathLike[str], **kwargs: Any) -> Any:
        found = os.fspath(path)
        if not os.path.isabs(found):
            here = os.path.join(os.path.dirname(str(request.node.path)), found)
            found = here if os.path.exists(here) else os.path.join(
                str(request.config.rootpath), found)
        experiment = Experiment(load(found), vimage_kernel, **kwargs).up()
        made.append(experiment)
        return experiment

    yield make
    for experiment in reversed(made):
        experiment.down()


def _start_trace(item: pytest.Item, kernel: Kernel) -> None:
    recorder = TraceRecorder(kernel)
    recorder.follow()
    item.stash[TRACE_KEY] = recorder


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    kernel = pyfuncitem.stash.get(KERNEL_KEY, None)
    if kernel is None:
        return None
    built = pyfuncitem.funcargs.get("net")
    if isinstance(built, testing.Net):
        built.route()
        built.auto_route = True  # links made by the test body are routed at once
    _start_trace(pyfuncitem, kernel)
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    coro = pyfuncitem.obj(**{name: pyfuncitem.funcargs[name] for name in names})
    vimage.run(coro, kernel=kernel)
    return True


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    recorder = item.stash.get(TRACE_KEY, None)
    if report.when == "call" and report.failed and recorder is not None:
        where = item.config.getoption("--vimage-trace-dir") or os.path.join(
            str(item.config.rootpath), ".vimage-traces")
        os.makedirs(where, exist_ok=True)
        path = os.path.join(where, re.sub(r"[^A-Za-z0-9_.-]+", "_", item.nodeid) + ".pcapng")
        count = recorder.write(path)
        where_to = f"{count} frames on {recorder.written_interfaces} interfaces: {path}"
        report.sections.append(("vimage packet trace", where_to))
        files = _write_topologies(item.stash.get(NETS_KEY, []), path[:-len(".pcapng")])
        if files:
            report.sections.append(("vimage topology", " ".join(files)))
    return report


def _write_topologies(nets: list[testing.Net], stem: str) -> list[str]:
    """Each non-empty Net's model as YAML: STEM.yaml, or STEM-2.yaml ... for more."""
    from vimage.emu import yamlfmt

    files = []
    for net in (n for n in nets if n.topology.nodes):
        path = f"{stem}.yaml" if not files else f"{stem}-{len(files) + 1}.yaml"
        yamlfmt.dump(net.topology, path)
        files.append(path)
    return files
