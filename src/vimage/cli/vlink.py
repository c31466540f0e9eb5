"""vlink: impair what an epair end transmits (in the spirit of IMUNES's vlink).

    vlink                    show every epair of this vnet
    vlink IF                 show IF's settings and counters
    vlink IF clear           remove every impairment
    vlink IF [bw|bandwidth RATE] [delay TIME] [jitter TIME] [loss P] [ber P] [dup P]
             [queue N]

RATE: `1Mbit/s`, `100kbps`, `64000` (bit/s, 0 = unlimited); TIME: `50ms`, `1.5s`,
`200us` (a bare number is milliseconds); P: `1%` or `0.01`; N: frames.
jitter: each frame's delay grows by a uniform random amount in [0, TIME] (the kernel
RNG), never reordering frames (see vimage.net.pipe).
The settings act on frames leaving IF, so impair both ends for both directions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.cli import Context, ToolError, UsageError
from vimage.cli._util import find_iface, ifaces_by_index, percent
from vimage.net.pipe import configure

if TYPE_CHECKING:
    from vimage.net.ifnet import Ifnet

# command-line word -> vimage.net.pipe setting
KEYWORDS: tuple[tuple[str, str], ...] = (
    ("bw", "bandwidth"), ("bandwidth", "bandwidth"), ("delay", "delay"), ("dly", "delay"),
    ("jitter", "jitter"),
    ("loss", "loss"), ("plr", "loss"), ("ber", "ber"), ("dup", "dup"), ("duplicate", "dup"),
    ("queue", "queue"), ("qlen", "queue"),
)


USAGE = """\
usage: vlink [interface]
       vlink interface clear
       vlink interface [bw rate] [delay time] [jitter time] [loss p] [ber p]
             [dup p] [queue n]
"""


def main(ctx: Context, argv: list[str]) -> int:
    if argv and argv[0].startswith("-"):
        raise UsageError(f"illegal option -- {argv[0].lstrip('-')}", synopsis=True)
    vnet = ctx.vnet
    if not argv:
        for ifp in ifaces_by_index(vnet):
            if ifp.kind == "epair":
                for line in show(ifp):
                    ctx.print(line)
        return 0
    ifp = find_iface(vnet, argv[0])
    if ifp.kind != "epair":
        raise ToolError(f"{ifp.name}: link impairment needs an epair interface")
    words = argv[1:]
    if not words:
        for line in show(ifp):
            ctx.print(line)
        return 0
    if words == ["clear"]:
        ifp.clear_impairment()
        return 0
    keywords = dict(KEYWORDS)
    settings: dict[str, object] = {}
    for i in range(0, len(words), 2):
        word = words[i]
        if word == "clear":
            raise UsageError("'clear' takes no other settings")
        key = keywords.get(word)
        if key is None:
            raise UsageError(f"unknown setting '{word}' "
                             "(use bw, delay, jitter, loss, ber, dup, queue)")
        if i + 1 >= len(words):
            raise UsageError(f"'{word}' requires a value")
        if key in settings:
            raise UsageError(f"'{word}' given twice")
        value = words[i + 1]
        if key == "queue" and not value.isdigit():
            raise ToolError(f"bad queue length '{value}' (frames, at least 1)")
        settings[key] = value
    try:
        configure(ifp, settings)  # validates everything before changing anything
    except ValueError as exc:
        raise ToolError(f"{ifp.name}: {exc}") from None
    return 0


def show(ifp: Ifnet) -> list[str]:
    pipe = ifp.pipe
    if pipe is None:
        return [f"{ifp.name}: no impairment"]
    bandwidth = f"{pipe.bandwidth} bit/s" if pipe.bandwidth else "unlimited"
    jitter = f" jitter {pipe.jitter_ns / 1e6:.3f} ms" if pipe.jitter_ns else ""
    return [
        f"{ifp.name}: bandwidth {bandwidth} delay {pipe.delay_ns / 1e6:.3f} ms{jitter} "
        f"loss {percent(pipe.loss)} ber {pipe.ber:g} duplicate {percent(pipe.dup)} "
        f"queue {pipe.queue}",
        f"\tdelivered {pipe.delivered} duplicated {pipe.duplicated} in flight {pipe.in_flight}",
        f"\tdropped: queue {pipe.dropped_queue} loss {pipe.dropped_loss} ber {pipe.dropped_ber}",
    ]
