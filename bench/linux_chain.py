"""The same chain of routers built from Linux network namespaces, for side-by-side runs.

host a - r1 ... rN - host b, link i = 10.X.Y.0/24 as in vimage.topo.router_chain,
made with iproute2 (`ip netns`, veth). Needs root; `available()` says why not.
"""

from __future__ import annotations

import os
import shutil
import subprocess

from vimage.topo import link_prefix

PREFIX = "vimgbench"


def available() -> str | None:
    """None if a Linux chain can be built here, else the reason it cannot."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    return None


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def names(routers: int) -> list[str]:
    return [f"{PREFIX}-a", *(f"{PREFIX}-r{i}" for i in range(1, routers + 1)), f"{PREFIX}-b"]


def build(routers: int) -> list[str]:
    nodes = names(routers)
    teardown(routers)
    for ns in nodes:
        _ip("netns", "add", ns)
        _ip("-n", ns, "link", "set", "lo", "up")
    for i in range(len(nodes) - 1):
        left, right, p = f"vb{i}l", f"vb{i}r", link_prefix(i)
        _ip("link", "add", left, "netns", nodes[i], "type", "veth", "peer", "name", right,
            "netns", nodes[i + 1])
        _ip("-n", nodes[i], "addr", "add", f"{p}.1/24", "dev", left)
        _ip("-n", nodes[i + 1], "addr", "add", f"{p}.2/24", "dev", right)
        _ip("-n", nodes[i], "link", "set", left, "up")
        _ip("-n", nodes[i + 1], "link", "set", right, "up")
    first = link_prefix(0)
    for i, ns in enumerate(nodes):
        if 0 < i < len(nodes) - 1:
            subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                           check=True, capture_output=True)
            if i > 1:
                _ip("-n", ns, "route", "add", f"{first}.0/24", "via", f"{link_prefix(i - 1)}.1")
        if i < len(nodes) - 1:
            _ip("-n", ns, "route", "add", "default", "via", f"{link_prefix(i)}.2")
        elif i > 0:
            _ip("-n", ns, "route", "add", "default", "via", f"{link_prefix(i - 1)}.1")
    return nodes


def teardown(routers: int) -> None:
    for ns in names(routers):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def run_in(ns: str, code: str) -> str:
    """Run Python `code` inside namespace `ns`; returns its stdout."""
    out = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", code], check=True,
                         capture_output=True, text=True)
    return out.stdout
