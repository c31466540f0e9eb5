"""The demo: a small topology built and pinged end to end, printing what it does.

    host a --- router r --- host b
    10.0.1.0/24  (1 Mbit/s, 5 ms)  10.0.2.0/24
    2001:db8:1::/64                2001:db8:2::/64

Everything is configured with the FreeBSD tools, inside each vnet, exactly as a
shell script on FreeBSD would do it. Run: python -m vimage.demo [--real]
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from vimage.kernel import Kernel
from vimage.vnet import Vnet

STEPS: tuple[tuple[str, str], ...] = (
    ("", "ifconfig epair create"),
    ("", "ifconfig epair create"),
    ("", "ifconfig epair0a vnet demo.a"),
    ("", "ifconfig epair0b vnet demo.r"),
    ("", "ifconfig epair1a vnet demo.r"),
    ("", "ifconfig epair1b vnet demo.b"),
    ("demo.a", "ifconfig epair0a inet 10.0.1.2/24 up"),
    ("demo.a", "route add default 10.0.1.1"),
    ("demo.a", "ifconfig epair0a inet6 2001:db8:1::2/64"),
    ("demo.a", "route -6 add default 2001:db8:1::1"),
    ("demo.r", "ifconfig epair0b inet 10.0.1.1/24 up"),
    ("demo.r", "ifconfig epair1a inet 10.0.2.1/24 up"),
    ("demo.r", "sysctl net.inet.ip.forwarding=1"),
    ("demo.r", "ifconfig epair0b inet6 2001:db8:1::1/64"),
    ("demo.r", "ifconfig epair1a inet6 2001:db8:2::1/64"),
    ("demo.r", "sysctl net.inet6.ip6.forwarding=1"),
    ("demo.r", "vlink epair1a bw 1Mbit/s delay 5ms"),
    ("demo.b", "ifconfig epair1b inet 10.0.2.2/24 up"),
    ("demo.b", "route add default 10.0.2.1"),
    ("demo.b", "ifconfig epair1b inet6 2001:db8:2::2/64"),
    ("demo.b", "route -6 add default 2001:db8:2::1"),
    ("demo.b", "vlink epair1b bw 1Mbit/s delay 5ms"),
    ("demo.a", "ping -c 3 10.0.2.2"),
    ("demo.a", "traceroute -n 10.0.2.2"),
    ("demo.a", "ping6 -c 3 2001:db8:2::2"),
    ("demo.a", "traceroute6 -n 2001:db8:2::2"),
    ("demo.a", "netstat -rn"),
    ("demo.r", "netstat -s -p ip"),
    ("demo.r", "vlink epair1a"),
    ("demo.a", "ifconfig epair0a"),
)


def run(clock: str = "virtual", out: TextIO | None = None) -> int:
    out = out or sys.stdout
    kernel = Kernel(clock=clock, seed=2024)
    for name in ("demo", "demo.a", "demo.r", "demo.b"):
        kernel.create(name)
    print(f"# vimage demo: {len(kernel.vnets())} vnets in one process, {clock} clock", file=out)
    for where, line in STEPS:
        vnet: Vnet = kernel.get(where) if where else kernel.base
        print(f"\n[{vnet.display_name}]# {line}", file=out)
        result = vnet.cmd(line)
        out.write(result.output)
        if result.status != 0:
            print(f"# failed with status {result.status}", file=out)
            return 1
    kernel.destroy("demo")
    print(f"\n# destroyed demo and its children; timers left: {kernel.sched.pending_timers()}",
          file=out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build a 3-vnet topology and ping across it.")
    parser.add_argument("--real", action="store_true", help="use the real clock (default: "
                        "virtual time, which finishes at once)")
    args = parser.parse_args(argv)
    return run("real" if args.real else "virtual")


if __name__ == "__main__":
    raise SystemExit(main())
