"""iperf3's constants, error codes and test parameters (the JSON of PARAM_EXCHANGE)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import random

DEFAULT_PORT = 5201
COOKIE_SIZE = 37
COOKIE_CHARS = "abcdefghijklmnopqrstuvwxyz234567"
DEFAULT_BLKSIZE = 128 * 1024
MAX_BLKSIZE = 1 << 20
MAX_STREAMS = 128
MAX_TIME = 86400
MAX_MSS = 9 * 1024
MAX_TCP_BUFFER = 512 << 20
DEFAULT_DURATION = 10
MAX_JSON = 1 << 20  # a longer JSON message is refused rather than buffered
VERSION = "3.12"
VERSION_STRING = f"iperf {VERSION} (vimage)"

# control states (iperf_api.h)
TEST_START = 1
TEST_RUNNING = 2
TEST_END = 4
PARAM_EXCHANGE = 9
CREATE_STREAMS = 10
SERVER_TERMINATE = 11
CLIENT_TERMINATE = 12
EXCHANGE_RESULTS = 13
DISPLAY_RESULTS = 14
IPERF_START = 15
IPERF_DONE = 16
ACCESS_DENIED = -1
SERVER_ERROR = -2

# iperf3 error codes (i_errno) that travel with SERVER_ERROR, and their texts
IEDURATION = 5
IENUMSTREAMS = 6
IEBLOCKSIZE = 7
IEBUFSIZE = 8
IEMSS = 10
IEUNIMP = 13
IERECVPARAMS = 114
IEACCESSDENIED = 121
IE_TEXT: Mapping[int, str] = MappingProxyType({
    IEDURATION: f"test duration too long (maximum = {MAX_TIME} seconds)",
    IENUMSTREAMS: f"number of parallel streams too large (maximum = {MAX_STREAMS})",
    IEBLOCKSIZE: f"block size too large (maximum = {MAX_BLKSIZE} bytes)",
    IEBUFSIZE: f"socket buffer size too large (maximum = {MAX_TCP_BUFFER} bytes)",
    IEMSS: f"TCP MSS too large (maximum = {MAX_MSS} bytes)",
    IEUNIMP: "an option you are trying to set is not implemented yet",
    102: "unable to start listener for connections",
    114: "unable to receive parameters from client",
    121: "the server is busy running a test. try again later",
    131: "protocol does not exist",
    134: "unable to set TCP_CONGESTION",
    142: "test authorization failed",
    27: "total required bandwidth is larger than server limit",
})

GRACE = 40.0  # seconds a server allows beyond the test's duration (iperf3: 4 s x 10 states)
RCV_IDLE = 120.0  # seconds without data after which a receiver gives up (iperf3's default)
DRAIN_IDLE = 5.0  # seconds without progress after which a server stops draining
CTRL_TIMEOUT = 30.0  # default bound on each control exchange and connection set-up


class IperfError(Exception):
    """A test failed; the message is iperf3's wording where iperf3 has one."""


class ParamError(IperfError):
    """Parameters a server cannot accept: `code` is the iperf3 error code it reports."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def make_cookie(rng: random.Random) -> bytes:
    """36 characters of iperf3's alphabet and a NUL: the test's identity."""
    return "".join(rng.choice(COOKIE_CHARS) for _ in range(COOKIE_SIZE - 1)).encode() + b"\0"


def server_error_text(code: int, err: int) -> str:
    text = IE_TEXT.get(code, f"int_errno={code}")
    return f"{text}: {os.strerror(err)}" if err else text


# -- parameters --------------------------------------------------------------------------------
@dataclass
class Settings:
    """What a test does. Without a `duration`, a test ends after `nbytes` or `blocks` if
    either is set, else after DEFAULT_DURATION seconds (0: only the client ends it)."""

    duration: int = None  # type: ignore[assignment]  # resolved by __post_init__
    nbytes: int = 0
    blocks: int = 0
    blksize: int = DEFAULT_BLKSIZE
    parallel: int = 1
    reverse: bool = False
    nodelay: bool = False
    window: int = 0
    mss: int = 0
    rate: int = 0  # bits per second per stream, 0: as fast as possible
    tos: int = 0

    def __post_init__(self) -> None:
        if self.duration is None:
            self.duration = 0 if (self.nbytes or self.blocks) else DEFAULT_DURATION

    def check(self) -> None:
        """ParamError (with iperf3's code and wording) for values iperf3 refuses."""
        if not 0 <= self.duration <= MAX_TIME:
            raise ParamError(IEDURATION, IE_TEXT[IEDURATION])
        if not 1 <= self.parallel <= MAX_STREAMS:
            raise ParamError(IENUMSTREAMS, IE_TEXT[IENUMSTREAMS])
        if not 1 <= self.blksize <= MAX_BLKSIZE:
            raise ParamError(IEBLOCKSIZE, IE_TEXT[IEBLOCKSIZE])
        if not 0 <= self.window <= MAX_TCP_BUFFER:
            raise ParamError(IEBUFSIZE, IE_TEXT[IEBUFSIZE])
        if not 0 <= self.mss <= MAX_MSS:
            raise ParamError(IEMSS, IE_TEXT[IEMSS])
        if self.nbytes < 0 or self.blocks < 0 or self.rate < 0 or not 0 <= self.tos <= 255:
            raise ParamError(IERECVPARAMS, "bad parameter values")

    def params(self) -> dict[str, Any]:
        """The JSON object a client sends (send_parameters, same keys and order)."""
        p: dict[str, Any] = {"tcp": True, "omit": 0, "time": self.duration, "num": self.nbytes,
                             "blockcount": self.blocks}
        if self.mss:
            p["MSS"] = self.mss
        if self.nodelay:
            p["nodelay"] = True
        p["parallel"] = self.parallel
        if self.reverse:
            p["reverse"] = True
        if self.window:
            p["window"] = self.window
        p["len"] = self.blksize
        if self.rate:
            p["bandwidth"] = self.rate
        if self.tos:
            p["TOS"] = self.tos
        p["pacing_timer"] = 1000
        p["client_version"] = VERSION
        return p

    @classmethod
    def from_params(cls, p: object) -> Settings:
        """What a server makes of a client's parameters; ParamError if it cannot run them."""
        if not isinstance(p, dict):
            raise ParamError(IERECVPARAMS, "parameters are not a JSON object")
        for key, what in (("udp", "UDP"), ("sctp", "SCTP")):
            if key in p:
                raise ParamError(IEUNIMP, f"{what} tests are not supported (TCP only)")
        if "bidirectional" in p:
            raise ParamError(IEUNIMP, "bidirectional tests (--bidir) are not supported")

        def num(key: str, default: int = 0) -> int:
            value = p.get(key, default)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParamError(IERECVPARAMS, f"parameter {key!r} is not a number")
            return int(value)

        if num("omit"):
            raise ParamError(IEUNIMP, "omitting the first seconds (--omit) is not supported")
        s = cls(duration=num("time"), nbytes=num("num"), blocks=num("blockcount"),
                blksize=num("len", DEFAULT_BLKSIZE), parallel=num("parallel", 1),
                reverse="reverse" in p, nodelay="nodelay" in p, window=num("window"),
                mss=num("MSS"), rate=num("bandwidth"), tos=num("TOS"))
        s.check()
        return s


