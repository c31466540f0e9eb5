"""hosts: the vnet's hosts table (its /etc/hosts), which its resolver answers from.

    hosts                       print the table in /etc/hosts layout
    hosts add ADDR NAME [NAME ...]
    hosts delete NAME
    hosts flush                 empty the table (localhost too)
    hosts lookup NAME           print NAME's addresses, status 1 if unknown
"""

from __future__ import annotations

from vimage.cli import Context, ToolError, UsageError
from vimage.wire import ipv4


def main(ctx: Context, argv: list[str]) -> int:
    hosts = ctx.vnet.hosts
    if not argv:
        for addr, names in hosts.entries():
            ctx.print(f"{ipv4.ntoa(addr)}\t{' '.join(names)}")
        return 0
    verb, args = argv[0], argv[1:]
    if verb == "add":
        if len(args) < 2:
            raise UsageError("usage: hosts add ADDR NAME [NAME ...]")
        hosts.add(args[0], *args[1:])
        return 0
    if verb == "delete":
        if len(args) != 1:
            raise UsageError("usage: hosts delete NAME")
        hosts.remove(args[0])
        return 0
    if verb == "flush":
        if args:
            raise UsageError(f"unexpected argument '{args[0]}'")
        hosts.clear()
        return 0
    if verb == "lookup":
        if len(args) != 1:
            raise UsageError("usage: hosts lookup NAME")
        addrs = hosts.lookup(args[0])
        if not addrs:
            raise ToolError(f"{args[0]}: unknown host")
        for addr in addrs:
            ctx.print(ipv4.ntoa(addr))
        return 0
    raise UsageError(f"unknown command '{verb}' (add, delete, flush, lookup)")
