"""The pytest toolkit's topology builders, under the names its users know.

They live in `vimage.topo` (one implementation for tests, benches and the plugin):
`Net` builds anything (hosts, routers, impaired links, shortest-path routes, names),
`star` and `line` are the plugin's factory fixtures.
"""

from __future__ import annotations

from vimage.topo import Net, line, star

__all__ = ["Net", "line", "star"]
