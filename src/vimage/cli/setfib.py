"""setfib(1): run a tool with another default FIB.

    setfib [-F] fib utility [argument ...]

The tool's sockets, and the routing sockets of route(8), netstat's `-r` and the like,
start in FIB `fib` (FreeBSD's setfib(2) sets the process's fib, which new sockets take);
`sysctl net.my_fibnum` shows it. A fib the vnet does not have (net.fibs) is an error.
"""

from __future__ import annotations

from vimage.cli import Context, ToolError, UsageError, run_command
from vimage.context import current_fib

LOCKS_ITSELF = True  # the tool it runs takes the kernel lock (or not) itself

USAGE = "usage: setfib [-F] fib command ...\n"


def main(ctx: Context, argv: list[str]) -> int:
    args = list(argv)
    if args[:1] == ["-F"]:  # FreeBSD's -F: the fib is the next argument
        args = args[1:]
    elif args[:1] and args[0].startswith("-F") and args[0][2:].isdigit():
        args = [args[0][2:], *args[1:]]
    if args[:1] and args[0].startswith("-") and len(args[0]) > 1:
        raise UsageError(f"illegal option -- {args[0][1]}", synopsis=True)
    if len(args) < 2:
        raise UsageError()
    text, command = args[0], args[1:]
    if not text.isdigit():
        raise UsageError(f"{text}: fib must be a number", synopsis=True)
    fib = int(text)
    with ctx.vnet.kernel.sched.cond:
        fibs = ctx.vnet.route.fibs
    if fib >= fibs:
        raise ToolError("setfib: Invalid argument")
    token = current_fib.set(fib)
    try:
        result = run_command(ctx.vnet, command, ctx.stdin, ctx.labels)
    finally:
        current_fib.reset(token)
    ctx.out.write(result.output)
    return result.status
