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
from vimage.wire import WireError, ipv4, ipv6

if TYPE_CHECKING:
    from vimage.vnet import Vnet

AF_INET = _std.AddressFamily.AF_INET
AF_INET6 = _std.AddressFamily.AF_INET6
AddressFamily = _std.AddressFamily
_STREAM = _std.SocketKind.SOCK_STREAM
_DGRAM = _std.SocketKind.SOCK_DGRAM
_RAW = _std.SocketKind.SOCK_RAW
# What glibc returns for each socket type when the caller leaves type/proto at 0.
_KINDS: tuple[tuple[_std.SocketKind, int], ...] = (
    (_STREAM, _std.IPPROTO_TCP), (_DGRAM, _std.IPPROTO_UDP), (_RAW, 0))
_PROTO_NAME = types.MappingProxyType({_std.IPPROTO_TCP: "tcp", _std.IPPROTO_UDP: "udp"})


class HostsTable:
    """Names to IPv4 addresses (ints), in insertion order, like /etc/hosts; and names to
    IPv6 addresses (`add("2001:db8::1", name)`, `lookup6`), kept apart since both are
    ints. `localhost` is 127.0.0.1 only, as a container's /etc/hosts has it."""

    __slots__ = ("_by_name", "_by_name6", "vnet")

    def __init__(self, vnet: Vnet) -> None:
        self.vnet = vnet
        self._by_name: dict[str, list[int]] = {"localhost": [0x7F000001]}
        self._by_name6: dict[str, list[int]] = {}

    def add(self, address: str | int, *names: str) -> None:
        """Map every name in `names` to `address` (added after any address it has)."""
        table = self._by_name
        addr = address if isinstance(address, int) else _numeric(address)
        if addr is None and isinstance(address, str):
            addr, table = _numeric6(address), self._by_name6
        if addr is None:
            raise ValueError(f"bad address {address!r}: an IPv4 or IPv6 address is needed")
        if not names:
            raise ValueError("at least one name is needed")
        for name in names:
            check_hostname(name)
            addrs = table.setdefault(name.lower(), [])
            if addr not in addrs:
                addrs.append(addr)

    def remove(self, name: str) -> None:
        found = self._by_name.pop(name.lower(), None)
        found6 = self._by_name6.pop(name.lower(), None)
        if found is None and found6 is None:
            raise LookupError(f"{name}: no such host in the hosts table")

    def clear(self) -> None:
        self._by_name.clear()
        self._by_name6.clear()

    def lookup(self, name: str) -> list[int]:
        return list(self._by_name.get(name.rstrip(".").lower(), ()))

    def lookup6(self, name: str) -> list[int]:
        return list(self._by_name6.get(name.rstrip(".").lower(), ()))

    def names_for(self, addr: int) -> list[str]:
        return [n for n, addrs in self._by_name.items() if addr in addrs]

    def names_for6(self, addr: int) -> list[str]:
        return [n for n, addrs in self._by_name6.items() if addr in addrs]

    def entries6(self) -> list[tuple[int, list[str]]]:
        out: dict[int, list[str]] = {}
        for name, addrs in self._by_name6.items():
            for addr in addrs:
                out.setdefault(addr, []).append(name)
        return list(out.items())

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


def _numeric6(host: str) -> int | None:
    try:
        return ipv6.aton(host.partition("%")[0])
    except (WireError, ValueError, TypeError):
        return None


def _zone(vnet: Vnet, host: str) -> int:
    """The scope id a `%zone` suffix names (an interface name or a number)."""
    zone = host.partition("%")[2]
    if not zone:
        return 0
    if zone.isdigit():
        return int(zone)
    ifp = vnet.ifaces.get(zone)
    if ifp is None:
        raise _gaierror(_std.EAI_NONAME, "Name or service not known")
    return ifp.index


def resolve_host6(vnet: Vnet, host: Any, numeric_only: bool = False) -> list[tuple[int, int]]:
    """(IPv6 address, scope id) pairs for `host`: numeric (with a zone) or the table's."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("idna")
    if not isinstance(host, str):
        raise TypeError(f"str, bytes or None expected for the host, not {type(host).__name__}")
    addr = _numeric6(host)
    if addr is not None:
        return [(addr, _zone(vnet, host) if ipv6.needs_zone(addr) else 0)]
    if numeric_only or _numeric(host) is not None:
        raise _gaierror(_std.EAI_NONAME, "Name or service not known")
    return [(a, 0) for a in vnet.hosts.lookup6(host)]


def _usable6(vnet: Vnet, addr: int) -> bool:
    """RFC 6724 rule 1 as glibc applies it: has the vnet a source address for `addr`?"""
    try:
        vnet.ip6.select_source(addr) if not ipv6.needs_zone(addr) else None
    except OSError:
        return False
    return not ipv6.needs_zone(addr)


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


def _candidates(vnet: Vnet, host: Any, port: Any, family: int,
                flags: int) -> list[tuple[int, int, int]]:
    """(family, address, scope id) for getaddrinfo, in glibc's order for AF_UNSPEC:
    RFC 6724's rules 1 and 6 as glibc applies them (an IPv6 destination the vnet has a
    source for first, ::1 before 127.0.0.1; a passive wildcard IPv4 first)."""
    numeric = bool(flags & _std.AI_NUMERICHOST)
    if host is None:
        if port is None:
            raise _gaierror(_std.EAI_NONAME, "Name or service not known")
        passive = bool(flags & _std.AI_PASSIVE)
        v4 = [(AF_INET, 0 if passive else 0x7F000001, 0)]
        v6 = [(AF_INET6, 0 if passive else 1, 0)]
        if family == AF_INET:
            return v4
        if family == AF_INET6:
            return v6
        return v4 + v6 if passive else v6 + v4
    if isinstance(host, str) and family and (
            (family == AF_INET6 and _numeric(host) is not None)
            or (family == AF_INET and _numeric6(host) is not None)):
        raise _gaierror(_std.EAI_ADDRFAMILY, "Address family for hostname not supported")
    out4: list[tuple[int, int, int]] = []
    out6: list[tuple[int, int, int]] = []
    if family in (0, AF_INET):
        try:
            out4 = [(AF_INET, a, 0) for a in resolve_host(vnet, host, numeric)]
        except _std.gaierror:
            if family == AF_INET:
                raise
    if family in (0, AF_INET6) and (family == AF_INET6 or not out4 or _numeric(host) is None):
        try:
            out6 = [(AF_INET6, a, z) for a, z in resolve_host6(vnet, host, numeric)]
        except _std.gaierror:
            if family == AF_INET6 or not out4:
                raise
    if not out4 and not out6:
        raise _gaierror(_std.EAI_NONAME, "Name or service not known")
    if family == 0 and out6 and out4 and any(_usable6(vnet, a) for _, a, _ in out6):
        return out6 + out4
    return out4 + out6


def getaddrinfo(vnet: Vnet, host: Any, port: Any, family: int = 0, type: int = 0,
                proto: int = 0, flags: int = 0) -> list[tuple[Any, ...]]:
    """`socket.getaddrinfo` answered inside `vnet`: IPv4 and IPv6 (4-tuple socket
    addresses with the scope id) from numeric addresses and the hosts table."""
    if family not in (0, _std.AF_INET, _std.AF_INET6):
        raise _gaierror(_std.EAI_FAMILY, "ai_family not supported")
    found = _candidates(vnet, host, port, family, flags)
    kinds = [(k, p) for k, p in _KINDS
             if (not type or k == type) and (not proto or p == proto)]
    if type and not kinds:
        kinds = [(_std.SocketKind(type), proto)]
    canon = host if flags & _std.AI_CANONNAME and isinstance(host, str) else ""
    out: list[tuple[Any, ...]] = []
    for kind, kproto in kinds:
        number = _port(port, _PROTO_NAME.get(kproto or proto, "tcp"))
        for fam, addr, zone in found:
            sockaddr: tuple[Any, ...] = (ipv4.ntoa(addr), number) if fam == AF_INET \
                else (ipv6.ntoa(addr), number, 0, zone)
            out.append((AddressFamily(fam), kind, kproto, canon, sockaddr))
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


def getnameinfo(vnet: Vnet, sockaddr: tuple[Any, ...], flags: int = 0) -> tuple[str, str]:
    host, port = sockaddr[0], sockaddr[1]
    if len(sockaddr) == 4 or (isinstance(host, str) and ":" in host):
        addr6 = resolve_host6(vnet, host, numeric_only=True)[0][0]
        names = [] if flags & _std.NI_NUMERICHOST else vnet.hosts.names_for6(addr6)
        if not names and flags & _std.NI_NAMEREQD:
            raise _gaierror(_std.EAI_NONAME, "Name or service not known")
        return (names[0] if names else ipv6.ntoa(addr6)), _service(port, flags)
    addr = resolve_host(vnet, host, numeric_only=True)[0]
    names = [] if flags & _std.NI_NUMERICHOST else vnet.hosts.names_for(addr)
    if not names and flags & _std.NI_NAMEREQD:
        raise _gaierror(_std.EAI_NONAME, "Name or service not known")
    return (names[0] if names else ipv4.ntoa(addr)), _service(port, flags)


def _service(port: int, flags: int) -> str:
    service = str(port)
    if not flags & _std.NI_NUMERICSERV:
        with contextlib.suppress(OSError):
            service = _std.getservbyport(port, "udp" if flags & _std.NI_DGRAM else "tcp")
    return service


def vnet_attach(vnet: Vnet) -> None:
    vnet.hosts = HostsTable(vnet)


def vnet_detach(vnet: Vnet) -> None:
    vnet.hosts.clear()


PROTOCOL = Protocol("netdb", 70, "hosts", vnet_attach, vnet_detach)
