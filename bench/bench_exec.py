"""Sockets of `vimage exec` processes next to the same work in-process.

Two vnets a (10.0.0.1) and b (10.0.0.2) on an epair. Measured, both ways:
- a socket call's round trip: `getsockname()` (a control request to vimaged for a
  process; a method call in-process);
- a 1-byte TCP echo round trip between a and b (through the relay of both processes;
  in-process: two blocking sockets driven by the kernel from one thread);
- TCP bulk throughput from a to b (two processes; in-process: a sender thread and a
  receiver thread on blocking sockets with a background kernel thread).

Writes JSON (stdout and, with --out, a file) with the ratios. Run: python bench/bench_exec.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

from _report import report
from vimage import Kernel, topo

CLIENT = """
import json, socket, sys, time
n, size = int(sys.argv[1]), int(sys.argv[2])
s = socket.create_connection(("10.0.0.2", 7000))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
t0 = time.perf_counter()
for _ in range(n):
    s.getsockname()
call_us = (time.perf_counter() - t0) / n * 1e6
t0 = time.perf_counter()
for _ in range(n):
    s.sendall(b"x")
    s.recv(1)
echo_us = (time.perf_counter() - t0) / n * 1e6
s.sendall(b"B")
chunk = b"\\0" * 65536
sent = 0
t0 = time.perf_counter()
while sent < size:
    s.sendall(chunk)
    sent += len(chunk)
s.shutdown(socket.SHUT_WR)
s.recv(1)
mbit = sent * 8 / (time.perf_counter() - t0) / 1e6
print(json.dumps({"call_us": call_us, "echo_us": echo_us, "mbit_s": mbit}))
"""

SERVER = """
import socket
srv = socket.create_server(("0.0.0.0", 7000))
print("listening", flush=True)
conn, _ = srv.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    b = conn.recv(1)
    if b == b"B":
        break
    conn.sendall(b)
while conn.recv(1 << 20):
    pass
conn.sendall(b"k")
"""


def vimage_cmd(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "vimage.cli.vimage", *args], env=env,
                          check=True, capture_output=True, text=True).stdout


def exec_processes(n: int, size: int) -> dict[str, float]:
    directory = tempfile.mkdtemp(prefix="vimage-bench-")
    env = dict(os.environ, VIMAGE_SOCKET=os.path.join(directory, "ctl.sock"))
    try:
        vimage_cmd(env, "-c", "a")
        vimage_cmd(env, "-c", "b")
        end = vimage_cmd(env, "ifconfig", "epair", "create").strip()[:-1]
        vimage_cmd(env, "ifconfig", f"{end}a", "vnet", "a")
        vimage_cmd(env, "ifconfig", f"{end}b", "vnet", "b")
        vimage_cmd(env, "a", "ifconfig", f"{end}a", "10.0.0.1/24", "up")
        vimage_cmd(env, "b", "ifconfig", f"{end}b", "10.0.0.2/24", "up")
        for name, source in (("server.py", SERVER), ("client.py", CLIENT)):
            with open(os.path.join(directory, name), "w") as fh:
                fh.write(textwrap.dedent(source))
        server = subprocess.Popen(
            [sys.executable, "-m", "vimage.cli.vimage", "exec", "b", "--", sys.executable,
             os.path.join(directory, "server.py")], env=env, stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().startswith("listening")
        out = vimage_cmd(env, "exec", "a", "--", sys.executable,
                         os.path.join(directory, "client.py"), str(n), str(size))
        server.wait(60)
        return json.loads(out)
    finally:
        subprocess.run([sys.executable, "-m", "vimage.cli.vimage", "daemon", "stop"], env=env,
                       capture_output=True)
        shutil.rmtree(directory, ignore_errors=True)


def in_process(n: int, size: int) -> dict[str, float]:
    kernel = Kernel(clock="real", seed=1)
    a, b = kernel.create("a"), kernel.create("b")
    topo.connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    kernel.start()
    try:
        srv = b.socket()
        srv.bind(("0.0.0.0", 7000))
        srv.listen()
        cli = a.socket()
        cli.connect(("10.0.0.2", 7000))
        conn, _ = srv.accept()
        for s in (cli, conn):
            s.setsockopt(6, 1, 1)
        t0 = time.perf_counter()
        for _ in range(n):
            cli.getsockname()
        call_us = (time.perf_counter() - t0) / n * 1e6
        t0 = time.perf_counter()
        for _ in range(n):
            cli.sendall(b"x")
            conn.sendall(conn.recv(1))
            cli.recv(1)
        echo_us = (time.perf_counter() - t0) / n * 1e6

        def drain() -> None:
            while conn.recv(1 << 20):
                pass

        reader = threading.Thread(target=drain)
        reader.start()
        chunk = b"\0" * 65536
        sent = 0
        t0 = time.perf_counter()
        while sent < size:
            cli.sendall(chunk)
            sent += len(chunk)
        cli.shutdown(1)
        reader.join()
        mbit = sent * 8 / (time.perf_counter() - t0) / 1e6
        return {"call_us": call_us, "echo_us": echo_us, "mbit_s": mbit}
    finally:
        kernel.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--mbytes", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument("--out")
    args = parser.parse_args()
    n, size = (50, 1 << 20) if args.quick else (args.calls, args.mbytes << 20)
    local = in_process(n, size)
    remote = exec_processes(n, size)
    report({
        "benchmark": "exec",
        "in_process": local,
        "vimage_exec": remote,
        "ratio_call": remote["call_us"] / local["call_us"],
        "ratio_echo": remote["echo_us"] / local["echo_us"],
        "ratio_throughput": remote["mbit_s"] / local["mbit_s"],
    }, args.out)


if __name__ == "__main__":
    main()
