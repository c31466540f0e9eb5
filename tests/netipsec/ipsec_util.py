"""Shared by the IPsec tests: two vnets a (192.0.2.1) and b (192.0.2.2) on one epair,
keyed with setkey for ESP in transport or tunnel mode with either algorithm."""

from __future__ import annotations

from vimage.kernel import Kernel
from vimage.net.ifnet import Ifnet
from vimage.topo import connect
from vimage.vnet import Vnet

A, B = "192.0.2.1", "192.0.2.2"
GCM_KEY = bytes(range(1, 21))  # 16-byte AES key + 4-byte salt
CBC_KEY = bytes(range(16))
HMAC_KEY = bytes(range(32, 64))
SPI_AB, SPI_BA = 0x1000, 0x1001


def alg_args(alg: str) -> str:
    if alg == "gcm":
        return f"-E aes-gcm-16 0x{GCM_KEY.hex()}"
    return f"-E aes-cbc 0x{CBC_KEY.hex()} -A hmac-sha2-256 0x{HMAC_KEY.hex()}"


def config(alg: str, mode: str, here: str, there: str, level: str = "require") -> str:
    """setkey input for the host `here` talking to `there` (both SAs, both policies)."""
    ends_out = f"{here}-{there}" if mode == "tunnel" else ""
    ends_in = f"{there}-{here}" if mode == "tunnel" else ""
    return (f"add {A} {B} esp {SPI_AB:#x} -m {mode} {alg_args(alg)};\n"
            f"add {B} {A} esp {SPI_BA:#x} -m {mode} {alg_args(alg)};\n"
            f"spdadd {here} {there} any -P out ipsec esp/{mode}/{ends_out}/{level};\n"
            f"spdadd {there} {here} any -P in ipsec esp/{mode}/{ends_in}/{level};\n")


def ok(vnet: Vnet, line: str, stdin: str | None = None) -> str:
    result = vnet.cmd(line, stdin=None if stdin is None else stdin.encode())
    assert result.status == 0, f"{line}: {result.output}"
    return result.output


def pair(alg: str | None = "gcm", mode: str = "transport",
         seed: int = 1) -> tuple[Kernel, Vnet, Vnet, Ifnet, Ifnet]:
    kernel = Kernel(clock="virtual", seed=seed)
    a, b = kernel.create("a"), kernel.create("b")
    ia, ib = connect(a, f"{A}/24", b, f"{B}/24")
    if alg is not None:
        ok(a, "setkey -c", config(alg, mode, A, B))
        ok(b, "setkey -c", config(alg, mode, B, A))
    kernel.run(1)
    return kernel, a, b, ia, ib


def scapy_sa(alg: str, spi: int, mode: str, src: str, dst: str):
    """scapy's SecurityAssociation for one of our SAs."""
    from scapy.layers.inet import IP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import ESP, SecurityAssociation

    outer = IPv6 if ":" in src else IP
    tunnel = outer(src=src, dst=dst) if mode == "tunnel" else None
    if alg == "gcm":
        return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=GCM_KEY,
                                   tunnel_header=tunnel)
    return SecurityAssociation(ESP, spi=spi, crypt_algo="AES-CBC", crypt_key=CBC_KEY,
                               auth_algo="SHA2-256-128", auth_key=HMAC_KEY,
                               tunnel_header=tunnel)
