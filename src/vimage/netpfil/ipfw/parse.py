"""The ipfw rule grammar (ipfw(8) RULE FORMAT; sbin/ipfw/ipfw2.c compile_rule):

    [prob P] ACTION [log [logamount N]] [tag N | untag N]
        PROTO from SRC [PORTS] to DST [PORTS] [OPTIONS]

Each piece is checked as it is read; the first bad token stops the parse with
ipfw's one-line error naming it (an `IpfwError`), and nothing is changed. What is
read becomes a `Rule`: a matcher compiled once from the conditions (an expression
per option, ints inlined, other values bound by name: no user text enters the source)
and the canonical text `ipfw list` prints (FreeBSD prints the rule back from its
instructions, so `accept` lists as `allow` and `{a,b}` as `a,b`).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.net.route import MASKS, MASKS6
from vimage.netpfil.ipfw import rule as R
from vimage.netpfil.ipfw.rule import Pred, Rule, StateSpec
from vimage.netpfil.ipfw.table import Table
from vimage.wire import WireError, ipv4, ipv6

if TYPE_CHECKING:
    from vimage.netpfil.ipfw.packet import Args
    from vimage.netpfil.ipfw.state import IpfwState

EX_USAGE = 64
EX_DATAERR = 65


class IpfwError(ValueError):
    """A refused command: ipfw's message, and its exit status (EX_USAGE / EX_DATAERR)."""

    def __init__(self, message: str, status: int = EX_USAGE) -> None:
        super().__init__(message)
        self.status = status


# /etc/protocols names ipfw accepts (getprotobyname), and how it prints numbers back
PROTOCOLS = MappingProxyType({
    "ip": 0, "icmp": 1, "igmp": 2, "ipencap": 4, "tcp": 6, "egp": 8, "udp": 17,
             "ipv6": 41, "ipv6-route": 43, "ipv6-frag": 44, "rsvp": 46, "gre": 47, "esp": 50,
             "ah": 51, "ipv6-icmp": 58, "ipv6-nonxt": 59, "ipv6-opts": 60, "ospf": 89,
             "pim": 103, "carp": 112, "sctp": 132})
PROTO_NAMES = MappingProxyType({v: k for k, v in PROTOCOLS.items() if v})
# the service names ipfw resolves in port lists (getservbyname), and back for -N
SERVICES = MappingProxyType({
    "echo": 7, "discard": 9, "ftp-data": 20, "ftp": 21, "ssh": 22, "telnet": 23,
            "smtp": 25, "domain": 53, "bootps": 67, "bootpc": 68, "tftp": 69, "http": 80,
            "pop3": 110, "sunrpc": 111, "ntp": 123, "imap": 143, "snmp": 161, "bgp": 179,
            "https": 443, "syslog": 514, "route": 520, "iperf3": 5201})
SERVICE_NAMES = MappingProxyType({v: k for k, v in SERVICES.items()})
# divert/tee port names: ipfw(8) asks getservbyname(name, "divert") (/etc/services)
DIVERT_SERVICES = MappingProxyType({"natd": 8668})
UNREACH_CODES = MappingProxyType({
    "net": 0, "host": 1, "protocol": 2, "port": 3, "needfrag": 4, "srcfail": 5,
                 "net-unknown": 6, "host-unknown": 7, "isolated": 8, "net-prohib": 9,
                 "host-prohib": 10, "tosnet": 11, "toshost": 12, "filter-prohib": 13,
                 "host-precedence": 14, "precedence-cutoff": 15})
UNREACH_NAMES = MappingProxyType({v: k for k, v in UNREACH_CODES.items()})
# ipfw(8) unreach6: ICMPv6 destination unreachable codes (RFC 4443 3.1)
UNREACH6_CODES = MappingProxyType({
    "no-route": 0, "admin-prohib": 1, "address": 3, "port": 4})
# ext6hdr names (ipfw2.c f_ipv6 ... fill_ext6hdr), bits as packet.py's EXT_*
EXT6_HEADERS = MappingProxyType({
    "frag": 1, "hopopt": 2, "route": 4, "ah": 8, "esp": 16, "dstopt": 32})
TCP_FLAGS = MappingProxyType({
    "fin": 0x01, "syn": 0x02, "rst": 0x04, "psh": 0x08, "ack": 0x10, "urg": 0x20})
TCP_OPTIONS = MappingProxyType({
    "mss": 2, "window": 3, "sack": 4, "ts": 8, "cc": 11})
LIMIT_FIELDS = ("src-addr", "src-port", "dst-addr", "dst-port")
_ACTIONS = MappingProxyType({
    "allow": R.A_ALLOW, "accept": R.A_ALLOW, "pass": R.A_ALLOW, "permit": R.A_ALLOW,
            "deny": R.A_DENY, "drop": R.A_DENY, "reject": R.A_REJECT, "unreach": R.A_REJECT,
            "reset": R.A_REJECT, "unreach6": R.A_UNREACH6, "reset6": R.A_UNREACH6,
            "count": R.A_COUNT,
            "skipto": R.A_SKIPTO, "call": R.A_CALL, "return": R.A_RETURN,
            "check-state": R.A_CHECK_STATE, "pipe": R.A_PIPE, "queue": R.A_QUEUE,
            "nat": R.A_NAT, "divert": R.A_DIVERT, "tee": R.A_TEE, "fwd": R.A_FWD,
            "forward": R.A_FWD, "setfib": R.A_SETFIB})
# actions taking a number (or tablearg): the name they print as, the largest number
_NUMBERED = MappingProxyType({R.A_SKIPTO: ("skipto", 65535), R.A_CALL: ("call", 65535),
             R.A_PIPE: ("pipe", 65535), R.A_QUEUE: ("queue", 65535),
             R.A_NAT: ("nat", 65535), R.A_DIVERT: ("divert", 65535),
             R.A_TEE: ("tee", 65535), R.A_SETFIB: ("setfib", 65535)})


def tokens(argv: list[str]) -> list[str]:
    """Split braces off words, as ipfw's parser sees `{a,b}`."""
    out: list[str] = []
    for word in argv:
        out += word.replace("{", " { ").replace("}", " } ").split()
    return out


def _int(text: str, what: str, lo: int = 0, hi: int = 65535) -> int:
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise IpfwError(f"invalid {what} {text}", EX_DATAERR)
    return int(text)


class Parser:
    """Reads one rule from a token list (consumed from the front)."""

    def __init__(self, fw: IpfwState, toks: list[str], tables: dict[str, Table]) -> None:
        self.fw = fw
        self.tables = tables  # where a table a rule names is made if missing
        self.toks = toks
        self.pos = 0
        self.tablearg_used = False
        self.env: dict[str, object] = {}  # the values the rule's matcher reads

    # -- token helpers -------------------------------------------------------------
    def peek(self, k: int = 0) -> str | None:
        i = self.pos + k
        return self.toks[i] if i < len(self.toks) else None

    def take(self, missing: str) -> str:
        tok = self.peek()
        if tok is None:
            raise IpfwError(missing)
        self.pos += 1
        return tok

    def accept(self, word: str) -> bool:
        if self.peek() == word:
            self.pos += 1
            return True
        return False

    def negated(self) -> bool:
        """`not X` or `!X` (the `!` is split off the word it prefixes)."""
        if self.accept("not"):
            return True
        tok = self.peek()
        if tok is not None and tok.startswith("!") and len(tok) > 1:
            self.toks[self.pos] = tok[1:]
            return True
        return False

    # -- the rule -------------------------------------------------------------------
    def rule(self, num: int) -> Rule:
        prob = 1.0
        set_ = 0
        if self.accept("set"):
            set_ = _int(self.take("missing set number"), "set number", 0, R.RESVD_SET - 1)
        if self.accept("prob"):
            text = self.take("missing match probability")
            try:
                prob = float(text)
            except ValueError:
                raise IpfwError(f"illegal match prob. {text}", EX_DATAERR) from None
            if not 0 < prob <= 1:
                raise IpfwError(f"illegal match prob. {text}", EX_DATAERR)
        r = self.action(num)
        r.prob = prob
        r.set_set(set_)
        head = f"prob {prob:f} " if prob < 1 else ""
        head += self.action_text(r)
        if self.accept("log"):
            r.log = True
            head += " log"
            if self.accept("logamount"):
                r.logamount = _int(self.take("missing logamount"), "logamount", 0, 2**31 - 1)
                head += f" logamount {r.logamount}"
        for word in ("tag", "untag"):
            if self.accept(word):
                n = _int(self.take(f"missing {word} number"), f"{word} number", 1, 65534)
                setattr(r, word, n)
                head += f" {word} {n}"
        preds: list[str] = []
        if r.action == R.A_CHECK_STATE and self.peek() is None:
            r.probe = True
            r.plain = False
            r.text = head
            return r
        proto_text, proto_pred = self.proto()
        if proto_pred is not None:
            preds.append(proto_pred)
        if not self.accept("from"):
            raise IpfwError("missing ``from''")
        src_text, src_preds = self.address_and_ports("src")
        if not self.accept("to"):
            raise IpfwError("missing ``to''")
        dst_text, dst_preds = self.address_and_ports("dst")
        preds += src_preds + dst_preds
        body = f"{head} {proto_text} from {src_text} to {dst_text}"
        opt_texts: list[str] = []
        while self.peek() is not None:
            text, pred = self.option(r)
            if text:
                opt_texts.append(text)
            if pred is not None:
                preds.append(pred)
        if r.state is not None:
            s = r.state
            lim = f" {' '.join(s.limit_fields)} {s.limit}" if s.kind == "limit" else ""
            opt_texts.append(f"{s.kind}{lim} :{s.name}")
            r.probe = s.kind != "record-state"
        if r.action == R.A_CHECK_STATE:
            r.probe = True
        if opt_texts:
            body += " " + " ".join(opt_texts)
        if self.tablearg_used is False and r.arg == R.TABLEARG:
            raise IpfwError("tablearg used without a table lookup", EX_DATAERR)
        r.match = self.compile(preds)
        r.plain = not r.probe and r.prob >= 1.0 and r.state is None
        r.text = body
        return r

    def action(self, num: int) -> Rule:
        word = self.take("missing action")
        kind = _ACTIONS.get(word)
        if kind is None:
            raise IpfwError(f"invalid action {word}", EX_DATAERR)
        r = Rule(num, kind)
        if word == "reject":
            r.arg = 1  # ICMP_UNREACH_HOST
        elif word in ("reset", "reset6"):
            r.arg = R.CODE_RST
        elif word == "unreach":
            code = self.take("missing unreach code")
            r.arg = UNREACH_CODES.get(code, -1)
            if r.arg < 0:
                r.arg = _int(code, "ICMP unreachable code", 0, 255)
        elif word == "unreach6":
            code = self.take("missing unreach6 code")
            r.arg = UNREACH6_CODES.get(code, -1)
            if r.arg < 0:
                r.arg = _int(code, "ICMPv6 unreachable code", 0, 255)
        elif kind in _NUMBERED:
            name, hi = _NUMBERED[kind]
            text = self.take(f"missing {name} argument")
            if kind == R.A_NAT and text == "global":
                r.arg = 0
            elif text == "tablearg":
                r.arg = R.TABLEARG
            elif kind in (R.A_DIVERT, R.A_TEE) and text in DIVERT_SERVICES:
                r.arg = DIVERT_SERVICES[text]
            else:
                r.arg = _int(text, f"{name} argument", 0 if kind == R.A_SETFIB else 1, hi)
            if kind == R.A_SETFIB and r.arg != R.TABLEARG:
                self.fw.check_fib(r.arg)
        elif kind == R.A_FWD:
            self.fwd(r, self.take("missing forward address"))
        elif kind == R.A_CHECK_STATE and (self.peek() or "").startswith(":"):
            self.pos += 1
        return r

    def fwd(self, r: Rule, text: str) -> None:
        """`fwd ADDR[,PORT]`: an IPv4 or IPv6 next hop (ipfw2.c: an IPv6 one is
        O_FORWARD_IP6)."""
        host, _, port = text.partition(",")
        if not port and host.count(":") == 1:
            host, _, port = host.partition(":")
        family = 4
        try:
            addr = ipv4.aton(host)
        except WireError:
            try:
                addr = ipv6.aton(host)
                family = 6
            except WireError:
                raise IpfwError(f"hostname ``{host}'' unknown", EX_DATAERR) from None
        r.fwd = (addr, _int(port, "port", 0, 65535) if port else 0, family)

    def action_text(self, r: Rule) -> str:
        kind, arg = r.action, r.arg
        if kind == R.A_ALLOW:
            return "allow"
        if kind == R.A_DENY:
            return "deny"
        if kind == R.A_REJECT:
            if arg == R.CODE_RST:
                return "reset"
            if arg == 1:
                return "reject"
            return f"unreach {UNREACH_NAMES.get(arg, arg)}"
        if kind == R.A_UNREACH6:
            if arg == R.CODE_RST:
                return "reset6"
            names = {v: k for k, v in UNREACH6_CODES.items()}
            return f"unreach6 {names.get(arg, arg)}"
        if kind == R.A_COUNT:
            return "count"
        if kind == R.A_RETURN:
            return "return"
        if kind == R.A_CHECK_STATE:
            return "check-state :default"
        if kind == R.A_FWD:
            assert r.fwd is not None
            addr, port, family = r.fwd
            text = ipv6.ntoa(addr) if family == 6 else ipv4.ntoa(addr)
            return f"fwd {text}" + (f",{port}" if port else "")
        name = _NUMBERED[kind][0]
        if arg == R.TABLEARG:
            return f"{name} tablearg"
        if kind == R.A_NAT and arg == 0:
            return "nat global"
        return f"{name} {arg}"

    # -- compiling ----------------------------------------------------------------------------
    def bind(self, value: object) -> str:
        """A name for `value` in the rule's matcher (no user text enters its source)."""
        name = f"_v{len(self.env)}"
        self.env[name] = value
        return name

    def compile(self, exprs: list[str]) -> Pred:
        """The rule's matcher: one function testing every condition inline (FreeBSD's
        compiled instruction string), built once when the rule is added."""
        src = " and ".join(f"({e})" for e in exprs) or "True"
        code = f"def match(a):\n    return {src}\n"
        env = dict(self.env)
        exec(compile(code, "<ipfw rule>", "exec"), env)  # the source is ours, values are bound
        match: Pred = env["match"]
        return match

    # -- protocol --------------------------------------------------------------------------
    def proto(self) -> tuple[str, str | None]:
        if self.accept("{"):
            texts, exprs = [], []
            while True:
                text, expr = self.one_proto(self.take("missing ``}''"))
                texts.append(text)
                exprs.append(expr)
                if self.accept("}"):
                    break
                if not self.accept("or"):
                    raise IpfwError(f"missing ``or'' before {self.peek()}")
            joined = "{ " + " or ".join(texts) + " }"
            if any(e is None for e in exprs):
                return joined, None
            return joined, " or ".join(f"({e})" for e in exprs)
        return self.one_proto(self.take("missing protocol"))

    def one_proto(self, word: str) -> tuple[str, str | None]:
        if word in ("ip", "all"):
            return "ip", None
        if word in ("ip4", "ipv4"):
            return "ip4", "a.family == 4"
        if word in ("ip6", "ipv6"):
            return "ip6", "a.family == 6"
        if word in ("icmp6", "ipv6-icmp"):
            return "ipv6-icmp", "a.family == 6 and a.proto == 58"
        number = PROTOCOLS.get(word)
        if number is None:
            if not word.isdigit() or int(word) > 255:
                raise IpfwError(f"invalid protocol ``{word}''", EX_DATAERR)
            number = int(word)
        if number == 0:
            return "ip", None
        return PROTO_NAMES.get(number, str(number)), f"a.proto == {number:d}"

    # -- addresses and ports -------------------------------------------------------------
    def address_and_ports(self, side: str) -> tuple[str, list[str]]:
        text, expr = self.address(side)
        exprs = [expr] if expr is not None else []
        nxt = self.peek()
        if nxt is not None and (nxt[0].isdigit() or nxt.split(",")[0].split("-")[0]
                                in SERVICES):
            self.pos += 1
            ptext, pexpr = self.ports(nxt, "sport" if side == "src" else "dport")
            text += " " + ptext
            exprs.append(pexpr)
        return text, exprs

    def address(self, side: str) -> tuple[str, str | None]:
        negate = self.negated()
        if self.accept("{"):
            items: list[str] = []
            while not self.accept("}"):
                word = self.take("missing ``}''")
                if word != "or":
                    items += [w for w in word.split(",") if w]
            text, expr = self.addr_list(",".join(items), side)
        else:
            text, expr = self.addr_list(self.take(f"missing {side} address"), side)
        if negate:
            return "not " + text, "False" if expr is None else f"not ({expr})"
        return text, expr

    def addr_list(self, word: str, side: str) -> tuple[str, str | None]:
        """One address word: any, me, me6, table(NAME[,VALUE]) or a comma list of
        address[/len|:mask] (FreeBSD fill_ip)."""
        field = "a.src" if side == "src" else "a.dst"
        if word == "any":
            return "any", None
        me6 = f"a.family == 6 and {self.bind(_local6(self.fw.vnet))}({field})"
        if word == "me":  # ip_fw2.c O_IP_SRC_ME falls through to O_IP6_SRC_ME: both families
            return "me", (f"(a.family == 4 and {field} in {self.bind(self.fw.vnet.ip.local)})"
                          f" or ({me6})")
        if word == "me6":
            return "me6", me6
        if word.startswith("table(") and word.endswith(")"):
            return self.table_ref(word, side)
        nets = [self.one_addr(item) for item in word.split(",")]
        texts = ",".join(_net_text(n, p, f) for n, p, f in nets)
        tests = []
        for family, masks, full in ((4, MASKS, 32), (6, MASKS6, 128)):
            fam = [(n, p) for n, p, f in nets if f == family]
            if fam:
                inner = _net_tests(self, field, fam, masks, full)
                tests.append(f"a.family == {family} and ({inner})")
        return texts, " or ".join(f"({t})" for t in tests)

    def one_addr(self, item: str) -> tuple[int, int, int]:
        """address[/len|:mask] as (network, prefix length, family)."""
        if item.count(":") > 1:  # IPv6: address[/len]
            host, sep, mask = item.partition("/")
            try:
                addr = ipv6.aton(host)
            except WireError:
                raise IpfwError(f"bad ip6 address ``{host}''", EX_DATAERR) from None
            plen = 128
            if sep:
                if not mask.isdigit() or int(mask) > 128:
                    raise IpfwError(f"bad width ``{mask}''", EX_DATAERR)
                plen = int(mask)
            return addr & MASKS6[plen], plen, 6
        host, sep, mask = item.partition("/")
        if not sep:
            host, sep, mask = item.partition(":")
        try:
            addr = ipv4.aton(host)
        except WireError:
            hosts = getattr(self.fw.vnet, "hosts", None)
            names = hosts.lookup(host) if hosts is not None else []
            if not names:
                raise IpfwError(f"hostname ``{host}'' unknown", EX_DATAERR) from None
            addr = names[0]
        plen = 32
        if sep == "/":
            if not mask.isdigit() or int(mask) > 32:
                raise IpfwError(f"bad width ``{mask}''", EX_DATAERR)
            plen = int(mask)
        elif sep == ":":
            try:
                plen = ipv4.mask_to_prefix(ipv4.aton(mask))
            except WireError:
                raise IpfwError(f"bad netmask ``{mask}''", EX_DATAERR) from None
        return addr & MASKS[plen], plen, 4

    def table_ref(self, word: str, side: str) -> tuple[str, str]:
        inner = word[6:-1]
        name, _, value_text = inner.partition(",")
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", name):
            raise IpfwError(f"Invalid table name: {name}", EX_DATAERR)
        if name not in self.tables:  # FreeBSD makes an addr table a rule names
            self.tables[name] = Table(name)
        self.tablearg_used = True
        want = _int(value_text, "table value", 0, 2**32 - 1) if value_text else None
        text = f"table({name}" + (f",{want})" if value_text else ")")
        fw = self.fw  # the table is looked up per packet: a rule file installs new ones
        src = side == "src"

        def lookup(a: Args) -> bool:
            table = fw.tables.get(name)
            if table is None:
                return False
            addr = a.src if src else a.dst
            value = table.lookup(addr) if a.family == 4 else table.lookup6(addr)
            if value is None or (want is not None and value != want):
                return False
            a.tablearg = value
            return True
        return text, f"{self.bind(lookup)}(a)"

    def ports(self, word: str, field: str) -> tuple[str, str]:
        ranges = parse_ranges(word, "port", SERVICES)
        return format_ranges(ranges), range_expr(f"a.{field}", ranges)

    # -- options ----------------------------------------------------------------------------
    def option(self, r: Rule) -> tuple[str, str | None]:
        if self.negated():
            text, expr = self.option(r)
            return f"not {text}", "False" if expr is None else f"not ({expr})"
        if self.accept("{"):
            texts, exprs = [], []
            while True:
                text, expr = self.option(r)
                texts.append(text)
                exprs.append(expr)
                if self.accept("}"):
                    break
                if not self.accept("or"):
                    raise IpfwError(f"missing ``or'' before {self.peek()}")
            joined = "{ " + " or ".join(texts) + " }"
            if any(e is None for e in exprs):
                return joined, None
            return joined, " or ".join(f"({e})" for e in exprs)
        word = self.take("missing option")
        simple = _SIMPLE.get(word)
        if simple is not None:
            return simple
        handler = getattr(self, "opt_" + word.replace("-", "_"), None)
        if handler is None:
            raise IpfwError(f"unrecognised option [-1] {word}")
        return handler(r, word)  # type: ignore[no-any-return]

    def opt_via(self, r: Rule, word: str) -> tuple[str, str]:
        spec = self.take(f"missing interface name for {word}")
        field = {"recv": "a.rcvif", "xmit": "a.oif"}.get(word, "(a.oif if a.out else a.rcvif)")
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9_.]*", spec) and spec != "any":
            return f"{word} {spec}", (f"{field} is not None and "
                                      f"{field}.name == {self.bind(spec)}")
        return f"{word} {spec}", f"{self.bind(iface_matcher(spec))}({field})"

    opt_recv = opt_xmit = opt_via

    def opt_tcpflags(self, r: Rule, word: str) -> tuple[str, str]:
        spec = self.take("missing argument for tcpflags")
        want, refuse = flag_spec(spec, TCP_FLAGS, "tcp flag")
        return f"tcpflags {spec}", (f"a.tcpflags >= 0 and a.tcpflags & {want} == {want} "
                                    f"and not a.tcpflags & {refuse}")

    def opt_tcpoptions(self, r: Rule, word: str) -> tuple[str, str]:
        spec = self.take("missing argument for tcpoptions")
        want_bits, refuse_bits = flag_spec(spec, {k: 1 << v for k, v in TCP_OPTIONS.items()},
                                           "tcp option")

        def check(a: Args) -> bool:
            if a.tcpflags < 0:
                return False
            bits = 0
            for kind in a.tcp_options():
                if kind < 32:
                    bits |= 1 << kind
            return bits & want_bits == want_bits and not bits & refuse_bits
        return f"tcpoptions {spec}", f"{self.bind(check)}(a)"

    def opt_icmptypes(self, r: Rule, word: str) -> tuple[str, str]:
        spec = self.take("missing argument for icmptypes")
        types = frozenset(_int(t, "ICMP type", 0, 255) for t in spec.split(","))
        return (f"icmptypes {','.join(str(t) for t in sorted(types))}",
                f"a.icmptype in {self.bind(types)}")

    def opt_icmp6types(self, r: Rule, word: str) -> tuple[str, str]:
        spec = self.take("missing argument for icmp6types")
        types = frozenset(_int(t, "ICMP6 type", 0, 255) for t in spec.split(","))
        return (f"icmp6types {','.join(str(t) for t in sorted(types))}",
                f"a.icmp6type in {self.bind(types)}")

    def opt_ext6hdr(self, r: Rule, word: str) -> tuple[str, str]:
        """ext6hdr: the IPv6 packet carries all the extension headers named."""
        spec = self.take("missing argument for ext6hdr")
        bits = 0
        for item in spec.split(","):
            bit = EXT6_HEADERS.get(item)
            if bit is None:
                raise IpfwError(f"invalid ext6hdr ``{item}''", EX_DATAERR)
            bits |= bit
        names = ",".join(n for n, b in EXT6_HEADERS.items() if bits & b)
        return f"ext6hdr {names}", f"a.ext6 & {bits:d} == {bits:d}"

    def _numeric(self, word: str, attr: str, hi: int) -> tuple[str, str]:
        spec = self.take(f"missing argument for {word}")
        ranges = parse_ranges(spec, word, {}, hi)
        return f"{word} {format_ranges(ranges)}", range_expr(f"a.{attr}", ranges)

    def opt_iplen(self, r: Rule, word: str) -> tuple[str, str]:
        text, expr = self._numeric(word, "iplen", 65535)
        return text, f"a.family == 4 and ({expr})"  # ip_fw2.c: O_IPLEN is IPv4 only

    def opt_ipttl(self, r: Rule, word: str) -> tuple[str, str]:
        return self._numeric(word, "ttl", 255)

    def opt_ipid(self, r: Rule, word: str) -> tuple[str, str]:
        text, expr = self._numeric(word, "ipid", 65535)
        return text, f"a.family == 4 and ({expr})"

    def opt_dst_port(self, r: Rule, word: str) -> tuple[str, str]:
        text, expr = self.ports(self.take(f"missing argument for {word}"), "dport")
        return f"dst-port {text}", expr

    def opt_src_port(self, r: Rule, word: str) -> tuple[str, str]:
        text, expr = self.ports(self.take(f"missing argument for {word}"), "sport")
        return f"src-port {text}", expr

    def opt_src_ip(self, r: Rule, word: str) -> tuple[str, str | None]:
        text, expr = self.addr_list(self.take(f"missing argument for {word}"), "src")
        return f"src-ip {text}", expr

    def opt_dst_ip(self, r: Rule, word: str) -> tuple[str, str | None]:
        text, expr = self.addr_list(self.take(f"missing argument for {word}"), "dst")
        return f"dst-ip {text}", expr

    def opt_src_ip6(self, r: Rule, word: str) -> tuple[str, str | None]:
        return self._ip6_option(word, "src")

    def opt_dst_ip6(self, r: Rule, word: str) -> tuple[str, str | None]:
        return self._ip6_option(word, "dst")

    def _ip6_option(self, word: str, side: str) -> tuple[str, str | None]:
        """src-ip6/dst-ip6: IPv6 addresses, me6 or a table (ipfw(8))."""
        spec = self.take(f"missing argument for {word}")
        if not (spec in ("me6", "any") or spec.startswith("table(")) and any(
                item.count(":") < 2 for item in spec.split(",")):
            raise IpfwError(f"bad ip6 address ``{spec}''", EX_DATAERR)
        text, expr = self.addr_list(spec, side)
        return f"{word} {text}", expr

    def opt_proto(self, r: Rule, word: str) -> tuple[str, str | None]:
        text, expr = self.one_proto(self.take("missing protocol"))
        return f"proto {text}", expr

    def opt_tagged(self, r: Rule, word: str) -> tuple[str, str]:
        spec = self.take("missing argument for tagged")
        ranges = tuple(parse_ranges(spec, "tag", {}, 65534))

        def tagged(a: Args) -> bool:
            return a.tags is not None and any(lo <= t <= hi for t in a.tags
                                              for lo, hi in ranges)
        return f"tagged {format_ranges(list(ranges))}", f"{self.bind(tagged)}(a)"

    def opt_tag(self, r: Rule, word: str) -> tuple[str, None]:
        n = _int(self.take(f"missing {word} number"), f"{word} number", 1, 65534)
        setattr(r, word, n)
        return f"{word} {n}", None

    opt_untag = opt_tag

    def _state(self, r: Rule, kind: str) -> None:
        if r.state is not None:
            raise IpfwError("only one of keep-state, record-state, limit is allowed")
        name = "default"
        if kind == "limit":
            fields: list[str] = []
            while self.peek() in LIMIT_FIELDS:
                fields.append(self.take(""))
            if not fields:
                raise IpfwError(f"illegal limit type {self.peek()}", EX_DATAERR)
            n = _int(self.take("missing limit"), "limit", 1, 2**31 - 1)
        if (self.peek() or "").startswith(":"):
            name = self.take("")[1:] or "default"
        if kind == "limit":
            r.state = StateSpec("limit", name, tuple(fields), n)
        else:
            r.state = StateSpec(kind, name)

    def opt_keep_state(self, r: Rule, word: str) -> tuple[str, None]:
        self._state(r, "keep-state")
        return "", None

    def opt_record_state(self, r: Rule, word: str) -> tuple[str, None]:
        self._state(r, "record-state")
        return "", None

    def opt_limit(self, r: Rule, word: str) -> tuple[str, None]:
        self._state(r, "limit")
        return "", None


_SIMPLE: Mapping[str, tuple[str, str]] = MappingProxyType({
    "in": ("in", "not a.out"),
    "out": ("out", "a.out"),
    "setup": ("setup", "a.tcpflags >= 0 and a.tcpflags & 18 == 2"),  # SYN without ACK
    "established": ("established", "a.tcpflags >= 0 and a.tcpflags & 20 != 0"),  # RST|ACK
    "frag": ("frag", "a.off != 0"),
    "ipv4": ("ip4", "a.family == 4"),
    "ip4": ("ip4", "a.family == 4"),
    "ipv6": ("ip6", "a.family == 6"),
    "ip6": ("ip6", "a.family == 6"),
})


def _local6(vnet: object) -> Callable[[int], bool]:
    """`me6`: one of the vnet's IPv6 addresses (a link-local one on any link;
    ip_fw2.c ipfw_localip6)."""
    def local6(addr: int) -> bool:
        ip6 = getattr(vnet, "ip6", None)
        if ip6 is None:
            return False
        if addr in ip6.local:
            return True
        return addr >> 118 == 0x3FA and any(ia.addr == addr for ia in ip6.local.values())
    return local6


def _net_text(net: int, plen: int, family: int) -> str:
    if family == 6:
        return ipv6.ntoa(net) if plen == 128 else f"{ipv6.ntoa(net)}/{plen}"
    return ipv4.ntoa(net) if plen == 32 else f"{ipv4.ntoa(net)}/{plen}"


def _net_tests(parser: Parser, field: str, nets: list[tuple[int, int]],
               masks: tuple[int, ...], full: int) -> str:
    """`field` in one of `nets` (one family): a set test for hosts, a mask per prefix."""
    hosts = frozenset(n for n, p in nets if p == full)
    tests = [f"{field} & {masks[p]:d} == {n:d}" for n, p in nets if p != full]
    if len(hosts) == 1:
        tests.insert(0, f"{field} == {next(iter(hosts)):d}")
    elif hosts:
        tests.insert(0, f"{field} in {parser.bind(hosts)}")
    return " or ".join(tests)


def range_expr(field: str, ranges: list[tuple[int, int]]) -> str:
    """`field` in one of `ranges` (ints only enter the source)."""
    tests = [f"{field} == {lo:d}" if lo == hi else f"{lo:d} <= {field} <= {hi:d}"
             for lo, hi in ranges]
    return " or ".join(tests)


def parse_ranges(spec: str, what: str, names: dict[str, int],
                 hi: int = 65535) -> list[tuple[int, int]]:
    """`80,443,1000-2000` (names allowed) as (lo, hi) pairs."""
    out = []
    for item in spec.split(","):
        lo_text, dash, hi_text = item.partition("-")
        lo = names.get(lo_text)
        if lo is None:
            if not lo_text.isdigit() or int(lo_text) > hi:
                raise IpfwError(f"invalid {what} ``{item}''", EX_DATAERR)
            lo = int(lo_text)
        top = lo
        if dash:
            top_v = names.get(hi_text)
            if top_v is None:
                if not hi_text.isdigit() or int(hi_text) > hi:
                    raise IpfwError(f"invalid {what} ``{item}''", EX_DATAERR)
                top_v = int(hi_text)
            top = top_v
        out.append((lo, top))
    return out


def format_ranges(ranges: list[tuple[int, int]]) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)


def flag_spec(spec: str, table: dict[str, int], what: str) -> tuple[int, int]:
    want = refuse = 0
    for item in spec.split(","):
        neg = item.startswith("!")
        bit = table.get(item.lstrip("!"))
        if bit is None:
            raise IpfwError(f"invalid {what} ``{item}''", EX_DATAERR)
        if neg:
            refuse |= bit
        else:
            want |= bit
    return want, refuse


def iface_matcher(spec: str) -> Callable[[object], bool]:
    """via/recv/xmit's interface: a name, a shell pattern (`epair*`), `any` or an address."""
    if spec == "any":
        return lambda ifp: ifp is not None
    try:
        addr = ipv4.aton(spec)
    except WireError:
        addr = None
    if addr is not None:
        return lambda ifp: ifp is not None and any(ia.addr == addr for ia in ifp.addrs)
    if any(c in spec for c in "*?["):
        return lambda ifp: ifp is not None and fnmatch.fnmatchcase(ifp.name, spec)
    return lambda ifp: ifp is not None and ifp.name == spec

