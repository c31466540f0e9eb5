"""route6d(8): start the RIPng daemon in this vnet (vimage.apps.route6d); it returns at once.

    route6d [-s | -q] [-P parms]   start
    route6d -k                     stop (withdraws its kernel routes)
    route6d -S                     status: the table and the counters

-s supplies routes (the default when net.inet6.ip6.forwarding is 1), -q never does.
-P takes the timers as routed's: `update=S`, `timeout=S`, `garbage=S` (30, 180, 120 s),
`damping=MIN/MAX` (1/5 s), `max_routes=N` (1024). -k and -S are vimage's (FreeBSD
stops route6d with a signal and dumps its table on SIGUSR1).
"""

from __future__ import annotations

from vimage.apps.route6d import COUNTERS, Params, Route6dService
from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import getopts
from vimage.cli.routed import control, rip_param, supply_flag

USAGE = "usage: route6d [-sqdkS] [-P parms]\n"


def parse_params(text: str, params: Params) -> None:
    """Apply `-P` words to `params` (routed's timers, damping and max_routes);
    ToolError names a bad one."""
    for word in filter(None, (w.strip() for w in text.split(","))):
        name, eq, value = word.partition("=")
        try:
            if not rip_param(name, eq, value, params):
                raise ValueError
        except ValueError:
            raise ToolError(f"bad \"{word}\" in \"-P {text}\"") from None


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "sqdkSP:")
    if args:
        raise UsageError(f"bad operand: {args[0]}", synopsis=True)
    service = ctx.vnet.kernel.service(Route6dService)
    flags = {o for o, _ in opts}
    if control(ctx, service, flags):
        return 0
    params = Params(supply=supply_flag(flags))
    for opt, value in opts:
        if opt == "-P":
            parse_params(value, params)
    try:
        service.start(ctx.vnet, params)
    except OSError as exc:
        raise ToolError(exc.strerror or str(exc)) from None
    return 0


__all__ = ["COUNTERS", "main"]
