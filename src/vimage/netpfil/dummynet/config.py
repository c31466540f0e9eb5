"""dummynet's configuration language and listings (FreeBSD sbin/ipfw/dummynet.c, the
kernel side of ip_dummynet.c's config_link/config_fs/config_sched).

`command(vnet, argv, prog)` runs what follows `dnctl` or `ipfw`:
    {pipe|queue|sched} N config OPTIONS
    {pipe|queue|sched} [N ...] {show|list}      {pipe|queue|sched} {show|list} [N|N-M ...]
    {pipe|queue|sched} N delete                 {pipe|queue|sched} delete N ...
    {pipe|queue|sched} flush
and returns the text to print; bad input raises ValueError with FreeBSD's message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from vimage.netpfil.dummynet.core import (
    DEFAULT_QSIZE,
    DN_MAX_ID,
    PLR_ONE,
    FlowSet,
    Link,
    Mask,
    Red,
    Sched,
    bucket_of,
)
from vimage.netpfil.dummynet.schedulers import Fifo, Wf2q, discipline
from vimage.wire import WireError, ipv6
from vimage.wire.ipv4 import ntoa

if TYPE_CHECKING:
    from vimage.netpfil.dummynet.core import Counts, DummynetState, FlowKey
    from vimage.vnet import Vnet

KINDS = ("pipe", "queue", "sched")
PROTO_NAMES = ((0, "ip"), (1, "icmp"), (2, "igmp"), (4, "ipencap"), (6, "tcp"), (17, "udp"),
               (41, "ipv6"), (47, "gre"), (50, "esp"), (58, "ipv6-icmp"), (132, "sctp"))
FLOW_HEADER = ("BKT Prot ___Source IP/port____ ____Dest. IP/port____ "
               "Tot_pkt/bytes Pkt/Byte Drp")


def command(vnet: Vnet, argv: list[str], prog: str = "dnctl") -> str:
    """Run one dummynet command in `vnet` (see the module docstring)."""
    if not argv or argv[0] not in KINDS:
        raise ValueError(f"bad command `{argv[0] if argv else ''}'")
    kind, args = argv[0], list(argv[1:])
    if len(args) > 1 and args[0].isdigit():  # `pipe 1 config` = `config 1` (ipfw2.c swap)
        args[0], args[1] = args[1], args[0]
    if not args:
        raise ValueError(f"{kind}: missing command (config, show, list, delete, flush)")
    verb, rest = args[0], args[1:]
    dn: DummynetState = vnet.dummynet
    if verb in ("config", "delete"):
        dn.own_tables()
    if verb == "config":
        if not rest:
            raise ValueError("need a number")
        nr = _number(rest[0], kind)
        configure(dn, kind, nr, rest[1:])
        return ""
    if verb in ("show", "list"):
        return show(dn, kind, _ranges(rest))
    if verb == "delete":
        if not rest:
            raise ValueError("missing number")
        for word in rest:
            delete(dn, kind, _number(word, kind))
        return ""
    if verb == "flush":
        flush(dn)
        return ""
    raise ValueError(f"unrecognised command ``{verb}''")


def _number(word: str, kind: str) -> int:
    if not word.isdigit() or not 0 < int(word) < DN_MAX_ID:
        raise ValueError(f"{kind} number must be between 1 and {DN_MAX_ID - 1}: {word}")
    return int(word)


def _ranges(words: list[str]) -> list[tuple[int, int]]:
    """`show 1 3-5,7`: the ranges asked for (parse_range); invalid entries are skipped."""
    out: list[tuple[int, int]] = []
    for word in words:
        for part in word.split(","):
            m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if m is None:
                continue
            lo = int(m.group(1))
            hi = int(m.group(2) or lo)
            if lo <= hi < DN_MAX_ID - 1:
                out.append((lo, hi))
    return out


# -- parsing values ------------------------------------------------------------------------
def _leading_int(text: str, what: str) -> tuple[int, str]:
    m = re.match(r"(0x[0-9a-fA-F]+|\d+)", text)
    if m is None:
        raise ValueError(f"{what}: invalid argument `{text}'")
    return int(m.group(1), 0), text[m.end():]


def parse_bandwidth(text: str) -> int:
    """read_bandwidth(): `64k`, `1Mbit/s`, `100KByte/s`, `2Mbytes` -> bit/s."""
    if text[:1].isalpha():
        raise ValueError("bw: interface clocking is not supported, give a rate")
    bw, end = _leading_int(text, "bw")
    unit = end[:1]
    if unit in ("K", "k"):
        bw, end = bw * 1000, end[1:]
    elif unit in ("M", "m"):
        bw, end = bw * 1_000_000, end[1:]
    elif unit in ("G", "g"):
        bw, end = bw * 1_000_000_000, end[1:]
    if (end[:1] == "B" and not end.startswith("Bi")) or end.startswith("by"):
        bw *= 8
    if bw > 0x7FFFFFFF:
        raise ValueError("bandwidth too large")
    return bw


def parse_mask(words: list[str], i: int, mask: Mask) -> int:
    """The `mask` specifiers from words[i]; returns the index after them."""
    fields = {"dst-ip": "dst", "src-ip": "src", "dst-port": "dport", "src-port": "sport",
              "proto": "proto", "src-ip6": "src6", "dst-ip6": "dst6", "flow-id": "flow"}
    widths = {"dst": 32, "src": 32, "dport": 16, "sport": 16, "proto": 8, "src6": 128,
              "dst6": 128, "flow": 20}
    for name in widths:
        setattr(mask, name, 0)
    while i < len(words):
        tok = words[i]
        if tok == "all":  # ipfw's dummynet.c: every field, IPv6 ones too
            for name, width in widths.items():
                setattr(mask, name, (1 << width) - 1)
            return i + 1
        field = fields.get(tok)
        if field is None:
            break
        if i + 1 >= len(words):
            raise ValueError("mask: value missing")
        value = words[i + 1]
        width = widths[field]
        if value.startswith("/"):
            bits, _ = _leading_int(value[1:], "mask")
            a = (1 << min(bits, 32)) - 1
            if width in (32, 128):  # a prefix length: the high bits
                bits = min(bits, width)
                a = ((1 << bits) - 1) << (width - bits)
        elif width == 128:
            try:
                a = ipv6.aton(value)
            except WireError:
                raise ValueError(f"mask: invalid IPv6 mask `{value}'") from None
        else:
            a, _ = _leading_int(value, "mask")
        if field in ("sport", "dport") and a > 0xFFFF:
            raise ValueError("port mask must be 16 bit")
        if field == "proto" and a > 0xFF:
            raise ValueError("proto mask must be 8 bit")
        setattr(mask, field, a & ((1 << widths[field]) - 1))
        i += 2
    return i


def parse_red(text: str, gentle: bool, byte_queue: bool) -> Red:
    parts = text.split("/")
    if len(parts) != 4:
        raise ValueError("red/gred needs w_q/min_th/max_th/max_p")
    try:
        w_q, max_p = float(parts[0]), float(parts[3])
    except ValueError:
        raise ValueError(f"red/gred needs w_q/min_th/max_th/max_p: {text}") from None
    if not 0 < w_q <= 1:
        raise ValueError("0 < w_q <= 1")
    if not 0 < max_p <= 1:
        raise ValueError("0 < max_p <= 1")
    ths = []
    for part in parts[1:3]:
        value, end = _leading_int(part, "red")
        ths.append(value * 1024 if end[:1] in ("K", "k") else value)
    min_th, max_th = ths
    if min_th >= max_th:
        raise ValueError(f"min_th {min_th} must be < than max_th {max_th}")
    return Red(w_q, min_th, max_th, max_p, gentle)


# -- config -----------------------------------------------------------------------------------
class _Options:
    """What one `config` command says; None: not given (keep the current value)."""

    def __init__(self) -> None:
        self.bw: int | None = None
        self.delay: int | None = None
        self.burst: int | None = None
        self.qsize: tuple[int, bool] | None = None
        self.plr: int | None = None
        self.red: Red | bool | None = False  # False: unchanged; None: droptail
        self.mask: Mask | None = None
        self.buckets: int | None = None
        self.noerror = False
        self.weight: int | None = None
        self.lmax: int | None = None
        self.pri: int | None = None
        self.sched_nr: int | None = None
        self.type: str | None = None


def _parse(kind: str, words: list[str]) -> _Options:
    o = _Options()
    is_pipe, is_queue, is_sched = kind == "pipe", kind == "queue", kind == "sched"
    has_fs = True  # a sched's own flowset (N + 65536) sizes a FIFO scheduler's queue
    red_text: tuple[str, bool] | None = None
    i = 0

    def need(cond: bool, message: str) -> None:
        if not cond:
            raise ValueError(message)

    def arg(message: str) -> str:
        if i + 1 >= len(words):
            raise ValueError(message)
        return words[i + 1]

    while i < len(words):
        tok = words[i]
        if tok == "noerror":
            need(has_fs, "noerror is only for pipes")
            o.noerror = True
            i += 1
            continue
        if tok in ("mask", "sched_mask", "flow_mask"):
            o.mask = Mask()
            j = parse_mask(words, i + 1, o.mask)
            if j == i + 1:
                raise ValueError("mask needs mask specifier")
            i = j
            continue
        if tok == "droptail":
            need(has_fs, "droptail is only for flowsets")
            o.red = None
            i += 1
            continue
        if tok == "plr":
            need(has_fs, "plr is only for pipes")
            try:
                p = float(arg("plr needs argument 0..1"))
            except ValueError:
                raise ValueError("plr needs argument 0..1") from None
            o.plr = int(min(1.0, max(0.0, p)) * PLR_ONE)
        elif tok == "queue":
            need(has_fs, "queue is only for pipes or flowsets")
            size, end = _leading_int(arg("queue needs queue size"), "queue")
            if end[:1] in ("K", "k"):
                o.qsize = (size * 1024, True)
            elif end[:1] == "B" or end.startswith("by"):
                o.qsize = (size, True)
            elif end:
                raise ValueError(f"queue: invalid argument `{words[i + 1]}'")
            else:
                o.qsize = (size, False)
        elif tok == "buckets":
            need(has_fs, "buckets is only for pipes or flowsets")
            o.buckets, _ = _leading_int(arg("buckets needs argument"), "buckets")
        elif tok in ("red", "gred"):
            red_text = (arg("red/gred needs w_q/min_th/max_th/max_p"), tok == "gred")
        elif tok in ("bw", "bandwidth"):
            need(is_pipe, "bw is only for links")
            o.bw = parse_bandwidth(arg("bw needs bandwidth or interface"))
        elif tok == "delay":
            need(is_pipe, "delay is only for links")
            o.delay, _ = _leading_int(arg("delay needs argument 0..10000ms"), "delay")
        elif tok == "burst":
            need(is_pipe, "burst")
            o.burst, _ = _leading_int(arg("burst needs argument"), "burst")
        elif tok == "type":
            need(is_sched or is_pipe, "type is only for schedulers")
            o.type = arg("type needs a string")
            discipline(o.type)
        elif tok == "weight":
            need(is_queue, "weight is only for flowsets")
            o.weight, _ = _leading_int(arg("weight needs argument"), "weight")
        elif tok in ("lmax", "maxlen"):
            need(is_queue, "lmax is only for flowsets")
            o.lmax, _ = _leading_int(arg("lmax needs argument"), "lmax")
        elif tok in ("pri", "priority"):
            need(is_queue, "priority is only for flowsets")
            o.pri, _ = _leading_int(arg("priority needs argument"), "priority")
        elif tok in ("pipe", "sched", "link"):
            need(is_queue, "pipe/sched")
            o.sched_nr = _number(arg("pipe/link/sched needs number"), tok)
        else:
            raise ValueError(f"unrecognised option ``{tok}''")
        i += 2
    if red_text is not None:
        o.red = parse_red(red_text[0], red_text[1], bool(o.qsize and o.qsize[1]))
    return o


def _check(dn: DummynetState, o: _Options) -> None:
    if o.delay is not None and o.delay > 10000:
        raise ValueError("delay must be < 10000")
    if o.qsize is not None:
        size, in_bytes = o.qsize
        if in_bytes and size > dn.pipe_byte_limit:
            raise ValueError(f"queue size must be < {dn.pipe_byte_limit}B")
        if not in_bytes and size > dn.pipe_slot_limit:
            raise ValueError(f"2 <= queue size <= {dn.pipe_slot_limit}")
    if o.weight is not None and not 1 <= o.weight <= 100:
        raise ValueError("weight must be between 1 and 100")


def configure(dn: DummynetState, kind: str, nr: int, words: list[str]) -> None:
    """`KIND NR config WORDS`: create or change a pipe, queue or scheduler."""
    o = _parse(kind, words)
    _check(dn, o)
    if kind == "queue":
        fs = dn.flowsets.get(nr)
        if fs is None:
            if o.sched_nr is None:
                raise ValueError(f"queue {nr}: needs `pipe N' or `sched N'")
            fs = dn.flowsets[nr] = FlowSet(nr, o.sched_nr)
        _apply_fs(dn, fs, o)
        return
    link = dn.links.get(nr)
    if link is None:
        link = dn.links[nr] = Link(nr)
    if o.bw is not None:
        link.bw = o.bw
    if o.delay is not None:
        link.delay_ms = o.delay
    if o.burst is not None:
        link.burst = o.burst
    sched = _sched(dn, nr, discipline(o.type) if o.type else None, link)
    if o.mask is not None or o.buckets is not None:
        _set_sched_mask(dn, sched, o.mask if o.mask is not None else sched.mask, o.buckets)
    if kind == "pipe":
        fifo = _sched(dn, nr + DN_MAX_ID, Fifo, link)
        if o.mask is not None or o.buckets is not None:
            _set_sched_mask(dn, fifo, sched.mask, o.buckets)
        fs = dn.flowsets.get(nr + 2 * DN_MAX_ID)
        if fs is None:
            fs = dn.flowsets[nr + 2 * DN_MAX_ID] = FlowSet(nr + 2 * DN_MAX_ID, nr + DN_MAX_ID)
            fs.weight = 0
        o.mask = None  # a pipe's mask is its schedulers', not its flowset's
        _apply_fs(dn, fs, o)
    elif o.qsize is not None or o.plr is not None or o.red is not False or o.noerror:
        fs = dn.flowsets.get(nr + DN_MAX_ID)
        if fs is None:
            fs = dn.flowsets[nr + DN_MAX_ID] = FlowSet(nr + DN_MAX_ID, nr)
            fs.weight = 0
        o.mask = o.buckets = None
        _apply_fs(dn, fs, o)


def _sched(dn: DummynetState, nr: int, cls: type | None, link: Link) -> Sched:
    sched = dn.schedulers.get(nr)
    if sched is None:
        sched = dn.schedulers[nr] = Sched(nr, cls or Wf2q, link)
        dn.instance_for_unmasked(sched)
    elif cls is not None and cls is not sched.cls:
        dn.free_sched_instances(sched, recreate=False)  # a new discipline: new instances
        sched.cls = cls
        dn.instance_for_unmasked(sched)
    return sched


def _set_sched_mask(dn: DummynetState, sched: Sched, mask: Mask, buckets: int | None) -> None:
    if mask != sched.mask:
        dn.free_sched_instances(sched, recreate=False)
        sched.mask = Mask(*mask.key())
    if buckets is not None:
        sched.buckets = max(1, buckets)
    elif sched.mask and not sched.buckets:
        sched.buckets = dn.hash_size
    if not sched.mask:
        sched.buckets = 0
    dn.instance_for_unmasked(sched)


def _apply_fs(dn: DummynetState, fs: FlowSet, o: _Options) -> None:
    if o.sched_nr is not None and o.sched_nr != fs.sched_nr:
        dn.free_fs_queues(fs)
        fs.sched_nr = o.sched_nr
    if o.qsize is not None:
        size, fs.qbytes = o.qsize
        fs.qsize = size or DEFAULT_QSIZE
    if o.plr is not None:
        fs.plr = o.plr
    if o.red is not False:
        fs.red = o.red if isinstance(o.red, Red) else None
    if o.mask is not None and o.mask != fs.mask:
        dn.free_fs_queues(fs)
        fs.mask = o.mask
    if o.buckets is not None:
        fs.buckets = max(1, o.buckets)
    elif fs.mask and fs.buckets <= 1:
        fs.buckets = dn.hash_size
    if not fs.mask:
        fs.buckets = 1
    fs.noerror = fs.noerror or o.noerror
    if o.weight is not None:
        fs.weight = o.weight
        for q in fs.queues.values():
            q.si.alg.reweight(q, o.weight)
    if o.lmax is not None:
        fs.lmax = o.lmax
    if o.pri is not None:
        fs.pri = o.pri


def delete(dn: DummynetState, kind: str, nr: int) -> None:
    """`KIND delete NR`: a pipe takes its link, schedulers and flowset with it; queues
    fed to a deleted scheduler stay, and drop what they get until it is back."""
    if kind == "queue":
        fs = dn.flowsets.pop(nr, None)
        if fs is None:
            raise ValueError(f"queue {nr} does not exist")
        dn.free_fs_queues(fs)
        return
    if (nr + DN_MAX_ID if kind == "pipe" else nr) not in dn.schedulers:
        raise ValueError(f"{kind} {nr} does not exist")
    numbers = (nr, nr + DN_MAX_ID) if kind == "pipe" else (nr,)
    for number in numbers:
        sched = dn.schedulers.pop(number, None)
        if sched is not None:
            dn.free_sched_instances(sched, recreate=False)
    dn.flowsets.pop(nr + (2 * DN_MAX_ID if kind == "pipe" else DN_MAX_ID), None)
    if not any(n % DN_MAX_ID == nr for n in dn.schedulers):
        dn.links.pop(nr, None)


def flush(dn: DummynetState) -> None:
    """`flush`: every pipe, queue and scheduler goes (dummynet_flush)."""
    dn.clear()


# -- listings ---------------------------------------------------------------------------------
def _wanted(nr: int, ranges: list[tuple[int, int]]) -> bool:
    return not ranges or any(lo <= nr <= hi for lo, hi in ranges)


def show(dn: DummynetState, kind: str, ranges: list[tuple[int, int]]) -> str:
    lines: list[str] = []
    if kind == "pipe":
        for nr in sorted(n for n in dn.links if n + DN_MAX_ID in dn.schedulers):
            if _wanted(nr, ranges):
                lines.append(_link_line(dn.links[nr]))
                fs = dn.flowsets.get(nr + 2 * DN_MAX_ID)
                if fs is not None:
                    lines.append(_fs_line(fs))
                _sched_lines(dn, dn.schedulers[nr + DN_MAX_ID], lines)
    elif kind == "queue":
        for nr in sorted(n for n in dn.flowsets if n < DN_MAX_ID):
            if _wanted(nr, ranges):
                fs = dn.flowsets[nr]
                lines.append(_fs_line(fs))
                if fs.mask:
                    lines.append(_mask_line(fs.mask))
                    lines.append(FLOW_HEADER)
                for q in sorted(fs.queues.values(), key=lambda q: (
                        bucket_of(q.fid, fs.buckets), q.seq)):
                    lines.append(_flow_line(bucket_of(q.fid, fs.buckets), q.fid, q.ni))
    else:
        for nr in sorted(n for n in dn.schedulers if n < DN_MAX_ID):
            if _wanted(nr, ranges):
                sched = dn.schedulers[nr]
                lines.append(_link_line(sched.link))
                _sched_lines(dn, sched, lines)
                children = [fs.nr for fs in dn.flowsets.values()
                            if fs.sched_nr == nr and fs.nr < DN_MAX_ID]
                if children:
                    lines.append("   Children flowsets: " +
                                 "".join(f"{n} " for n in sorted(children, reverse=True)))
    return "".join(line + "\n" for line in lines)


def _link_line(link: Link) -> str:
    """`00001:   1.000 Mbit/s   10 ms burst 0` (list_pipes, DN_LINK)."""
    b = link.bw
    if b == 0:
        rate = "unlimited     "
    elif b >= 1_000_000:
        rate = f"{b / 1_000_000:7.3f} Mbit/s"
    elif b >= 1000:
        rate = f"{b / 1000:7.3f} Kbit/s"
    else:
        rate = f"{b:7.3f} bit/s "
    return f"{link.nr % DN_MAX_ID:05d}: {rate} {link.delay_ms:4d} ms burst {link.burst}"


def _fs_line(fs: FlowSet) -> str:
    """print_flowset_parms(): `q131073  50 sl. 0 flows (1 buckets) sched 65537 ...`."""
    if fs.qbytes:
        qs = f"{fs.qsize // 1024} KB" if fs.qsize >= 8192 else f"{fs.qsize} B"
    else:
        qs = f"{fs.qsize:3d} sl."
    plr = f"plr {fs.plr / PLR_ONE:f}" if fs.plr else ""
    red = fs.red
    if red is None:
        tail = "droptail"
    else:
        tail = (f"\n\t {'G' if red.gentle else ' '}RED w_q {red.w_q:f} min_th {red.min_th} "
                f"max_th {red.max_th} max_p {red.max_p:f}")
    return (f"q{fs.nr:05d} {qs}{plr} {len(fs.queues)} flows ({fs.buckets} buckets) "
            f"sched {fs.sched_nr} weight {fs.weight} lmax {fs.lmax} pri {fs.pri} {tail}")


def _sched_lines(dn: DummynetState, sched: Sched, lines: list[str]) -> None:
    lines.append(f" sched {sched.nr} type {sched.cls.name} flags {sched.flags:#x} "
                 f"{sched.buckets} buckets {len(sched.instances)} active")
    if sched.mask:
        lines.append(_mask_line(sched.mask))
        lines.append(FLOW_HEADER)
    buckets = sched.buckets
    for si in sorted(sched.instances.values(), key=lambda s: (bucket_of(s.fid, buckets),
                                                              s.seq)):
        lines.append(_flow_line(bucket_of(si.fid, buckets), si.fid, si.ni))


def _mask_line(mask: Mask) -> str:
    if mask.ip6:  # print_mask's IPv6 form
        return (f"    mask: proto: 0x{mask.proto:02x}, flow_id: 0x{mask.flow:08x},  "
                f"{ipv6.ntoa(mask.src6)}/0x{mask.sport:04x} -> "
                f"{ipv6.ntoa(mask.dst6)}/0x{mask.dport:04x}")
    return (f"    mask:  0x{mask.proto:02x} 0x{mask.src:08x}/0x{mask.sport:04x} -> "
            f"0x{mask.dst:08x}/0x{mask.dport:04x}")


def _flow_line(bucket: int, fid: FlowKey, ni: Counts) -> str:
    """list_flow(): `BKT Prot Source/port Dest/port Tot_pkt/bytes Pkt/Byte Drp`."""
    name = dict(PROTO_NAMES).get(fid[0])
    prot = f"{name:<4s} " if name is not None else f"{fid[0]:4d} "
    if len(fid) > 5:  # an IPv6 flow: list_flow's wide columns
        src = f"{ipv6.ntoa(fid[5]):>39s}/{fid[3]:<5d} "
        dst = f"{ipv6.ntoa(fid[6]):>39s}/{fid[4]:<5d} "
    else:
        src = f"{ntoa(fid[1]):>15s}/{fid[3]:<5d} "
        dst = f"{ntoa(fid[2]):>15s}/{fid[4]:<5d} "
    return (f"{bucket & 0xFF:3d} {prot}{src}{dst}{ni.tot_pkts:4d} {ni.tot_bytes:8d} "
            f"{ni.length:2d} {ni.len_bytes:4d} {ni.drops:3d}")
