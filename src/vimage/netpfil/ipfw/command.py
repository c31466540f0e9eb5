"""The ipfw(8) commands on a vnet's ipfw (`vnet.ipfw`): what the `ipfw` tool runs.

The tool (vimage.cli.ipfw) reads its options and hands each command here as an
argument list; output is text (sbin/ipfw/ipfw2.c's formats), a refused command an
`IpfwError` with ipfw's one-line message. `Options` are the command-line flags.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.netpfil.ipfw import rule as R
from vimage.netpfil.ipfw.parse import (
    EX_DATAERR,
    EX_USAGE,
    PROTO_NAMES,
    IpfwError,
    Parser,
    tokens,
)
from vimage.netpfil.ipfw.table import TABLE_TYPES, Table
from vimage.sched import NS_PER_S
from vimage.wire import WireError, ipv4, ipv6

if TYPE_CHECKING:
    from vimage.netpfil.ipfw.state import IpfwState

EX_UNAVAILABLE = 69
AUTOINC_STEP = 100  # net.inet.ip.fw.autoinc_step
DYN_RULE_SIZE = 96  # bytes ipfw reports per state in "## Dynamic rules (N SIZE)" (an estimate)
_ADDR_RE = re.compile(r"\b(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})\b")


@dataclass
class Options:
    """ipfw's flags: -a counters, -d dynamic, -e expired too, -q quiet, -S sets,
    -t/-T timestamps, -N resolve names, -f force (no question asked anyway)."""

    counters: bool = False
    dynamic: bool = False
    expired: bool = False
    quiet: bool = False
    sets: bool = False
    time: str = ""  # "", "string" (-t) or "numeric" (-T)
    resolve: bool = False


class Config:
    """What commands change: the rule list, the disabled sets, the tables. A command
    works on the live rules; a rule file (`atomic`) on copies, installed only if every
    line succeeded, so it applies whole or not at all."""

    def __init__(self, fw: IpfwState, atomic: bool = False) -> None:
        live = fw.ruleset()
        self.set_disable = fw.set_disable
        if atomic:
            self.rules = [r.copy() for r in live]
            self.tables = {name: t.copy() for name, t in fw.tables.items()}
            self.copy_of = {id(orig): dup for orig, dup in zip(live, self.rules, strict=True)}
        else:
            self.rules = list(live)
            self.tables = dict(fw.tables)
            self.copy_of = {}


def run(fw: IpfwState, argv: list[str], opts: Options) -> str:
    """One ipfw command on the live ruleset."""
    out: list[str] = []
    cfg = Config(fw)
    status = execute(fw, cfg, argv, opts, out)
    commit(fw, cfg)
    text = "".join(out)
    if status:
        raise IpfwError(text.rstrip("\n").split("\n")[-1] if text else "failed", status)
    return text


def run_file(fw: IpfwState, lines: list[str], opts: Options, label: str) -> str:
    """A rule file: every line a command (`#` comments); all or nothing."""
    out: list[str] = []
    cfg = Config(fw, atomic=True)
    for lineno, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        argv = line.split()
        local = Options(**vars(opts))
        while argv and argv[0].startswith("-") and len(argv[0]) > 1 and argv[0][1:].isalpha():
            flags = argv.pop(0)[1:]
            local.quiet |= "q" in flags
        try:
            status = execute(fw, cfg, argv, local, out)
        except IpfwError as exc:
            raise IpfwError(f"{exc} at line {lineno} of {label}", exc.status) from None
        if status:
            raise IpfwError(f"{out[-1].strip()} at line {lineno} of {label}", status)
    commit(fw, cfg)
    return "".join(out)


def commit(fw: IpfwState, cfg: Config) -> None:
    """Install what the commands made; the states of a copied rule follow the copy."""
    if cfg.copy_of:
        kept = {id(r) for r in cfg.rules}
        for st in fw.dyn.states.values():
            dup = cfg.copy_of.get(id(st.rule))
            if dup is not None and id(dup) in kept:
                st.rule = dup
    fw.install(cfg.rules, cfg.set_disable, cfg.tables)


def execute(fw: IpfwState, cfg: Config, argv: list[str], opts: Options,
            out: list[str]) -> int:
    if not argv:
        raise IpfwError("bad arguments, for usage summary ``ipfw''")
    cmd, args = argv[0], argv[1:]
    handler = _COMMANDS.get(cmd)
    if handler is None:
        raise IpfwError(f"bad command `{cmd}'")
    return handler(fw, cfg, args, opts, out)


# -- add / delete / flush --------------------------------------------------------------------
def cmd_add(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
            out: list[str]) -> int:
    toks = tokens(args)
    num = 0
    if toks and toks[0].isdigit():
        num = int(toks.pop(0))
        if not 0 < num < R.DEFAULT_RULE:
            raise IpfwError(f"invalid rule number {num}", EX_DATAERR)
    if not toks:
        raise IpfwError("missing action")
    parser = Parser(fw, toks, cfg.tables)
    r = parser.rule(num)
    if parser.peek() is not None:  # pragma: no cover - the option loop eats everything
        raise IpfwError(f"unrecognised option [-1] {parser.peek()}")
    if not num:
        last = max((x.num for x in cfg.rules if x.num != R.DEFAULT_RULE), default=0)
        num = last + AUTOINC_STEP
        if num >= R.DEFAULT_RULE:
            raise IpfwError("rule number out of range", EX_DATAERR)
        r.num = num
    if r.log:
        r.log_left = r.logamount or fw.verbose_limit
        if not r.logamount and fw.verbose_limit:
            r.logamount = fw.verbose_limit
    # after the last rule with the same number (FreeBSD keeps insertion order within one)
    at = 0
    while at < len(cfg.rules) and cfg.rules[at].num <= num:
        at += 1
    cfg.rules.insert(at, r)
    if not opts.quiet:
        out.append(rule_line(fw, r, Options(), 0, 0) + "\n")
    return 0


def cmd_delete(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
               out: list[str]) -> int:
    if not args:
        raise IpfwError("missing rule specification")
    by_set = args[0] == "set"
    if by_set:
        args = args[1:]
    status = 0
    for arg in args:
        lo, hi = rule_range(arg)
        before = len(cfg.rules)
        if by_set:
            if lo > R.RESVD_SET - 1:
                raise IpfwError(f"invalid set number {arg}", EX_DATAERR)
            cfg.rules = [r for r in cfg.rules if not (lo <= r.set <= hi)
                         or r.num == R.DEFAULT_RULE]
            continue
        cfg.rules = [r for r in cfg.rules if not (lo <= r.num <= hi) or r.num == R.DEFAULT_RULE]
        if len(cfg.rules) == before and not opts.quiet:
            status = EX_UNAVAILABLE
            out.append(f"rule {lo} not found\n" if lo == hi else
                       f"no rules rules in {lo}-{hi} range\n")
    return status


def cmd_flush(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
              out: list[str]) -> int:
    cfg.rules = [r for r in cfg.rules if r.num == R.DEFAULT_RULE]
    if not opts.quiet:
        out.append("Flushed all rules.\n")
    return 0


def rule_range(text: str) -> tuple[int, int]:
    lo_text, dash, hi_text = text.partition("-")
    if not lo_text.isdigit() or (dash and not hi_text.isdigit()):
        raise IpfwError(f"invalid rule number: {text}", EX_USAGE)
    lo = int(lo_text)
    return lo, int(hi_text) if dash else lo


# -- list / show ----------------------------------------------------------------------------
def cmd_list(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
             out: list[str], counters: bool = False) -> int:
    counters = counters or opts.counters
    ranges = [rule_range(a) for a in args]
    shown = [r for r in cfg.rules
             if (opts.sets or not (r.setbit & cfg.set_disable))]
    if ranges:
        shown = [r for r in shown if any(lo <= r.num <= hi for lo, hi in ranges)]
    now = fw.vnet.kernel.sched.now_ns()
    states = []
    if opts.dynamic:
        states = [s for s in fw.dyn.states.values() if opts.expired or s.expire > now]
        if ranges:
            states = [s for s in states if any(lo <= s.rule.num <= hi for lo, hi in ranges)]
    pw = bw = 0
    if counters:
        pw = max([len(str(r.pcnt)) for r in shown] + [len(str(s.pcnt)) for s in states] + [0])
        bw = max([len(str(r.bcnt)) for r in shown] + [len(str(s.bcnt)) for s in states] + [0])
    status = 0
    for r in shown:
        line = rule_line(fw, r, opts, pw, bw)
        if r.setbit & cfg.set_disable:
            line = "# DISABLED " + line
        out.append(line + "\n")
    for lo, hi in ranges:
        if not any(lo <= r.num <= hi for r in shown):
            status = EX_UNAVAILABLE
            out.append(f"rule {lo} does not exist\n" if lo == hi else
                       f"no rules in range {lo}-{hi}\n")
    if opts.dynamic and states:
        out.append(f"## Dynamic rules ({len(states)} {len(states) * DYN_RULE_SIZE}):\n"
                   if not ranges else "## Dynamic rules:\n")
        for s in states:
            out.append(dyn_line(s, now, pw, bw) + "\n")
    return status


def cmd_show(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
             out: list[str]) -> int:
    return cmd_list(fw, cfg, args, opts, out, counters=True)


def rule_line(fw: IpfwState, r: R.Rule, opts: Options, pw: int, bw: int) -> str:
    parts = [f"{r.num:05d} "]
    if pw or bw:
        parts.append(f"{r.pcnt:>{pw}} {r.bcnt:>{bw}} ")
    if opts.time == "numeric":
        parts.append(f"{r.timestamp:>10} ")
    elif opts.time == "string":
        parts.append(time.asctime(time.gmtime(r.timestamp)) + " " if r.timestamp else " " * 24)
    if opts.sets:
        parts.append(f"set {r.set} ")
    text = r.text
    if opts.resolve:
        text = resolve_names(fw, text)
    parts.append(text)
    return "".join(parts)


def resolve_names(fw: IpfwState, text: str) -> str:
    """-N: addresses the vnet's hosts table names, printed by name."""
    hosts = getattr(fw.vnet, "hosts", None)
    if hosts is None:
        return text

    def name(m: re.Match[str]) -> str:
        try:
            names = hosts.names_for(ipv4.aton(m.group(1)))
        except WireError:
            return m.group(1)
        return names[0] if names else m.group(1)
    return _ADDR_RE.sub(name, text)


def dyn_line(s: object, now: int, pw: int, bw: int) -> str:
    from vimage.netpfil.ipfw.dyn import DynState

    assert isinstance(s, DynState)
    left = max(0, -(-(s.expire - now) // NS_PER_S))
    line = f"{s.rule.num:05d}"
    if pw or bw:
        line += f" {s.pcnt:>{pw}} {s.bcnt:>{bw}} ({left}s)"
    spec = s.rule.state
    line += " LIMIT" if spec is not None and spec.kind == "limit" else " STATE"
    proto = PROTO_NAMES.get(s.proto)
    line += f" {proto}" if proto else f" proto {s.proto}"
    ntoa = ipv6.ntoa if s.family == 6 else ipv4.ntoa
    line += f" {ntoa(s.src)} {s.sport} <-> {ntoa(s.dst)} {s.dport}"
    return line + f" :{spec.name if spec is not None else 'default'}"


# -- zero / resetlog ------------------------------------------------------------------------
def cmd_zero(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
             out: list[str], log_only: bool = False) -> int:
    what = "logging count reset" if log_only else "cleared"

    def reset(r: R.Rule) -> None:
        if not log_only:
            r.pcnt = r.bcnt = r.timestamp = 0
        r.log_left = r.logamount

    if not args:
        for r in cfg.rules:
            reset(r)
        if not opts.quiet:
            out.append("Logging counts reset.\n" if log_only else "Accounting cleared.\n")
        return 0
    status = 0
    for arg in args:
        lo, hi = rule_range(arg)
        hit = [r for r in cfg.rules if lo <= r.num <= hi]
        for r in hit:
            reset(r)
        if not hit:
            status = EX_UNAVAILABLE
            out.append(f"rule {arg}: setsockopt(IP_FW_X{'RESETLOG' if log_only else 'ZERO'})"
                       f": Invalid argument\n")
        elif not opts.quiet:
            out.append(f"Entry {arg} {what}\n")
    return status


def cmd_resetlog(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
                 out: list[str]) -> int:
    return cmd_zero(fw, cfg, args, opts, out, log_only=True)


# -- sets -------------------------------------------------------------------------------------
def _set_number(text: str, what: str = "invalid set number") -> int:
    if not text.isdigit() or int(text) > R.RESVD_SET:
        raise IpfwError(f"{what} {text}", EX_DATAERR)
    return int(text)


def cmd_set(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
            out: list[str]) -> int:
    if not args:
        raise IpfwError("set needs command")
    sub, rest = args[0], args[1:]
    if sub == "show":
        msg, line = "disable", ""
        for i in range(R.RESVD_SET):
            if cfg.set_disable & (1 << i):
                line += f"{msg} {i}"
                msg = ""
        msg = " enable" if cfg.set_disable else "enable"
        for i in range(R.RESVD_SET):
            if not cfg.set_disable & (1 << i):
                line += f"{msg} {i}"
                msg = ""
        out.append(line + "\n")
    elif sub == "swap":
        if len(rest) != 2:
            raise IpfwError("set swap needs 2 set numbers")
        a, b = _set_number(rest[0]), _set_number(rest[1])
        for r in cfg.rules:
            if r.num != R.DEFAULT_RULE and r.set in (a, b):
                r.set_set(b if r.set == a else a)
    elif sub == "move":
        by_rule = bool(rest) and rest[0] == "rule"
        if by_rule:
            rest = rest[1:]
        if len(rest) != 3 or rest[1] != "to":
            raise IpfwError("syntax: set move [rule] X to Y")
        if not rest[0].isdigit():
            raise IpfwError(f"invalid source number {rest[0]}", EX_DATAERR)
        src = int(rest[0])
        dst = _set_number(rest[2], "invalid dest. set")
        for r in cfg.rules:
            if r.num == R.DEFAULT_RULE:
                continue
            if (r.num == src) if by_rule else (r.set == src):
                r.set_set(dst)
    elif sub in ("enable", "disable"):
        which = sub
        masks = {"enable": 0, "disable": 0}
        for word in rest:
            if word.isdigit():
                masks[which] |= 1 << _set_number(word)
            elif word in masks:
                which = word
            else:
                raise IpfwError(f"invalid set command {word}", EX_DATAERR)
        if masks["enable"] & masks["disable"]:
            raise IpfwError("cannot enable and disable the same set", EX_DATAERR)
        disable = masks["disable"] & ~(1 << R.RESVD_SET)
        cfg.set_disable = (cfg.set_disable | disable) & ~masks["enable"]
    else:
        raise IpfwError(f"invalid set command {sub}")
    return 0


# -- tables ----------------------------------------------------------------------------------
def _table_addr(text: str) -> tuple[int, int, int]:
    """A table key: (address, prefix length, family); IPv6 keys go in the same table."""
    host, slash, plen = text.partition("/")
    family, width = 4, 32
    try:
        addr = ipv4.aton(host)
    except WireError:
        try:
            addr = ipv6.aton(host)
        except WireError:
            raise IpfwError(f"invalid table key: {text}", EX_DATAERR) from None
        family, width = 6, 128
    if slash and (not plen.isdigit() or int(plen) > width):
        raise IpfwError(f"invalid table key: {text}", EX_DATAERR)
    return addr, int(plen) if slash else width, family


def cmd_table(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
              out: list[str]) -> int:
    if len(args) < 2:
        raise IpfwError("table needs name")
    name, sub, rest = args[0], args[1], args[2:]
    tables = cfg.tables
    if name == "all":
        for t in sorted(tables.values(), key=lambda t: t.name):
            if sub == "list":
                out.append(t.listing())
            elif sub == "flush":
                t.flush()
            elif sub == "info":
                out.append(table_info(t))
            else:
                raise IpfwError(f"invalid table command {sub}")
        return 0
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,63}", name):
        raise IpfwError(f"table name {name} is invalid", EX_DATAERR)
    table = tables.get(name)
    if sub == "create":
        ttype = "addr"
        while rest:
            key = rest.pop(0)
            if key == "type" and rest:
                ttype = rest.pop(0)
                if ttype not in TABLE_TYPES:
                    raise IpfwError(f"Unknown table type: {ttype}", EX_DATAERR)
            elif key in ("valtype", "algo") and rest:
                rest.pop(0)
            else:
                raise IpfwError(f"unknown option: {key}", EX_DATAERR)
        if table is not None:
            raise IpfwError(f"Table {name} already exists", EX_DATAERR)
        tables[name] = Table(name, ttype)
        return 0
    if sub == "add" and table is None:
        table = tables[name] = Table(name)  # FreeBSD creates an addr table on `add`
    if table is None:
        raise IpfwError(f"Table {name} does not exist", EX_UNAVAILABLE)
    if sub == "destroy":
        if any(f"table({name})" in r.text or f"table({name}," in r.text for r in cfg.rules):
            raise IpfwError(f"Table {name} is referenced by rules", EX_DATAERR)
        del tables[name]
    elif sub == "add":
        if not rest:
            raise IpfwError("missing table key")
        addr, plen, family = _table_addr(rest[0])
        value = 0
        if len(rest) > 1:
            if not rest[1].isdigit():
                raise IpfwError(f"invalid table value: {rest[1]}", EX_DATAERR)
            value = int(rest[1])
        if not table.add(addr, plen, value, family):
            raise IpfwError("Adding record failed: record already exists", EX_DATAERR)
        if not opts.quiet:
            text = ipv6.ntoa(addr) if family == 6 else ipv4.ntoa(addr)
            out.append(f"added: {text}/{plen} {value}\n")
    elif sub in ("delete", "del"):
        if not rest:
            raise IpfwError("missing table key")
        addr, plen, family = _table_addr(rest[0])
        if not table.delete(addr, plen, family):
            raise IpfwError("Deleting record failed: record not found", EX_UNAVAILABLE)
        if not opts.quiet:
            text = ipv6.ntoa(addr) if family == 6 else ipv4.ntoa(addr)
            out.append(f"deleted: {text}/{plen} 0\n")
    elif sub == "flush":
        table.flush()
    elif sub == "list":
        out.append(table.listing())
    elif sub == "info":
        out.append(table_info(table))
    else:
        raise IpfwError(f"invalid table command {sub}")
    return 0


def table_info(t: Table) -> str:
    return (f"--- table({t.name}), set({t.set}) ---\n kindex: 0, type: {t.type}\n"
            f" references: 0, valtype: legacy\n algorithm: addr:hash\n"
            f" items: {len(t)}, size: {len(t) * 48}\n")


# -- the log ------------------------------------------------------------------------------------
def cmd_log(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
            out: list[str]) -> int:
    """vimage's `ipfw log [clear]`: the vnet's ipfw log (FreeBSD writes it to syslog)."""
    if args == ["clear"]:
        fw.log.clear()
        return 0
    if args:
        raise IpfwError(f"invalid log command {args[0]}")
    out.extend(line + "\n" for line in fw.log)
    return 0


def cmd_enable(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
               out: list[str], value: int = 1) -> int:
    names = {"firewall": "enable", "one_pass": "one_pass", "verbose": "verbose"}
    if not args or args[0] not in names:
        raise IpfwError(f"unrecognize enable/disable keyword: {args[0] if args else ''}")
    setattr(fw, names[args[0]], value)
    return 0


def cmd_disable(fw: IpfwState, cfg: Config, args: list[str], opts: Options,
                out: list[str]) -> int:
    return cmd_enable(fw, cfg, args, opts, out, value=0)


_COMMANDS: Mapping[str, Callable[..., int]] = MappingProxyType({
    "add": cmd_add, "delete": cmd_delete, "del": cmd_delete, "flush": cmd_flush,
    "list": cmd_list, "show": cmd_show, "zero": cmd_zero, "resetlog": cmd_resetlog,
    "set": cmd_set, "table": cmd_table, "log": cmd_log, "enable": cmd_enable,
    "disable": cmd_disable,
})
