"""FreeBSD-style userland tools run inside a vnet: `vnet.cmd("ifconfig -a")`.

Each tool is a function `main(ctx, argv) -> int` that writes to `ctx.out`; a
`UsageError` becomes a one-line message and exit status 64 (EX_USAGE), an
OSError or other `ToolError` a one-line message and status 1. Nothing raises out.

A tool runs under the kernel lock, unless its module sets `LOCKS_ITSELF = True`: then
its main() takes the lock itself for what needs the kernel and nothing else (tcpdump
-r reads a file, which may be a pipe that stays silent, and needs no kernel at all).
"""

from __future__ import annotations

import io
import shlex
from collections.abc import Mapping
from importlib import import_module
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from vimage.vnet import Vnet

TOOLS: tuple[str, ...] = (
    "arp",
    "fault",
    "hosts",
    "ifconfig",
    "iperf3",
    "netstat",
    "ping",
    "route",
    "sysctl",
    "tcpdump",
    "traceroute",
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
    def __init__(self, message: str) -> None:
        super().__init__(message, 64)


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
    try:
        if getattr(tool, "LOCKS_ITSELF", False):
            status = tool.main(ctx, argv[1:])
        else:
            with vnet.kernel.sched.cond:
                status = tool.main(ctx, argv[1:])
    except ToolError as exc:
        ctx.print(f"{name}: {exc}")
        status = exc.status
    except OSError as exc:
        ctx.print(f"{name}: {exc.strerror or exc}")
        status = 1
    except (ValueError, LookupError) as exc:
        ctx.print(f"{name}: {exc}")
        status = 1
    except KeyboardInterrupt:
        status = 130
    return CmdResult(status, ctx.out.getvalue())
