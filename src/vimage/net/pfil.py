"""Packet filter hooks (FreeBSD pfil(9)): where a firewall, NAT, IPsec or fault
injection sees packets.

A hook point ("head": IPv4 in, out and forward; later IPv6 and the link layer) is an
attribute of the per-vnet state of the layer that owns it, holding either None (no
hooks: the hot path pays one `is not None` test) or a tuple of `Hook`s in the order
they run. The tuple is replaced, never changed in place, so a hook may add or remove
hooks while a packet is on its way through the old tuple.

A hook is called as `fn(pkt, ifp)`: the packet (for IPv4, the whole datagram from its
IP header; for the link layer, the frame) and the interface it came in on (in,
forward) or leaves by (out). It returns the packet to pass on, the same object or a
rewritten one (NAT), or None when it dropped or consumed the packet (FreeBSD's
PFIL_DROPPED / PFIL_CONSUMED), in which case it has counted what it did. The next
hook sees what the previous one returned.

Hooks run in ascending `order`, equal orders in the order they were added (FreeBSD
links ipfw, pf and the others by the order of pfil_link() calls, first or last).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet

HookFn = Callable[[bytes, "Ifnet | None"], "bytes | None"]
Head = tuple["Hook", ...] | None

# orders of the hooks vimage itself attaches; a firewall sits between them
ORDER_FAULT = -100  # fault injection sees packets first: a partition is a cut cable
ORDER_FIREWALL = 0


class Hook(NamedTuple):
    order: int
    name: str
    fn: HookFn


def link(owner: Any, head: str, fn: HookFn, *, order: int = ORDER_FIREWALL,
         name: str = "") -> None:
    """Add `fn` to hook point `head` (an attribute name) of `owner` (pfil_link)."""
    hooks: Head = getattr(owner, head)
    if hooks is not None and any(h.fn is fn for h in hooks):
        raise ValueError(f"hook {name or fn!r} is already linked to {head}")
    entry = Hook(order, name or getattr(fn, "__name__", type(fn).__name__), fn)
    merged = [*(hooks or ()), entry]
    merged.sort(key=lambda h: h.order)  # stable: equal orders keep the order of linking
    setattr(owner, head, tuple(merged))
    _changed(owner, head)


def unlink(owner: Any, head: str, fn: HookFn) -> bool:
    """Remove `fn` from hook point `head` of `owner`; False if it was not linked."""
    hooks: Head = getattr(owner, head)
    if hooks is None or not any(h.fn is fn for h in hooks):
        return False
    left = tuple(h for h in hooks if h.fn is not fn)
    setattr(owner, head, left or None)
    _changed(owner, head)
    return True


def _changed(owner: Any, head: str) -> None:
    """Tell an owner that caches what its points hold (`pfil_changed(head)`): a vnet marks
    its interfaces so the link layer's data path tests one flag word. The kernel's
    offload state learns which vnets have hooks: no offloaded frame enters those."""
    notify = getattr(owner, "pfil_changed", None)
    if notify is not None:
        notify(head)
    vnet = getattr(owner, "vnet", owner)
    kernel = getattr(vnet, "kernel", None)
    if kernel is not None:
        from vimage.net import offload  # (offload imports nothing of this layer's)

        offload.state(kernel).hooks_changed(vnet, owner, head, getattr(owner, head) is not None)


def run(hooks: tuple[Hook, ...], pkt: bytes, ifp: Ifnet | None) -> bytes | None:
    """Pass `pkt` through `hooks`: what the last one returned, or None if one took it."""
    for hook in hooks:
        out = hook.fn(pkt, ifp)
        if out is None:
            return None
        pkt = out
    return pkt


def names(hooks: Head) -> list[str]:
    """The names of the hooks at one point, in the order they run (for tools)."""
    return [h.name for h in hooks or ()]
