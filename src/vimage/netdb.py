"""Name resolution inside a vnet: its own hosts table and a stdlib-compatible resolver.

Each vnet has a hosts table (FreeBSD's /etc/hosts of a vnet jail), managed with the
`hosts` tool or `vnet.hosts`. `getaddrinfo` and friends answer from numeric addresses
and that table only: nothing reaches the host's resolver or network, so a program in a
vnet sees exactly the names its topology gives it.
"""

from __future__ import annotations

import contextlib
import socket as _std
import types
from typing import TYPE_CHECKING, Any

from vimage.protosw import Protocol
from vimage.wire import WireError, ipv4

if TYPE_CHECKING:
    from vimage.vnet import Vnet

AF_INET = _std.AddressFamily.AF_INET
_STREAM = _std.SocketKind.SOCK_STREAM
_DGRAM = _std.SocketKind.SOCK_DGRAM
_RAW = _std.SocketKind.SOCK_RAW
# What glibc returns for each socket type when the caller leaves type/proto at 0.
_KINDS: tuple[tuple[_std.SocketKind, int], ...] = (
    (_STREAM, _std.IPPROTO_TCP), (_DGRAM, _std.IPPROTO_UDP), (_RAW, 0))
_PROTO_NAME = types.MappingProxyType({_std.IPPROTO_TCP: "tcp", _std.IPPROTO_UDP: "udp"})


class HostsTable:
    """Names to IPv4 addresses (ints), in insertion order, like /etc/hosts."""

    __slots__ = ("_by_name", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self._by_name: dict[str, list[int]] = {"localhost": [0x7F000001]}

    def add(self, address: str | int, *names: str) -> None:
        """Map every name in `names` to `address` (added after any address it has)."""
        addr = address if isinstance(address, int) else _numeric(address)
        if addr is None:
            raise ValueError(f"bad address {address!r}: an IPv4 address is needed")
        if not names:
            raise ValueError("at least one name is needed")
        for name in names:
            check_hostname(name)
            addrs = self._by_name.setdefault(name.lower(), [])
            if addr not in addrs:
                addrs.append(addr)

    def remove(self, name: str) -> None:
        try:
            del self._by_name[name.lower()]
        except KeyError:
            raise LookupError(f"{name}: no such host in the hosts table") from None

    def clear(self) -> None:
        self._by_name.clear()

    def lookup(self, name: str) -> list[int]:
        return list(self._by_name.get(name.rstrip(".").lower(), ()))

    def names_for(self, addr: int) -> list[str]:
        return [n for n, addrs in self._by_name.items() if addr in addrs]

    def entries(self) -> list[tuple[int, list[str]]]:
        """(address, names) pairs in /etc/hosts order: first appearance of each address."""
        out: dict[int, list[str]] = {}
        for name, addrs in self._by_name.items():
            for addr in addrs:
                out.setdefault(addr, []).append(name)
        return list(out.items())


def check_hostname(name: str) -> None:
    labels = name.rstrip(".").split(".") if isinstance(name, str) else []
    if not labels or len(name) > 253 or not all(
            0 < len(lb) <= 63 and lb.replace("-", "").replace("_", "").isalnum()
            and lb.isascii() and not lb.startswith("-") for lb in labels):
        raise ValueError(f"bad host name {name!r}")


def _numeric(host: str) -> int | None:
    try:
        return ipv4.aton(host)
    except (WireError, ValueError, TypeError):
        return None


def _gaierror(code: int, text: str) -> _std.gaierror:
    return _std.gaierror(code, text)


def resolve_host(vnet: Vnet, host: Any, numeric_only: bool = False) -> list[int]:
    """IPv4 addresses for `host`: a numeric address, or a name in the vnet's hosts table."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("idna")
    if not isinstance(host, str):
        raise TypeError(f"str, bytes or None expected for the host, not {type(host).__name__}")
    addr = _numeric(host)
    if addr is not None:
        return [addr]
    if host == "<broadcast>":
        return [0xFFFFFFFF]
    if numeric_only:
        raise _gaierror(_std.EAI_NONAME, "Name or service not known")
    addrs = vnet.hosts.lookup(host)
    if not addrs:
        raise _gaierror(_std.EAI_NONAME, "Name or service not known")
    return addrs


def _port(port: Any, proto_name: str) -> int:
    if port is None:
        return 0
    if isinstance(port, bytes):
        port = port.decode()
    if isinstance(port, int):
        if not 0 <= port <= 65535:
            raise OverflowError("getaddrinfo(): port must be 0-65535.")
        return port
    if isinstance(port, str):
        if port.isdigit():
            return int(port)
        try:
            return _std.getservbyname(port, proto_name)  # /etc/services: a file, no network
        except OSError:
            raise _gaierror(_std.EAI_SERVICE, "Servname not supported for ai_socktype") from None
    raise OSError("Int or String expected")


def getaddrinfo(vnet: Vnet, host: Any, port: Any, family: int = 0, type: int = 0,
                proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
    """`socket.getaddrinfo` answered inside `vnet` (IPv4 only)."""
    if family not in (0, _std.AF_INET):
        raise _gaierror(_std.EAI_FAMILY, "ai_family not supported")
    if host is None:
        if port is None:
            raise _gaierror(_std.EAI_NONAME, "Name or service not known")
        addrs = [0 if flags & _std.AI_PASSIVE else 0x7F000001]
    else:
        addrs = resolve_host(vnet, host, numeric_only=bool(flags & _std.AI_NUMERICHOST))
    kinds = [(k, p) for k, p in _KINDS
             if (not type or k == type) and (not proto or p == proto)]
    if type and not kinds:
        kinds = [(_std.SocketKind(type), proto)]
    canon = host if flags & _std.AI_CANONNAME and isinstance(host, str) else ""
    out = []
    for kind, kproto in kinds:
        number = _port(port, _PROTO_NAME.get(kproto or proto, "tcp"))
        for addr in addrs:
            out.append((AF_INET, kind, kproto, canon, (ipv4.ntoa(addr), number)))
            canon = ""
    return out


def gethostbyname(vnet: Vnet, host: str) -> str:
    return ipv4.ntoa(resolve_host(vnet, host)[0])


def gethostbyname_ex(vnet: Vnet, host: str) -> tuple[str, list[str], list[str]]:
    addrs = resolve_host(vnet, host)
    return host, [], [ipv4.ntoa(a) for a in addrs]


def gethostbyaddr(vnet: Vnet, address: str) -> tuple[str, list[str], list[str]]:
    addr = resolve_host(vnet, address)[0]
    names = vnet.hosts.names_for(addr)
    if not names:
        raise _std.herror(1, "Unknown host")
    return names[0], names[1:], [ipv4.ntoa(addr)]


def getnameinfo(vnet: Vnet, sockaddr: tuple[str, int], flags: int = 0) -> tuple[str, str]:
    host, port = sockaddr[0], sockaddr[1]
    addr = resolve_host(vnet, host, numeric_only=True)[0]
    names = [] if flags & _std.NI_NUMERICHOST else vnet.hosts.names_for(addr)
    if not names and flags & _std.NI_NAMEREQD:
        raise _gaierror(_std.EAI_NONAME, "Name or service not known")
    service = str(port)
    if not flags & _std.NI_NUMERICSERV:
        with contextlib.suppress(OSError):
            service = _std.getservbyport(port, "udp" if flags & _std.NI_DGRAM else "tcp")
    return (names[0] if names else ipv4.ntoa(addr)), service


def vnet_attach(vnet: Vnet) -> None:
    vnet.hosts = HostsTable(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.hosts.clear()


PROTOCOL = Protocol("netdb", 70, "hosts", vnet_attach, vnet_detach)
