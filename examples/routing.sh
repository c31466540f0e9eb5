#!/usr/bin/env bash
# The seed's routing example through the vimage command: router vnets joined by
# shaped point-to-point links, exchanging routes with RIP (routed), end hosts
# pinging and tracing across; then a cable is cut and RIP heals around it.
#
#   pc1 --- r1 ------ r2 --- pc2      r1-r2, r2-r3, r3-r1: 10 Mbit/s, 5 ms
#             \      /                pc links: 100 Mbit/s, 1 ms
#               r3
#
#   examples/routing.sh
#
# It talks to the vimage daemon at $VIMAGE_SOCKET (or the default socket) and
# starts one if none is running. The daemon runs in real time, so routed's timers
# are shortened for the demo (-P update=1,timeout=3,garbage=2: RIP's are 30/180/120 s).
# Everything is torn down at the end, also on failure.
set -euo pipefail

nodes="pc1 pc2 r1 r2 r3"
cables=()
RIP_PARMS=${RIP_PARMS:-update=1,timeout=3,garbage=2,damping=0.1/0.3}

cleanup() {
    for n in $nodes; do vimage -d "$n" 2>/dev/null || true; done
    for c in "${cables[@]}"; do vimage ifconfig "$c" destroy 2>/dev/null || true; done
}
trap cleanup EXIT

# cable LEFT LEFT-ADDR RIGHT RIGHT-ADDR SHAPE...: an epair, one end in each vnet,
# addresses on both, both ends shaped (vlink acts on what an end sends)
cable() {
    local left=$1 laddr=$2 right=$3 raddr=$4
    shift 4
    local a b
    a=$(vimage ifconfig epair create)
    b=${a%a}b
    cables+=("$a")
    vimage -i "$left" "$a"
    vimage -i "$right" "$b"
    vimage "$left" ifconfig "$a" inet "$laddr" up
    vimage "$right" ifconfig "$b" inet "$raddr" up
    vimage "$left" vlink "$a" "$@"
    vimage "$right" vlink "$b" "$@"
    last_cable="$a $b"
}

echo "# five virtual images"
for n in $nodes; do vimage -c "$n"; done

echo "# shaped point-to-point links"
cable pc1 10.1.0.20/24 r1 10.1.0.1/24 bw 100Mbit/s delay 1ms
cable pc2 10.2.0.20/24 r2 10.2.0.1/24 bw 100Mbit/s delay 1ms
cable r1 10.0.12.1/24 r2 10.0.12.2/24 bw 10Mbit/s delay 5ms
cut=$last_cable
cable r2 10.0.23.2/24 r3 10.0.23.3/24 bw 10Mbit/s delay 5ms
cable r3 10.0.13.3/24 r1 10.0.13.1/24 bw 10Mbit/s delay 5ms
vimage pc1 route add default 10.1.0.1
vimage pc2 route add default 10.2.0.1

echo "# routers: forwarding and routed"
for r in r1 r2 r3; do
    vimage "$r" sysctl net.inet.ip.forwarding=1
    vimage "$r" routed -s -P "$RIP_PARMS"
done
sleep 2

echo "# RIP has converged"
vimage r1 netstat -rn -f inet
vimage r1 rtquery -n -w 2 10.0.12.2
vimage pc1 ping -c 2 10.2.0.20
vimage pc1 traceroute -n -q 1 -w 2 10.2.0.20

echo "# the r1-r2 cable is cut"
set -- $cut
vimage r1 vlink "$1" loss 100%
vimage r2 vlink "$2" loss 100%
sleep 6

echo "# RIP has routed around it"
vimage r1 netstat -rn -f inet
vimage pc1 ping -c 2 10.2.0.20
vimage pc1 traceroute -n -q 1 -w 2 10.2.0.20
vimage r1 routed -S
