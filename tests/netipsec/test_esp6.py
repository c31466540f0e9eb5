"""ESP over IPv6: transport and tunnel mode between vnets with ping6, IPv4 carried in an
IPv6 tunnel, scapy decrypting our ESP, and neighbour discovery left in the clear."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import pytest

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.topo import connect

logging.getLogger("scapy").setLevel(logging.ERROR)

_spec = importlib.util.spec_from_file_location("ipsec_util",
                                               Path(__file__).with_name("ipsec_util.py"))
iu = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(iu)  # type: ignore[union-attr]
ok = iu.ok

A6, B6 = "2001:db8::1", "2001:db8::2"


def pair6(alg: str, mode: str, policy_ends: tuple[str, str] = (A6, B6)):
    kernel = Kernel(clock="virtual", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    ia, ib = connect(a, "192.0.2.1/24", b, "192.0.2.2/24")
    ok(a, f"ifconfig {ia.name} inet6 {A6}/64")
    ok(b, f"ifconfig {ib.name} inet6 {B6}/64")
    kernel.run(3)  # DAD
    alg_args = iu.alg_args(alg)
    for vnet, (here, there), (phere, pthere) in ((a, (A6, B6), policy_ends),
                                                 (b, (B6, A6), policy_ends[::-1])):
        tun_out = f"{here}-{there}" if mode == "tunnel" else ""
        tun_in = f"{there}-{here}" if mode == "tunnel" else ""
        ok(vnet, "setkey -c",
           f"add {A6} {B6} esp 0x1000 -m {mode} {alg_args};\n"
           f"add {B6} {A6} esp 0x1001 -m {mode} {alg_args};\n"
           f"spdadd {phere} {pthere} any -P out ipsec esp/{mode}/{tun_out}/require;\n"
           f"spdadd {pthere} {phere} any -P in ipsec esp/{mode}/{tun_in}/require;\n")
    return kernel, a, b, ia, ib


def ip6_packets(cap) -> list[bytes]:
    return [f[14:] for _, f in cap.packets if f[12:14] == b"\x86\xdd"]


@pytest.mark.parametrize(("alg", "mode"), [("gcm", "transport"), ("cbc", "transport"),
                                           ("gcm", "tunnel"), ("cbc", "tunnel")])
def test_ping6_through_esp(alg, mode):
    from scapy.layers.inet6 import ICMPv6EchoRequest, IPv6
    from scapy.layers.ipsec import ESP

    kernel, a, b, ia, _ = pair6(alg, mode)
    cap = open_capture(ia, keep=True)
    out = ok(a, f"ping6 -c 2 {B6}")
    cap.close()
    assert "2 packets transmitted, 2 packets received" in out
    pkts = ip6_packets(cap)
    esp = [p for p in pkts if p[6] == 50]
    assert len(esp) == 4
    # everything else on the wire is neighbour discovery, in the clear
    assert all(p[6] == 58 and 133 <= p[40] <= 137 for p in pkts if p[6] != 50)
    assert a.ipsec.stats.output == b.ipsec.stats.input == 2
    sa = iu.scapy_sa(alg, iu.SPI_AB, mode, A6, B6)
    outer = IPv6(esp[0])  # the first echo request
    assert outer[ESP].spi == iu.SPI_AB and outer[ESP].seq == 1
    inner = sa.decrypt(outer)
    assert inner.haslayer(ICMPv6EchoRequest) and inner[IPv6].dst == B6


def test_ipv4_in_an_ipv6_esp_tunnel():
    kernel, a, b, ia, _ = pair6("gcm", "tunnel", ("192.0.2.1", "192.0.2.2"))
    cap = open_capture(ia, keep=True)
    assert "2 packets received" in ok(a, "ping -c 2 192.0.2.2")
    cap.close()
    assert not [f for _, f in cap.packets if f[12:14] == b"\x08\x00"]  # no IPv4 on the wire
    assert len([p for p in ip6_packets(cap) if p[6] == 50]) == 4


def test_setkey_dumps_ipv6():
    kernel, a, b, _, _ = pair6("gcm", "tunnel")
    dump = ok(a, "setkey -DP").splitlines()
    assert dump[0] == f"{A6}[any] {B6}[any] any"
    assert dump[2] == f"\tesp/tunnel/{A6}-{B6}/require"
    assert ok(a, "setkey -D").splitlines()[0] == f"{A6} {B6}"
    r = a.cmd("setkey -c", stdin=f"spdadd {A6} 192.0.2.2 any -P out none;".encode())
    assert r.status == 1 and "different families" in r.output
