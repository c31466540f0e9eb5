"""IPv6 against the Linux kernel through TAP: ping6 both ways (link-local and global),
neighbour discovery both ways, a Linux radvd configuring a vnet by SLAAC, our rtadvd
configuring a Linux namespace, a fragmented ping6, traceroute6 from Linux through a
vnet router. Skips without root, /dev/net/tun, or the Linux programs (radvd: Debian
package radvd; traceroute: traceroute)."""

from __future__ import annotations

import re
import shutil
import time
from socket import AF_INET6
from typing import TYPE_CHECKING

import pytest

from vimage.netinet6 import in6
from vimage.wire import ipv6 as wip6

if TYPE_CHECKING:
    from conftest import Lab, Link
    from vimage.vnet import Vnet

PING6 = ("ping", "-6", "-c", "2", "-i", "0.2", "-W", "2")


def add6(lab: Lab, vnet: Vnet, link: Link, ours: str | None, linux: str | None) -> None:
    """IPv6 on both ends of a TAP link (Linux without DAD, so it is usable at once)."""
    if ours is not None:
        with lab.kernel.sched.cond:
            link.tap.add_addr(ours, family=AF_INET6)
    if linux is not None:
        lab.ip(link.ns, "-6", "addr", "add", linux, "dev", link.dev, "nodad")


def sysctl6(lab: Lab, ns: str, path: str, value: str) -> None:
    proc = lab.python(ns, "import sys; open(sys.argv[1], 'w').write(sys.argv[2])",
                      f"/proc/sys/net/ipv6/{path}", value)
    assert proc.returncode == 0, proc.stderr


def linux_link_local(lab: Lab, link: Link, timeout: float = 10.0) -> str:
    """Linux's fe80:: address on the link once its DAD is over."""
    deadline = time.monotonic() + timeout
    while True:
        out = lab.ip(link.ns, "-6", "addr", "show", "dev", link.dev, "scope", "link")
        m = re.search(r"inet6 (fe80::[0-9a-f:]+)/64", out)
        if m and "tentative" not in out:
            return m.group(1)
        if time.monotonic() > deadline:
            raise AssertionError(f"no link-local address on {link.dev}: {out}")
        time.sleep(0.1)


def our_link_local(vnet: Vnet, link: Link) -> str:
    with vnet.kernel.sched.cond:
        return next(wip6.ntoa(ia.addr) for ia in in6.addrs(link.tap)
                    if wip6.is_link_local(ia.addr))


def wait_for(pred, timeout: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return bool(pred())


def setup_pair(lab: Lab) -> tuple[Vnet, Link]:
    vnet = lab.vnet("h")
    ns = lab.netns()
    link = lab.tap(vnet, ns, "10.9.0.1/24", "10.9.0.2/24")
    add6(lab, vnet, link, "2001:db8:9::1/64", "2001:db8:9::2/64")
    lab.start()
    time.sleep(1.6)  # our DAD (one probe, one second)
    return vnet, link


def test_ping6_and_ndp_both_ways(lab: Lab) -> None:
    lab.need("ping")
    vnet, link = setup_pair(lab)
    lll = linux_link_local(lab, link)
    proc = lab.run(link.ns, *PING6, "2001:db8:9::1")
    assert proc.returncode == 0 and " 0% packet loss" in proc.stdout, proc.stdout
    ours_ll = our_link_local(vnet, link)
    proc = lab.run(link.ns, *PING6, f"{ours_ll}%{link.dev}")
    assert proc.returncode == 0 and " 0% packet loss" in proc.stdout, proc.stdout
    res = vnet.cmd("ping6 -c 2 -i 0.2 2001:db8:9::2")
    assert "2 packets received" in res.output, res.output
    res = vnet.cmd(f"ping6 -c 2 -i 0.2 {lll}%{link.tap.name}")
    assert "2 packets received" in res.output, res.output
    # neighbour discovery both ways: each side has the other's MAC
    neigh = lab.ip(link.ns, "-6", "neigh", "show", "dev", link.dev)
    assert re.search(rf"2001:db8:9::1 lladdr {link.our_mac}", neigh), neigh
    ndp = vnet.cmd("ndp -an").output
    assert re.search(rf"2001:db8:9::2\s+{link.linux_mac}\s+{link.tap.name}", ndp), ndp


def test_fragmented_ping6(lab: Lab) -> None:
    lab.need("ping")
    vnet, link = setup_pair(lab)
    proc = lab.run(link.ns, *PING6, "-s", "3000", "2001:db8:9::1")
    assert proc.returncode == 0 and " 0% packet loss" in proc.stdout, proc.stdout
    assert "3008 bytes from 2001:db8:9::1" in proc.stdout
    with lab.kernel.sched.cond:
        assert vnet.ip6.stats.reassembled >= 2 and vnet.ip6.stats.fragmented >= 2


def test_linux_radvd_configures_a_vnet(lab: Lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    radvd = shutil.which("radvd")
    if radvd is None:
        pytest.skip("needs the `radvd` program (Debian package radvd)")
    lab.need("ping")
    vnet = lab.vnet("h")
    ns = lab.netns()
    link = lab.tap(vnet, ns, "10.9.0.1/24", "10.9.0.2/24")
    sysctl6(lab, ns, "conf/all/forwarding", "1")
    lab.ip(ns, "-6", "addr", "add", "2001:db8:77::1/64", "dev", link.dev, "nodad")
    conf = tmp_path / "radvd.conf"
    conf.write_text(f"interface {link.dev} {{\n  AdvSendAdvert on;\n"
                    "  MinRtrAdvInterval 3;\n  MaxRtrAdvInterval 4;\n"
                    "  prefix 2001:db8:77::/64 { AdvOnLink on; AdvAutonomous on; };\n};\n")
    lab.spawn(ns, radvd, "-n", "-C", str(conf), "-p", str(tmp_path / "radvd.pid"),
              "-m", "stderr")
    assert vnet.cmd(f"ifconfig {link.tap.name} inet6 accept_rtadv").ok
    lab.start()
    prefix = wip6.aton("2001:db8:77::") >> 64

    def configured() -> bool:
        with lab.kernel.sched.cond:
            return any(ia.addr >> 64 == prefix and ia.ready and ia.flags & in6.IN6_IFF_AUTOCONF
                       for ia in in6.addrs(link.tap)) and vnet.rt6.get(0, 0) is not None

    assert wait_for(configured, 20), vnet.cmd(f"ifconfig {link.tap.name}").output
    lll = linux_link_local(lab, link)
    assert f"{lll}%{link.tap.name} if={link.tap.name}" in vnet.cmd("ndp -r").output
    assert "2001:db8:77::/64" in vnet.cmd("ndp -p").output
    res = vnet.cmd("ping6 -c 2 -i 0.2 2001:db8:77::1")
    assert "2 packets received" in res.output, res.output


def test_our_rtadvd_configures_linux(lab: Lab) -> None:
    lab.need("ping")
    vnet = lab.vnet("r")
    ns = lab.netns()
    link = lab.tap(vnet, ns, "10.9.0.1/24", "10.9.0.2/24")
    sysctl6(lab, ns, f"conf/{link.dev}/accept_ra", "2")
    add6(lab, vnet, link, "2001:db8:88::1/64", None)
    assert vnet.cmd("sysctl net.inet6.ip6.forwarding=1").ok
    lab.start()
    time.sleep(1.6)  # our link-local address is ready: RAs come from it
    res = vnet.cmd(f"rtadvd {link.tap.name}")
    assert res.ok, res.output
    # Linux solicits when its link comes up; nudge it again so the test does not wait
    # for the unsolicited interval
    lab.ip(ns, "link", "set", link.dev, "down")
    lab.ip(ns, "link", "set", link.dev, "up")

    def linux_has_address() -> bool:
        out = lab.ip(ns, "-6", "addr", "show", "dev", link.dev)
        return bool(re.search(r"inet6 2001:db8:88:0:[0-9a-f:]+/64 scope global", out))

    assert wait_for(linux_has_address, 20), lab.ip(ns, "-6", "addr", "show", "dev", link.dev)
    routes = lab.ip(ns, "-6", "route", "show", "default")
    assert f"via {our_link_local(vnet, link)} dev {link.dev}" in routes, routes
    out = lab.ip(ns, "-6", "addr", "show", "dev", link.dev)
    addr = re.search(r"inet6 (2001:db8:88:0:[0-9a-f:]+)/64", out)
    assert addr is not None
    res = vnet.cmd(f"ping6 -c 2 -i 0.2 {addr.group(1)}")
    assert "2 packets received" in res.output, res.output
    assert vnet.cmd("rtadvd -k").ok


def test_traceroute6_from_linux_through_a_vnet_router(lab: Lab) -> None:
    traceroute = lab.need("traceroute")
    r = lab.vnet("r")
    ns1, ns2 = lab.netns(), lab.netns()
    left = lab.tap(r, ns1, "10.1.0.1/24", "10.1.0.2/24")
    right = lab.tap(r, ns2, "10.2.0.1/24", "10.2.0.2/24")
    add6(lab, r, left, "2001:db8:1::1/64", "2001:db8:1::2/64")
    add6(lab, r, right, "2001:db8:2::1/64", "2001:db8:2::2/64")
    assert r.cmd("sysctl net.inet6.ip6.forwarding=1").ok
    lab.ip(ns1, "-6", "route", "add", "default", "via", "2001:db8:1::1")
    lab.ip(ns2, "-6", "route", "add", "default", "via", "2001:db8:2::1")
    lab.start()
    time.sleep(1.6)
    proc = lab.run(ns1, traceroute, "-6", "-n", "-q", "1", "-w", "2", "-m", "5",
                   "2001:db8:2::2", timeout=30)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.match(r"\s*1\s+2001:db8:1::1\s", lines[1]), proc.stdout
    assert re.match(r"\s*2\s+2001:db8:2::2\s", lines[2]), proc.stdout
    with lab.kernel.sched.cond:
        assert r.ip6.stats.forward >= 1
