"""The GUI on a partitioned experiment (vimage.web.partitioned, docs/gui.md).

In-process tests run two ranks in this process, each a LivePartition serving the other
through a PartitionedControl mesh on 127.0.0.1 (vimage.emu.mpi_control), as `mpirun -n 2
vimage gui` has them, without MPI. The mpirun test starts the real thing and drives it
over HTTP and the websocket as the page does; it skips without Open MPI or mpi4py. The
topology (data/split.yaml) pins pc1 and r1 to rank 1, r2, r3 and pc2 to rank 0: r1-r2 is
the cut link (a VXLAN tunnel), its a end r1 on rank 1. Real time: pings are short.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from vimage.emu.mpi_live import LivePartition
from vimage.web.partitioned import PartitionedRuntime, connect_ranks
from vimage.web.session import GuiError, GuiSession

from .conftest import SPLIT, PartitionedGui, mpirun, mpirun_env

PING = "ping -c 2 -i 0.2 10.0.3.20"  # pc1 (rank 1) to pc2 (rank 0)


def ipv4_frames(pcap: bytes) -> int:
    """The IPv4 Ethernet frames of a classic little-endian pcap, record by record (a count
    of the bytes 08 00 45 anywhere could also match a timestamp or a payload)."""
    count, at = 0, 24
    while at + 16 <= len(pcap):
        size = int.from_bytes(pcap[at + 8:at + 12], "little")
        frame = pcap[at + 16:at + 16 + size]
        count += frame[12:14] == b"\x08\x00"
        at += 16 + size
    assert at == len(pcap), "a truncated pcap record"
    return count


def min_rtt(output: str) -> float:
    found = re.search(r"round-trip min/avg/max/stddev = ([\d.]+)/", output)
    assert found is not None, output
    return float(found.group(1))


class MeshComm:
    """The one MPI exchange connect_ranks makes (an alltoall), between two threads."""

    def __init__(self, hub: dict, rank: int) -> None:
        self.hub, self.rank, self.size = hub, rank, 2

    def alltoall(self, payloads: list) -> list:
        self.hub["slots"][self.rank] = payloads
        self.hub["barrier"].wait(10)
        return [row[self.rank] for row in self.hub["slots"]]


def two_partitions() -> tuple[list[LivePartition], list]:
    hub = {"slots": [None, None], "barrier": threading.Barrier(2)}
    parts = [LivePartition(0, 2), LivePartition(1, 2)]
    controls: list = [None, None]

    def connect(rank: int) -> None:
        controls[rank] = connect_ranks(MeshComm(hub, rank), parts[rank], "127.0.0.1")

    threads = [threading.Thread(target=connect, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert all(controls), "the mesh did not connect"
    return parts, controls


@pytest.fixture
def two_ranks(tmp_path):
    """A GuiSession on split.yaml whose runtime spans rank 0 and rank 1 (this process);
    yields (session, rank 0's partition, rank 1's partition, rank 1's control)."""
    path = tmp_path / "split.yaml"
    shutil.copy(SPLIT, path)
    (part0, part1), (control0, control1) = two_partitions()
    gui = GuiSession.open(path, PartitionedRuntime(control0))
    yield gui, part0, part1, control1
    gui.close()
    for part, control in ((part1, control1), (part0, control0)):
        part.close()
        control.stop("the test ends")
    for control in (control1, control0):
        control.finish(1)
        control.close()


def test_requests_reach_the_rank_holding_the_node_or_link(two_ranks):
    gui, part0, part1, _ = two_ranks
    with pytest.raises(GuiError, match="start the experiment first"):
        gui.run("pc1", "ifconfig")
    gui.up()
    view = gui.view()
    assert view["up"] and view["ranks"] == {"pc1": 1, "r1": 1, "r2": 0, "r3": 0, "pc2": 0}
    assert sorted(part1.engine.exp.nodes) == ["pc1", "r1"]  # type: ignore[union-attr]
    assert sorted(part0.engine.exp.nodes) == ["pc2", "r2", "r3"]  # type: ignore[union-attr]

    status, output = gui.run("pc1", PING)  # rank 1 -> rank 0 through the tunnel
    assert status == 0 and "2 packets received" in output, output
    before = min_rtt(output)
    assert "inet 10.0.3.20" in gui.run("pc2", "ifconfig eth0")[1]  # rank 0's own node

    assert gui.set_link("r2", "r1", {"delay": "50ms"}) == {"bandwidth": 10_000_000,
                                                            "delay": 50_000}
    cut = [e.pipe.delay for p in (part0, part1) for (i, _), e in p.engine.exp.cut_ends.items()  # type: ignore[union-attr]
           if i == 1]
    assert cut == [0.05, 0.05]  # both ranks changed their end of the cut link
    assert gui.topology.link_between("r1", "r2").delay == 50_000

    capture = gui.capture_start("r1", "r2")
    assert capture["running"] and capture["rank"] == 1 and capture["ifname"] == "eth1"
    after = min_rtt(gui.run("pc1", PING)[1])
    assert after >= 100 > before  # 2 x (1 + 50 + 5 + 1) ms now
    counters = gui.counters()
    assert [(x["a"], x["b"]) for x in counters["links"]] == [
        ("pc1", "r1"), ("r1", "r2"), ("r2", "r3"), ("r3", "pc2")]
    assert all(x["packets"] >= 8 for x in counters["links"])  # 2 pings of 2, both ways
    stopped = gui.capture_stop("r1", "r2")
    assert stopped["running"] is False and stopped["captured"] == 4
    pcap = gui.capture_pcap("r1", "r2")
    assert pcap[:4] == bytes.fromhex("4d3cb2a1") and ipv4_frames(pcap) == 4

    gui.down()
    assert not gui.is_up and part0.engine is None and part1.engine is None
    assert gui.capture_pcap("r1", "r2") == pcap  # kept once stopped


def test_refusals_name_what_is_wrong(two_ranks):
    gui, _, _, _ = two_ranks
    gui.up()
    with pytest.raises(GuiError) as refused:
        gui.run("r9", "ifconfig")
    assert refused.value.status == 404 and str(refused.value) == \
        "experiment split has no node 'r9'"
    with pytest.raises(GuiError, match="link r1-r2 is cut between ranks: it cannot be direct"):
        gui.set_link("r1", "r2", {"direct": True})
    assert not gui.topology.link_between("r1", "r2").direct  # nothing changed
    with pytest.raises(GuiError, match="stop the experiment"):
        topo = gui.topology.to_dict()
        topo["nodes"]["pc3"] = {"type": "pc"}
        gui.replace(topo)
    with pytest.raises(GuiError, match="not a vimage tool"):
        gui.run("pc1", "sh -c id")


def test_edits_while_stopped_are_partitioned_again_at_start(two_ranks):
    gui, _, part1, _ = two_ranks
    topo = gui.topology.to_dict()
    topo["nodes"]["pc3"] = {"type": "pc", "auto_default_routes": True, "partition": 1}
    topo["links"].append({"a": "pc3", "b": "r2", "delay": "1ms"})
    gui.replace(topo)
    gui.up()
    assert gui.view()["ranks"]["pc3"] == 1 and "pc3" in part1.engine.exp.nodes  # type: ignore[union-attr]
    assert gui.view()["addresses"]["r2"]["eth2"] == ["10.0.4.1/24"]
    assert gui.run("pc3", "ping -c 1 10.0.4.1")[0] == 0  # r2, over a second cut link


def test_a_failed_start_names_the_rank_and_leaves_nothing(two_ranks):
    gui, part0, part1, _ = two_ranks
    topo = gui.topology.to_dict()
    topo["nodes"]["pc1"]["commands"] = ["nosuchtool -x"]  # pc1 is rank 1's
    gui.replace(topo)
    with pytest.raises(GuiError) as refused:
        gui.up()
    assert refused.value.status == 409
    assert str(refused.value).startswith("rank 1: experiment split: node pc1: "
                                         "'nosuchtool -x' failed")
    assert not gui.is_up and part0.engine is None and part1.engine is None
    del topo["nodes"]["pc1"]["commands"]
    gui.replace(topo)
    gui.up()  # and it starts once mended
    kernels = [part.engine.kernel for part in (part0, part1)]  # type: ignore[union-attr]
    assert all(k._thread is not None for k in kernels)  # type: ignore[union-attr]
    gui.down()
    assert all(k.vnets() == [] and k._thread is None for k in kernels)  # type: ignore[union-attr]


def test_a_rank_that_died_is_named_with_its_nodes(two_ranks):
    gui, _, part1, control1 = two_ranks
    gui.up()
    control1.close()  # rank 1's connections end without a stop: as if killed
    part1.close()
    with pytest.raises(GuiError) as refused:
        for _ in range(50):  # the reader thread sees the end of file at once, or nearly
            gui.run("pc1", "ifconfig")
    assert refused.value.status == 502
    assert str(refused.value) == ("rank 1 of 2 (nodes pc1, r1) died (its control "
                                  "connection closed)")
    assert gui.run("pc2", "ifconfig eth0")[0] == 0  # rank 0 still serves its own
    with pytest.raises(GuiError, match=r"rank 1 of 2 \(nodes pc1, r1\) died"):
        gui.down()


# -- mpirun -n 2 vimage gui -----------------------------------------------------------------------
def ws_cmd(ws, node: str, line: str, ident: int) -> dict:
    ws.send(json.dumps({"type": "cmd", "id": ident, "node": node, "line": line}))
    for _ in range(500):
        message = json.loads(ws.recv(timeout=60))
        if message["type"] in ("result", "error") and message.get("id") == ident:
            return message  # type: ignore[no-any-return]
    raise AssertionError("no answer to the command")


def test_mpirun_two_ranks_serve_the_gui(tmp_path):
    pytest.importorskip("websockets", reason="the websocket client needs websockets")
    from websockets.sync.client import connect

    path = tmp_path / "split.yaml"
    shutil.copy(SPLIT, path)
    gui = PartitionedGui(path)
    try:
        assert gui.api("GET", "/api/topology")[0] == 200
        view = gui.json("POST", "/api/up")
        assert view["up"] and view["ranks"] == {"pc1": 1, "r1": 1, "r2": 0, "r3": 0, "pc2": 0}
        ws_url = gui.base.replace("http:", "ws:") + f"/ws?token={gui.token}"
        with connect(ws_url, open_timeout=30) as ws:
            result = ws_cmd(ws, "pc1", PING, 1)  # pc1 on rank 1 pings pc2 on rank 0
            assert result["type"] == "result" and result["status"] == 0, result
            before = min_rtt(result["output"])
            changed = gui.json("POST", "/api/link", {"a": "r1", "b": "r2",
                                                     "params": {"delay": "50ms"}})
            assert changed["params"]["delay"] == 50_000  # the cut link, on both ranks
            started = gui.json("POST", "/api/capture/start", {"a": "r1", "b": "r2"})
            assert started["running"] and started["rank"] == 1
            after = ws_cmd(ws, "pc1", PING, 2)
            assert after["status"] == 0 and min_rtt(after["output"]) >= 100 > before
            counters = None
            for _ in range(20):
                counters = json.loads(ws.recv(timeout=30))
                if counters["type"] == "counters" and counters["links"][1]["packets"] >= 8:
                    break
            assert counters is not None and counters["up"] is True
            assert counters["links"][1]["packets"] >= 8, counters  # summed over both ranks
        stopped = gui.json("POST", "/api/capture/stop", {"a": "r1", "b": "r2"})
        assert stopped["running"] is False and stopped["captured"] == 4
        status, pcap = gui.api("GET", "/api/capture.pcap?a=r1&b=r2")
        assert status == 200 and pcap[:4] == bytes.fromhex("4d3cb2a1")
        assert ipv4_frames(pcap) == 4  # two requests and two replies, rank 1's
        assert gui.json("POST", "/api/down")["up"] is False
        assert gui.api("POST", "/api/capture/start", {"a": "r1", "b": "r2"})[0] == 409
    finally:
        out, err = gui.stop()
    assert "Traceback" not in err, err
    assert out.endswith("vimage gui: stopped on every rank\n"), out  # each said stop


def _rank_pid(mpirun_pid: int, rank: int) -> int:
    """The process of rank `rank` among mpirun's children (OMPI_COMM_WORLD_RANK)."""
    for child in Path(f"/proc/{mpirun_pid}/task/{mpirun_pid}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        if f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
            return int(child)
    raise AssertionError(f"no rank {rank} under mpirun {mpirun_pid}")


def test_mpirun_a_killed_rank_is_named_and_ends_the_gui(tmp_path):
    path = tmp_path / "split.yaml"
    shutil.copy(SPLIT, path)
    gui = PartitionedGui(path)
    try:
        assert gui.json("POST", "/api/up")["up"] is True
        os.kill(_rank_pid(gui.proc.pid, 1), signal.SIGKILL)
        _, err = gui.proc.communicate(timeout=60)
    finally:
        gui.stop()
    assert "vimage gui: rank 1 of 2 (nodes pc1, r1) died: ending the experiment" in err
    assert gui.proc.returncode != 0


def test_mpirun_a_bad_file_is_one_line(tmp_path):
    bad = tmp_path / "lab.yaml"
    bad.write_text("version: 1\nnodes:\n  ap: {type: wlan}\n")
    done = subprocess.run([*mpirun(), sys.executable, "-m", "vimage.cli.vimage", "gui",
                           str(bad)], env=mpirun_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode != 0
    assert f"vimage gui: {bad}:3: nodes.ap.type: unknown node type 'wlan'\n" in done.stderr
    assert done.stderr.count("vimage gui:") == 1  # said once, by rank 0


def test_a_rank_sends_the_pcap_frames_that_fit(two_ranks):
    gui, _, part1, _ = two_ranks
    gui.up()
    gui.capture_start("r1", "r2")  # held by rank 1
    assert gui.run("pc1", PING)[0] == 0
    index = 1
    whole = part1.capture_pcap(index)
    assert ipv4_frames(whole) == 4
    one = 24 + 16 + int.from_bytes(whole[24 + 8:24 + 12], "little")  # header, 1st frame
    first = part1.capture_pcap(index, limit=one + 16)  # not room for the second frame
    assert len(first) == one and whole.startswith(first)
    assert part1.capture_pcap(index, limit=23) == whole[:24]  # no frame at all
