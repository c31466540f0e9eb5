"""Unmodified Python programs in vnets as separate processes (`vimage exec`): their sockets are
real descriptors relayed by vimaged, so http.server, urllib, selectors and asyncio just work."""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time

import pytest

SERVER = textwrap.dedent("""
    import http.server, os, sys
    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = f"{os.environ['VIMAGE']} says hello to {self.client_address[0]}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 8000), Hello)
    print("listening", server.server_address, flush=True)
    server.serve_forever()
""")


def build_routed(d) -> None:
    """a -- r1 -- r2 -- b, through the vimage command only; `web` names b in a."""
    for name in ("a", "r1", "r2", "b"):
        d.ok("-c", name)
    for left, right, net in (("a", "r1", "10.0.1"), ("r1", "r2", "10.0.2"),
                             ("r2", "b", "10.0.3")):
        end = d.ok("ifconfig", "epair", "create").strip()[:-1]
        d.ok("ifconfig", f"{end}a", "vnet", left)
        d.ok("ifconfig", f"{end}b", "vnet", right)
        d.ok(left, "ifconfig", f"{end}a", f"{net}.1/24", "up")
        d.ok(right, "ifconfig", f"{end}b", f"{net}.2/24", "up")
    for router in ("r1", "r2"):
        d.ok(router, "sysctl", "net.inet.ip.forwarding=1")
    d.ok("a", "route", "add", "default", "10.0.1.2")
    d.ok("r1", "route", "add", "default", "10.0.2.2")
    d.ok("r2", "route", "add", "default", "10.0.2.1")
    d.ok("b", "route", "add", "default", "10.0.3.1")
    d.ok("a", "hosts", "add", "10.0.3.2", "web")


def start(d, vnet: str, source: str) -> subprocess.Popen[str]:
    path = os.path.join(d.dir, f"{vnet}-prog.py")
    with open(path, "w") as fh:
        fh.write(source)
    errors = os.path.join(d.dir, f"{vnet}-prog.err")  # a file: a full pipe would block it
    with open(errors, "w") as err:
        proc = subprocess.Popen(["vimage", "exec", vnet, "--", "python", path], env=d.env(),
                                stdout=subprocess.PIPE, stderr=err, text=True,
                                cwd=d.dir, start_new_session=True)  # killed as a group
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening"):
        with open(errors) as fh:
            pytest.fail(f"the server did not start: {line!r} {fh.read()}")
    return proc


def run_in(d, vnet: str, source: str, timeout: float = 60) -> str:
    path = os.path.join(d.dir, f"{vnet}-client.py")
    with open(path, "w") as fh:
        fh.write(textwrap.dedent(source))
    res = d.run("exec", vnet, "--", "python", path, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.fixture
def routed(vimaged):
    build_routed(vimaged)
    procs: list[subprocess.Popen[str]] = []
    yield vimaged, procs
    for proc in procs:
        os.killpg(proc.pid, signal.SIGKILL)  # vimage exec and the program it started
        proc.wait(10)


def test_http_server_and_urllib_two_routers_apart(routed):
    d, procs = routed
    procs.append(start(d, "b", SERVER))
    out = run_in(d, "a", """
        import urllib.request
        for _ in range(3):
            print(urllib.request.urlopen("http://web:8000/hello", timeout=10).read().decode())
    """)
    assert out.splitlines() == ["b says hello to 10.0.1.1"] * 3
    # the request crossed both routers of the vnets, not the host's network
    forwarded = d.ok("r2", "netstat", "-s", "-p", "ip")
    assert "packets forwarded" in forwarded
    assert int(forwarded.split("packets forwarded")[0].split()[-1]) > 10


def test_asyncio_selectors_and_udp_unchanged(routed):
    d, procs = routed
    procs.append(start(d, "b", textwrap.dedent("""
        import asyncio
        async def handle(reader, writer):
            writer.write((await reader.readline()).upper())
            await writer.drain()
            writer.close()
        class Reverse(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport
            def datagram_received(self, data, addr):
                self.transport.sendto(data[::-1], addr)
        async def main():
            await asyncio.start_server(handle, "0.0.0.0", 9000)
            await asyncio.get_running_loop().create_datagram_endpoint(
                Reverse, local_addr=("0.0.0.0", 9001))
            print("listening", flush=True)
            await asyncio.sleep(3600)
        asyncio.run(main())
    """)))
    out = run_in(d, "a", """
        import asyncio, errno, selectors, socket
        async def main():
            reader, writer = await asyncio.open_connection("web", 9000)
            writer.write(b"streams\\n")
            print((await reader.readline()).decode().strip())
            loop = asyncio.get_running_loop()
            got = loop.create_future()
            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data, addr):
                    got.set_result((data, addr))
            transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=("web", 9001))
            transport.sendto(b"datagram")
            print(await asyncio.wait_for(got, 10))
            try:
                await asyncio.open_connection("web", 9999)
            except ConnectionRefusedError:
                print("refused")
        asyncio.run(main())
        s = socket.socket()
        s.setblocking(False)
        print(s.connect_ex(("10.0.3.2", 9000)) == errno.EINPROGRESS)
        sel = selectors.DefaultSelector()
        sel.register(s, selectors.EVENT_WRITE)
        print(bool(sel.select(10)), s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        print(s.family == socket.AF_INET, s.type == socket.SOCK_STREAM,
              isinstance(s, socket.socket))
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(10)
        u.sendto(b"plain", ("web", 9001))
        print(u.recvfrom(100))
    """)
    assert out.splitlines() == [
        "STREAMS", "(b'margatad', ('10.0.3.2', 9001))", "refused", "True", "True 0",
        "True True True", "(b'nialp', ('10.0.3.2', 9001))"]


def test_names_and_errors_come_from_the_vnet(routed):
    d, _ = routed
    out = run_in(d, "b", """
        import socket
        print(socket.gethostbyname("localhost"))
        try:
            socket.getaddrinfo("web", 80)       # a's name: b does not know it
        except socket.gaierror as exc:
            print("gaierror", exc.errno == socket.EAI_NONAME)
        s = socket.socket()
        try:
            s.connect(("10.0.3.1", 1))          # r2 has nothing on port 1
        except ConnectionRefusedError:
            print("refused")
        s2 = socket.socket()
        try:
            s2.bind(("10.9.9.9", 0))            # not an address of b
        except OSError as exc:
            print("bind", exc.errno == 99)
    """)
    assert out.splitlines() == ["127.0.0.1", "gaierror True", "refused", "bind True"]


def test_a_process_outside_vimage_exec_keeps_the_host_network(vimaged):
    # the sitecustomize is inert without the channel: plain python here uses real sockets
    res = subprocess.run(["python", "-c", "import socket; s = socket.socket(); "
                          "print(type(s).__module__, s.fileno() < 1 << 20)"],
                         capture_output=True, text=True, env=vimaged.env(), timeout=30)
    assert res.stdout.split() == ["socket", "True"]


def test_sockets_of_a_finished_process_are_closed(routed):
    d, _ = routed
    run_in(d, "b", """
        import socket
        s = socket.socket()
        s.bind(("0.0.0.0", 7777))
        s.listen()
        print("bound")
    """)
    # the process has exited: its listener is gone, so the port is free again
    out = run_in(d, "b", """
        import socket
        s = socket.socket()
        s.bind(("0.0.0.0", 7777))
        s.listen()
        print("again")
    """)
    assert out.strip() == "again"
    assert "7777" not in d.ok("b", "netstat", "-an")


ASYNC_SERVER = textwrap.dedent("""
    import asyncio
    async def main():
        await asyncio.start_server(lambda r, w: w.close(), "0.0.0.0", 9000)
        print("listening", flush=True)
        await asyncio.sleep(3600)
    asyncio.run(main())
""")


@pytest.mark.parametrize("program", [SERVER, ASYNC_SERVER], ids=["http.server", "asyncio"])
def test_a_server_whose_daemon_is_gone_waits_instead_of_spinning(routed, program):
    d, procs = routed
    server = start(d, "b", program)
    procs.append(server)
    with d.client() as client:
        client.request("stop")  # the network of the process disappears under it
    time.sleep(1.0)
    program = _program_pid(server.pid, "b-prog.py")
    states = []
    for _ in range(20):  # a spinning loop is running or runnable (R), a waiting one asleep (S)
        with open(f"/proc/{program}/stat") as fh:
            states.append(fh.read().rsplit(")", 1)[1].split()[0])
        time.sleep(0.05)
    assert states.count("S") >= 18, states


def _program_pid(leader: int, script: str) -> int:
    """The child of `leader` (vimage exec) that runs `script`."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
                if ppid == leader and len(argv) > 1 and argv[1].endswith(script.encode()):
                    return int(entry)
            except OSError:
                continue
    raise LookupError(script)


# -- errors must never need the program to read (issue: no packet, peer or client may stall) ---
UDP_FLOOD = """
    import errno, socket, time
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    failed = sent = 0
    start = time.monotonic()
    for _ in range(100_000):
        try:
            s.sendto(b"x" * 32, ("10.99.0.1", 9))   # no route in this vnet
            sent += 1
        except OSError as exc:
            assert exc.errno == errno.ENETUNREACH, exc
            failed += 1
    print(failed > 0, failed + sent, round(time.monotonic() - start, 2))
"""


def test_a_program_that_only_sends_unroutable_udp_finishes(vimaged):
    vimaged.ok("-c", "lone")
    out = run_in(vimaged, "lone", UDP_FLOOD, timeout=30)
    failed, total, _seconds = out.split()
    assert (failed, total) == ("True", "100000"), out


BLOCKED = """
    import errno, os, socket, threading
    os.close(int(os.environ["VIMAGE_CTL_FD"]))  # so destroying the vnet does not kill it
    r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r.bind(("0.0.0.0", 5000))
    listener = socket.socket()
    listener.bind(("0.0.0.0", 5001))
    listener.listen()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    results = []
    def wait(name, call):
        try:
            call()
        except OSError as exc:
            results.append((name, errno.errorcode[exc.errno]))
    threads = [threading.Thread(target=wait, args=("recv", lambda: r.recv(100))),
               threading.Thread(target=wait, args=("accept", listener.accept))]
    for t in threads:
        t.start()
    print("ready", flush=True)
    while True:
        try:
            s.sendto(b"x", ("10.99.0.1", 9))
        except OSError as exc:
            if exc.errno != errno.ENETUNREACH:
                results.append(("sendto", errno.errorcode[exc.errno]))
                break
    for t in threads:
        t.join()
    print(sorted(results))
"""


def test_destroying_its_vnet_wakes_a_program_blocked_on_its_sockets(vimaged):
    vimaged.ok("-c", "doomed")
    path = os.path.join(vimaged.dir, "blocked.py")
    with open(path, "w") as fh:
        fh.write(textwrap.dedent(BLOCKED))
    proc = subprocess.Popen(["vimage", "exec", "doomed", "--", "python", path],
                            env=vimaged.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=vimaged.dir)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        vimaged.ok("-d", "doomed")
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert out == "[('accept', 'ENETDOWN'), ('recv', 'ENETDOWN'), ('sendto', 'ENETDOWN')]\n"
