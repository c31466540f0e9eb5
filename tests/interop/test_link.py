"""One vnet, one Linux namespace, one TAP link: ARP, ping, fragments and DF."""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from vimage.cli.netstat import counted

if TYPE_CHECKING:
    from conftest import Pair

PING_FAST = ("-i", "0.2", "-W", "2", "-w", "10")


def netstat_count(out: str, label: str) -> int:
    """The number in front of `label` in `netstat -s` output (its noun singular for 1)."""
    for line in out.splitlines():
        number, _, text = line.strip().partition(" ")
        if number.isdigit() and text == counted("{} " + label, int(number)).partition(" ")[2]:
            return int(number)
    raise AssertionError(f"no {label!r} line in:\n{out}")


def linux_neigh_mac(pair: Pair, addr: str) -> str | None:
    out = pair.lab.ip(pair.link.ns, "neigh", "show", addr, "dev", pair.link.dev)
    match = re.search(r"lladdr (\S+)", out)
    return match.group(1).lower() if match else None


def test_arp_we_resolve_linux(pair: Pair) -> None:
    """Our ARP request gets Linux's reply; Linux learns us from the request."""
    link = pair.link
    assert f"({link.linux_addr})" not in pair.vnet.cmd("arp -a").output
    res = pair.vnet.cmd(f"ping -c 1 -t 5 {link.linux_addr}")
    assert res.status == 0, res.output
    arp = pair.vnet.cmd(f"arp {link.linux_addr}").output
    assert f"({link.linux_addr}) at {link.linux_mac} on {link.tap.name}" in arp.lower(), arp
    assert "expires in" in arp, arp  # learnt, not static
    assert linux_neigh_mac(pair, link.our_addr) == link.our_mac


def test_arp_linux_resolves_us(pair: Pair) -> None:
    """Linux's ARP request gets our reply; we learn Linux from its request."""
    link = pair.link
    assert linux_neigh_mac(pair, link.our_addr) is None
    res = pair.lab.run(link.ns, pair.lab.need("ping"), "-c", "1", *PING_FAST, link.our_addr)
    assert res.returncode == 0, res.stdout + res.stderr
    assert linux_neigh_mac(pair, link.our_addr) == link.our_mac
    out = pair.lab.ip(link.ns, "neigh", "show", link.our_addr)
    assert re.search(r"REACHABLE|STALE|DELAY|PROBE", out), out
    arp = pair.vnet.cmd("arp -a").output.lower()
    assert f"({link.linux_addr}) at {link.linux_mac} on {link.tap.name}" in arp, arp


def test_linux_pings_us(pair: Pair) -> None:
    link = pair.link
    res = pair.lab.run(link.ns, pair.lab.need("ping"), "-c", "3", *PING_FAST, link.our_addr)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "3 received, 0% packet loss" in res.stdout, res.stdout
    assert len(re.findall(rf"bytes from {re.escape(link.our_addr)}: icmp_seq=\d+ ttl=64",
                          res.stdout)) == 3, res.stdout


def test_we_ping_linux(pair: Pair) -> None:
    link = pair.link
    res = pair.vnet.cmd(f"ping -c 3 -i 0.2 {link.linux_addr}")
    assert res.status == 0, res.output
    assert "3 packets transmitted, 3 packets received, 0.0% packet loss" in res.output, \
        res.output
    assert len(re.findall(rf"64 bytes from {re.escape(link.linux_addr)}: icmp_seq=\d ttl=64",
                          res.output)) == 3, res.output


def test_linux_pings_us_fragmented(pair: Pair) -> None:
    """A 4028-byte echo request arrives in 3 fragments; we reassemble and answer in 3."""
    link = pair.link
    res = pair.lab.run(link.ns, pair.lab.need("ping"), "-c", "2", "-s", "4000", *PING_FAST,
                       link.our_addr)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "2 received, 0% packet loss" in res.stdout, res.stdout
    assert re.search(rf"4008 bytes from {re.escape(link.our_addr)}", res.stdout), res.stdout
    stats = pair.vnet.cmd("netstat -s -p ip").output
    assert netstat_count(stats, "fragments received") >= 6, stats
    assert netstat_count(stats, "packets reassembled ok") >= 2, stats
    assert netstat_count(stats, "output datagrams fragmented") >= 2, stats


def test_we_ping_linux_fragmented(pair: Pair) -> None:
    link = pair.link
    res = pair.vnet.cmd(f"ping -c 2 -i 0.2 -s 4000 {link.linux_addr}")
    assert res.status == 0, res.output
    assert "2 packets transmitted, 2 packets received" in res.output, res.output
    assert f"4008 bytes from {link.linux_addr}" in res.output, res.output
    stats = pair.vnet.cmd("netstat -s -p ip").output
    assert netstat_count(stats, "fragments created") >= 6, stats
    assert netstat_count(stats, "packets reassembled ok") >= 2, stats


def test_linux_ping_df_too_big(pair: Pair) -> None:
    """Linux will not send a 2028-byte DF packet on a 1500-byte link: a local error."""
    link = pair.link
    res = pair.lab.run(link.ns, pair.lab.need("ping"), "-c", "1", "-M", "do", "-s", "2000",
                       *PING_FAST, link.our_addr)
    assert res.returncode != 0
    text = (res.stdout + res.stderr).lower()
    assert "message too long" in text or "frag needed" in text, text
    assert "0 received" in res.stdout, res.stdout


def test_our_ping_df_too_big(pair: Pair) -> None:
    link = pair.link
    res = pair.vnet.cmd(f"ping -c 1 -t 1 -D -s 2000 {link.linux_addr}")
    assert res.status == 2, res.output
    assert "Message too long" in res.output, res.output
    assert "0 packets received" in res.output, res.output
    # and without DF the same size goes through, fragmented
    res = pair.vnet.cmd(f"ping -c 1 -t 3 -s 2000 {link.linux_addr}")
    assert res.status == 0, res.output


def test_linux_reconfirms_us_with_unicast_probe(pair: Pair) -> None:
    """A STALE Linux neighbour entry used again is probed by unicast ARP; we answer it."""
    lab, link = pair.lab, pair.link
    ping = lab.need("ping")
    lab.ip(link.ns, "ntable", "change", "name", "arp_cache", "dev", link.dev,
           "delay_probe", "100")
    lab.ip(link.ns, "neigh", "replace", link.our_addr, "lladdr", link.our_mac, "dev", link.dev,
           "nud", "stale")
    before = netstat_count(pair.vnet.cmd("netstat -s -p arp").output, "ARP requests received")
    res = lab.run(link.ns, ping, "-c", "1", *PING_FAST, link.our_addr)
    assert res.returncode == 0, res.stdout + res.stderr
    deadline = time.monotonic() + 3
    state = ""
    while time.monotonic() < deadline:
        state = lab.ip(link.ns, "neigh", "show", link.our_addr, "dev", link.dev)
        if "REACHABLE" in state:
            break
        time.sleep(0.05)
    assert "REACHABLE" in state, state
    after = netstat_count(pair.vnet.cmd("netstat -s -p arp").output, "ARP requests received")
    assert after > before
