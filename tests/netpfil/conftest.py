"""Scenarios for the packet filter tests: host a - router r - host b, and helpers that
send real traffic through it in virtual time."""

from __future__ import annotations

import contextlib
import errno
import socket as _socket
from dataclasses import dataclass

import pytest

from vimage.kernel import Kernel
from vimage.topo import router_chain
from vimage.vnet import Vnet
from vimage.wire import icmp as wicmp

A, RA, RB, B = "10.0.0.1", "10.0.0.2", "10.0.1.1", "10.0.1.2"


@dataclass
class Trio:
    k: Kernel
    a: Vnet
    r: Vnet
    b: Vnet

    def fw(self, vnet: Vnet, *lines: str) -> None:
        for line in lines:
            res = vnet.cmd(f"ipfw -q {line}")
            assert res.ok, res.output

    def ping(self, src: Vnet, dst: str, size: int = 8, seq: int = 1) -> bool:
        """One echo from `src` to `dst`: True if the reply comes back within 2 s."""
        s = src.socket(2, 3, 1)
        try:
            s.settimeout(2)
            s.sendto(wicmp.build_echo(wicmp.ECHO, 0x77, seq, b"p" * size), (dst, 0))
            while True:
                try:
                    reply = s.recv(65535)
                except TimeoutError:
                    return False
                hlen = (reply[0] & 0x0F) << 2
                if reply[hlen] == wicmp.ECHO_REPLY:
                    return True
        finally:
            s.close()

    def icmp_error(self, src: Vnet, dst: str) -> tuple[int, int] | None:
        """Ping `dst`: the (type, code) of an ICMP error that comes back, or None."""
        s = src.socket(2, 3, 1)
        try:
            s.settimeout(2)
            s.sendto(wicmp.build_echo(wicmp.ECHO, 0x78, 1, b"x"), (dst, 0))
            try:
                reply = s.recv(65535)
            except TimeoutError:
                return None
            hlen = (reply[0] & 0x0F) << 2
            return reply[hlen], reply[hlen + 1]
        finally:
            s.close()

    def udp(self, src: Vnet, dst: Vnet, addr: str, port: int = 7000, sport: int = 0,
            timeout: float = 1.0) -> bool:
        rx = dst.socket(2, 2)
        tx = src.socket(2, 2)
        try:
            rx.bind(("", port))
            rx.settimeout(timeout)
            if sport:
                tx.bind(("", sport))
            tx.sendto(b"data", (addr, port))
            try:
                return rx.recv(100) == b"data"
            except TimeoutError:
                return False
        finally:
            rx.close()
            tx.close()

    def tcp(self, src: Vnet, dst: Vnet, addr: str, port: int = 80,
            seconds: float = 3.0) -> str:
        """Open a TCP connection: "ok", "refused", "unreach" or "timeout"."""
        srv = dst.socket(2, 1)
        srv.bind(("", port))
        srv.listen(4)
        cli = src.socket(2, 1)
        cli.setblocking(False)
        try:
            with contextlib.suppress(BlockingIOError):
                cli.connect((addr, port))
            self.k.run(seconds)
            err = cli.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if cli.tcb is not None and cli.tcb.state_name == "ESTABLISHED":
                return "ok"
            if err == errno.ECONNREFUSED:
                return "refused"
            if err in (errno.EHOSTUNREACH, errno.ENETUNREACH) or (
                    cli.tcb is not None and cli.tcb.softerror == errno.EHOSTUNREACH):
                return "unreach"
            return "timeout"
        finally:
            cli.close()
            srv.close()


@pytest.fixture
def trio() -> Trio:
    k = Kernel(clock="virtual", seed=1)
    a, r, b = router_chain(k, 1, name="t")
    return Trio(k, a, r, b)
