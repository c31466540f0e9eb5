"""ipfw(8): the vnet's firewall rules, tables, dynamic states and log.

    ipfw [-q] add [NUM] [set N] [prob P] ACTION [log [logamount N]] PROTO from SRC to DST [OPTS]
    ipfw [-acdefNStT] {list | show} [NUM[-NUM] ...]
    ipfw [-q] {delete | zero | resetlog} [NUM[-NUM] ...];  ipfw [-fq] flush
    ipfw set {show | enable N | disable N | move [rule] X to Y | swap X Y}
    ipfw table NAME {create [type addr] | add ADDR[/LEN] [VALUE] | delete ADDR[/LEN] |
                     list | flush | info | destroy};  ipfw table all {list | flush}
    ipfw {enable | disable} {firewall | one_pass | verbose}
    ipfw log [clear]                the vnet's ipfw log (vimage; FreeBSD logs to syslog)
    ipfw [-q] [-n] PATHNAME         a file of commands, applied whole or not at all
    ipfw {pipe | queue | sched} ... dummynet (vimage.netpfil.dummynet)
    ipfw nat ...                    in-kernel NAT (vimage.netpfil.nat)

`-n` checks the syntax and changes nothing. A refused command prints ipfw's one-line
error naming the bad token and exits 64 (EX_USAGE) or 65 (EX_DATAERR).
"""

from __future__ import annotations

import os
from importlib import import_module

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import getopts
from vimage.netpfil.ipfw import command
from vimage.netpfil.ipfw.command import Options
from vimage.netpfil.ipfw.parse import IpfwError

USAGE = """\
usage: ipfw [-acdefNnqSTt] {add|delete|flush|list|show|zero|resetlog} ...
       ipfw {set|table|log|enable|disable} ...
       ipfw [-q] [-n] pathname
       ipfw {pipe|queue|sched|nat} ...
"""
_DUMMYNET = ("pipe", "queue", "sched")


def main(ctx: Context, argv: list[str]) -> int:
    opts_list, args = getopts(argv, "abcdefNnqSs:Tt")
    given = {o for o, _ in opts_list}
    opts = Options(counters="-a" in given, dynamic="-d" in given or "-e" in given,
                   expired="-e" in given, quiet="-q" in given, sets="-S" in given,
                   time="numeric" if "-T" in given else "string" if "-t" in given else "",
                   resolve="-N" in given)
    if not args:
        raise UsageError()
    vnet = ctx.vnet
    fw = getattr(vnet, "ipfw", None)
    try:
        if args[0] in _DUMMYNET:
            text = _dummynet(vnet, args)
        elif args[0] == "nat":
            text = _nat(vnet, args)
        elif fw is None:
            raise ToolError("ipfw is not part of this kernel's protocol set")
        elif args[0] not in _KNOWN and len(args) == 1 and ("/" in args[0]
                                                         or os.path.isfile(args[0])):
            text = _file(ctx, fw, args[0], opts, test_only="-n" in given)
        elif "-n" in given:
            snapshot = command.Config(fw, atomic=True)
            out: list[str] = []
            command.execute(fw, snapshot, args, opts, out)
            text = ""
        else:
            text = command.run(fw, args, opts)
    except IpfwError as exc:
        raise ToolError(str(exc), exc.status) from None
    except ValueError as exc:  # from dummynet / NAT: their one-line errors
        raise ToolError(str(exc), 64) from None
    ctx.out.write(text)
    return 0


_KNOWN = frozenset(("add", "delete", "del", "flush", "list", "show", "zero", "resetlog",
                    "set", "table", "log", "enable", "disable"))


def _file(ctx: Context, fw: object, path: str, opts: Options, test_only: bool) -> str:
    label = ctx.label(path)
    try:
        if path == "-" and ctx.stdin is not None:
            text = ctx.stdin.decode()
        else:
            with open(path) as fh:
                text = fh.read()
    except OSError as exc:
        raise ToolError(f"{label}: {exc.strerror}") from None
    if test_only:
        cfg = command.Config(fw, atomic=True)  # type: ignore[arg-type]
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                command.execute(fw, cfg, line.split(), opts, [])  # type: ignore[arg-type]
        return ""
    return command.run_file(fw, text.splitlines(), opts, label)  # type: ignore[arg-type]


def _dummynet(vnet: object, args: list[str]) -> str:
    try:
        dn = import_module("vimage.netpfil.dummynet")
    except ImportError:
        raise ToolError("dummynet is not available in this build") from None
    return str(dn.command(vnet, args, "ipfw"))


def _nat(vnet: object, args: list[str]) -> str:
    for name in ("vimage.netpfil.nat", "vimage.netpfil.ipfw_nat"):
        try:
            nat = import_module(name)
        except ImportError:
            continue
        return str(nat.command(vnet, args))
    raise ToolError("ipfw nat is not available in this build")
