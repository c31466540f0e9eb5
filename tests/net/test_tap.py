"""tap interfaces: the errors that need no root, and the device's life cycle (root)."""

import os
import subprocess

import pytest

from vimage.kernel import Kernel
from vimage.net import tap as tap_mod

HAVE_TUN = os.geteuid() == 0 and os.path.exists(tap_mod.TUN_PATH)


def test_virtual_clock_is_refused_with_one_line():
    v = Kernel(clock="virtual").create("v")
    result = v.cmd("ifconfig tap create")
    assert result.status == 1
    assert result.output == ("ifconfig: TAP interfaces need the real clock "
                             "(Linux will not wait for virtual time)\n")


def test_missing_tun_device_is_named(monkeypatch):
    monkeypatch.setattr(tap_mod, "TUN_PATH", "/nonexistent/tun")
    v = Kernel(clock="real").create("v")
    result = v.cmd("ifconfig tap create")
    assert result.status == 1
    assert result.output == "ifconfig: /nonexistent/tun does not exist (no TUN/TAP driver)\n"
    assert "tap0" not in v.ifaces


def test_netns_only_for_tap():
    v = Kernel(clock="real").create("v")
    result = v.cmd("ifconfig epair create netns x")
    assert result.status == 64 and "netns applies to tap interfaces only" in result.output


@pytest.mark.skipif(not HAVE_TUN, reason="needs root and /dev/net/tun for a TAP device")
def test_missing_netns_is_named():
    v = Kernel(clock="real").create("v")
    result = v.cmd("ifconfig tap create netns no-such-namespace-vimg")
    assert result.status == 1
    assert result.output == "ifconfig: no Linux network namespace 'no-such-namespace-vimg'\n"


@pytest.mark.skipif(not HAVE_TUN, reason="needs root and /dev/net/tun for a TAP device")
def test_tap_lives_in_its_namespace_and_goes_with_its_vnet():
    ns = f"vimg-taptest-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        k = Kernel(clock="real", seed=1)
        v = k.create("v")
        assert v.cmd(f"ifconfig tap create netns {ns}").output == "tap0\n"
        tap = v.ifaces["tap0"]
        links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        assert f" {tap.linux_name}:" in links and "mtu 1500" in links
        assert v.cmd("ifconfig tap0 mtu 9000").status == 0  # honoured on the Linux side too
        links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        assert "mtu 9000" in links
        host = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert f" {tap.linux_name}:" not in host  # the host namespace was never touched
        k.destroy(v)
        links = subprocess.run(["ip", "-n", ns, "-o", "link"], capture_output=True,
                               text=True, check=True).stdout
        assert tap.linux_name not in links
        assert tap._reader is not None and not tap._reader.is_alive()
    finally:
        subprocess.run(["ip", "netns", "del", ns])
