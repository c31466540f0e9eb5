"""setkey(8): the vnet's security association and policy databases (FreeBSD
sbin/setkey, its grammar in parse.y and token.l, its output in libipsec's pfkey_dump.c).

    setkey -c                 commands from standard input (`vnet.cmd(..., stdin=...)`;
                              through vimage, the client's)
    setkey -f FILE            commands from FILE (`-f -`: standard input)
    setkey -e SCRIPT          commands from the argument (FreeBSD setkey -e; what a
                              topology file's start-up commands use, having no stdin)
    setkey -D [-P]            dump the SAD (with -P the SPD)
    setkey -F [-P]            flush the SAD (with -P the SPD)

Commands, each ended by `;` (a command may span lines; `#` starts a comment):

    add [-4n] SRC DST esp SPI [-m MODE] [-u REQID] [-r WINDOW] -E EALGO KEY [-A AALGO KEY];
    get | delete SRC DST esp SPI;   deleteall SRC DST esp;   flush [esp];   dump [esp];
    spdadd [-4n] SRC[/PLEN][[PORT]] DST[/PLEN][[PORT]] UPPER -P DIR POLICY;
    spddelete [-4n] SRC_RANGE DST_RANGE UPPER -P DIR;   spdflush;   spddump;

EALGO aes-gcm-16 (a 160/224/288-bit key including the 32-bit salt, RFC 4106), aes-cbc
(with -A hmac-sha2-256, RFC 4868) or null (with -A); keys 0xHEX or "text". MODE any,
transport or tunnel. POLICY: `discard`, `none` or `ipsec` and one or more
`esp/MODE/[A-B]/LEVEL` with LEVEL default, use, require or unique[:ID]. Addresses are
IPv4 or IPv6 (the two ends of a command of one family).

Everything is parsed before anything is applied: a syntax error is reported with its
line number and changes nothing; a command that fails (an SA that exists, a policy that
does not) undoes the commands before it in the same input, so an input applies whole or
not at all (FreeBSD's setkey applies the commands up to the failing one).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from socket import AF_INET, AF_INET6
from types import MappingProxyType

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import getopts
from vimage.netipsec import xform
from vimage.netipsec.ipsec import IpsecState
from vimage.netipsec.key import (
    DEFAULT_REPLAY,
    LEVEL_DEFAULT,
    MODE_ANY,
    MODE_TRANSPORT,
    MODE_TUNNEL,
    Request,
    SecAssoc,
    SecPolicy,
)
from vimage.wire import WireError, ipv4, ipv6

USAGE = """\
usage: setkey [-v] -c
       setkey [-v] -f filename
       setkey [-v] -e script
       setkey [-Pv] -D
       setkey [-Pv] -F
"""

UPPER_NAMES = MappingProxyType({"icmp": 1, "igmp": 2, "ipencap": 4, "ip4": 4, "tcp": 6,
                                "udp": 17, "ipv6": 41, "gre": 47, "esp": 50, "ah": 51,
                                "icmp6": 58, "ipv6-icmp": 58})
UPPER_SHOWN = MappingProxyType({1: "icmp", 2: "igmp", 4: "ipencap", 6: "tcp", 17: "udp",
                                41: "ipv6", 47: "gre", 50: "esp", 51: "ah", 58: "ipv6-icmp"})
LEVELS = ("default", "use", "require", "unique")
_RANGE_RE = re.compile(r"([^/\[\]]+)(?:/(\d+))?(?:\[(any|\d+)\])?\Z")
_TOKEN_RE = re.compile(r'"[^"]*"|;|[^\s;"]+')


class SetkeyError(Exception):
    """A command refused: at `line` (0 when it did not come from a file)."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class Statement:
    line: int
    words: list[str] = field(default_factory=list)


def statements(text: str) -> list[Statement]:
    """The `;`-ended commands of `text`, each with the line it starts on."""
    out: list[Statement] = []
    current: Statement | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        for token in _TOKEN_RE.findall(line.split("#", 1)[0]):
            if current is None:
                current = Statement(lineno)
            if token == ";":
                out.append(current)
                current = None
            else:
                current.words.append(token)
    if current is not None and current.words:
        raise SetkeyError(current.line, f"syntax error at [{current.words[-1]}]: missing ';'")
    return [s for s in out if s.words]


# -- parsing ---------------------------------------------------------------------------
class Words:
    """A statement's words, consumed left to right; errors name the line and word."""

    def __init__(self, st: Statement) -> None:
        self.line = st.line
        self.words = st.words
        self.i = 0

    def error(self, message: str) -> SetkeyError:
        return SetkeyError(self.line, message)

    def peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def next(self, what: str) -> str:
        word = self.peek()
        if word is None:
            raise self.error(f"syntax error: {what} expected")
        self.i += 1
        return word

    def end(self) -> None:
        word = self.peek()
        if word is not None:
            raise self.error(f"syntax error at [{word}]")

    def flags(self) -> None:
        """`-4`, `-6`, `-46`, `-n`: accepted (the addresses say their family)."""
        while (word := self.peek()) is not None and word in ("-4", "-6", "-n", "-46"):
            self.i += 1

    def addr(self) -> tuple[int, int]:
        """An IPv4 or IPv6 address: (family, address)."""
        word = self.next("address")
        try:
            return _parse_addr(word)
        except ValueError:
            raise self.error(f"syntax error at [{word}]: not an address") from None

    def pair(self) -> tuple[int, int, int]:
        """Two addresses of one family: (family, source, destination)."""
        (fam, src), (fam2, dst) = self.addr(), self.addr()
        if fam != fam2:
            raise self.error(f"syntax error at [{self.words[self.i - 1]}]: "
                             "source and destination of different families")
        return fam, src, dst

    def proto(self) -> None:
        word = self.next("protocol")
        if word != "esp":
            raise self.error(f"syntax error at [{word}]: protocol esp expected"
                             + (" (ah and ipcomp are not supported)" if word in (
                                 "ah", "ipcomp", "esp-old", "ah-old", "tcp") else ""))

    def number(self, what: str, limit: int = 0xFFFFFFFF) -> int:
        word = self.next(what)
        try:
            value = int(word, 16) if word.lower().startswith("0x") else int(word)
        except ValueError:
            raise self.error(f"syntax error at [{word}]: {what} expected") from None
        if not 0 <= value <= limit:
            raise self.error(f"{what} out of range: {word}")
        return value

    def key(self) -> bytes:
        word = self.next("key")
        if word.startswith('"') and word.endswith('"') and len(word) >= 2:
            return word[1:-1].encode()
        if word.lower().startswith("0x"):
            try:
                return bytes.fromhex(word[2:])
            except ValueError:
                pass
        raise self.error(f"syntax error at [{word}]: a key is 0xHEX or \"string\"")

    def range_(self) -> tuple[int, int, int, int | None]:
        """ADDR[/PLEN][[PORT]]: (family, network, prefix length, port or None)."""
        word = self.next("address range")
        m = _RANGE_RE.match(word)
        if m is None:
            raise self.error(f"syntax error at [{word}]")
        try:
            family, addr = _parse_addr(m.group(1))
        except ValueError:
            raise self.error(f"syntax error at [{word}]: not an address") from None
        width = 32 if family == AF_INET else 128
        plen = int(m.group(2)) if m.group(2) is not None else width
        if plen > width:
            raise self.error(f"prefix length out of range: {word}")
        port = None if m.group(3) in (None, "any") else int(m.group(3))
        if port is not None and port > 65535:
            raise self.error(f"port out of range: {word}")
        mask = (((1 << width) - 1) >> (width - plen) << (width - plen)) if plen else 0
        return family, addr & mask, plen, port

    def ranges(self) -> tuple[int, int, int, int | None, int, int, int | None]:
        """Source and destination ranges of one family."""
        fam, src, splen, sport = self.range_()
        fam2, dst, dplen, dport = self.range_()
        if fam != fam2:
            raise self.error(f"syntax error at [{self.words[self.i - 1]}]: "
                             "source and destination of different families")
        return fam, src, splen, sport, dst, dplen, dport

    def upper(self) -> int | None:
        word = self.next("upper-layer protocol")
        if word == "any":
            return None
        if word in UPPER_NAMES:
            return UPPER_NAMES[word]
        if word.isdigit() and int(word) < 256:
            return int(word)
        raise self.error(f"syntax error at [{word}]: unknown upper-layer protocol")

    def direction(self) -> str:
        word = self.next("-P")
        if word != "-P":
            raise self.error(f"syntax error at [{word}]: -P expected")
        direction = self.next("direction")
        if direction not in ("in", "out"):
            raise self.error(f"syntax error at [{direction}]: in or out expected"
                             + (" (fwd is Linux's)" if direction == "fwd" else ""))
        return direction

    def request(self) -> Request:
        word = self.next("request")
        parts = word.split("/")
        if len(parts) not in (3, 4) or parts[0] != "esp":
            raise self.error(f"syntax error at [{word}]: esp/MODE/[SRC-DST]/LEVEL expected")
        mode, ends = parts[1], parts[2]
        level = parts[3] if len(parts) == 4 and parts[3] else LEVEL_DEFAULT
        reqid = 0
        if level.startswith("unique:"):
            level, _, num = level.partition(":")
            if not num.isdigit():
                raise self.error(f"syntax error at [{word}]: unique:ID")
            reqid = int(num)
        if level not in LEVELS:
            raise self.error(f"syntax error at [{word}]: unknown level {level}")
        if mode == MODE_TUNNEL:
            src_s, _, dst_s = ends.partition("-")
            try:
                (fam, src), (fam2, dst) = _parse_addr(src_s), _parse_addr(dst_s)
            except ValueError:
                raise self.error(f"syntax error at [{word}]: tunnel mode needs "
                                 "SRC-DST") from None
            if fam != fam2:
                raise self.error(f"syntax error at [{word}]: endpoints of different families")
            return Request("esp", mode, src, dst, level, reqid, fam)
        if mode != MODE_TRANSPORT:
            raise self.error(f"syntax error at [{word}]: mode transport or tunnel")
        if ends:
            raise self.error(f"syntax error at [{word}]: transport mode takes no endpoints")
        return Request("esp", mode, None, None, level, reqid)


Action = Callable[[IpsecState], str]


def compile_statement(st: Statement, now_ns: int) -> Action:
    """A statement as a function of the IPsec state (its output); SetkeyError if bad."""
    w = Words(st)
    cmd = w.next("command")
    handler = _COMMANDS.get(cmd)
    if handler is None:
        raise w.error(f"syntax error at [{cmd}]")
    return handler(w, now_ns)


def _add(w: Words, now_ns: int) -> Action:
    w.flags()
    family, src, dst = w.pair()
    w.proto()
    spi = w.number("spi")
    if spi < 256:
        raise w.error(f"invalid SPI {spi}: 0-255 are reserved")
    mode, reqid, replay = MODE_ANY, 0, DEFAULT_REPLAY
    enc: tuple[str, bytes] | None = None
    auth: tuple[str, bytes] | None = None
    while (word := w.peek()) is not None:
        w.i += 1
        if word == "-m":
            mode = w.next("mode")
            if mode not in (MODE_ANY, MODE_TRANSPORT, MODE_TUNNEL):
                raise w.error(f"syntax error at [{mode}]: mode any, transport or tunnel")
        elif word == "-u":
            reqid = w.number("reqid", 0x3FFF)
        elif word == "-r":
            replay = w.number("replay window", 1 << 16)
        elif word in ("-E", "-A"):
            name = w.next("algorithm")
            known = xform.ENC_ALGORITHMS if word == "-E" else xform.AUTH_ALGORITHMS
            if name not in known:
                raise w.error(f"syntax error at [{name}]: unknown "
                              f"{'encryption' if word == '-E' else 'authentication'} "
                              "algorithm")
            key = b"" if name == "null" else w.key()
            if word == "-E":
                enc = (name, key)
            else:
                auth = (name, key)
        else:
            raise w.error(f"syntax error at [{word}]")
    if enc is None:
        raise w.error("syntax error: esp needs -E (-E null -A ... for integrity only)")
    try:
        tf = xform.make(enc[0], enc[1], auth[0] if auth else None, auth[1] if auth else b"")
    except ValueError as exc:
        raise w.error(str(exc)) from None

    def run(ipsec: IpsecState) -> str:
        ipsec.add_sa(SecAssoc(src, dst, spi, mode, reqid, tf, enc[1],
                              auth[1] if auth else b"", replay, now_ns, family=family))
        return ""
    return run


def _sa_key(w: Words) -> tuple[int, int, int, int]:
    w.flags()
    family, src, dst = w.pair()
    w.proto()
    spi = w.number("spi")
    w.end()
    return src, dst, spi, family


def _get(w: Words, now_ns: int) -> Action:
    key = _sa_key(w)
    return lambda ipsec: sa_text(ipsec, ipsec.get_sa(*key), now_ns)


def _delete(w: Words, now_ns: int) -> Action:
    key = _sa_key(w)
    return lambda ipsec: ipsec.delete_sa(*key) or ""


def _deleteall(w: Words, now_ns: int) -> Action:
    w.flags()
    family, src, dst = w.pair()
    w.proto()
    w.end()
    return lambda ipsec: ipsec.delete_all(src, dst, family) or ""


def _maybe_proto(w: Words) -> None:
    if w.peek() is not None:
        w.proto()
    w.end()


def _flush(w: Words, now_ns: int) -> Action:
    _maybe_proto(w)
    return lambda ipsec: ipsec.flush_sa() or ""


def _dump(w: Words, now_ns: int) -> Action:
    _maybe_proto(w)
    return lambda ipsec: sad_text(ipsec, now_ns)


def _spdadd(w: Words, now_ns: int) -> Action:
    w.flags()
    family, src, splen, sport, dst, dplen, dport = w.ranges()
    upper = w.upper()
    direction = w.direction()
    action = w.next("policy")
    if action not in ("ipsec", "discard", "none"):
        raise w.error(f"syntax error at [{action}]: ipsec, discard or none expected")
    requests: list[Request] = []
    while w.peek() is not None:
        requests.append(w.request())
    if action == "ipsec" and not requests:
        raise w.error("syntax error: ipsec needs a request (esp/MODE/SRC-DST/LEVEL)")
    if action != "ipsec" and requests:
        raise w.error(f"syntax error at [{w.words[w.i - 1]}]: {action} takes no requests")
    sp_args = (src, splen, sport, dst, dplen, dport, upper, direction, action,
               tuple(requests))
    return lambda ipsec: ipsec.add_sp(SecPolicy(*sp_args, family=family)) or ""


def _spddelete(w: Words, now_ns: int) -> Action:
    w.flags()
    family, src, splen, sport, dst, dplen, dport = w.ranges()
    upper = w.upper()
    direction = w.direction()
    if w.peek() in ("ipsec", "discard", "none"):  # setkey accepts and ignores a policy
        w.i = len(w.words)
    w.end()
    key = (src, splen, sport, dst, dplen, dport, upper, direction, family)
    return lambda ipsec: ipsec.delete_sp(key) or ""


def _spdflush(w: Words, now_ns: int) -> Action:
    w.end()
    return lambda ipsec: ipsec.flush_sp() or ""


def _spddump(w: Words, now_ns: int) -> Action:
    w.end()
    return lambda ipsec: spd_text(ipsec, now_ns)


_COMMANDS: Mapping[str, Callable[[Words, int], Action]] = MappingProxyType({
    "add": _add, "get": _get, "delete": _delete, "deleteall": _deleteall, "flush": _flush,
    "dump": _dump, "spdadd": _spdadd, "spddelete": _spddelete, "spdflush": _spdflush,
    "spddump": _spddump,
})


def _parse_addr(text: str) -> tuple[int, int]:
    """(family, address) of an IPv4 or IPv6 literal; ValueError if neither."""
    try:
        return AF_INET, ipv4.aton(text)
    except WireError:
        pass
    if ":" in text and "%" not in text:
        try:
            return AF_INET6, ipv6.aton(text)
        except (WireError, ValueError):
            pass
    raise ValueError(text)


def _ntoa(family: int) -> Callable[[int], str]:
    return ipv4.ntoa if family == AF_INET else ipv6.ntoa


# -- output (libipsec pfkey_dump.c) ------------------------------------------------------
def _date(ns: int) -> str:
    return time.strftime("%b %e %H:%M:%S %Y", time.gmtime(ns // 1_000_000_000))


def _hexkey(key: bytes) -> str:
    return " ".join(key[i:i + 4].hex() for i in range(0, len(key), 4))


def sa_text(ipsec: IpsecState, sa: SecAssoc, now_ns: int) -> str:
    diff = (now_ns - sa.created_ns) // 1_000_000_000
    ntoa = _ntoa(sa.family)
    lines = [f"{ntoa(sa.src)} {ntoa(sa.dst)}",
             f"\tesp mode={sa.mode} spi={sa.spi}(0x{sa.spi:08x}) "
             f"reqid={sa.reqid}(0x{sa.reqid:08x})",
             f"\tE: {sa.xform.enc_name}  {_hexkey(sa.enc_key)}".rstrip()]
    if sa.auth_key:
        lines.append(f"\tA: {sa.xform.auth_name}  {_hexkey(sa.auth_key)}")
    lines += [
        f"\tseq=0x{sa.seq:08x} replay={sa.replay_size} flags=0x00000000 state=mature",
        f"\tcreated: {_date(sa.created_ns)}\tcurrent: {_date(now_ns)}",
        f"\tdiff: {diff}(s)\thard: 0(s)\tsoft: 0(s)",
        f"\tlast: {_date(sa.last_ns) if sa.last_ns else ''}\thard: 0(s)\tsoft: 0(s)",
        f"\tcurrent: {sa.bytes}(bytes)\thard: 0(bytes)\tsoft: 0(bytes)",
        f"\tallocated: {sa.allocations}\thard: 0\tsoft: 0",
        f"\tsadb_seq={sa.serial} pid=0 refcnt=1",
    ]
    return "\n".join(lines) + "\n"


def sad_text(ipsec: IpsecState, now_ns: int) -> str:
    if not ipsec.sad:
        return "No SAD entries.\n"
    return "".join(sa_text(ipsec, sa, now_ns) for sa in ipsec.sad)


def _range_text(family: int, addr: int, plen: int, port: int | None) -> str:
    width = 32 if family == AF_INET else 128
    net = _ntoa(family)(addr) + ("" if plen == width else f"/{plen}")
    return f"{net}[{'any' if port is None else port}]"


def sp_text(sp: SecPolicy, now_ns: int) -> str:
    upper = "any" if sp.upper is None else UPPER_SHOWN.get(sp.upper, str(sp.upper))
    lines = [f"{_range_text(sp.family, sp.src, sp.src_plen, sp.sport)} "
             f"{_range_text(sp.family, sp.dst, sp.dst_plen, sp.dport)} {upper}",
             f"\t{sp.direction} {sp.action}"]
    lines += [f"\t{req.text(_ntoa(req.family))}" for req in sp.requests]
    used = _date(sp.lastused_ns) if sp.lastused_ns else ""
    lines += [f"\tcreated: {_date(sp.created_ns)}  lastused: {used}",
              "\tlifetime: 0(s) validtime: 0(s)",
              f"\tspid={sp.spid} seq=0 pid=0 scope=global",
              "\trefcnt=1"]
    return "\n".join(lines) + "\n"


def spd_text(ipsec: IpsecState, now_ns: int) -> str:
    if not ipsec.spd:
        return "No SPD entries.\n"
    return "".join(sp_text(sp, now_ns) for sp in ipsec.spd)


# -- running ---------------------------------------------------------------------------
def run_text(ipsec: IpsecState, text: str, now_ns: int) -> str:
    """Parse all of `text`, then apply it whole or not at all; what the dumps printed."""
    parsed = statements(text)
    actions = [compile_statement(st, now_ns) for st in parsed]
    lines = [st.line for st in parsed]
    saved = ipsec.snapshot()
    out: list[str] = []
    for line, action in zip(lines, actions, strict=True):
        try:
            out.append(action(ipsec))
        except OSError as exc:
            ipsec.restore(saved)
            raise SetkeyError(line, exc.strerror or str(exc)) from None
    return "".join(out)


def _read(ctx: Context, path: str) -> str:
    if path == "-":
        if ctx.stdin is None:
            raise ToolError("-: no standard input")
        return ctx.stdin.decode()
    try:
        with open(path) as fh:
            return fh.read()
    except OSError as exc:
        raise ToolError(f"{ctx.label(path)}: {exc.strerror}") from None


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "46acCDde:Ff:hlnPvx")
    given = {o for o, _ in opts}
    if args:
        raise UsageError(f"extra operand {args[0]}", synopsis=True)
    ipsec: IpsecState | None = getattr(ctx.vnet, "ipsec", None)
    if ipsec is None:
        raise ToolError("IPsec is not part of this kernel's protocol set")
    now_ns = ctx.vnet.kernel.sched.now_ns()
    spd = "-P" in given
    if "-D" in given:
        ctx.out.write(spd_text(ipsec, now_ns) if spd else sad_text(ipsec, now_ns))
        return 0
    if "-F" in given:
        if spd:
            ipsec.flush_sp()
        else:
            ipsec.flush_sa()
        return 0
    path = next((v for o, v in opts if o == "-f"), None)
    script = next((v for o, v in opts if o == "-e"), None)
    if script is not None:
        text, label = script, "-"
    elif path is not None:
        text, label = _read(ctx, path), ctx.label(path)
    elif "-c" in given:
        text, label = _read(ctx, "-"), "-"
    else:
        raise UsageError(synopsis=True)
    try:
        ctx.out.write(run_text(ipsec, text, now_ns))
    except SetkeyError as exc:
        where = f"line {exc.line}: " if label == "-" else f"{label}: line {exc.line}: "
        raise ToolError(f"{where}{exc}; nothing applied") from None
    return 0

