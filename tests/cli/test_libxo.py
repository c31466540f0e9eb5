"""--libxo json and xml on netstat, arp, ifconfig and route get: FreeBSD's field names,
parsed as structure (json.loads, xml.etree), and the text output unchanged."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from vimage.cli import UsageError
from vimage.cli._libxo import Xo, parse_args, text_of
from vimage.kernel import Kernel
from vimage.socket.socket import AF_INET, SOCK_STREAM
from vimage.vnet import Vnet


@pytest.fixture
def pair() -> tuple[Kernel, Vnet, Vnet]:
    kernel = Kernel(clock="virtual", seed=7)
    h1, h2 = kernel.create("h1"), kernel.create("h2")
    a, b = kernel.epair()
    a.move_to(h1)
    b.move_to(h2)
    a.add_addr("10.0.0.1/24")
    b.add_addr("10.0.0.2/24")
    a.set_up(True)
    b.set_up(True)
    kernel.run(1)
    assert h1.cmd("route add default 10.0.0.2").ok
    return kernel, h1, h2


def run_json(vnet: Vnet, line: str) -> dict:
    res = vnet.cmd(line)
    assert res.status == 0, res.output
    data = json.loads(res.output)
    assert isinstance(data, dict)
    return data


def run_xml(vnet: Vnet, line: str) -> ET.Element:
    res = vnet.cmd(line)
    assert res.status == 0, res.output
    return ET.fromstring(res.output)


# -- the emitter ------------------------------------------------------------------------
def test_parse_args_forms() -> None:
    assert parse_args(["-s", "--libxo", "json", "-p", "ip"]) == (["-s", "-p", "ip"], "json",
                                                                 False)
    assert parse_args(["--libxo=json,pretty", "-rn"]) == (["-rn"], "json", True)
    assert parse_args(["--libxo=xml"]) == ([], "xml", False)
    assert parse_args(["--libxo:JP"]) == ([], "json", True)
    assert parse_args(["-a"]) == (["-a"], "text", False)
    with pytest.raises(UsageError):
        parse_args(["--libxo", "yaml"])
    with pytest.raises(UsageError):
        parse_args(["--libxo"])


def test_emit_text_and_fields() -> None:
    xo = Xo("json")
    xo.open_container("ip")
    xo.emit("\t{:forwarded-packets/%ju} {N:/packet%s forwarded}", 3, "s")
    xo.emit(" ({:fast-forwarded-packets/%ju} {N:/packet%s fast forwarded})\n", 1, "")
    xo.emit("{d:/%-6s}{e:hidden/%s}|{:proto/%s}\\/{q:n/%d}\n", "ab", "enc", "tcp", 5)
    xo.emit("{N:/broadcast\\/multicast datagram%s}\n", "s")
    xo.close_container()
    assert "".join(xo.text) == ("\t3 packets forwarded (1 packet fast forwarded)\n"
                                "ab    |tcp\\/5\nbroadcast/multicast datagrams\n")
    assert json.loads(xo.render()) == {"ip": {"forwarded-packets": 3,
                                              "fast-forwarded-packets": 1,
                                              "hidden": "enc", "proto": "tcp", "n": "5"}}
    assert text_of("{:a/%6d}|{t:b/%-4s}|", 42, "x") == "    42|x   |"


def test_plural_note_follows_the_previous_value() -> None:
    assert text_of("{:n/%d} {Np:/apple,apples}", 1) == "1 apple"
    assert text_of("{:n/%d} {Np:/apple,apples}", 2) == "2 apples"


# -- netstat ------------------------------------------------------------------------------
def test_netstat_s_json_and_xml_field_names(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _kernel, h1, _h2 = pair
    h1.ip.stats.forward, h1.ip.stats.fastforward, h1.ip.stats.badsum = 6, 2, 1
    h1.tcp.stats.sndtotal, h1.tcp.stats.sndpack, h1.tcp.stats.sndbyte = 9, 4, 4000
    h1.udp.stats.ipackets, h1.arp.stats.txreplies, h1.icmp.stats.inhist[8] = 5, 3, 2
    text = h1.cmd("netstat -s").output
    data = run_json(h1, "netstat -s --libxo json")
    assert data["__version"] == "1"
    st = data["statistics"]
    assert st["ip"]["forwarded-packets"] == 6 and st["ip"]["fast-forwarded-packets"] == 2
    assert st["ip"]["dropped-bad-checksum"] == 1
    assert st["tcp"]["sent-packets"] == 9 and st["tcp"]["sent-data-bytes"] == 4000
    assert st["tcp"]["syncache"]["entries-added"] == 0
    assert st["tcp"]["TCP connection count by state"]["ESTABLISHED"] == 0
    assert st["udp"]["received-datagrams"] == 5 and st["udp"]["delivered-packets"] == 5
    assert st["arp"]["sent-replies"] == 3
    assert st["icmp"]["input-histogram"] == [{"name": "echo", "count": 2}]
    assert st["icmp"]["icmp-address-responses"] == "disabled"
    root = run_xml(h1, "netstat -s -p ip --libxo xml")
    assert root.tag == "statistics"
    assert root.findtext("ip/forwarded-packets") == "6"
    assert root.findtext("ip/fast-forwarded-packets") == "2"
    assert h1.cmd("netstat -s").output == text  # the text is not changed by it
    pretty = h1.cmd("netstat -s -p arp --libxo=json,pretty").output
    assert pretty.startswith("{\n  ") and json.loads(pretty)["statistics"]["arp"]


def test_netstat_i_json(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _kernel, h1, _h2 = pair
    assert h1.cmd("ping -c 2 10.0.0.2").ok
    ifp = h1.iface("epair0a")
    rows = run_json(h1, "netstat -i --libxo json")["statistics"]["interface"]
    link = [r for r in rows if r["name"] == "epair0a" and r["network"].startswith("<Link")]
    assert link == [{"name": "epair0a", "flags": f"{ifp.flags:#x}", "mtu": 1500,
                     "network": f"<Link#{ifp.index}>", "address": ifp.mac.hex(":"),
                     "received-packets": ifp.ipackets, "received-errors": 0,
                     "dropped-packets": 0, "sent-packets": ifp.opackets,
                     "send-errors": 0, "collisions": 0}]
    inet = [r for r in rows if r["name"] == "epair0a" and r["network"] == "10.0.0.0/24"]
    assert inet[0]["address"] == "10.0.0.1"
    rows = run_json(h1, "netstat -ibd --libxo json")["statistics"]["interface"]
    assert any(r.get("sent-bytes") == ifp.obytes for r in rows)


def test_netstat_link_family_and_wide(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, _h2 = pair
    ifp = h1.iface("epair0a")
    lines = h1.cmd("netstat -f link -I epair0a").output.splitlines()
    assert len(lines) == 2
    assert lines[1].split()[:4] == ["epair0a", "1500", f"<Link#{ifp.index}>", ifp.mac.hex(":")]
    inet = h1.cmd("netstat -i -f inet -I epair0a").output.splitlines()
    assert [line.split()[2] for line in inet[1:]] == ["10.0.0.0/24"]
    assert kernel.cmd("ifconfig epair create").ok
    assert kernel.cmd("ifconfig epair1a.1000 create").ok  # a 12-character name, down
    wide = kernel.cmd("netstat -i -W").output.splitlines()
    assert wide[0].startswith("Name" + " " * 9 + "   Mtu")  # the longest name, with '*'
    row = next(line for line in wide if line.startswith("epair1a.1000*"))
    assert row[13:19] == "  1500"
    assert h1.cmd("netstat -I nosuch0 --libxo json").status == 1


def test_netstat_r_json_families_and_fib(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _kernel, h1, _h2 = pair
    info = run_json(h1, "netstat -rn --libxo json")["statistics"]["route-information"]
    families = info["route-table"]["rt-family"]
    assert [f["address-family"] for f in families] == ["Internet", "Internet6"]
    default = next(e for e in families[0]["rt-entry"] if e["destination"] == "default")
    assert default == {"destination": "default", "gateway": "10.0.0.2", "flags": "UGS",
                       "interface-name": "epair0a"}
    v6 = run_json(h1, "netstat -rn -f inet6 --libxo json")["statistics"]
    fams = v6["route-information"]["route-table"]["rt-family"]
    assert [f["address-family"] for f in fams] == ["Internet6"]
    assert any(e["destination"] == "::1" for e in fams[0]["rt-entry"])
    wide = run_json(h1, "netstat -rnW --libxo json")["statistics"]["route-information"]
    entry = wide["route-table"]["rt-family"][0]["rt-entry"][0]
    assert {"nhop", "mtu"} <= entry.keys()
    h1.sysctl("net.fibs", 2)
    fib = run_json(h1, "netstat -rn -F 1 -f inet --libxo json")["statistics"]
    assert fib["route-information"]["fib"] == 1
    assert fib["route-information"]["route-table"]["rt-family"][0]["rt-entry"] == []
    assert h1.cmd("netstat -rn -F 1 -f inet").output.startswith("Routing tables (fib: 1)\n")


def test_netstat_sockets_json(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _kernel, h1, h2 = pair
    listener = h2.socket(AF_INET, SOCK_STREAM)
    listener.bind(("0.0.0.0", 80))
    listener.listen(5)
    client = h1.socket(AF_INET, SOCK_STREAM)
    client.connect(("10.0.0.2", 80))
    server, _ = listener.accept()
    socks = run_json(h2, "netstat -an --libxo json")["statistics"]["socket"]
    listening = [s for s in socks if s.get("tcp-state") == "LISTEN"]
    assert listening[0]["protocol"] == "tcp4"
    assert listening[0]["local"] == {"address": "*", "port": "80"}
    est = [s for s in socks if s.get("tcp-state") == "ESTABLISHED"]
    assert est[0]["local"] == {"address": "10.0.0.2", "port": "80"}
    assert est[0]["remote"]["address"] == "10.0.0.1"
    assert est[0]["receive-bytes-waiting"] == 0 and est[0]["send-bytes-waiting"] == 0
    queued = run_json(h2, "netstat -L --libxo json")["statistics"]["socket"]
    assert queued == [{"protocol": "tcp4", "listen-queue-sizes": "0/0/5",
                       "local": {"address": "*", "port": "80"}}]
    root = run_xml(h2, "netstat -an -p tcp --libxo xml")
    assert [s.findtext("tcp-state") for s in root.iter("socket")] == ["LISTEN", "ESTABLISHED"]
    for s in (client, server, listener):
        s.close()


# -- arp ----------------------------------------------------------------------------------
def test_arp_json_and_xml(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    kernel, h1, h2 = pair
    assert h1.cmd("ping -c 1 10.0.0.2").ok
    assert h1.cmd("arp -s 10.0.0.7 02:00:00:00:00:07").ok
    data = run_json(h1, "arp -a --libxo json")
    assert data["__version"] == "1"
    cache = {e["ip-address"]: e for e in data["arp"]["arp-cache"]}
    peer = cache["10.0.0.2"]
    assert peer == {"hostname": "?", "ip-address": "10.0.0.2",
                    "mac-address": h2.iface("epair0b").mac.hex(":"), "interface": "epair0a",
                    "expires": peer["expires"], "type": "ethernet"}
    assert 0 < peer["expires"] <= 1200
    assert cache["10.0.0.7"]["permanent"] is True
    root = run_xml(h1, "arp -an --libxo xml")
    assert root.tag == "arp"
    assert [e.findtext("ip-address") for e in root.iter("arp-cache")] == [
        "10.0.0.1", "10.0.0.2", "10.0.0.7"]
    one = run_json(h1, "arp 10.0.0.7 --libxo json")["arp"]["arp-cache"]
    assert [e["mac-address"] for e in one] == ["02:00:00:00:00:07"]
    missing = h1.cmd("arp 10.0.0.9 --libxo json")
    assert missing.status == 1 and json.loads(missing.output)["arp"]["arp-cache"] == []
    assert not h1.cmd("ping -c 1 -t 1 10.0.0.9").ok
    incomplete = run_json(h1, "arp -a --libxo json")["arp"]["arp-cache"]
    entry = next(e for e in incomplete if e["ip-address"] == "10.0.0.9")
    assert entry["incomplete"] is True and entry["expired"] is True
    assert "mac-address" not in entry
    del kernel


def test_arp_replace_says_deleted(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _kernel, h1, _h2 = pair
    # arp.c F_REPLACE: delete() first (its warning when there is nothing), then set()
    first = h1.cmd("arp -S 10.0.0.7 02:00:00:00:00:07")
    assert first.status == 0
    assert first.output == "arp: delete 10.0.0.7: No such file or directory\n"
    again = h1.cmd("arp -S 10.0.0.7 02:00:00:00:00:08")
    assert again.status == 0 and again.output == "10.0.0.7 (10.0.0.7) deleted\n"
    assert "at 02:00:00:00:00:08 on epair0a permanent" in h1.cmd("arp 10.0.0.7").output
    off = h1.cmd("arp -S 10.9.9.9 02:00:00:00:00:09")
    assert off.status == 1
    assert off.output == ("arp: delete: cannot locate 10.9.9.9\n"
                          "arp: cannot intuit interface index and type for 10.9.9.9\n")


def test_arp_messages(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _kernel, h1, _h2 = pair
    assert h1.cmd("arp -i epair0a 10.0.0.9").output == (
        "10.0.0.9 (10.0.0.9) -- no entry on epair0a\n")
    assert h1.cmd("arp -d 10.9.9.9").output == "arp: delete: cannot locate 10.9.9.9\n"
    assert h1.cmd("arp -i epair0a -d 10.0.0.2").output == (
        "arp: -i not applicable to this operation\n")
    assert h1.cmd("arp nosuchhost").output == "arp: nosuchhost: Unknown host\n"
    bad = h1.cmd("arp -s 10.0.0.8 02:00:00:00:00:08 bogus")
    assert bad.status == 64 and bad.output.startswith("arp: Invalid parameter 'bogus'\nusage:")


# -- ifconfig and route get -----------------------------------------------------------------
def test_ifconfig_json(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _kernel, h1, _h2 = pair
    text = h1.cmd("ifconfig epair0a").output
    data = run_json(h1, "ifconfig --libxo json")
    ifaces = {i["name"]: i for i in data["ifconfig"]["interface"]}
    ep = ifaces["epair0a"]
    first = text.splitlines()[0]  # epair0a: flags=8863<UP,...> metric 0 mtu 1500
    assert first == (f"epair0a: flags={ep['flags'][2:]}<{ep['flags-names']}> "
                     f"metric {ep['metric']} mtu {ep['mtu']}")
    assert ep["ether"] == h1.iface("epair0a").mac.hex(":")
    assert ep["inet"] == [{"address": "10.0.0.1", "netmask": "0xffffff00",
                           "broadcast": "10.0.0.255"}]
    assert ep["inet6"][0]["address"].endswith("%epair0a") and ep["status"] == "active"
    assert ifaces["lo0"]["inet"] == [{"address": "127.0.0.1", "netmask": "0xff000000"}]
    root = run_xml(h1, "ifconfig epair0a inet --libxo xml")
    assert root.findtext("interface/inet/address") == "10.0.0.1"
    assert root.find("interface/inet6") is None
    assert h1.cmd("ifconfig epair0a").output == text


def test_route_get_json(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    _kernel, h1, _h2 = pair
    got = run_json(h1, "route get 8.8.8.8 --libxo json")["route-get"]
    assert got["route-to"] == "8.8.8.8" and got["destination"] == "default"
    assert got["gateway"] == "10.0.0.2" and got["interface"] == "epair0a"
    assert got["flags"] == "UP,GATEWAY,DONE,STATIC" and got["fib"] == 0
    assert got["metrics"]["mtu"] == 1500
    root = run_xml(h1, "route get 10.0.0.2 --libxo xml")
    assert root.findtext("destination") == "10.0.0.0" and root.find("gateway") is None
    assert h1.cmd("route add 10.1.0.0/16 10.0.0.2 --libxo json").status == 64


def test_netstat_o_nhops_c_format(pair: tuple[Kernel, Vnet, Vnet]) -> None:
    """nhops.c: `Idx IFA Gateway Flags Netif Refcnt`, -W adding Type, Use, Mtu, Addrif;
    a nexthop without a gateway shows `IF/resolve`."""
    _kernel, h1, _h2 = pair
    default = next(r for r in h1.route.table(0).all_paths() if r.plen == 0)
    lines = h1.cmd("netstat -on").output.splitlines()
    assert lines[:4] == ["Nexthop data", "", "Internet:",
                         "Idx   IFA                Gateway            Flags     Netif  Refcnt"]
    assert f"{default.nhidx:<5} 10.0.0.1           10.0.0.2           UGS     epair0a     1" \
        in lines
    assert any(line.split()[2] == "epair0a/resolve" for line in lines[4:])
    wide = h1.cmd("netstat -onW").output.splitlines()
    assert wide[3].split() == ["Idx", "Type", "IFA", "Gateway", "Flags", "Use", "Mtu", "Netif",
                               "Addrif", "Refcnt", "Prepend"]
    row = next(line for line in wide if line.startswith(f"{default.nhidx:<5} "))
    assert row.split() == [str(default.nhidx), "v4/gw", "10.0.0.1", "10.0.0.2", "UGS",
                           str(default.use), "1500", "epair0a", "1"]
    nh = run_json(h1, "netstat -onW --libxo json")["statistics"]["route-nhop-information"]
    entries = nh["nhop-table"]["rt-family"][0]["nh-entry"]
    got = next(e for e in entries if e["index"] == default.nhidx)
    assert got["type_str"] == "v4/gw" and got["gateway"] == "10.0.0.2"
    assert got["interface-name"] == "epair0a" and got["mtu"] == 1500
