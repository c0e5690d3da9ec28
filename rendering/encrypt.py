"""AES-256 encryption of a finished PDF, checked before it may leave (fail closed).

PDF security handler revision 6 (AES-256, the PDF 2.0 handler). The user password opens the
document; there is no usable owner password (see ``security_handler.py``), so nobody can lift
the permissions: printing (high resolution) is allowed, and so are text extraction and
extraction for accessibility (the reader is the person the receipt is about: copying the order
number or an amount must work); modifying, annotating, filling forms and assembling are not.
Permissions are advisory for anyone who holds the user password; the encryption is what
protects the data.

How: the handler's values and a random file key are derived here (fast, in OpenSSL), written
into a tiny content-free PDF, and qpdf copies that PDF's encryption onto the document
(``--copy-encryption`` with ``--password-is-hex-key``: it is handed the file key, so it hashes
no password), encrypting every string and stream with the key. The PDFs pass between Python
and qpdf as anonymous in-memory files (``memfd``), never on a file system.

After writing, the result is checked: its encryption dictionary must name R6/AES-256 and carry
exactly the values derived for this document. Any failure raises
``RenderError("encryption_failed")``: an unchecked PDF is never returned.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pikepdf

from rendering.errors import RenderError
from rendering.security_handler import SecurityHandler, new_handler, permission_bits

__all__ = ["PERMISSIONS", "encrypt_pdf"]

PERMISSIONS = pikepdf.Permissions(
    accessibility=True,
    extract=True,
    modify_annotation=False,
    modify_assembly=False,
    modify_form=False,
    modify_other=False,
    print_lowres=True,
    print_highres=True,
)
_P = permission_bits(PERMISSIONS)


def encrypt_pdf(pdf: bytes, user_password: str) -> bytes:
    """``pdf`` encrypted with AES-256 (R6) for ``user_password``."""
    if not user_password:
        raise RenderError("encryption_failed", "an empty user password would leave the PDF open")
    try:
        handler = new_handler(user_password, _P)
    except Exception as exc:  # noqa: BLE001 - OpenSSL through ctypes or cryptography: not sendable
        raise RenderError("encryption_failed", f"key derivation failed ({type(exc).__name__})") from None
    try:
        encrypted = _copy_encryption(pdf, handler)
    except Exception as exc:  # noqa: BLE001 - pikepdf/qpdf raise many types; all mean "not sendable"
        raise RenderError("encryption_failed", f"qpdf failed ({type(exc).__name__})") from None
    problem = _check(encrypted, handler)
    if problem:
        raise RenderError("encryption_failed", problem)
    return encrypted


def _copy_encryption(pdf: bytes, handler: SecurityHandler) -> bytes:
    with (
        _memory_file(pdf) as plain,
        _memory_file(_key_carrier(handler)) as carrier,
        _memory_file(b"") as output,
    ):
        job = pikepdf.Job(
            {
                "inputFile": plain.path,
                "outputFile": output.path,
                "copyEncryption": carrier.path,
                "encryptionFilePassword": handler.file_key.hex(),
                "passwordIsHexKey": "",
                "noWarn": "",
            }
        )
        job.run()
        # 3: qpdf repaired the input (a fetched PDF with a broken cross-reference table, say) as
        # opening it with pikepdf would; what it wrote is checked below like any other output.
        if job.exit_code not in (0, pikepdf.Job.EXIT_WARNING):
            raise RuntimeError(f"qpdf exit code {job.exit_code}")
        return output.read()


def _key_carrier(handler: SecurityHandler) -> bytes:
    """An empty one-page-tree PDF whose only content is the encryption dictionary."""
    objects = (
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [] /Count 0 >>",
        handler.encrypt_dictionary(),
    )
    data = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(data))
        data += f"{number} 0 obj\n{body}\nendobj\n".encode("ascii")
    xref = len(data)
    data += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode("ascii")
    data += b"".join(f"{offset:010d} 00000 n \n".encode("ascii") for offset in offsets)
    file_id = os.urandom(16).hex()
    data += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Encrypt 3 0 R /ID [<{file_id}> <{file_id}>] >>\n"
        f"startxref\n{xref}\n%%EOF\n"
    ).encode("ascii")
    return bytes(data)


class _MemoryFile:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.path = f"/proc/self/fd/{fd}"

    def read(self) -> bytes:
        return os.pread(self.fd, os.fstat(self.fd).st_size, 0)


@contextmanager
def _memory_file(data: bytes) -> Iterator[_MemoryFile]:
    """An anonymous file in memory (gone when closed) that qpdf can open by path."""
    fd = os.memfd_create("ordermail-pdf", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        yield _MemoryFile(fd)
    finally:
        os.close(fd)


def _check(encrypted: bytes, handler: SecurityHandler) -> str | None:
    """Why ``encrypted`` must not be sent, or None when it is as intended.

    The trailer must point at a standard-handler dictionary that names AES-256 (V 5, R 6, AESV3
    for streams and strings) and holds this document's derived ``/U``, ``/UE``, ``/Perms`` and
    ``/P``: then the data is encrypted with this document's key, which only the user password
    unlocks. Cheap (no password hashing); the tests prove the same with qpdf and poppler.
    """
    marker = _STANDARD_HANDLER.search(encrypted)
    if not encrypted.startswith(b"%PDF-") or _ENCRYPT_REFERENCE.search(encrypted) is None or marker is None:
        return "no encryption dictionary"
    start = encrypted.rfind(b" obj", 0, marker.start())
    entries = encrypted[start : encrypted.find(b"endobj", marker.end())]
    for required, problem in _REQUIRED_ENTRIES:
        if not required.search(entries):
            return problem
    permissions = re.search(rb"/P\s+(-?\d+)", entries)
    if permissions is None or int(permissions.group(1)) != handler.permissions:
        return "permissions are not the intended ones"
    for name, expected in ((b"U", handler.u), (b"UE", handler.ue), (b"Perms", handler.perms)):
        written = re.search(rb"/" + name + rb"\s*<([0-9A-Fa-f\s]*)>", entries)
        if written is None or bytes.fromhex(written.group(1).decode("ascii")) != expected:
            return f"/{name.decode()} is not the value derived for this document"
    return None


_ENCRYPT_REFERENCE = re.compile(rb"/Encrypt\s+\d+\s+\d+\s+R")
_STANDARD_HANDLER = re.compile(rb"/Filter\s*/Standard\b")
_REQUIRED_ENTRIES = (
    (re.compile(rb"/R\s+6\b"), "not security handler revision 6"),
    (re.compile(rb"/V\s+5\b"), "not the AES-256 handler (V 5)"),
    (re.compile(rb"/CFM\s*/AESV3"), "crypt filter is not AES-256"),
    (re.compile(rb"/StmF\s*/StdCF"), "streams are not encrypted with the standard filter"),
    (re.compile(rb"/StrF\s*/StdCF"), "strings are not encrypted with the standard filter"),
)
