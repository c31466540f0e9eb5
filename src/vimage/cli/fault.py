"""fault: inject faults into the vnets below this one (any vnet from the base vnet).

    fault [list [-a]]                       active and scheduled faults, with counters
    fault log                               every fault that took effect, with its time
    fault partition A[,B...] C[,D...] [WHEN]
    fault heal [ID] [WHEN]                  one partition, or every active one
    fault cut IF [WHEN]                     nothing crosses the link, either way
    fault restore IF [WHEN]
    fault impair [-b] IF SETTING VALUE ... [WHEN]    the vlink settings, or `clear`
    fault crash NAME [WHEN]                 a silent stop: sockets reset, interfaces down
    fault restart NAME [WHEN]               interfaces up again, configuration kept

NAME is a vnet relative to this one (`h1` in vnet `lab` is `lab.h1`); IF is an
interface of this vnet or `NAME:IF`. WHEN is `at T` (kernel time) or `in T` (from
now); T is in seconds unless it ends in ms, us or s. `-b` impairs both ends.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError
from vimage.cli.vlink import KEYWORDS
from vimage.fault import Faults
from vimage.sched import NS_PER_S

if TYPE_CHECKING:
    from vimage.fault import Crash, Cut, Partition
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

USAGE = """\
usage: fault [list [-a]]
       fault log
       fault partition name[,name ...] name[,name ...] [when]
       fault heal [id] [when]
       fault cut | restore interface [when]
       fault impair [-b] interface setting value ... | clear [when]
       fault crash | restart name [when]
when: at T | in T (T in s, ms, us); setting: bw, delay, loss, ber, dup, queue
"""
_UNITS: tuple[tuple[str, int], ...] = (("ms", 1_000_000), ("us", 1_000), ("ns", 1),
                                       ("s", NS_PER_S))


def main(ctx: Context, argv: list[str]) -> int:
    faults = Faults.of(ctx.vnet.kernel)
    if not argv:
        argv = ["list"]
    command, args = argv[0], argv[1:]
    handler = dict(COMMANDS).get(command)
    if handler is None:
        if command.startswith("-"):
            raise UsageError(f"illegal option -- {command.lstrip('-')}", synopsis=True)
        raise UsageError(f"unknown command '{command}'", synopsis=True)
    handler(ctx, faults, args)
    return 0


# -- arguments -------------------------------------------------------------------------
def parse_when(ctx: Context, args: list[str]) -> tuple[list[str], float | None]:
    """Split a trailing `at T` / `in T` off `args`: (the rest, kernel time or None)."""
    if len(args) >= 2 and args[-2] in ("at", "in"):
        ns = parse_time_ns(args[-1])
        if args[-2] == "in":
            ns += ctx.vnet.kernel.now_ns()
        return args[:-2], ns / NS_PER_S
    if args and args[-1] in ("at", "in"):
        raise UsageError(f"'{args[-1]}' requires a time")
    return args, None


def parse_time_ns(text: str) -> int:
    t = text.strip().lower()
    scale = NS_PER_S
    for suffix, mult in _UNITS:
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], mult
            break
    try:
        value = float(t)
    except ValueError:
        raise ToolError(f"bad time '{text}'") from None
    if not value >= 0 or value == float("inf"):
        raise ToolError(f"bad time '{text}'")
    return round(value * scale)


def in_scope(ctx: Context, vnet: Vnet) -> bool:
    here = ctx.vnet
    return not here.name or vnet.name.startswith(f"{here.name}.")


def find_vnet(ctx: Context, name: str) -> Vnet:
    """A vnet named relative to this one, in its subtree (from the base vnet: any vnet)."""
    here = ctx.vnet
    kernel = here.kernel
    full = f"{here.name}.{name}" if here.name else name
    if not name or full not in kernel:
        raise ToolError(f"no such vnet: {name}")
    return kernel.get(full)


def relative(ctx: Context, vnet: Vnet) -> str:
    here = ctx.vnet.name
    if here and vnet.name.startswith(f"{here}."):
        return vnet.name[len(here) + 1:]
    return vnet.display_name


def find_iface(ctx: Context, text: str) -> Ifnet:
    name, colon, ifname = text.rpartition(":")
    vnet = find_vnet(ctx, name) if colon else ctx.vnet
    ifp = vnet.ifaces.get(ifname)
    if ifp is None:
        raise ToolError(f"interface {text} does not exist")
    if ifp.kind != "epair" or ifp.peer is None:
        raise ToolError(f"{text}: not an epair link")
    return ifp


def one(args: list[str], what: str) -> str:
    if len(args) != 1:
        raise UsageError(f"expected one {what}, got {len(args)} arguments")
    return args[0]


# -- commands ---------------------------------------------------------------------------
def cmd_partition(ctx: Context, faults: Faults, args: list[str]) -> None:
    args, at = parse_when(ctx, args)
    if len(args) != 2:
        raise UsageError()
    groups = []
    for word in args:
        names = word.split(",")
        if "" in names:
            raise UsageError(f"bad group '{word}': names joined by ','")
        groups.append([find_vnet(ctx, n) for n in names])
    part = faults.partition(groups[0], groups[1], at=at)
    ctx.print(f"partition {part.id}: {_groups(ctx, part)}")


def cmd_heal(ctx: Context, faults: Faults, args: list[str]) -> None:
    args, at = parse_when(ctx, args)
    if len(args) > 1:
        raise UsageError()
    if not args:
        if ctx.vnet.name:  # not the base vnet: only the partitions of this subtree
            parts = [p for p in faults.partitions if p.state in ("scheduled", "active")
                     and _part_in_scope(ctx, p)]
            if not parts and at is None:
                raise ToolError("no partition to heal")
            for part in parts:
                faults.heal(part, at=at)
            return
        if at is None and not faults.active_partitions():
            raise ToolError("no partition to heal")
        faults.heal(None, at=at)
        return
    if not args[0].isdigit():
        raise ToolError(f"bad partition id '{args[0]}'")
    try:
        part = faults.get_partition(int(args[0]))
    except LookupError:
        raise ToolError(f"no such partition: {args[0]}") from None
    if not _part_in_scope(ctx, part):
        raise ToolError(f"no such partition: {args[0]}")
    faults.heal(part, at=at)


def cmd_cut(ctx: Context, faults: Faults, args: list[str]) -> None:
    args, at = parse_when(ctx, args)
    faults.cut(find_iface(ctx, one(args, "interface")), at=at)


def cmd_restore(ctx: Context, faults: Faults, args: list[str]) -> None:
    args, at = parse_when(ctx, args)
    faults.restore(find_iface(ctx, one(args, "interface")), at=at)


def cmd_impair(ctx: Context, faults: Faults, args: list[str]) -> None:
    args, at = parse_when(ctx, args)
    both = bool(args) and args[0] == "-b"
    if both:
        args = args[1:]
    if not args or args[0].startswith("-"):
        raise UsageError()
    ifp = find_iface(ctx, args[0])
    words = args[1:]
    if words == ["clear"]:
        faults.impair(ifp, at=at, both=both, clear=True)
        return
    if not words:
        raise UsageError("no settings given (use bw, delay, loss, ber, dup, queue or clear)")
    keywords = dict(KEYWORDS)
    settings: dict[str, object] = {}
    for i in range(0, len(words), 2):
        word = words[i]
        key = keywords.get(word)
        if key is None:
            raise UsageError(f"unknown setting '{word}' (use bw, delay, loss, ber, dup, queue)")
        if i + 1 >= len(words):
            raise UsageError(f"'{word}' requires a value")
        if key in settings:
            raise UsageError(f"'{word}' given twice")
        settings[key] = words[i + 1]
    try:
        faults.impair(ifp, at=at, both=both, **settings)
    except ValueError as exc:
        raise ToolError(f"{args[0]}: {exc}") from None


def cmd_crash(ctx: Context, faults: Faults, args: list[str]) -> None:
    args, at = parse_when(ctx, args)
    faults.crash(find_vnet(ctx, one(args, "vnet name")), at=at)


def cmd_restart(ctx: Context, faults: Faults, args: list[str]) -> None:
    args, at = parse_when(ctx, args)
    faults.restart(find_vnet(ctx, one(args, "vnet name")), at=at)


def cmd_list(ctx: Context, faults: Faults, args: list[str]) -> None:
    if args not in ([], ["-a"]):
        raise UsageError()
    show_all = bool(args)
    pending = [e for e in faults.scheduled()  # first: it marks what died with its vnet
               if e.timer is not None and e.timer.owner is not None
               and in_scope(ctx, e.timer.owner)]

    def shown(state: str) -> bool:
        return show_all or state in ("active", "crashed")

    parts = [p for p in faults.partitions if shown(p.state) and _part_in_scope(ctx, p)]
    cuts = [c for c in faults.cuts if shown(c.state)
            and all(in_scope(ctx, e.vnet) for e in c.ends)]
    crashes = [c for c in faults.crashes if shown(c.state) and in_scope(ctx, c.vnet)]
    lines: list[str] = []
    if parts:
        lines.append("Partitions:")
        lines.append(f"{'ID':>4} {'State':<10} {'Since':>12} {'Until':>12} {'Drops':>8}  Groups")
        lines.extend(_part_row(ctx, p) for p in parts)
    if cuts:
        lines.append("Cut links:")
        lines.append(f"{'State':<10} {'Since':>12} {'Until':>12} {'Drops':>8}  Link")
        lines.extend(_cut_row(ctx, c) for c in cuts)
    if crashes:
        lines.append("Crashed vnets:")
        lines.append(f"{'State':<10} {'Since':>12} {'Until':>12} {'Drops':>8}  Vnet (reset)")
        lines.extend(_crash_row(ctx, c) for c in crashes)
    if pending:
        lines.append("Scheduled:")
        lines.append(f"{'At':>12}  Fault")
        lines.extend(f"{e.when:>12.6f}  {e.action} {e.target}" for e in pending)
    if not lines:
        lines.append("no faults")
    for line in lines:
        ctx.print(line)


def cmd_log(ctx: Context, faults: Faults, args: list[str]) -> None:
    if args:
        raise UsageError()
    for event in faults.events:
        ctx.print(f"{event.time:>12.6f}  {event.action} {event.target}")


COMMANDS: tuple[tuple[str, Callable[[Context, Faults, list[str]], None]], ...] = (
    ("list", cmd_list), ("log", cmd_log), ("partition", cmd_partition), ("heal", cmd_heal),
    ("cut", cmd_cut), ("restore", cmd_restore), ("impair", cmd_impair), ("crash", cmd_crash),
    ("restart", cmd_restart),
)


# -- formatting -------------------------------------------------------------------------
def _time(t: float | None) -> str:
    return "-" if t is None else f"{t:.6f}"


def _part_in_scope(ctx: Context, part: Partition) -> bool:
    return all(in_scope(ctx, v) for side in part.groups for v in side)


def _groups(ctx: Context, part: Partition) -> str:
    a, b = (",".join(relative(ctx, v) for v in side) for side in part.groups)
    return f"{a} | {b}"


def _part_row(ctx: Context, p: Partition) -> str:
    return (f"{p.id:>4} {p.state:<10} {_time(p.since):>12} {_time(p.until):>12} "
            f"{p.drops:>8}  {_groups(ctx, p)}")


def _cut_row(ctx: Context, c: Cut) -> str:
    link = " - ".join(f"{relative(ctx, e.vnet)}:{e.name}" for e in c.ends)
    return f"{c.state:<10} {_time(c.since):>12} {_time(c.until):>12} {c.drops:>8}  {link}"


def _crash_row(ctx: Context, c: Crash) -> str:
    reset = f"{c.conns} tcp, {c.listeners} listen, {c.sockets} udp/raw"
    return (f"{c.state:<10} {_time(c.since):>12} {_time(c.until):>12} {c.drops:>8}  "
            f"{relative(ctx, c.vnet)} ({reset})")
