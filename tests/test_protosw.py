"""The protocol switch: a new IP protocol is one descriptor, registered without editing
the stack; and the switch's own rules (order, clashes, what nobody claims)."""

from __future__ import annotations

import errno
import gc
import weakref
from dataclasses import dataclass, field
from typing import Any

import pytest

from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.protosw import Protocol
from vimage.socket.socket import AF_INET, SOCK_DGRAM, SOCK_RAW, SOCK_STREAM
from vimage.stats import counters
from vimage.sysctl import Oid
from vimage.topo import connect
from vimage.vnet import Vnet
from vimage.wire import icmp as wicmp
from vimage.wire import ipv4

PROTO_ECHO = 253  # RFC 3692: for experimentation and testing

# -- the toy protocol: everything it takes to add one ------------------------------------
EchoStats = counters("EchoStats", ("requests", "replies", "sent"))


class EchoState:
    """Per-vnet state: answers requests ("Q...") with replies ("R..."), keeps replies."""

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self.enabled = 1
        self.stats = EchoStats()
        self.replies: list[tuple[int, bytes]] = []
        self.ifaces_seen: list[str] = []
        # a timer, so detach has something to release
        self.timer = vnet.kernel.call_later(3600, lambda: None, owner=vnet)

    def input(self, ifp: Ifnet, pkt: bytes, hlen: int, src: int, dst: int) -> None:
        payload = pkt[hlen:]
        if payload[:1] == b"Q":
            self.stats.requests += 1
            if self.enabled:
                self.send(dst, src, b"R" + payload[1:])
        elif payload[:1] == b"R":
            self.stats.replies += 1
            self.replies.append((src, payload[1:]))

    def send(self, src: int, dst: int, payload: bytes) -> None:
        self.stats.sent += 1
        self.vnet.ip.output(PROTO_ECHO, src, dst, payload)


class EchoSocket:
    """The socket factory's product: enough to show socket() found it."""

    def __init__(self, vnet: Vnet, family: int, type_: int, proto: int) -> None:
        self.vnet, self.family, self.type, self.proto = vnet, family, type_, proto

    def ping(self, dst: str, data: bytes) -> None:
        addr = ipv4.aton(dst)
        self.vnet.echo.send(self.vnet.ip.select_source(addr), addr, b"Q" + data)


def echo_attach(vnet: Vnet) -> None:
    vnet.echo = EchoState(vnet)  # type: ignore[attr-defined]


def echo_detach(vnet: Vnet) -> None:
    vnet.echo.timer.cancel()  # type: ignore[attr-defined]
    del vnet.echo  # type: ignore[attr-defined]


def echo_ifattach(ifp: Ifnet) -> None:
    ifp.vnet.echo.ifaces_seen.append(ifp.name)  # type: ignore[attr-defined]


ECHO = Protocol(
    "echo", 65, "echo", echo_attach, echo_detach, domain=AF_INET, protocol=PROTO_ECHO,
    input=EchoState.input,
    sysctls=(Oid("net.inet.echo.enable", "echo", "enabled", "Answer echo requests", 0, 1),),
    stats=(("requests", "{} echo requests received"), ("replies", "{} echo replies received"),
           ("sent", "{} echo packets sent")),
    stats_order=35, sockets=((SOCK_DGRAM, EchoSocket),), ifattach=echo_ifattach)


def two_vnets(kernel: Kernel) -> tuple[Vnet, Vnet]:
    a, b = kernel.create("a"), kernel.create("b")
    connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    return a, b


# -- the toy protocol, end to end ------------------------------------------------------------
def test_registered_protocol_echoes_between_vnets() -> None:
    k = Kernel(clock="virtual", seed=1)
    a, b = two_vnets(k)
    k.run(1)  # the vnets have carried packets: their demux tables are bound
    assert a.inputs is not None and PROTO_ECHO not in a.inputs[AF_INET]
    k.register(ECHO)  # after the vnets exist: attached to each, and to their interfaces
    assert a.inputs[AF_INET][PROTO_ECHO] is not None
    assert sorted(a.echo.ifaces_seen) == ["epair0a", "lo0"]  # type: ignore[attr-defined]
    sock = a.socket(AF_INET, SOCK_DGRAM, PROTO_ECHO)
    assert isinstance(sock, EchoSocket) and sock.proto == PROTO_ECHO
    sock.ping("10.0.0.2", b"hello")
    k.run(1)
    assert a.echo.replies == [(ipv4.aton("10.0.0.2"), b"hello")]  # type: ignore[attr-defined]
    assert b.echo.stats.requests == 1 and b.ip.stats.noproto == 0  # type: ignore[attr-defined]
    # proto 0 still means UDP: the first datagram protocol in attach order
    assert type(a.socket(AF_INET, SOCK_DGRAM, 0)).__name__ == "Socket"


def test_registered_protocol_sysctl_and_netstat() -> None:
    k = Kernel(clock="virtual", seed=1, protocols=(*Kernel.standard_protocols, ECHO))
    a, b = two_vnets(k)
    assert b.sysctl("net.inet.echo.enable") == 1
    assert b.cmd("sysctl net.inet.echo.enable=0").ok
    assert b.echo.enabled == 0 and a.sysctl("net.inet.echo.enable") == 1  # type: ignore
    assert "net.inet.echo.enable: 1" in a.cmd("sysctl net.inet.echo").output
    with pytest.raises(ValueError):
        b.sysctl("net.inet.echo.enable", 2)
    a.socket(AF_INET, SOCK_DGRAM, PROTO_ECHO).ping("10.0.0.2", b"x")
    k.run(1)
    assert a.echo.replies == []  # type: ignore[attr-defined]  # b no longer answers
    out = b.cmd("netstat -s -p echo").output.splitlines()
    assert out == ["echo:", "\t1 echo request received", "\t0 echo replies received",
                   "\t0 echo packets sent"]
    every = b.cmd("netstat -s").output.splitlines()
    assert every.index("echo:") > every.index("ip:")  # stats_order 35: after ip, before icmp
    assert every.index("echo:") < every.index("icmp:")


def test_destroying_a_vnet_detaches_the_protocol() -> None:
    k = Kernel(clock="virtual", seed=1, protocols=(*Kernel.standard_protocols, ECHO))
    a, b = two_vnets(k)
    state = weakref.ref(b.echo)  # type: ignore[attr-defined]
    k.run(1)  # the gratuitous ARPs bind the vnets' demux tables
    assert b.inputs is not None and b.inputs[AF_INET][PROTO_ECHO] is not None
    assert k.sched.pending_timers() == 2 + 1  # one echo timer per vnet, the base's too
    k.destroy(b)
    k.destroy(a)
    gc.collect()
    assert state() is None
    assert k.sched.pending_timers() == 1  # the base vnet's
    assert PROTO_ECHO not in b.inputs[AF_INET]
    k.unregister("echo")
    assert k.sched.pending_timers() == 0
    assert "net.inet.echo.enable" not in k.oids
    with pytest.raises(OSError) as err:
        k.base.socket(AF_INET, SOCK_DGRAM, PROTO_ECHO)
    assert err.value.errno == errno.EPROTONOSUPPORT


# -- the switch's rules ---------------------------------------------------------------------
@dataclass
class Recorder:
    events: list[str] = field(default_factory=list)

    def protocol(self, name: str, order: int) -> Protocol:
        return Protocol(name, order, None, lambda v: self.events.append(f"+{name}"),
                        lambda v: self.events.append(f"-{name}"))


def test_attach_in_order_detach_in_reverse() -> None:
    rec = Recorder()
    k = Kernel(clock="virtual", protocols=(
        *Kernel.standard_protocols, rec.protocol("late", 95), rec.protocol("early", 5)))
    assert rec.events == ["+early", "+late"]  # the base vnet
    order = [p.name for p in k.protocols]
    assert order[0] == "early" and order[-1] == "late" and order.index("ip") < order.index("tcp")
    v = k.create("v")
    rec.events.clear()
    k.destroy(v)
    assert rec.events == ["-late", "-early"]


@pytest.mark.parametrize("clash", [
    Protocol("echo", 66, "other"),                                  # same name
    Protocol("other", 66, "echo"),                                  # same state slot
    Protocol("udp2", 66, "udp2", protocol=17, domain=AF_INET,      # a number taken (UDP)
             input=EchoState.input),
    Protocol("arp2", 66, "arp2", ethertype=0x0806, input=EchoState.input),  # ARP's type
])
def test_clashing_registration_is_refused(clash: Protocol) -> None:
    k = Kernel(clock="virtual", protocols=(*Kernel.standard_protocols, ECHO))
    before = k.protocols
    with pytest.raises(ValueError, match="already registered"):
        k.register(clash)
    assert k.protocols is before


def test_sysctl_clash_is_refused() -> None:
    k = Kernel(clock="virtual")
    clash = Protocol("ttl2", 66, "ip2", sysctls=(Oid("net.inet.ip.ttl", "ip2", "ttl", "x"),))
    with pytest.raises(ValueError, match=r"net\.inet\.ip\.ttl"):
        k.register(clash)
    assert k.oids["net.inet.ip.ttl"].slot == "ip"


def test_descriptor_checks_itself() -> None:
    with pytest.raises(ValueError, match="state slot"):
        Protocol("x", 1, None, input=EchoState.input, protocol=250)
    with pytest.raises(ValueError, match="protocol or an ethertype"):
        Protocol("x", 1, "x", input=EchoState.input)


def _raw_packet(proto: int, src: str, dst: str, payload: bytes) -> bytes:
    hdr = bytearray(ipv4.HEADER.pack(0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0,
                                     ipv4.aton(src), ipv4.aton(dst)))
    return bytes(hdr) + payload


def test_unclaimed_protocol_goes_to_raw_else_protocol_unreachable() -> None:
    k = Kernel(clock="virtual", seed=1)
    a, b = two_vnets(k)
    icmp_sock = a.socket(AF_INET, SOCK_RAW, 1)
    icmp_sock.setblocking(False)
    sender = a.socket(AF_INET, SOCK_RAW, 200)
    sender.sendto(b"nobody", ("10.0.0.2", 0))
    k.run(1)
    assert b.ip.stats.noproto == 1 and b.ip.stats.delivered == 0
    assert b.icmp.stats.outhist[wicmp.UNREACH] == 1
    reply = icmp_sock.recv(2048)
    assert reply[20] == wicmp.UNREACH and reply[21] == wicmp.UNREACH_PROTOCOL
    # a raw socket for that protocol takes it instead (ip_protox's raw default)
    listener = b.socket(AF_INET, SOCK_RAW, 200)
    listener.setblocking(False)
    sender.sendto(b"somebody", ("10.0.0.2", 0))
    k.run(1)
    assert listener.recv(2048)[20:] == b"somebody"
    assert b.ip.stats.noproto == 1 and b.ip.stats.delivered == 1


@pytest.mark.parametrize(("args", "code"), [
    ((AF_INET, SOCK_STREAM, 17), errno.EPROTONOSUPPORT),
    ((AF_INET, SOCK_DGRAM, 6), errno.EPROTONOSUPPORT),
    ((AF_INET, 5, 0), errno.ESOCKTNOSUPPORT),          # SOCK_SEQPACKET
    ((1, SOCK_DGRAM, 0), errno.EAFNOSUPPORT),          # AF_UNIX: no such family registered
    ((AF_INET, SOCK_RAW, 256), errno.EINVAL),          # raw takes any number, checks it
])
def test_socket_errors_come_from_the_switch(args: tuple[int, int, int], code: int) -> None:
    k = Kernel(clock="virtual")
    with pytest.raises(OSError) as err:
        k.base.socket(*args)
    assert err.value.errno == code


def test_services_are_one_per_kernel() -> None:
    class Counter:
        def __init__(self, kernel: Kernel) -> None:
            self.kernel = kernel
            self.arrived: list[str] = []
            self.gone: list[Any] = []

        def ifattach(self, ifp: Ifnet) -> None:
            self.arrived.append(ifp.name)

        def vnet_detach(self, vnet: Vnet) -> None:
            self.gone.append(vnet.name)

    k = Kernel(clock="virtual")
    svc = k.service(Counter)
    assert k.service(Counter) is svc and svc in k.services
    v = k.create("v")
    k.epair(v)
    k.destroy(v)
    assert svc.arrived == ["lo0", "epair0a", "epair0b"] and svc.gone == ["v"]
    assert Kernel(clock="virtual").service(Counter) is not svc


class LinkCounter:
    """A link-layer protocol on a local experimental ethertype: counts what it gets."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def input(self, ifp: object, payload: bytes) -> None:
        self.frames.append(payload)


def _counter_attach(vnet: Vnet) -> None:
    vnet.lcount = LinkCounter()  # type: ignore[attr-defined]


def _counter_detach(vnet: Vnet) -> None:
    del vnet.lcount  # type: ignore[attr-defined]


LCOUNT = Protocol("lcount", 67, "lcount", _counter_attach, _counter_detach,
                  ethertype=0x88B5, input=LinkCounter.input)


def test_an_ethertype_beside_ipv4_and_the_first_type_fast_path() -> None:
    """A registered ethertype is reached through the table; IPv4, the first ethertype in
    protocol order, keeps the fast entry; unregistering a type leaves nothing behind."""
    k = Kernel(clock="virtual", seed=1)
    a, b = k.create("a"), k.create("b")
    ea, eb = k.epair(a)
    eb.move_to(b)
    ea.set_up(True)
    eb.set_up(True)
    k.register(LCOUNT)
    ea.output(eb.mac + ea.mac + b"\x88\xb5" + b"hello".ljust(46, b"\0"))
    k.run(0.01)
    assert [f[:5] for f in b.lcount.frames] == [b"hello"]  # type: ignore[attr-defined]
    assert b.ether_fast_type == b"\x08\x00" and b.ethertypes[0x88B5].__self__ is b.lcount
    k.unregister("lcount")
    assert 0x88B5 not in b.ethertypes and b.ether_fast_type == b"\x08\x00"
    ea.output(eb.mac + ea.mac + b"\x88\xb5" + bytes(46))
    k.run(0.01)
    assert eb.iqdrops == 1  # an unknown type now, counted and dropped
