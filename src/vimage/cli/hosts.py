"""hosts: the vnet's hosts table (its /etc/hosts), which its resolver answers from.

    hosts                       print the table in /etc/hosts layout
    hosts add ADDR NAME [NAME ...]
    hosts delete NAME
    hosts flush                 empty the table (localhost too)
    hosts lookup NAME           print NAME's addresses, status 1 if unknown
"""

from __future__ import annotations

from vimage.cli import Context, ToolError, UsageError
from vimage.wire import ipv4, ipv6

USAGE = """\
usage: hosts
       hosts add address name [name ...]
       hosts delete name
       hosts flush
       hosts lookup name
"""


def main(ctx: Context, argv: list[str]) -> int:
    hosts = ctx.vnet.hosts
    if not argv:
        for addr, names in hosts.entries():
            ctx.print(f"{ipv4.ntoa(addr)}\t{' '.join(names)}")
        for addr, names in hosts.entries6():
            ctx.print(f"{ipv6.ntoa(addr)}\t{' '.join(names)}")
        return 0
    verb, args = argv[0], argv[1:]
    if verb == "add":
        if len(args) < 2:
            raise UsageError()
        hosts.add(args[0], *args[1:])
        return 0
    if verb == "delete":
        if len(args) != 1:
            raise UsageError()
        hosts.remove(args[0])
        return 0
    if verb == "flush":
        if args:
            raise UsageError(f"unexpected argument '{args[0]}'", synopsis=True)
        hosts.clear()
        return 0
    if verb == "lookup":
        if len(args) != 1:
            raise UsageError()
        texts = [ipv4.ntoa(a) for a in hosts.lookup(args[0])]
        texts += [ipv6.ntoa(a) for a in hosts.lookup6(args[0])]
        if not texts:
            raise ToolError(f"{args[0]}: unknown host")
        for text in texts:
            ctx.print(text)
        return 0
    if verb.startswith("-"):
        raise UsageError(f"illegal option -- {verb.lstrip('-')}", synopsis=True)
    raise UsageError(f"unknown command '{verb}'", synopsis=True)
