"""asyncio on the vimage loop over IPv6: streams, a dual-stack server, datagrams."""

from __future__ import annotations

import asyncio
import socket

import vimage
from vimage import Kernel


def two_hosts() -> tuple[Kernel, object, object]:
    kernel = Kernel(clock="virtual", seed=7)
    a, b = kernel.create("a"), kernel.create("b")
    ea, eb = kernel.epair()
    ea.move_to(a)
    eb.move_to(b)
    for ifp, v4, v6 in ((ea, "10.0.0.1/24", "2001:db8::1/64"),
                        (eb, "10.0.0.2/24", "2001:db8::2/64")):
        ifp.add_addr(v4)
        ifp.add_addr(v6, family=socket.AF_INET6)
        ifp.set_up(True)
    kernel.run(2)  # DAD
    return kernel, a, b


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_streams_over_ipv6_and_a_server_on_both_families() -> None:
    kernel, a, b = two_hosts()

    async def main() -> list[tuple[object, ...]]:
        server = await vimage.spawn(b, asyncio.start_server(_echo, None, 7))
        names = sorted(s.getsockname()[:2] for s in server.sockets)
        peers = []
        with a.activate():
            for host in ("2001:db8::2", "10.0.0.2"):
                reader, writer = await asyncio.open_connection(host, 7)
                peers.append(writer.get_extra_info("peername"))
                writer.write(b"hello " + host.encode())
                assert await reader.readexactly(6 + len(host)) == b"hello " + host.encode()
                writer.close()
                await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return [names, *peers]

    names, peer6, peer4 = vimage.run(main(), kernel=kernel)
    assert names == [("0.0.0.0", 7), ("::", 7)]  # host None: both families, as glibc
    assert peer6 == ("2001:db8::2", 7, 0, 0)
    assert peer4 == ("10.0.0.2", 7)


def test_datagram_endpoint_over_ipv6() -> None:
    kernel, a, b = two_hosts()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
            self.transport.sendto(data.upper(), addr)  # type: ignore[attr-defined]

    async def main() -> tuple[bytes, tuple[object, ...]]:
        loop = asyncio.get_running_loop()
        with b.activate():
            srv, _ = await loop.create_datagram_endpoint(Echo, local_addr=("::", 9000))
        with a.activate():
            got: asyncio.Future[tuple[bytes, tuple[object, ...]]] = loop.create_future()

            class Client(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[object, ...]) -> None:
                    got.set_result((data, addr))

            cli, _ = await loop.create_datagram_endpoint(
                Client, remote_addr=("2001:db8::2", 9000))
            cli.sendto(b"shout")
            result = await asyncio.wait_for(got, 5)
        cli.close()
        srv.close()
        return result

    data, addr = vimage.run(main(), kernel=kernel)
    assert data == b"SHOUT" and addr == ("2001:db8::2", 9000, 0, 0)
