"""Divert sockets (divert(4)): binding, what a reader gets, reinjection both ways, tee,
and examples/natd.py translating a vnet's traffic through one.

The diverting rule is `vimage.testing.divert_via`: `ipfw add 100 divert PORT ip from any
to any via WAN` and `ipfw add 65000 allow ip from any to any`; a reinjected packet
resumes at rule 65000 (tests/netpfil/test_ipfw_integration.py checks what rules after
the divert rule see)."""

from __future__ import annotations

import asyncio
import errno
import importlib.util
import socket
from pathlib import Path

import pytest
from scapy.all import IP, UDP, raw

import vimage
from vimage.kernel import Kernel
from vimage.netinet.ip_divert import IPPROTO_DIVERT
from vimage.socket.divert import DivertSocket
from vimage.socket.socket import Socket
from vimage.testing import divert_via
from vimage.topo import add_route, connect

PORT = 8668
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "natd.py"


class World:
    """h (10.0.0.2) - r (10.0.0.1 | 192.0.2.1) - s (192.0.2.7); r diverts via wan."""

    def __init__(self) -> None:
        self.k = Kernel(clock="virtual", seed=1)
        self.h, self.r, self.s = (self.k.create(n) for n in ("h", "r", "s"))
        connect(self.h, "10.0.0.2/24", self.r, "10.0.0.1/24")
        self.wan, _ = connect(self.r, "192.0.2.1/24", self.s, "192.0.2.7/24")
        add_route(self.h, "default", "10.0.0.1")
        add_route(self.s, "10.0.0.0/24", "192.0.2.1")
        self.r.sysctl("net.inet.ip.forwarding", 1)
        divert_via(self.r, PORT, self.wan.name, rule=100)

    def udp(self, vnet, port):
        sock = vnet.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("", port))
        sock.settimeout(1)
        return sock


def test_socket_bind_and_the_protocol_switch():
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    d = v.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
    assert isinstance(d, DivertSocket) and d.proto == 258
    assert type(v.socket(socket.AF_INET, socket.SOCK_RAW, 0)) is Socket  # raw IP as before
    d.bind(("0.0.0.0", PORT))
    assert d.getsockname() == ("0.0.0.0", PORT)
    other = v.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
    with pytest.raises(OSError) as err:
        other.bind(("", PORT))
    assert err.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as err:
        d.connect(("192.0.2.1", 1))
    assert err.value.errno == errno.EOPNOTSUPP
    d.close()
    other.bind(("", PORT))  # free again once closed
    assert v.divert.socket_on(PORT) is other


def test_no_socket_on_the_port_drops_and_counts():
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    assert v.divert.deliver(PORT, raw(IP() / UDP()), None, True, 100) is False
    assert v.divert.stats.noport == 1


def test_outgoing_packets_read_with_address_zero_and_the_rule_then_reinjected():
    w = World()
    d = w.r.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
    d.bind(("", PORT))
    srv, cli = w.udp(w.s, 7000), w.udp(w.h, 5000)
    cli.sendto(b"hello", ("192.0.2.7", 7000))
    w.k.run(0.1)
    pkt, addr, ifname = d.recvfrom_if(65535)
    assert addr == ("0.0.0.0", 100) and ifname == ""
    assert IP(pkt).src == "10.0.0.2" and bytes(IP(pkt)[UDP].payload) == b"hello"
    with pytest.raises(socket.timeout):
        srv.recvfrom(10)  # held by the divert socket until written back
    assert d.sendto(pkt, addr) == len(pkt)
    assert srv.recvfrom(10) == (b"hello", ("10.0.0.2", 5000))
    assert w.r.divert.stats.diverted == 1 and w.r.divert.stats.outbound == 1


def test_incoming_packets_carry_the_interface_address_and_name():
    w = World()
    d = w.r.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
    d.bind(("", PORT))
    srv, cli = w.udp(w.h, 5000), w.udp(w.s, 7000)
    cli.sendto(b"in", ("10.0.0.2", 5000))
    w.k.run(0.1)
    pkt, addr, ifname = d.recvfrom_if(65535)
    assert addr == ("192.0.2.1", 100) and ifname == w.wan.name
    d.sendto(pkt, addr)  # back in on the interface holding 192.0.2.1, then forwarded
    assert srv.recvfrom(10) == (b"in", ("192.0.2.7", 7000))
    assert w.r.divert.stats.inbound == 1


def test_reinjecting_garbage_is_refused():
    w = World()
    d = w.r.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
    d.bind(("", PORT))
    with pytest.raises(OSError) as err:
        d.sendto(b"\x45\x00\x00", ("0.0.0.0", 100))
    assert err.value.errno == errno.EINVAL
    with pytest.raises(OSError) as err:
        d.sendto(raw(IP(dst="192.0.2.7") / UDP()), ("198.51.100.9", 100))
    assert err.value.errno == errno.EADDRNOTAVAIL
    assert w.r.divert.stats.badreinject == 2


def test_tee_gets_a_copy():
    k = Kernel(clock="virtual", seed=1)
    v = k.create("v")
    d = v.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
    d.bind(("", PORT))
    pkt = raw(IP(src="10.0.0.2", dst="192.0.2.7") / UDP())
    assert v.divert.deliver(PORT, pkt, None, True, 300, tee=True)
    assert d.recvfrom(100) == (pkt, ("0.0.0.0", 300))
    assert v.divert.stats.tee == 1


def test_destroying_the_vnet_closes_divert_sockets():
    w = World()
    d = w.r.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
    d.bind(("", PORT))
    w.k.destroy("r")
    assert d.closed and w.r.divert.ports == {}


def load_natd():
    spec = importlib.util.spec_from_file_location("natd_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_natd_example_translates_through_a_divert_socket():
    """examples/natd.py in vnet r: s (with no route to 10/8) sees only 192.0.2.1 and
    answers; the inside host gets the answers. UDP and ping."""
    w = World()
    w.s.rt.delete(0x0A000000, 24)  # s cannot reach the inside: only NAT works
    natd = load_natd()
    translator = natd.Translator("192.0.2.1")
    seen = []

    async def main():
        with w.r.activate():
            sock = natd.open_divert(PORT)
        server = vimage.spawn(w.r, natd.serve(sock, translator))
        srv = w.s.socket(socket.AF_INET, socket.SOCK_DGRAM)
        srv.bind(("", 7000))
        srv.setblocking(False)
        cli = w.h.socket(socket.AF_INET, socket.SOCK_DGRAM)
        cli.bind(("", 5000))
        cli.setblocking(False)
        loop = asyncio.get_running_loop()
        cli.sendto(b"hello", ("192.0.2.7", 7000))
        data, peer = await asyncio.wait_for(loop.sock_recvfrom(srv, 100), 5)
        seen.append(peer)
        srv.sendto(data.upper(), peer)
        seen.append(await asyncio.wait_for(loop.sock_recvfrom(cli, 100), 5))
        server.cancel()
        sock.close()

    vimage.run(main(), kernel=w.k)
    assert seen == [("192.0.2.1", 40000), (b"HELLO", ("192.0.2.7", 7000))]
    assert translator.translated == 2
    result = w.h.cmd("ping -c 1 192.0.2.7")
    assert result.status != 0  # natd is gone: nothing is reinjected any more


def test_natd_translator_rewrites_echo_ids_and_checksums():
    from scapy.all import ICMP, TCP

    t = load_natd().Translator("192.0.2.1", first_port=41000)
    ping = IP(src="10.0.0.2", dst="192.0.2.7") / ICMP(type=8, id=7, seq=1) / b"data"
    out = IP(t.outgoing(raw(ping)))
    assert out.src == "192.0.2.1" and out[ICMP].id == 41000
    fresh = out.copy()
    fresh.chksum = fresh[ICMP].chksum = None
    assert raw(IP(raw(fresh))) == raw(out)
    reply = IP(src="192.0.2.7", dst="192.0.2.1") / ICMP(type=0, id=41000, seq=1) / b"data"
    back = IP(t.incoming(raw(reply)))
    assert back.dst == "10.0.0.2" and back[ICMP].id == 7
    syn = IP(src="10.0.0.2", dst="192.0.2.7") / TCP(sport=5000, dport=80, flags="S")
    out = IP(t.outgoing(raw(syn)))
    fresh = out.copy()
    fresh.chksum = fresh[TCP].chksum = None
    assert out[TCP].sport == 41001 and raw(IP(raw(fresh))) == raw(out)
    stranger = raw(IP(src="192.0.2.7", dst="192.0.2.1") / TCP(sport=80, dport=999))
    assert t.incoming(stranger) == stranger  # not ours: left to the host
