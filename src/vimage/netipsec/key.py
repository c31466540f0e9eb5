"""The security association and policy databases' entries (FreeBSD netipsec/key.c,
keydb.h): an SA (`secasvar`), a policy (`secpolicy`) and its requests
(`ipsecrequest`), and the anti-replay window (RFC 4303 3.4.3, appendix A2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from socket import AF_INET

from vimage.netipsec.xform import Transform

MODE_ANY = "any"
MODE_TRANSPORT = "transport"
MODE_TUNNEL = "tunnel"

LEVEL_DEFAULT = "default"
LEVEL_USE = "use"
LEVEL_REQUIRE = "require"
LEVEL_UNIQUE = "unique"

DEFAULT_REPLAY = 64
"""The window when setkey gives no `-r` (FreeBSD's setkey leaves replay off; vimage checks
by default, with the 64-packet window RFC 4303 3.4.3 recommends; `-r 0` turns it off)."""


class Replay:
    """The receiver's sliding window: the highest sequence number seen and a bitmap of the
    `size` numbers up to it (bit i: `last - i` arrived)."""

    __slots__ = ("bitmap", "last", "mask", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self.mask = (1 << size) - 1
        self.last = 0
        self.bitmap = 0

    def check(self, seq: int) -> bool:
        """Whether `seq` may be new (before the ICV is checked: cheap and keyless)."""
        if seq == 0:
            return False
        if seq > self.last:
            return True
        diff = self.last - seq
        return diff < self.size and not (self.bitmap >> diff) & 1

    def update(self, seq: int) -> None:
        """Mark `seq` received, after the ICV verified (RFC 4303 3.4.3)."""
        if seq > self.last:
            self.bitmap = ((self.bitmap << (seq - self.last)) | 1) & self.mask
            self.last = seq
        else:
            self.bitmap |= 1 << (self.last - seq)


@dataclass(eq=False)
class SecAssoc:
    """One ESP SA: endpoints, SPI, mode, reqid, transform, counters and keys as typed."""

    src: int
    dst: int
    spi: int
    mode: str
    reqid: int
    xform: Transform
    enc_key: bytes
    auth_key: bytes
    replay_size: int
    created_ns: int
    seq: int = 0  # the last sequence number sent
    replay: Replay | None = None
    bytes: int = 0  # current byte lifetime (both ways, as key.c counts)
    allocations: int = 0
    last_ns: int = 0
    serial: int = 0  # sadb_seq
    family: int = AF_INET  # of the endpoints (AF_INET6: 128-bit addresses)

    def __post_init__(self) -> None:
        if self.replay_size and self.replay is None:
            self.replay = Replay(self.replay_size)


@dataclass(frozen=True)
class Request:
    """`esp/MODE/SRC-DST/LEVEL[:REQID]`: what a policy asks for one transform."""

    proto: str
    mode: str
    src: int | None  # tunnel endpoints; None in transport mode
    dst: int | None
    level: str
    reqid: int = 0
    family: int = AF_INET  # of the tunnel endpoints

    def text(self, ntoa: Callable[[int], str]) -> str:
        ends = "" if self.src is None else f"{ntoa(self.src)}-{ntoa(self.dst)}"
        level = self.level
        if self.level == LEVEL_UNIQUE and self.reqid:
            level += f":{self.reqid}"
        return f"{self.proto}/{self.mode}/{ends}/{level}"


@dataclass(eq=False)
class SecPolicy:
    """One SPD entry (`spdadd SRC DST UPPER -P DIR ACTION [REQUESTS]`)."""

    src: int
    src_plen: int
    sport: int | None
    dst: int
    dst_plen: int
    dport: int | None
    upper: int | None  # IP protocol, None for any
    direction: str  # in, out
    action: str  # ipsec, discard, none
    requests: tuple[Request, ...] = ()
    spid: int = 0
    created_ns: int = 0
    lastused_ns: int = 0
    family: int = AF_INET  # of the selector's addresses
    selector_key: tuple = field(default=(), repr=False)

    def __post_init__(self) -> None:
        self.selector_key = (self.src, self.src_plen, self.sport, self.dst, self.dst_plen,
                             self.dport, self.upper, self.direction, self.family)

    def matches(self, src: int, dst: int, proto: int, sport: int, dport: int) -> bool:
        """Whether a packet of this policy's family matches the selector."""
        if self.upper is not None and self.upper != proto:
            return False
        width = 32 if self.family == AF_INET else 128
        if (src ^ self.src) >> (width - self.src_plen) if self.src_plen else False:
            return False
        if (dst ^ self.dst) >> (width - self.dst_plen) if self.dst_plen else False:
            return False
        if self.sport is not None and self.sport != sport:
            return False
        return self.dport is None or self.dport == dport
