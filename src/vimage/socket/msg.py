"""Ancillary data of IPv4 datagram and raw sockets (recvmsg/sendmsg control messages).

A vnet socket answers both dialects a program may speak:
- FreeBSD's (ip_savecontrol in sys/netinet/ip_input.c, udp_output's control parsing):
  IP_RECVDSTADDR (the datagram's destination), IP_RECVTTL and IP_RECVTOS (one byte
  each), IP_RECVIF (the arrival interface's struct sockaddr_dl), IP_SENDSRCADDR on
  output, IP_ONESBCAST; with FreeBSD's option values, which Linux does not use;
- Linux's, with the values the stdlib exposes on Linux: IP_PKTINFO (struct
  in_pktinfo, both ways), IP_RECVTTL (answered as an IP_TTL int) and IP_RECVTOS
  (answered as an IP_TOS byte).
A socket may ask for several; the control messages come in FreeBSD's order, then Linux's.
"""

from __future__ import annotations

import errno
import socket as _std
import struct
from collections.abc import Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from vimage.wire.rtmsg import AF_LINK, SOCKADDR_DL, sockaddr_dl

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

IPPROTO_IP = _std.IPPROTO_IP
IP_TTL = _std.IP_TTL
IP_TOS = _std.IP_TOS

# FreeBSD's netinet/in.h values
IP_RECVDSTADDR = 7
IP_SENDSRCADDR = IP_RECVDSTADDR  # FreeBSD: the same number, one for each direction
IP_RECVIF = 20
IP_ONESBCAST = 23
IP_RECVTTL = 65
IP_RECVTOS = 68
SO_REUSEPORT_LB = 0x00010000
# Linux's (the stdlib's names on Linux; older Pythons lack some of them)
IP_PKTINFO = getattr(_std, "IP_PKTINFO", 8)
LINUX_IP_RECVTTL = 12
LINUX_IP_RECVTOS = getattr(_std, "IP_RECVTOS", 13)

# what a socket asked for: a bit per option (Socket.recvopts)
RECV_DSTADDR, RECV_TTL, RECV_IF, RECV_TOS = 1, 2, 4, 8
RECV_PKTINFO, RECV_LTTL, RECV_LTOS = 16, 32, 64
RECV_BITS = MappingProxyType({
    IP_RECVDSTADDR: RECV_DSTADDR, IP_RECVTTL: RECV_TTL, IP_RECVIF: RECV_IF,
    IP_RECVTOS: RECV_TOS, IP_PKTINFO: RECV_PKTINFO, LINUX_IP_RECVTTL: RECV_LTTL,
    LINUX_IP_RECVTOS: RECV_LTOS,
})

PKTINFO = struct.Struct("@i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
_INT = struct.Struct("@i")
Control = list[tuple[int, int, bytes]]


def recv_control(vnet: Vnet, wanted: int, info: tuple[int, int, int, int]) -> Control:
    """The control messages of a datagram received with `info` = (destination, arrival
    interface index, TTL, TOS), for the options in `wanted` (RECV_* bits)."""
    dst, index, ttl, tos = info
    out: Control = []
    if wanted & RECV_DSTADDR:
        out.append((IPPROTO_IP, IP_RECVDSTADDR, dst.to_bytes(4, "big")))
    if wanted & RECV_TTL:
        out.append((IPPROTO_IP, IP_RECVTTL, bytes((ttl,))))
    if wanted & RECV_IF:
        out.append((IPPROTO_IP, IP_RECVIF, _link_sockaddr(vnet, index)))
    if wanted & RECV_TOS:
        out.append((IPPROTO_IP, IP_RECVTOS, bytes((tos,))))
    if wanted & RECV_PKTINFO:
        spec = _spec_dst(vnet, dst, index)
        out.append((IPPROTO_IP, IP_PKTINFO,
                    PKTINFO.pack(index, spec.to_bytes(4, "big"), dst.to_bytes(4, "big"))))
    if wanted & RECV_LTTL:
        out.append((IPPROTO_IP, IP_TTL, _INT.pack(ttl)))
    if wanted & RECV_LTOS:
        out.append((IPPROTO_IP, IP_TOS, bytes((tos,))))
    return out


def _link_sockaddr(vnet: Vnet, index: int) -> bytes:
    """IP_RECVIF's struct sockaddr_dl: the interface's link address as if_attach made
    it, or ip_savecontrol's 'makedummy' (no interface: 8 bytes, index 0)."""
    ifp = _ifp(vnet, index)
    if ifp is None:
        return SOCKADDR_DL.pack(8, AF_LINK, 0, 0, 0, 0, 0)
    return sockaddr_dl(ifp.index, ifp.name, ifp.mac, 24 if ifp.is_loopback else 6)


def _ifp(vnet: Vnet, index: int) -> Ifnet | None:
    if not index:
        return None
    return next((i for i in vnet.ifaces.values() if i.index == index), None)


def _spec_dst(vnet: Vnet, dst: int, index: int) -> int:
    """in_pktinfo's ipi_spec_dst (Linux ip_cmsg_recv_pktinfo): the local address a reply
    would come from: the destination if it is ours, else the interface's address."""
    if dst in vnet.ip.local:
        return dst
    ifp = _ifp(vnet, index)
    if ifp is not None and ifp.addrs:
        return ifp.addrs[0].addr
    return 0


def control_size(items: Control) -> int:
    """The room `items` take in a control buffer (CMSG_SPACE each; the last CMSG_LEN)."""
    if not items:
        return 0
    return sum(_std.CMSG_SPACE(len(d)) for _, _, d in items[:-1]) + _std.CMSG_LEN(
        len(items[-1][2]))


def fit_control(items: Control, ancbufsize: int) -> tuple[Control, bool]:
    """The control messages that fit in `ancbufsize` bytes, and whether some did not
    (MSG_CTRUNC)."""
    kept: Control = []
    for item in items:
        if control_size([*kept, item]) > ancbufsize:
            return kept, True
        kept.append(item)
    return kept, False


def send_source(vnet: Vnet, ancdata: Iterable[Any]) -> int:
    """The source address sendmsg's control messages ask for (0: none): FreeBSD's
    IP_SENDSRCADDR (an in_addr, which must be one of ours: udp_output's in_pcbbind_setup)
    or Linux's IP_PKTINFO (ipi_spec_dst, else the address of ipi_ifindex)."""
    src = 0
    for item in ancdata:
        level, kind, data = item
        data = bytes(data)
        if level != IPPROTO_IP:
            raise OSError(errno.EINVAL, "Invalid argument")
        if kind == IP_SENDSRCADDR and len(data) >= 4:
            src = int.from_bytes(data[:4], "big")
        elif kind == IP_PKTINFO and len(data) >= PKTINFO.size:
            index, spec, _ = PKTINFO.unpack_from(data)
            src = int.from_bytes(spec, "big")
            if not src and index:
                src = _spec_dst(vnet, 0, index)
        else:
            raise OSError(errno.EINVAL, "Invalid argument")
    if src and src not in vnet.ip.local:
        raise OSError(errno.EADDRNOTAVAIL, "Can't assign requested address")
    return src
