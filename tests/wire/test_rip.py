"""RIP formats cross-checked with scapy's RIP, RIPEntry and RIPAuth."""

from __future__ import annotations

import hashlib

import pytest
from scapy.layers.rip import RIP, RIPAuth, RIPEntry

from vimage.wire import WireError, ipv4, rip


def test_response_matches_scapy():
    entries = [rip.RipEntry(ipv4.aton("10.1.0.0"), ipv4.aton("255.255.0.0"), 3, 0, 7),
               rip.RipEntry(ipv4.aton("192.168.5.0"), ipv4.aton("255.255.255.0"), 16)]
    ours = rip.build(rip.RESPONSE, 2, entries)
    theirs = (RIP(cmd=2, version=2)
              / RIPEntry(AF=2, RouteTag=7, addr="10.1.0.0", mask="255.255.0.0", metric=3)
              / RIPEntry(addr="192.168.5.0", mask="255.255.255.0", metric=16))
    assert ours == bytes(theirs)
    back = rip.parse(bytes(theirs))
    assert back.command == rip.RESPONSE and back.version == 2 and back.auth is None
    assert back.entries == tuple(entries)


def test_simple_password_matches_scapy():
    ours = rip.build(rip.RESPONSE, 2, [rip.RipEntry(ipv4.aton("10.0.0.0"), 0xFF000000, 1)],
                     rip.RipAuth(rip.AUTH_SIMPLE, rip.password_bytes("secret")))
    theirs = (RIP(cmd=2, version=2) / RIPAuth(authtype=2, password=b"secret".ljust(16, b"\0"))
              / RIPEntry(addr="10.0.0.0", mask="255.0.0.0", metric=1))
    assert ours == bytes(theirs)
    assert rip.parse(ours).auth == rip.RipAuth(rip.AUTH_SIMPLE, b"secret".ljust(16, b"\0"))


def test_md5_matches_scapy_and_rfc2082_digest():
    key = b"k3y"
    entry = rip.RipEntry(ipv4.aton("10.9.0.0"), 0xFFFF0000, 2)
    ours = rip.build(rip.RESPONSE, 2, [entry], rip.RipAuth(rip.AUTH_MD5, keyid=5, seq=42), key)
    body = (RIP(cmd=2, version=2)
            / RIPAuth(authtype=3, digestoffset=44, keyid=5, authdatalen=20, seqnum=42,
                      zeropad=b"\0" * 8)
            / RIPEntry(addr="10.9.0.0", mask="255.255.0.0", metric=2))
    signed = bytes(body) + b"\xff\xff\x00\x01"
    digest = hashlib.md5(signed + key.ljust(16, b"\0")).digest()
    assert ours == signed + digest
    dissected = RIP(ours)
    assert dissected[RIPEntry].addr == "10.9.0.0"
    trailer = dissected.getlayer(RIPAuth, 2)
    assert trailer.authtype == 1 and trailer.authdata == digest
    pkt = rip.parse(ours)
    assert pkt.entries == (entry,) and pkt.auth.keyid == 5 and pkt.auth.seq == 42
    assert rip.md5_valid(ours, pkt.auth, key)
    assert not rip.md5_valid(ours, pkt.auth, b"other")
    tampered = ours[:30] + bytes([ours[30] ^ 1]) + ours[31:]
    assert not rip.md5_valid(tampered, rip.parse(tampered).auth, key)


def test_request_whole_table():
    ours = rip.build(rip.REQUEST, 2, [rip.RipEntry(0, 0, 16, afi=rip.AF_UNSPEC)])
    assert ours == bytes(RIP(cmd=1, version=2) / RIPEntry(AF=0, metric=16))


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x02\x02\x00", "tooshort"),
    (b"\x02\x00\x00\x00", "badvers"),
    (b"\x09\x02\x00\x00", "badcmd"),
    (b"\x02\x02\x00\x00" + b"\x00" * 19, "badlen"),
    (b"\x02\x02\x00\x00\xff\xff\x00\x07" + b"\x00" * 16, "badauth"),
    (b"\x02\x02\x00\x00\xff\xff\x00\x03" + b"\x00" * 16, "badauth"),
])
def test_malformed(data: bytes, reason: str):
    with pytest.raises(WireError) as info:
        rip.parse(data)
    assert info.value.reason == reason
