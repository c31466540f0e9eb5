"""The rtadvd daemon (vimage.apps.rtadvd, `rtadvd` tool): configuration, timing,
answers to solicitations, stopping, and hosts configured by it through SLAAC."""

from __future__ import annotations

import pytest
from tests.netinet6.conftest import DAD_DONE, link_local

from vimage.apps import rtadvd as app
from vimage.kernel import Kernel
from vimage.netinet6 import in6
from vimage.wire import icmp6 as w6
from vimage.wire import ipv6 as wip6

CONF = """\
# a comment
default:\\
	:maxinterval#20:mininterval#5:
epair0a:\\
	:maxinterval#30:mininterval#10:rltime#90:raflags="mo":\\
	:addr="2001:db8:7::":prefixlen#64:vltime#600:pltime#300:mtu#1400:
"""


def lan(seed: int = 1):  # type: ignore[no-untyped-def]
    """r (2001:db8:1::ff/64, forwarding) -- h (accept_rtadv)."""
    k = Kernel(clock="virtual", seed=seed)
    r, h = k.create("r"), k.create("h")
    er, eh = k.epair()
    er.move_to(r)
    eh.move_to(h)
    assert r.cmd("ifconfig epair0a inet6 2001:db8:1::ff/64 up").ok
    r.sysctl("net.inet6.ip6.forwarding", 1)
    assert h.cmd("ifconfig epair0b inet6 accept_rtadv up").ok
    k.run(DAD_DONE)
    return k, r, h, er, eh


def test_parse_conf_keywords():
    entries = app.parse_conf(CONF)
    cfg = entries["epair0a"]
    assert (cfg.maxinterval, cfg.min_interval, cfg.router_lifetime) == (30, 10, 90)
    assert cfg.raflags == w6.RA_MANAGED | w6.RA_OTHER
    assert cfg.prefixes == [(wip6.aton("2001:db8:7::"), 64)]
    assert (cfg.vltime, cfg.pltime, cfg.mtu) == (600, 300, 1400)
    assert entries["default"].router_lifetime == 60  # 3 * maxinterval
    with pytest.raises(app.ConfigError):
        app.parse_conf("x:maxinterval#2:")
    with pytest.raises(app.ConfigError):
        app.parse_conf("x:bogus#2:")
    with pytest.raises(app.ConfigError):
        app.parse_conf('x:vltime#10:pltime#20:')


def test_defaults_advertise_the_interface_prefixes_and_configure_the_host():
    k, r, h, er, eh = lan()
    res = r.cmd("rtadvd epair0a")
    assert res.ok and res.output == ""
    k.run(1 + DAD_DONE)
    (ia,) = [a for a in in6.addrs(eh) if a.flags & in6.IN6_IFF_AUTOCONF]
    assert ia.addr == wip6.aton("2001:db8:1::") | wip6.eui64(eh.mac)
    assert ia.ready
    route = h.rt6.get(0, 0)
    assert route is not None and route.gateway == link_local(er)
    assert "1 packets received" in h.cmd("ping6 -c 1 2001:db8:1::ff").output
    assert "expire=29m" in h.cmd("ndp -r").output  # rltime 3 * 600 s


def test_conf_file_and_flags(tmp_path):
    k, r, h, er, eh = lan()
    conf = tmp_path / "rtadvd.conf"
    conf.write_text(CONF)
    assert r.cmd(f"rtadvd -c {conf} epair0a").ok
    k.run(1 + DAD_DONE)
    assert any(ia.addr >> 64 == wip6.aton("2001:db8:7::") >> 64 for ia in in6.addrs(eh))
    assert h.nd6.rtr.link_mtu(eh) == 1400
    assert "flags=MO" in h.cmd("ndp -r").output
    assert "vltime=600, pltime=300" in h.cmd("ndp -p").output
    bad = r.cmd("rtadvd -c /nonexistent/rtadvd.conf epair0a")
    assert bad.status == 1


def test_answers_solicitations_and_unsolicited_interval():
    k, r, h, er, eh = lan()
    assert r.cmd("rtadvd epair0a").ok
    k.run(1)
    daemon = app.running(r)
    assert daemon is not None
    first = daemon.sent
    assert first >= 1
    k.run(4)  # MIN_DELAY_BETWEEN_RAS passed
    before = daemon.sent
    # a solicitation: answered within MAX_RA_DELAY_TIME
    assert h.cmd("ndp -i epair0b -accept_rtadv").ok
    assert h.cmd("ndp -i epair0b accept_rtadv").ok  # solicits again
    k.run(1.6)
    assert daemon.solicits >= 1 and daemon.sent > before
    # the first advertisements come at most 16 s apart, later ones within the interval
    k.run(3600)
    assert 6 <= daemon.sent <= 3600 // 198 + 8
    out = r.cmd("rtadvd -s").output
    assert "epair0a: maxinterval=600 mininterval=198 rltime=1800" in out


def test_stop_sends_a_final_zero_lifetime():
    k, r, h, er, eh = lan()
    assert r.cmd("rtadvd epair0a").ok
    k.run(1 + DAD_DONE)
    assert h.rt6.get(0, 0) is not None
    assert r.cmd("rtadvd epair0a").status == 1  # already running
    assert r.cmd("rtadvd -k").ok
    k.run(0.1)
    assert h.rt6.get(0, 0) is None  # the host dropped it at once
    assert app.running(r) is None
    assert r.cmd("rtadvd -k").status == 1  # not running
    assert wip6.ALL_ROUTERS not in in6.ifdata(er).groups


def test_bad_interface_and_usage():
    k, r, h, er, eh = lan()
    assert r.cmd("rtadvd nosuch0").status == 1
    assert r.cmd("rtadvd").status == 64
    assert r.cmd("rtadvd -k epair0a").status == 64
