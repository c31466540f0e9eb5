#!/usr/bin/env bash
# The classic vimage "bridging" demo: two virtual images joined by a virtual
# Ethernet cable (an epair), one end moved into each, addresses on both ends,
# and a ping across. Everything is torn down at the end, also on failure.
#
#   examples/bridging.sh
#
# It talks to the vimage daemon at $VIMAGE_SOCKET (or the default socket) and
# starts one if none is running; `vimage daemon stop` stops it afterwards.
set -euo pipefail

left=${LEFT:-left}
right=${RIGHT:-right}
cable=

cleanup() {
    vimage -d "$left" 2>/dev/null || true
    vimage -d "$right" 2>/dev/null || true
    # the ends came home when their vnets went; destroying one takes its peer along
    [ -n "$cable" ] && vimage ifconfig "$cable" destroy 2>/dev/null || true
}
trap cleanup EXIT

echo "# two virtual images"
vimage -c "$left"
vimage -c "$right"
vimage -l

cable=$(vimage ifconfig epair create)   # prints the a end, e.g. epair0a
peer=${cable%a}b
echo "# a virtual cable in the base vnet: $cable and $peer"

echo "# one end into each image"
vimage -i "$left" "$cable"
vimage -i "$right" "$peer"

echo "# addresses on both ends"
vimage "$left" ifconfig "$cable" inet 10.0.0.1/24 up
vimage "$right" ifconfig "$peer" inet 10.0.0.2/24 up
vimage "$left" ifconfig "$cable"

echo "# across the cable"
vimage "$left" ping -c 3 10.0.0.2
vimage "$right" arp -an
vimage -lv
