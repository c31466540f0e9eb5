"""routed(8): start the RIP daemon in this vnet (vimage.apps.routed); it returns at once.

    routed [-s | -q] [-P parms] [-G gatewaysfile]   start
    routed -k                                       stop (withdraws its kernel routes)
    routed -S                                       status: the table and the counters

-s supplies routes (the default when net.inet.ip.forwarding is 1), -q never does.
-P takes routed(8)'s comma-separated parameters that vimage implements:
`ripv1`, `ripv2` (the default), `passwd=XXX`, `md5_passwd=XXX|KEYID`, and vimage's
timers `update=S`, `timeout=S`, `garbage=S` (30, 180, 120 s), `damping=MIN/MAX` (1/5 s),
`max_routes=N` (1024). -G reads an /etc/gateways-style file: `net DEST[/LEN] gateway GW
metric M [passive|active|external]`. -k and -S are vimage's (FreeBSD stops routed with a
signal and dumps it to a trace file).
"""

from __future__ import annotations

from typing import Any

from vimage.apps.routed import (
    COUNTERS,
    DaemonService,
    Params,
    RipParams,
    RoutedService,
    parse_gateways,
)
from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import getopts
from vimage.wire import rip

USAGE = ("usage: routed [-sqdkS] [-P parms] [-G gatewaysfile] [-T tracefile]\n")

_TIMERS = ("update", "timeout", "garbage")


def parse_params(text: str, params: Params) -> None:
    """Apply routed's `-P` words to `params`; ToolError names a bad one."""
    for word in filter(None, (w.strip() for w in text.split(","))):
        name, eq, value = word.partition("=")
        try:
            if rip_param(name, eq, value, params):
                pass
            elif name in ("ripv1", "ripv2") and not eq:
                params.version = int(name[-1])
            elif name == "passwd" and eq:
                params.passwd = rip.password_bytes(value)
            elif name == "md5_passwd" and eq:
                key, _, keyid = value.partition("|")
                params.md5_key = key.encode()[:16]
                params.md5_keyid = int(keyid or "0")
                if not 0 <= params.md5_keyid <= 255:
                    raise ValueError
            else:
                raise ValueError
        except ValueError:
            raise ToolError(f"bad \"{word}\" in \"-P {text}\"") from None


def rip_param(name: str, eq: str, value: str, params: RipParams) -> bool:
    """Apply one of the `-P` words routed and route6d share (the timers, damping,
    max_routes): False if `name` is none of them; ValueError for a bad value."""
    if name in _TIMERS and eq:
        setattr(params, name, float(value))
        if not 0.01 <= getattr(params, name) <= 1e6:  # a sane timer, not a spin
            raise ValueError
    elif name == "damping" and eq:
        low, _, high = value.partition("/")
        params.damp_min, params.damp_max = float(low), float(high or low)
        if not 0 <= params.damp_min <= params.damp_max <= 1e6:
            raise ValueError
    elif name == "max_routes" and eq:
        params.max_routes = int(value)
        if params.max_routes < 0:
            raise ValueError
    else:
        return False
    return True


def control(ctx: Context, service: DaemonService[Any], flags: set[str]) -> bool:
    """The daemon controls routed and route6d share: `-k` stops the vnet's daemon, `-S`
    prints its status (ToolError if none runs); True if one of them was done."""
    if "-k" in flags:
        if not service.stop(ctx.vnet):
            raise ToolError("not running")
        return True
    if "-S" in flags:
        daemon = service.get(ctx.vnet)
        if daemon is None:
            raise ToolError("not running")
        for line in daemon.status():
            ctx.print(line)
        return True
    if "-s" in flags and "-q" in flags:
        raise UsageError("-s and -q are exclusive", synopsis=True)
    return False


def supply_flag(flags: set[str]) -> bool | None:
    """-s: supply routes; -q: only listen; neither: supply when forwarding."""
    return True if "-s" in flags else False if "-q" in flags else None


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "sqdkSP:G:T:")
    if args:
        raise UsageError(f"bad operand: {args[0]}", synopsis=True)
    service = ctx.vnet.kernel.service(RoutedService)
    flags = {o for o, _ in opts}
    if control(ctx, service, flags):
        return 0
    params = Params(supply=supply_flag(flags))
    for opt, value in opts:
        if opt == "-P":
            parse_params(value, params)
        elif opt == "-G":
            try:
                with open(value) as fh:
                    params.gateways = parse_gateways(fh.read())
            except OSError as exc:
                raise ToolError(f"{ctx.label(value)}: {exc.strerror}") from None
    service.start(ctx.vnet, params)
    return 0


__all__ = ["COUNTERS", "main"]
