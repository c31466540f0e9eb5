"""Packet filters attached to the pfil hooks (FreeBSD sys/netpfil): ipfw, dummynet, NAT."""
