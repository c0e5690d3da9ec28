"""The PDF standard security handler's values for AES-256 (revision 6, ISO 32000-2 § 7.6.4).

qpdf can compute these itself, but the qpdf bundled with pikepdf's wheels uses its own C++
crypto, and revision 6's password hash (algorithm 2.B: at least 64 rounds of AES-128 over
~3 KB plus SHA-2) then costs ~2 ms each, ~8 ms per document. Here the same arithmetic runs in
OpenSSL: AES through the system's ``libcrypto`` re-keyed in place (``libcrypto.py``; through the
``cryptography`` package where there is none, ~25 % slower), SHA-2 through ``hashlib``: ~0.8 ms
a hash. ``tests/unit/test_encryption.py`` checks the result against qpdf and poppler, which
derive the key from the password on their own.

Only the user password's entries (``/U``, ``/UE``) are derived from a password. ``/O`` and
``/OE`` are random bytes: the owner password is meant to be unknown to everybody, and random
values are exactly that: no password matches them, and they cannot be told apart from a hash
of one. This saves the two owner hashes, the costliest (they also hash the 48-byte ``/U``).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import pikepdf

from rendering.libcrypto import CbcEncrypt, cbc_encrypter

__all__ = ["SecurityHandler", "new_handler", "permission_bits"]

_SHA2 = (hashlib.sha256, hashlib.sha384, hashlib.sha512)
_MAX_ROUND_BYTES = 64 * (127 + 64 + 48)  # 64 times (password, longest hash, an owner's /U)


@dataclass(frozen=True)
class SecurityHandler:
    """Everything the ``/Encrypt`` dictionary holds, plus the file key that encrypts the data."""

    file_key: bytes
    permissions: int  # /P
    u: bytes
    ue: bytes
    o: bytes
    oe: bytes
    perms: bytes

    def encrypt_dictionary(self) -> str:
        """The dictionary in PDF syntax (strings as hex, as qpdf writes them)."""
        return (
            "<< /Filter /Standard /V 5 /R 6 /Length 256"
            " /CF << /StdCF << /AuthEvent /DocOpen /CFM /AESV3 /Length 32 >> >>"
            " /StmF /StdCF /StrF /StdCF /EncryptMetadata true"
            f" /P {self.permissions} /U <{self.u.hex()}> /UE <{self.ue.hex()}>"
            f" /O <{self.o.hex()}> /OE <{self.oe.hex()}> /Perms <{self.perms.hex()}> >>"
        )


def new_handler(user_password: str, permissions: int) -> SecurityHandler:
    """A fresh random file key, locked with ``user_password`` (algorithms 8 and 10)."""
    password = user_password.encode("utf-8")[:127]  # what qpdf does: UTF-8, at most 127 bytes
    file_key = secrets.token_bytes(32)
    validation_salt, key_salt = secrets.token_bytes(8), secrets.token_bytes(8)
    u = password_hash(password, validation_salt) + validation_salt + key_salt
    ue = _aes256_cbc_zero_iv(password_hash(password, key_salt), file_key)
    perms_block = (
        (permissions & 0xFFFFFFFF).to_bytes(4, "little")
        + b"\xff\xff\xff\xff"
        + b"Tadb"
        + secrets.token_bytes(4)
    )
    perms = _aes256_cbc_zero_iv(file_key, perms_block)  # one block: ECB, as the spec says
    return SecurityHandler(
        file_key=file_key,
        permissions=permissions,
        u=u,
        ue=ue,
        o=secrets.token_bytes(48),
        oe=secrets.token_bytes(32),
        perms=perms,
    )


def password_hash(password: bytes, salt: bytes, user_key: bytes = b"") -> bytes:
    """Algorithm 2.B: rounds of AES-128-CBC and SHA-256/384/512 until the data says stop."""
    with cbc_encrypter(_MAX_ROUND_BYTES) as encrypt:
        return hash_rounds(password, salt, user_key, encrypt or cryptography_cbc)


def hash_rounds(password: bytes, salt: bytes, user_key: bytes, encrypt: CbcEncrypt) -> bytes:
    key = hashlib.sha256(password + salt + user_key).digest()
    rounds = 0
    while True:
        data = encrypt(key[:16], key[16:32], (password + key + user_key) * 64)
        # The first 16 bytes as a big-endian number, mod 3; 256 ≡ 1 (mod 3), so the byte sum.
        key = _SHA2[sum(data[:16]) % 3](data).digest()
        rounds += 1
        if rounds >= 64 and data[-1] <= rounds - 32:
            return key[:32]


def cryptography_cbc(key: bytes, iv: bytes, data: bytes) -> memoryview:
    """AES-CBC, no padding, through the ``cryptography`` package: the portable path, imported
    only where there is no libcrypto (it would add ~6 MB to every render worker)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    encryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return memoryview(encryptor.update(data) + encryptor.finalize())


def permission_bits(allow: pikepdf.Permissions) -> int:
    """``/P`` for revision 6: the granted bits, reserved bits 7-8 and 13-32 set, as a signed int.

    Bit 10 (extraction for accessibility) is always set, as qpdf does: PDF 2.0 deprecates it and
    readers must grant accessibility regardless."""
    granted = {
        3: allow.print_lowres,
        4: allow.modify_other,
        5: allow.extract,
        6: allow.modify_annotation,
        9: allow.modify_form,
        10: True,
        11: allow.modify_assembly,
        12: allow.print_highres,
    }
    bits = 0xFFFFF0C0 | sum(1 << (bit - 1) for bit, on in granted.items() if on)
    return bits - (1 << 32)  # bit 32 is set: negative


def _aes256_cbc_zero_iv(key: bytes, data: bytes) -> bytes:
    """``/UE`` (two blocks) and ``/Perms`` (one block, where CBC with a zero iv is ECB)."""
    with cbc_encrypter(len(data), key_bytes=32) as encrypt:
        return bytes((encrypt or cryptography_cbc)(key, bytes(16), data))
