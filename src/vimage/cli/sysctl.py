"""sysctl(8): read and write the vnet's kernel tunables.

    sysctl [-dehiNnq] -a
    sysctl [-dehiNnq] NAME[=VALUE] ...

A NAME that is not a leaf lists its whole subtree (`sysctl net.inet.ip`).
"""

from __future__ import annotations

from vimage.cli import Context, UsageError
from vimage.cli._util import getopts
from vimage.sysctl import Oid, SysctlError, matching, sysctl_get, sysctl_set

# sysctl(8)'s usage(), the options vimage implements
USAGE = """\
usage: sysctl [-dehiNnq] name[=value] ...
       sysctl [-dehNnq] -a
"""
# -h is sysctl's own option (human-readable numbers), so only --help asks for the usage
HELP_OPTIONS = ("--help",)


def main(ctx: Context, argv: list[str]) -> int:
    opts, args = getopts(argv, "adehiNnq")
    given = {o for o, _ in opts}
    vnet = ctx.vnet
    sep = "=" if "-e" in given else ": "

    def show(oid: Oid) -> None:
        if "-N" in given:
            ctx.print(oid.name)
        elif "-d" in given:
            ctx.print(oid.descr if "-n" in given else f"{oid.name}: {oid.descr}")
        else:
            value = sysctl_get(vnet, oid.name)
            ctx.print(value if "-n" in given else f"{oid.name}{sep}{value}")

    if "-a" in given:
        if args:
            raise UsageError(f"unexpected argument '{args[0]}' with -a", synopsis=True)
        for oid in matching(vnet, ""):
            show(oid)
        return 0
    if not args:
        raise UsageError()
    status = 0
    for arg in args:
        name, eq, value = arg.partition("=")
        name = name.rstrip(".")
        try:
            oids = matching(vnet, name) if name else []
            if not oids:
                raise SysctlError(f"unknown oid '{name}'")
            if not eq:
                for oid in oids:
                    show(oid)
                continue
            if len(oids) != 1 or oids[0].name != name:
                raise ValueError(f"oid '{name}' isn't a leaf node")
            old = sysctl_get(vnet, name)
            sysctl_set(vnet, name, value.strip())
            new = sysctl_get(vnet, name)
            ctx.print(f"{old} -> {new}" if "-n" in given else f"{name}{sep}{old} -> {new}")
        except SysctlError as exc:
            if "-i" in given:  # -i: unknown names are silently skipped
                continue
            if "-q" not in given:
                ctx.print(f"sysctl: {exc.args[0]}")
            status = 1
        except ValueError as exc:
            ctx.print(f"sysctl: {exc}")
            status = 1
    return status
