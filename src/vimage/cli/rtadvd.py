"""rtadvd(8): start the router advertisement daemon in the vnet, or stop it.

    rtadvd [-c FILE] IF ...   advertise on IF ... (rtadvd.conf(5) FILE, else defaults:
                              the prefixes of IF's global addresses) and return; the
                              daemon runs on the kernel loop (vimage.apps.rtadvd)
    rtadvd -k                 stop it (a final RA with router lifetime 0 on each link)
    rtadvd -s                 its status: the links, RAs sent, solicitations answered

The configuration file is read from the host's file system (`-` is standard input).
"""

from __future__ import annotations

from vimage.apps import rtadvd as app
from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import getopts

USAGE = """\
usage: rtadvd [-c configfile] interface ...
       rtadvd -k
       rtadvd -s
"""


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "c:ks")
    given = dict(opts)
    vnet = ctx.vnet
    daemon = app.running(vnet)
    if "-k" in given or "-s" in given:
        if args:
            raise UsageError(f"unexpected argument '{args[0]}'", synopsis=True)
        if daemon is None:
            raise ToolError("not running")
        if "-k" in given:
            daemon.stop()
            return 0
        for link in daemon.links.values():
            ctx.print(f"{link.ifp.name}: maxinterval={link.cfg.maxinterval} "
                      f"mininterval={link.cfg.min_interval} "
                      f"rltime={link.cfg.router_lifetime}")
        ctx.print(f"{daemon.sent} advertisements sent, {daemon.solicits} solicitations "
                  "answered")
        return 0
    if not args:
        raise UsageError(synopsis=True)
    if daemon is not None:
        raise ToolError("already running (rtadvd -k stops it)")
    conf = None
    path = given.get("-c")
    if path is not None:
        conf = _read(ctx, path)
    try:
        app.start(vnet, args, conf)
    except app.ConfigError as exc:
        raise ToolError(str(exc)) from exc
    return 0


def _read(ctx: Context, path: str) -> str:
    if path == "-":
        return (ctx.stdin or b"").decode()
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise ToolError(f"{path}: {exc.strerror}") from exc
