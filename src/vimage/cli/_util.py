"""Parsing and formatting helpers shared by the userland tools.

Every parser raises `UsageError` or `ToolError` with a one-line message that
names the offending word, so a tool can let it propagate.
"""

from __future__ import annotations

import getopt
from typing import TYPE_CHECKING

from vimage.cli import ToolError, UsageError, getopt_message
from vimage.net.route import MASKS
from vimage.wire import WireError, ipv4
from vimage.wire.ethernet import mac_aton

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet
    from vimage.vnet import Vnet

HOST_NAMES: tuple[tuple[str, int], ...] = (("localhost", ipv4.INADDR_LOOPBACK),)


def getopts(argv: list[str], spec: str) -> tuple[list[tuple[str, str]], list[str]]:
    """POSIX getopt (stops at the first operand); a bad option is a UsageError
    worded as FreeBSD's getopt(3) words it, followed by the tool's usage."""
    try:
        return getopt.getopt(argv, spec)
    except getopt.GetoptError as exc:
        raise UsageError(getopt_message(exc), synopsis=True) from None


def parse_addr(text: str, what: str = "address") -> int:
    """A dotted quad (or `localhost`) as an int; ToolError `bad address: X` otherwise."""
    for name, value in HOST_NAMES:
        if text == name:
            return value
    try:
        return ipv4.aton(text)
    except WireError:
        raise ToolError(f"bad {what}: {text}") from None


def try_addr(text: str) -> int | None:
    """A dotted quad as an int, or None if `text` is not one."""
    try:
        return ipv4.aton(text)
    except WireError:
        return None


def parse_plen(text: str) -> int:
    """A prefix length 0..32."""
    if not text.isdigit() or int(text) > 32:
        raise ToolError(f"bad mask length: {text}")
    return int(text)


def parse_netmask(text: str) -> int:
    """A netmask as dotted quad or hex (`0xffffff00`); returns the prefix length."""
    if text.lower().startswith("0x"):
        try:
            mask = int(text, 16)
        except ValueError:
            raise ToolError(f"bad netmask: {text}") from None
        if not 0 <= mask <= 0xFFFFFFFF:
            raise ToolError(f"bad netmask: {text}")
    else:
        mask = try_addr(text)
        if mask is None:
            if text.isdigit() and int(text) <= 32:  # a bare prefix length
                return int(text)
            raise ToolError(f"bad netmask: {text}")
    try:
        return ipv4.mask_to_prefix(mask)
    except WireError:
        raise ToolError(f"non-contiguous netmask: {text}") from None


def classful_plen(addr: int) -> int:
    """The historical class A/B/C prefix length of `addr` (FreeBSD's default netmask)."""
    if addr >> 31 == 0:
        return 8
    if addr >> 30 == 0b10:
        return 16
    if addr >> 29 == 0b110:
        return 24
    return 32


def mask_hex(plen: int) -> str:
    """Netmask as ifconfig prints it: 0xffffff00."""
    return f"0x{MASKS[plen]:08x}"


def parse_mac(text: str) -> bytes:
    try:
        return mac_aton(text)
    except WireError:
        raise ToolError(f"invalid Ethernet address '{text}'") from None


def find_iface(vnet: Vnet, name: str) -> Ifnet:
    """An interface of `vnet` by name; ToolError `interface X does not exist` otherwise."""
    ifp = vnet.ifaces.get(name)
    if ifp is None:
        raise ToolError(f"interface {name} does not exist")
    return ifp


def ifaces_by_index(vnet: Vnet) -> list[Ifnet]:
    """The interfaces of `vnet` in index order, as the kernel lists them."""
    return sorted(vnet.ifaces.values(), key=lambda i: i.index)


def percent(p: float) -> str:
    """A probability as a short percentage: 0.005 -> `0.5%`."""
    return f"{p * 100:.6g}%"
