"""Packet filters on the pfil hooks (FreeBSD sys/netpfil): ipfw, dummynet and in-kernel NAT."""
