"""AES-128-CBC through the system's OpenSSL (``libcrypto``, the library ``hashlib`` already uses),
re-keyed in place for each of revision 6's 64+ password-hash rounds.

Why not ``cryptography``: building a ``Cipher`` object costs ~5 µs, twice the encryption of a
round's ~2.7 KB, and a document hashes two passwords of ~70 rounds each: this path makes each
hash ~25 % cheaper (measured in ``README.md``, Performance). ``security_handler.py`` falls back
to ``cryptography`` where no ``libcrypto`` can be loaded; ``tests/unit/test_encryption.py``
checks both against qpdf.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["CbcEncrypt", "cbc_encrypter", "libcrypto_available"]

# key (16 bytes), iv (16 bytes), data (a multiple of 16 bytes) -> the ciphertext, as long as data
CbcEncrypt = Callable[[bytes, bytes, bytes], memoryview]


def _load() -> ctypes.CDLL | None:
    for name in ("libcrypto.so.3", ctypes.util.find_library("crypto")):
        if name:
            try:
                library = ctypes.CDLL(name)
                library.EVP_aes_128_cbc  # noqa: B018 - a library without it is no use here
            except (OSError, AttributeError):
                continue
            else:
                return library
    return None


_LIB = _load()
if _LIB is not None:
    _void, _char, _int = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
    _LIB.EVP_CIPHER_CTX_new.restype = _void
    _LIB.EVP_CIPHER_CTX_new.argtypes = []
    _LIB.EVP_CIPHER_CTX_free.restype = None
    _LIB.EVP_CIPHER_CTX_free.argtypes = [_void]
    for _cipher in (_LIB.EVP_aes_128_cbc, _LIB.EVP_aes_256_cbc):
        _cipher.restype = _void
        _cipher.argtypes = []
    _LIB.EVP_CIPHER_CTX_set_padding.restype = _int
    _LIB.EVP_CIPHER_CTX_set_padding.argtypes = [_void, _int]
    _LIB.EVP_EncryptInit_ex.restype = _int
    _LIB.EVP_EncryptInit_ex.argtypes = [_void, _void, _void, _char, _char]
    _LIB.EVP_EncryptUpdate.restype = _int
    _LIB.EVP_EncryptUpdate.argtypes = [_void, _void, ctypes.POINTER(_int), _char, _int]


def libcrypto_available() -> bool:
    return _LIB is not None


@contextmanager
def cbc_encrypter(max_bytes: int, key_bytes: int = 16) -> Iterator[CbcEncrypt | None]:
    """A function that encrypts up to ``max_bytes`` at a time with AES-CBC (AES-128, or AES-256
    with ``key_bytes=32``), no padding, valid inside the ``with`` block (it reuses one OpenSSL
    context and one output buffer); None when the system has no usable libcrypto."""
    if _LIB is None:
        yield None
        return
    lib = _LIB
    context = lib.EVP_CIPHER_CTX_new()
    if not context:
        raise MemoryError("EVP_CIPHER_CTX_new")
    try:
        cipher = lib.EVP_aes_256_cbc() if key_bytes == 32 else lib.EVP_aes_128_cbc()
        if key_bytes not in (16, 32) or lib.EVP_EncryptInit_ex(context, cipher, None, None, None) != 1:
            raise RuntimeError("EVP_EncryptInit_ex")
        lib.EVP_CIPHER_CTX_set_padding(context, 0)
        # OpenSSL may write up to a block more than it is given.
        output = ctypes.create_string_buffer(max_bytes + 32)
        view = memoryview(output).cast("B")
        written = ctypes.c_int()
        written_ref = ctypes.byref(written)
        init, update = lib.EVP_EncryptInit_ex, lib.EVP_EncryptUpdate

        def encrypt(key: bytes, iv: bytes, data: bytes) -> memoryview:
            size = len(data)
            if len(key) != key_bytes or len(iv) != 16 or size % 16 or size > max_bytes:
                raise ValueError(f"AES-CBC wants a {key_bytes}-byte key, a 16-byte iv and whole blocks")
            if init(context, None, None, key, iv) != 1:
                raise RuntimeError("OpenSSL refused the key")
            if update(context, output, written_ref, data, size) != 1:
                raise RuntimeError("OpenSSL refused to encrypt")
            if written.value != size:
                raise RuntimeError("OpenSSL encrypted less than it was given")
            return view[:size]

        yield encrypt
    finally:
        lib.EVP_CIPHER_CTX_free(context)
