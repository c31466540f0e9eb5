"""asyncio on the vimage loop: streams, datagrams, sock_* calls, names, vnets of tasks, time."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

import vimage
from vimage import Kernel, topo
from vimage.aio import VimageEventLoop


def two_hosts(clock: str = "virtual", delay: str | None = None) -> tuple[Kernel, object, object]:
    kernel = Kernel(clock=clock, seed=7)
    a, b = kernel.create("a"), kernel.create("b")
    ifa, ifb = topo.connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    if delay:
        a.cmd(f"vlink {ifa.name} delay {delay}")
        b.cmd(f"vlink {ifb.name} delay {delay}")
    return kernel, a, b


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_stream_echo_between_vnets_with_exact_virtual_delay():
    kernel, a, b = two_hosts(delay="10ms")
    payload = bytes(range(256)) * 2000  # 512 KB

    async def main() -> tuple[bytes, float, tuple[str, int]]:
        server = await vimage.spawn(b, asyncio.start_server(_echo, "0.0.0.0", 7))
        loop = asyncio.get_running_loop()
        with a.activate():
            t0 = loop.time()
            reader, writer = await asyncio.open_connection("10.0.0.2", 7)
            handshake = loop.time() - t0
            peer = writer.get_extra_info("peername")
            writer.write(payload)
            writer.write_eof()
            got = await reader.read()
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return got, handshake, peer

    got, handshake, peer = vimage.run(main(), kernel=kernel)
    assert got == payload
    assert peer == ("10.0.0.2", 7)
    # SYN out and SYN-ACK back: exactly one round trip of two 10 ms links (and ARP first)
    assert handshake == pytest.approx(0.040, abs=1e-6)


def test_virtual_sleep_takes_no_wall_time_and_is_exact():
    kernel, a, b = two_hosts()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await asyncio.sleep(3600)
        await asyncio.wait_for(asyncio.sleep(1.5), timeout=10)
        return loop.time() - t0

    wall = time.perf_counter()
    assert vimage.run(main(), kernel=kernel) == pytest.approx(3601.5)
    assert time.perf_counter() - wall < 2
    assert kernel.now == pytest.approx(3601.5)


def test_datagram_endpoint_echo_and_port_unreachable():
    kernel, a, b = two_hosts()

    class Echo(asyncio.DatagramProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.transport.sendto(data.upper(), addr)

    class Client(asyncio.DatagramProtocol):
        def __init__(self) -> None:
            self.got: asyncio.Queue[bytes] = asyncio.Queue()
            self.errors: list[OSError] = []

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            self.got.put_nowait(data)

        def error_received(self, exc: OSError) -> None:
            self.errors.append(exc)

    async def main() -> tuple[bytes, list[OSError]]:
        loop = asyncio.get_running_loop()
        with b.activate():
            server, _ = await loop.create_datagram_endpoint(Echo, local_addr=("0.0.0.0", 53))
        with a.activate():
            tr, proto = await loop.create_datagram_endpoint(Client, remote_addr=("10.0.0.2", 53))
            tr.sendto(b"query")
            answer = await asyncio.wait_for(proto.got.get(), 1)
            tr2, proto2 = await loop.create_datagram_endpoint(Client,
                                                              remote_addr=("10.0.0.2", 54))
            tr2.sendto(b"nobody")
            await asyncio.sleep(0.1)
            tr2.sendto(b"again")  # a connected UDP socket reports the ICMP error
            await asyncio.sleep(0.1)
        server.close()
        tr.close()
        tr2.close()
        return answer, proto2.errors

    answer, errors = vimage.run(main(), kernel=kernel)
    assert answer == b"QUERY"
    assert errors and isinstance(errors[0], ConnectionRefusedError)


def test_sock_calls_on_vimage_sockets():
    kernel, a, b = two_hosts()

    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        with b.activate():
            lsock = socket.socket()
            lsock.bind(("0.0.0.0", 9000))
            lsock.listen()
            lsock.setblocking(False)

        async def serve() -> None:
            conn, _ = await loop.sock_accept(lsock)
            data = await loop.sock_recv(conn, 100)
            await loop.sock_sendall(conn, data[::-1])
            conn.close()

        task = vimage.spawn(b, serve())
        with a.activate():
            csock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            csock.setblocking(False)
            await loop.sock_connect(csock, ("10.0.0.2", 9000))
            await loop.sock_sendall(csock, b"abcdef")
            reply = await loop.sock_recv(csock, 100)
            csock.close()
        await task
        lsock.close()
        return reply

    assert vimage.run(main(), kernel=kernel) == b"fedcba"


def test_connection_refused_and_connect_timeout_in_virtual_time():
    kernel, a, b = two_hosts()

    async def main() -> tuple[type, float]:
        loop = asyncio.get_running_loop()
        with a.activate():
            try:
                await asyncio.open_connection("10.0.0.2", 1)
            except OSError as exc:
                refused = type(exc)
            b.sysctl("net.inet.tcp.blackhole", 1)  # b now drops SYNs to closed ports
            t0 = loop.time()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(asyncio.open_connection("10.0.0.2", 1), 5)
            return refused, loop.time() - t0

    refused, waited = vimage.run(main(), kernel=kernel)
    assert refused is ConnectionRefusedError
    assert waited == pytest.approx(5.0)


def test_names_come_from_the_vnet_hosts_table_only():
    kernel, a, b = two_hosts()
    a.hosts.add("10.0.0.2", "db.internal", "db")

    async def main() -> tuple[list, str, type]:
        loop = asyncio.get_running_loop()
        with a.activate():
            infos = await loop.getaddrinfo("db", 5432, type=socket.SOCK_STREAM)
            name = (await loop.getnameinfo(("10.0.0.2", 5432)))[0]
            by_socket = socket.gethostbyname("db.internal")
        with b.activate():  # b's table does not know the name
            try:
                await loop.getaddrinfo("db", 5432)
            except socket.gaierror as exc:
                err = type(exc)
        assert by_socket == "10.0.0.2"
        return infos, name, err

    infos, name, err = vimage.run(main(), kernel=kernel)
    assert infos == [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.2", 5432))]
    assert name == "db.internal"
    assert err is socket.gaierror
    # outside every vnet the host's resolver is back
    assert socket.getaddrinfo("127.0.0.1", 80, type=socket.SOCK_STREAM)[0][4] == ("127.0.0.1", 80)


def test_tasks_inherit_their_vnet():
    kernel, a, b = two_hosts()

    async def where() -> str:
        await asyncio.sleep(0)
        return vimage.get_vnet().display_name

    async def parent() -> list[str]:
        child = asyncio.create_task(where())  # inherits b
        with a.activate():
            inner = asyncio.create_task(where())  # started inside a
        return [await where(), await child, await inner]

    async def main() -> tuple[str, list[str]]:
        return await where(), await vimage.spawn(b, parent())

    assert vimage.run(main(), kernel=kernel) == ("vnet0", ["b", "b", "a"])
    assert vimage.get_vnet() is None


def test_three_hundred_vnets_share_one_loop():
    kernel = Kernel(clock="virtual", seed=3)
    server = kernel.create("srv")
    sw_ifs = []
    clients = []
    for i in range(300):
        c = kernel.create(f"c{i}")
        net = f"10.{i // 250}.{i % 250}"
        topo.connect(c, f"{net}.1/30", server, f"{net}.2/30")
        clients.append((c, f"{net}.2"))
    del sw_ifs

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        name = await reader.readline()
        writer.write(b"hello " + name)
        await writer.drain()
        writer.close()

    async def client(addr: str) -> bytes:
        reader, writer = await asyncio.open_connection(addr, 80)
        writer.write(vimage.get_vnet().name.encode() + b"\n")
        reply = await reader.readline()
        writer.close()
        return reply

    async def main() -> list[bytes]:
        srv = await vimage.spawn(server, asyncio.start_server(handle, "0.0.0.0", 80,
                                                               backlog=400))
        replies = await asyncio.gather(*(vimage.spawn(c, client(addr)) for c, addr in clients))
        srv.close()
        return replies

    replies = vimage.run(main(), kernel=kernel)
    assert replies == [f"hello c{i}\n".encode() for i in range(300)]


def test_waiting_for_what_cannot_happen_is_an_error_in_virtual_time():
    kernel, a, b = two_hosts()

    async def main() -> None:
        await asyncio.get_running_loop().create_future()  # nobody will ever set it

    with pytest.raises(RuntimeError, match="would block forever"):
        vimage.run(main(), kernel=kernel)


def test_real_descriptors_are_refused_in_virtual_time():
    kernel, a, b = two_hosts()
    rsock, wsock = socket.socketpair()

    async def main() -> None:
        asyncio.get_running_loop().add_reader(rsock.fileno(), lambda: None)

    with pytest.raises(RuntimeError, match=r"real file descriptor .* virtual time"):
        vimage.run(main(), kernel=kernel)
    rsock.close()
    wsock.close()


def test_executor_work_takes_no_virtual_time():
    kernel, a, b = two_hosts()

    async def main() -> tuple[int, float]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        result = await asyncio.to_thread(sum, range(100000))
        return result, loop.time() - t0

    assert vimage.run(main(), kernel=kernel) == (sum(range(100000)), 0.0)


def test_real_clock_loop_with_delayed_link():
    kernel, a, b = two_hosts(clock="real", delay="20ms")

    async def main() -> tuple[bytes, float]:
        server = await vimage.spawn(b, asyncio.start_server(_echo, "0.0.0.0", 7))
        with a.activate():
            reader, writer = await asyncio.open_connection("10.0.0.2", 7)
            t0 = time.monotonic()
            writer.write(b"ping")
            data = await reader.readexactly(4)
            rtt = time.monotonic() - t0
            writer.close()
        server.close()
        return data, rtt

    data, rtt = vimage.run(main(), kernel=kernel)
    assert data == b"ping"
    assert 0.040 <= rtt < 1.0  # two 20 ms links, there and back


def test_one_loop_per_kernel():
    kernel, a, b = two_hosts()
    loop = VimageEventLoop(kernel)
    try:
        with pytest.raises(RuntimeError, match="already has an event loop"):
            VimageEventLoop(kernel)
    finally:
        loop.close()
    VimageEventLoop(kernel).close()  # closing gives the kernel back


def test_run_needs_a_kernel():
    coro = asyncio.sleep(0)
    with pytest.raises(TypeError, match="kernel= or vnet="):
        vimage.run(coro)
    coro.close()


def test_crash_kills_the_vnets_tasks_and_restart_brings_services_back():
    from vimage.fault import Faults

    kernel, a, b = two_hosts()
    starts: list[float] = []

    async def daemon() -> None:
        starts.append(asyncio.get_running_loop().time())
        server = await asyncio.start_server(_echo, "0.0.0.0", 7)
        async with server:
            await server.serve_forever()

    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection("10.0.0.2", 7)
        writer.write(b"x")
        data = await reader.readexactly(1)
        writer.close()
        return data

    async def main() -> tuple[bytes, type, bytes, bool]:
        faults = Faults.of(kernel)
        vimage.service(b, daemon)
        stray = vimage.spawn(b, asyncio.sleep(1000))  # any process of b dies in the crash
        await asyncio.sleep(0.001)  # the daemon starts listening
        first = await vimage.spawn(a, ask())
        faults.crash(b, at=10)
        faults.restart(b, at=20)
        await asyncio.sleep(15)
        try:
            await asyncio.wait_for(vimage.spawn(a, ask()), 2)
        except (OSError, TimeoutError) as exc:
            down = type(exc)
        await asyncio.sleep(10)
        return first, down, await vimage.spawn(a, ask()), stray.cancelled()

    first, down, again, stray_cancelled = vimage.run(main(), kernel=kernel)
    assert (first, again) == (b"x", b"x")
    assert down is TimeoutError  # a crashed host answers nothing
    assert stray_cancelled
    assert starts == [0.0, 20.0]


def test_real_descriptors_are_watched_in_real_time():
    """A real socket on a real-clock loop: its data wakes the loop, and the selector counts
    it among the real descriptors it polls only while it is registered."""
    kernel, a, b = two_hosts(clock="real")
    rsock, wsock = socket.socketpair()

    async def main() -> tuple[bytes, int, int]:
        loop = asyncio.get_running_loop()
        selector = loop._kselector  # type: ignore[attr-defined]
        got = loop.create_future()
        loop.add_reader(rsock.fileno(), lambda: got.done() or got.set_result(rsock.recv(10)))
        registered = selector._nreal
        loop.call_later(0.02, wsock.send, b"ping")
        data = await asyncio.wait_for(got, 5)
        loop.remove_reader(rsock.fileno())
        return data, registered, selector._nreal

    try:
        assert vimage.run(main(), kernel=kernel) == (b"ping", 1, 0)
    finally:
        rsock.close()
        wsock.close()


def _traced_run(lean: bool) -> list[tuple[float, str]]:
    """A busy program (streams, sleeps, call_soon, cancelled timers) on a loop with or
    without the lean iteration; returns (loop time, event) in order."""
    kernel = Kernel(clock="virtual", seed=5)
    a, b = kernel.create("a"), kernel.create("b")
    topo.connect(a, "10.0.0.1/24", b, "10.0.0.2/24")
    log: list[tuple[float, str]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        assert isinstance(loop, VimageEventLoop)
        loop._lean = lean
        note = lambda what: log.append((loop.time(), what))  # noqa: E731
        server = await vimage.spawn(b, asyncio.start_server(_echo, "0.0.0.0", 7))

        async def talker(i: int) -> None:
            with a.activate():
                reader, writer = await asyncio.open_connection("10.0.0.2", 7)
            for k in range(5):
                await asyncio.sleep(0.003 * i + 0.001 * k)
                writer.write(b"%d.%d\n" % (i, k))
                note(f"sent {i}.{k}")
                note(f"got {(await reader.readline())!r}")
                loop.call_soon(note, f"soon {i}.{k}")
                loop.call_later(0.5, note, "never").cancel()
            writer.close()

        await asyncio.gather(*(talker(i) for i in range(4)))
        server.close()
        await server.wait_closed()

    vimage.run(main(), kernel=kernel)
    stats = b.tcp.stats
    log.append((0.0, repr([getattr(stats, name) for name in stats.names])))
    return log


def test_the_lean_loop_iteration_runs_what_asyncio_would_in_the_same_order():
    lean, plain = _traced_run(True), _traced_run(False)
    assert len(lean) == 4 * 5 * 3 + 1
    assert lean == plain
