"""ipfw lookup tables (FreeBSD ip_fw_table.c, ip_fw_table_algo.c's "addr:hash").

An `addr` table keeps one dict per prefix length in use, keyed by the masked address,
and looks an address up from the longest length down: a longest-prefix match in at most
33 (129 for IPv6) dict probes, one per distinct length present, never a scan of the
entries. A table of /32s costs one probe.
"""

from __future__ import annotations

from vimage.net.route import MASKS
from vimage.wire import ipv4

TABLE_TYPES = ("addr",)


class Table:
    __slots__ = ("by_len", "lens", "name", "set", "type")

    def __init__(self, name: str, type_: str = "addr", set_: int = 0) -> None:
        self.name = name
        self.type = type_
        self.set = set_
        self.by_len: dict[int, dict[int, int]] = {}
        self.lens: tuple[int, ...] = ()  # the lengths in use, longest first

    def __len__(self) -> int:
        return sum(len(d) for d in self.by_len.values())

    def add(self, addr: int, plen: int, value: int) -> bool:
        """Add an entry; False if it exists (FreeBSD refuses with EEXIST)."""
        key = addr & MASKS[plen]
        entries = self.by_len.get(plen)
        if entries is None:
            entries = self.by_len[plen] = {}
            self.lens = tuple(sorted(self.by_len, reverse=True))
        if key in entries:
            return False
        entries[key] = value
        return True

    def delete(self, addr: int, plen: int) -> bool:
        entries = self.by_len.get(plen)
        key = addr & MASKS[plen]
        if entries is None or key not in entries:
            return False
        del entries[key]
        if not entries:
            del self.by_len[plen]
            self.lens = tuple(sorted(self.by_len, reverse=True))
        return True

    def flush(self) -> None:
        self.by_len.clear()
        self.lens = ()

    def lookup(self, addr: int) -> int | None:
        """The value of the longest prefix holding `addr`, or None."""
        by_len = self.by_len
        for plen in self.lens:
            value = by_len[plen].get(addr & MASKS[plen])
            if value is not None:
                return value
        return None

    def entries(self) -> list[tuple[int, int, int]]:
        """(address, prefix length, value), sorted as FreeBSD's `table list` sorts."""
        return sorted((a, p, v) for p, d in self.by_len.items() for a, v in d.items())

    def listing(self) -> str:
        lines = [f"--- table({self.name}), set({self.set}) ---"]
        lines += [f"{ipv4.ntoa(a)}/{p} {v}" for a, p, v in self.entries()]
        return "\n".join(lines) + "\n"

    def copy(self) -> Table:
        dup = Table(self.name, self.type, self.set)
        dup.by_len = {p: dict(d) for p, d in self.by_len.items()}
        dup.lens = self.lens
        return dup
