"""vimage(8): create, list, destroy and enter vnets held by the vimage daemon.

    vimage [--socket PATH] [-c | -m] NAME [param=value ...]
    vimage -d NAME
    vimage -l[rvj] [NAME]
    vimage -i NAME IFNAME [NEWNAME]
    vimage NAME [command ...]          (no command: a shell inside NAME)
    vimage TOOL [argument ...]         (a tool in the current vnet: ifconfig, route, ...)
    vimage create|modify|destroy|list|ifmove|exec|daemon|topo|gui ... (each with --help)
    vimage topo up FILE [-e NAME] | down NAME | list | show NAME | exec NAME NODE -- CMD
    vimage topo run FILE --duration S [--seed S] [--pcap DIR]  (mpirun -n N: docs/mpi.md)
    [mpirun -n N] vimage topo serve FILE [-e NAME] [--bind ADDR]  (until topo down NAME)
    vimage topo link NAME A B [bw X] [delay Y] ... | capture NAME A B -w FILE [-c N]

A first word that is a subcommand or a tool is one; anything else names a vnet
(`vimage exec NAME ...` reaches a vnet whose name is a tool's). Names are relative
to the current vnet: inside `vimage exec X`, `child` is X.child. This module is
kept light (no stack imports): it is also what the PATH shims run.
"""

from __future__ import annotations

import contextlib
import getopt
import ipaddress
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from vimage.cli import TOOLS, getopt_message
from vimage.ctl.client import Client, connect, daemon_pid, open_client
from vimage.ctl.protocol import MOVED, PERMISSION, UNAVAILABLE, CtlError, shown

USAGE = """\
usage: vimage [--socket PATH] [-c | -m] NAME [param=value ...]
       vimage -d NAME
       vimage -l[rvj] [NAME]
       vimage -i NAME IFNAME [NEWNAME]
       vimage NAME [command ...]
       vimage TOOL [argument ...]
       vimage create|modify|destroy|list|ifmove|exec|daemon|topo|gui ... (see --help of each)
"""

EX_USAGE = 64


class Usage(Exception):
    """A command-line mistake: exit status 64. A wrong option or operand is followed by
    the usage text (`synopsis`, as FreeBSD's usage()); a bad value is one line alone (as
    its errx(EX_USAGE, ...)): `Usage(message, synopsis=False)`."""

    def __init__(self, message: str = "", synopsis: bool = True) -> None:
        super().__init__(message)
        self.synopsis = synopsis


class Ctx:
    """What a command needs: the socket option and a connection made on first use."""

    def __init__(self, socket_option: str | None) -> None:
        self.socket_option = socket_option
        self._client: Client | None = None

    def client(self, autostart: bool | None = None) -> Client:
        if self._client is None:
            self._client = open_client(self.socket_option, autostart=autostart)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def followable(self, moved: CtlError) -> bool:
        """True if a `moved` answer names a daemon this command can go on with: on this
        host, and not from inside a vnet (a channel reaches its own daemon only)."""
        detail = moved.detail or {}
        return (isinstance(detail.get("socket"), str) and detail.get("host") ==
                socket.gethostname() and not (self._client is not None and self._client.scoped))

    def follow(self, moved: CtlError) -> None:
        """A `moved` answer (a node of `vimage topo serve` that another rank holds): go on
        with that rank's daemon, on this host; elsewhere, say where to run it."""
        detail = moved.detail or {}
        where, host = detail.get("socket"), detail.get("host")
        if not isinstance(where, str) or (self._client is not None and self._client.scoped):
            raise moved
        if not self.followable(moved):
            raise CtlError(UNAVAILABLE, f"{moved.message}; run this on host {host} with "
                                        f"vimage --socket {where}")
        from vimage.ctl import paths

        self.close()
        self._client = connect(paths.resolve(where), autostart=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        socket_option, argv = _socket_option(argv)
    except Usage as exc:
        return _usage_error(exc)
    ctx = Ctx(socket_option)
    try:
        return dispatch(ctx, argv)
    except Usage as exc:
        return _usage_error(exc)
    except CtlError as exc:
        print(f"vimage: {exc.message}", file=sys.stderr)
        return 77 if exc.code == PERMISSION else 1
    except UnicodeError as exc:  # bytes that are not UTF-8 met text that must be (a bug)
        print(f"vimage: {shown(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        ctx.close()


def shim_main(name: str, argv: list[str]) -> int:
    """A PATH shim: `ifconfig ARGS` inside a vnet is `vimage ifconfig ARGS`."""
    return main(argv if name == "vimage" else [name, *argv])


def _usage_error(exc: Usage) -> int:
    message = str(exc)
    if message:
        print(f"vimage: {shown(message)}", file=sys.stderr)
    if exc.synopsis or not message:
        sys.stderr.write(USAGE)
    return EX_USAGE


def _socket_option(argv: list[str]) -> tuple[str | None, list[str]]:
    if argv and argv[0] == "--socket":
        if len(argv) < 2:
            raise Usage("--socket needs a path")
        return argv[1], argv[2:]
    if argv and argv[0].startswith("--socket="):
        return argv[0].partition("=")[2], argv[1:]
    return None, argv


def dispatch(ctx: Ctx, argv: list[str]) -> int:
    if not argv:
        raise Usage("")
    first = argv[0]
    if first in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if first in SUBCOMMANDS:
        return SUBCOMMANDS[first](ctx, argv[1:])
    if first in TOOLS:
        return run_tool(ctx, "", argv)
    if first == "--":
        if len(argv) < 2:
            raise Usage("a vnet name must follow --")
        return enter(ctx, argv[1], argv[2:])
    if first.startswith("-"):
        return classic(ctx, argv)
    return enter(ctx, first, argv[1:])


# -- the vimage(8) option forms -------------------------------------------------------------
def classic(ctx: Ctx, argv: list[str]) -> int:
    try:
        opts, args = getopt.getopt(argv, "cdijlmrv")
    except getopt.GetoptError as exc:
        raise Usage(getopt_message(exc)) from None
    command = None
    recursive, verbose = False, 0
    for opt, _ in opts:
        if opt in ("-c", "-d", "-i", "-l", "-m"):
            if command not in (None, opt):
                raise Usage(f"{command} and {opt} do not go together")
            command = opt
        elif opt == "-r":
            recursive = True
        elif opt == "-v":
            verbose += 1
        elif opt == "-j":
            verbose = JSON
    if command != "-l" and (recursive or verbose):
        raise Usage("-r, -v and -j go with -l")
    if command is None:
        raise Usage("")
    if command == "-l":
        if len(args) > 1:
            raise Usage("-l takes at most one vnet name")
        return do_list(ctx, args[0] if args else "", recursive, verbose)
    if command == "-c":
        if not args:
            raise Usage("-c needs a vnet name")
        return do_create(ctx, args[0], args[1:])
    if command == "-m":
        if len(args) < 2:
            raise Usage("-m needs a vnet name and param=value")
        return do_modify(ctx, args[0], args[1:])
    if command == "-d":
        if len(args) != 1:
            raise Usage("-d takes one vnet name")
        return do_destroy(ctx, args[0])
    if not 2 <= len(args) <= 3:
        raise Usage("-i takes a vnet name, an interface and maybe a new name")
    return do_ifmove(ctx, *args)


def parse_params(words: list[str]) -> dict[str, str]:
    """param=value words; `cpu.max=QUOTA PERIOD` may be two words, as cgroup v2 writes
    cpu.max (a number right after cpu.max=QUOTA is its period)."""
    params: dict[str, str] = {}
    last = ""
    for word in words:
        name, eq, value = word.partition("=")
        if not eq and last == "cpu.max" and word.isdigit() and " " not in params[last]:
            params[last] += f" {word}"
            continue
        if not eq or not name or not value:
            raise Usage(f"bad parameter {word!r} (use param=value)")
        params[name] = value
        last = name
    return params


def do_create(ctx: Ctx, name: str, words: list[str]) -> int:
    ctx.client().request("create", name=name, params=parse_params(words))
    return 0


def do_modify(ctx: Ctx, name: str, words: list[str]) -> int:
    ctx.client().request("modify", name=name, params=parse_params(words))
    return 0


def do_destroy(ctx: Ctx, name: str) -> int:
    ctx.client().request("destroy", name=name)
    return 0


def do_ifmove(ctx: Ctx, name: str, ifname: str, newname: str = "") -> int:
    reply = ctx.client().request("ifmove", vnet=name, ifname=ifname, newname=newname)
    print(f"{reply['ifname']}@{name}")
    return 0


def do_list(ctx: Ctx, name: str, recursive: bool, verbose: int) -> int:
    reply = ctx.client().request("list", name=name, recursive=recursive)
    if verbose == JSON:
        import json

        sys.stdout.write(json.dumps({"vnets": reply["vnets"]}, indent=2) + "\n")
        return 0
    sys.stdout.write(format_list(reply["vnets"], verbose))
    return 0


LIST_HEADER = ("Name", "Hostname", "Interfaces")
JSON = 3  # the `verbose` level of -j: every field, as JSON


def cpu_lines(row: dict[str, Any]) -> list[str]:
    """The -v lines of a vnet's CPU use (docs/vimage.md, "CPU accounting"): the total and
    its average share of a CPU since the vnet was made, what it went to, the load
    averages (uptime(1)'s layout), the weight and, with a cgroup, its cpu.max."""
    lines = [f"    CPU usage: {row['cpu']:.3f} s ({row['cpu_percent']:.2f}%): "
             f"loop {row['cpu_loop']:.3f} s ({plural(row['units'], 'unit')}), "
             f"tasks {row['cpu_tasks']:.3f} s ({plural(row['steps'], 'step')}), "
             f"processes {row['cpu_procs']:.3f} s",
             "    Load average: " + ", ".join(f"{x:.2f}" for x in row["loadavg"]),
             f"    CPU weight: {row['weight']}"]
    if row.get("cpu_max"):
        lines.append(f"    CPU max: {row['cpu_max']}")
    if row.get("cgroup"):
        lines.append(f"    Cgroup: {row['cgroup']}")
    return lines


def format_list(rows: list[dict[str, Any]], verbose: int) -> str:
    """The vimage -l layout: a table under a header, which is there even with no vnet
    (as jls(8) prints its header); with -v a block per vnet; -j (or -vv) adds ids.
    No line ends in a space (an empty field is dropped at the end of its line)."""
    if not verbose:
        return format_table([LIST_HEADER, *([row["name"], row["hostname"],
                                             " ".join(row["interfaces"])] for row in rows)])
    lines: list[str] = []
    for row in rows:
        lines += [f"{row['name']}:", "    Path: /", f"    Hostname: {row['hostname']}",
                  f"    Domainname: {row['domainname']}", f"    Children: {row['children']}"]
        if verbose >= 2:
            lines += [f"    Children limit: {row['children_max']}", f"    JID: {row['jid']}",
                      f"    PJID: {row['pjid']}"]
        lines.append(f"    Interfaces: {' '.join(row['interfaces'])}")
        if "cpu" in row:  # a daemon older than CPU accounting has none
            lines += cpu_lines(row)
    return "".join(line.rstrip() + "\n" for line in lines)


def format_table(rows: list[tuple[str, ...] | list[str]]) -> str:
    """Columns two spaces apart, each as wide as its widest cell; the last one unpadded."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    out = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        out.append("  ".join([*cells, row[-1]]).rstrip() + "\n")
    return "".join(out)


def plural(count: int, noun: str) -> str:
    """`1 vnet`, `2 vnets`, `0 vnets`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


# -- tools and processes ----------------------------------------------------------------------
def run_tool(ctx: Ctx, vnet: str, argv: list[str]) -> int:
    try:
        status, output = ctx.client().tool(argv, vnet)
    except CtlError as exc:
        if exc.code != MOVED:
            raise
        ctx.follow(exc)
        status, output = ctx.client().tool(argv, vnet)
    sys.stdout.write(output)
    sys.stdout.flush()
    return status


def enter(ctx: Ctx, name: str, command: list[str]) -> int:
    """`vimage NAME [command ...]`: a tool runs in the daemon, anything else as a process."""
    if command and command[0] == "--":
        command = command[1:]
    if command and command[0] in TOOLS:
        return run_tool(ctx, name, command)
    return run_exec(ctx, name, command)


def run_exec(ctx: Ctx, name: str, command: list[str], user: str | None = None) -> int:
    """Run `command` (default: $SHELL) with $VIMAGE, a channel scoped to NAME in
    $VIMAGE_CTL_FD and the tool shims first on PATH; its exit status is ours."""
    from vimage.ctl import shims

    if user is not None and os.geteuid() != 0:
        raise CtlError(PERMISSION, "-u needs root")
    interactive = not command
    if interactive:
        command = [os.environ.get("SHELL") or "/bin/sh"]
    try:
        reply, fds = ctx.client().call("exec", vnet=name)
    except CtlError as exc:
        if exc.code != MOVED:
            raise
        ctx.follow(exc)
        reply, fds = ctx.client().call("exec", vnet=name)
    if len(fds) != 1:
        ctx.close()
        raise CtlError(UNAVAILABLE, "the daemon sent no channel")
    channel = fds[0]
    bindir = shims.make_dir()
    try:
        env = dict(os.environ)
        env.pop("VIMAGE_SOCKET", None)
        env.update(VIMAGE=reply["vnet"], VIMAGE_CTL_FD=str(channel),
                   PATH=os.pathsep.join((bindir, env.get("PATH") or os.defpath)),
                   # its sitecustomize puts Python programs' sockets in the vnet
                   PYTHONPATH=os.pathsep.join(p for p in (bindir, env.get("PYTHONPATH")) if p))
        kwargs: dict[str, Any] = {"preexec_fn": _die_with_parent()}
        if user is not None:
            kwargs.update(_as_user(user, env))
        if interactive and sys.stdin.isatty():
            print(f"Switched to vimage {name}")
            sys.stdout.flush()
        entered = _enter(ctx, name)
        proc: subprocess.Popen[bytes] | None = None
        try:
            proc = subprocess.Popen(command, env=env, pass_fds=(channel,), **kwargs)
        except FileNotFoundError:
            print(f"vimage: {command[0]}: command not found", file=sys.stderr)
            return 127
        except PermissionError:
            print(f"vimage: {command[0]}: permission denied", file=sys.stderr)
            return 126
        finally:
            os.close(channel)
            charge = _started(ctx, name, proc, entered)  # and we go back to our cgroup
            ctx.close()  # no connection held while the program runs
        status, cpu_usec = _wait(proc)
        if charge:
            _report(ctx, proc.pid, cpu_usec)
        return status
    finally:
        ctx.close()
        shims.remove_dir(bindir)


def _enter(ctx: Ctx, name: str) -> bool | None:
    """Ask the daemon to move this process into the cgroup of vnet NAME (ctl/cgroup.py)
    for the fork of its program, which is then born there. True if it did, False if
    there is no cgroup (the program's rusage is reported instead), None if the daemon
    does not know the op (an older one)."""
    try:
        return bool(ctx.client().request("exec_enter", vnet=name).get("cgroup"))
    except CtlError:
        return None


def _started(ctx: Ctx, name: str, proc: subprocess.Popen[bytes] | None,
             entered: bool | None) -> bool:
    """Tell the daemon the program is forked, or failed to start (this process goes back
    to its own cgroup); True if the program's CPU time is to be reported when it exits
    (no cgroup counts it)."""
    if entered is None:
        return False
    try:
        reply = ctx.client().request("exec_started", vnet=name,
                                     pid=proc.pid if proc is not None else 0)
    except CtlError:
        return False
    return not reply.get("cgroup")


def _report(ctx: Ctx, pid: int, cpu_usec: int) -> None:
    with contextlib.suppress(CtlError, OSError):
        ctx.client(autostart=False).request("exec_done", pid=pid, cpu_usec=cpu_usec)


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> Callable[[], None] | None:
    """What the child runs before exec: SIGKILL when this vimage dies, so a killed
    `vimage exec` leaves no program behind, out of anyone's control (as a jail's
    processes do not outlive it). Linux prctl(2) PR_SET_PDEATHSIG; it runs after the
    set-uid of `-u`, which would clear it. None where there is no prctl."""
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def child() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # it died before the prctl: too late to be told
            os.kill(os.getpid(), signal.SIGKILL)

    return child


def _as_user(user: str, env: dict[str, str]) -> dict[str, Any]:
    import pwd

    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise CtlError("not-found", f"unknown user {user}") from None
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    return {"user": pw.pw_uid, "group": pw.pw_gid,
            "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid)}


def _wait(proc: subprocess.Popen[bytes]) -> tuple[int, int]:
    """Wait like system(3): ^C and ^\\ are the child's business, not ours. Returns the
    exit status and the CPU time (µs, user and system) of the child and of the
    descendants it waited for, from wait4(2)'s rusage."""
    saved = [(s, signal.signal(s, signal.SIG_IGN)) for s in (signal.SIGINT, signal.SIGQUIT)]
    try:
        while True:
            try:
                _pid, wstatus, usage = os.wait4(proc.pid, 0)
                break
            except InterruptedError:
                continue
    finally:
        for signum, handler in saved:
            signal.signal(signum, handler)
    status = os.waitstatus_to_exitcode(wstatus)
    proc.returncode = status
    cpu_usec = int((usage.ru_utime + usage.ru_stime) * 1_000_000)
    return (128 - status if status < 0 else status), cpu_usec


# -- subcommands -------------------------------------------------------------------------------
def _parser(prog: str, description: str) -> Any:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> Any:
            raise Usage(f"{prog}: {message}")

    return Parser(prog=f"vimage {prog}", description=description)


def _parse(parser: Any, argv: list[str]) -> Any:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:  # --help
        raise _Exit(int(exc.code or 0)) from None


class _Exit(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _subcommand(func: Callable[[Ctx, list[str]], int]) -> Callable[[Ctx, list[str]], int]:
    def run(ctx: Ctx, argv: list[str]) -> int:
        try:
            return func(ctx, argv)
        except _Exit as exc:
            return exc.status
    run.__doc__ = func.__doc__
    return run


@_subcommand
def sub_create(ctx: Ctx, argv: list[str]) -> int:
    p = _parser("create", "Create vnet NAME (a.b is a child of a), as vimage -c. Parameters: "
                          "children.max=N (vnets its processes may create below it), "
                          "host.hostname=S, host.domainname=S, or any sysctl "
                          "(net.inet.ip.forwarding=1).")
    p.add_argument("name")
    p.add_argument("params", nargs="*", metavar="param=value")
    args = _parse(p, argv)
    return do_create(ctx, args.name, args.params)


@_subcommand
def sub_modify(ctx: Ctx, argv: list[str]) -> int:
    p = _parser("modify", "Change parameters of vnet NAME, as vimage -m.")
    p.add_argument("name")
    p.add_argument("params", nargs="+", metavar="param=value")
    args = _parse(p, argv)
    return do_modify(ctx, args.name, args.params)


@_subcommand
def sub_destroy(ctx: Ctx, argv: list[str]) -> int:
    p = _parser("destroy", "Destroy vnet NAME and its children, as vimage -d; interfaces "
                           "born elsewhere go back to their home vnet.")
    p.add_argument("name")
    return do_destroy(ctx, _parse(p, argv).name)


@_subcommand
def sub_list(ctx: Ctx, argv: list[str]) -> int:
    p = _parser("list", "List the vnets one level below the current one, as vimage -l.")
    p.add_argument("-r", action="store_true", help="the whole subtree")
    p.add_argument("-v", action="count", default=0,
                   help="details, CPU use and load (twice: ids and limits)")
    p.add_argument("-j", action="store_true", help="every field, as JSON")
    p.add_argument("name", nargs="?", default="", help="only this vnet (with -r: its subtree)")
    args = _parse(p, argv)
    return do_list(ctx, args.name, args.r, JSON if args.j else args.v)


@_subcommand
def sub_ifmove(ctx: Ctx, argv: list[str]) -> int:
    p = _parser("ifmove", "Move interface IFNAME from the current vnet to vnet NAME, "
                          "renamed NEWNAME if given, as vimage -i; prints IFNAME@NAME.")
    p.add_argument("name")
    p.add_argument("ifname")
    p.add_argument("newname", nargs="?", default="")
    args = _parse(p, argv)
    return do_ifmove(ctx, args.name, args.ifname, args.newname)


@_subcommand
def sub_exec(ctx: Ctx, argv: list[str]) -> int:
    import argparse

    p = _parser("exec", "Run a command (default: $SHELL) inside vnet NAME: $VIMAGE names the "
                        "vnet, $VIMAGE_CTL_FD holds a control channel scoped to it, and PATH "
                        "starts with ifconfig, route, netstat, ... acting on it.")
    p.add_argument("-u", metavar="USER", help="run as USER (root only)")
    p.add_argument("name")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = _parse(p, argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return run_exec(ctx, args.name, command, args.u)


@_subcommand
def sub_daemon(ctx: Ctx, argv: list[str]) -> int:
    p = _parser("daemon", "Start, stop or ask about vimaged (clients start it on first use; "
                          "VIMAGE_AUTOSTART=0 turns that off).")
    p.add_argument("action", choices=("start", "stop", "status"))
    action = _parse(p, argv).action
    from vimage.ctl import paths

    where = paths.resolve(ctx.socket_option)
    try:
        client = ctx.client(autostart=False)
    except CtlError as exc:
        if exc.code != UNAVAILABLE:
            raise
        if action == "start":
            connect(where, autostart=True).close()
            print(f"vimaged started as pid {daemon_pid(where)} ({shown(where.socket)})")
            return 0
        print(f"vimaged is not running ({shown(where.socket)})")
        return 1
    if action == "start":
        print(f"vimaged is already running as pid {client.info.get('pid')}")
        return 0
    if action == "stop":
        client.request("stop")
        print("vimaged stopped")
        return 0
    st = client.request("status")
    where_text = st.get("socket") or f"channel of vnet {st.get('vnet')}"
    extra = f", {plural(st['connections'], 'connection')}" if "connections" in st else ""
    print(f"vimaged is running as pid {st['pid']} ({where_text}, protocol {st['version']}, "
          f"up {st['uptime']:.1f} s, {plural(st['vnets'], 'vnet')}{extra})")
    return 0


TOPO_ACTIONS = "check|convert|run|serve|up|down|list|show|exec|link|capture"
LINK_KEYS = MappingProxyType({
    "bw": "bandwidth", "bandwidth": "bandwidth", "delay": "delay", "jitter": "jitter",
    "loss": "loss", "ber": "ber", "dup": "duplicate", "duplicate": "duplicate",
    "queue": "queue", "direct": "direct"})
"""Link parameter words of `vimage topo link` and the model fields they set."""


@_subcommand
def sub_topo(ctx: Ctx, argv: list[str]) -> int:
    import argparse

    p = _parser("topo", "Topology files and experiments (docs/emulator.md): check a file, "
                        "convert an IMUNES .imn file to our YAML format, or run it as an "
                        "experiment in vimaged, each node a vnet EXP.NODE.")
    actions = p.add_subparsers(dest="action", required=True, metavar=TOPO_ACTIONS)
    check = actions.add_parser("check", help="validate FILE (.yaml or .imn): one line per "
                                             "problem, status 1 if any")
    convert = actions.add_parser("convert", help="import FILE (.imn or .yaml) and write YAML")
    convert.add_argument("-o", dest="output", metavar="OUT.yaml", help="default: stdout")
    up = actions.add_parser("up", help="bring FILE up as an experiment (all or nothing)")
    up.add_argument("-e", dest="name", default="", help="experiment name (default: the "
                                                        "topology's name)")
    up.add_argument("--wait-converged", action="store_true",
                    help="return once the routing daemons have converged")
    up.add_argument("--timeout", type=int, default=60,
                    help="seconds --wait-converged waits (default 60)")
    up.add_argument("--skip-ipv6", action="store_true", help="configure IPv4 only")
    up.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    for sub in (check, convert, up):
        sub.add_argument("file")
        sub.add_argument("--skip-unsupported", action="store_true",
                         help="leave out .imn node types the emulator does not model")
    batch = actions.add_parser("run", help="run FILE in virtual time in this process, or "
                                           "split across the ranks of mpirun -n N "
                                           "(docs/mpi.md)")
    batch.add_argument("file")
    batch.add_argument("--duration", type=float, required=True, metavar="SECONDS",
                       help="seconds of virtual time")
    batch.add_argument("--seed", type=int, default=1, help="the kernels' seed (default 1)")
    batch.add_argument("--pcap", metavar="DIR", help="write one pcap per link into DIR")
    batch.add_argument("--skip-ipv6", action="store_true", help="configure IPv4 only")
    batch.add_argument("--summary-json", metavar="FILE", help="rank 0 writes the summary "
                                                              "(per-rank figures, jobs) here")
    batch.add_argument("--realtime", action="store_true",
                       help="the real clock; cut links as VXLAN tunnels between ranks")
    batch.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                       help="with --realtime: this host's address for the tunnels "
                            "(IPv4 or IPv6)")
    batch.add_argument("--remote", action="append", default=[], metavar="NODE=ADDR:PORT",
                       help="with --realtime: NODE is outside vimage, a VXLAN endpoint at "
                            "ADDR:PORT or [ADDR6]:PORT (e.g. a Linux vxlan device), each "
                            "of its links a VNI (link index + 1); repeatable")
    batch.add_argument("--skip-unsupported", action="store_true",
                       help="leave out .imn node types the emulator does not model")
    srv = actions.add_parser("serve", help="serve FILE as an experiment in real time from "
                                           "this process, or split across the ranks of "
                                           "mpirun -n N, until topo down (docs/mpi.md)")
    srv.add_argument("file")
    srv.add_argument("-e", "--name", dest="name", default="",
                     help="experiment name (default: the topology's name)")
    srv.add_argument("--seed", type=int, default=1, help="the kernels' seed (default 1)")
    srv.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                     help="this host's address for the tunnels and the ranks' control "
                          "connections (default 127.0.0.1)")
    srv.add_argument("--wait-converged", action="store_true",
                     help="say it is ready once the routing daemons have converged")
    srv.add_argument("--timeout", type=float, default=60,
                     help="seconds --wait-converged waits (default 60)")
    srv.add_argument("--skip-ipv6", action="store_true", help="configure IPv4 only")
    srv.add_argument("--skip-unsupported", action="store_true",
                     help="leave out .imn node types the emulator does not model")
    down = actions.add_parser("down", help="destroy experiment NAME and all its nodes")
    down.add_argument("name")
    actions.add_parser("list", help="the experiments")
    show = actions.add_parser("show", help="the nodes and links of experiment NAME, or one "
                                           "node, or the link between nodes A and B")
    show.add_argument("name")
    show.add_argument("node", nargs="?", metavar="NODE|A", help="one node (or A of a link)")
    show.add_argument("b", nargs="?", metavar="B", help="with A: the link between A and B")
    run = actions.add_parser("exec", help="run a tool or program in node NODE of NAME "
                                          "(as vimage exec NAME.NODE)")
    run.add_argument("name")
    run.add_argument("node")
    run.add_argument("command", nargs=argparse.REMAINDER)
    link = actions.add_parser("link", help="show or change the link between nodes A and B: "
                                           "bw|delay|jitter|loss|ber|dup|queue|direct VALUE "
                                           "(default: back to the default)")
    for sub in (link,):
        sub.add_argument("name")
        sub.add_argument("a")
        sub.add_argument("b")
    link.add_argument("words", nargs="*", metavar="PARAM VALUE")
    capture = actions.add_parser("capture", help="capture on the link between A and B, at "
                                                 "A's end, into a pcap file")
    capture.add_argument("name")
    capture.add_argument("a")
    capture.add_argument("b")
    capture.add_argument("-w", dest="file", required=True, metavar="FILE.pcap")
    capture.add_argument("-c", dest="count", metavar="N", help="stop after N packets")
    capture.add_argument("--duration", metavar="S", help="stop after S seconds")
    args = _parse(p, argv)
    action = args.action
    if action in ("check", "convert"):
        return topo_file(action, args.file, args.skip_unsupported,
                         getattr(args, "output", None))
    if action == "run":
        return topo_run(args)
    if action == "serve":
        return topo_serve(ctx, args)
    return TOPO_COMMANDS[action](ctx, args)


def topo_up(ctx: Ctx, args: Any) -> int:
    try:
        fd = os.open(args.file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        print(f"vimage topo: {shown(args.file)}: {exc.strerror}", file=sys.stderr)
        return 1
    label = shown(args.file)

    def progress(step: dict[str, Any]) -> None:
        if not args.quiet:
            print(f"vimage topo: {label}: {step.get('done')}/{step.get('total')} "
                  f"{step.get('what')}", file=sys.stderr, flush=True)

    try:
        reply, fds = ctx.client().call(
            "topo_up", fds=[fd], on_progress=progress, file=label, name=args.name,
            skip_ipv6=args.skip_ipv6, skip_unsupported=args.skip_unsupported,
            wait_converged=args.wait_converged, timeout=args.timeout)
    finally:
        os.close(fd)
    for extra in fds:
        os.close(extra)
    for warning in reply.get("warnings", ()):
        print(f"vimage topo: {reply['name']}: warning: {warning}", file=sys.stderr)
    converged = " (converged)" if reply.get("converged") else ""
    print(f"{reply['name']}: {plural(reply['nodes'], 'node')}, "
          f"{plural(reply['links'], 'link')} up{converged}")
    return 0


def topo_down(ctx: Ctx, args: Any) -> int:
    reply = ctx.client().request("topo_down", name=args.name)
    print(f"{reply['name']}: down ({plural(reply['nodes'], 'node')} destroyed)")
    return 0


def topo_list(ctx: Ctx, args: Any) -> int:
    rows = ctx.client().request("topo_list")["experiments"]
    sys.stdout.write(format_table([("Name", "Nodes", "Links", "Topology"), *(
        (r["name"], str(r["nodes"]), str(r["links"]), r["topology"]) for r in rows)]))
    return 0


def _params_text(link: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in link["shown"].items()) or "-"


def _ends_text(link: dict[str, Any]) -> str:
    return f"{link['a']}--{link['b']}"


def _counters_text(link: dict[str, Any]) -> str:
    return " ".join(f"{c['ifname']}:{c['opackets']}>/{c['ipackets']}<"
                    for c in link["counters"])


def topo_show(ctx: Ctx, args: Any) -> int:
    if args.b is not None:  # one link
        link = ctx.client().request("topo_show", name=args.name, a=args.node, b=args.b)["link"]
        sys.stdout.write(_links_table([link]))
        return 0
    if args.node is not None:  # one node
        sys.stdout.write(_nodes_table([topo_node(ctx, args.name, args.node)]))
        return 0
    reply = ctx.client().request("topo_show", name=args.name)
    print(f"experiment {reply['name']} (topology {reply['topology']}): "
          f"{plural(len(reply['nodes']), 'node')}, {plural(len(reply['links']), 'link')}")
    sys.stdout.write(_nodes_table(reply["nodes"]))
    if reply["links"]:
        sys.stdout.write(_links_table(reply["links"]))
    for warning in reply.get("warnings", ()):
        print(f"warning: {warning}")
    return 0


def _nodes_table(nodes: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [("Node", "Type", "Vnet", "Interfaces")]
    for node in nodes:
        ifaces = ", ".join(" ".join([i["name"], *i["addresses"]]) for i in node["interfaces"])
        rows.append((node["name"], node["type"], node["vnet"], ifaces))
    return format_table(rows)


def _links_table(links: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [("Link", "Parameters", "Packets out>/in<")]
    rows += [(_ends_text(lk), _params_text(lk), _counters_text(lk)) for lk in links]
    return format_table(rows)


def topo_node(ctx: Ctx, name: str, node: str) -> dict[str, Any]:
    return dict(ctx.client().request("topo_show", name=name, node=node)["node"])


def topo_exec(ctx: Ctx, args: Any) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    vnet = topo_node(ctx, args.name, args.node)["vnet"]
    return enter(ctx, vnet, command)


def topo_link(ctx: Ctx, args: Any) -> int:
    words = args.words
    if len(words) % 2:
        raise Usage(f"topo link: {words[-1]} needs a value", synopsis=False)
    params: dict[str, str | None] = {}
    for key, value in zip(words[::2], words[1::2], strict=True):
        if key not in LINK_KEYS:
            raise Usage(f"topo link: unknown parameter {key!r} "
                        f"({', '.join(sorted(set(LINK_KEYS)))})")
        params[LINK_KEYS[key]] = None if value == "default" else value
    client = ctx.client()
    if params:
        reply = client.request("topo_link", name=args.name, a=args.a, b=args.b, params=params)
    else:
        reply = client.request("topo_show", name=args.name, a=args.a, b=args.b)
    link = reply["link"]
    print(f"{_ends_text(link)}: {_params_text(link)}")
    return 0


def topo_capture(ctx: Ctx, args: Any) -> int:
    link = ctx.client().request("topo_show", name=args.name, a=args.a, b=args.b)["link"]
    end = next(e for e in link["ends"] if e["node"] == args.a)
    argv = ["tcpdump", "-i", end["ifname"], "-w", args.file]
    if args.count is not None:
        argv += ["-c", args.count]
    if args.duration is not None:
        argv += ["--duration", args.duration]
    try:
        status, output = ctx.client().tool(argv, end["vnet"])
    except CtlError as exc:
        if exc.code != MOVED:
            raise
        if not ctx.followable(exc):  # a rank of `topo serve` on another host
            return _capture_relayed(ctx, args)
        ctx.follow(exc)
        status, output = ctx.client().tool(argv, end["vnet"])
    sys.stdout.write(output)
    sys.stdout.flush()
    return status


def _capture_relayed(ctx: Ctx, args: Any) -> int:
    """`topo capture` of an end a rank on another host holds: the daemon we reach relays
    the frames (part_pcap) into FILE, opened here; tcpdump's lines, as for any capture."""
    from vimage.wire.pcap import linktype_name

    fields: dict[str, Any] = {}
    try:
        if args.count is not None:
            fields["count"] = int(args.count)
        if args.duration is not None:
            fields["duration"] = float(args.duration)
    except ValueError:
        raise Usage("topo capture: -c wants a number of packets, --duration seconds",
                    synopsis=False) from None
    try:
        fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        print(f"tcpdump: {shown(args.file)}: {exc.strerror}", file=sys.stderr)
        return 1
    try:
        reply, fds = ctx.client().call("part_pcap", fds=[fd], name=args.name, a=args.a,
                                       b=args.b, **fields)
    finally:
        os.close(fd)
    for extra in fds:
        os.close(extra)
    named = linktype_name(reply["linktype"])
    kind = f"link-type {named[0]} ({named[1]})" if named else f"link-type {reply['linktype']}"
    print(f"tcpdump: listening on {reply['ifname']}, {kind}, snapshot length "
          f"{reply['snaplen']} bytes")
    for key, what in (("captured", "captured"), ("received", "received by filter"),
                      ("dropped", "dropped by kernel")):
        print(f"{reply[key]} packet{'' if reply[key] == 1 else 's'} {what}")
    return 0


TOPO_COMMANDS: Mapping[str, Callable[[Ctx, Any], int]] = MappingProxyType({
    "up": topo_up, "down": topo_down, "list": topo_list, "show": topo_show, "exec": topo_exec,
    "link": topo_link, "capture": topo_capture,
})


def topo_run(args: Any) -> int:
    """`vimage topo run`: a batch run in virtual time, no daemon (vimage.emu.mpi)."""
    from vimage.emu import mpi as batch

    if not args.duration >= 0:
        raise Usage("topo run: --duration must be >= 0", synopsis=False)
    try:
        ipaddress.ip_address(args.bind)
    except ValueError:
        raise Usage(f"topo run: --bind {args.bind}: want an IPv4 or IPv6 address",
                    synopsis=False) from None
    topology = _load_topology(args.file, args.skip_unsupported)
    if topology is None:
        return 1
    return batch.main(topology, args.duration, args.seed, args.pcap, args.skip_ipv6,
                      args.summary_json, args.realtime, args.bind,
                      dict(_remote_endpoint(arg) for arg in args.remote))


def _load_topology(path: str, skip_unsupported: bool) -> Any:
    """The topology in `path` (.imn or YAML), or None once the error is printed."""
    from vimage.emu import TopologyError, imn, yamlfmt

    try:
        if path.endswith(".imn"):
            return imn.load(path, skip_unsupported=skip_unsupported)
        return yamlfmt.load(path)
    except (TopologyError, OSError) as exc:
        print(f"vimage topo: {exc}", file=sys.stderr)
        return None


def topo_serve(ctx: Ctx, args: Any) -> int:
    """`vimage topo serve`: the experiment in this process (each rank of mpirun its
    partition), served on the control socket until `topo down` (vimage.emu.mpi_serve)."""
    from vimage.emu import mpi_serve

    topology = _load_topology(args.file, args.skip_unsupported)
    if topology is None:
        return 1
    return mpi_serve.main(topology, ctx.socket_option, args.name or None, args.seed,
                          args.bind, args.skip_ipv6, args.wait_converged, args.timeout)


def _remote_endpoint(arg: str) -> tuple[str, tuple[str, int]]:
    """`topo run --remote NODE=ADDR:PORT` (IPv4) or `NODE=[ADDR]:PORT` (IPv6) ->
    (NODE, (ADDR, PORT))."""
    node, _, where = arg.partition("=")
    addr, _, port = where.rpartition(":")
    ipv6 = addr.startswith("[") and addr.endswith("]")
    if ipv6:
        addr = addr[1:-1]
    try:
        version = ipaddress.ip_address(addr).version
        number = int(port)
    except ValueError:
        version, number = 0, -1
    if not node or version != (6 if ipv6 else 4) or not 0 < number < 65536:
        raise Usage(f"topo run: --remote {arg}: want NODE=ADDR:PORT (IPv4) or "
                    "NODE=[ADDR]:PORT (IPv6)", synopsis=False)
    return node, (addr, number)


def topo_file(action: str, path: str, skip_unsupported: bool, output: str | None) -> int:
    """`vimage topo check|convert`: local work on a file, no daemon involved."""
    from vimage.emu import TopologyError, imn, yamlfmt

    warnings: list[str] = []
    try:
        if path.endswith(".imn"):
            topology = imn.load(path, skip_unsupported=skip_unsupported, warnings=warnings)
        else:
            topology = yamlfmt.load(path)
    except TopologyError as exc:
        for line in exc.lines:
            print(f"vimage topo: {line}", file=sys.stderr)
        return 1
    for warning in warnings:
        print(f"vimage topo: {path}: warning: {warning}", file=sys.stderr)
    if action == "check":
        print(f"{path}: {plural(len(topology.nodes), 'node')}, "
              f"{plural(len(topology.links), 'link')}")
        return 0
    text = yamlfmt.dumps(topology)
    if output is None:
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as out:
            out.write(text)
    return 0


@_subcommand
def sub_gui(ctx: Ctx, argv: list[str]) -> int:
    p = _parser("gui", "Serve the web GUI (docs/gui.md) on 127.0.0.1 and print its URL, with "
                       "a random token; the experiment runs in this process, in real time "
                       "(under mpirun -n N: partitioned across the ranks, rank 0 serving).")
    p.add_argument("file", nargs="?", help="topology file (.yaml or .imn); Save writes YAML")
    p.add_argument("--port", type=int, default=0, help="TCP port (default: any free one)")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="under mpirun: this host's address for the tunnels between ranks "
                        "and rank 0's requests (default 127.0.0.1)")
    p.add_argument("--seed", type=int, default=1, help="under mpirun: the kernels' seed")
    args = _parse(p, argv)
    try:
        from vimage.web.server import serve
    except ImportError as exc:
        print(f"vimage gui: {exc.name or exc} is missing: pip install 'vimage[gui]'",
              file=sys.stderr)
        return 1
    from vimage.emu import TopologyError
    from vimage.emu.mpi import RunError, under_mpirun, world

    try:
        if under_mpirun():
            comm = world()
            if comm.size > 1:
                from vimage.web.partitioned import serve_partitioned

                status = serve_partitioned(comm, args.file, args.port, args.bind, args.seed)
                if status != 0:  # a dead rank: MPI_Finalize could wait for it for ever
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(status)
                return status
        return serve(args.file, args.port)
    except (TopologyError, OSError, RunError) as exc:
        print(f"vimage gui: {exc}", file=sys.stderr)
        return 1


SUBCOMMANDS: Mapping[str, Callable[[Ctx, list[str]], int]] = MappingProxyType({
    "create": sub_create, "modify": sub_modify, "destroy": sub_destroy, "list": sub_list,
    "ifmove": sub_ifmove, "exec": sub_exec, "daemon": sub_daemon, "topo": sub_topo,
    "gui": sub_gui,
})


if __name__ == "__main__":
    sys.exit(main())
