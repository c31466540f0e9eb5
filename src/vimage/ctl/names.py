"""Vnet names as a control channel sees them: relative to its scope vnet.

A channel scoped to vnet X names X's children `child` (meaning X.child); the host
channel (scoped to the base vnet) uses full names. Nothing a request says can name
a vnet outside the scope's subtree: a name is only ever appended to the scope's own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from vimage.vnet import check_name

if TYPE_CHECKING:
    from vimage.kernel import Kernel
    from vimage.vnet import Vnet

BASE_ALIASES = frozenset(("0", "vnet0"))
"""Names the kernel maps to the base vnet; no vnet may be created under them."""


def full_name(scope: Vnet, rel: str) -> str:
    """The kernel name of `rel` seen from `scope`; ValueError for a malformed name."""
    if not isinstance(rel, str):
        raise ValueError("a vnet name is a string")
    check_name(rel)
    return f"{scope.name}.{rel}" if scope.name else rel


def lookup(kernel: Kernel, scope: Vnet, rel: str) -> Vnet:
    """The vnet `rel` names from `scope` ("" is the scope itself)."""
    if rel == "":
        return scope
    if not scope.name and rel in BASE_ALIASES:
        return scope
    full = full_name(scope, rel)
    if full not in kernel:
        raise LookupError(f"vnet {rel} does not exist")
    return kernel.get(full)


def within(vnet: Vnet | None, scope: Vnet) -> bool:
    """True if `vnet` is `scope` or one of its descendants."""
    while vnet is not None:
        if vnet is scope:
            return True
        vnet = vnet.parent
    return False


def relative(vnet: Vnet, scope: Vnet) -> str:
    """`vnet`'s name as `scope` says it ("" for the scope itself)."""
    if vnet is scope:
        return ""
    return vnet.name[len(scope.name) + 1:] if scope.name else vnet.name


def descendants(vnet: Vnet) -> Iterator[Vnet]:
    """Every vnet below `vnet`, parents before children."""
    stack = list(reversed(vnet.children or ()))
    while stack:
        child = stack.pop()
        yield child
        stack.extend(reversed(child.children or ()))
