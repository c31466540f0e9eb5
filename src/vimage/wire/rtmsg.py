"""Routing socket messages (FreeBSD net/route.h, net/if.h) as laid out on amd64.

A routing message is a fixed header followed by the sockaddrs its `addrs` bitmask
names, in RTAX order, each padded to a multiple of sizeof(long) (FreeBSD's SA_SIZE:
a zero-length sockaddr still takes one long). The headers:

    struct rt_msghdr          152 bytes (with its struct rt_metrics of 14 u_longs)
    struct if_msghdr          168 bytes (with its struct if_data, 152 bytes)
    struct ifa_msghdr          20 bytes
    struct if_announcemsghdr   24 bytes

Every message starts with msglen (u_short), version (u_char, RTM_VERSION 5) and type
(u_char). Only formats here: no state, no I/O.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from vimage.wire._common import Buffer, WireError

AF_UNSPEC = 0
AF_INET = 2
AF_LINK = 18
AF_INET6 = 28  # FreeBSD's value (Linux's is 10): what goes in a sockaddr on the wire
AF_ROUTE = 17
RTM_VERSION = 5
LONG = 8  # sizeof(long) on amd64: sockaddrs are padded to it

# message types (net/route.h)
RTM_ADD = 0x1
RTM_DELETE = 0x2
RTM_CHANGE = 0x3
RTM_GET = 0x4
RTM_LOSING = 0x5
RTM_REDIRECT = 0x6
RTM_MISS = 0x7
RTM_LOCK = 0x8
RTM_RESOLVE = 0xB
RTM_NEWADDR = 0xC
RTM_DELADDR = 0xD
RTM_IFINFO = 0xE
RTM_NEWMADDR = 0xF
RTM_DELMADDR = 0x10
RTM_IFANNOUNCE = 0x11
RTM_IEEE80211 = 0x12

# sockaddr slots: RTA_x = 1 << RTAX_x
RTA_DST = 0x1
RTA_GATEWAY = 0x2
RTA_NETMASK = 0x4
RTA_GENMASK = 0x8
RTA_IFP = 0x10
RTA_IFA = 0x20
RTA_AUTHOR = 0x40
RTA_BRD = 0x80
RTAX_MAX = 8

# metrics in rtm_inits / rmx_locks
RTV_MTU = 0x1
RTV_HOPCOUNT = 0x2
RTV_EXPIRE = 0x4
RTV_RPIPE = 0x8
RTV_SPIPE = 0x10
RTV_SSTHRESH = 0x20
RTV_RTT = 0x40
RTV_RTTVAR = 0x80
RTV_WEIGHT = 0x100

IFAN_ARRIVAL = 0
IFAN_DEPARTURE = 1
IFNAMSIZ = 16
LINK_STATE_UNKNOWN = 0
LINK_STATE_DOWN = 1
LINK_STATE_UP = 2

# struct rt_metrics: locks, mtu, hopcount, expire, recvpipe, sendpipe, ssthresh, rtt,
# rttvar, pksent, weight, nhidx, filler[2] -- all u_long
RT_METRICS = struct.Struct("=14Q")
# struct rt_msghdr: msglen, version, type, index, _spare1, flags, addrs, pid, seq, errno,
# fmask, inits (u_long), then the metrics
RT_MSGHDR = struct.Struct("=HBBHHiiiiiiQ14Q")
# struct if_msghdr: msglen, version, type, addrs, flags, index, _spare1, then struct if_data:
# type, physical, addrlen, hdrlen, link_state, vhid, datalen (u16), mtu, metric (u32),
# baudrate, ipackets, ierrors, opackets, oerrors, collisions, ibytes, obytes, imcasts,
# omcasts, iqdrops, oqdrops, noproto, hwassist, epoch (u64), lastchange (timeval: 2 x 64)
IF_DATA = struct.Struct("=6BHII17Q")
IF_MSGHDR = struct.Struct("=HBBiiHH6BHII17Q")
# struct ifa_msghdr: msglen, version, type, addrs, flags, index, _spare1, metric
IFA_MSGHDR = struct.Struct("=HBBiiHHi")
# struct if_announcemsghdr: msglen, version, type, index, name[IFNAMSIZ], what
IF_ANNOUNCEMSGHDR = struct.Struct("=HBBH16sH")
COMMON = struct.Struct("=HBB")

SOCKADDR_IN = struct.Struct("=BBH4s8x")  # len 16, family, port (net order), addr, zero
SOCKADDR_IN6 = struct.Struct("=BBHI16sI")  # len 28, family, port, flowinfo, addr, scope
SOCKADDR_DL = struct.Struct("=BBHBBBB")  # len, family, index, type, nlen, alen, slen
SOCKADDR_DL_SIZE = 54  # sizeof(struct sockaddr_dl): its sdl_data is 46 bytes
SOCKADDR_DL_SHORT = 16  # sizeof(struct sockaddr_dl_short): sdl_data[8]

METRIC_NAMES = ("locks", "mtu", "hopcount", "expire", "recvpipe", "sendpipe", "ssthresh",
                "rtt", "rttvar", "pksent", "weight", "nhidx")


def sa_size(sa_len: int) -> int:
    """FreeBSD's SA_SIZE: the room a sockaddr of `sa_len` bytes takes in a message."""
    return LONG if sa_len == 0 else (sa_len + LONG - 1) & ~(LONG - 1)


# -- sockaddrs -----------------------------------------------------------------------------
class Sockaddr(NamedTuple):
    """A decoded sockaddr: `family`, the address (an int for AF_INET/AF_INET6, the
    interface name for AF_LINK), an interface index (AF_LINK; for AF_INET6 the
    sin6_scope_id) and the raw bytes."""

    family: int
    addr: int | str
    index: int = 0
    raw: bytes = b""


def sockaddr_in(addr: int) -> bytes:
    return SOCKADDR_IN.pack(16, AF_INET, 0, addr.to_bytes(4, "big"))


def sockaddr_in6(addr: int, scope: int = 0) -> bytes:
    return SOCKADDR_IN6.pack(28, AF_INET6, 0, 0, addr.to_bytes(16, "big"), scope)


def sockaddr_dl(index: int, name: str = "", mac: bytes | None = None,
                iftype: int = 6) -> bytes:
    """A struct sockaddr_dl (net/if_dl.h). Named, it is an interface's link address as
    FreeBSD's if_attach sizes it: the name and address rounded up to a long, at least
    sizeof(struct sockaddr_dl) (54). Bare (a route's `link#N` gateway), it is a struct
    sockaddr_dl_short (16 bytes), as FreeBSD 13's nexthops keep it."""
    nm = name.encode()
    lladdr = mac or b""
    data = nm + lladdr
    if not data:
        length = SOCKADDR_DL_SHORT
    else:
        length = max(SOCKADDR_DL_SIZE, (8 + len(data) + LONG - 1) & ~(LONG - 1))
    return (SOCKADDR_DL.pack(length, AF_LINK, index, iftype, len(nm), len(lladdr), 0)
            + data.ljust(length - 8, b"\0"))


def pack_addrs(addrs: dict[int, bytes]) -> tuple[int, bytes]:
    """The `addrs` bitmask and the padded sockaddrs for slots {RTA_x: sockaddr bytes}."""
    mask = 0
    out = bytearray()
    for bit in sorted(addrs):
        sa = addrs[bit]
        mask |= bit
        out += sa.ljust(sa_size(len(sa)), b"\0")
    return mask, bytes(out)


def parse_sockaddr(buf: Buffer) -> Sockaddr:
    """Decode one sockaddr (its own sa_len says how long it is)."""
    view = bytes(buf)
    if len(view) < 2:
        raise WireError("badsa", "truncated sockaddr")
    sa_len, family = view[0], view[1]
    raw = view[:sa_len]
    if family == AF_INET:
        # a netmask may come shortened (sa_len < 16): the missing bytes are zero
        if sa_len < 2 or sa_len > 16:
            raise WireError("badsa", f"sockaddr_in of length {sa_len}")
        addr = bytes(raw[4:8]).ljust(4, b"\0") if sa_len > 4 else b"\0" * 4
        return Sockaddr(AF_INET, int.from_bytes(addr, "big"), 0, raw)
    if family == AF_INET6:
        if sa_len < 8 or sa_len > 28:
            raise WireError("badsa", f"sockaddr_in6 of length {sa_len}")
        addr = bytes(raw[8:24]).ljust(16, b"\0")
        scope = int.from_bytes(raw[24:28], "little") if sa_len == 28 else 0
        return Sockaddr(AF_INET6, int.from_bytes(addr, "big"), scope, raw)
    if family == AF_LINK:
        if sa_len < 8:
            raise WireError("badsa", f"sockaddr_dl of length {sa_len}")
        _, _, index, _, nlen, _, _ = SOCKADDR_DL.unpack_from(raw)
        name = bytes(raw[8:8 + nlen]).decode(errors="replace")
        return Sockaddr(AF_LINK, name, index, raw)
    if family == AF_UNSPEC:
        return Sockaddr(AF_UNSPEC, 0, 0, raw)
    raise WireError("badsa", f"unsupported address family {family}")


def parse_addrs(buf: Buffer, mask: int) -> dict[int, Sockaddr]:
    """The sockaddrs after a header, by RTA_x bit; WireError if one overruns the buffer."""
    data = bytes(buf)
    out: dict[int, Sockaddr] = {}
    off = 0
    for i in range(RTAX_MAX):
        bit = 1 << i
        if not mask & bit:
            continue
        if off + 2 > len(data):
            raise WireError("badsa", "sockaddr past the end of the message")
        sa_len = data[off]
        size = sa_size(sa_len)
        if off + sa_len > len(data) or (sa_len and sa_len < 2):
            raise WireError("badsa", "sockaddr past the end of the message")
        out[bit] = parse_sockaddr(data[off:off + max(sa_len, 2)]) if sa_len else Sockaddr(
            AF_UNSPEC, 0)
        off += size
    return out


# -- headers ---------------------------------------------------------------------------------
class RtMsg(NamedTuple):
    """A struct rt_msghdr (its metrics as a tuple of 14 in `rmx`) and its sockaddrs."""

    type: int
    flags: int = 0
    addrs: dict[int, bytes] | None = None
    index: int = 0
    pid: int = 0
    seq: int = 0
    errno: int = 0
    fmask: int = 0
    inits: int = 0
    rmx: tuple[int, ...] = (0,) * 14
    version: int = RTM_VERSION

    def pack(self) -> bytes:
        mask, body = pack_addrs(self.addrs or {})
        length = RT_MSGHDR.size + len(body)
        return RT_MSGHDR.pack(length, self.version, self.type, self.index, 0, self.flags, mask,
                              self.pid, self.seq, self.errno, self.fmask, self.inits,
                              *self.rmx) + body

    def metric(self, name: str) -> int:
        return self.rmx[METRIC_NAMES.index(name)]


class ParsedRtMsg(NamedTuple):
    length: int
    version: int
    type: int
    index: int
    flags: int
    addrs_mask: int
    pid: int
    seq: int
    errno: int
    fmask: int
    inits: int
    rmx: tuple[int, ...]
    addrs: dict[int, Sockaddr]

    def metric(self, name: str) -> int:
        return self.rmx[METRIC_NAMES.index(name)]


def parse_rtmsg(buf: Buffer) -> ParsedRtMsg:
    """Decode an rt_msghdr message; WireError("badlen"/"badvers"/"badsa") on bad input."""
    data = bytes(buf)
    if len(data) < RT_MSGHDR.size:
        raise WireError("badlen", f"{len(data)} bytes is shorter than an rt_msghdr")
    fields = RT_MSGHDR.unpack_from(data)
    length, version, mtype, index, _spare, flags, mask, pid, seq, err, fmask, inits = \
        fields[:12]
    if length != len(data):
        raise WireError("badlen", f"rtm_msglen {length} but {len(data)} bytes")
    if version != RTM_VERSION:
        raise WireError("badvers", f"version {version}")
    addrs = parse_addrs(data[RT_MSGHDR.size:], mask)
    return ParsedRtMsg(length, version, mtype, index, flags, mask, pid, seq, err, fmask,
                       inits, tuple(fields[12:]), addrs)


def if_msg(mtype: int, index: int, flags: int, link_state: int, mtu: int,
           counters: tuple[int, ...] = (0,) * 12, addrs: dict[int, bytes] | None = None,
           iftype: int = 6, addrlen: int = 6) -> bytes:
    """An if_msghdr (RTM_IFINFO); `counters` are if_data's twelve packet/byte counters."""
    mask, body = pack_addrs(addrs or {})
    length = IF_MSGHDR.size + len(body)
    return IF_MSGHDR.pack(length, RTM_VERSION, mtype, mask, flags, index, 0,
                          iftype, 0, addrlen, 14 if addrlen else 0, link_state, 0,
                          IF_DATA.size, mtu, 0, 0, *counters, 0, 0, 0, 0) + body


def ifa_msg(mtype: int, index: int, flags: int, addrs: dict[int, bytes],
            metric: int = 0) -> bytes:
    """An ifa_msghdr (RTM_NEWADDR / RTM_DELADDR)."""
    mask, body = pack_addrs(addrs)
    length = IFA_MSGHDR.size + len(body)
    return IFA_MSGHDR.pack(length, RTM_VERSION, mtype, mask, flags, index, 0, metric) + body


def ifannounce_msg(index: int, name: str, what: int) -> bytes:
    return IF_ANNOUNCEMSGHDR.pack(IF_ANNOUNCEMSGHDR.size, RTM_VERSION, RTM_IFANNOUNCE, index,
                                  name.encode()[:IFNAMSIZ - 1], what)


def msg_type(buf: Buffer) -> tuple[int, int, int]:
    """(msglen, version, type) of any routing message."""
    if len(buf) < COMMON.size:
        raise WireError("badlen", "shorter than a message header")
    return COMMON.unpack_from(buf)  # type: ignore[return-value]
