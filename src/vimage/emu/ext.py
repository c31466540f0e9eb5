"""`ext` nodes: IMUNES's external connection, a TAP into a Linux network namespace.

An ext node has no vnet. Each of its links becomes a `tap` interface (vimage.net.tap)
in the peer node's vnet, named as the model names the peer's interface; the TAP's
Linux side lives in a Linux network namespace of the ext node (`vimage-EXP.NODE`),
renamed to the ext node's interface name there and given its addresses, with the ext
node's routes (static and automatic defaults) as Linux routes. The namespace is made
with the experiment and deleted with it. Linux is driven with iproute2 (`ip`).

It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces), /dev/net/tun, the
`ip` program, and the real clock: Linux does not wait for virtual time.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vimage.net.tap import NETNS_DIR, TUN_PATH, create_tap

if TYPE_CHECKING:
    from vimage.emu.model import Interface, Route
    from vimage.kernel import Kernel
    from vimage.net.tap import Tap
    from vimage.vnet import Vnet

IP_TIMEOUT = 20.0  # seconds one `ip` command may take
NETNS_PREFIX = "vimage-"


@dataclass
class ExtNode:
    """A live ext node: its Linux namespace and the TAPs (in peer vnets) that reach it."""

    name: str
    netns: str
    taps: dict[str, Tap] = field(default_factory=dict)  # ext interface name -> TAP

    def state(self) -> dict[str, object]:
        return {"type": "ext", "vnet": None, "netns": self.netns,
                "interfaces": sorted(self.taps),
                "taps": {k: f"{t.vnet.name}:{t.name}" for k, t in self.taps.items()}}


def netns_name(experiment: str, node: str) -> str:
    return f"{NETNS_PREFIX}{experiment}.{node}"


def unavailable(kernel: Kernel) -> str | None:
    """Why this process cannot realise ext nodes, or None; one line."""
    if kernel.clock != "real":
        return ("ext nodes need the real clock (a TAP into Linux, which does not wait for "
                "virtual time)")
    if os.geteuid() != 0:
        return "ext nodes need root (a TAP into a Linux network namespace)"
    if not os.path.exists(TUN_PATH):
        return f"ext nodes need {TUN_PATH} (the TUN/TAP driver)"
    if shutil.which("ip") is None:
        return "ext nodes need the `ip` program (Debian package iproute2)"
    return None


def exists(netns: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, netns))


def ip(*args: str) -> str:
    """Run `ip ARGS`; OSError with ip's own message when it fails."""
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT)
    if proc.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def create(name: str, netns: str) -> ExtNode:
    ip("netns", "add", netns)
    ip("-n", netns, "link", "set", "lo", "up")
    return ExtNode(name, netns)


def attach(ext: ExtNode, vnet: Vnet, iface: Interface, mtu: int | None) -> Tap:
    """A TAP in `vnet` whose Linux side is `iface` of the ext node (named and addressed)."""
    tap = create_tap(vnet, netns=ext.netns, mtu=mtu or 1500)
    ext.taps[iface.name] = tap
    ns = ext.netns
    ip("-n", ns, "link", "set", "dev", tap.linux_name, "name", iface.name)
    tap.linux_name = iface.name
    if iface.mac is not None:
        ip("-n", ns, "link", "set", "dev", iface.name, "address", iface.mac)
    for cidr in iface.ipv4:
        ip("-n", ns, "addr", "add", cidr, "dev", iface.name)
    for cidr in iface.ipv6:  # no DAD: the topology's addresses are usable at once
        ip("-n", ns, "-6", "addr", "add", cidr, "dev", iface.name, "nodad")
    ip("-n", ns, "link", "set", "dev", iface.name, "up")
    return tap


def add_routes(ext: ExtNode, routes: list[Route]) -> None:
    for route in routes:
        net = ipaddress.ip_network(route.dest, strict=False)
        dest = "default" if net.prefixlen == 0 else str(net)
        ip("-n", ext.netns, f"-{net.version}", "route", "replace", dest, "via", route.gateway)


def destroy(ext: ExtNode) -> str | None:
    """Close the TAPs (if their vnets did not already) and delete the namespace; the
    problem met, if any (teardown goes on)."""
    for tap in ext.taps.values():
        tap.close_device()
    if not exists(ext.netns):
        return None
    try:
        ip("netns", "del", ext.netns)
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None
