"""route6d against BIRD's RIPng (Debian bird2, `protocol rip ng`) through TAP: routes
learnt both ways over ff02::9 with link-local next hops, and withdrawn both ways.

    stub vnet --epair-- r (route6d) --TAP-- Linux namespace (BIRD) (fd30::/64 on lo)
    fd20::/64                      fd10::/64                      fd30::/64

Both speakers run shortened timers (vimage: -P update=2,timeout=6,garbage=4; BIRD:
update time 2, timeout time 6, garbage time 4).
"""

from __future__ import annotations

import shutil
import time
from socket import AF_INET6
from typing import TYPE_CHECKING

import pytest

from vimage.topo import connect
from vimage.wire import ipv6

if TYPE_CHECKING:
    from conftest import Lab

PARMS = "update=2,timeout=6,garbage=4,damping=0.2/0.5"

CONF = """\
router id 10.10.0.2;
log stderr all;
protocol device {{ scan time 1; }}
protocol direct {{ ipv6; interface "lo"; }}
protocol kernel {{ ipv6 {{ import none; export all; }}; scan time 1; }}
protocol rip ng {{
  ipv6 {{ import all; export all; }};
  interface "{dev}" {{
    update time 2;
    timeout time 6;
    garbage time 4;
  }};
}}
"""


def wait_for(what: str, check, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_route6d_and_bird_learn_and_withdraw_both_ways(lab: Lab, tmp_path) -> None:
    bird = shutil.which("bird")
    if bird is None:
        pytest.skip("bird not installed (Debian package bird2)")
    r = lab.vnet("r")
    assert r.cmd("sysctl net.inet6.ip6.forwarding=1").ok
    stub = lab.vnet("stub")
    ns = lab.netns()
    link = lab.tap(r, ns, "10.10.0.1/24", "10.10.0.2/24")
    with lab.kernel.sched.cond:
        link.tap.add_addr("fd10::1/64", family=AF_INET6)
    lab.ip(ns, "-6", "addr", "add", "fd10::2/64", "dev", link.dev, "nodad")
    lab.ip(ns, "-6", "addr", "add", "fd30::1/64", "dev", "lo")  # BIRD's network to offer
    stub_end, r_end = connect(stub, "10.20.0.2/24", r, "10.20.0.1/24")
    with lab.kernel.sched.cond:
        stub_end.add_addr("fd20::2/64", family=AF_INET6)
        r_end.add_addr("fd20::1/64", family=AF_INET6)
    conf = tmp_path / "bird.conf"
    conf.write_text(CONF.format(dev=link.dev))
    lab.spawn(ns, bird, "-f", "-c", str(conf), "-s", str(tmp_path / "bird.ctl"))
    lab.start()
    assert r.cmd(f"route6d -s -P {PARMS}").ok

    def linux_routes() -> str:
        return lab.ip(ns, "-6", "route", "show")

    def our_route():  # type: ignore[no-untyped-def]
        with lab.kernel.sched.cond:
            return r.rt6.get(ipv6.aton("fd30::"), 64)

    wait_for("BIRD to learn fd20::/64", lambda: "fd20::/64 via fe80::" in linux_routes())
    wait_for("route6d to learn fd30::/64", lambda: our_route() is not None)
    route = our_route()
    assert route.ifp is link.tap and ipv6.is_link_local(route.gateway)
    assert r.cmd("ping6 -c 1 fd30::1").ok
    r.cmd(f"ifconfig {r_end.name} down")
    wait_for("BIRD to withdraw fd20::/64", lambda: "fd20::/64" not in linux_routes())
    lab.ip(ns, "-6", "addr", "del", "fd30::1/64", "dev", "lo")
    wait_for("route6d to withdraw fd30::/64", lambda: our_route() is None)
    with lab.kernel.sched.cond:
        status = r.cmd("route6d -S").output
    assert "\t0 malformed packets ignored" in status, status
    assert "\t0 responses not from a link-local address ignored" in status, status
