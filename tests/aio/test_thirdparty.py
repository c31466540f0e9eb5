"""Unmodified third-party and stdlib code inside vnets: aiohttp on the loop, urllib in threads."""

from __future__ import annotations

import http.server
import socket
import threading
import urllib.error
import urllib.request

import pytest
from aiohttp import ClientSession, web

import vimage
from vimage import Kernel, topo


def routed(clock: str) -> tuple[Kernel, object, object]:
    """a (10.0.1.1) -- r -- b (10.0.2.1): two links and a forwarding router."""
    kernel = Kernel(clock=clock, seed=11)
    a, r, b = kernel.create("a"), kernel.create("r"), kernel.create("b")
    topo.connect(a, "10.0.1.1/24", r, "10.0.1.254/24")
    topo.connect(r, "10.0.2.254/24", b, "10.0.2.1/24")
    r.sysctl("net.inet.ip.forwarding", 1)
    topo.add_route(a, "default", "10.0.1.254")
    topo.add_route(b, "default", "10.0.2.254")
    a.hosts.add("10.0.2.1", "api.example")
    return kernel, a, b


@pytest.mark.parametrize("clock", ["virtual", "real"])
def test_aiohttp_server_and_client_across_a_router(clock):
    kernel, a, b = routed(clock)

    async def hello(request: web.Request) -> web.Response:
        body = await request.read()
        return web.json_response({"vnet": vimage.get_vnet().name, "peer": request.remote,
                                  "len": len(body)})

    async def serve() -> web.AppRunner:
        app = web.Application()
        app.router.add_post("/hello", hello)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "0.0.0.0", 8080).start()
        return runner

    async def client() -> tuple[int, dict]:
        async with ClientSession() as session, session.post(
                "http://api.example:8080/hello", data=b"x" * 100_000) as resp:
            return resp.status, await resp.json()

    async def main() -> tuple[int, dict]:
        runner = await vimage.spawn(b, serve())
        try:
            return await vimage.spawn(a, client())
        finally:
            await runner.cleanup()

    status, answer = vimage.run(main(), kernel=kernel)
    assert status == 200
    assert answer == {"vnet": "b", "peer": "10.0.1.1", "len": 100_000}
    # the request really crossed the router
    assert kernel.get("r").ip.stats.forward > 10


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello {self.client_address[0]} at {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_threads_use_the_vnet_inside_activate_only():
    kernel, a, b = routed("real")
    kernel.start()
    listening = threading.Event()
    try:
        def server() -> None:
            with b.activate():
                srv = socket.create_server(("0.0.0.0", 8000))
                listening.set()
                for _ in range(2):
                    conn, addr = srv.accept()
                    _Hello(conn, addr, None)
                    conn.close()
                srv.close()

        thread = threading.Thread(target=server)
        thread.start()
        assert listening.wait(5)
        with a.activate():
            assert socket.getaddrinfo("api.example", 8000, type=socket.SOCK_STREAM)[0][4] == \
                ("10.0.2.1", 8000)
            first = urllib.request.urlopen("http://api.example:8000/one", timeout=5).read()
            with socket.create_connection(("10.0.2.1", 8000), timeout=5) as conn:
                conn.sendall(b"GET /two HTTP/1.0\r\n\r\n")
                second = b"".join(iter(lambda: conn.recv(4096), b""))
        thread.join(5)
        assert first == b"hello 10.0.1.1 at /one"
        assert second.endswith(b"hello 10.0.1.1 at /two")
        # outside the block names and sockets are the host's own again
        a.hosts.remove("localhost")
        a.hosts.add("10.9.9.9", "localhost")
        with a.activate():
            assert socket.gethostbyname("localhost") == "10.9.9.9"
        assert socket.gethostbyname("localhost") == "127.0.0.1"
        plain = socket.socket()
        assert plain.fileno() < 1 << 20
        plain.close()
    finally:
        kernel.stop()
