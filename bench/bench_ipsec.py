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

from _bulk import best_of, move, rates, tcp_pair
from _report import report
from bench_tunnel import _setup as tunnel_setup
from vimage.kernel import Kernel
from vimage.vnet import Vnet

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
    cli, conn = tcp_pair(a, b, dst)
    wall, cpu = move(cli, conn, size)
    esp = a.ipsec.stats
    return {"path": path, "bytes": size, **rates(size, wall, cpu),
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
    runs = best_of(PATHS, args.trials, lambda path: transfer(path, size))
    report({"benchmark": "IPsec TCP throughput (virtual clock, best of "
                         f"{args.trials})", "runs": runs}, args.out)


if __name__ == "__main__":
    main()
