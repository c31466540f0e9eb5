"""Cost of a control request through vimaged next to the same call in-process.

A `sysctl` read in a vnet: `vnet.cmd(...)` in this process, then the same tool request
to a private daemon over its socket (host connection and a channel scoped to the
vnet), an empty request (the protocol's floor), several clients at once, and whole
`vimage` command processes (the exec shim launcher and `python -m vimage.cli.vimage`).

Writes JSON (to stdout and, with --out, to a file). Run: python bench/bench_ctl.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from _report import report
from vimage.ctl import paths, shims
from vimage.ctl.client import Client, connect, connect_channel
from vimage.kernel import Kernel

ARGV = ["sysctl", "net.inet.ip.forwarding"]


def per_call_us(func: Callable[[], object], n: int) -> float:
    for _ in range(min(50, n)):  # warm up (imports, first connection)
        func()
    t0 = time.perf_counter()
    for _ in range(n):
        func()
    return (time.perf_counter() - t0) / n * 1e6


def in_process(n: int) -> dict[str, float]:
    kernel = Kernel(clock="real")
    kernel.start()
    try:
        vnet = kernel.create("bench")
        assert vnet.cmd(ARGV).ok
        return {"tool_us": per_call_us(lambda: vnet.cmd(ARGV), n)}
    finally:
        kernel.stop()


def through_daemon(where: paths.Paths, n: int, clients: int) -> dict[str, float]:
    with connect(where, autostart=True) as c:
        c.request("create", name="bench", params={})
        assert c.tool(ARGV, "bench") == (0, "net.inet.ip.forwarding: 0\n")
        out = {"tool_us": per_call_us(lambda: c.tool(ARGV, "bench"), n),
               "nop_us": per_call_us(lambda: c.request("nop"), n)}
        _, fds = c.call("exec", vnet="bench")
    try:
        with connect_channel(str(fds[0]), "bench") as scoped:
            out["channel_tool_us"] = per_call_us(lambda: scoped.tool(ARGV), n)
    finally:
        os.close(fds[0])
    out["concurrent_clients"] = clients
    out["concurrent_calls_per_s"] = concurrent_rate(where, n, clients)
    return out


def concurrent_rate(where: paths.Paths, n: int, clients: int) -> float:
    conns: list[Client] = [connect(where, autostart=False) for _ in range(clients)]
    each = max(1, n // clients)
    barrier = threading.Barrier(clients + 1)

    def work(c: Client) -> None:
        barrier.wait()
        for _ in range(each):
            c.tool(ARGV, "bench")

    threads = [threading.Thread(target=work, args=(c,)) for c in conns]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c in conns:
        c.close()
    return each * clients / elapsed


def command_ms(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def commands(where: paths.Paths, runs: int) -> dict[str, float]:
    env = {**os.environ, "VIMAGE_SOCKET": where.socket}
    bindir = shims.make_dir()
    try:
        return {
            "runs": runs,
            "python_S_startup_ms": command_ms([sys.executable, "-S", "-c", "pass"], env, runs),
            "shim_launcher_ms": command_ms([os.path.join(bindir, "vimage"), "bench", *ARGV],
                                           env, runs),
            "python_m_ms": command_ms([sys.executable, "-m", "vimage.cli.vimage", "bench",
                                       *ARGV], env, runs),
        }
    finally:
        shims.remove_dir(bindir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5000, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--runs", type=int, default=10, help="vimage command processes")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    local = in_process(args.n)
    directory = tempfile.mkdtemp(prefix="vimbench-", dir="/tmp")
    where = paths.resolve(os.path.join(directory, "ctl.sock"))
    try:
        daemon = through_daemon(where, args.n, args.clients)
        cli = commands(where, args.runs)
    finally:
        try:
            with connect(where, autostart=False) as c:
                c.request("stop")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    result = {
        "benchmark": "ctl",
        "request": " ".join(ARGV),
        "in_process": local,
        "daemon": daemon,
        "commands": cli,
        "ratio_daemon_to_in_process": daemon["tool_us"] / local["tool_us"],
    }
    report(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
