"""route get --libxo json|xml: what `route get` prints, as named fields.

FreeBSD's route(8) prints text only; vimage's `route get` takes `--libxo` as netstat
and arp do. Each `label: value` line of route.c's print_getmsg() becomes a field named
by its label (`route to` -> `route-to`, `interface`, `flags` without the angle
brackets), and the metrics row a `metrics` container with the row's column names
(`rtt,msec` -> `rtt-msec`), numbers as numbers; all in a `route-get` container.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.cli import _libxo

if TYPE_CHECKING:
    from vimage.cli import Context


def emit_get(ctx: Context, lines: list[str], style: str, pretty: bool) -> None:
    xo = _libxo.Xo(style, pretty)
    xo.open_container("route-get")
    head = next((i for i, line in enumerate(lines) if line.lstrip().startswith("recvpipe")),
                len(lines))
    for line in lines[:head]:
        label, _, value = line.strip().partition(": ")
        name = label.replace(" ", "-")
        value = value.strip("<>") if name == "flags" else value
        xo.emit("{:%s/%s}" % (name, "%d" if value.isdigit() else "%s"),  # noqa: UP031
                int(value) if value.isdigit() else value)
    if head < len(lines) - 1:
        xo.open_container("metrics")
        names = [n.replace(",", "-") for n in lines[head].split()]
        for name, value in zip(names, lines[head + 1].split(), strict=True):
            xo.emit("{:%s/%%d}" % name, int(value))  # noqa: UP031
        xo.close_container()
    xo.close_container()
    xo.finish(ctx)
