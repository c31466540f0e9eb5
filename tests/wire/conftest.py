"""Shared setup for wire tests: keep scapy quiet."""

import logging

logging.getLogger("scapy").setLevel(logging.ERROR)
logging.getLogger("scapy.runtime").setLevel(logging.ERROR)
