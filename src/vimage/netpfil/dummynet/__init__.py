"""dummynet: per-vnet traffic shaping with pipes, queues and schedulers (FreeBSD
dummynet(4), dnctl(8)); ipfw's `pipe N` and `queue N` actions send packets here.

    vnet.dummynet.enqueue(number, is_queue, pkt, ifp, outgoing, resume)
    command(vnet, argv, prog) -> str          (`pipe 1 config bw 1Mbit/s delay 10`, ...)

See docs/dummynet.md. The state and packet path are in `core`, the disciplines in
`schedulers`, the command language and listings in `config`.
"""

from __future__ import annotations

from vimage.netpfil.dummynet.config import command
from vimage.netpfil.dummynet.core import DN_MAX_ID, DummynetState, vnet_attach, vnet_detach
from vimage.protosw import Protocol
from vimage.sysctl import oids

SYSCTLS = oids("net.inet.ip.dummynet", "dummynet", (
    ("hash_size", "Default hash table size", 16, 65536),
    ("pipe_slot_limit", "Upper limit in slots for pipe queue", 2, 1 << 20),
    ("pipe_byte_limit", "Upper limit in bytes for pipe queue", 2048, 1 << 30),
    ("expire", "Expire empty queues and pipes", 0, 1),
    ("max_chain_len", "Max ratio between dynamic queues and buckets", 1, 1 << 16),
    ("red_avg_pkt_size", "RED Medium packet size", 1, 1 << 16),
    ("io_pkt", "Number of packets passed to dummynet", 0, 2**63 - 1),
    ("io_pkt_fast", "Number of packets bypassed dummynet scheduler", 0, 2**63 - 1),
    ("io_pkt_drop", "Number of packets dropped by dummynet", 0, 2**63 - 1),
    ("queue_count", "Number of queues", 0, 2**63 - 1),
    ("si_count", "Number of scheduler instances", 0, 2**63 - 1),
))

PROTOCOL = Protocol("dummynet", 66, "dummynet", vnet_attach, vnet_detach, sysctls=SYSCTLS)

__all__ = ["DN_MAX_ID", "PROTOCOL", "SYSCTLS", "DummynetState", "command"]
