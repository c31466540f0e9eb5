"""vimage's TCP against PyTCP (another pure-Python TCP/IP stack) on the same work.

Each stack runs as its own Python process behind a TAP device whose Linux side is in
a fresh network namespace; a Linux peer (plain Python sockets in `ip netns exec`)
connects to a server on the Python stack and either sends N MB to it ("rx": the
stack receives) or reads N MB from it ("tx": the stack sends). The server times the
connection from accept to the peer's FIN and reports its own CPU seconds
(getrusage, all threads). Trials are interleaved vimage/PyTCP; best and median are
reported with the ratio vimage/PyTCP. Both servers run under `python -O` (PyTCP's
way to switch off its debug logging; the same flag for vimage keeps it even).
Writes JSON. Needs root and /dev/net/tun; PyTCP from `pip install -e '.[bench]'`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from _report import report

STACK_IP, LINUX_IP, PORT = "10.77.0.1", "10.77.0.2", 5201
CHUNK = 1 << 16
TIMEOUT = 120.0  # one transfer, whichever stack

# The Linux peer: connect, then send or read `size` bytes, then close.
PEER = r"""
import socket, sys
addr, port, size, direction = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
s = socket.create_connection((addr, port), timeout=60)
if direction == "rx":
    buf = bytes(range(256)) * 256
    left = size
    while left:
        left -= s.send(buf[:min(len(buf), left)])
    s.shutdown(socket.SHUT_WR)
    s.settimeout(2)
    try:
        s.recv(1)  # the server's FIN; a stack that never sends one only costs the wait
    except OSError:
        pass
else:
    got = 0
    while got < size:
        chunk = s.recv(1 << 20)
        if not chunk:
            sys.exit("short read: %d of %d" % (got, size))
        got += len(chunk)
s.close()
"""


def requirements_missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root for network namespaces and TAP devices"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun (the TUN/TAP driver)"
    if shutil.which("ip") is None:
        return "needs the ip command (iproute2)"
    return None


def pytcp_missing() -> str | None:
    try:
        import pytcp  # noqa: F401
    except ImportError as exc:
        return f"pytcp not installed (pip install -e '.[bench]'): {exc}"
    return None


# ---- servers (run in a child process: python -O bench_pytcp.py --serve STACK ...) ----

def _cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _serve_loop(accept: Callable[[], object], recv: Callable[[object], bytes],
                send: Callable[[object, bytes], int], size: int, direction: str) -> dict:
    """Accept one connection, move `size` bytes, wait for the peer's FIN; time it."""
    conn = accept()
    t0, c0 = time.perf_counter(), _cpu()
    got = 0
    if direction == "rx":
        while True:
            chunk = recv(conn)
            if not chunk:
                break
            got += len(chunk)
        seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    else:
        payload = bytes(range(256)) * (CHUNK // 256)
        while got < size:
            got += send(conn, payload[:min(CHUNK, size - got)])
        while recv(conn):
            pass
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    conn.close()  # type: ignore[attr-defined]
    return {"bytes": got, "seconds": seconds, "cpu_s": cpu}


def serve_vimage(netns: str, size: int, direction: str) -> dict:
    from vimage.kernel import Kernel

    kernel = Kernel(clock="real")
    v = kernel.create("v")
    for cmd in ("ifconfig tap create netns " + netns, f"ifconfig tap0 {STACK_IP}/24 up",
                "sysctl net.inet.tcp.sendspace=1048576",
                "sysctl net.inet.tcp.recvspace=1048576"):
        res = v.cmd(cmd)
        if res.status:
            raise RuntimeError(f"{cmd}: {res.output.strip()}")
    linux = v.ifaces["tap0"].linux_name
    subprocess.run(["ip", "-n", netns, "addr", "add", f"{LINUX_IP}/24", "dev", linux], check=True)
    subprocess.run(["ip", "-n", netns, "link", "set", linux, "up"], check=True)
    srv = v.socket(2, 1)
    srv.bind(("", PORT))
    srv.listen(1)
    srv.settimeout(TIMEOUT)
    kernel.start()
    print("ready", flush=True)

    def accept() -> object:
        conn, _ = srv.accept()
        conn.settimeout(TIMEOUT)
        return conn

    try:
        return _serve_loop(accept, lambda c: c.recv(1 << 20), lambda c, d: c.send(d),
                           size, direction)
    finally:
        kernel.stop()


def serve_pytcp(netns: str, size: int, direction: str) -> dict:
    """Runs inside `netns` (ip netns exec): PyTCP's TAP appears there directly."""
    from pytcp import TcpIpStack, config
    from pytcp.lib import socket as psocket

    config.LOG_CHANEL = set()
    name = "vbp0"
    stack = TcpIpStack(interface=name, ip4_address=f"{STACK_IP}/24",
                       mac_address="02:00:00:77:77:01")
    config.IP6_SUPPORT = False
    subprocess.run(["ip", "addr", "add", f"{LINUX_IP}/24", "dev", name], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    stack.start()
    srv = psocket.socket(family=psocket.AF_INET4, type=psocket.SOCK_STREAM)
    srv.bind((STACK_IP, PORT))
    srv.listen()
    print("ready", flush=True)
    return _serve_loop(lambda: srv.accept()[0], lambda c: c.recv(), lambda c, d: c.send(d),
                       size, direction)


# ---- driver ----

def _run_one(stack: str, ns: str, size: int, direction: str) -> dict:
    """One transfer on `stack`, in a fresh namespace `ns`; everything removed afterwards."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    server = None
    try:
        cmd = [sys.executable, "-O", os.path.abspath(__file__), "--serve", stack,
               "--netns", ns, "--bytes", str(size), "--direction", direction]
        if stack == "pytcp":
            cmd = ["ip", "netns", "exec", ns, *cmd]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True)
        assert server.stdout is not None
        line = server.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{stack} server did not start: {line!r} "
                               f"{server.stderr.read()[-500:] if server.stderr else ''}")
        peer = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", PEER, STACK_IP,
                               str(PORT), str(size), direction],
                              capture_output=True, text=True, timeout=TIMEOUT)
        if peer.returncode:
            raise RuntimeError(f"linux peer failed: {peer.stderr.strip()[-300:]}")
        out, err = server.communicate(timeout=TIMEOUT)
        if server.returncode:
            raise RuntimeError(f"{stack} server failed: {err.strip()[-300:]}")
        result = json.loads(out.strip().splitlines()[-1])
        if result["bytes"] != size:
            raise RuntimeError(f"{stack}: moved {result['bytes']} of {size} bytes")
        result["mbit_s"] = round(size * 8 / result["seconds"] / 1e6, 2)
        result["mbit_per_cpu_s"] = round(size * 8 / max(result["cpu_s"], 1e-6) / 1e6, 2)
        result["seconds"] = round(result["seconds"], 4)
        result["cpu_s"] = round(result["cpu_s"], 4)
        return result
    finally:
        if server is not None and server.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)


def _summary(runs: list[dict]) -> dict:
    rates = [r["mbit_s"] for r in runs]
    return {"mbit_s_best": max(rates), "mbit_s_median": statistics.median(rates),
            "cpu_s_median": statistics.median(r["cpu_s"] for r in runs),
            "mbit_per_cpu_s_median": statistics.median(r["mbit_per_cpu_s"] for r in runs)}


def compare(size: int, trials: int, directions: list[str]) -> dict:
    result: dict[str, object] = {"bytes": size, "trials": trials}
    missing = pytcp_missing()
    for direction in directions:
        runs: dict[str, list[dict]] = {"vimage": [], "pytcp": []}
        errors: dict[str, str] = {}
        for trial in range(trials):
            for stack in ("vimage", "pytcp"):
                if (stack == "pytcp" and missing) or stack in errors:
                    continue
                ns = f"vbp-{os.getpid()}-{direction}-{trial}-{stack}"
                try:
                    runs[stack].append(_run_one(stack, ns, size, direction))
                except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as exc:
                    errors[stack] = str(exc)
        entry: dict[str, object] = {}
        for stack in ("vimage", "pytcp"):
            if stack == "pytcp" and missing:
                entry[stack] = {"skipped": missing}
            elif stack in errors and not runs[stack]:
                entry[stack] = {"skipped": errors[stack]}
            else:
                entry[stack] = {"runs": runs[stack], **_summary(runs[stack])}
                if stack in errors:
                    entry[stack]["error"] = errors[stack]  # type: ignore[index]
        v, p = entry["vimage"], entry["pytcp"]
        if "runs" in v and "runs" in p:  # type: ignore[operator]
            entry["ratio_vimage_over_pytcp"] = {
                k: round(v[k] / p[k], 2)  # type: ignore[index]
                for k in ("mbit_s_best", "mbit_s_median", "mbit_per_cpu_s_median")}
        result[direction] = entry
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=float, default=2.0, help="MB moved per transfer")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--direction", choices=("rx", "tx", "both"), default="both")
    ap.add_argument("--quick", action="store_true", help="1 MB, one trial, rx only")
    ap.add_argument("--out")
    ap.add_argument("--serve", choices=("vimage", "pytcp"), help=argparse.SUPPRESS)
    ap.add_argument("--netns", help=argparse.SUPPRESS)
    ap.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:  # child process: one server, JSON on the last line, then exit hard
        serve = serve_vimage if args.serve == "vimage" else serve_pytcp
        print(json.dumps(serve(args.netns, args.bytes, args.direction)), flush=True)
        os._exit(0)  # PyTCP's threads are not daemons and have no clean stop here
    if args.quick:
        args.mb, args.trials, args.direction = 1.0, 1, "rx"
    directions = ["rx", "tx"] if args.direction == "both" else [args.direction]
    missing = requirements_missing()
    if missing:
        report({"benchmark": "tcp_vs_pytcp", "skipped": missing}, args.out)
        return
    result = {"benchmark": "tcp_vs_pytcp",
              **compare(int(args.mb * 1_000_000), args.trials, directions)}
    report(result, args.out)


if __name__ == "__main__":
    main()
