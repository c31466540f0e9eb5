"""ESP transforms (FreeBSD netipsec/xform_esp.c with opencrypto's ciphers): AES-GCM-16
(RFC 4106) and AES-CBC (RFC 3602) with HMAC-SHA-256-128 (RFC 4868), and NULL
encryption (RFC 2410) with HMAC-SHA-256-128, through the `cryptography` package.

A transform is made once per SA (its keys expanded once) and seals or opens the part of
an ESP packet after the SPI and sequence number: IV, ciphertext of payload + padding +
pad length + next header, ICV. The header (SPI, sequence number) is what the ICV or the
GCM additional data covers with it (RFC 4303 2.7 / RFC 4106 5, 32-bit sequence numbers).
"""

from __future__ import annotations

import hmac
from hashlib import sha256

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from vimage.wire import esp as wesp


class AuthError(Exception):
    """The ICV did not verify (FreeBSD counts esps_badauth)."""


class Transform:
    """One SA's algorithms and keys. `block` is the cipher's block size (padding),
    `ivlen` and `icvlen` the sizes ESP carries around the ciphertext."""

    enc_name = "null"
    auth_name = "null"
    block = 4
    ivlen = 0
    icvlen = 0

    def seal(self, head: bytes, plain: bytes, iv: bytes) -> bytes:
        raise NotImplementedError

    def open(self, head: bytes, body: bytes) -> bytes:
        raise NotImplementedError

    def overhead(self) -> int:
        """ESP header, IV, ICV and the worst-case padding: what encapsulation adds."""
        return wesp.HEADER_LEN + self.ivlen + self.icvlen + self.block + 1


class AesGcm16(Transform):
    """RFC 4106: a 16-, 24- or 32-byte AES key followed by a 4-byte salt; the 8-byte
    explicit IV with the salt makes the nonce; SPI and sequence number are the AAD."""

    enc_name = "aes-gcm-16"
    block = 4
    ivlen = 8
    icvlen = 16

    def __init__(self, key: bytes) -> None:
        if len(key) not in (20, 28, 36):
            raise ValueError(f"aes-gcm-16 needs a 160, 224 or 288 bit key, not {len(key) * 8}")
        self.aead = AESGCM(key[:-4])
        self.salt = key[-4:]

    def seal(self, head: bytes, plain: bytes, iv: bytes) -> bytes:
        return iv + self.aead.encrypt(self.salt + iv, plain, head)

    def open(self, head: bytes, body: bytes) -> bytes:
        if len(body) < self.ivlen + self.icvlen:
            raise AuthError("short")
        iv = body[:8]
        try:
            return self.aead.decrypt(self.salt + iv, body[8:], head)
        except InvalidTag:
            raise AuthError("bad tag") from None


class HmacSha256(Transform):
    """HMAC-SHA-256 truncated to 128 bits (RFC 4868) over header, IV and ciphertext; the
    base of the CBC transform, and alone with NULL encryption (RFC 2410)."""

    auth_name = "hmac-sha2-256"
    icvlen = 16

    def __init__(self, authkey: bytes) -> None:
        if len(authkey) != 32:
            raise ValueError(f"hmac-sha2-256 needs a 256 bit key, not {len(authkey) * 8}")
        self.mac = hmac.new(authkey, digestmod=sha256)

    def icv(self, data: bytes) -> bytes:
        mac = self.mac.copy()
        mac.update(data)
        return mac.digest()[:16]

    def encrypt(self, plain: bytes, iv: bytes) -> bytes:
        return plain

    def decrypt(self, iv: bytes, ct: bytes) -> bytes:
        return ct

    def seal(self, head: bytes, plain: bytes, iv: bytes) -> bytes:
        body = iv + self.encrypt(plain, iv)
        return body + self.icv(head + body)

    def open(self, head: bytes, body: bytes) -> bytes:
        if len(body) < self.ivlen + self.icvlen:
            raise AuthError("short")
        signed, icv = body[:-16], body[-16:]
        if not hmac.compare_digest(self.icv(head + signed), icv):
            raise AuthError("bad icv")
        ct = signed[self.ivlen:]
        if len(ct) % self.block:
            raise AuthError("not a whole number of blocks")
        return self.decrypt(signed[:self.ivlen], ct)


class AesCbcHmac(HmacSha256):
    """AES-CBC (RFC 3602, a random 16-byte IV) with HMAC-SHA-256-128."""

    enc_name = "aes-cbc"
    block = 16
    ivlen = 16

    def __init__(self, enckey: bytes, authkey: bytes) -> None:
        if len(enckey) not in (16, 24, 32):
            raise ValueError(f"aes-cbc needs a 128, 192 or 256 bit key, not {len(enckey) * 8}")
        super().__init__(authkey)
        self.aes = algorithms.AES(enckey)

    def encrypt(self, plain: bytes, iv: bytes) -> bytes:
        enc = Cipher(self.aes, modes.CBC(iv)).encryptor()
        return enc.update(plain) + enc.finalize()

    def decrypt(self, iv: bytes, ct: bytes) -> bytes:
        dec = Cipher(self.aes, modes.CBC(iv)).decryptor()
        return dec.update(ct) + dec.finalize()


ENC_ALGORITHMS = ("aes-gcm-16", "aes-cbc", "null")
AUTH_ALGORITHMS = ("hmac-sha2-256",)


def make(enc: str, enckey: bytes, auth: str | None, authkey: bytes) -> Transform:
    """The transform for setkey's `-E enc key [-A auth key]`; ValueError if refused."""
    if enc == "aes-gcm-16":
        if auth is not None:
            raise ValueError("aes-gcm-16 is combined mode: no -A")
        return AesGcm16(enckey)
    if auth != "hmac-sha2-256":
        raise ValueError(f"{enc} needs -A hmac-sha2-256")
    if enc == "aes-cbc":
        return AesCbcHmac(enckey, authkey)
    if enc == "null":
        return HmacSha256(authkey)
    raise ValueError(f"unknown encryption algorithm {enc}")
