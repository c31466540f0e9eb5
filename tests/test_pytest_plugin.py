"""The pytest plugin, run on small test files with pytester."""

from __future__ import annotations

import pytest
from scapy.layers import inet, l2  # noqa: F401 (registers Ethernet, IP, UDP for rdpcap)
from scapy.utils import rdpcap

pytest_plugins = ["pytester"]

GOOD = '''
import asyncio
import vimage

async def handle(reader, writer):
    writer.write((await reader.readline()).upper())
    await writer.drain()
    writer.close()

async def test_star_talks_by_name(star):
    net = star(3, delay="10ms")
    server = await vimage.spawn(net["h3"], asyncio.start_server(handle, "0.0.0.0", 80))
    async def client():
        reader, writer = await asyncio.open_connection("h3", 80)
        writer.write(b"hi\\n")
        return await reader.readline()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await vimage.spawn(net["h1"], client()) == b"HI\\n"
    assert loop.time() - t0 >= 0.080  # 2 hops of 10 ms, handshake and request
    await asyncio.sleep(86400)  # a day of virtual time
    server.close()

async def test_built_by_hand(net, hosts, routers):
    a, b = hosts("a", "b")
    (r,) = routers(1)
    net.link(a, r)
    net.link(r, b, delay="5ms")
    async def ping():
        return a.cmd("ping -c 1 b").status
    assert await ping() == 0

def test_line_sync(line, vimage_kernel):
    net = line(4)
    assert net["n1"].cmd("ping -c 1 n4").ok
    assert vimage_kernel.clock == "virtual"

@__import__("pytest").mark.vimage(seed=42)
def test_marker_seed(vimage_kernel):
    assert vimage_kernel.seed == 42
'''

BROKEN = '''
import asyncio
import vimage

async def test_lost_reply(star):
    net = star(2)
    async def server():
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("0.0.0.0", 9))  # never answers
        await asyncio.sleep(10)
    vimage.spawn(net["h2"], server())
    async def client():
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        class P(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                fut.set_result(data)
        tr, _ = await loop.create_datagram_endpoint(P, remote_addr=("h2", 9))
        tr.sendto(b"question")
        return await asyncio.wait_for(fut, 1)
    await vimage.spawn(net["h1"], client())
'''


def test_fixtures_and_async_tests_pass(pytester: pytest.Pytester):
    pytester.makepyfile(test_good=GOOD)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=4)


def test_a_failing_test_leaves_a_pcapng_trace(pytester: pytest.Pytester):
    pytester.makepyfile(test_broken=BROKEN)
    traces = pytester.path / "traces"
    result = pytester.runpytest_subprocess("-q",
                                           f"--vimage-trace-dir={traces}")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*vimage packet trace*", "*frames on * interfaces: *.pcapng"])
    (path,) = traces.glob("*.pcapng")
    packets = rdpcap(str(path))
    udp = [p for p in packets if p.haslayer("UDP") and bytes(p["UDP"].payload) == b"question"]
    # seen leaving h1, entering and leaving the router, entering h2
    assert len(udp) == 4
    assert {p["IP"].dst for p in udp} == {"10.0.1.1"}
    # one interface description per interface that saw frames, named vnet:ifname
    names = {p.sniffed_on for p in packets}
    assert names == {"h1:epair0a", "r:epair0b", "r:epair1b", "h2:epair1a"}
    # and the topology the test built, as the emulator's YAML, beside the trace
    result.stdout.fnmatch_lines(["*vimage topology*", "*.yaml"])
    from vimage.emu import yamlfmt

    topo = yamlfmt.load(path.with_suffix(".yaml"))
    assert sorted(topo.nodes) == ["h1", "h2", "r"] and len(topo.links) == 2
    assert topo.nodes["h2"].interfaces["epair1a"].ipv4 == ["10.0.1.1/24"]
