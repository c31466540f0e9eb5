"""TAP interfaces made and destroyed the way users do it, and while Linux is sending."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from typing import TYPE_CHECKING

from vimage.net.tap import create_tap

if TYPE_CHECKING:
    from conftest import Lab


def linux_link_exists(ns: str, dev: str) -> bool:
    proc = subprocess.run(["ip", "-n", ns, "link", "show", "dev", dev], capture_output=True,
                          timeout=10)
    return proc.returncode == 0


def test_tap_made_with_ifconfig(lab: Lab) -> None:
    """`ifconfig tap create netns NS` then plain tools: Linux pings us; destroy removes it."""
    ping = lab.need("ping")
    vnet = lab.vnet("h")
    ns = lab.netns()
    res = vnet.cmd(f"ifconfig tap create netns {ns}")
    assert res.status == 0, res.output
    name = res.output.strip()
    assert re.fullmatch(r"tap\d+", name), res.output
    assert vnet.cmd(f"ifconfig {name} inet 10.9.0.1/24 up").status == 0
    shown = vnet.cmd(f"ifconfig {name}").output
    match = re.search(rf"Linux side: (\S+) in netns {re.escape(ns)}", shown)
    assert match, shown
    dev = match.group(1)
    lab.ip(ns, "addr", "add", "10.9.0.2/24", "dev", dev)
    lab.ip(ns, "link", "set", dev, "up")
    lab.start()
    res = lab.run(ns, ping, "-c", "2", "-i", "0.2", "-W", "2", "-w", "10", "10.9.0.1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "status: active" in vnet.cmd(f"ifconfig {name}").output
    assert vnet.cmd(f"ifconfig {name} destroy").status == 0
    assert not linux_link_exists(ns, dev)
    assert name not in vnet.cmd("ifconfig -l").output.split()


def test_destroy_while_linux_frame_waits_for_the_lock(lab: Lab) -> None:
    """destroy() holds the kernel lock while it stops the TAP reader; a reader that
    read a frame and waits for that lock must give up instead of deadlocking."""
    ping = lab.need("ping")
    vnet = lab.vnet("h")
    ns = lab.netns()
    link = lab.tap(vnet, ns, "10.9.0.1/24", "10.9.0.2/24")
    reader_name = f"vimage-{link.tap.name}"
    with lab.kernel.sched.cond:  # as destroy does; the kernel is not running either
        before = link.tap.ipackets
        lab.spawn(ns, ping, "-c", "1", "-W", "1", link.our_addr)  # ARP, then ICMP
        time.sleep(0.5)  # the reader has the frame and waits for the lock
        assert link.tap.ipackets == before
        started = time.monotonic()
        link.tap.destroy()
        took = time.monotonic() - started
    assert took < 1.0, f"destroy took {took:.1f} s"
    assert not any(t.name == reader_name for t in threading.enumerate())
    assert not linux_link_exists(ns, link.dev)


def test_tap_needs_existing_namespace(lab: Lab) -> None:
    vnet = lab.vnet("h")
    missing = f"{lab.netns()}-missing"
    res = vnet.cmd(f"ifconfig tap create netns {missing}")
    assert res.status != 0
    assert missing in res.output
    try:
        create_tap(vnet, netns=missing)
    except OSError as exc:
        assert missing in str(exc)
    else:
        raise AssertionError("create_tap into a missing namespace succeeded")
