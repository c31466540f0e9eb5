"""What a tool command may touch: delegated channels and file operands.

A channel scoped to vnet X runs tools in X's subtree only, and a tool's arguments
must not reach outside it either: `ifconfig IF vnet NAME` and `-vnet NAME` name a
vnet (resolved the way ifconfig resolves it), `destroy` of an epair takes its peer
along, and a TAP interface reaches the host's own network. Tools not reviewed here
are refused on delegated channels until they are.

File operands (tcpdump -r/-w) are never opened by path in the daemon, which may run
as another user in another directory: the client opens the file and passes the
descriptor, and the operand in the request reads `@fd:K`.
"""

from __future__ import annotations

import fcntl
import getopt
import os
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from vimage.ctl.names import within

if TYPE_CHECKING:
    from vimage.vnet import Vnet

REVIEWED_TOOLS = frozenset(
    ("arp", "fault", "hosts", "ifconfig", "iperf3", "netstat", "ping", "route", "sysctl",
     "tcpdump", "traceroute", "vlink"))
"""Tools whose arguments were checked for ways out of a vnet's subtree."""

_TAP_RE = re.compile(r"tap\d*\Z")
FD_OPERAND_RE = re.compile(r"@fd:(\d{1,2})\Z")


class FileSpec(NamedTuple):
    shortopts: str
    longopts: tuple[str, ...]
    modes: Mapping[str, str]  # option -> how the tool opens its operand ("rb", "wb")
    # a flag that reads standard input with no operand (setkey -c), and the option
    # taking a file it is the same as with the operand `-` (setkey -f -)
    stdin_flag: tuple[str, str] | None = None


FILE_OPTIONS: Mapping[str, FileSpec] = MappingProxyType({
    # the option letters of cli/tcpdump.py
    "tcpdump": FileSpec("c:ei:npqQ:r:s:StUvw:x", ("duration=", "time-stamp-precision="),
                        MappingProxyType({"-r": "rb", "-w": "wb"})),
    # cli/setkey.py: `-f FILE` (`-f -` is standard input)
    "setkey": FileSpec("46acCDdFf:hlnPvx", (), MappingProxyType({"-f": "rb"}), ("-c", "-f")),
})


def file_operands(argv: list[str]) -> tuple[list[str], list[tuple[int, str]]]:
    """`argv` rewritten so each option and value is its own word, and where the file
    operands are (index, mode); `argv` itself for a tool without file operands.
    ValueError if the options do not parse (then nobody can tell what is a file)."""
    spec = FILE_OPTIONS.get(argv[0]) if argv else None
    if spec is None:
        return list(argv), []
    try:
        opts, args = getopt.getopt(argv[1:], spec.shortopts, list(spec.longopts))
    except getopt.GetoptError as exc:  # the tool's own words: its message and usage
        from vimage.cli import getopt_message, usage_of

        text = f"{argv[0]}: {getopt_message(exc)}\n{usage_of(argv[0])}"
        raise ValueError(text.rstrip("\n")) from None
    out = [argv[0]]
    where: list[tuple[int, str]] = []
    for opt, val in opts:
        if opt.startswith("--"):
            out.append(f"{opt}={val}")
            continue
        if spec.stdin_flag is not None and opt == spec.stdin_flag[0]:
            out += [spec.stdin_flag[1], "-"]  # `setkey -c` reads what `setkey -f -` does
            where.append((len(out) - 1, spec.modes[spec.stdin_flag[1]]))
            continue
        out.append(opt)
        if opt[1] + ":" in spec.shortopts:
            if opt in spec.modes:
                where.append((len(out), spec.modes[opt]))
            out.append(val)
    if args and args[0].startswith("-"):
        out.append("--")
    out.extend(args)
    return out, where


def bind_files(argv: list[str], fds: list[int],
               names: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """The argv a tool runs with, each `@fd:K` operand become /proc/self/fd/N, and what
    to call those in messages: the K-th of `names` (the path the user typed), else `@fd:K`.
    A `-` operand to read is standard input (the request's `stdin`).

    Raises PermissionError for an operand given by path, or a descriptor not opened
    for what the tool does with it (reading, writing)."""
    out, where = file_operands(argv)
    labels: dict[str, str] = {}
    for index, mode in where:
        if out[index] == "-" and "r" in mode:
            continue
        match = FD_OPERAND_RE.match(out[index])
        if match is None or int(match.group(1)) >= len(fds):
            raise PermissionError(f"{argv[0]}: file operand {out[index]!r} must be passed as "
                                  "a descriptor (the vimage client does this)")
        fd = fds[int(match.group(1))]
        access = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
        wanted = (os.O_WRONLY, os.O_RDWR) if "w" in mode else (os.O_RDONLY, os.O_RDWR)
        if access not in wanted:
            raise PermissionError(f"{argv[0]}: descriptor for {out[index - 1]} is not open "
                                  f"for {'writing' if 'w' in mode else 'reading'}")
        out[index] = f"/proc/self/fd/{fd}"
        k = int(match.group(1))
        labels[out[index]] = names[k] if names is not None and k < len(names) else f"@fd:{k}"
    return out, labels


def screen(argv: list[str], here: Vnet, scope: Vnet) -> None:
    """PermissionError if tool command `argv`, run in `here`, would reach outside `scope`."""
    tool = argv[0]
    if tool not in REVIEWED_TOOLS:
        raise PermissionError(f"{tool}: not available on a delegated channel")
    if tool == "ifconfig":
        _screen_ifconfig(argv[1:], here, scope)
    elif tool == "fault":
        _screen_fault(argv[1:], here, scope)


def _screen_ifconfig(words: list[str], here: Vnet, scope: Vnet) -> None:
    for i, word in enumerate(words[:-1]):
        if word in ("vnet", "-vnet"):
            name = words[i + 1]
            try:
                target = here.resolve(name)
            except (LookupError, ValueError):
                continue  # ifconfig itself reports the unknown vnet
            if not within(target, scope):
                raise PermissionError(f"ifconfig: vnet {name} is outside this vnet's subtree")
    if "create" in words and any(_TAP_RE.match(w) for w in words):
        raise PermissionError("ifconfig: tap interfaces reach the host's network; "
                              "create them from the host")
    if "destroy" in words:
        for word in words:
            ifp = here.ifaces.get(word)
            if ifp is None:
                continue
            for end in (ifp, ifp.peer):
                if end is not None and not (within(end.vnet, scope) and within(end.home, scope)):
                    raise PermissionError(f"ifconfig: {word} (or its peer) belongs to a vnet "
                                          "outside this one's subtree; destroy it from there")


def _screen_fault(words: list[str], here: Vnet, scope: Vnet) -> None:
    """fault names vnets below `here` only; but `impair -b IF` shapes IF's peer too."""
    if words[:2] != ["impair", "-b"] or len(words) < 3:
        return
    name, colon, ifname = words[2].rpartition(":")
    kernel = here.kernel
    full = (f"{here.name}.{name}" if here.name else name) if colon else here.name
    vnet = kernel.get(full) if not colon or full in kernel else None
    ifp = vnet.ifaces.get(ifname) if vnet is not None else None
    if ifp is not None and ifp.peer is not None and not within(ifp.peer.vnet, scope):
        raise PermissionError(f"fault: the peer of {words[2]} is outside this vnet's subtree")
