"""tcpdump: live captures in virtual time, pcap files, filters and tcpdump's line formats."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess

import pytest
from scapy.all import IP, TCP, Ether, raw, rdpcap

from vimage import topo
from vimage.cli import usage_of
from vimage.kernel import Kernel
from vimage.socket.socket import AF_INET, IPPROTO_ICMP, SOCK_DGRAM, SOCK_RAW
from vimage.vnet import Vnet
from vimage.wire import icmp as wicmp
from vimage.wire.ethernet import mac_ntoa

logging.getLogger("scapy").setLevel(logging.ERROR)

LISTENING = "listening on epair0a, link-type EN10MB (Ethernet), snapshot length 262144 bytes"
SUPPRESSED = "tcpdump: verbose output suppressed, use -v[v]... for full protocol decode"


class Lab:
    """a (epair0a, 10.0.0.1) -- b (epair0b, 10.0.0.2), 10 ms each way; traffic on demand."""

    def __init__(self, seed: int = 5, delay: str | None = "10ms") -> None:
        self.kernel = k = Kernel(clock="virtual", seed=seed)
        self.a, self.b = k.create("a"), k.create("b")
        self.ia, self.ib = topo.connect(self.a, "10.0.0.1/24", self.b, "10.0.0.2/24")
        if delay:
            self.ia.impair(delay=delay)
            self.ib.impair(delay=delay)
        k.run(1)
        self.rx = self.b.socket(AF_INET, SOCK_DGRAM)
        self.rx.bind(("", 7000))
        self.tx = self.a.socket(AF_INET, SOCK_DGRAM)
        self.tx.bind(("", 5000))
        self.ping = self.a.socket(AF_INET, SOCK_RAW, IPPROTO_ICMP)

    @property
    def mac_a(self) -> str:
        return mac_ntoa(self.ia.mac)

    @property
    def mac_b(self) -> str:
        return mac_ntoa(self.ib.mac)

    def at(self, seconds: float, func, *args) -> None:  # type: ignore[no-untyped-def]
        self.kernel.call_later(seconds, func, *args)

    def mixed(self) -> None:
        """A datagram, one to a closed port, an echo request (ARP first, if needed)."""
        self.tx.sendto(b"hello", ("10.0.0.2", 7000))
        self.tx.sendto(b"nobody", ("10.0.0.2", 7001))
        self.ping.sendto(wicmp.build_echo(wicmp.ECHO, 0x1234, 1, b"x" * 56), ("10.0.0.2", 0))

    def big(self) -> None:
        self.tx.sendto(b"y" * 3000, ("10.0.0.2", 7000))

    def inject(self, frame: bytes) -> None:
        """Transmit a ready-made Ethernet frame on a's end, as if a had sent it."""
        self.ia.output(frame)


def run(vnet: Vnet, line: str, status: int = 0) -> list[str]:
    result = vnet.cmd(line)
    assert result.status == status, f"{line!r}: {result.output}"
    return result.output.splitlines()


def packets(lines: list[str]) -> list[str]:
    """The packet lines: no banner, no closing counts."""
    return [ln for ln in lines if not ln.startswith(("tcpdump: ", "listening on ",
                                                       "reading from file "))
            and not ln.endswith((" captured", " received by filter", " dropped by kernel"))]


def stats(lines: list[str]) -> list[str]:
    return lines[-3:]


MIXED = [
    "00:00:01.500000 ARP, Request who-has 10.0.0.2 tell 10.0.0.1, length 28",
    "00:00:01.520000 ARP, Reply 10.0.0.2 is-at {mac_b}, length 28",
    "00:00:01.520000 IP 10.0.0.1.5000 > 10.0.0.2.7000: UDP, length 5",
    "00:00:01.520000 IP 10.0.0.1.5000 > 10.0.0.2.7001: UDP, length 6",
    "00:00:01.520000 IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 4660, seq 1, length 64",
    "00:00:01.540000 IP 10.0.0.2 > 10.0.0.1: ICMP 10.0.0.2 udp port 7001 unreachable, length 36",
    "00:00:01.540000 IP 10.0.0.2 > 10.0.0.1: ICMP echo reply, id 4660, seq 1, length 64",
]


def test_live_capture_of_arp_udp_icmp_and_unreachable() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 7")
    assert lines[:2] == [SUPPRESSED, LISTENING]
    assert packets(lines) == [ln.format(mac_b=lab.mac_b) for ln in MIXED]
    assert stats(lines) == ["7 packets captured", "7 packets received by filter",
                            "0 packets dropped by kernel"]
    # -c returns as soon as the 7th packet is in: exactly 0.54 s after the command began
    assert lab.kernel.now_ns() == 1_540_000_000


def test_count_and_filter_and_singular_counts() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 1 icmp and src host 10.0.0.2")
    assert packets(lines) == [MIXED[5]]
    # the filter saw ARP request and reply, 3 sent packets, then the unreachable
    assert stats(lines) == ["1 packet captured", "6 packets received by filter",
                            "0 packets dropped by kernel"]


def test_arp_lines_with_link_headers() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 2 -e arp")
    a, b = lab.mac_a, lab.mac_b
    assert packets(lines) == [
        f"00:00:01.500000 {a} > ff:ff:ff:ff:ff:ff, ethertype ARP (0x0806), length 42: "
        "Request who-has 10.0.0.2 tell 10.0.0.1, length 28",
        f"00:00:01.520000 {b} > {a}, ethertype ARP (0x0806), length 42: "
        f"Reply 10.0.0.2 is-at {b}, length 28",
    ]


def test_fragments_plain_and_verbose() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)  # resolve ARP first
    lab.at(2.0, lab.big)
    lines = packets(run(lab.b, "tcpdump -i epair0b -c 3 -v udp and greater 80"))
    ident = re.search(r", id (\d+),", lines[0]).group(1)  # type: ignore[union-attr]
    head = f"00:00:03.010000 IP (tos 0x0, ttl 64, id {ident}, offset"
    assert lines == [
        f"{head} 0, flags [+], proto UDP (17), length 1500)",
        "    10.0.0.1.5000 > 10.0.0.2.7000: UDP, length 3000",
        f"{head} 1480, flags [+], proto UDP (17), length 1500)",
        "    10.0.0.1 > 10.0.0.2: ip-proto-17",
        f"{head} 2960, flags [none], proto UDP (17), length 68)",
        "    10.0.0.1 > 10.0.0.2: ip-proto-17",
    ]


def test_fragments_without_verbose_and_ports_only_in_the_first() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lab.at(2.0, lab.big)
    lines = run(lab.b, "tcpdump -i epair0b -c 3 -Q in udp and greater 80")
    assert packets(lines) == [
        "00:00:03.010000 IP 10.0.0.1.5000 > 10.0.0.2.7000: UDP, length 3000",
        "00:00:03.010000 IP 10.0.0.1 > 10.0.0.2: ip-proto-17",
        "00:00:03.010000 IP 10.0.0.1 > 10.0.0.2: ip-proto-17",
    ]
    lab.at(1.0, lab.big)
    lines = run(lab.b, "tcpdump -i epair0b -c 3 --duration 5 port 7000")
    assert packets(lines) == ["00:00:04.020000 IP 10.0.0.1.5000 > 10.0.0.2.7000: UDP, "
                              "length 3000"]
    assert stats(lines)[:2] == ["1 packet captured", "3 packets received by filter"]


def test_duration_runs_exactly_that_long() -> None:
    lab = Lab()
    start = lab.kernel.now_ns()
    lines = run(lab.a, "tcpdump -i epair0a --duration 2.5")
    assert lab.kernel.now_ns() - start == 2_500_000_000
    assert lines == [SUPPRESSED, LISTENING, "0 packets captured",
                     "0 packets received by filter", "0 packets dropped by kernel"]


def test_direction_and_timestamp_formats() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 3 -Q in -tt")
    assert [ln.split(" ", 1)[0] for ln in packets(lines)] == ["1.520000", "1.540000",
                                                             "1.540000"]
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 1 -t icmp")
    assert packets(lines) == ["IP 10.0.0.1 > 10.0.0.2: ICMP echo request, id 4660, seq 1, "
                              "length 64"]
    lab.kernel.run(1)  # -c stopped at the request: let the answers land before going on
    lab.ib.impair(delay="1.23456789ms")
    delay_ns = lab.ib.pipe.delay_ns
    assert delay_ns % 1000  # finer than a microsecond
    at = lab.kernel.now_ns() + 500_000_000 + 10_000_000 + delay_ns
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 1 -Q in --time-stamp-precision nano")
    assert packets(lines)[0].startswith(
        f"00:00:{at // 10**9:02d}.{at % 10**9:09d} IP 10.0.0.2 > 10.0.0.1: ICMP")
    lab.kernel.run(1)
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 2 -Q in -ttt")
    assert [ln.split(" ", 1)[0] for ln in packets(lines)] == ["00:00:00.000000",
                                                             "00:00:00.000000"]
    lab.kernel.run(1)
    at = lab.kernel.now_ns() + 500_000_000 + 10_000_000 + delay_ns
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 1 -Q in -tttt")
    assert packets(lines)[0].startswith(
        f"1970-01-01 00:00:{at // 10**9:02d}.{at % 10**9 // 1000:06d} IP 10.0.0.2")


def test_hex_dump() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -i epair0a -c 1 -x arp")
    ours = lab.ia.mac.hex()
    assert packets(lines)[1:] == [
        f"\t0x0000:  0001 0800 0604 0001 {ours[:4]} {ours[4:8]} {ours[8:]} 0a00",
        "\t0x0010:  0001 0000 0000 0000 0a00 0002",
    ]


def test_loopback_capture() -> None:
    lab = Lab()
    lab.at(0.25, lab.tx.sendto, b"me", ("127.0.0.1", 9))
    lines = run(lab.a, "tcpdump -i lo0 -c 2 -e")
    assert lines[1] == "listening on lo0, link-type NULL (BSD loopback), snapshot length " \
                       "262144 bytes"
    assert packets(lines) == [
        "00:00:01.250000 AF IPv4 (2), length 34: 127.0.0.1.5000 > 127.0.0.1.9: UDP, length 2",
        "00:00:01.250000 AF IPv4 (2), length 60: 127.0.0.1 > 127.0.0.1: "
        "ICMP 127.0.0.1 udp port 9 unreachable, length 36",
    ]


def tcp_frames(lab: Lab) -> list[bytes]:
    eth = Ether(src=lab.mac_a, dst=lab.mac_b)
    a, b = "10.0.0.1", "10.0.0.2"
    opts = [("MSS", 1460), ("NOP", None), ("WScale", 6), ("SAckOK", b""), ("Timestamp", (1, 0))]
    return [raw(p) for p in (
        eth / IP(src=a, dst=b) / TCP(sport=40000, dport=80, flags="S", seq=1000, window=65535,
                                     options=opts),
        eth / IP(src=b, dst=a) / TCP(sport=80, dport=40000, flags="SA", seq=5000, ack=1001,
                                     window=65535),
        eth / IP(src=a, dst=b) / TCP(sport=40000, dport=80, flags="A", seq=1001, ack=5001,
                                     window=502),
        eth / IP(src=a, dst=b) / TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=5001,
                                     window=502) / b"hello",
        eth / IP(src=b, dst=a) / TCP(sport=80, dport=40000, flags="FA", seq=5001, ack=1006,
                                     window=510),
        eth / IP(src=a, dst=b) / TCP(sport=40000, dport=80, flags="R", seq=1006, window=0),
    )]


def test_tcp_segments() -> None:
    lab = Lab(delay=None)
    for i, frame in enumerate(tcp_frames(lab)):
        lab.at(0.5 + i / 1000, lab.inject, frame)
    lines = run(lab.b, "tcpdump -i epair0b -c 6 -t -Q in tcp")  # not our RSTs to them
    assert packets(lines) == [
        "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [S], seq 1000, win 65535, "
        "options [mss 1460,nop,wscale 6,sackOK,TS val 1 ecr 0], length 0",
        "IP 10.0.0.2.80 > 10.0.0.1.40000: Flags [S.], seq 5000, ack 1001, win 65535, length 0",
        "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [.], ack 1, win 502, length 0",
        "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [P.], seq 1:6, ack 1, win 502, length 5",
        "IP 10.0.0.2.80 > 10.0.0.1.40000: Flags [F.], seq 1, ack 6, win 510, length 0",
        "IP 10.0.0.1.40000 > 10.0.0.2.80: Flags [R], seq 1006, win 0, length 0",
    ]
    for i, frame in enumerate(tcp_frames(lab)[:4]):
        lab.at(0.5 + i / 1000, lab.inject, frame)
    lines = run(lab.b, "tcpdump -i epair0b -c 4 -t -q -S -Q in tcp")
    assert packets(lines)[3] == "IP 10.0.0.1.40000 > 10.0.0.2.80: tcp 5"


def test_write_then_read_round_trip(tmp_path) -> None:
    path = str(tmp_path / "mixed.pcap")
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, f"tcpdump -i epair0a -c 7 -w {path}")
    assert lines == ["tcpdump: " + LISTENING, "7 packets captured",
                     "7 packets received by filter", "0 packets dropped by kernel"]
    assert len(rdpcap(path)) == 7
    lines = run(lab.a, f"tcpdump -r {path}")
    assert lines[0] == f"reading from file {path}, link-type EN10MB (Ethernet), " \
                       "snapshot length 262144"
    assert lines[1:] == [ln.format(mac_b=lab.mac_b) for ln in MIXED]  # no counts after -r
    assert run(lab.b, f"tcpdump -r {path} -c 1 icmp")[1:] == [MIXED[4]]
    copy = str(tmp_path / "icmp.pcap")
    assert run(lab.b, f"tcpdump -r {path} -w {copy} icmp") == [lines[0]]
    assert run(lab.b, f"tcpdump -r {copy}")[1:] == MIXED[4:]


def test_r_dash_reads_the_standard_input_given_to_cmd(tmp_path) -> None:
    path = tmp_path / "mixed.pcap"
    lab = Lab()
    lab.at(0.5, lab.mixed)
    run(lab.a, f"tcpdump -i epair0a -c 7 -w {path}")
    result = lab.b.cmd("tcpdump -r - -c 2 icmp", stdin=path.read_bytes())
    assert result.status == 0, result.output
    assert result.output.splitlines() == [
        "reading from file -, link-type EN10MB (Ethernet), snapshot length 262144",
        MIXED[4], MIXED[5]]
    assert run(lab.b, "tcpdump -r -", 1) == [  # no standard input given: it is empty
        "tcpdump: -: truncated dump file; tried to read 4 file header bytes, only got 0"]


def test_reading_a_file_does_not_take_the_kernel_lock(tmp_path) -> None:
    """-r needs no kernel: a reader waiting on a pipe must not hold up the kernel."""
    from vimage.cli import Context, tcpdump

    lab = Lab()
    lab.at(0.5, lab.mixed)
    path = tmp_path / "mixed.pcap"
    run(lab.a, f"tcpdump -i epair0a -c 7 -w {path}")
    held: list[bool] = []

    class Spy:
        def __enter__(self) -> None:
            held.append(True)

        def __exit__(self, *exc: object) -> None:
            pass

    sched = lab.kernel.sched
    real = sched.cond
    sched.cond = Spy()  # type: ignore[assignment]
    try:
        ctx = Context(lab.a, "tcpdump")
        assert tcpdump.main(ctx, ["-r", str(path), "-c", "1"]) == 0
    finally:
        sched.cond = real
    assert held == [] and ctx.out.getvalue().count("\n") == 2


@pytest.mark.parametrize(("line", "message", "status"), [
    ("tcpdump -i epair0a -c 1 udp and bogus",
     "tcpdump: can't parse filter expression: unknown word 'bogus'", 1),
    ("tcpdump -i epair0a -c 1 port 99999",
     "tcpdump: can't parse filter expression: bad port '99999'", 1),
    ("tcpdump -i epair9 -c 1", "tcpdump: epair9: No such device exists", 1),
    ("tcpdump -i epair0a", "tcpdump: -c count or --duration seconds is required (there is no "
     "^C in vnet.cmd)", 64),
    ("tcpdump -i epair0a -c 0", "tcpdump: invalid packet count 0", 1),
    ("tcpdump -i epair0a -c 1 -s 300000", "tcpdump: invalid snaplen 300000", 1),
    ("tcpdump -i epair0a -c 1 -Q up", "tcpdump: up: invalid direction (use in, out or inout)",
     1),
    ("tcpdump -i epair0a --duration soon", "tcpdump: invalid duration soon", 1),
    ("tcpdump -i epair0a -c 1 -w /nonexistent/dir/x.pcap",
     "tcpdump: /nonexistent/dir/x.pcap: No such file or directory", 1),
    ("tcpdump -r /nonexistent/x.pcap", "tcpdump: /nonexistent/x.pcap: No such file or directory",
     1),
])
def test_errors_are_one_line(line: str, message: str, status: int) -> None:
    lab = Lab()
    assert run(lab.a, line, status) == [message]
    assert lab.ia.bpf is None


def test_bad_option_and_bad_file(tmp_path) -> None:
    lab = Lab()
    lines = run(lab.a, "tcpdump -Z", 64)
    assert lines == ["tcpdump: illegal option -- Z", *usage_of("tcpdump").splitlines()]
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file")
    assert run(lab.a, f"tcpdump -r {junk}", 1) == [f"tcpdump: {junk}: bad dump file format"]


def test_capture_ends_when_the_interface_goes_away() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lab.at(1.0, lab.ia.destroy)
    lines = run(lab.b, "tcpdump -i epair0b --duration 10", 1)
    assert lines[-4:] == ["tcpdump: pcap_loop: The interface disappeared",
                          "7 packets captured", "7 packets received by filter",
                          "0 packets dropped by kernel"]
    assert lab.kernel.now_ns() == 2_000_000_000  # it stopped at once, not after 10 s


def test_default_interface_is_the_first_non_loopback_one() -> None:
    lab = Lab()
    lab.at(0.5, lab.mixed)
    lines = run(lab.a, "tcpdump -c 1")
    assert lines[1] == LISTENING and len(packets(lines)) == 1


def test_idle_virtual_time_ends_a_counted_capture() -> None:
    kernel = Kernel(clock="virtual", seed=1)
    vnet = kernel.create("quiet")
    vnet.cmd("ifconfig lo0 up")
    lines = run(vnet, "tcpdump -i lo0 -c 5")
    assert lines[-4:] == ["tcpdump: virtual time is idle: no more packets can arrive",
                          "0 packets captured", "0 packets received by filter",
                          "0 packets dropped by kernel"]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
def test_tshark_decodes_our_captures_cleanly(tmp_path) -> None:
    lab = Lab()
    eth_path, lo_path = str(tmp_path / "eth.pcap"), str(tmp_path / "lo.pcap")
    lab.at(0.5, lab.mixed)
    lab.at(0.6, lab.big)
    for i, frame in enumerate(tcp_frames(lab)):
        lab.at(0.7 + i / 100, lab.inject, frame)
    run(lab.a, f"tcpdump -i epair0a -w {eth_path} --duration 2")
    lab.at(0.5, lab.tx.sendto, b"me", ("127.0.0.1", 9))
    run(lab.a, f"tcpdump -i lo0 -w {lo_path} --duration 1")
    # mixed: 7; the big datagram: 3 fragments; 6 TCP segments, 4 of them to b, whose TCP
    # (no listener on port 80) answers the SYN, the ACK and the data with a reset
    for path, count in ((eth_path, 7 + 3 + 6 + 3), (lo_path, 2)):
        proc = subprocess.run(
            ["tshark", "-r", path, "-V", "-o", "ip.check_checksum:TRUE",
             "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE"],
            capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout
        assert text.count("\nFrame ") + text.startswith("Frame ") == count
        assert "Malformed" not in text
        assert "[Checksum: Bad]" not in text and "Checksum Status: Bad" not in text
        assert "incorrect" not in text
    eth = subprocess.run(["tshark", "-r", eth_path, "-T", "fields", "-e", "frame.protocols"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    protos = eth.split()
    assert sum(p.endswith(":arp") for p in protos) == 2
    assert sum(":icmp" in p for p in protos) == 3
    assert sum(":tcp" in p and ":icmp" not in p for p in protos) == 6 + 3
    assert any(":udp" in p for p in protos)
    lo = subprocess.run(["tshark", "-r", lo_path, "-T", "fields", "-e", "frame.protocols"],
                        capture_output=True, text=True, timeout=120, check=True).stdout
    assert all(p.startswith("null:ip:") for p in lo.split())
