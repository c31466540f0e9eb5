"""FreeBSD's tests/sys/netpfil/common/nat.sh for ipfw, as vnet scenarios.

Four vnets as there: `host` (198.51.100.2) on the outside link of `nat` (198.51.100.1),
and two clients on links of their own (192.0.2.2 via 192.0.2.1, 192.0.3.2 via
192.0.3.1) routing 198.51.100.0/24 through `nat`. The host has no route back to the
clients, so a ping fails until `nat` translates: `basic` with the in-kernel NAT
(`ipfw nat 123 config if IF` + `ipfw add 1000 nat 123 all from any to any`),
`userspace_nat` with examples/natd.py behind a divert socket (`ipfw -q add divert natd
all from any to any via IF`). The rules are the scripts' own ipfw commands; FreeBSD's test
machines load ipfw with `net.inet.ip.fw.default_to_accept=1`, set here before the first
rule (the scripts add no allow rule: the clients' packets in on their own links and what
natd reinjects after the divert rule reach the default rule).
"""

from __future__ import annotations

import asyncio
import importlib.util
import socket
from pathlib import Path

import vimage
from vimage.kernel import Kernel
from vimage.netinet.ip_divert import IPPROTO_DIVERT
from vimage.topo import add_route, connect
from vimage.wire import icmp as wicmp

NATD = Path(__file__).resolve().parents[2] / "examples" / "natd.py"


class Lab:
    def __init__(self) -> None:
        self.k = Kernel(clock="virtual", seed=1)
        self.host, self.nat, c1, c2 = (self.k.create(n)
                                       for n in ("host", "nat", "client1", "client2"))
        self.wan, _ = connect(self.nat, "198.51.100.1/24", self.host, "198.51.100.2/24")
        connect(self.nat, "192.0.2.1/24", c1, "192.0.2.2/24")
        connect(self.nat, "192.0.3.1/24", c2, "192.0.3.2/24")
        self.nat.sysctl("net.inet.ip.forwarding", 1)
        add_route(c1, "198.51.100.0/24", "192.0.2.1")
        add_route(c2, "198.51.100.0/24", "192.0.3.1")
        self.clients = (c1, c2)

    def ipfw(self, *commands: str) -> None:
        """firewall_config: the script's commands in the nat vnet (ipfw loaded with
        default_to_accept=1, as FreeBSD's test machines do)."""
        assert self.nat.cmd("sysctl net.inet.ip.fw.default_to_accept=1").ok
        for line in commands:
            result = self.nat.cmd(line)
            assert result.ok, result.output

    def pings(self) -> list[int]:
        """`ping -t 1 -c 1 198.51.100.2` from each client: its exit status."""
        return [c.cmd("ping -t 1 -c 1 198.51.100.2").status for c in self.clients]


def test_basic():
    """nat.sh:basic (ipfw) — in-kernel NAT on the host link, one `nat` rule for all."""
    lab = Lab()
    assert lab.pings() == [2, 2]  # ping fails without NAT configuration
    lab.ipfw(f"ipfw -q nat 123 config if {lab.wan.name}",
             "ipfw -q add 1000 nat 123 all from any to any")
    assert lab.pings() == [0, 0]  # ping is successful now
    inst = lab.nat.ipfw_nat.instances[123]
    aliased = [link for link in inst.out.values() if link.laddr != link.aaddr]
    assert sorted(link.laddr for link in aliased) == [0xC0000202, 0xC0000302]
    assert {link.aaddr for link in aliased} == {0xC6336401}  # 198.51.100.1


def test_userspace_nat():
    """nat.sh:userspace_nat — natd (examples/natd.py) behind `divert natd` rules."""
    lab = Lab()
    assert lab.pings() == [2, 2]
    spec = importlib.util.spec_from_file_location("natd_example", NATD)
    natd = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(natd)
    translator = natd.Translator("198.51.100.1")
    lab.ipfw(f"ipfw -q add divert natd all from any to any via {lab.wan.name}")
    replies: list[bytes] = []

    async def ping(client, ident: int) -> None:
        sock = client.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.setblocking(False)
        sock.sendto(wicmp.build_echo(wicmp.ECHO, ident, 0, b"x" * 56), ("198.51.100.2", 0))
        loop = asyncio.get_running_loop()
        replies.append(await asyncio.wait_for(loop.sock_recv(sock, 2048), 1))

    async def main() -> None:
        div = lab.nat.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
        div.bind(("", 8668))
        div.setblocking(False)
        server = vimage.spawn(lab.nat, natd.serve(div, translator))
        for i, client in enumerate(lab.clients):
            await ping(client, 100 + i)
        server.cancel()
        div.close()

    vimage.run(main(), kernel=lab.k)
    assert [r[20] for r in replies] == [wicmp.ECHO_REPLY] * 2
    assert translator.translated == 4  # two requests out, two replies in
