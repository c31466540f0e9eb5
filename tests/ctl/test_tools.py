"""The userland tools run in the daemon: output and status are the tool's, clients don't wait
for each other, and file operands are opened by the client."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from vimage.cli import TOOLS, usage_of
from vimage.ctl.protocol import CtlError

from .conftest import until


@pytest.fixture(scope="module")
def lab(shared_vimaged):
    """Two vnets on one epair: left 10.0.0.1/24 (epair0a), right 10.0.0.2/24 (epair0b)."""
    vd = shared_vimaged
    vd.ok("-c", "left")
    vd.ok("-c", "right")
    vd.ok("ifconfig", "epair", "create")
    vd.ok("-i", "left", "epair0a")
    vd.ok("-i", "right", "epair0b")
    vd.ok("left", "ifconfig", "epair0a", "10.0.0.1/24", "up")
    vd.ok("right", "ifconfig", "epair0b", "10.0.0.2/24", "up")
    yield vd
    vd.ok("-d", "left")
    vd.ok("-d", "right")


def test_ping_between_vnets_through_the_daemon(lab):
    done = lab.run("left", "ping", "-c", "2", "-i", "0.1", "10.0.0.2")
    assert done.returncode == 0, done.stderr
    assert "2 packets transmitted, 2 packets received, 0.0% packet loss" in done.stdout
    assert done.stdout.startswith("PING 10.0.0.2 (10.0.0.2): 56 data bytes\n")


def test_the_tool_status_and_output_are_the_tools(lab):
    assert lab.cli("left", "ifconfig", "nosuch0") == (
        1, "ifconfig: interface nosuch0 does not exist\n", "")
    assert lab.cli("left", "route", "frobnicate")[0] == 64
    done = lab.run("left", "ping", "-c", "1", "-t", "1", "10.0.0.99")
    assert done.returncode == 2 and "1 packets transmitted, 0 packets received" in done.stdout


def test_each_tool_answers_in_a_vnet(lab):
    lab.ok("left", "route", "add", "192.168.5.0/24", "10.0.0.2")
    assert "192.168.5.0/24" in lab.ok("left", "netstat", "-rn")
    assert lab.ok("left", "sysctl", "net.inet.ip.forwarding") == "net.inet.ip.forwarding: 0\n"
    lab.ok("left", "ping", "-c", "1", "10.0.0.2")
    assert "(10.0.0.2) at" in lab.ok("left", "arp", "-an")
    assert lab.ok("left", "vlink", "epair0a", "delay", "1ms") == ""
    assert "delay" in lab.ok("left", "vlink", "epair0a")
    lab.ok("left", "vlink", "epair0a", "clear")
    assert lab.ok("left", "traceroute", "-n", "-q", "1", "-m", "2", "10.0.0.2").startswith(
        "traceroute to 10.0.0.2")
    assert "epair0a" in lab.ok("left", "netstat", "-i")
    assert set(TOOLS) >= {"arp", "ifconfig", "netstat", "ping", "route", "sysctl", "tcpdump",
                          "traceroute", "vlink"}


def test_a_long_tool_does_not_hold_up_other_clients(lab):
    pinger = subprocess.Popen(["vimage", "left", "ping", "-c", "3", "-i", "0.5", "10.0.0.2"],
                              env=lab.env(), stdout=subprocess.PIPE, text=True)
    with lab.client() as c:  # the ping has reached the daemon: its connection and ours
        assert until(lambda: c.request("status")["connections"] >= 2)
    quick: list[float] = []

    def asker() -> None:
        with lab.client() as c:
            for _ in range(20):
                t0 = time.monotonic()
                assert c.tool(["sysctl", "-n", "net.inet.ip.ttl"], "right") == (0, "64\n")
                quick.append(time.monotonic() - t0)

    threads = [threading.Thread(target=asker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert pinger.poll() is None  # all 60 answered while the ping still runs
    assert len(quick) == 60 and max(quick) < 0.5
    out, _ = pinger.communicate(timeout=30)
    assert pinger.returncode == 0 and "3 packets received" in out


def test_tcpdump_files_are_opened_where_the_client_is(lab, tmp_path):
    capture = subprocess.Popen(
        ["vimage", "right", "tcpdump", "-c", "2", "-i", "epair0b", "-w", "cap.pcap", "icmp"],
        env=lab.env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with lab.client() as c:  # ping until the capture has seen a request and its reply
        assert until(lambda: capture.poll() is not None
                     or c.tool(["ping", "-c", "1", "10.0.0.2"], "left")[0] < 0)
    out, err = capture.communicate(timeout=30)
    assert capture.returncode == 0, err
    assert "2 packets captured" in out and "listening on epair0b" in out
    assert (tmp_path / "cap.pcap").stat().st_size > 24
    read = subprocess.run(["vimage", "tcpdump", "-n", "-r", "cap.pcap"], env=lab.env(),
                          cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert read.returncode == 0
    assert read.stdout.count("ICMP echo") == 2 and "10.0.0.1 > 10.0.0.2" in read.stdout
    missing = lab.cli("tcpdump", "-r", str(tmp_path / "nope.pcap"))
    assert missing[0] == 1 and "nope.pcap: No such file or directory" in missing[1]
    assert lab.cli("tcpdump", "-Z") == (64, "tcpdump: illegal option -- Z\n" + usage_of("tcpdump"),
                                        "")


def test_file_operands_by_path_are_refused_by_the_daemon(lab, tmp_path):
    with lab.client() as c:
        with pytest.raises(CtlError, match="must be passed as a descriptor"):
            c._tool_call("", ["tcpdump", "-r", str(tmp_path / "x")], [])
        with pytest.raises(CtlError, match="must be passed as a descriptor"):
            c._tool_call("", ["tcpdump", "-nr/etc/hostname"], [])
        with pytest.raises(CtlError, match="illegal option -- Z"):  # cannot tell: refused
            c._tool_call("", ["tcpdump", "-Z", "-w", "/tmp/x"], [])
        r, w = os.pipe()
        try:  # a descriptor open for reading cannot stand for -w
            with pytest.raises(CtlError, match="not open for writing"):
                c._tool_call("", ["tcpdump", "-c", "1", "-w", "@fd:0"], [r])
        finally:
            os.close(r)
            os.close(w)
