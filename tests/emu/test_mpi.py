"""Experiments split across ranks (vimage.emu.mpi): the same bytes whatever the rank count.

In-process tests run the engine with one rank (SoloComm) or with N ranks as threads
(ThreadComm: the same alltoall and gather as MPI's, through a barrier); the mpirun
tests start `mpirun -n 2 vimage topo run` and skip when Open MPI or mpi4py is missing.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.mpi_run import mpirun, mpirun_env

from vimage import Kernel
from vimage.emu import Experiment, load
from vimage.emu import mpi as batch
from vimage.emu.experiment import ExperimentError
from vimage.net.bpf import open_capture

LAB = Path(__file__).parent / "data" / "mpi-lab.yaml"
DRAWS = Path(__file__).parent / "data" / "mpi-draws.yaml"
ROOT = Path(__file__).resolve().parents[2]


class ThreadComm:
    """N ranks as threads of this process, exchanging as MPI's alltoall and gather do."""

    def __init__(self, hub: dict[str, Any], rank: int, size: int) -> None:
        self.hub, self.rank, self.size = hub, rank, size

    def _swap(self, value: Any) -> list[Any]:
        self.hub["slots"][self.rank] = value
        self.hub["barrier"].wait()
        out = list(self.hub["slots"])
        self.hub["barrier"].wait()
        return out

    def alltoall(self, payloads: list[Any]) -> list[Any]:
        return [row[self.rank] for row in self._swap(payloads)]

    def gather(self, obj: Any) -> list[Any] | None:
        out = self._swap(obj)
        return out if self.rank == 0 else None

    def abort(self, code: int) -> None:
        self.hub["barrier"].abort()


def run_threads(topo, size: int, duration: float, pcap: Path, seed: int = 1,
                skip_ipv6: bool = False) -> dict[str, Any]:
    hub: dict[str, Any] = {"slots": [None] * size, "barrier": threading.Barrier(size)}
    results: list[Any] = [None] * size

    def one(rank: int) -> None:
        comm = ThreadComm(hub, rank, size)
        try:
            results[rank] = batch.run(topo, duration, seed, str(pcap), comm, skip_ipv6)
        except BaseException as exc:
            results[rank] = exc
            hub["barrier"].abort()

    threads = [threading.Thread(target=one, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results[0]


def hashes(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.glob("*.pcap"))}


def test_one_and_two_ranks_give_the_same_pcaps(tmp_path):
    topo = load(LAB)
    one = batch.run(topo, 12, 7, str(tmp_path / "one"), batch.SoloComm())
    two = run_threads(topo, 2, 12, tmp_path / "two", seed=7)
    assert two["partition"]["cut"] == 1 and two["lookahead_us"] == 5000
    assert sorted(two["partition"]["sizes"]) == [2, 4]  # r2-pc2 weighs 10: r1-r2 is cut
    names = ["h1.eth0--sw1.e1.pcap", "pc1.eth0--sw1.e0.pcap", "r1.eth1--r2.eth0.pcap",
             "r2.eth1--pc2.eth0.pcap", "sw1.e2--r1.eth0.pcap"]
    assert list(hashes(tmp_path / "one")) == names
    assert hashes(tmp_path / "one") == hashes(tmp_path / "two")
    assert one["jobs"] == two["jobs"]
    assert any("5 packets received" in j for j in one["jobs"])
    assert any("307200 bytes in 1 connections" in j for j in one["jobs"])
    per_rank = two["per_rank"]
    assert sum(r["events"] for r in per_rank) == one["per_rank"][0]["events"]
    assert per_rank[0]["frames_out"] == per_rank[1]["frames_in"] > 0
    assert one["loop_errors"] == two["loop_errors"] == 0


def test_another_seed_gives_other_bytes(tmp_path):
    topo = load(LAB)
    batch.run(topo, 6, 1, str(tmp_path / "a"), batch.SoloComm())
    batch.run(topo, 6, 2, str(tmp_path / "b"), batch.SoloComm())
    batch.run(topo, 6, 1, str(tmp_path / "c"), batch.SoloComm())
    assert hashes(tmp_path / "a") != hashes(tmp_path / "b")
    assert hashes(tmp_path / "a") == hashes(tmp_path / "c")


def test_three_ranks_match_one(tmp_path):
    topo = load(LAB)
    for link in topo.links:
        link.delay = link.delay or 2000  # every link may be cut
    batch.run(topo, 8, 3, str(tmp_path / "one"), batch.SoloComm())
    three = run_threads(topo, 3, 8, tmp_path / "three", seed=3)
    assert three["partition"]["cut"] >= 2 and three["lookahead_us"] >= 1000
    assert hashes(tmp_path / "one") == hashes(tmp_path / "three")


def test_draws_of_several_nodes_give_the_same_pcaps_with_1_2_3_ranks(tmp_path):
    """Two iperf3 clients (random payloads) and dummynet loss on two routers: each draws
    from its own vnet's stream, so how the nodes share kernels does not change a byte."""
    topo = load(DRAWS)
    one = batch.run(topo, 10, 4, str(tmp_path / "one"), batch.SoloComm(), skip_ipv6=True)
    assert len(hashes(tmp_path / "one")) == 5
    assert sum("61440 bytes sent" in j for j in one["jobs"]) == 2, one["jobs"]
    for n in (2, 3):
        summary = run_threads(topo, n, 10, tmp_path / str(n), seed=4, skip_ipv6=True)
        assert summary["partition"]["cut"] >= n - 1
        assert hashes(tmp_path / "one") == hashes(tmp_path / str(n)), n
        assert summary["jobs"] == one["jobs"]


class Tripwire:
    """Stands in for `kernel.rng`: notes every draw, then makes it from the real one."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.draws: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.draws.append(name)
        return getattr(self.real, name)


@pytest.mark.parametrize("keyed", [True, False])
def test_a_keyed_kernel_draws_nothing_from_the_kernel_rng(keyed):
    """Keyed: iperf3's payload, dummynet's loss and link impairment draw from their
    vnets' streams. Plain: from `kernel.rng`, as before (the tripwire sees them)."""
    kernel = Kernel(clock="virtual", seed=4, keyed=keyed)
    wire = Tripwire(kernel.rng)
    kernel.rng = wire  # type: ignore[assignment]
    exp = Experiment(load(DRAWS), kernel, skip_ipv6=True).up()
    kernel.run(10)
    drops = [exp.nodes[r].dummynet.io_pkt_drop for r in ("r1", "r2")]
    lost = exp.links[2].ends[0].pipe.dropped_loss + exp.links[2].ends[1].pipe.dropped_loss
    jobs = "\n".join(exp.jobs.lines())
    exp.down()
    assert jobs.count("61440 bytes sent") == 2, jobs
    assert min(drops) > 0 and lost > 0  # every drawing subsystem drew
    if keyed:
        assert wire.draws == []
    else:
        assert {"randbytes", "random", "randint"} <= set(wire.draws)


def test_keyed_kernel_macs_of_a_vnets_interfaces_come_from_its_name():
    """Interfaces a vnet makes itself (epair, vxlan, bridge) get the same MACs whichever
    other vnets share the kernel and made interfaces before."""
    macs = []
    for crowd in (0, 3):
        kernel = Kernel(clock="virtual", seed=1, keyed=True)
        for i in range(crowd):
            other = kernel.create(f"other{i}")
            kernel.epair(other)
            assert other.cmd("ifconfig bridge create").status == 0
        lab = kernel.create("lab")
        a, b = kernel.epair(lab)
        for line in ("ifconfig vxlan create vxlanid 5", "ifconfig bridge create"):
            assert lab.cmd(line).status == 0, line
        # (epair units are kernel-wide, as FreeBSD's: the names differ, not the MACs)
        macs.append(sorted(i.mac for i in lab.ifaces.values() if i.mac))
    assert macs[0] == macs[1]
    assert len(set(macs[0])) == len(macs[0]) == 4


def test_the_plain_experiment_gives_the_same_pcaps(tmp_path):
    """The reference: Experiment in a keyed kernel, with the run's derived MACs."""
    topo = load(LAB)
    batch.run(topo, 10, 5, str(tmp_path / "engine"), batch.SoloComm(), skip_ipv6=True)
    kernel = Kernel(clock="virtual", seed=5, keyed=True)
    exp = Experiment(batch.deterministic(topo, 5), kernel, skip_ipv6=True).up()
    (tmp_path / "plain").mkdir()
    sessions = [open_capture(link.ends[0], str(tmp_path / "plain" / batch.pcap_name(link.model)))
                for link in exp.links]
    kernel.run(10)
    for session in sessions:
        session.close()
    exp.down()
    assert hashes(tmp_path / "plain") == hashes(tmp_path / "engine")
    assert len(hashes(tmp_path / "plain")) == 5


def test_a_partitioned_run_leaves_nothing_behind():
    topo = load(LAB)
    hub: dict[str, Any] = {"slots": [None], "barrier": threading.Barrier(1)}
    engine = batch.Engine(topo, ThreadComm(hub, 0, 1), seed=1)
    engine.plan()
    engine.build()
    engine.run(3)
    kernel = engine.kernel
    assert kernel is not None and kernel.vnets()
    engine.close()
    assert kernel.vnets() == []
    assert kernel.sched.pending_timers() == 0
    assert not kernel.sched.queue


def test_cut_link_without_delay_is_refused():
    topo = load(LAB)
    topo.nodes["r1"].partition = 0
    topo.nodes["r2"].partition = 1
    topo.link_between("r1", "r2").delay = 0
    with pytest.raises(batch.RunError, match="pinned to partition 1 but linked "
                       "without delay to a node pinned to 0"):
        batch.Engine(topo, ThreadComm({}, 0, 2)).plan()
    engine = batch.Engine(topo, ThreadComm({}, 0, 2))
    engine.assignment = {n: int(n in ("r2", "pc2")) for n in topo.nodes}
    with pytest.raises(batch.RunError, match=r"^link r1:eth1-r2:eth0 is cut between ranks 0 "
                       r"and 1 and has no delay: give it a delay"):
        engine.plan_cuts()


def test_ext_nodes_are_refused():
    topo = load(LAB)
    topo.add_node("x", "ext")
    topo.connect("x", "pc2", delay=1000)
    with pytest.raises(batch.RankFailure, match="node x: an ext node cannot be part of a "
                       "partitioned run"):
        batch.run(topo, 1, comm=batch.SoloComm())


def test_derived_macs_depend_on_seed_and_name():
    mac = batch.derived_mac(1, "r1", "eth0")
    assert mac == batch.derived_mac(1, "r1", "eth0")
    assert mac != batch.derived_mac(2, "r1", "eth0") != batch.derived_mac(1, "r1", "eth1")
    assert int(mac[:2], 16) & 3 == 2  # locally administered, unicast


def test_keyed_kernel_orders_same_time_timers_by_owner():
    """Timers due together run by (owner key, owner's count), whatever their creation."""
    ran: list[str] = []
    orders = []
    for creation in (("a", "b"), ("b", "a")):
        kernel = Kernel(clock="virtual", seed=1, keyed=True)
        vnets = {n: kernel.create(n) for n in creation}
        ran.clear()
        for n in creation:
            for k in range(2):
                kernel.call_later(1.0, ran.append, f"{n}{k}", owner=vnets[n])
        kernel.run(1)
        orders.append(list(ran))
    assert orders[0] == orders[1]
    assert sorted(orders[0]) == ["a0", "a1", "b0", "b1"]
    assert orders[0].index("a0") < orders[0].index("a1")


def test_keyed_kernel_secrets_come_from_names():
    k1 = Kernel(clock="virtual", seed=1, keyed=True)
    k2 = Kernel(clock="virtual", seed=1, keyed=True)
    k1.create("x")
    a, b = k1.create("lab"), k2.create("lab")
    assert a.secret == b.secret and a.rng.random() == b.rng.random()
    plain = Kernel(clock="virtual", seed=1)
    assert plain.create("lab").serial + 1 == plain.create("lab2").serial  # as before


def test_topo_run_cli(tmp_path, capsys):
    from vimage.cli.vimage import main

    assert main(["topo", "run", str(LAB), "--duration", "5", "--pcap", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("topo run: 1 rank(s), 5 s of virtual time, seed 1, 0 cut link(s)")
    assert out[1].split()[:4] == ["rank", "nodes", "events", "rounds"]
    assert out[2].split()[:2] == ["0", "6"]
    assert len(list(tmp_path.glob("*.pcap"))) == 5


def test_at_jobs_in_a_plain_experiment():
    topo = load(LAB)
    kernel = Kernel(clock="virtual", seed=1)
    exp = Experiment(topo, kernel, skip_ipv6=True).up()
    kernel.run(8)
    lines = exp.jobs.lines()
    assert "pc1 @1s ping -c 5 -i 0.5 10.0.2.20: 5 packets transmitted, 5 packets " \
           "received" in "\n".join(lines)
    exp.down()
    topo.nodes["pc1"].commands = ["at soon ping 10.0.2.20"]
    with pytest.raises(ExperimentError, match=r"node pc1: 'at soon ping 10\.0\.2\.20': bad time"):
        Experiment(topo, kernel).up()
    topo.nodes["pc1"].commands = ["at 1 frobnicate"]
    with pytest.raises(ExperimentError, match="frobnicate: not a job"):
        Experiment(topo, kernel).up()
    assert kernel.vnets() == []


# -- mpirun ------------------------------------------------------------------------------------




def test_mpirun_two_ranks_match_one(tmp_path):
    cmd = mpirun()
    batch.run(load(LAB), 12, 9, str(tmp_path / "one"), batch.SoloComm())
    done = subprocess.run([*cmd, sys.executable, "-m", "vimage.cli.vimage", "topo", "run",
                           str(LAB), "--duration", "12", "--seed", "9", "--pcap",
                           str(tmp_path / "two")], env=mpirun_env(), capture_output=True,
                          text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "topo run: 2 rank(s), 12 s of virtual time, seed 9, 1 cut link(s), " \
           "lookahead 5000 us" in done.stdout
    assert len(hashes(tmp_path / "one")) == 5
    assert hashes(tmp_path / "one") == hashes(tmp_path / "two")


def test_mpirun_a_dying_rank_ends_the_run(tmp_path):
    cmd = mpirun()
    done = subprocess.run([*cmd, sys.executable, "-m", "vimage.cli.vimage", "topo", "run",
                           str(LAB), "--duration", "10"], env=mpirun_env(**{batch.FAIL_ENV: "0"}),
                          capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert ("vimage topo run: rank 0 of 2 failed (nodes pc2, r2): RuntimeError: "
            f"{batch.FAIL_ENV} asked this rank to fail") in done.stderr


# -- real time: VXLAN tunnels between ranks -----------------------------------------------------
def run_realtime_threads(topo, duration: float, bind: str = "127.0.0.1") -> dict[str, Any]:
    """Two ranks as threads, in real time (cut links as VXLAN tunnels on `bind`)."""
    hub: dict[str, Any] = {"slots": [None] * 2, "barrier": threading.Barrier(2)}
    results: list[Any] = [None, None]

    def one(rank: int) -> None:
        try:
            results[rank] = batch.run(topo, duration, 1, None, ThreadComm(hub, rank, 2), True,
                                      realtime=True, bind=bind)
        except BaseException as exc:
            results[rank] = exc
            hub["barrier"].abort()

    threads = [threading.Thread(target=one, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    summary = results[0]
    assert not isinstance(summary, BaseException), summary
    return summary  # type: ignore[no-any-return]


@pytest.mark.parametrize("bind", ["127.0.0.1", "::1"])
def test_realtime_ranks_pass_ping_and_tcp_through_vxlan(tmp_path, bind):
    """The tunnels between ranks over IPv4, and over IPv6 (AF_INET6 sockets on ::1)."""
    summary = run_realtime_threads(load(LAB), 4.5, bind)
    _crossed(summary["jobs"])
    per_rank = summary["per_rank"]
    assert per_rank[0]["frames_out"] == per_rank[1]["frames_in"] > 0


def test_realtime_ranks_carry_iperf3_through_vxlan():
    """iperf3 (vimage.apps.iperf3) from pc1 on one rank to pc2 on the other: the client
    finishes only once the server's results came back over the control connection."""
    topo = load(Path(__file__).parent / "data" / "mpi-iperf3.yaml")
    summary = run_realtime_threads(topo, 4.0)
    assert summary["partition"]["cut"] == 1, summary["partition"]
    assert "pc1 @1s iperf3 -c 10.0.2.20 -n 200K: 204800 bytes sent, 0 received" \
        in summary["jobs"], summary["jobs"]
    out = [r["frames_out"] for r in summary["per_rank"]]
    into = [r["frames_in"] for r in summary["per_rank"]]
    assert max(out) >= 200 * 1024 // 1460 and min(out) > 0  # the data one way, ACKs back
    assert max(into) >= 200 * 1024 // 1460 and min(into) > 0
    assert summary["loop_errors"] == 0


REMOTE_TOPO = """\
version: 1
name: vxfar
nodes:
  pc1:
    type: pc
    interfaces: {eth0: {ipv4: [10.66.0.1/24]}}
    commands: ["at 0.3 ping -c 1 10.66.0.2"]
  far: {type: pc, commands: ["ifconfig eth0 10.66.0.2/24"]}
links:
  - {a: pc1:eth0, b: far:eth0, delay: 1ms}
"""


def _far_end(far: Any, links: dict[int, bytes], expect: tuple[Any, ...]) -> list[tuple[int, str]]:
    """Play a VXLAN endpoint on socket `far` for the links `links` (VNI -> the far
    node's IPv4 address there): answer ARP for that address, note each ICMP echo request
    to it, until every VNI saw one. Every datagram must come from `expect`."""
    import struct

    from vimage.wire import vxlan

    mac = bytes.fromhex("020000000099")
    seen: list[tuple[int, str]] = []
    while {vni for vni, kind in seen if kind == "icmp"} != set(links):
        data, sender = far.recvfrom(65535)
        rep = vxlan.parse(data)
        assert rep is not None and rep.vni in links and sender[:2] == expect, (rep, sender)
        frame, ours = bytes(rep.payload), links[rep.vni]
        who_has = frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x01"
        if who_has and frame[38:42] == ours:  # not the gratuitous one
            arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, ours,
                              frame[22:28], frame[28:32])
            far.sendto(vxlan.build(rep.vni, frame[6:12] + mac + b"\x08\x06" + arp), sender)
            seen.append((rep.vni, "arp"))
        elif frame[12:14] == b"\x08\x00" and frame[23] == 1:
            assert frame[:6] == mac and frame[30:34] == ours
            seen.append((rep.vni, "icmp"))
    return seen


def _run_with_far_end(topo: Any, family: int, bind: str, far_addr: str,
                      remote: list[str], links: dict[int, bytes]) -> tuple[Any, list[Any]]:
    """The engine in a thread with `remote` nodes at far_addr:PORT; the far end played
    on one socket there (as Linux's vxlan devices share one socket on their dstport)."""
    import socket

    far = socket.socket(family, socket.SOCK_DGRAM)
    far.bind((far_addr, 0))
    far.settimeout(5)
    port = far.getsockname()[1]
    result: dict[str, Any] = {}

    def engine() -> None:
        try:
            result["summary"] = batch.run(topo, 1.5, 1, None, batch.SoloComm(), True,
                                          realtime=True, bind=bind,
                                          remote={n: (far_addr, port) for n in remote})
        except BaseException as exc:
            result["error"] = exc

    runner = threading.Thread(target=engine)
    runner.start()
    try:
        seen = _far_end(far, links, (bind, port))
    finally:
        runner.join(30)
        far.close()
    assert "error" not in result, result["error"]
    return result["summary"], seen


def test_a_remote_node_is_a_vxlan_endpoint_outside_vimage(tmp_path):
    """--remote far=127.0.0.1:PORT: pc1's end sends VXLAN (VNI 1, link 0) to that socket,
    binding PORT itself; what the endpoint sends back (an ARP reply) reaches pc1, which
    then sends its ICMP echo request."""
    import socket

    path = tmp_path / "far.yaml"
    path.write_text(REMOTE_TOPO)
    summary, seen = _run_with_far_end(load(path), socket.AF_INET, "127.0.0.2", "127.0.0.1",
                                      ["far"], {1: bytes([10, 66, 0, 2])})
    assert seen[0] == (1, "arp") and seen[-1] == (1, "icmp")
    assert summary["per_rank"][0]["nodes"] == 1  # far is not built
    assert summary["per_rank"][0]["frames_in"] == 1


REMOTE_TWO_LINKS = """\
version: 1
name: vxfar2
nodes:
  pc1:
    type: pc
    interfaces: {eth0: {ipv4: [10.66.0.1/24]}}
    commands: ["at 0.3 ping -c 1 10.66.0.2"]
  pc2:
    type: pc
    interfaces: {eth0: {ipv4: [10.67.0.1/24]}}
    commands: ["at 0.3 ping -c 1 10.67.0.2"]
  far:
    type: router
    interfaces: {eth0: {ipv4: [10.66.0.2/24]}, eth1: {ipv4: [10.67.0.2/24]}}
links:
  - {a: pc1:eth0, b: far:eth0, delay: 1ms}
  - {a: far:eth1, b: pc2:eth0, delay: 1ms}
"""


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_remote_node_with_two_links_shares_one_socket(tmp_path, family):
    """A remote node with two links: VNI 1 (pc1's link) and VNI 2 (pc2's) from one socket
    on PORT, told apart by VNI on the way in, as by Linux's vxlan devices of one dstport.
    IPv6: AF_INET6 sockets, `--bind` and the far end in IPv6 form (IPv4-mapped: without
    root there is one IPv6 loopback address and both ends want PORT; the Linux interop
    test, tests/interop/test_vxlan_mpi.py, runs a real IPv6 underlay)."""
    import socket

    path = tmp_path / "far2.yaml"
    path.write_text(REMOTE_TWO_LINKS)
    if family == "ipv4":
        af, bind, far = socket.AF_INET, "127.0.0.2", "127.0.0.1"
    else:
        af, bind, far = socket.AF_INET6, "::ffff:127.0.0.2", "::ffff:127.0.0.1"
    summary, seen = _run_with_far_end(load(path), af, bind, far, ["far"],
                                      {1: bytes([10, 66, 0, 2]), 2: bytes([10, 67, 0, 2])})
    assert {(1, "arp"), (2, "arp"), (1, "icmp"), (2, "icmp")} <= set(seen)
    assert summary["per_rank"][0]["nodes"] == 2  # far is not built
    assert summary["per_rank"][0]["frames_in"] == 2  # an ARP reply on each VNI
    assert "pc1 @0.3s ping -c 1 10.66.0.2: 1 packets transmitted" in "\n".join(summary["jobs"])


def test_a_port_of_remote_nodes_on_two_ranks_of_one_host_is_refused(tmp_path):
    """Two remote nodes on one port, linked to nodes on two ranks with one --bind: the
    second rank cannot bind the port, and says so (pin those nodes to one partition)."""
    import socket

    path = tmp_path / "far2.yaml"
    path.write_text(REMOTE_TWO_LINKS.replace("far:eth1", "far2:eth0")
                    .replace("links:", "  far2: {type: pc}\nlinks:"))
    topo = load(path)
    topo.nodes["pc1"].partition, topo.nodes["pc2"].partition = 0, 1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.2", 0))
        port = probe.getsockname()[1]
    hub: dict[str, Any] = {"slots": [None] * 2, "barrier": threading.Barrier(2)}
    results: list[Any] = [None, None]

    def one(rank: int) -> None:
        try:
            results[rank] = batch.run(topo, 0.5, 1, None, ThreadComm(hub, rank, 2), True,
                                      realtime=True, bind="127.0.0.2",
                                      remote={"far": ("127.0.0.1", port),
                                              "far2": ("127.0.0.1", port)})
        except BaseException as exc:
            results[rank] = exc
            hub["barrier"].abort()

    threads = [threading.Thread(target=one, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    failures = [str(r) for r in results if isinstance(r, batch.RankFailure)]
    assert any(f"cannot bind 127.0.0.2:{port} for the tunnels to remote nodes (Address "
               "already in use)" in f and "pin the nodes linked to remote nodes" in f
               for f in failures), results


def test_a_pin_that_splits_a_remote_node_from_a_neighbour_says_why(tmp_path):
    path = tmp_path / "far2.yaml"
    path.write_text(REMOTE_TWO_LINKS)
    topo = load(path)
    topo.nodes["pc1"].partition, topo.nodes["pc2"].partition = 0, 1
    with pytest.raises(batch.RunError, match=re.escape(
            "(a remote node's links count as links without delay: the node and its "
            "neighbours share a rank)")):
        batch.Engine(topo, ThreadComm({}, 0, 2), realtime=True,
                     remote={"far": ("127.0.0.1", 4789)}).plan()


@pytest.mark.parametrize("remote, realtime, message", [
    ({"nobody": ("127.0.0.1", 4789)}, True, "--remote nobody: no such node"),
    ({"far": ("127.0.0.1", 4789)}, False, "--remote far: a remote node needs --realtime"),
    ({"sw": ("127.0.0.1", 4789), "far": ("127.0.0.1", 4789)}, True,
     "--remote sw: its link sw:e1-far:eth0 has no end in vimage"),
    ({"lone": ("127.0.0.1", 4789)}, True, "--remote lone: a remote node needs a link"),
    ({"far": ("fd00::2", 4789)}, True, "--remote far: fd00::2 is IPv6 but --bind "
     "127.0.0.1 is IPv4 (give --bind an IPv6 address of this host)"),
])
def test_remote_nodes_are_checked(tmp_path, remote, realtime, message):
    path = tmp_path / "far.yaml"
    text = REMOTE_TOPO.split("links:")[0]
    path.write_text(text + "  sw: {type: lanswitch}\n  lone: {type: pc}\n"
                    "links: [[sw, pc1], [sw, far]]\n")
    with pytest.raises(batch.RunError, match=re.escape(message)):
        batch.run(load(path), 1.0, 1, None, batch.SoloComm(), True, realtime=realtime,
                  remote=remote)


def test_topo_run_remote_option_is_parsed(tmp_path, capsys):
    from vimage.cli import vimage as cli

    path = tmp_path / "far.yaml"
    path.write_text(REMOTE_TOPO)
    assert cli.main(["topo", "run", str(path), "--duration", "1", "--remote",
                     "far=127.0.0.1:4789"]) == 1
    assert "--remote far: a remote node needs --realtime" in capsys.readouterr().err

    assert cli._remote_endpoint("far=10.1.2.3:4789") == ("far", ("10.1.2.3", 4789))
    assert cli._remote_endpoint("far=[fd00::2]:4789") == ("far", ("fd00::2", 4789))
    for bad in ("far", "far=10.1.2.3", "=10.1.2.3:1", "far=host:1", "far=10.1.2.3:70000",
                "far=fd00::2:4789", "far=[10.1.2.3]:4789", "far=[fd00::2]", "far=[x]:1"):
        with pytest.raises(cli.Usage, match=re.escape("want NODE=ADDR:PORT (IPv4) or "
                                                      "NODE=[ADDR]:PORT (IPv6)")):
            cli._remote_endpoint(bad)
    assert cli.main(["topo", "run", str(path), "--duration", "1", "--realtime", "--bind",
                     "localhost"]) == 64  # EX_USAGE
    err = capsys.readouterr().err  # a bad value: one line, no usage text after it
    assert err == "vimage: topo run: --bind localhost: want an IPv4 or IPv6 address\n"
    assert cli.main(["topo", "run", str(path), "--duration", "1", "--realtime", "--remote",
                     "far=10.1.2.3"]) == 64
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.loop_errors
def test_a_tunnel_drops_and_counts_what_is_not_its_vxlan():
    from vimage.emu.mpi_realtime import Tunnels
    from vimage.wire import vxlan

    kernel = Kernel(clock="real", seed=1, keyed=True)
    a, _b = kernel.epair()
    tunnels = Tunnels(None, "127.0.0.1")  # type: ignore[arg-type]
    pipe = tunnels.attach((3, "a"), a)
    where = tunnels.addresses()[(3, "a")]
    frame = bytes(6) + bytes.fromhex("020000000001") + b"\x88\xb5" + bytes(50)
    with __import__("socket").socket(2, 2) as sender:
        for data in (b"junk", vxlan.build(9, frame), vxlan.build(4, frame)):
            sender.sendto(data, where)
        import time

        deadline = time.monotonic() + 5
        while tunnels.received + tunnels.malformed < 3 and time.monotonic() < deadline:
            tunnels._drain(pipe.sock, tunnels.ends[pipe.sock])
    assert (tunnels.malformed, tunnels.received) == (2, 1)
    assert a.ierrors == 2
    assert [f for r, f in kernel.sched.queue if r is a] == [frame]
    tunnels.stop()
    tunnels.stop()  # twice is harmless


def test_mpirun_realtime_across_ranks(tmp_path):
    cmd = mpirun()
    done = subprocess.run([*cmd, sys.executable, "-m", "vimage.cli.vimage", "topo", "run",
                           str(LAB), "--duration", "4.5", "--realtime", "--skip-ipv6"],
                          env=mpirun_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert "2 rank(s), 4.5 s of real time, seed 1, 1 cut link(s), VXLAN tunnels" in done.stdout
    _crossed([line for line in done.stdout.splitlines() if line.startswith("job ")])


def _crossed(jobs: list[str]) -> None:
    """Ping replies and TCP bytes crossed the tunnel (real time on a busy machine: some
    may still be on their way when the run ends)."""
    text = "\n".join(jobs)
    ping = re.search(r"pc1 @1s ping -c 5 -i 0\.5 10\.0\.2\.20: 5 packets transmitted, "
                     r"(\d) packets received", text)
    sink = re.search(r"pc2 @0s tcp-sink 5001: (\d+) bytes in 1 connections", text)
    assert ping is not None and int(ping.group(1)) >= 1, text
    assert sink is not None and int(sink.group(1)) > 0, text


def test_bench_mpi_smoke():
    """bench/bench_mpi.py at a tiny size, one rank (no mpirun needed): no timing asserted."""
    import json

    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_mpi.py"), "--nodes", "18",
                          "--duration", "3", "--ranks", "1"], env=env, capture_output=True,
                         text=True, timeout=300, check=True)
    result = json.loads(out.stdout)
    run = result["best"]["1"]
    assert result["nodes"] == 18 and run["events"] > 0
    assert run["jobs"] == 15 and run["jobs_ok"] == run["jobs"]  # every ping got its replies
