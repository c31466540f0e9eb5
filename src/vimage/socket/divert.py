"""Divert sockets: `socket(AF_INET, SOCK_RAW, IPPROTO_DIVERT)` (FreeBSD divert(4)).

The kernel side is `vimage.netinet.ip_divert`. A divert socket is bound to a port (the
address part of bind() is ignored), reads whole IPv4 datagrams with `recvfrom`, whose
address is (interface address or 0.0.0.0, rule number), and writes them back with
`sendto(pkt, (addr, rule))`. The stdlib's AF_INET address has no room for sin_zero, so
the interface name FreeBSD carries there is read with `recvfrom_if` and given back
with `sendto_if`.
"""

from __future__ import annotations

import errno
from collections import deque
from socket import AF_INET, MSG_PEEK, SOCK_RAW
from typing import Any

from vimage.netinet.ip_divert import IPPROTO_DIVERT
from vimage.socket.socket import Socket, parse_sockaddr
from vimage.wire import ipv4


class DivertSocket(Socket):
    __slots__ = ("_ifnames", "_last_ifname")

    def __init__(self, vnet: Any, family: int = AF_INET, type: int = SOCK_RAW,
                 proto: int = IPPROTO_DIVERT) -> None:
        if proto != IPPROTO_DIVERT or type & 0xF != SOCK_RAW:
            raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
        super().__init__(vnet, family, type, 0)  # the common fields of a raw socket
        vnet.raw.sockets.discard(self)  # ... which raw IP input must not see
        self.proto = IPPROTO_DIVERT
        self.hdrincl = True
        self.rcvbuf, self.sndbuf = vnet.divert.recvspace, vnet.divert.sendspace
        self._ifnames: deque[str] = deque()
        self._last_ifname = ""

    # -- kernel side --------------------------------------------------------------------------
    def divert_enqueue(self, pkt: bytes, addr: int, rule: int, ifname: str) -> bool:
        if not self.enqueue(pkt, addr, rule):
            return False
        self._ifnames.append(ifname)
        return True

    # -- socket API -------------------------------------------------------------------------
    def bind(self, address: tuple[str, int]) -> None:
        with self._lock:
            self._check_open()
            _, port = parse_sockaddr(address)
            if self.lport:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.lport = self.vnet.divert.bind(self, port)

    def connect(self, address: tuple[str, int]) -> None:
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")  # pru_connect_notsupp

    def send(self, data: bytes, flags: int = 0) -> int:
        return self.sendto_if(data, ("0.0.0.0", 0), None)

    def sendto(self, data: bytes, flags_or_address: Any, address: Any = None) -> int:
        return self.sendto_if(data, flags_or_address if address is None else address, None)

    def sendto_if(self, data: bytes, address: tuple[str, int], ifname: str | None) -> int:
        """sendto with FreeBSD's sin_zero interface name (`recvfrom_if` gave it)."""
        with self._lock:
            self._check_open()
            addr, rule = parse_sockaddr(address)
            data = bytes(data)
            if len(data) > self.sndbuf:
                raise OSError(errno.EMSGSIZE, "Message too long")
            self.vnet.divert.output(data, addr, rule, ifname or None)
            self._lock.notify_all()
            return len(data)

    def _recv(self, bufsize: int, flags: int) -> tuple[bytes, int, int]:
        with self._lock:
            data, src, rule = super()._recv(bufsize, flags)
            names = self._ifnames
            self._last_ifname = (names[0] if flags & MSG_PEEK else names.popleft()) \
                if names else ""
            return data, src, rule

    def recvfrom_if(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple[str, int], str]:
        """recvfrom, plus the receiving interface's name ("" for an outgoing packet)."""
        with self._lock:
            data, src, rule = self._recv(bufsize, flags)
            return data, (ipv4.ntoa(src), rule), self._last_ifname

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self.closed:
            self.vnet.divert.unbind(self)
            self._ifnames.clear()

    def __repr__(self) -> str:
        state = " [closed]" if self.closed else ""
        return f"<vimage.DivertSocket{state} vnet={self.vnet.display_name} port={self.lport}>"
