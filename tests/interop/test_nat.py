"""NAT through TAP: a vnet behind vimage's in-kernel NAT and the Linux kernel.

    h (10.0.0.2) -- epair -- r (10.0.0.1 | tap 10.9.0.1) == TAP == Linux ns (10.9.0.2)

Linux has no route to 10.0.0.0/24: what reaches it from h must carry r's address, and
only what r translates back reaches h. One test downloads over HTTP from a Linux server
in the namespace (which reports its peer and `ss` shows the connection's far end), the
other has `curl` in the namespace reach an HTTP server on h through `redirect_port`.
`nat_on` is the one place that sets up the translation (see vimage.testing.nat_via).
"""

from __future__ import annotations

import shutil
import socket
import urllib.request
from typing import TYPE_CHECKING

from vimage.netpfil.nat import command
from vimage.testing import nat_via
from vimage.topo import add_route, connect

if TYPE_CHECKING:
    from conftest import Lab, Link
    from vimage.vnet import Vnet

IO_TIMEOUT = 8.0  # below the lab's 10 s thread join
BODY = bytes(range(256)) * 400  # 100 KiB

# A Linux HTTP server for one request: prints its peer and what `ss` shows, then serves
SERVER = r"""
import socket, subprocess, sys
body = bytes(range(256)) * 400
srv = socket.socket()
srv.bind(("0.0.0.0", 0))
srv.listen(1)
print("ready", srv.getsockname()[1], flush=True)
srv.settimeout(20)
conn, peer = srv.accept()
print("peer", peer[0], flush=True)
conn.settimeout(10)
head = b""
while b"\r\n\r\n" not in head:
    chunk = conn.recv(4096)
    if not chunk:
        break
    head += chunk
if sys.argv[1]:
    out = subprocess.run([sys.argv[1], "-Htn", "state", "established"], capture_output=True,
                         text=True).stdout
    for line in out.splitlines():
        print("ss", line.split()[-1], flush=True)
print("done", flush=True)
conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
conn.close()
"""


def nat_on(vnet: Vnet, ifname: str, config: str) -> None:
    """`ipfw nat 1 config CONFIG` and `ipfw add nat 1 ip from any to any via IFNAME`
    (vimage.testing.nat_via: that rule and an allow-all rule 65000)."""
    command(vnet, ["nat", "1", "config", *config.split()])
    nat_via(vnet, 1, ifname)


def nat_world(lab: Lab, config: str) -> tuple[Vnet, Vnet, Link]:
    """h behind r, r's TAP to a new namespace, NAT `config` ({tap}: the TAP's name)."""
    h, r = lab.vnet("h"), lab.vnet("r", forwarding=True)
    ns = lab.netns()
    link = lab.tap(r, ns, "10.9.0.1/24", "10.9.0.2/24")
    connect(h, "10.0.0.2/24", r, "10.0.0.1/24")
    add_route(h, "default", "10.0.0.1")
    nat_on(r, link.tap.name, config.format(tap=link.tap.name))
    lab.start()
    return h, r, link


def test_vnet_behind_nat_downloads_from_linux_which_sees_only_the_nat_address(lab: Lab):
    h, r, link = nat_world(lab, "if {tap}")  # the alias address follows the interface
    ss = shutil.which("ss") or ""
    proc = lab.spawn_python(link.ns, SERVER, ss)
    word, port = lab.readline(proc).split()
    assert word == "ready"
    got: list[bytes] = []
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            url = f"http://10.9.0.2:{port}/"
            with h.activate(), urllib.request.urlopen(url, timeout=IO_TIMEOUT) as resp:
                got.append(resp.read())
        except BaseException as exc:
            errors.append(exc)

    thread = lab.thread(fetch)
    assert lab.readline(proc, timeout=IO_TIMEOUT) == "peer 10.9.0.1"
    seen = []
    while (line := lab.readline(proc, timeout=IO_TIMEOUT)) != "done":
        seen.append(line)
    thread.join(IO_TIMEOUT)
    assert not errors, errors
    assert got == [BODY]
    if ss:
        assert seen and all(line.startswith("ss 10.9.0.1:") for line in seen), seen
    nat = r.ipfw_nat.instances[1]
    assert nat.stats.translated_out > 0 and nat.stats.translated_in > 0


def test_linux_curl_reaches_a_server_behind_nat_with_redirect_port(lab: Lab):
    curl = lab.need("curl")
    h, r, link = nat_world(lab, "ip 10.9.0.1 redirect_port tcp 10.0.0.2:80 8080")
    listener = h.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("0.0.0.0", 80))
    listener.listen(4)
    listener.settimeout(IO_TIMEOUT)
    peers: list[str] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, peer = listener.accept()
            peers.append(peer[0])
            conn.settimeout(IO_TIMEOUT)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                head += chunk
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % len(BODY) + BODY)
            conn.close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            listener.close()

    thread = lab.thread(serve)
    res = lab.run(link.ns, curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                  "--max-time", "15", "http://10.9.0.1:8080/")
    thread.join(IO_TIMEOUT)
    assert not errors, errors
    assert res.returncode == 0, f"curl exit {res.returncode}: {res.stderr}"
    assert res.stdout.split() == ["200", str(len(BODY))]
    assert peers == ["10.9.0.2"]  # the server inside sees the real client


def test_ping_from_behind_nat_reaches_linux_with_the_alias_id(lab: Lab):
    """ICMP echo through the NAT against the Linux kernel: Linux answers the alias
    address (it has no route to 10.0.0.0/24), the id comes back translated."""
    h, r, link = nat_world(lab, "ip 10.9.0.1")
    res = h.cmd(f"ping -c 2 -i 0.2 {link.linux_addr}")
    assert res.status == 0, res.output
    assert "2 packets received" in res.output
    with lab.kernel.sched.cond:
        (echo,) = [lk for lk in r.ipfw_nat.instances[1].out.values() if lk.proto == 1]
    assert echo.aaddr == 0x0A090001 and echo.laddr == 0x0A000002
