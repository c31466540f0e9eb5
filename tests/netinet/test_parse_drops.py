"""What a transport's parser refuses is counted by reason, as udp_input, tcp_input and
icmp_input count their drops (FreeBSD udp_usrreq.c, tcp_input.c, ip_icmp.c)."""

from __future__ import annotations

import pytest

from vimage.kernel import Kernel
from vimage.netinet.tcp.input import tcp_input
from vimage.wire import icmp as wicmp
from vimage.wire import ipv4
from vimage.wire import tcp as wtcp
from vimage.wire import udp as wudp

SRC, DST = ipv4.aton("10.0.0.2"), ipv4.aton("10.0.0.1")


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0xFF])


UDP = wudp.build(1000, 2000, b"data", SRC, DST)
TCP = wtcp.build(1000, 2000, 1, 0, wtcp.SYN, 1024, b"data", src=SRC, dst=DST)
ICMP = wicmp.build_echo(wicmp.ECHO, 1, 1, b"data")

CASES = [
    ("udp", _flip_last(UDP), "badsum"),
    ("udp", UDP[:4] + b"\x00\xff" + UDP[6:], "badlen"),
    ("udp", UDP[:6], "hdrops"),
    ("tcp", _flip_last(TCP), "rcvbadsum"),
    ("tcp", TCP[:10], "rcvshort"),
    ("tcp", TCP[:12] + bytes([0x10 | TCP[12] & 0x0F]) + TCP[13:], "rcvbadoff"),
    ("icmp", _flip_last(ICMP), "checksum"),
    ("icmp", ICMP[:3], "tooshort"),
]


@pytest.mark.parametrize(("proto", "payload", "counter"), CASES,
                         ids=[f"{p}-{c}" for p, _, c in CASES])
def test_parse_drop_counted_by_reason(proto: str, payload: bytes, counter: str) -> None:
    vnet = Kernel(clock="virtual", seed=1).create("v")
    state = getattr(vnet, proto)
    before = {name: getattr(state.stats, name) for name in state.stats.names}
    pkt = bytes(20) + payload  # the protocols read past the IP header only
    if proto == "tcp":
        tcp_input(state, vnet.ifaces["lo0"], pkt, 20, SRC, DST)
    else:
        state.input(vnet.ifaces["lo0"], pkt, 20, SRC, DST)
    changed = {name: getattr(state.stats, name) - n for name, n in before.items()
               if getattr(state.stats, name) != n}
    assert changed.get(counter) == 1
    assert set(changed) <= {counter, "ipackets", "rcvtotal"}
