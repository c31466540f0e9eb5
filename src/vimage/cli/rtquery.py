"""rtquery(8): ask a RIP speaker for its routing table and print the answer.

    rtquery [-1] [-n] [-r addr] [-w timeout] [-a passwd=XXX | -a md5_passwd=XXX|KEYID] host ...

A RIPv2 request (-1: RIPv1) for the whole table, or with -r for the route to `addr`,
sent from an ephemeral port to `host` port 520; every response until `timeout`
seconds (default 15, the kernel's clock: virtual time costs nothing) is printed as
FreeBSD's rtquery.c (rip_input) prints it: `ADDR: RIPv2 N bytes`, an authentication
line, then `  DEST/LEN           metric  M` per entry with ` nhop=` and ` tag=` when set.
-n is accepted (vimage prints addresses numerically anyway). FreeBSD prints the MD5
entry's length and sequence number without byte-swapping them; vimage decodes them.
"""

from __future__ import annotations

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import getopts, parse_addr
from vimage.net.route import MASKS
from vimage.wire import WireError, ipv4, rip

USAGE = "usage: rtquery [-1] [-n] [-r addr] [-w timeout] [-a secret] host ...\n"


def main(ctx: Context, argv: list[str]) -> int:
    opts, hosts = getopts(argv, "1nr:w:a:")
    if not hosts:
        raise UsageError(synopsis=True)
    version, timeout, target = 2, 15.0, None
    auth: rip.RipAuth | None = None
    key = b""
    for opt, value in opts:
        if opt == "-1":
            version = 1
        elif opt == "-w":
            try:
                timeout = float(value)
                if not 0 < timeout <= 3600:
                    raise ValueError
            except ValueError:
                raise UsageError(f"bad timeout: {value}", synopsis=True) from None
        elif opt == "-r":
            target = parse_addr(value)
        elif opt == "-a":
            auth, key = _secret(value)
    if target is None:
        entry = rip.RipEntry(0, 0, rip.INFINITY, afi=rip.AF_UNSPEC)
    else:
        entry = rip.RipEntry(target, 0 if version == 1 else MASKS[32], rip.INFINITY)
    request = rip.build(rip.REQUEST, version, [entry], auth, key)
    answered = 0
    for host in hosts:
        answered += _query(ctx, host, request, timeout)
    return 0 if answered else 1


def _secret(text: str) -> tuple[rip.RipAuth, bytes]:
    """rtquery's -a: `passwd=XXX` or `md5_passwd=XXX|KEYID` to sign the request."""
    name, _, value = text.partition("=")
    if name == "passwd":
        return rip.RipAuth(rip.AUTH_SIMPLE, rip.password_bytes(value)), b""
    if name == "md5_passwd":
        key, _, keyid = value.partition("|")
        if keyid.isdigit() and int(keyid) < 256:
            return rip.RipAuth(rip.AUTH_MD5, keyid=int(keyid), seq=1), key.encode()[:16]
    raise UsageError(f"bad -a {text}", synopsis=True)


def _query(ctx: Context, host: str, request: bytes, timeout: float) -> int:
    addr = parse_addr(host, "host")
    sock = ctx.vnet.socket(2, 2)
    try:
        sock.settimeout(timeout)
        sock.sendto(request, (ipv4.ntoa(addr), rip.PORT))
        answers = 0
        while True:
            try:
                data, (src, _port) = sock.recvfrom(rip.MAX_PACKET + 512)
            except TimeoutError:
                break
            answers += 1
            _print(ctx, src, data)
            if len(data) < rip.HEADER_LEN + rip.ENTRY_LEN * rip.MAX_ENTRIES:
                break  # a short response is the last one
        if not answers:
            raise ToolError(f"{host}: no response")
        return answers
    finally:
        sock.close()


def _print(ctx: Context, src: str, data: bytes) -> None:
    """One response as FreeBSD rtquery's rip_input prints it (-n: no names)."""
    try:
        pkt = rip.parse(data)
    except WireError as exc:
        ctx.print(f"{src}: bad RIP packet ({exc.reason}), {len(data)} bytes")
        return
    if pkt.command != rip.RESPONSE:
        ctx.print(f"{src}:\n    unexpected response type {pkt.command}")
        return
    ctx.print(f"{src}: RIPv{pkt.version} {len(data)} bytes")
    auth = pkt.auth
    if auth is not None and auth.type == rip.AUTH_SIMPLE:
        ctx.print(f'  Password Authentication: "{_quoted(auth.password)}"')
    elif auth is not None:
        ctx.print(f"  MD5 Authentication len={auth.offset} KeyID={auth.keyid} "
                  f"seqno={auth.seq} rsvd=0,0")
    v1 = pkt.version == 1
    for e in pkt.entries:
        if e.afi == rip.AF_INET:
            name = ipv4.ntoa(e.addr)
            if e.mask and v1:
                name += f" mask={e.mask:#x} ? "
            elif e.mask:
                low = e.mask & -e.mask
                contiguous = (e.mask + low) & 0xFFFFFFFF == 0
                name += f"/{33 - low.bit_length()}" if contiguous else f" (mask {e.mask:#x})"
        else:
            name = f"(af {e.afi:#x}) {ipv4.ntoa(e.addr)}"
        line = f"  {name:<18} metric {e.metric:2d}"
        if e.nexthop:
            line += f" nhop={ipv4.ntoa(e.nexthop):<15}{' ?' if v1 else ''}"
        if e.tag:
            line += f" tag={e.tag:#x}{' ?' if v1 else ''}"
        ctx.print(line)


def _quoted(raw: bytes) -> str:
    """A password as rtquery's qstring shows it: printable as is, the rest escaped."""
    text = raw.rstrip(b"\0")
    out = []
    for c in text:
        if 32 <= c < 0x7F and c != 0x5C:
            out.append(chr(c))
        else:
            out.append({0x5C: "\\\\", 10: "\\n", 13: "\\r", 9: "\\t", 8: "\\b"}.get(
                c, f"\\{c:o}"))
    return "".join(out)
