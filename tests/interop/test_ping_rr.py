"""Record route across the Linux/vimage boundary: vimage's ping -R to Linux, and Linux's
ping -R to a vimage host, which records itself and reflects the option in its reply
(FreeBSD's ip_dooptions and icmp_reflect)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from conftest import Lab, Pair


def _rr_block(text: str) -> list[str]:
    """The addresses of the first RR: block of a ping output."""
    return text.partition("RR:")[2].partition("\n\n")[0].split()


def test_vimage_ping_record_route_to_linux(pair: Pair) -> None:
    res = pair.vnet.cmd("ping -c 1 -R -W 2000 10.9.0.2")
    assert res.status == 0, res.output
    lines = res.output.splitlines()
    assert lines[1].startswith("64 bytes from 10.9.0.2: icmp_seq=0 ttl=64 time="), res.output
    assert lines[2].startswith("RR: \t"), res.output
    rr = [line.strip() for line in lines[2:] if line.startswith(("RR: ", "\t"))]
    rr = [a.removeprefix("RR: ").strip() for a in rr]
    assert "10.9.0.2" in rr and rr[-1] == "10.9.0.1", res.output  # Linux, then us


def test_linux_ping_record_route_to_vimage(lab: Lab, pair: Pair) -> None:
    ping = lab.need("ping")
    res = lab.run(pair.link.ns, ping, "-c", "1", "-R", "-W", "2", "10.9.0.1")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "10.9.0.1" in _rr_block(res.stdout), res.stdout  # vimage recorded itself
