"""ngctl: netgraph(4) control, the part IMUNES scripts use (FreeBSD usr.sbin/ngctl).

    ngctl mkpeer [PATH] TYPE HOOK PEERHOOK   new TYPE node joined at PATH's HOOK
    ngctl connect [PATH] RELPATH HOOK PEERHOOK
    ngctl name PATH NAME
    ngctl rmhook [PATH] HOOK
    ngctl msg PATH CMD [ARGS]               setcfg/getcfg (pipe), getifname (eiface),
                                            setpersistent (hub, bridge)
    ngctl shutdown PATH
    ngctl list | ls
    ngctl show PATH
    ngctl -f FILE | -f -                    commands one a line (`#` comments)

Node types: eiface, hub, bridge, pipe (docs/ngctl.md says what each maps onto).
PATH: `NAME:`, `[ID]:`, `.` (this ngctl's socket node), optionally followed by
hook names (`NAME:hook`, `.:hook`) to reach the node at the other end; a bare HOOK
(no colon) is relative to `.`. The socket node and its hooks last one invocation.
"""

from __future__ import annotations

import shlex
from types import MappingProxyType

from vimage.cli import Context, ToolError, UsageError
from vimage.net.netgraph import Netgraph, Node, SocketNode

USAGE = """\
usage: ngctl [-f filename] [command ...]
commands: connect list ls mkpeer msg name rmhook show shutdown
"""


def main(ctx: Context, argv: list[str]) -> int:
    vnet = ctx.vnet
    lines: list[list[str]]
    if argv[:1] == ["-f"]:
        if len(argv) != 2:
            raise UsageError("-f needs one file name", synopsis=True)
        lines = _script(ctx, argv[1])
    elif argv and argv[0].startswith("-"):
        raise UsageError(f"illegal option -- {argv[0].lstrip('-')}", synopsis=True)
    elif not argv:
        raise UsageError("no command (interactive mode is not supported)", synopsis=True)
    else:
        lines = [argv]
    with vnet.kernel.sched.cond:
        graph: Netgraph = vnet.ng
        sock = SocketNode(graph)
        try:
            for words in lines:
                _command(ctx, graph, sock, words)
        finally:
            graph.shutdown(sock)  # ngctl exits: its socket node and hooks go
    return 0


def _script(ctx: Context, path: str) -> list[list[str]]:
    if path == "-":
        text = (ctx.stdin or b"").decode()
    else:
        try:
            with open(path) as f:
                text = f.read()
        except OSError as exc:
            raise ToolError(f"{path}: {exc.strerror}") from None
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            try:
                out.append(shlex.split(line))
            except ValueError as exc:
                raise ToolError(f"{line}: {exc}") from None
    return out


def _command(ctx: Context, graph: Netgraph, sock: SocketNode, words: list[str]) -> None:
    cmd, args = words[0], words[1:]
    handler = _COMMANDS.get(cmd)
    if handler is None:
        raise ToolError(f"{cmd}: unknown command")
    try:
        handler(ctx, graph, sock, args)
    except OSError as exc:
        raise ToolError(f"{cmd}: {exc.strerror or exc}") from None


def resolve(graph: Netgraph, sock: SocketNode, path: str) -> Node:
    """The node at `path` (ngctl's addressing: `NAME:hook.hook`, `.`, `[ID]:`)."""
    if ":" in path:
        head, _, rest = path.partition(":")
        node = sock if head == "." else graph.by_name(head)
        if node is None or (node.id not in graph.nodes and node is not sock):
            raise ToolError(f"{path}: No such file or directory")
    else:
        node, rest = sock, ("" if path == "." else path)
    for hook in filter(None, rest.split(".")):
        h = node.hooks.get(hook)
        if h is None or h.peer is None:
            raise ToolError(f"{path}: No such file or directory")
        node = h.peer.node
    return node


def _mkpeer(ctx: Context, graph: Netgraph, sock: SocketNode, args: list[str]) -> None:
    if len(args) == 3:
        args = [".", *args]
    if len(args) != 4:
        raise UsageError("mkpeer [path] type hook peerhook")
    path, type_, hook, peerhook = args
    node = resolve(graph, sock, path)
    node.check_hook(hook)
    new = graph.make(type_)
    try:
        graph.connect(node, hook, new, peerhook)
    except OSError:
        graph.shutdown(new)
        raise


def _connect(ctx: Context, graph: Netgraph, sock: SocketNode, args: list[str]) -> None:
    if len(args) == 3:
        args = [".", *args]
    if len(args) != 4:
        raise UsageError("connect [path] relpath hook peerhook")
    path, relpath, hook, peerhook = args
    node = resolve(graph, sock, path)
    if ":" in relpath:
        other = resolve(graph, sock, relpath)
    else:  # relative to `path`'s node
        other = node
        for h in filter(None, relpath.split(".")):
            if h == ".":
                continue
            hk = other.hooks.get(h)
            if hk is None or hk.peer is None:
                raise ToolError(f"{relpath}: No such file or directory")
            other = hk.peer.node
    graph.connect(node, hook, other, peerhook)


def _name(ctx: Context, graph: Netgraph, sock: SocketNode, args: list[str]) -> None:
    if len(args) != 2:
        raise UsageError("name path name")
    graph.name(resolve(graph, sock, args[0]), args[1])


def _rmhook(ctx: Context, graph: Netgraph, sock: SocketNode, args: list[str]) -> None:
    if len(args) == 1:
        args = [".", *args]
    if len(args) != 2:
        raise UsageError("rmhook [path] hook")
    graph.rmhook(resolve(graph, sock, args[0]), args[1])


def _msg(ctx: Context, graph: Netgraph, sock: SocketNode, args: list[str]) -> None:
    if len(args) < 2:
        raise UsageError("msg path command [args ...]")
    node = resolve(graph, sock, args[0])
    reply = node.msg(args[1], " ".join(args[2:]))
    if reply is not None:
        ctx.print(f'Rec\'d response "{args[1]}" (1) from "[{node.id:x}]:":')
        ctx.print(f"Args:\t{reply}")


def _shutdown(ctx: Context, graph: Netgraph, sock: SocketNode, args: list[str]) -> None:
    if len(args) != 1:
        raise UsageError("shutdown path")
    node = resolve(graph, sock, args[0])
    if node is sock:
        raise ToolError("shutdown: cannot shut down this ngctl's own socket node")
    graph.shutdown(node)


def _node_line(node: Node) -> str:
    return (f"  Name: {node.label:<15} Type: {node.TYPE:<15} ID: {node.id:08x}   "
            f"Num hooks: {len(node.hooks)}")


def _list(ctx: Context, graph: Netgraph, sock: SocketNode, args: list[str]) -> None:
    nodes = sorted(graph.nodes.values(), key=lambda n: n.id)
    ctx.print(f"There are {len(nodes)} total nodes:")
    for node in nodes:
        ctx.print(_node_line(node))


def _show(ctx: Context, graph: Netgraph, sock: SocketNode, args: list[str]) -> None:
    if len(args) != 1:
        raise UsageError("show path")
    node = resolve(graph, sock, args[0])
    ctx.print(_node_line(node))
    if node.hooks:
        ctx.print("  Local hook      Peer name       Peer type    Peer ID           Peer hook")
        ctx.print("  ----------      ---------       ---------    -------           ---------")
        for name, hook in sorted(node.hooks.items()):
            peer = hook.peer
            if peer is None:
                continue
            p = peer.node
            ctx.print(f"  {name:<15} {p.label:<15} {p.TYPE:<12} {p.id:08x}          "
                      f"{peer.name}")


_COMMANDS = MappingProxyType({
    "mkpeer": _mkpeer, "connect": _connect, "name": _name, "rmhook": _rmhook,
    "msg": _msg, "shutdown": _shutdown, "list": _list, "ls": _list, "show": _show,
})

