"""ESP against the Linux kernel's XFRM through TAP: the same SAs and policies configured
with setkey in the vnet and `ip xfrm state/policy` in a namespace; ping and TCP both ways,
in transport mode (AES-GCM-16) and tunnel mode (AES-CBC + HMAC-SHA-256-128). The outer
link is the `pair` fixture's 10.9.0.1 (vnet) - 10.9.0.2 (Linux)."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Pair

US, LINUX = "10.9.0.1", "10.9.0.2"
GCM_KEY = "0x" + bytes(range(1, 21)).hex()
CBC_KEY = "0x" + bytes(range(16)).hex()
HMAC_KEY = "0x" + bytes(range(32, 64)).hex()
PING_FAST = ("-i", "0.2", "-W", "2", "-w", "10")


def _xfrm_state(pair: Pair, src: str, dst: str, spi: int, mode: str, alg: str) -> None:
    if alg == "gcm":
        algo = ["aead", "rfc4106(gcm(aes))", GCM_KEY, "128"]
    else:
        algo = ["enc", "cbc(aes)", CBC_KEY, "auth-trunc", "hmac(sha256)", HMAC_KEY, "128"]
    try:
        pair.lab.ip(pair.link.ns, "xfrm", "state", "add", "src", src, "dst", dst, "proto",
                    "esp", "spi", hex(spi), "mode", mode, "replay-window", "64", *algo)
    except AssertionError as exc:
        if "Protocol not supported" in str(exc) or "not found" in str(exc):
            pytest.skip(f"this Linux kernel has no XFRM ESP with {algo[1]}: {exc}")
        raise


def _xfrm_policy(pair: Pair, src: str, dst: str, direction: str, tsrc: str, tdst: str,
                 mode: str) -> None:
    pair.lab.ip(pair.link.ns, "xfrm", "policy", "add", "src", src, "dst", dst, "dir",
                direction, "tmpl", "src", tsrc, "dst", tdst, "proto", "esp", "mode", mode)


def _setkey_alg(alg: str) -> str:
    if alg == "gcm":
        return f"-E aes-gcm-16 {GCM_KEY}"
    return f"-E aes-cbc {CBC_KEY} -A hmac-sha2-256 {HMAC_KEY}"


def _tcp_to_linux(pair: Pair, theirs: str, ours: str) -> None:
    """A vnet client sends 100 kB to a Linux server at `theirs`."""
    code = ("import socket,sys\n"
            f"l=socket.create_server(('{theirs}',5002))\nprint('ready',flush=True)\n"
            "c,_=l.accept()\nn=0\n"
            "while (d:=c.recv(65536)):\n n+=len(d)\n"
            "print(n,flush=True)\n")
    server = pair.lab.spawn_python(pair.link.ns, code)
    assert pair.lab.readline(server, 10).strip() == "ready"
    cli = pair.vnet.socket(socket.AF_INET, socket.SOCK_STREAM)
    cli.settimeout(20)
    cli.bind((ours, 0))
    cli.connect((theirs, 5002))
    cli.sendall(bytes(100_000))
    cli.close()
    assert pair.lab.readline(server, 20).strip() == "100000"
    server.wait(timeout=10)


def _pings_both_ways(pair: Pair, ours: str, theirs: str) -> None:
    res = pair.vnet.cmd(f"ping -c 3 -i 0.2 -S {ours} {theirs}")
    assert res.status == 0 and " 0.0% packet loss" in res.output, res.output
    out = pair.lab.run(pair.link.ns, pair.lab.need("ping"), "-c", "3", "-I", theirs,
                       *PING_FAST, ours)
    assert out.returncode == 0 and "3 received" in out.stdout, out.stdout + out.stderr


def test_esp_transport_gcm_with_linux_xfrm(pair: Pair) -> None:
    _xfrm_state(pair, US, LINUX, 0x1000, "transport", "gcm")
    _xfrm_state(pair, LINUX, US, 0x1001, "transport", "gcm")
    _xfrm_policy(pair, LINUX, US, "out", LINUX, US, "transport")
    _xfrm_policy(pair, US, LINUX, "in", US, LINUX, "transport")
    pair.ok("setkey -c",
        f"add {US} {LINUX} esp 0x1000 -m transport {_setkey_alg('gcm')};\n"
        f"add {LINUX} {US} esp 0x1001 -m transport {_setkey_alg('gcm')};\n"
        f"spdadd {US} {LINUX} any -P out ipsec esp/transport//require;\n"
        f"spdadd {LINUX} {US} any -P in ipsec esp/transport//require;\n")
    _pings_both_ways(pair, US, LINUX)
    pair.tcp_from_linux(US)
    _tcp_to_linux(pair, LINUX, US)
    st = pair.vnet.ipsec.stats
    assert st.input > 50 and st.output > 50
    assert st.badauth == st.replay == st.notdb == 0
    assert pair.vnet.ipsec.pstats.in_polvio == 0


def test_esp_tunnel_cbc_hmac_with_linux_xfrm(pair: Pair) -> None:
    """Tunnel mode between 10.9.0.1 and 10.9.0.2 for 10.20.0.1 (ours, on lo0) and
    10.21.0.2 (Linux, on its lo)."""
    lab, ns = pair.lab, pair.link.ns
    ours, theirs = "10.20.0.1", "10.21.0.2"
    lab.ip(ns, "addr", "add", f"{theirs}/32", "dev", "lo")
    lab.ip(ns, "route", "add", f"{ours}/32", "via", US, "src", theirs)
    pair.ok(f"ifconfig lo0 inet {ours}/32 alias")
    pair.ok(f"route add {theirs} {LINUX}")
    _xfrm_state(pair, US, LINUX, 0x2000, "tunnel", "cbc")
    _xfrm_state(pair, LINUX, US, 0x2001, "tunnel", "cbc")
    _xfrm_policy(pair, theirs, ours, "out", LINUX, US, "tunnel")
    _xfrm_policy(pair, ours, theirs, "in", US, LINUX, "tunnel")
    pair.ok("setkey -c",
        f"add {US} {LINUX} esp 0x2000 -m tunnel {_setkey_alg('cbc')};\n"
        f"add {LINUX} {US} esp 0x2001 -m tunnel {_setkey_alg('cbc')};\n"
        f"spdadd {ours} {theirs} any -P out ipsec esp/tunnel/{US}-{LINUX}/require;\n"
        f"spdadd {theirs} {ours} any -P in ipsec esp/tunnel/{LINUX}-{US}/require;\n")
    _pings_both_ways(pair, ours, theirs)
    pair.tcp_from_linux(ours, theirs)
    _tcp_to_linux(pair, theirs, ours)
    st = pair.vnet.ipsec.stats
    assert st.input > 50 and st.output > 50
    assert st.badauth == st.replay == st.tunnel == 0
