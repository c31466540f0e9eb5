"""FreeBSD-style userland tools run inside a vnet: `vnet.cmd("ifconfig -a")`.

Each tool is a module with a function `main(ctx, argv) -> int` that writes to
`ctx.out`, and a `USAGE` string: its synopsis, FreeBSD's usage() lines. A
`UsageError` becomes exit status 64 (EX_USAGE): its message (`ping: illegal option
-- z`) and, for a bad option or wrong operands, the usage lines after it, as
FreeBSD's tools print them. An OSError or other `ToolError` is a one-line message
and status 1. Nothing raises out.

`--help` as the first argument (and `-h`, unless the tool has its own -h: see
`HELP_OPTIONS`) prints the usage with status 0. FreeBSD's tools have no --help:
there it is a bad option (status 64); answering it is what Linux users expect.

Importing this package installs `run_command` as `vnet.cmd()` (`vimage.context.Userland`:
the core does not import the tools; the package's `__init__` imports this one).

A tool runs under the kernel lock, unless its module sets `LOCKS_ITSELF = True`: then
its main() takes the lock itself for what needs the kernel and nothing else (tcpdump
-r reads a file, which may be a pipe that stays silent, and needs no kernel at all).
"""

from __future__ import annotations

import getopt
import io
import shlex
from collections.abc import Mapping
from importlib import import_module
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from vimage.context import Userland

if TYPE_CHECKING:
    from vimage.vnet import Vnet

TOOLS: tuple[str, ...] = (
    "arp",
    "dnctl",
    "fault",
    "hosts",
    "ifconfig",
    "ipfw",
    "iperf3",
    "ndp",
    "netstat",
    "ngctl",
    "ping",
    "ping6",
    "route",
    "route6d",
    "routed",
    "rtadvd",
    "rtquery",
    "setfib",
    "setkey",
    "sysctl",
    "tcpdump",
    "traceroute",
    "traceroute6",
    "vlink",
)


class CmdResult(NamedTuple):
    status: int
    output: str

    @property
    def ok(self) -> bool:
        return self.status == 0

    def __str__(self) -> str:
        return self.output


class ToolError(Exception):
    """A failure reported as `tool: message`, exit status `status`."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class UsageError(ToolError):
    """A command-line mistake: exit status 64 (EX_USAGE).

    With `synopsis` the tool's USAGE follows the message, as FreeBSD's usage() does
    for a bad option or wrong operands; a bad value alone is one line, as its
    errx(EX_USAGE, ...). Without a message there is only the usage.
    """

    def __init__(self, message: str = "", synopsis: bool | None = None) -> None:
        super().__init__(message, 64)
        self.synopsis = not message if synopsis is None else synopsis


HELP_OPTIONS: tuple[str, ...] = ("--help", "-h")


def getopt_message(exc: getopt.GetoptError) -> str:
    """FreeBSD getopt(3)'s wording for a bad option (lib/libc/stdlib/getopt.c:
    `illegal option -- z`, `option requires an argument -- c`; getopt_long.c's for
    long options)."""
    opt, msg = exc.opt, exc.msg
    if not msg.startswith("option --"):
        if "requires" in msg:
            return f"option requires an argument -- {opt}"
        return f"illegal option -- {opt}"
    if "requires" in msg:
        return f"option `--{opt}' requires an argument"
    if "must not have" in msg:
        return f"option `--{opt}' doesn't allow an argument"
    if "unique prefix" in msg:
        return f"option `--{opt}' is ambiguous"
    return f"unrecognized option `--{opt}'"


def destroyed(vnet: Vnet) -> str:
    """Why a tool stopped when its vnet was destroyed while it ran (its sockets are
    closed then, and would otherwise say `Bad file descriptor`)."""
    return f"vnet {vnet.display_name} was destroyed"


def usage_of(name: str) -> str:
    """The usage lines of tool `name`, ending in a newline."""
    text: str = import_module(f"vimage.cli.{name}").USAGE
    return text if text.endswith("\n") else text + "\n"


class Context:
    """What a running tool sees: its vnet, its output stream, its name, its standard
    input (bytes, for a file operand `-`) and what to call its file operands in messages
    (vimaged passes files as /proc/self/fd/N but the user typed a path)."""

    __slots__ = ("labels", "name", "out", "stdin", "vnet")

    def __init__(self, vnet: Vnet, name: str, stdin: bytes | None = None,
                 labels: Mapping[str, str] | None = None) -> None:
        self.vnet = vnet
        self.name = name
        self.out = io.StringIO()
        self.stdin = stdin
        self.labels: Mapping[str, str] = MappingProxyType(dict(labels or {}))

    def print(self, *args: object) -> None:
        print(*args, file=self.out)

    def label(self, path: str) -> str:
        """The name of file operand `path` for messages."""
        return self.labels.get(path, path)


def locks_itself(name: str) -> bool:
    """True if tool `name` takes the kernel lock itself (see the module docstring)."""
    if name not in TOOLS:
        return False
    return bool(getattr(import_module(f"vimage.cli.{name}"), "LOCKS_ITSELF", False))


def run_command(vnet: Vnet, line: str | list[str], stdin: bytes | None = None,
                labels: Mapping[str, str] | None = None) -> CmdResult:
    """Run tool command `line` in `vnet`; `stdin` is what a file operand `-` reads."""
    try:
        argv = shlex.split(line) if isinstance(line, str) else [str(a) for a in line]
    except ValueError as exc:
        return CmdResult(64, f"vimage: {exc}\n")
    if not argv:
        return CmdResult(64, "vimage: empty command\n")
    name = argv[0]
    if name not in TOOLS:
        return CmdResult(127, f"vimage: {name}: command not found\n")
    ctx = Context(vnet, name, stdin, labels)
    if not vnet.alive:
        return CmdResult(1, f"{name}: vnet {vnet.display_name} is destroyed\n")
    tool = import_module(f"vimage.cli.{name}")
    if argv[1:2] and argv[1] in getattr(tool, "HELP_OPTIONS", HELP_OPTIONS):
        return CmdResult(0, usage_of(name))
    try:
        if locks_itself(name):
            status = tool.main(ctx, argv[1:])
        else:
            with vnet.kernel.sched.cond:
                status = tool.main(ctx, argv[1:])
    except UsageError as exc:
        if str(exc):
            ctx.print(f"{name}: {exc}")
        if exc.synopsis:
            ctx.out.write(usage_of(name))
        status = exc.status
    except ToolError as exc:
        ctx.print(f"{name}: {exc}")
        status = exc.status
    except OSError as exc:
        ctx.print(f"{name}: {destroyed(vnet) if not vnet.alive else exc.strerror or exc}")
        status = 1
    except (ValueError, LookupError) as exc:
        ctx.print(f"{name}: {exc}")
        status = 1
    except KeyboardInterrupt:
        status = 130
    return CmdResult(status, trim(ctx.out.getvalue()))


def trim(text: str) -> str:
    """`text` with no line ending in spaces (fixed-width columns pad the last one)."""
    if " \n" not in text:
        return text
    return "\n".join(line.rstrip(" ") for line in text.split("\n"))


Userland.install(cmd=run_command)
