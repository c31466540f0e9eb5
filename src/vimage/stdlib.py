"""The stdlib's socket API inside `with vnet.activate():` blocks.

`install()` (done by the first `vnet.activate()`, never by importing vimage) puts
dispatchers in the `socket` module: `socket.socket`, `getaddrinfo`, `gethostbyname`,
`gethostbyname_ex`, `gethostbyaddr` and `getnameinfo`. A dispatcher asks the current
vnet (vimage.context); outside every vnet it is the original function, so the rest of
the program is unaffected. `create_connection`, `create_server`, `http.client` and
`urllib.request` look these names up in the `socket` module when they run, so they
follow. `uninstall()` puts the originals back. Importing this module makes its
`activate` the one behind `vnet.activate()` (`vimage.context.Userland`: the core does
not import this layer).

Inside a vnet, `socket.socket(AF_INET, ...)` (or AF_INET6) returns a vimage socket: blocking calls,
timeouts and non-blocking mode work; its `fileno()` is a vimage descriptor that the
vimage event loop's selector understands, not one for `select.select` (use the
vimage loop or `vimage exec` for OS-level readiness).
"""

from __future__ import annotations

import socket as _socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from vimage import context, netdb
from vimage.context import current_vnet

if TYPE_CHECKING:
    from vimage.vnet import Vnet

ORIGINAL = "_vimage_original"
"""Attribute naming what a replacement in the socket module replaced (vimage.ctl.remote's too):
its presence on `socket.socket` means one of them is installed."""


class _SocketType(type(_socket.socket)):  # type: ignore[misc]
    """Makes vimage sockets pass `isinstance(s, socket.socket)` while installed."""

    def __instancecheck__(cls, obj: object) -> bool:
        from vimage.socket.socket import SocketBase

        original = cls.__dict__.get(ORIGINAL)
        if original is not None and isinstance(obj, (SocketBase, original)):
            return True  # sockets made before install() are still stdlib sockets
        return type.__instancecheck__(cls, obj)


def _make_socket_class(original: type) -> type:
    def __new__(cls: type, family: int = -1, type: int = -1, proto: int = -1,
                fileno: int | None = None) -> Any:
        vnet = current_vnet.get()
        if vnet is not None and fileno is None and family in (-1, _socket.AF_INET,
                                                              _socket.AF_INET6):
            return vnet.socket(_socket.AF_INET if family == -1 else family,
                               _socket.SOCK_STREAM if type == -1 else type,
                               0 if proto == -1 else proto)
        return original.__new__(cls, family, type, proto, fileno)

    ns = {"__new__": __new__, "__module__": "socket", "__doc__": original.__doc__,
          "__slots__": (), ORIGINAL: original}
    return _SocketType("socket", (original,), ns)


def _dispatch(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    resolver = getattr(netdb, name)

    def dispatcher(*args: Any, **kwargs: Any) -> Any:
        vnet = current_vnet.get()
        if vnet is None:
            return original(*args, **kwargs)
        return resolver(vnet, *args, **kwargs)

    dispatcher.__name__ = dispatcher.__qualname__ = name
    dispatcher.__doc__ = original.__doc__
    setattr(dispatcher, ORIGINAL, original)
    return dispatcher


_FUNCTIONS = ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr",
              "getnameinfo")


def installed() -> bool:
    return hasattr(_socket.socket, ORIGINAL)


def install() -> None:
    """Put the dispatchers in the `socket` module (idempotent)."""
    if installed():
        return
    for name in _FUNCTIONS:
        setattr(_socket, name, _dispatch(name, getattr(_socket, name)))
    _socket.socket = _make_socket_class(_socket.socket)  # type: ignore[misc]


def uninstall() -> None:
    """Restore the `socket` module's own functions."""
    if not installed():
        return
    for name in (*_FUNCTIONS, "socket"):
        setattr(_socket, name, getattr(getattr(_socket, name), ORIGINAL))


@contextmanager
def activate(vnet: Vnet) -> Iterator[Vnet]:
    """`vnet.activate()`: the current vnet, and the stdlib's socket API follows it."""
    with context.activate(vnet):  # refuses a destroyed vnet before anything is installed
        install()
        yield vnet


context.Userland.install(activate=activate)
