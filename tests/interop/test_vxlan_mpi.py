"""A Linux vxlan device as the far end of a real-time run's cut link (docs/mpi.md,
`vimage topo run --realtime --remote NODE=ADDR:PORT`).

The topology links vimage's pc1 to a node `linux` that vimage does not build: with
`remote={"linux": (ADDR, PORT)}` the link's pc1 end is a VXLAN tunnel (VNI = link index +
1) from the host socket BIND:PORT to ADDR:PORT. ADDR is the far end of a veth pair in a
Linux namespace, where `ip link add vx0 type vxlan id 1 local ADDR remote BIND dstport
PORT` carries the node's address. Linux pings vimage, vimage pings Linux (a start-up job),
and Linux sends 200 KB to vimage's tcp-sink. The IPv6 test runs the tunnels over an IPv6
underlay (`NODE=[ADDR6]:PORT`, --bind an IPv6 address) with two links to `linux`, two
vxlan devices there (VNI 1 and 2, one dstport). Skips naming the module when this Linux
kernel has no vxlan, and naming the reason when it refuses IPv6 on the veth.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
from typing import TYPE_CHECKING, Any

import pytest

from vimage.emu import mpi as batch
from vimage.emu import yamlfmt

if TYPE_CHECKING:
    from conftest import Lab

TOPOLOGY = """\
version: 1
name: vxext
nodes:
  pc1:
    type: pc
    interfaces: {eth0: {ipv4: [10.66.0.1/24], mtu: 1450}}
    commands: ["at 0 tcp-sink 5001", "at 1.5 ping -c 3 -i 0.3 10.66.0.2"]
  linux:
    type: pc
    interfaces: {eth0: {ipv4: [10.66.0.2/24]}}
links:
  - {a: pc1:eth0, b: linux:eth0, delay: 1ms}
"""

SEND = """\
import socket, sys, time
deadline = time.monotonic() + 8
while True:
    try:
        s = socket.create_connection((sys.argv[1], 5001), timeout=2)
        break
    except OSError:
        if time.monotonic() > deadline:
            raise
s.sendall(bytes(200 * 1024))
s.close()
print("sent")
"""


# `ethtool -K DEV tx off` without ethtool: SIOCETHTOOL with ETHTOOL_STXCSUM (linux/ethtool.h)
TX_CSUM_OFF = """\
import array, fcntl, socket, struct, sys
value = array.array("I", [0x17, 0])  # struct ethtool_value {ETHTOOL_STXCSUM, 0}
request = struct.pack("16sP16x", sys.argv[1].encode(), value.buffer_info()[0])
with socket.socket() as s:
    fcntl.ioctl(s.fileno(), 0x8946, request)  # SIOCETHTOOL
"""


TOPOLOGY6 = """\
version: 1
name: vxext6
nodes:
  pc1:
    type: pc
    interfaces: {eth0: {ipv4: [10.66.0.1/24], mtu: 1430}}
    commands: ["at 0 tcp-sink 5001", "at 1.5 ping -c 3 -i 0.3 10.66.0.2"]
  pc2:
    type: pc
    interfaces: {eth0: {ipv4: [10.67.0.1/24], mtu: 1430}}
    commands: ["at 1.5 ping -c 3 -i 0.3 10.67.0.2"]
  linux:
    type: router
    interfaces: {eth0: {ipv4: [10.66.0.2/24]}, eth1: {ipv4: [10.67.0.2/24]}}
links:
  - {a: pc1:eth0, b: linux:eth0, delay: 1ms}
  - {a: pc2:eth0, b: linux:eth1, delay: 1ms}
"""


def _free_udp_port(addr: str) -> int:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


def _veth(lab: Lab, ns: str, ours: str, theirs: str, plen: int) -> str:
    """A veth pair from the host (`ours`) into `ns` (`theirs` on v0); its host name."""
    host_dev = f"vimg{os.getpid() % 100000}v"
    subprocess.run(["ip", "link", "add", host_dev, "type", "veth", "peer", "name", "v0",
                    "netns", ns], check=True, capture_output=True, timeout=20)
    nodad = ["nodad"] if ":" in ours else []  # usable at once, not tentative
    added = subprocess.run(["ip", "addr", "add", f"{ours}/{plen}", "dev", host_dev, *nodad],
                           capture_output=True, text=True, timeout=20)
    if added.returncode != 0:
        subprocess.run(["ip", "link", "del", host_dev], capture_output=True, timeout=20)
        if nodad:
            pytest.skip(f"this host refuses an IPv6 address on a veth "
                        f"({added.stderr.strip()}): IPv6 disabled?")
        raise AssertionError(added.stderr)
    subprocess.run(["ip", "link", "set", host_dev, "up"], check=True,
                   capture_output=True, timeout=20)
    lab.ip(ns, "addr", "add", f"{theirs}/{plen}", "dev", "v0", *nodad)
    lab.ip(ns, "link", "set", "v0", "up")
    return host_dev


def _vxlan(lab: Lab, ns: str, name: str, vni: int, theirs: str, ours: str, port: int,
           inner: str) -> None:
    """`ip link add NAME type vxlan id VNI local THEIRS remote OURS dstport PORT` in `ns`,
    with `inner` on it; skips when the kernel has no vxlan."""
    try:
        lab.ip(ns, "link", "add", name, "type", "vxlan", "id", str(vni), "local", theirs,
               "remote", ours, "dstport", str(port), "dev", "v0")
    except AssertionError as exc:
        if "No such device" in str(exc) or "Unknown device type" in str(exc):
            pytest.skip("this Linux kernel has no vxlan (module vxlan is not available)")
        raise
    # Linux leaves the inner TCP checksum to offload (CHECKSUM_PARTIAL) and veth hands it
    # over unfilled: our host socket would get bad checksums (docs/mpi.md)
    off = lab.python(ns, TX_CSUM_OFF, name)
    assert off.returncode == 0, off.stderr
    lab.ip(ns, "addr", "add", inner, "dev", name)
    lab.ip(ns, "link", "set", name, "up")


def _engine(topo: Any, bind: str, remote: dict[str, tuple[str, int]],
            result: dict[str, Any]) -> threading.Thread:
    def engine() -> None:
        try:
            result["summary"] = batch.run(topo, 5.0, 1, None, batch.SoloComm(), True,
                                          realtime=True, bind=bind, remote=remote)
        except BaseException as exc:
            result["error"] = exc

    runner = threading.Thread(target=engine, daemon=True)
    runner.start()
    return runner


def test_linux_vxlan_is_the_far_end_of_a_cut_link(lab: Lab, tmp_path) -> None:
    ping = lab.need("ping")
    ns = lab.netns()
    k = os.getpid() % 250 + 1
    ours, theirs = f"198.18.{k}.1", f"198.18.{k}.2"
    host_dev = _veth(lab, ns, ours, theirs, 30)
    try:
        port = _free_udp_port(ours)
        _vxlan(lab, ns, "vx0", 1, theirs, ours, port, "10.66.0.2/24")
        path = tmp_path / "vxext.yaml"
        path.write_text(TOPOLOGY)
        result: dict[str, Any] = {}
        runner = _engine(yamlfmt.load(str(path)), ours, {"linux": (theirs, port)}, result)
        out = lab.run(ns, ping, "-c", "3", "-i", "0.3", "-W", "2", "-w", "5", "10.66.0.1")
        sent = lab.python(ns, SEND, "10.66.0.1")
        runner.join(30)
    finally:
        subprocess.run(["ip", "link", "del", host_dev], capture_output=True, timeout=20)
    assert not runner.is_alive()
    assert "error" not in result, result["error"]
    summary = result["summary"]
    assert out.returncode == 0 and "3 received" in out.stdout, out.stdout + out.stderr
    assert sent.returncode == 0 and "sent" in sent.stdout, sent.stderr
    jobs = "\n".join(summary["jobs"])
    assert "pc1 @0s tcp-sink 5001: 204800 bytes in 1 connections" in jobs, jobs
    assert "pc1 @1.5s ping -c 3 -i 0.3 10.66.0.2: 3 packets transmitted, 3 packets " \
        "received" in jobs, jobs
    assert summary["per_rank"][0]["frames_in"] > 140  # the 200 KB came through VXLAN
    assert summary["loop_errors"] == 0


def test_linux_vxlan_devices_over_ipv6_are_the_far_end_of_two_links(lab: Lab,
                                                                    tmp_path) -> None:
    """An IPv6 underlay (AF_INET6 sockets, `linux=[ADDR6]:PORT`) and a remote node with
    two links: Linux's vx1 (VNI 1) and vx2 (VNI 2) share its socket on dstport PORT, ours
    share one on [BIND6]:PORT. Linux pings pc1 and pc2 and sends 200 KB to pc1; pc1 and
    pc2 ping Linux."""
    ping = lab.need("ping")
    ns = lab.netns()
    k = os.getpid() % 65000 + 1
    ours, theirs = f"fd5e:{k:x}::1", f"fd5e:{k:x}::2"
    host_dev = _veth(lab, ns, ours, theirs, 64)
    try:
        port = _free_udp_port(ours)
        _vxlan(lab, ns, "vx1", 1, theirs, ours, port, "10.66.0.2/24")
        _vxlan(lab, ns, "vx2", 2, theirs, ours, port, "10.67.0.2/24")
        path = tmp_path / "vxext6.yaml"
        path.write_text(TOPOLOGY6)
        result: dict[str, Any] = {}
        runner = _engine(yamlfmt.load(str(path)), ours, {"linux": (theirs, port)}, result)
        out1 = lab.run(ns, ping, "-c", "3", "-i", "0.3", "-W", "2", "-w", "5", "10.66.0.1")
        out2 = lab.run(ns, ping, "-c", "3", "-i", "0.3", "-W", "2", "-w", "5", "10.67.0.1")
        sent = lab.python(ns, SEND, "10.66.0.1")
        runner.join(30)
    finally:
        subprocess.run(["ip", "link", "del", host_dev], capture_output=True, timeout=20)
    assert not runner.is_alive()
    assert "error" not in result, result["error"]
    summary = result["summary"]
    for out in (out1, out2):
        assert out.returncode == 0 and "3 received" in out.stdout, out.stdout + out.stderr
    assert sent.returncode == 0 and "sent" in sent.stdout, sent.stderr
    jobs = "\n".join(summary["jobs"])
    assert "pc1 @0s tcp-sink 5001: 204800 bytes in 1 connections" in jobs, jobs
    for pc, addr in (("pc1", "10.66.0.2"), ("pc2", "10.67.0.2")):
        assert f"{pc} @1.5s ping -c 3 -i 0.3 {addr}: 3 packets transmitted, 3 packets " \
            "received" in jobs, jobs
    assert summary["per_rank"][0]["nodes"] == 2  # linux is not built
    assert summary["per_rank"][0]["frames_in"] > 150  # 200 KB and both pings, over IPv6
    assert summary["loop_errors"] == 0
