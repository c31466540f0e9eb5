"""The pytest toolkit's topology builders, under the names its users know.

They live in `vimage.topo` (one implementation for tests, benches and the plugin):
`Net` builds anything (hosts, routers, impaired links, shortest-path routes, names),
`star` and `line` are the plugin's factory fixtures.

`nat_via` and `divert_via` are shorthands for ipfw rules (they run `ipfw` in the vnet):
`ipfw add 100 nat N ip from any to any [via IF]` and `ipfw add RULE divert PORT ip from
any to any via IF`, each with `ipfw add 65000 allow ip from any to any` (added once) so
that the rest passes ipfw's default rule (deny unless
`net.inet.ip.fw.default_to_accept=1`). A packet a divert socket writes back resumes at
the first rule numbered above RULE, as on FreeBSD, so it meets rule 65000.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vimage.topo import Net, line, star

if TYPE_CHECKING:
    from vimage.vnet import Vnet


def nat_via(vnet: Vnet, number: int, ifname: str | None) -> None:
    """Translate with NAT instance `number` what `vnet` receives on or sends through
    `ifname`, or through any interface if `ifname` is None: the ipfw rules
    `ipfw add 100 nat N ip from any to any [via IF]` and `ipfw add 65000 allow ip from
    any to any` (ipfw's default rule denies)."""
    via = f" via {ifname}" if ifname else ""
    _ipfw(vnet, f"add 100 nat {number} ip from any to any{via}")


def divert_via(vnet: Vnet, port: int, ifname: str, rule: int = 100) -> None:
    """Divert to `port` what `vnet` receives on or sends through `ifname`, as rule
    `rule`: `ipfw add RULE divert PORT ip from any to any via IF` and an allow-all rule
    65000 for what the divert socket reinjects."""
    _ipfw(vnet, f"add {rule} divert {port} ip from any to any via {ifname}")


def _ipfw(vnet: Vnet, rule: str) -> None:
    for cmd in (rule, "add 65000 allow ip from any to any"):
        if cmd.startswith("add 65000") and vnet.cmd("ipfw -q list 65000").ok:
            continue  # already there (`ipfw list N` fails for a rule that does not exist)
        result = vnet.cmd(f"ipfw -q {cmd}")
        if not result.ok:
            raise RuntimeError(result.output.strip())


__all__ = ["Net", "divert_via", "line", "nat_via", "star"]
