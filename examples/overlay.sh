#!/usr/bin/env bash
# The overlay VPN through the vimage command: three sites, each a vnet (s1, s2, s3)
# with a private LAN (10.N.0.0/24, one host hN), joined over a shared "Internet" of two
# routers (r1, r2) by a full mesh of gif tunnels that IPsec protects (transport-mode
# ESP, AES-GCM-16, between the sites' public addresses 198.18.N.2). The hosts reach
# each other by their private addresses; a capture on the Internet shows only ESP.
# examples/overlay.py builds the same topology in-process, in virtual time.
#
#   examples/overlay.sh
#
# It talks to the vimage daemon at $VIMAGE_SOCKET (or the default socket) and starts
# one if none is running. Everything it made is destroyed at the end, also on failure.
set -euo pipefail

prefix=${OVERLAY_PREFIX:-ov}
nodes="r1 r2 s1 s2 s3 h1 h2 h3"
key=0x5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5ec0ffee00   # AES-128 key and salt: an example
tmp=$(mktemp -d)

cleanup() {
    for n in $nodes; do vimage -d "$prefix$n" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

v() { local node=$1; shift; vimage "$prefix$node" "$@"; }

# link NODE_A ADDR_A NODE_B ADDR_B: an epair between two nodes, one address each; the
# name of B's end is left in $peer_if
link() {
    local a_if b_if
    a_if=$(vimage ifconfig epair create)
    b_if=${a_if%a}b
    vimage -i "$prefix$1" "$a_if" >/dev/null
    vimage -i "$prefix$3" "$b_if" >/dev/null
    v "$1" ifconfig "$a_if" inet "$2" up
    v "$3" ifconfig "$b_if" inet "$4" up
    peer_if=$b_if
}

router_of() { if [ "$1" = 3 ]; then echo r2; else echo r1; fi; }

echo "# the nodes"
for n in $nodes; do vimage -c "$prefix$n" >/dev/null; done

echo "# the Internet: r1 and r2, and each site's public link"
link r1 198.18.0.1/24 r2 198.18.0.2/24
backbone_if=$peer_if
for n in 1 2 3; do
    link "s$n" "198.18.$n.2/24" "$(router_of $n)" "198.18.$n.1/24"
    link "h$n" "10.$n.0.2/24" "s$n" "10.$n.0.1/24"
    v "s$n" route -q add default "198.18.$n.1"
    v "h$n" route -q add default "10.$n.0.1"
done
for r in r1 r2 s1 s2 s3; do v $r sysctl net.inet.ip.forwarding=1 >/dev/null; done
v r1 route -q add -net 198.18.3.0/24 198.18.0.2
v r2 route -q add -net 198.18.1.0/24 198.18.0.1
v r2 route -q add -net 198.18.2.0/24 198.18.0.1

echo "# the gif mesh, and IPsec for what the gifs send"
for n in 1 2 3; do
    conf=$tmp/s$n.conf
    : >"$conf"
    for m in 1 2 3; do
        [ "$m" = "$n" ] && continue
        v "s$n" ifconfig "gif$m" create >/dev/null
        v "s$n" ifconfig "gif$m" tunnel "198.18.$n.2" "198.18.$m.2"
        if [ "$n" -lt "$m" ]; then
            v "s$n" ifconfig "gif$m" inet "10.255.$n$m.1" "10.255.$n$m.2"
        else
            v "s$n" ifconfig "gif$m" inet "10.255.$m$n.2" "10.255.$m$n.1"
        fi
        v "s$n" route -q add -net "10.$m.0.0/24" -interface "gif$m"
        cat >>"$conf" <<CONF
add 198.18.$n.2 198.18.$m.2 esp $((0x1000 + 16 * n + m)) -m transport -E aes-gcm-16 $key;
add 198.18.$m.2 198.18.$n.2 esp $((0x1000 + 16 * m + n)) -m transport -E aes-gcm-16 $key;
spdadd 198.18.$n.2 198.18.$m.2 ipencap -P out ipsec esp/transport//require;
spdadd 198.18.$m.2 198.18.$n.2 ipencap -P in ipsec esp/transport//require;
CONF
    done
    v "s$n" setkey -c <"$conf"
done
v s1 setkey -DP | head -4

echo "# across the overlay, while r2 captures its backbone link"
v r2 tcpdump -n -i "$backbone_if" -c 4 --duration 60 ip >"$tmp/capture.txt" 2>&1 &
capture=$!
sleep 2  # tcpdump is listening before the first ping
for n in 1 2 3; do
    for m in 1 2 3; do
        [ "$m" = "$n" ] && continue
        v "h$n" ping -c 2 "10.$m.0.2" | grep "packets transmitted"
    done
done
wait "$capture"
echo "# what r2 saw"
grep " IP " "$tmp/capture.txt"
if grep " IP " "$tmp/capture.txt" | grep -v "ESP(spi=" >/dev/null; then
    echo "overlay FAILED: plaintext on the Internet"
    exit 1
fi
v s1 netstat -s -p esp | grep -E "packets (in|out)$"
echo "overlay OK"
