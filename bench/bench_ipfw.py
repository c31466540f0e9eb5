"""Forwarded packets per second through a router running ipfw, by ruleset size.

host a - router - host b (vimage.topo.router_chain with one router). The router's
ruleset is, side by side in one run:
  none        no ipfw rules: the hooks are not linked (the no-firewall figure)
  rules=N     N rules that each fail on the source address (`deny udp from 192.168.x.y
              to any`: protocol matches, address not) then `allow ip from any to any`
  table       one `deny udp from table(blocked) to any` over a table holding the same
              1000 addresses, then the allow: a lookup instead of 1000 rules
Every packet passes ipfw twice (in and out, as FreeBSD's forwarding path does), so each
rule is evaluated twice per packet. The frames are real: the one host a emits, queued N
times at the router. Writes JSON.
"""

from __future__ import annotations

import argparse
import time

from _report import report
from bench_forward import _first_frame
from vimage.kernel import Kernel
from vimage.topo import router_chain


def _ruleset(router, kind: str, n: int) -> None:  # type: ignore[no-untyped-def]
    if kind == "none":
        return
    lines: list[str] = []
    if kind == "rules":
        lines += [f"add {i + 1} deny udp from 192.168.{i >> 8}.{i & 0xFF} to any"
                  for i in range(n)]
    elif kind == "table":
        lines += [f"table blocked add 192.168.{i >> 8}.{i & 0xFF}" for i in range(n)]
        lines.append("add 1 deny udp from table(blocked) to any")
    lines.append("add 60000 allow ip from any to any")
    fw = router.ipfw
    from vimage.netpfil.ipfw import command

    command.run_file(fw, lines, command.Options(quiet=True), "bench")


def run_case(kind: str, n: int, packets: int, size: int) -> dict[str, object]:
    kernel = Kernel(clock="virtual", seed=1)
    nodes = router_chain(kernel, 1, name="fw")
    router = nodes[1]
    _ruleset(router, kind, n)
    frame, _sink = _first_frame(kernel, nodes, size)
    first_in = router.ifaces["epair0b"]
    queue = kernel.sched.queue
    before = router.ip.stats.forward
    delivered_before = nodes[-1].udp.stats.delivered
    t0 = time.perf_counter()
    c0 = time.process_time()
    for _ in range(packets):
        queue.append((first_in, frame))
    kernel.run(0)
    cpu = time.process_time() - c0
    elapsed = time.perf_counter() - t0
    forwarded = router.ip.stats.forward - before
    return {
        "ruleset": kind if kind != "rules" else f"rules={n}",
        "rules_evaluated_per_pass": (n + 1) if kind == "rules" else (2 if kind == "table" else 0),
        "table_entries": n if kind == "table" else 0,
        "packets": packets, "forwarded": forwarded,
        "delivered_at_b": nodes[-1].udp.stats.delivered - delivered_before,
        "seconds": elapsed, "cpu_seconds": cpu,
        "forwarded_per_s": forwarded / elapsed if elapsed else 0.0,
        "us_per_packet": elapsed / packets * 1e6 if packets else 0.0,
        # CPU time of this process: steadier than wall time on a shared machine
        "forwarded_per_cpu_s": forwarded / cpu if cpu else 0.0,
        "cpu_us_per_packet": cpu / packets * 1e6 if packets else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packets", type=int, default=20000)
    parser.add_argument("--size", type=int, default=64, help="UDP payload bytes")
    parser.add_argument("--sizes", default="0,10,100,1000", help="rule counts to measure")
    parser.add_argument("--table", type=int, default=1000, help="entries of the table case")
    parser.add_argument("--out", help="write the JSON here too")
    args = parser.parse_args(argv)
    runs = [run_case("none", 0, args.packets, args.size)]
    counts = [int(x) for x in args.sizes.split(",") if x]
    for n in counts:
        # fewer packets for big rulesets: the run stays short, the rate is the same
        runs.append(run_case("rules", n, max(args.packets // max(1, n // 100), 200),
                             args.size))
    runs.append(run_case("table", args.table, args.packets, args.size))
    base = runs[0]["cpu_us_per_packet"]
    for r in runs:
        r["cpu_us_over_no_firewall"] = r["cpu_us_per_packet"] - base  # type: ignore[operator]
    by_rules = {r["rules_evaluated_per_pass"]: r for r in runs if str(r["ruleset"]).startswith(
        "rules=")}
    most = max(by_rules) if by_rules else 0
    per_rule_ns = 0.0
    if most > 1 and 1 in by_rules:
        extra = (by_rules[most]["cpu_us_per_packet"]  # type: ignore[operator]
                 - by_rules[1]["cpu_us_per_packet"])
        per_rule_ns = extra * 1000 / (2 * (most - 1))  # two passes per packet
    report({"benchmark": "ipfw", "runs": runs, "cpu_ns_per_rule_evaluated": per_rule_ns},
           args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
