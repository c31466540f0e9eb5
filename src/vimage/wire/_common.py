"""Shared definitions for the wire package: the error type and buffer helpers."""

from __future__ import annotations

from typing import TypeAlias

Buffer: TypeAlias = bytes | bytearray | memoryview
"""Anything the parsers accept: a bytes-like object with a 1-D byte layout."""


class WireError(ValueError):
    """A packet failed validation; ``reason`` is a short code such as ``"badsum"``."""

    reason: str
    message: str

    def __init__(self, reason: str, message: str = "") -> None:
        super().__init__(reason, message)
        self.reason = reason
        self.message = message

    def __str__(self) -> str:
        return f"{self.reason}: {self.message}" if self.message else self.reason


WireError.__module__ = "vimage.wire"


def as_view(buf: Buffer) -> memoryview:
    """Return a flat unsigned-byte memoryview of ``buf`` without copying."""
    view = memoryview(buf)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view
