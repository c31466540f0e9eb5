"""IPsec per vnet (FreeBSD sys/netipsec): the SAD and SPD, ESP, and their transforms."""

from vimage.netipsec.ipsec import PROTOCOL, PROTOCOL6, IpsecState

__all__ = ["PROTOCOL", "PROTOCOL6", "IpsecState"]
