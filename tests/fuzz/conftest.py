"""The fuzz harness: a victim vnet with something in every state, fed structured junk.

    fp (10.0.0.1) ==epair== fv (10.0.0.2 | 10.0.1.1, forwards) ==epair== ff (10.0.1.2)
    ya (10.0.0.1) ==epair== yb (10.0.0.2)          the bystanders, same addresses

The victim `fv` holds a UDP socket, a TCP listener, a live TCP connection with `fp`
(the fuzzer only ever guesses its sequence numbers blindly, so it must survive), a
"duel" connection with `fp` (fuzzed knowing its numbers: it may be reset, but the two
stacks must not start an endless exchange over it) and "ghost" connections
with peers that exist only in the fuzzer (10.0.0.50...; the victim reaches them through
static ARP entries naming a MAC nobody has): one per TCP state from SYN_SENT to
TIME_WAIT. Fuzzed frames enter through the kernel's packet queue addressed to the
victim's interface, exactly as frames from `fp` would.

After every batch `Harness.settle` runs the kernel under a work bound (a hang becomes a
failure, not a hung suite) and `Harness.check` asserts the invariants of issue 19:
no faults, bounded queues, timers, ARP and reassembly tables and TCP queues, bystanders
untouched and working, the victim's live connection working. Limits are the LIMIT_*
constants below; docs/testing.md explains how to run the fuzzer long.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, settings

from vimage import topo
from vimage.kernel import Kernel
from vimage.netinet import tcp as ntcp
from vimage.netinet.arp import STATIC
from vimage.netinet.tcp.seq import seq_leq
from vimage.socket.socket import AF_INET, IPPROTO_ICMP, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM
from vimage.vnet import Vnet
from vimage.wire import checksum, ipv4
from vimage.wire import icmp as wicmp
from vimage.wire import tcp as wtcp

PEER, VICTIM, VICTIM2, FAR = "10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"
GHOST_MAC = b"\x02\x00\x00\x00\x00\x99"  # where the victim sends to ghosts: nobody's
BCAST = b"\xff" * 6
ETH_IP, ETH_ARP = b"\x08\x00", b"\x08\x06"
LISTEN_PORT, UDP_PORT, LIVE_DATA = 80, 7, b"live connection still works"

# the ghost connections: (name, ghost address); the ghost port is 40000 + index
GHOSTS = ("SYN_SENT", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "FIN_WAIT_1",
          "FIN_WAIT_2", "CLOSING", "TIME_WAIT")

# -- documented limits (docs/testing.md) -------------------------------------------------------
LIMIT_FRAMES_PER_ITEM = 64  # frames the loop may deliver per fuzzed input (plus a base)
LIMIT_FRAMES_BASE = 2_000  # for the checks' own traffic and the timers of a settle
LIMIT_TIMERS_PER_ITEM = 64  # timers that may be armed per fuzzed input (plus the base)
LIMIT_TIMERS_BASE = 2_000
LIMIT_PENDING_TIMERS = 256  # live timers in the whole kernel after a batch
LIMIT_QUEUE = 0  # frames left in the kernel queue once a settle returns
LIMIT_ARP = 32  # victim ARP entries (it has ~12 neighbours, most of them static)
LIMIT_TCBS = 64  # victim TCP connections (listen backlog 16 plus the fixed ones)
LIMIT_OOO_SEGS = 256  # out-of-order segments queued per connection
SETTLE = 0.3  # virtual seconds the kernel runs after each batch

BYSTANDER_IP = ("toosmall", "badvers", "badhlen", "badsum", "badlen", "tooshort", "badaddr",
                "badoptions", "fragments", "fragdropped", "noproto", "cantforward")
BYSTANDER_TCP = ("rcvbadsum", "rcvbadoff", "rcvshort", "badsyn", "rcvacktoomuch",
                 "challenge_acks", "resets_rcvd", "rcvoopack", "rcvpackafterwin")

SUITE_EXAMPLES = 100  # examples per fuzz test in the normal suite: a modest CI budget


def fuzz_settings(examples: int = SUITE_EXAMPLES) -> settings:
    """`examples` in the normal suite; more when asked for.

    A profile asking for more than hypothesis' default of 100 (`long`) takes over, and
    so does VIMAGE_FUZZ_EXAMPLES=N (as in tests/fuzz/test_fuzz_frames.py). Decorators run after
    the hypothesis plugin loaded `--hypothesis-profile`, so `settings.default` here is
    the profile in force."""
    wanted = int(os.environ.get("VIMAGE_FUZZ_EXAMPLES", "0")) or settings.default.max_examples
    deep = wanted > 100 or "VIMAGE_FUZZ_EXAMPLES" in os.environ
    # the explain phase traces every line (sys.settrace) and makes shrinking crawl
    skip = {Phase.explain}
    phases = tuple(p for p in Phase if p not in skip)
    return settings(max_examples=wanted if deep else examples, deadline=None, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


class WorkBoundExceeded(AssertionError):
    """The kernel did more work for one batch than the limits allow (a storm or a loop)."""


class BoundedQueue(deque):
    """The kernel's packet queue, counting what the loop takes out of it.

    Past `limit` it raises from popleft, which the scheduler calls outside its fault
    handler, so the exception leaves `kernel.run` and an endless exchange of frames ends
    the test instead of hanging it."""

    def __init__(self) -> None:
        super().__init__()
        self.popped = 0
        self.limit: int | None = None
        self.to_ghosts: list[bytes] = []  # frames sent to GHOST_MAC, while recording

    def append(self, entry: Any) -> None:
        if entry[1][:6] == GHOST_MAC:
            self.to_ghosts.append(entry[1])
            del self.to_ghosts[:-64]
        super().append(entry)

    def popleft(self) -> Any:  # type: ignore[override]
        self.popped += 1
        if self.limit is not None and self.popped > self.limit:
            self.limit = None  # let the test's clean-up run the loop again
            raise WorkBoundExceeded(f"more than {self.popped - 1} frames delivered in a batch")
        return super().popleft()


def bounded_kernel(seed: int) -> tuple[Kernel, BoundedQueue]:
    """A virtual-clock kernel whose packet queue is a BoundedQueue."""
    k = Kernel(clock="virtual", seed=seed)
    queue = BoundedQueue()
    k.sched.queue = queue  # before any other interface binds it (see Ifnet.txq)
    for ifp in k.base.ifaces.values():
        ifp.txq = queue
    return k, queue


class Ghost(NamedTuple):
    name: str
    addr: int
    port: int
    tcb: ntcp.Tcb | None  # None if the victim keeps no control block (a syncache entry)
    iss: int  # the ghost's initial sequence number
    viss: int  # the victim's, read off its SYN|ACK on the wire


# -- building frames ---------------------------------------------------------------------------
def eth(dst: bytes, src: bytes, payload: bytes, etype: bytes = ETH_IP) -> bytes:
    return dst + src + etype + payload


def ip_packet(src: int, dst: int, proto: int, payload: bytes, **kw: Any) -> bytes:
    return ipv4.build(src, dst, proto, payload, **kw)


def fix_ip_checksum(pkt: bytearray) -> None:
    """Recompute the IPv4 header checksum, if the header length allows."""
    if len(pkt) < 20:
        return
    hl = (pkt[0] & 0x0F) * 4
    if 20 <= hl <= len(pkt):
        pkt[10:12] = b"\0\0"
        pkt[10:12] = checksum.checksum(bytes(pkt[:hl])).to_bytes(2, "big")


def corrupt(frame: bytes, where: int) -> bytes:
    """Flip one byte past the Ethernet header: a checksum that no longer matches."""
    if len(frame) <= 14:
        return frame
    out = bytearray(frame)
    i = 14 + where % (len(out) - 14)
    out[i] ^= 0x5A
    return bytes(out)


# -- the harness -------------------------------------------------------------------------------
class Harness:
    """One kernel: victim, its peers and ghosts, and the bystanders. See the module doc."""

    def __init__(self, seed: int = 19) -> None:
        self.k, self.queue = k, _ = bounded_kernel(seed)
        self.timers_armed = 0
        self.timer_limit: int | None = None
        self._wrap_call_later()
        self.peer, self.victim, self.far = (k.create(n) for n in ("fp", "fv", "ff"))
        self.ifp, self.ifv = topo.connect(self.peer, f"{PEER}/24", self.victim, f"{VICTIM}/24")
        topo.connect(self.victim, f"{VICTIM2}/24", self.far, f"{FAR}/24")
        self.victim.sysctl("net.inet.ip.forwarding", 1)
        topo.add_route(self.peer, "default", VICTIM)
        topo.add_route(self.far, "default", VICTIM2)
        self.ya, self.yb = k.create("ya"), k.create("yb")
        topo.connect(self.ya, f"{PEER}/24", self.yb, f"{VICTIM}/24")
        self.keep: list[Any] = []  # sockets held open for the whole run
        self._victim_sockets()
        self.live_v, self.live_p = self._tcp_pair(self.peer, self.victim, 81)
        self.duel_v, self.duel_p = self._tcp_pair(self.peer, self.victim, 81)
        self.by_a, self.by_b = self._tcp_pair(self.ya, self.yb, 80)
        self.ghosts: list[Ghost] = []
        self._make_ghosts()
        k.run(1)
        self.baseline_errors = k.sched.errors
        self.bystander_counters = self._bystander_counters()
        self.batches = 0

    # -- set-up -------------------------------------------------------------------------------
    def _wrap_call_later(self) -> None:
        sched = self.k.sched
        inner = sched.call_later

        def call_later(delay_ns: int, callback: Any, *args: Any, owner: Any = None) -> Any:
            self.timers_armed += 1
            if self.timer_limit is not None and self.timers_armed > self.timer_limit:
                self.timer_limit = None
                raise WorkBoundExceeded(f"more than {self.timers_armed - 1} timers armed "
                                        "in a batch")
            return inner(delay_ns, callback, *args, owner=owner)

        sched.call_later = call_later  # type: ignore[method-assign]

    def _victim_sockets(self) -> None:
        v = self.victim
        udp = v.socket(AF_INET, SOCK_DGRAM)
        udp.bind(("", UDP_PORT))
        conn = v.socket(AF_INET, SOCK_DGRAM)  # ICMP errors quoting 10.0.0.2:9 -> 10.0.0.1:9
        conn.bind((VICTIM, 9))
        conn.connect((PEER, 9))
        listener = v.socket(AF_INET, SOCK_STREAM)
        listener.bind(("", LISTEN_PORT))
        listener.listen(16)
        live_listener = v.socket(AF_INET, SOCK_STREAM)
        live_listener.bind(("", 81))
        live_listener.listen(2)
        self.udp, self.listener, self.live_listener = udp, listener, live_listener
        self.keep += [udp, conn, listener, live_listener, v.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)]

    def _tcp_pair(self, client: Vnet, server: Vnet, port: int) -> tuple[Any, Any]:
        """(server side, client side) of a connection client -> server:port."""
        if port == 80:
            listener = server.socket(AF_INET, SOCK_STREAM)
            listener.bind(("", port))
            listener.listen(1)
            self.keep.append(listener)
        else:
            listener = self.live_listener
        c = client.socket(AF_INET, SOCK_STREAM)
        c.settimeout(5)
        c.connect((VICTIM, port))
        s, _ = listener.accept()
        s.settimeout(5)
        return s, c

    def _ghost_addr(self, i: int) -> int:
        return ipv4.aton("10.0.0.50") + i

    def ghost_frame(self, src: int, sport: int, seq: int, ack: int, flags: int,
                    window: int = 65535, payload: bytes = b"", **opts: Any) -> bytes:
        seg = wtcp.build(sport, LISTEN_PORT, seq, ack, flags, window, payload, src=src,
                         dst=ipv4.aton(VICTIM), **opts)
        return eth(self.ifv.mac, GHOST_MAC, ip_packet(src, ipv4.aton(VICTIM), 6, seg))

    def _ghost_send(self, addr: int, port: int, seq: int, ack: int, flags: int,
                    payload: bytes = b"") -> None:
        self.inject([self.ghost_frame(addr, port, seq, ack, flags, payload=payload)])
        self.k.run(0.01)

    def _make_ghosts(self) -> None:
        """One victim connection per state, with peers that are only frames (see doc)."""
        v, k = self.victim, self.k
        for i, name in enumerate(GHOSTS):
            addr, port, iss = self._ghost_addr(i), 40000 + i, 1_000_000 * (i + 1)
            v.arp.set_static(self.ifv, addr, GHOST_MAC)
            if name == "SYN_SENT":
                s = v.socket(AF_INET, SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex((ipv4.ntoa(addr), LISTEN_PORT))
                self.keep.append(s)
                tcb = s.tcb
                self.ghosts.append(Ghost(name, addr, tcb.fport, tcb, iss, tcb.iss))
                continue
            self.queue.to_ghosts.clear()
            self._ghost_send(addr, port, iss, 0, wtcp.SYN)
            viss = self._syn_ack_iss(addr, port)
            key = (ipv4.aton(VICTIM), LISTEN_PORT, addr, port)
            if name != "SYN_RCVD":
                self._ghost_send(addr, port, iss + 1, viss + 1, wtcp.ACK)
                sock, _ = self.listener.accept()
                self.keep.append(sock)
                self._drive_ghost(name, sock, v.tcp.conns[key], addr, port, iss + 1)
            tcb = v.tcp.conns.get(key)
            assert tcb is None or tcb.state_name == name, (name, tcb.state_name)
            self.ghosts.append(Ghost(name, addr, port, tcb, iss, viss))
        k.run(0)

    def _syn_ack_iss(self, addr: int, port: int) -> int:
        for frame in self.queue.to_ghosts:
            if frame[12:14] == ETH_IP and frame[23] == 6:
                hl = (frame[14] & 0x0F) * 4
                seg = wtcp.parse(memoryview(frame[14 + hl:]))
                if seg.dport == port and seg.flags & wtcp.SYN:
                    return seg.seq
        raise AssertionError(f"no SYN|ACK to ghost {ipv4.ntoa(addr)}:{port}")

    def _drive_ghost(self, name: str, sock: Any, tcb: ntcp.Tcb, addr: int, port: int,
                     seq: int) -> None:
        ack = wtcp.ACK
        if name == "ESTABLISHED":
            sock.send(b"unacknowledged data " * 20)  # in flight: retransmission timers
            self._ghost_send(addr, port, seq, tcb.snd_una, ack | wtcp.PSH, b"hello")
        elif name in ("CLOSE_WAIT", "LAST_ACK"):
            self._ghost_send(addr, port, seq, tcb.snd_nxt, ack | wtcp.FIN)
            if name == "LAST_ACK":
                sock.shutdown(1)
        else:  # the victim closes first: FIN_WAIT_1, FIN_WAIT_2, CLOSING, TIME_WAIT
            sock.shutdown(1)
            self.k.run(0.01)
            if name in ("FIN_WAIT_2", "TIME_WAIT"):
                self._ghost_send(addr, port, seq, tcb.snd_nxt, ack)
            if name in ("CLOSING", "TIME_WAIT"):
                self._ghost_send(addr, port, seq, tcb.snd_una, ack | wtcp.FIN)

    # -- input and the loop --------------------------------------------------------------------
    def inject(self, frames: Iterable[bytes]) -> None:
        """Queue frames for the victim's 10.0.0.2 interface (as `fp` would send them)."""
        for frame in frames:
            self.queue.append((self.ifv, frame))

    def settle(self, items: int, seconds: float = SETTLE) -> None:
        """Run the kernel under the work bound for a batch of `items` inputs."""
        self.queue.popped = 0
        self.queue.limit = LIMIT_FRAMES_BASE + LIMIT_FRAMES_PER_ITEM * items
        self.timers_armed = 0
        self.timer_limit = LIMIT_TIMERS_BASE + LIMIT_TIMERS_PER_ITEM * items
        try:
            self.k.run(seconds)
        finally:
            self.queue.limit = None
            self.timer_limit = None

    def run_batch(self, frames: list[bytes]) -> None:
        self.inject(frames)
        self.settle(len(frames))
        self.batches += 1
        self.check()

    # -- invariants --------------------------------------------------------------------------
    def _bystander_counters(self) -> tuple[Any, ...]:
        """What fuzzing the victim must never move in a bystander: error counters, ARP."""
        out: list[Any] = []
        for v in (self.ya, self.yb):
            out.append(sorted((e.addr, e.mac) for e in v.arp.entries()))
            out += [(i.name, i.ierrors, i.iqdrops) for i in v.ifaces.values()]
            for stats, names in ((v.ip.stats, BYSTANDER_IP), (v.tcp.stats, BYSTANDER_TCP),
                                 (v.arp.stats, ("rxbad", "dupips")),
                                 (v.icmp.stats, ("checksum", "tooshort", "badlen"))):
                out += [(n, getattr(stats, n, 0)) for n in names]
        return tuple(out)

    def check(self) -> None:
        """Every invariant after a batch (the bystanders' traffic runs under the bound)."""
        k, v = self.k, self.victim
        assert k.sched.errors == self.baseline_errors, f"kernel error: {k.sched.last_error!r}"
        assert len(self.queue) <= LIMIT_QUEUE, f"{len(self.queue)} frames still queued"
        pending = k.sched.pending_timers()
        assert pending <= LIMIT_PENDING_TIMERS, f"{pending} timers pending"
        self.check_arp()
        reass = v.ip.reass
        assert len(reass or ()) <= v.ip.maxfragpackets
        for q in (reass.queues.values() if reass else ()):
            assert len(q.frags) <= v.ip.maxfragsperpacket
        self.check_tcp()
        assert self._bystander_counters() == self.bystander_counters, "bystander disturbed"
        self.settle(4, 0)  # the checks below exchange traffic under the bound too
        self.forget_spoofed_arp()
        self.check_bystanders()
        self.check_live()
        assert k.sched.errors == self.baseline_errors, f"kernel error: {k.sched.last_error!r}"

    def check_arp(self) -> None:
        """Bounded, and (as FreeBSD's in_arpinput) only neighbours on a connected subnet."""
        v = self.victim
        assert len(v.arp.table) <= LIMIT_ARP, f"{len(v.arp.table)} ARP entries"
        for e in v.arp.entries():
            assert any(e.addr & a.mask == a.addr & a.mask for a in e.ifp.addrs), \
                f"ARP entry for off-subnet {ipv4.ntoa(e.addr)}"

    def forget_spoofed_arp(self) -> None:
        """`arp -d` what ARP spoofing legitimately taught: a neighbour's entry with a MAC
        that is not its own (ARP has no authentication; FreeBSD updates such entries too)."""
        truth = {ipv4.aton(PEER): self.ifp.mac}
        for e in self.victim.arp.entries():
            if e.addr in truth and e.mac not in (None, truth[e.addr]) and e.state != STATIC:
                self.victim.arp.delete(e.addr)

    def check_tcp(self) -> None:
        tcp = self.victim.tcp
        assert len(tcp.conns) <= LIMIT_TCBS, f"{len(tcp.conns)} TCP connections"
        for tcb in tcp.conns.values():
            where = f"{tcb.state_name} {ipv4.ntoa(tcb.faddr)}:{tcb.fport}"
            assert len(tcb.ooo) <= LIMIT_OOO_SEGS, f"{where}: {len(tcb.ooo)} ooo segments"
            if tcb.state >= ntcp.ESTABLISHED:
                assert seq_leq(tcb.snd_una, tcb.snd_nxt), where
                assert seq_leq(tcb.snd_nxt, tcb.snd_max), where
            assert len(tcb.rcv_buf) <= max(tcb.rcv_space, 1 << 17), where

    def exchange(self, a: Any, b: Any, payload: bytes) -> None:
        a.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = b.recv(65536)
            assert chunk, "connection closed"
            got += chunk
        assert got == payload

    def check_bystanders(self) -> None:
        self.exchange(self.by_b, self.by_a, b"bystander %d" % self.batches)
        self.exchange(self.by_a, self.by_b, b"reply %d" % self.batches)
        assert ping(self.ya, VICTIM), "bystander ping failed"

    def check_live(self) -> None:
        self.exchange(self.live_p, self.live_v, LIVE_DATA)
        self.exchange(self.live_v, self.live_p, LIVE_DATA[::-1])
        assert ping(self.peer, VICTIM), "ping of the victim failed"


def ping(src: Vnet, dst: str, ident: int = 0x4242) -> bool:
    s = src.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)
    s.settimeout(2)
    try:
        s.sendto(wicmp.build_echo(wicmp.ECHO, ident, 1, b"fuzz"), (dst, 0))
        while True:
            pkt = s.recv(65535)
            msg = wicmp.parse(pkt[(pkt[0] & 0x0F) << 2:])
            if msg.type == wicmp.ECHO_REPLY and msg.ident == ident:
                return True
    except TimeoutError:
        return False
    finally:
        s.close()


@pytest.fixture(autouse=True)
def _quiet_errors() -> Iterator[None]:
    """A loop error is asserted on; its traceback in the log would only be noise."""
    log = logging.getLogger("vimage.sched")
    level = log.level
    log.setLevel(logging.CRITICAL)
    yield
    log.setLevel(level)
