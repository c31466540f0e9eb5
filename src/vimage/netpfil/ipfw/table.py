"""ipfw lookup tables (FreeBSD ip_fw_table.c, ip_fw_table_algo.c's "addr:hash").

An `addr` table keeps one dict per prefix length in use, keyed by the masked address,
and looks an address up from the longest length down: a longest-prefix match in at most
33 (129 for IPv6) dict probes, one per distinct length present, never a scan of the
entries. A table of /32s costs one probe. One table holds both families (FreeBSD's addr
tables do): IPv6 entries live in their own dicts, looked up only for IPv6 packets.
"""

from __future__ import annotations

from vimage.net.route import MASKS, MASKS6
from vimage.wire import ipv4, ipv6

TABLE_TYPES = ("addr",)


class Table:
    __slots__ = ("by_len", "by_len6", "lens", "lens6", "name", "set", "type")

    def __init__(self, name: str, type_: str = "addr", set_: int = 0) -> None:
        self.name = name
        self.type = type_
        self.set = set_
        self.by_len: dict[int, dict[int, int]] = {}
        self.lens: tuple[int, ...] = ()  # the lengths in use, longest first
        self.by_len6: dict[int, dict[int, int]] = {}  # the IPv6 entries
        self.lens6: tuple[int, ...] = ()

    def __len__(self) -> int:
        return (sum(len(d) for d in self.by_len.values())
                + sum(len(d) for d in self.by_len6.values()))

    def add(self, addr: int, plen: int, value: int, family: int = 4) -> bool:
        """Add an entry; False if it exists (FreeBSD refuses with EEXIST)."""
        by_len = self.by_len6 if family == 6 else self.by_len
        key = addr & (MASKS6 if family == 6 else MASKS)[plen]
        entries = by_len.get(plen)
        if entries is None:
            entries = by_len[plen] = {}
            self._relen()
        if key in entries:
            return False
        entries[key] = value
        return True

    def _relen(self) -> None:
        self.lens = tuple(sorted(self.by_len, reverse=True))
        self.lens6 = tuple(sorted(self.by_len6, reverse=True))

    def delete(self, addr: int, plen: int, family: int = 4) -> bool:
        by_len = self.by_len6 if family == 6 else self.by_len
        entries = by_len.get(plen)
        key = addr & (MASKS6 if family == 6 else MASKS)[plen]
        if entries is None or key not in entries:
            return False
        del entries[key]
        if not entries:
            del by_len[plen]
            self._relen()
        return True

    def flush(self) -> None:
        self.by_len.clear()
        self.by_len6.clear()
        self.lens = self.lens6 = ()

    def lookup(self, addr: int) -> int | None:
        """The value of the longest IPv4 prefix holding `addr`, or None."""
        by_len = self.by_len
        for plen in self.lens:
            value = by_len[plen].get(addr & MASKS[plen])
            if value is not None:
                return value
        return None

    def lookup6(self, addr: int) -> int | None:
        """The value of the longest IPv6 prefix holding `addr`, or None."""
        by_len = self.by_len6
        for plen in self.lens6:
            value = by_len[plen].get(addr & MASKS6[plen])
            if value is not None:
                return value
        return None

    def entries(self) -> list[tuple[int, int, int]]:
        """(address, prefix length, value), sorted as FreeBSD's `table list` sorts."""
        return sorted((a, p, v) for p, d in self.by_len.items() for a, v in d.items())

    def entries6(self) -> list[tuple[int, int, int]]:
        return sorted((a, p, v) for p, d in self.by_len6.items() for a, v in d.items())

    def listing(self) -> str:
        lines = [f"--- table({self.name}), set({self.set}) ---"]
        lines += [f"{ipv4.ntoa(a)}/{p} {v}" for a, p, v in self.entries()]
        lines += [f"{ipv6.ntoa(a)}/{p} {v}" for a, p, v in self.entries6()]
        return "\n".join(lines) + "\n"

    def copy(self) -> Table:
        dup = Table(self.name, self.type, self.set)
        dup.by_len = {p: dict(d) for p, d in self.by_len.items()}
        dup.by_len6 = {p: dict(d) for p, d in self.by_len6.items()}
        dup.lens, dup.lens6 = self.lens, self.lens6
        return dup
