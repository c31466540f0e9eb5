"""A Linux vxlan device as the far end of a real-time run's cut link (docs/mpi.md,
`vimage topo run --realtime --remote NODE=ADDR:PORT`).

The topology links vimage's pc1 to a node `linux` that vimage does not build: with
`remote={"linux": (ADDR, PORT)}` the link's pc1 end is a VXLAN tunnel (VNI = link index +
1) from the host socket BIND:PORT to ADDR:PORT. ADDR is the far end of a veth pair in a
Linux namespace, where `ip link add vx0 type vxlan id 1 local ADDR remote BIND dstport
PORT` carries the node's address. Linux pings vimage, vimage pings Linux (a start-up job),
and Linux sends 200 KB to vimage's tcp-sink. Skips naming the module when this Linux
kernel has no vxlan.
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


def _free_udp_port(addr: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((addr, 0))
        return int(s.getsockname()[1])


def test_linux_vxlan_is_the_far_end_of_a_cut_link(lab: Lab, tmp_path) -> None:
    ping = lab.need("ping")
    ns = lab.netns()
    k = os.getpid() % 250 + 1
    ours, theirs = f"198.18.{k}.1", f"198.18.{k}.2"
    host_dev = f"vimg{os.getpid() % 100000}v"
    subprocess.run(["ip", "link", "add", host_dev, "type", "veth", "peer", "name", "v0",
                    "netns", ns], check=True, capture_output=True, timeout=20)
    try:
        subprocess.run(["ip", "addr", "add", f"{ours}/30", "dev", host_dev], check=True,
                       capture_output=True, timeout=20)
        subprocess.run(["ip", "link", "set", host_dev, "up"], check=True,
                       capture_output=True, timeout=20)
        lab.ip(ns, "addr", "add", f"{theirs}/30", "dev", "v0")
        lab.ip(ns, "link", "set", "v0", "up")
        port = _free_udp_port(ours)
        try:
            lab.ip(ns, "link", "add", "vx0", "type", "vxlan", "id", "1", "local", theirs,
                   "remote", ours, "dstport", str(port), "dev", "v0")
        except AssertionError as exc:
            if "No such device" in str(exc) or "Unknown device type" in str(exc):
                pytest.skip("this Linux kernel has no vxlan (module vxlan is not available)")
            raise
        # Linux leaves the inner TCP checksum to offload (CHECKSUM_PARTIAL) and veth
        # hands it over unfilled: our host socket would get bad checksums (docs/mpi.md)
        off = lab.python(ns, TX_CSUM_OFF, "vx0")
        assert off.returncode == 0, off.stderr
        lab.ip(ns, "addr", "add", "10.66.0.2/24", "dev", "vx0")
        lab.ip(ns, "link", "set", "vx0", "up")
        path = tmp_path / "vxext.yaml"
        path.write_text(TOPOLOGY)
        topo = yamlfmt.load(str(path))
        result: dict[str, Any] = {}

        def engine() -> None:
            try:
                result["summary"] = batch.run(topo, 5.0, 1, None, batch.SoloComm(), True,
                                              realtime=True, bind=ours,
                                              remote={"linux": (theirs, port)})
            except BaseException as exc:
                result["error"] = exc

        runner = threading.Thread(target=engine, daemon=True)
        runner.start()
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
