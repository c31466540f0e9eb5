"""dnctl: configure dummynet in this vnet (FreeBSD dnctl(8); the same commands as
`ipfw pipe|queue|sched ...`).

    dnctl [-q] {pipe|queue|sched} N config OPTIONS
    dnctl {pipe|queue|sched} [N ...] {show|list}
    dnctl {pipe|queue|sched} {show|list|delete} [N ...]
    dnctl [-q] {pipe|queue|sched} flush
"""

from __future__ import annotations

from vimage.cli import Context, ToolError, UsageError
from vimage.netpfil.dummynet import command

USAGE = """\
usage: dnctl [-q] {pipe | queue | sched} number config config-options
       dnctl {pipe | queue | sched} {delete | list | show} [number ...]
       dnctl [-q] {pipe | queue | sched} flush
"""

EX_DATAERR = 65


def main(ctx: Context, argv: list[str]) -> int:
    args = list(argv)
    while args and args[0].startswith("-") and len(args[0]) > 1:
        for flag in args.pop(0)[1:]:
            if flag not in "qfnNSseh":  # dnctl's options; only -q changes anything here
                raise UsageError(f"illegal option -- {flag}", synopsis=True)
    if not args:
        raise UsageError()
    if args[0] not in ("pipe", "queue", "sched"):
        raise UsageError(f"bad command `{args[0]}'", synopsis=True)
    try:
        text = command(ctx.vnet, args, "dnctl")
    except ValueError as exc:
        raise ToolError(str(exc), EX_DATAERR) from None
    ctx.out.write(text)
    return 0
