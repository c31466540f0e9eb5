"""Raw sockets with IP_HDRINCL as FreeBSD's rip_output: the caller's header goes out as
written, destination included, on connected and unconnected sockets."""

from __future__ import annotations

import errno
import socket

import pytest
from scapy.all import IP, raw

from vimage.kernel import Kernel
from vimage.socket.socket import IP_HDRINCL
from vimage.topo import router_chain
from vimage.wire.checksum import checksum

PROTO = 253


@pytest.fixture
def chain():
    k = Kernel(clock="virtual", seed=5)
    a, r, b = router_chain(k, 1)  # a 10.0.0.1 - r - b 10.0.1.2
    listeners = {}
    for v in (r, b):
        s = v.socket(socket.AF_INET, socket.SOCK_RAW, PROTO)
        s.setblocking(False)
        listeners[v.name] = s
    return k, a, r, b, listeners


def _hdrincl(a):
    s = a.socket(socket.AF_INET, socket.SOCK_RAW, PROTO)
    s.setsockopt(socket.IPPROTO_IP, IP_HDRINCL, 1)
    return s


def _pkt(dst: str, *, src: str = "10.0.0.1", ident: int = 4242, flags: int = 0,
         ttl: int = 33, body: bytes = b"payload!") -> bytes:
    return raw(IP(src=src, dst=dst, id=ident, flags=flags, ttl=ttl, proto=PROTO) / body)


def _recv(sock) -> bytes | None:
    try:
        return sock.recv(65535)
    except BlockingIOError:
        return None


def test_unconnected_goes_to_the_header_destination(chain):
    k, a, r, b, rx = chain
    s = _hdrincl(a)
    s.sendto(_pkt("10.0.1.2"), ("10.0.0.2", 0))  # sendto names r: the header wins
    k.run(0.1)
    got = _recv(rx[b.name])
    assert got is not None and got[20:] == b"payload!"
    assert got[4:6] == (4242).to_bytes(2, "big") and got[8] == 32  # ours, less r's hop
    assert _recv(rx[r.name]) is None
    assert a.ip.stats.rawout == 1


def test_connected_goes_to_the_header_destination(chain):
    k, a, r, b, rx = chain
    s = _hdrincl(a)
    s.connect(("10.0.0.2", 0))
    s.send(_pkt("10.0.1.2", body=b"via send"))
    k.run(0.1)
    assert (_recv(rx[b.name]) or b"")[20:] == b"via send"
    assert _recv(rx[r.name]) is None
    with pytest.raises(OSError) as exc:
        s.sendto(_pkt("10.0.1.2"), ("10.0.1.2", 0))
    assert exc.value.errno == errno.EISCONN


def test_kernel_fills_id_source_and_checksum_only(chain):
    k, a, r, b, rx = chain
    s = _hdrincl(a)
    pkt = bytearray(_pkt("10.0.1.2", src="0.0.0.0", ident=0, flags=2))  # DF set
    pkt[10:12] = b"\xde\xad"  # a wrong checksum: the kernel computes its own
    s.sendto(bytes(pkt), ("10.0.1.2", 0))
    k.run(0.1)
    got = _recv(rx[b.name])
    assert got is not None
    assert got[12:16] == socket.inet_aton("10.0.0.1")  # the outgoing interface's address
    assert got[4:6] != b"\0\0"  # ip_id 0 is filled in
    assert got[6:8] == b"\x40\x00"  # ip_off as given, in network order (DF)
    assert checksum(got[:20]) == 0


def test_bad_ip_len_is_einval(chain):
    _k, a, _r, _b, _rx = chain
    s = _hdrincl(a)
    pkt = bytearray(_pkt("10.0.1.2"))
    for bad in (len(pkt) + 1, len(pkt) - 1, 12):
        pkt[2:4] = bad.to_bytes(2, "big")
        with pytest.raises(OSError) as exc:
            s.sendto(bytes(pkt), ("10.0.1.2", 0))
        assert exc.value.errno == errno.EINVAL
    # host order (as FreeBSD before 11 wanted) is a wrong length too
    pkt[2:4] = len(pkt).to_bytes(2, "little")
    with pytest.raises(OSError) as exc:
        s.sendto(bytes(pkt), ("10.0.1.2", 0))
    assert exc.value.errno == errno.EINVAL


def test_df_from_the_header_is_honoured(chain):
    _k, a, _r, _b, _rx = chain
    s = _hdrincl(a)
    with pytest.raises(OSError) as exc:
        s.sendto(_pkt("10.0.1.2", flags=2, body=b"x" * 2000), ("10.0.1.2", 0))
    assert exc.value.errno == errno.EMSGSIZE
    s.sendto(_pkt("10.0.1.2", flags=0, body=b"x" * 2000), ("10.0.1.2", 0))
    assert a.ip.stats.fragmented == 1


# FreeBSD's tests/sys/netinet/raw.c `input`, its unicast rows (vimage's IPv4 raw sockets
# have no IP_ADD_MEMBERSHIP): receivers (laddr, faddr, proto) and, per packet sent
# through a connected IP_HDRINCL socket, which of them get a copy (rip_input).
_PROT1, _PROT2 = 253, 254
_RCVRS = (
    ("", "", 0), ("", "", _PROT1),
    ("127.0.0.1", "", 0), ("127.0.0.1", "", _PROT1),
    ("127.0.0.2", "", 0), ("127.0.0.2", "", _PROT1),
    ("127.0.0.1", "127.0.0.3", 0), ("127.0.0.1", "127.0.0.3", _PROT1),
    ("127.0.0.1", "127.0.0.4", 0), ("127.0.0.1", "127.0.0.4", _PROT1),
    ("127.0.0.2", "127.0.0.4", 0), ("127.0.0.2", "127.0.0.4", _PROT1),
)
_TESTS = (  # (src, dst, proto, expected): LOOP(0) is 127.0.0.1
    ("127.0.0.3", "127.0.0.1", _PROT1, "xxxxooxxoooo"),
    ("127.0.0.3", "127.0.0.1", _PROT2, "xoxoooxooooo"),
    ("127.0.0.4", "127.0.0.1", _PROT1, "xxxxooooxxoo"),
    ("127.0.0.4", "127.0.0.1", _PROT2, "xoxoooooxooo"),
    ("127.0.0.3", "127.0.0.2", _PROT1, "xxooxxoooooo"),
    ("127.0.0.3", "127.0.0.2", _PROT2, "xoooxooooooo"),
    ("127.0.0.4", "127.0.0.2", _PROT1, "xxooxxooooxx"),
    ("127.0.0.4", "127.0.0.2", _PROT2, "xoooxoooooxo"),
)


def test_freebsd_raw_c_input() -> None:
    k = Kernel(clock="virtual", seed=9)
    v = k.create("v")
    assert v.cmd("ifconfig lo0 127.0.0.2/32 alias").status == 0
    rcvrs = []
    for laddr, faddr, proto in _RCVRS:
        r = v.socket(socket.AF_INET, socket.SOCK_RAW, proto)
        r.setblocking(False)
        if laddr:
            r.bind((laddr, 0))
        if faddr:
            r.connect((faddr, 0))
        rcvrs.append(r)
    s = v.socket(socket.AF_INET, socket.SOCK_RAW, 0)
    s.setsockopt(socket.IPPROTO_IP, IP_HDRINCL, 1)
    s.connect(("127.0.0.100", 0))  # send() needs it; the header's destination is used
    for n, (src, dst, proto, expected) in enumerate(_TESTS):
        payload = bytes((n + i) & 0xFF for i in range(100))
        pkt = raw(IP(src=src, dst=dst, proto=proto, ttl=16, id=0) / payload)
        pkt = pkt[:10] + b"\0\0" + pkt[12:]  # the kernel computes the checksum
        assert s.send(pkt) == len(pkt)
        k.run(0.01)
        got = "".join("x" if (_recv(r) or b"")[20:] == payload else "o" for r in rcvrs)
        assert got == expected, (n, src, dst, proto)
        assert all(_recv(r) is None for r in rcvrs)  # one copy each at most
