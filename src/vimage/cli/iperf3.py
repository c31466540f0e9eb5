"""iperf3(1), TCP tests only: a client and a server that interoperate with iperf3 3.x.

    iperf3 -s [-1J] [-p port] [-i interval] [-f format] [-B host]
    iperf3 -c host [-JNR] [-p port] [-t time | -n bytes[KMGT] | -k blocks] [-P parallel]
           [-l length[KMGT]] [-w window[KMGT]] [-b bitrate[KMGT]] [-i interval]
           [-f format]

The long options of iperf3 work too (--client, --reverse, --json, ...). The client
prints iperf3's text report (intervals, then the sender and receiver summary lines)
or, with -J, its JSON object; the server prints its side of each test. A server
blocks the caller: run `iperf3 -s -1` from a thread beside the kernel's (real time),
or use `vimage.apps.iperf3.serve()`, which runs in the kernel loop (virtual time
too). UDP (-u), --bidir and --omit are refused.
"""

from __future__ import annotations

import getopt
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING

from vimage.apps import iperf3 as app
from vimage.apps.iperf3.report import FORMATS
from vimage.cli import ToolError, UsageError, getopt_message
from vimage.cli._util import parse_addr
from vimage.socket.socket import AF_INET, AF_INET6

if TYPE_CHECKING:
    from vimage.cli import Context

SHORT = "c:sp:t:n:k:l:P:RJN1i:w:b:f:B:uO:V46"
LONG = ("client=", "server", "port=", "time=", "bytes=", "blockcount=", "length=",
        "parallel=", "reverse", "json", "no-delay", "one-off", "interval=", "window=",
        "bitrate=", "bandwidth=", "format=", "bind=", "udp", "omit=", "bidir", "verbose",
        "version4", "version6")
ALIASES = MappingProxyType({
    "--client": "-c", "--server": "-s", "--port": "-p", "--time": "-t", "--bytes": "-n",
    "--blockcount": "-k", "--length": "-l", "--parallel": "-P", "--reverse": "-R",
    "--json": "-J", "--no-delay": "-N", "--one-off": "-1", "--interval": "-i",
    "--window": "-w", "--bitrate": "-b", "--bandwidth": "-b", "--format": "-f",
    "--bind": "-B", "--udp": "-u", "--omit": "-O", "--verbose": "-V",
    "--version4": "-4", "--version6": "-6",
})
CLIENT_ONLY = "tnklPRNwb"
SERVER_ONLY = "1"
USAGE = """\
usage: iperf3 -s [-1J46] [-p port] [-i interval] [-f format] [-B host]
       iperf3 -c host [-JNR46] [-p port] [-t time | -n bytes[KMGT] | -k blocks]
              [-P parallel] [-l length[KMGT]] [-w window[KMGT]]
              [-b bitrate[KMGT]] [-i interval] [-f format]
       iperf3 -h | --help
"""
UNIT = MappingProxyType({"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40})
RATE_UNIT = MappingProxyType({"k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12})


def parameter_error(text: str) -> UsageError:
    return UsageError(f"parameter error - {text}")


def size_arg(opt: str, text: str, units: Mapping[str, int]) -> int:
    """A number with an optional K/M/G/T suffix (iperf3's unit_atoi, or unit_atof_rate)."""
    scale = units.get(text[-1:].lower(), 0) if text else 0
    number = text[:-1] if scale else text
    try:
        value = float(number)
    except ValueError:
        raise parameter_error(f"invalid value for {opt}: '{text}'") from None
    if not value >= 0 or value == float("inf"):
        raise parameter_error(f"invalid value for {opt}: '{text}'")
    return int(value * (scale or 1))


def int_arg(opt: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise parameter_error(f"invalid value for {opt}: '{text}'") from None


def main(ctx: Context, argv: list[str]) -> int:
    try:
        pairs, args = getopt.gnu_getopt(argv, SHORT, list(LONG))
    except getopt.GetoptError as exc:
        raise UsageError(getopt_message(exc), synopsis=True) from None
    if args:
        raise UsageError(f"parameter error - unexpected argument '{args[0]}'", synopsis=True)
    opts: dict[str, str] = {}
    for opt, val in pairs:
        if opt == "--bidir":
            raise parameter_error("bidirectional tests (--bidir) are not supported")
        opts[ALIASES.get(opt, opt)] = val
    if "-u" in opts:
        raise parameter_error("UDP tests are not supported (TCP only)")
    if "-O" in opts:
        raise parameter_error("omitting the first seconds (--omit) is not supported")
    opts.pop("-V", None)  # verbose adds nothing here
    client, server = "-c" in opts, "-s" in opts
    if client and server:
        raise parameter_error("cannot be both server and client")
    if not client and not server:
        raise UsageError("parameter error - must either be a client (-c) or server (-s)",
                         synopsis=True)
    if server and any(f"-{c}" in opts for c in CLIENT_ONLY):
        raise parameter_error("some option you are trying to set is client only")
    if client and any(f"-{c}" in opts for c in SERVER_ONLY):
        raise parameter_error("some option you are trying to set is server only")
    port = app.DEFAULT_PORT
    if "-p" in opts:
        port = int_arg("-p", opts["-p"])
        if not 1 <= port <= 65535:
            raise parameter_error("port number must be between 1 and 65535 inclusive")
    interval = 1.0
    if "-i" in opts:
        try:
            interval = float(opts["-i"])
        except ValueError:
            raise parameter_error(f"invalid value for -i: '{opts['-i']}'") from None
        if interval != 0 and not 0.1 <= interval <= 60:
            raise parameter_error("invalid report interval (min = 0.1, max = 60 seconds)")
    fmt = opts.get("-f", "a")  # adaptive bits unless told
    if "-f" in opts and (len(fmt) != 1 or fmt not in FORMATS):
        raise parameter_error("bad format specifier (valid formats are in the set [kmgtKMGT])")
    json_mode = "-J" in opts
    family = AF_INET6 if "-6" in opts else AF_INET if "-4" in opts else 0
    if server:
        return run_server(ctx, port, opts.get("-B", ""), "-1" in opts, interval, json_mode,
                          fmt, family)
    return run_client(ctx, opts, port, interval, json_mode, fmt, family)


def client_settings(opts: dict[str, str]) -> app.Settings:
    ends = [o for o in ("-t", "-n", "-k") if o in opts]
    if len(ends) > 1:
        raise parameter_error("only one test end condition (-t, -n, -k) may be specified")
    s = app.Settings()
    if "-t" in opts:
        s.duration = int_arg("-t", opts["-t"])
    if "-n" in opts:
        s.nbytes = size_arg("-n", opts["-n"], UNIT)
        s.duration = 0
    if "-k" in opts:
        s.blocks = size_arg("-k", opts["-k"], UNIT)
        s.duration = 0
    if "-l" in opts:
        s.blksize = size_arg("-l", opts["-l"], UNIT)
    if "-P" in opts:
        s.parallel = int_arg("-P", opts["-P"])
    if "-w" in opts:
        s.window = size_arg("-w", opts["-w"], UNIT)
    if "-b" in opts:
        s.rate = size_arg("-b", opts["-b"], RATE_UNIT)
    s.reverse = "-R" in opts
    s.nodelay = "-N" in opts
    try:
        s.check()
    except app.ParamError as exc:
        raise parameter_error(str(exc)) from None
    return s


def run_client(ctx: Context, opts: dict[str, str], port: int, interval: float,
               json_mode: bool, fmt: str, family: int = 0) -> int:
    settings = client_settings(opts)
    host = opts["-c"]
    task = app.start_client(ctx.vnet, host, port, settings=settings, interval=interval,
                            json_mode=json_mode, fmt=fmt, family=family)
    limit = (settings.duration + app.GRACE + 2 * app.CTRL_TIMEOUT if settings.duration
             else None)
    try:
        test = task.wait(limit)
    except (TimeoutError, RuntimeError) as exc:
        task.cancel()
        raise ToolError(f"error - {exc}") from None
    if json_mode:
        ctx.print(json.dumps(test.json(), indent="\t"))
    else:
        for line in test.lines:
            ctx.print(line)
    return 1 if test.error is not None else 0


def run_server(ctx: Context, port: int, bind: str, once: bool, interval: float,
               json_mode: bool, fmt: str, family: int = 0) -> int:
    if bind and ":" not in bind:
        parse_addr(bind, "host")
    try:
        server = app.serve(ctx.vnet, port, once=once, bind=bind, interval=interval,
                           json_mode=json_mode, fmt=fmt, family=family)
    except OSError as exc:
        raise ToolError(f"error - unable to start listener for connections: "
                        f"{exc.strerror or exc}") from None
    status = 0
    try:
        server.wait()
    except RuntimeError:  # virtual time with nobody to connect: nothing can ever happen
        ctx.print("\n".join(server.lines))
        raise ToolError("error - no client can connect: the kernel has nothing left to do "
                        "(in virtual time run the server with vimage.apps.iperf3.serve)"
                        ) from None
    except OSError as exc:
        ctx.print("\n".join(server.lines))
        raise ToolError(f"error - {exc.strerror or exc}") from None
    finally:
        server.close()
    for line in server.lines:
        ctx.print(line)
    if any("error" in r for r in server.results):
        status = 1
    return status
