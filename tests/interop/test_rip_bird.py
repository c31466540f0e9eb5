"""routed against BIRD's RIP (Debian bird2) through TAP: routes learnt both ways and
withdrawn both ways, without and with keyed MD5 authentication.

    stub vnet --epair-- r (routed) --TAP-- Linux namespace (BIRD) (10.30.0.0/24 on lo)
    10.20.0.0/24                 10.10.0.0/24                         10.30.0.0/24

Both speakers run shortened timers (vimage: -P update=2,timeout=6,garbage=4; BIRD:
update time 2, timeout time 6). BIRD sends RIPv2 to the interface's broadcast address
(`mode broadcast`): vimage's IPv4 has no multicast, and routed broadcasts too.
"""

from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

import pytest

from vimage.topo import connect

if TYPE_CHECKING:
    from conftest import Lab

PARMS = "update=2,timeout=6,garbage=4,damping=0.2/0.5"

CONF = """\
router id 10.10.0.2;
log stderr all;
protocol device {{ scan time 1; }}
protocol direct {{ ipv4; interface "lo"; }}
protocol kernel {{ ipv4 {{ import none; export all; }}; scan time 1; }}
protocol rip {{
  ipv4 {{ import all; export all; }};
  interface "{dev}" {{
    mode broadcast;
    version 2;
    update time 2;
    timeout time 6;
    garbage time 4;
{auth}  }};
}}
"""

MD5 = """    authentication cryptographic;
    password "sesame" { id 7; algorithm keyed md5; };
"""


def wait_for(what: str, check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("auth", ["none", "md5"])
def test_routed_and_bird_learn_and_withdraw_both_ways(lab: Lab, tmp_path, auth: str) -> None:
    bird = shutil.which("bird")
    if bird is None:
        pytest.skip("bird not installed (Debian package bird2)")
    r = lab.vnet("r", forwarding=True)
    stub = lab.vnet("stub")
    ns = lab.netns()
    link = lab.tap(r, ns, "10.10.0.1/24", "10.10.0.2/24")
    # BIRD's broadcast mode sends to the address's broadcast, which `ip addr add` omits
    lab.ip(ns, "addr", "del", "10.10.0.2/24", "dev", link.dev)
    lab.ip(ns, "addr", "add", "10.10.0.2/24", "brd", "+", "dev", link.dev)
    lab.ip(ns, "addr", "add", "10.30.0.1/24", "dev", "lo")  # BIRD's network to offer
    stub_end, r_end = connect(stub, "10.20.0.2/24", r, "10.20.0.1/24")
    conf = tmp_path / "bird.conf"
    conf.write_text(CONF.format(dev=link.dev, auth=MD5 if auth == "md5" else ""))
    lab.spawn(ns, bird, "-f", "-c", str(conf), "-s", str(tmp_path / "bird.ctl"))
    lab.start()
    p = f"{PARMS},md5_passwd=sesame|7" if auth == "md5" else PARMS
    assert r.cmd(f"routed -s -P {p}").ok

    def linux_routes() -> str:
        return lab.ip(ns, "route", "show")

    def our_route() -> str:
        return r.cmd("netstat -rn -f inet").output

    # learnt both ways
    wait_for("BIRD to learn 10.20.0.0/24", lambda: "10.20.0.0/24 via 10.10.0.1" in
             linux_routes())
    wait_for("routed to learn 10.30.0.0/24",
             lambda: any(line.split()[:3] == ["10.30.0.0/24", "10.10.0.2", "UG"]
                         for line in our_route().splitlines()))
    assert r.cmd("ping -c 1 -t 3 10.30.0.1").ok
    # withdrawn both ways
    r.cmd(f"ifconfig {r_end.name} down")
    wait_for("BIRD to withdraw 10.20.0.0/24", lambda: "10.20.0.0/24" not in linux_routes())
    lab.ip(ns, "addr", "del", "10.30.0.1/24", "dev", "lo")
    wait_for("routed to withdraw 10.30.0.0/24", lambda: "10.30.0.0/24" not in our_route())
    with lab.kernel.sched.cond:
        status = r.cmd("routed -S").output
    assert "0 packets with bad or missing authentication ignored" in status, status
    assert "0 malformed packets ignored" in status, status
