"""iperf3 between a vnet and the Linux kernel over a TAP link: both roles, both directions.

The vnet side is vimage.apps.iperf3 (its client and server run in the kernel loop, here
the lab's real-time background thread); the Linux side is the real iperf3 binary with
-J, whose JSON report gives its byte counts. Each test checks that the counts each side
reports for itself agree with what the other side says about them (both report both
directions after the results exchange), and, where the test ends on a byte count, that
exactly that many bytes went through.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from vimage.apps import iperf3

if TYPE_CHECKING:
    from conftest import Lab, Pair
    from vimage.vnet import Vnet

NBYTES = 2 << 20
RUN_TIMEOUT = 60.0  # one whole iperf3 run, either side


def linux_json(proc: subprocess.CompletedProcess[str] | subprocess.Popen[bytes]) -> dict[str, Any]:
    """The JSON report of a finished Linux iperf3 (-J), checked for an error key."""
    if isinstance(proc, subprocess.Popen):
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
        text, errtext = out.decode(), err.decode()
    else:
        text, errtext = proc.stdout, proc.stderr
    assert text.strip(), f"iperf3 printed nothing (stderr: {errtext.strip()})"
    report = json.loads(text)
    assert "error" not in report, report["error"]
    return report


def sums(report: dict[str, Any]) -> tuple[int, int]:
    """(bytes sent, bytes received) of a test, as iperf3 -J reports them."""
    end = report["end"]
    return end["sum_sent"]["bytes"], end["sum_received"]["bytes"]


def vnet_client(vnet: Vnet, host: str, port: int, **options: Any) -> dict[str, Any]:
    """Run our client, retrying while the Linux server is not listening yet."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return iperf3.client(vnet, host, port, timeout=15.0, **options)
        except iperf3.IperfError as exc:
            if "Connection refused" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def run_linux_client(lab: Lab, pair: Pair, port: int, *args: str) -> dict[str, Any]:
    exe = lab.need("iperf3")
    proc = lab.run(pair.link.ns, exe, "-c", pair.link.our_addr, "-p", str(port), "-J", *args,
                   timeout=RUN_TIMEOUT)
    return linux_json(proc)


@pytest.fixture
def vnet_server(pair: Pair) -> Iterator[iperf3.Server]:
    pair.lab.need("iperf3")
    server = iperf3.serve(pair.vnet, 5201, once=True, timeout=15.0)
    yield server
    server.close()


# -- a Linux client against our server ------------------------------------------------------
def test_linux_client_sends_to_vnet_server(pair: Pair, vnet_server: iperf3.Server) -> None:
    linux = run_linux_client(pair.lab, pair, 5201, "-n", str(NBYTES))
    vnet_server.wait(RUN_TIMEOUT)
    [ours] = vnet_server.results
    assert "error" not in ours, ours["error"]
    linux_sent, linux_received = sums(linux)
    our_sent, our_received = sums(ours)
    assert linux_sent == NBYTES  # iperf3 writes whole 128 KB blocks: 2 MB is 16 of them
    assert our_received == NBYTES  # we read on until we have what the client says it sent
    assert linux_received == our_received  # our results reached the Linux client
    assert our_sent == linux_sent  # and its results reached us
    assert ours["start"]["test_start"]["reverse"] == 0
    assert ours["start"]["cookie"] == linux["start"]["cookie"]


def test_linux_client_receives_from_vnet_server(pair: Pair, vnet_server: iperf3.Server) -> None:
    linux = run_linux_client(pair.lab, pair, 5201, "-n", str(NBYTES), "-R")
    vnet_server.wait(RUN_TIMEOUT)
    [ours] = vnet_server.results
    assert "error" not in ours, ours["error"]
    linux_sent, linux_received = sums(linux)
    our_sent, our_received = sums(ours)
    assert our_sent == NBYTES  # a sender with -n sends exactly that
    assert linux_received == NBYTES  # and the Linux client got every byte
    assert linux_sent == our_sent and our_received == linux_received
    assert ours["start"]["test_start"]["reverse"] == 1


def test_linux_client_receives_for_a_second(pair: Pair, vnet_server: iperf3.Server) -> None:
    # After TEST_END a Linux client drains its streams with blocking reads of whole
    # blocks: it only gets on to the results if the server closes them then, as iperf3
    # does (a server that kept them open would stall both ends for its timeout).
    started = time.monotonic()
    linux = run_linux_client(pair.lab, pair, 5201, "-t", "1", "-R")
    vnet_server.wait(RUN_TIMEOUT)
    assert time.monotonic() - started < 10
    [ours] = vnet_server.results
    assert "error" not in ours, ours["error"]
    linux_sent, linux_received = sums(linux)
    our_sent, our_received = sums(ours)
    assert our_sent >= linux_received > 0  # what was in flight at TEST_END is not counted
    assert linux_sent == our_sent and our_received == linux_received


def test_linux_client_two_streams_for_a_second(pair: Pair, vnet_server: iperf3.Server) -> None:
    linux = run_linux_client(pair.lab, pair, 5201, "-t", "1", "-P", "2")
    vnet_server.wait(RUN_TIMEOUT)
    [ours] = vnet_server.results
    assert "error" not in ours, ours["error"]
    assert [s["socket"] for s in ours["start"]["connected"]] == [1, 3]  # iperf3's stream ids
    linux_sent, linux_received = sums(linux)
    our_sent, our_received = sums(ours)
    assert linux_sent > 0 and our_received == linux_sent  # every byte the client wrote
    assert linux_received == our_received and our_sent == linux_sent
    per_stream = [s["receiver"]["bytes"] for s in ours["end"]["streams"]]
    assert len(per_stream) == 2 and all(per_stream) and sum(per_stream) == our_received


def test_linux_client_udp_is_refused(pair: Pair, vnet_server: iperf3.Server) -> None:
    exe = pair.lab.need("iperf3")
    proc = pair.lab.run(pair.link.ns, exe, "-c", pair.link.our_addr, "-u", "-t", "1", "-J",
                        timeout=RUN_TIMEOUT)
    report = json.loads(proc.stdout)
    assert report["error"] == "an option you are trying to set is not implemented yet"
    vnet_server.wait(RUN_TIMEOUT)
    assert vnet_server.results[0]["error"] == "UDP tests are not supported (TCP only)"


# -- our client against a Linux server ------------------------------------------------------
def linux_server(lab: Lab, pair: Pair, port: int) -> subprocess.Popen[bytes]:
    exe = lab.need("iperf3")
    return lab.spawn(pair.link.ns, exe, "-s", "-1", "-J", "-p", str(port))


def test_vnet_client_sends_to_linux_server(pair: Pair) -> None:
    proc = linux_server(pair.lab, pair, 5301)
    ours = vnet_client(pair.vnet, pair.link.linux_addr, 5301, nbytes=NBYTES)
    linux = linux_json(proc)
    our_sent, our_received = sums(ours)
    _, linux_received = sums(linux)
    assert our_sent == NBYTES
    assert our_received == linux_received  # what the Linux server counted, as it told us
    # Linux stops counting when TEST_END arrives; we send it once our data is acknowledged,
    # so at most what its socket buffer held unread is missing
    assert 0 < linux_received <= NBYTES
    assert linux["start"]["test_start"]["bytes"] == NBYTES


def test_vnet_client_receives_from_linux_server(pair: Pair) -> None:
    proc = linux_server(pair.lab, pair, 5302)
    ours = vnet_client(pair.vnet, pair.link.linux_addr, 5302, nbytes=NBYTES, reverse=True)
    linux = linux_json(proc)
    our_sent, our_received = sums(ours)
    linux_sent, _ = sums(linux)
    assert our_received >= NBYTES  # we counted until we had that much
    assert our_received - NBYTES < 1 << 20  # ... and stopped soon after
    assert our_sent == linux_sent >= our_received  # the Linux sender's own count, as it told us
    assert linux["start"]["test_start"]["reverse"] == 1
