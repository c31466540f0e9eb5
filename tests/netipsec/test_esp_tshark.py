"""Wireshark, a third implementation, decrypts and authenticates our ESP.

The Linux kernels this project's CI runs on have no XFRM ESP (no esp4/esp6), so the
interop tests against Linux's XFRM skip there; besides scapy's SecurityAssociation
(test_esp.py), tshark's ESP dissector, given the SAs' keys, must decrypt every packet to
the ICMP inside, check the ICV (for AES-CBC + HMAC-SHA-256-128) and see the sequence
numbers run 1, 2, ... per SA. A wrong key must make it fail, so the check can fail.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from vimage.net.bpf import open_capture

_spec = importlib.util.spec_from_file_location("ipsec_util",
                                               Path(__file__).with_name("ipsec_util.py"))
iu = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(iu)  # type: ignore[union-attr]
A, B, ok, pair, SPI_AB, SPI_BA = iu.A, iu.B, iu.ok, iu.pair, iu.SPI_AB, iu.SPI_BA
GCM_KEY, CBC_KEY, HMAC_KEY = iu.GCM_KEY, iu.CBC_KEY, iu.HMAC_KEY

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None,
                                reason="tshark is not installed")

ALGS = {  # Wireshark's names (its esp_sa table) and our keys
    "gcm": ("AES-GCM with 16 octet ICV [RFC4106]", GCM_KEY, "NULL", b""),
    "cbc": ("AES-CBC [RFC3602]", CBC_KEY, "HMAC-SHA-256-128 [RFC4868]", HMAC_KEY),
}


def tshark_esp(path: str, alg: str, enc_key: bytes | None = None) -> list[list[str]]:
    enc, key, auth, auth_key = ALGS[alg]
    key = key if enc_key is None else enc_key
    sas = []
    for src, dst, spi in ((A, B, SPI_AB), (B, A, SPI_BA)):
        record = ("IPv4", src, dst, f"{spi:#010x}", enc, f"0x{key.hex()}", auth,
                  f"0x{auth_key.hex()}" if auth_key else "")
        sas += ["-o", "uat:esp_sa:" + ",".join(f'"{x}"' for x in record)]
    out = subprocess.run(
        ["tshark", "-r", path, "-Y", "esp", "-o", "esp.enable_encryption_decode:TRUE",
         "-o", "esp.enable_authentication_check:TRUE", *sas, "-T", "fields",
         "-E", "separator=|", "-e", "esp.spi", "-e", "esp.sequence", "-e", "icmp.type",
         "-e", "icmp.seq", "-e", "esp.icv_good", "-e", "_ws.malformed"],
        capture_output=True, text=True, timeout=120, check=True).stdout
    return [line.split("|") for line in out.splitlines()]


@pytest.mark.parametrize("alg", ["gcm", "cbc"])
@pytest.mark.parametrize("mode", ["transport", "tunnel"])
def test_tshark_decrypts_our_esp(tmp_path, alg, mode):
    _, a, _, ia, _ = pair(alg, mode)
    path = str(tmp_path / "esp.pcap")
    with open_capture(ia, path, filter="esp"):
        ok(a, f"ping -c 3 {B}")
    rows = tshark_esp(path, alg)
    assert len(rows) == 6
    requests = [r for r in rows if r[0] == f"{SPI_AB:#010x}"]
    replies = [r for r in rows if r[0] == f"{SPI_BA:#010x}"]
    assert [(r[1], r[2], r[3]) for r in requests] == [("1", "8", "0"), ("2", "8", "1"),
                                                      ("3", "8", "2")]
    assert [(r[1], r[2], r[3]) for r in replies] == [("1", "0", "0"), ("2", "0", "1"),
                                                     ("3", "0", "2")]
    assert not any(r[5] for r in rows)  # nothing malformed
    if alg == "cbc":  # Wireshark computed the HMAC over our packet and it matched
        assert all(r[4] == "1" for r in rows), rows


@pytest.mark.parametrize("alg", ["gcm", "cbc"])
def test_tshark_cannot_decrypt_with_another_key(tmp_path, alg):
    _, a, _, ia, _ = pair(alg, "transport")
    path = str(tmp_path / "esp.pcap")
    with open_capture(ia, path, filter="esp"):
        ok(a, f"ping -c 1 {B}")
    wrong = bytes(reversed(ALGS[alg][1]))
    rows = tshark_esp(path, alg, enc_key=wrong)
    assert len(rows) == 2 and not any(r[2] == "8" for r in rows)  # no ICMP seen inside
