"""Fault injection (vimage.fault): partitions, cuts, impairment, crashes, all in virtual time.

The topology is a star: hosts h1, h2 and h3 each on their own link to router r
(10.0.N.1 on the host, 10.0.N.2 on r), hosts defaulting to r.
"""

from __future__ import annotations

import errno
import socket

import pytest

from vimage.fault import CutPipe, Faults
from vimage.kernel import Kernel
from vimage.socket.socket import AF_INET, SOCK_DGRAM
from vimage.topo import add_route, connect, udp_delivered
from vimage.vnet import Vnet

H1, H2, H3 = "10.0.1.1", "10.0.2.1", "10.0.3.1"
R1 = "10.0.1.2"  # r's address on h1's link


class Star:
    def __init__(self, seed: int = 1) -> None:
        self.k = k = Kernel(clock="virtual", seed=seed)
        self.r = k.create("r")
        self.r.ip.forwarding = 1
        self.hosts: list[Vnet] = []
        self.links = []
        for n in (1, 2, 3):
            h = k.create(f"h{n}")
            self.links.append(connect(h, f"10.0.{n}.1/24", self.r, f"10.0.{n}.2/24"))
            add_route(h, "default", f"10.0.{n}.2")
            self.hosts.append(h)
        self.h1, self.h2, self.h3 = self.hosts
        self.faults = Faults.of(k)
        for n, h in enumerate(self.hosts, 1):  # resolve ARP both ways on every link
            assert self.udp(h, self.r, f"10.0.{n}.2") and self.udp(self.r, h, f"10.0.{n}.1")
        k.run(1 - k.now)

    def udp(self, src: Vnet, dst: Vnet, addr: str) -> bool:
        return udp_delivered(src, dst, addr, timeout=0.5)

    def tcp_pair(self, client: Vnet, server: Vnet, addr: str, port: int = 8080):
        srv = server.socket(AF_INET, socket.SOCK_STREAM)
        srv.bind(("", port))
        srv.listen(8)
        cli = client.socket(AF_INET, socket.SOCK_STREAM)
        cli.connect((addr, port))
        conn, _ = srv.accept()
        return srv, cli, conn


@pytest.fixture
def star() -> Star:
    return Star()


def udp_arrival(k: Kernel, src: Vnet, dst: Vnet, addr: str, port: int = 9100) -> float | None:
    """Seconds one datagram takes from src to addr (in dst), None if it never arrives."""
    rx = dst.socket(AF_INET, SOCK_DGRAM)
    rx.bind(("", port))
    tx = src.socket(AF_INET, SOCK_DGRAM)
    start = k.now
    tx.sendto(b"t", (addr, port))
    got = k.run_until(lambda: bool(rx._rcvq), timeout=2)
    rx.close()
    tx.close()
    return k.now - start if got else None


# -- partitions --------------------------------------------------------------------------------
def test_no_fault_means_no_hook(star):
    assert all(v.ip.pfil_in is None for v in (star.r, *star.hosts))
    part = star.faults.partition([star.h1, star.h2], [star.h3])
    assert star.r.ip.pfil_in is None  # routers outside the groups are untouched
    assert all(len(h.ip.pfil_in) == 1 for h in star.hosts)
    star.faults.heal(part)
    assert all(v.ip.pfil_in is None for v in (star.r, *star.hosts))


def test_partition_across_router_blocks_udp_between_groups_only(star):
    s = star
    part = s.faults.partition([s.h1, s.h2], [s.h3])
    assert part.active and part.since == 1.0
    assert s.udp(s.h1, s.h2, H2)  # within a group
    assert s.udp(s.h2, s.h1, H1)
    assert not s.udp(s.h1, s.h3, H3)  # across, both ways
    assert not s.udp(s.h3, s.h2, H2)
    assert s.udp(s.h3, s.r, "10.0.3.2")  # the router is in neither group
    assert s.udp(s.r, s.h1, H1)
    assert s.h3.ip.stats.faultdrop == 1 and s.h2.ip.stats.faultdrop == 1
    assert s.h1.ip.stats.faultdrop == 0
    assert part.drops == 2
    assert s.r.ip.stats.forward >= 4  # the dropped packets did cross the router
    out = s.h3.cmd("netstat -s -p ip").output
    assert "\t1 packet dropped by fault injection" in out.splitlines()
    s.faults.heal(part)
    assert part.state == "healed" and part.until == s.k.now
    assert s.udp(s.h1, s.h3, H3) and s.udp(s.h3, s.h2, H2)
    assert part.drops == 2


def test_partition_leaves_transit_through_a_member_alone(star):
    s = star
    s.faults.partition([s.r], [s.h3])
    assert not s.udp(s.h3, s.r, "10.0.3.2")  # h3 -> r itself: dropped at r
    assert not s.udp(s.r, s.h3, H3)
    assert s.udp(s.h3, s.h1, H1)  # h3 -> h1 forwarded by r: neither end is r's
    assert s.udp(s.h1, s.h3, H3)
    assert s.r.ip.stats.faultdrop == 1 and s.h3.ip.stats.faultdrop == 1


def test_partition_sees_addresses_added_and_removed_during_it(star):
    s = star
    s.faults.partition([s.h1], [s.h3])
    h3_if = s.links[2][0]
    h3_if.add_addr("10.0.3.9/24")  # an alias added after the partition began
    rx = s.h1.socket(AF_INET, SOCK_DGRAM)
    rx.bind(("", 7100))
    tx = s.h3.socket(AF_INET, SOCK_DGRAM)
    tx.bind(("10.0.3.9", 0))
    tx.sendto(b"x", (H1, 7100))
    s.k.run(1)
    assert not rx._rcvq and s.h1.ip.stats.faultdrop == 1


def test_loopback_traffic_in_a_member_is_not_dropped(star):
    s = star
    s.faults.partition([s.h1], [s.h3])
    assert s.udp(s.h1, s.h1, "127.0.0.1")
    assert s.udp(s.h3, s.h3, H3)


def test_tcp_connection_survives_a_short_partition(star):
    s = star
    srv, cli, conn = s.tcp_pair(s.h1, s.h3, H3)
    part = s.faults.partition([s.h1], [s.h3])
    cli.sendall(b"hello across")
    conn.settimeout(0)
    s.k.run(2)
    with pytest.raises(BlockingIOError):
        conn.recv(100)
    assert part.drops >= 2  # the segment and at least one retransmission
    s.faults.heal(part)
    conn.settimeout(30)
    assert conn.recv(100) == b"hello across"
    conn.sendall(b"back")
    assert cli.recv(100) == b"back"
    assert cli.tcb.state_name == "ESTABLISHED"


def test_tcp_connect_across_a_partition_fails_until_healed(star):
    s = star
    srv = s.h3.socket(AF_INET, socket.SOCK_STREAM)
    srv.bind(("", 80))
    srv.listen(4)
    s.faults.partition([s.h1], [s.h3], at=1.5)
    s.faults.heal(1, at=5.0)
    cli = s.h1.socket(AF_INET, socket.SOCK_STREAM)
    s.k.run(0.6)  # t = 1.6
    cli.settimeout(3)
    with pytest.raises(TimeoutError):
        cli.connect((H3, 80))
    cli.settimeout(30)
    cli.connect((H3, 80))  # the SYN retransmitted after 5.0 gets through
    assert s.k.now > 5.0
    conn, _ = srv.accept()
    assert conn.getpeername()[0] == H1


def test_scheduled_partition_and_heal_fire_at_exact_times(star):
    s = star
    part = s.faults.partition([s.h1], [s.h2], at=2.5)
    s.faults.heal(part, at=4.25)
    assert part.state == "scheduled"
    assert [(e.when, e.action) for e in s.faults.scheduled()] == [(2.5, "partition"),
                                                                   (4.25, "heal")]
    s.k.run(1.4)  # t = 2.4
    assert not part.active and s.udp(s.h1, s.h2, H2)
    s.k.run(2.5 - s.k.now)
    assert part.active and part.since == 2.5
    assert not s.udp(s.h1, s.h2, H2)
    s.k.run(4.25 - s.k.now)
    assert part.state == "healed" and part.until == 4.25
    assert s.udp(s.h1, s.h2, H2)
    assert [(e.time, e.action) for e in s.faults.events] == [(2.5, "partition"), (4.25, "heal")]
    assert s.faults.scheduled() == []


def test_heal_before_the_start_cancels_the_partition(star):
    s = star
    part = s.faults.partition([s.h1], [s.h2], at=3)
    s.faults.heal(part)
    assert part.state == "cancelled"
    s.k.run(5)
    assert not part.active and s.h1.ip.pfil_in is None
    assert s.faults.events == []


def test_heal_all(star):
    s = star
    p1 = s.faults.partition([s.h1], [s.h2])
    p2 = s.faults.partition([s.h1], [s.h3])
    assert len(s.h1.ip.pfil_in) == 1  # one hook per vnet, whatever the number of partitions
    assert not s.udp(s.h1, s.h3, H3) and not s.udp(s.h1, s.h2, H2)
    s.faults.heal(at=s.k.now + 1)
    s.k.run(1)
    assert not p1.active and not p2.active
    assert s.udp(s.h1, s.h3, H3) and s.udp(s.h1, s.h2, H2)
    assert s.h1.ip.pfil_in is None


# -- cut and impair -------------------------------------------------------------------------
def test_cut_and_restore_a_link(star):
    s = star
    h1_if, r_if = s.links[0]
    h1_if.impair(delay="10ms")
    cut = s.faults.cut(h1_if)
    assert isinstance(h1_if.pipe, CutPipe) and isinstance(r_if.pipe, CutPipe)
    assert not s.udp(s.h1, s.h2, H2)
    assert not s.udp(s.h2, s.h1, H1)
    assert s.udp(s.h2, s.h3, H3)  # other links are fine
    assert cut.drops == 2
    out = s.h1.cmd("vlink epair0a").output  # vlink still shows the settings during the cut
    assert "delay 10.000 ms" in out
    s.faults.restore(r_if)  # either end names the link
    assert cut.state == "restored"
    assert r_if.pipe is None  # it had no impairment before
    assert h1_if.pipe is not None and h1_if.pipe.delay_ns == 10_000_000
    assert udp_arrival(s.k, s.h1, s.r, R1) == pytest.approx(0.010)


def test_cut_loses_frames_in_flight(star):
    s = star
    h1_if, _ = s.links[0]
    h1_if.impair(delay="100ms")
    rx = s.r.socket(AF_INET, SOCK_DGRAM)
    rx.bind(("", 7200))
    tx = s.h1.socket(AF_INET, SOCK_DGRAM)
    tx.sendto(b"doomed", (R1, 7200))
    cut = s.faults.cut(h1_if, at=s.k.now + 0.05)
    s.k.run(1)
    assert cut.active and cut.drops == 1 and not rx._rcvq
    with pytest.raises(ValueError, match="already cut"):
        s.faults.cut(h1_if)
    s.faults.restore(cut)
    tx.sendto(b"fine", (R1, 7200))
    s.k.run(1)
    assert rx.recv(10) == b"fine"


def test_impair_at_a_given_time_changes_the_delay(star):
    s = star
    h1_if, r_if = s.links[0]
    s.faults.impair(h1_if, at=5.0, both=True, delay="50ms")
    s.faults.impair(h1_if, at=8.0, delay="20ms", loss="0%")  # only h1 -> r
    assert udp_arrival(s.k, s.h1, s.r, R1) == 0
    s.k.run_until(lambda: s.k.now >= 5.0)
    assert s.faults.events[-1].time == 5.0
    assert udp_arrival(s.k, s.h1, s.r, R1) == pytest.approx(0.050)
    assert udp_arrival(s.k, s.r, s.h1, H1) == pytest.approx(0.050)
    s.k.run_until(lambda: s.k.now >= 8.0)
    assert udp_arrival(s.k, s.h1, s.r, R1) == pytest.approx(0.020)
    assert udp_arrival(s.k, s.r, s.h1, H1) == pytest.approx(0.050)
    s.faults.impair(h1_if, both=True, clear=True)
    assert h1_if.pipe is None and r_if.pipe is None


def test_impair_checks_its_settings_at_once(star):
    s = star
    h1_if, _ = s.links[0]
    with pytest.raises(ValueError, match="bad probability"):
        s.faults.impair(h1_if, at=5.0, loss="lots")
    with pytest.raises(ValueError, match="unknown link setting"):
        s.faults.impair(h1_if, at=5.0, colour="red")
    with pytest.raises(ValueError, match="settings"):
        s.faults.impair(h1_if)
    assert s.faults.scheduled() == [] and h1_if.pipe is None


def test_impair_during_a_cut_is_kept_after_restore(star):
    s = star
    h1_if, _ = s.links[0]
    s.faults.cut(h1_if)
    s.faults.impair(h1_if, delay="30ms")
    assert not s.udp(s.h1, s.r, R1)
    s.faults.restore(h1_if)
    assert udp_arrival(s.k, s.h1, s.r, R1) == pytest.approx(0.030)


# -- crash and restart ------------------------------------------------------------------------
def test_crash_resets_sockets_without_a_word_on_the_wire(star):
    s = star
    srv, cli, conn = s.tcp_pair(s.h1, s.h3, H3)
    udp_sock = s.h3.socket(AF_INET, SOCK_DGRAM)
    udp_sock.bind(("", 5353))
    udp_sock.settimeout(5)
    s.h1.socket(AF_INET, SOCK_DGRAM).sendto(b"queued", (H3, 5353))
    s.k.run(1)
    sent_before = s.links[2][0].opackets
    crash = s.faults.crash(s.h3)
    assert crash.conns == 1 and crash.listeners == 1 and crash.sockets == 1
    with pytest.raises(ConnectionResetError):
        conn.recv(100)
    with pytest.raises(OSError) as exc:
        srv.accept()
    assert exc.value.errno == errno.EBADF
    with pytest.raises(ConnectionResetError):  # the queued datagram died with the host
        udp_sock.recv(100)
    assert s.h3.tcp.tcbs() == [] and s.h3.udp.sockets() == []
    assert not any(i.up for i in s.h3.ifaces.values())
    s.k.run(60)
    assert s.links[2][0].opackets == sent_before  # not one frame: no RST, no FIN
    assert cli.tcb.state_name == "ESTABLISHED"  # the peer has no idea
    assert s.faults.crashed(s.h3)


def test_a_crash_takes_a_closed_listener_out_of_its_selector(star):
    """Else an event loop would see a closed socket ready forever and fail to unregister it
    (its fileno() is -1 once closed): closing a descriptor takes it out of an epoll set."""

    class Poll:
        def __init__(self) -> None:
            self.unregistered: list[int] = []

        def touch(self, sock) -> None:
            pass

        def unregister(self, sock) -> None:
            self.unregistered.append(sock.fileno())
            sock._poll = None

    srv = star.h3.socket(AF_INET, socket.SOCK_STREAM)
    srv.bind(("", 80))
    srv.listen(4)
    fd = srv.fileno()
    srv._poll = poll = Poll()
    star.faults.crash(star.h3)
    assert poll.unregistered == [fd] and srv.fileno() == -1


def test_peer_gets_a_reset_when_it_sends_after_the_restart(star):
    s = star
    srv, cli, conn = s.tcp_pair(s.h1, s.h3, H3)
    crash = s.faults.crash(s.h3)
    cli.sendall(b"anyone there?")
    s.k.run(3)
    assert crash.drops >= 2  # the segment and a retransmission hit a dead interface
    assert cli.tcb.state_name == "ESTABLISHED"
    s.faults.restart(s.h3)
    assert crash.state == "restarted"
    cli.settimeout(30)
    with pytest.raises(ConnectionResetError):
        cli.recv(100)  # the next retransmission is answered with a RST, as a rebooted host does
    assert s.h3.tcp.stats.resets_sent >= 1


def test_restart_keeps_the_configuration_and_a_new_server_can_listen(star):
    s = star
    srv, cli, conn = s.tcp_pair(s.h1, s.h3, H3)
    s.h3.cmd("arp -s 10.0.3.77 02:00:00:00:00:77")
    routes = s.h3.cmd("netstat -rn").output
    s.faults.crash(s.h3, at=2.0)
    s.faults.restart(s.h3, at=3.0)
    s.k.run_until(lambda: s.k.now >= 3.0)
    assert [e.action for e in s.faults.events] == ["crash", "restart"]
    assert [e.time for e in s.faults.events] == [2.0, 3.0]
    assert s.h3.cmd("netstat -rn").output == routes
    assert "10.0.3.77" in s.h3.cmd("arp -an").output  # static entries are configuration
    assert all(i.up for i in s.h3.ifaces.values())
    srv2, cli2, conn2 = s.tcp_pair(s.h1, s.h3, H3)  # same port 8080 again
    cli2.sendall(b"after reboot")
    assert conn2.recv(100) == b"after reboot"
    assert s.udp(s.h2, s.h3, H3)


def test_interfaces_down_before_the_crash_stay_down(star):
    s = star
    extra, _ = s.k.epair(s.h2)
    extra.add_addr("192.168.9.1/24")
    s.faults.crash(s.h2)
    s.faults.restart(s.h2)
    assert not extra.up and s.links[1][0].up


@pytest.mark.loop_errors
def test_crash_hooks_are_called_and_a_failing_one_is_contained(star):
    s = star
    seen = []

    def bad(vnet):
        raise RuntimeError("runtime bug")

    s.faults.on_crash.extend([lambda v: seen.append(("crash", v, s.k.now)), bad])
    s.faults.on_restart.append(lambda v: seen.append(("restart", v, s.k.now)))
    errors_before = s.k.sched.errors
    s.faults.crash(s.h1, at=1.5)
    s.faults.restart(s.h1, at=2.5)
    s.k.run(2)
    assert seen == [("crash", s.h1, 1.5), ("restart", s.h1, 2.5)]
    assert s.k.sched.errors == errors_before + 1


def test_crash_api_errors(star):
    s = star
    s.faults.crash(s.h1)
    with pytest.raises(ValueError, match="already crashed"):
        s.faults.crash(s.h1)
    with pytest.raises(ValueError, match="not crashed"):
        s.faults.restart(s.h2)
    with pytest.raises(ValueError, match="in the past"):
        s.faults.crash(s.h2, at=0.5)
    with pytest.raises(ValueError, match="both sides"):
        s.faults.partition([s.h1, s.h2], [s.h2])
    with pytest.raises(ValueError, match="not an epair"):
        s.faults.cut(s.h1.ifaces["lo0"])
    with pytest.raises(ValueError, match="not cut"):
        s.faults.restore(s.links[1][0])
    with pytest.raises(LookupError):
        s.faults.heal(99)


# -- life cycle and determinism -----------------------------------------------------------------
def test_destroying_a_vnet_cancels_its_scheduled_faults(star):
    s = star
    before = s.k.sched.pending_timers(owner=s.h2)  # the stack's own (ARP)
    crash = s.faults.crash(s.h2, at=5)
    cut = s.faults.cut(s.links[1][0], at=6)
    s.faults.impair(s.links[1][0], at=7, delay="1ms")
    part = s.faults.partition([s.h2], [s.h1], at=8)
    s.faults.crash(s.h1, at=9)
    assert s.k.sched.pending_timers(owner=s.h2) == before + 4
    s.k.destroy(s.h2)
    assert s.k.sched.pending_timers(owner=s.h2) == 0
    assert [e.action for e in s.faults.scheduled()] == ["crash"]
    assert crash.state == cut.state == part.state == "cancelled"
    s.k.run(10)
    assert [(e.action, e.target) for e in s.faults.events] == [("crash", "h1")]


def test_a_crashed_vnet_can_be_destroyed(star):
    s = star
    s.faults.partition([s.h1], [s.h3])
    s.faults.crash(s.h3)
    s.k.destroy(s.h3)
    assert not s.faults.crashed(s.h3) and s.faults.active_crashes() == []
    assert s.udp(s.h1, s.h2, H2)


def scenario(seed: int) -> tuple[list, list[int]]:
    s = Star(seed)
    h1_if, _ = s.links[0]
    s.faults.impair(h1_if, both=True, loss="20%", delay="5ms")
    s.faults.partition([s.h1], [s.h2], at=3.0)
    s.faults.heal(at=6.0)
    s.faults.crash(s.h3, at=4.0)
    s.faults.restart(s.h3, at=7.0)
    srv, cli, conn = s.tcp_pair(s.h1, s.h2, H2)
    u1, u2 = s.h1.socket(AF_INET, SOCK_DGRAM), s.h2.socket(AF_INET, SOCK_DGRAM)
    u1.bind(("", 7000))
    u2.bind(("", 7000))
    for i in range(40):
        cli.sendall(b"%d;" % i)
        u1.sendto(b"ping", (H2, 7000))
        u2.sendto(b"pong", (H1, 7000))
        s.k.run(0.25)
    s.k.run(20)
    counters = [s.h1.ip.stats.faultdrop, s.h2.ip.stats.faultdrop, h1_if.pipe.dropped_loss,
                s.k.sched.events, len(conn.recv(1000))]
    return list(s.faults.events), counters


def test_same_seed_same_fault_log_and_counters():
    first, second = scenario(5), scenario(5)
    assert first == second
    assert [e.action for e in first[0]] == ["impair", "partition", "crash", "heal", "restart"]
    assert first[1][0] > 0 and first[1][1] > 0 and first[1][2] > 0
