"""IPv6: addresses (in6), input/output/forwarding (ip6), reassembly (frag6), ICMPv6
(icmp6), neighbour discovery (nd6) and the family's descriptors (in6_proto)."""
