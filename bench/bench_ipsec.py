"""TCP throughput through ESP (AES-GCM-16, and AES-CBC + HMAC-SHA-256-128), gif, GRE and
gif protected by ESP, against the plain link, side by side in one run.

Two vnets joined by an epair (192.0.2.0/24); a bulk TCP transfer from a to b over the
plain link, through transport-mode ESP between the same addresses, and across a gif or
GRE tunnel (inner 10.0.0.0/24), in virtual time (no link limits: the figure is the
stack's CPU cost per byte, encryption included). Reports wall and CPU seconds, Mbit/s
per wall and per CPU second, and each path's ratio to the plain link per CPU second.
Writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import time

from _report import report
from bench_tunnel import _setup as tunnel_setup
from vimage.kernel import Kernel
from vimage.vnet import Vnet

CHUNK = 1 << 16
PATHS = ("plain", "gif", "gre", "esp-gcm", "esp-cbc", "gif+esp-gcm")
GCM = "-E aes-gcm-16 0x" + bytes(range(1, 21)).hex()
CBC = "-E aes-cbc 0x" + bytes(range(16)).hex() + " -A hmac-sha2-256 0x" + bytes(32).hex()


def _setkey(v: Vnet, here: str, there: str, alg: str, upper: str) -> None:
    conf = (f"add 192.0.2.1 192.0.2.2 esp 0x1000 -m transport {alg};\n"
            f"add 192.0.2.2 192.0.2.1 esp 0x1001 -m transport {alg};\n"
            f"spdadd {here} {there} {upper} -P out ipsec esp/transport//require;\n"
            f"spdadd {there} {here} {upper} -P in ipsec esp/transport//require;\n")
    result = v.cmd("setkey -c", stdin=conf.encode())
    if result.status:
        raise RuntimeError(result.output)


def _setup(path: str) -> tuple[Kernel, Vnet, Vnet, str]:
    base, _, esp = path.partition("esp-")
    base = base.rstrip("+") or "plain"
    kernel, a, b, dst = tunnel_setup(base)
    if esp:
        alg = GCM if esp == "gcm" else CBC
        upper = "ipencap" if base == "gif" else "any"
        _setkey(a, "192.0.2.1", "192.0.2.2", alg, upper)
        _setkey(b, "192.0.2.2", "192.0.2.1", alg, upper)
    return kernel, a, b, dst


def transfer(path: str, size: int) -> dict[str, object]:
    kernel, a, b, dst = _setup(path)
    srv = b.socket(2, 1)
    srv.bind(("", 5001))
    srv.listen(1)
    cli = a.socket(2, 1)
    cli.connect((dst, 5001))
    conn, _ = srv.accept()
    payload = bytes(range(256)) * (CHUNK // 256 + 1)
    cli.setblocking(False)
    sent = received = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while received < size:
        if sent < size:
            with contextlib.suppress(BlockingIOError):
                start = sent % 256
                sent += cli.send(payload[start:start + min(CHUNK, size - sent)])
        chunk = conn.recv(1 << 20)
        if not chunk or chunk[0] != received % 256:
            raise RuntimeError("stream closed or corrupted")
        received += len(chunk)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    esp = a.ipsec.stats
    return {"path": path, "bytes": size, "seconds": round(wall, 4), "cpu_seconds": round(cpu, 4),
            "mbit_per_s": round(size * 8 / wall / 1e6, 1),
            "mbit_per_cpu_s": round(size * 8 / cpu / 1e6, 1),
            "segments_sent": a.tcp.stats.sndpack, "esp_packets_out": esp.output,
            "esp_errors": b.ipsec.stats.badauth + b.ipsec.stats.replay,
            "errors": kernel.sched.errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mb", type=float, default=10.0, help="megabytes per transfer")
    parser.add_argument("--trials", type=int, default=3, help="best of N per path")
    parser.add_argument("-o", "--out", help="also write the JSON here")
    args = parser.parse_args()
    size = int(args.mb * 1e6)
    runs: dict[str, dict[str, object]] = {}
    for _ in range(args.trials):  # interleaved, so drift in machine load hits all paths
        for path in PATHS:
            run = transfer(path, size)
            best = runs.get(path)
            if best is None or run["cpu_seconds"] < best["cpu_seconds"]:  # type: ignore[operator]
                runs[path] = run
    plain = runs["plain"]["mbit_per_cpu_s"]
    for run in runs.values():
        run["ratio_to_plain"] = round(run["mbit_per_cpu_s"] / plain, 3)  # type: ignore[operator]
    report({"benchmark": "IPsec TCP throughput (virtual clock, best of "
                         f"{args.trials})", "runs": list(runs.values())}, args.out)


if __name__ == "__main__":
    main()
