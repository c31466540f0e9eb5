"""Packet formats: zero-copy parsing, emitting and validation. No state, no I/O."""

from vimage.wire import arp, checksum, ethernet, icmp, icmp6, ipv4, ipv6, tcp, udp
from vimage.wire._common import Buffer, WireError

__all__ = ["Buffer", "WireError", "arp", "checksum", "ethernet", "icmp", "icmp6", "ipv4", "ipv6",
           "tcp", "udp"]
