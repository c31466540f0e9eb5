"""natd: address translation in userland through a divert socket, as FreeBSD's natd(8).

The firewall diverts what crosses the outside interface to this program
(`ipfw add divert natd ip from any to any via em0`, natd being port 8668; in vimage
the same rule, or `vimage.testing.divert_via(vnet, 8668, "em0")`). What it reads with
sin_addr 0.0.0.0 was on its way out: the source becomes the alias address and a port of
its own. What arrives with the interface's address came in: a packet to a port it
handed out goes back to the inside host. Every datagram is written back to the socket
with the address it came with, which reinjects it where it was taken.

TCP, UDP and ICMP echo (by identifier) are translated; the checksums are recomputed
whole. Only the standard library is used, so the program is the same on FreeBSD:

    python natd.py -a 192.0.2.1 [-p 8668]
    vimage exec r -- python natd.py -a 192.0.2.1        # inside vnet r

`Translator` is the translation alone (no I/O), `serve` the loop over the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import sys

IPPROTO_DIVERT = 258  # FreeBSD netinet/in.h
TCP, UDP, ICMP = 6, 17, 1
ICMP_ECHO, ICMP_ECHOREPLY = 8, 0


def cksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


class Translator:
    """One alias address; flows by (proto, inside addr, inside port/id, remote addr, port)."""

    def __init__(self, alias: str, first_port: int = 40000) -> None:
        self.alias = socket.inet_aton(alias)
        self.next_port = first_port
        self.out: dict[tuple[int, bytes, int, bytes, int], int] = {}
        self.back: dict[tuple[int, int, bytes, int], tuple[bytes, int]] = {}
        self.translated = 0

    def outgoing(self, pkt: bytes) -> bytes:
        proto, hlen = pkt[9], (pkt[0] & 0x0F) * 4
        src, dst = pkt[12:16], pkt[16:20]
        key = self._flow(pkt, hlen, proto, out=True)
        if key is None:
            return pkt
        lport, rport = key
        flow = (proto, src, lport, dst, rport)
        aport = self.out.get(flow)
        if aport is None:
            aport = self.out[flow] = self.next_port
            self.back[(proto, aport, dst, rport)] = (src, lport)
            self.next_port += 1
        self.translated += 1
        return self._rewrite(pkt, hlen, proto, 12, self.alias, aport, out=True)

    def incoming(self, pkt: bytes) -> bytes:
        proto, hlen = pkt[9], (pkt[0] & 0x0F) * 4
        if pkt[16:20] != self.alias:
            return pkt
        key = self._flow(pkt, hlen, proto, out=False)
        if key is None:
            return pkt
        aport, rport = key
        inside = self.back.get((proto, aport, pkt[12:16], rport))
        if inside is None:
            return pkt  # nobody inside asked for it: leave it to this host
        self.translated += 1
        return self._rewrite(pkt, hlen, proto, 16, inside[0], inside[1], out=False)

    @staticmethod
    def _flow(pkt: bytes, hlen: int, proto: int, out: bool) -> tuple[int, int] | None:
        """(our side's port or echo id, the remote's port) of a packet we translate."""
        if proto in (TCP, UDP) and len(pkt) >= hlen + 4:
            sport, dport = struct.unpack_from("!HH", pkt, hlen)
            return (sport, dport) if out else (dport, sport)
        if proto == ICMP and len(pkt) >= hlen + 8 and \
                pkt[hlen] == (ICMP_ECHO if out else ICMP_ECHOREPLY):
            return struct.unpack_from("!H", pkt, hlen + 4)[0], 0
        return None

    @staticmethod
    def _rewrite(pkt: bytes, hlen: int, proto: int, addr_at: int, addr: bytes, port: int,
                 out: bool) -> bytes:
        p = bytearray(pkt)
        p[addr_at:addr_at + 4] = addr
        p[10:12] = b"\0\0"
        p[10:12] = struct.pack("!H", cksum(bytes(p[:hlen])))
        body = hlen
        if proto == ICMP:
            struct.pack_into("!H", p, body + 4, port)
            p[body + 2:body + 4] = b"\0\0"
            p[body + 2:body + 4] = struct.pack("!H", cksum(bytes(p[body:])))
            return bytes(p)
        struct.pack_into("!H", p, body + (0 if out else 2), port)
        at = body + (16 if proto == TCP else 6)
        if proto == UDP and p[at:at + 2] == b"\0\0":
            return bytes(p)  # sent without a checksum
        p[at:at + 2] = b"\0\0"
        pseudo = p[12:20] + struct.pack("!BBH", 0, proto, len(p) - body)
        value = cksum(bytes(pseudo) + bytes(p[body:]))
        p[at:at + 2] = struct.pack("!H", value or (0xFFFF if proto == UDP else 0))
        return bytes(p)


async def serve(sock: socket.socket, translator: Translator) -> None:
    """Read diverted datagrams, translate, write them back where they came from."""
    loop = asyncio.get_running_loop()
    while True:
        pkt, (addr, rule) = await loop.sock_recvfrom(sock, 65535)
        if addr == "0.0.0.0":
            pkt = translator.outgoing(pkt)
        else:
            pkt = translator.incoming(pkt)
        sock.sendto(pkt, (addr, rule))


def open_divert(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_DIVERT)
    sock.bind(("0.0.0.0", port))
    sock.setblocking(False)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-a", "--alias-address", required=True)
    parser.add_argument("-p", "--port", type=int, default=8668)
    args = parser.parse_args(argv)
    with open_divert(args.port) as sock:
        asyncio.run(serve(sock, Translator(args.alias_address)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
