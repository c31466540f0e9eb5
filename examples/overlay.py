"""The overlay VPN: three sites joined over a shared "Internet" by gif tunnels that
IPsec protects (transport-mode ESP between the tunnel endpoints), in virtual time.

    h1 -- s1 --.                  .-- s3 -- h3        hN: 10.N.0.2 on the LAN 10.N.0.0/24
                r1 ============== r2                sN: 10.N.0.1 inside, 198.18.N.2 outside
    h2 -- s2 --'  198.18.0.0/24                     r1, r2: the Internet (no 10/8 routes)

Each site gateway sN has a private LAN 10.N.0.0/24 with one host hN, a public address
198.18.N.2 behind an Internet router (s1 and s2 on r1, s3 on r2; r1 and r2 share
198.18.0.0/24) and a gif tunnel to each other site (a full mesh). The packets the gifs
send (IP protocol 4, "ipencap", between the public addresses) must be ESP: one SA per
direction per pair, AES-GCM-16. The Internet routers know nothing of 10.0.0.0/8.

    python examples/overlay.py        # builds it, pings across, shows what the routers saw

`build(kernel)` returns the vnets by name; `check(kernel, nodes)` pings every host from
every other and returns what the routers captured. examples/overlay.sh builds the same
through the `vimage` command.
"""

from __future__ import annotations

import sys

from vimage.kernel import Kernel
from vimage.net.bpf import open_capture
from vimage.topo import add_route, connect
from vimage.vnet import Vnet

SITES = (1, 2, 3)
ROUTER_OF = {1: "r1", 2: "r1", 3: "r2"}
KEY = "0x" + "5e" * 16 + "c0ffee00"  # AES-128 key and salt; an example, not a secret


def public(n: int) -> str:
    return f"198.18.{n}.2"


def spi(src: int, dst: int) -> int:
    return 0x1000 + 16 * src + dst  # one SPI per direction per pair: 0x1012, 0x1021, ...


def ipsec_config(n: int) -> str:
    """setkey input for site n: SAs both ways with every other site, and policies that
    require ESP for the gif packets (ipencap) between the public addresses."""
    lines = []
    for m in SITES:
        if m == n:
            continue
        for a, b in ((n, m), (m, n)):
            lines.append(f"add {public(a)} {public(b)} esp {spi(a, b):#x} -m transport "
                         f"-E aes-gcm-16 {KEY};")
        lines.append(f"spdadd {public(n)} {public(m)} ipencap -P out ipsec "
                     "esp/transport//require;")
        lines.append(f"spdadd {public(m)} {public(n)} ipencap -P in ipsec "
                     "esp/transport//require;")
    return "\n".join(lines) + "\n"


def ok(vnet: Vnet, line: str, stdin: str | None = None) -> str:
    result = vnet.cmd(line, stdin=None if stdin is None else stdin.encode())
    if result.status != 0:
        raise RuntimeError(f"{vnet.name}: {line}: {result.output}")
    return result.output


def build(kernel: Kernel) -> dict[str, Vnet]:
    nodes = {name: kernel.create(name) for name in
             ("r1", "r2", *(f"s{n}" for n in SITES), *(f"h{n}" for n in SITES))}
    r1, r2 = nodes["r1"], nodes["r2"]
    connect(r1, "198.18.0.1/24", r2, "198.18.0.2/24")  # the Internet's backbone
    for r in (r1, r2):
        ok(r, "sysctl net.inet.ip.forwarding=1")
    for n in SITES:
        site, host, router = nodes[f"s{n}"], nodes[f"h{n}"], nodes[ROUTER_OF[n]]
        connect(site, f"{public(n)}/24", router, f"198.18.{n}.1/24")
        connect(host, f"10.{n}.0.2/24", site, f"10.{n}.0.1/24")
        add_route(site, "default", f"198.18.{n}.1")
        add_route(host, "default", f"10.{n}.0.1")
        ok(site, "sysctl net.inet.ip.forwarding=1")
    add_route(r1, "198.18.3.0/24", "198.18.0.2")
    for n in (1, 2):
        add_route(r2, f"198.18.{n}.0/24", "198.18.0.1")
    for n in SITES:  # the full mesh of gif tunnels, gif<m> on site n leads to site m
        site = nodes[f"s{n}"]
        for m in SITES:
            if m == n:
                continue
            gif = f"gif{m}"
            ok(site, f"ifconfig {gif} create")
            ok(site, f"ifconfig {gif} tunnel {public(n)} {public(m)}")
            ok(site, f"ifconfig {gif} inet 10.255.{n}{m}.1 10.255.{n}{m}.2"
                     if n < m else f"ifconfig {gif} inet 10.255.{m}{n}.2 10.255.{m}{n}.1")
            ok(site, f"route add -net 10.{m}.0.0/24 -interface {gif}")
        ok(site, "setkey -c", ipsec_config(n))
    kernel.run(1)
    return nodes


def check(kernel: Kernel, nodes: dict[str, Vnet]) -> tuple[list[str], set[int]]:
    """Ping every host from every other across the overlay; the ping summaries, and the
    IP protocols the Internet routers' interfaces saw."""
    caps = [open_capture(ifp, keep=True) for r in ("r1", "r2")
            for ifp in nodes[r].ifaces.values() if ifp.name != "lo0"]
    results = []
    for n in SITES:
        for m in SITES:
            if m != n:
                out = ok(nodes[f"h{n}"], f"ping -c 2 10.{m}.0.2")
                results.append(f"h{n} -> h{m}: " + next(
                    line for line in out.splitlines() if "packets transmitted" in line))
    for cap in caps:
        cap.close()
    protos = {frame[23] for cap in caps for _, frame in cap.packets
              if frame[12:14] == b"\x08\x00"}
    return results, protos


def main() -> int:
    kernel = Kernel(clock="virtual", seed=1)
    nodes = build(kernel)
    results, protos = check(kernel, nodes)
    print("\n".join(results))
    print("IP protocols seen by the Internet routers:", sorted(protos), "(50 = ESP)")
    print(ok(nodes["s1"], "netstat -s -p esp"), end="")
    fine = protos == {50} and all(" 2 packets received" in r for r in results)
    print("overlay OK" if fine else "overlay FAILED")
    return 0 if fine else 1


if __name__ == "__main__":
    sys.exit(main())
