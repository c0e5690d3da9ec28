"""AES-256 encryption: our own R6 derivation, read back by qpdf and poppler (which derive the
key from the password themselves), and the fail-closed check."""

from __future__ import annotations

import re
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pikepdf
import pytest

from rendering import Renderer, RenderError, encrypt_pdf, security_handler
from rendering.encrypt import PERMISSIONS, _check
from rendering.libcrypto import cbc_encrypter
from rendering.security_handler import (
    cryptography_cbc,
    hash_rounds,
    new_handler,
    password_hash,
    permission_bits,
)
from schemas.samples import sample_order


@pytest.fixture(scope="module")
def plain() -> bytes:
    return Renderer().render_pdf(sample_order(2))


def qpdf(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["qpdf", *args], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("password", ["12345-6789", "Pässwört ✓ 秘密"])
def test_qpdf_and_poppler_open_it_with_the_password_and_only_with_it(
    plain: bytes, tmp_path: Path, password: str
) -> None:
    path = tmp_path / "encrypted.pdf"
    path.write_bytes(encrypt_pdf(plain, password))

    shown = qpdf("--show-encryption", f"--password={password}", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "R = 6" in shown.stdout
    assert "Supplied password is user password" in shown.stdout
    assert qpdf("--check", f"--password={password}", str(path)).returncode == 0
    for wrong in ("", "y" + password[1:], password[:5]):
        assert qpdf("--check", f"--password={wrong}", str(path)).returncode != 0, wrong

    text = subprocess.run(
        ["pdftotext", "-upw", password, str(path), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert sample_order(2)["order_id"] in text
    refused = subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=False)
    assert refused.returncode != 0


def test_no_stream_leaves_in_the_clear(plain: bytes, tmp_path: Path) -> None:
    """qpdf copies compressed streams as they are; encrypted, none of their bytes may remain."""
    streams = [m.group(1)[:64] for m in re.finditer(rb"stream\r?\n(.{64})", plain, re.DOTALL)]
    assert len(streams) >= 3  # the page's content, the font, the object streams
    encrypted = encrypt_pdf(plain, "12345-6789")
    assert not [stream for stream in streams if stream in encrypted]
    # qpdf, told the password, finds every stream decodable.
    path = tmp_path / "encrypted.pdf"
    path.write_bytes(encrypted)
    decoded = qpdf("--password=12345-6789", "--decode-level=all", "--check", str(path))
    assert decoded.returncode == 0, decoded.stdout + decoded.stderr


@pytest.mark.parametrize(
    "allow",
    [
        PERMISSIONS,
        pikepdf.Permissions(),  # everything allowed
        pikepdf.Permissions(
            accessibility=False,
            extract=False,
            modify_annotation=False,
            modify_assembly=False,
            modify_form=False,
            modify_other=False,
            print_lowres=False,
            print_highres=False,
        ),
        pikepdf.Permissions(print_highres=False, modify_form=False, extract=False),
    ],
)
def test_permission_bits_match_what_qpdf_writes(plain: bytes, allow: pikepdf.Permissions) -> None:
    with pikepdf.open(BytesIO(plain)) as document:
        output = BytesIO()
        document.save(output, encryption=pikepdf.Encryption(owner="o", user="u", R=6, allow=allow))
    with pikepdf.open(BytesIO(output.getvalue()), password="u") as encrypted:
        assert int(encrypted.trailer.Encrypt.P) == permission_bits(allow)


@pytest.mark.parametrize("through", ["libcrypto", "cryptography"])
def test_the_password_hash_agrees_with_qpdfs(through: str) -> None:
    """A document qpdf encrypted itself: our algorithm 2.B reproduces its /U and /O from the
    passwords, through the system's libcrypto and through the portable fallback alike."""
    with pikepdf.new() as document:
        output = BytesIO()
        document.save(output, encryption=pikepdf.Encryption(owner="Öwner ✓", user="Pässwört", R=6))
    with pikepdf.open(BytesIO(output.getvalue()), password="Pässwört") as encrypted:
        u, o = bytes(encrypted.trailer.Encrypt.U), bytes(encrypted.trailer.Encrypt.O)
    with cbc_encrypter(64 * (127 + 64 + 48)) as fast:
        encrypt = fast if through == "libcrypto" else cryptography_cbc
        assert encrypt is not None  # this machine has libcrypto: the fast path must not be skipped
        assert hash_rounds("Pässwört".encode(), u[32:40], b"", encrypt) == u[:32]
        assert hash_rounds(b"other", u[32:40], b"", encrypt) != u[:32]
        # The owner's hash also mixes in the 48-byte /U: the longest rounds there are.
        assert hash_rounds("Öwner ✓".encode(), o[32:40], u, encrypt) == o[:32]
    assert password_hash("Pässwört".encode(), u[32:40]) == u[:32]


def test_the_libcrypto_path_refuses_what_does_not_fit_its_buffer() -> None:
    with cbc_encrypter(64) as encrypt:
        assert encrypt is not None
        assert bytes(encrypt(bytes(16), bytes(16), bytes(64))) == bytes(
            cryptography_cbc(bytes(16), bytes(16), bytes(64))
        )
        for key, iv, data in (
            (bytes(16), bytes(16), bytes(80)),
            (bytes(16), bytes(16), bytes(15)),
            (bytes(32), bytes(16), bytes(16)),
        ):
            with pytest.raises(ValueError, match="16-byte key"):
                encrypt(key, iv, data)
    with cbc_encrypter(32, key_bytes=32) as encrypt:  # AES-256: /UE and /Perms
        assert encrypt is not None
        key = bytes(range(32))
        assert bytes(encrypt(key, bytes(16), bytes(32))) == bytes(cryptography_cbc(key, bytes(16), bytes(32)))
        with pytest.raises(ValueError, match="32-byte key"):
            encrypt(bytes(16), bytes(16), bytes(16))


def test_render_workers_load_neither_the_http_and_dkim_stack_nor_cryptography() -> None:
    """What the fork server imports is in every worker's memory: delivery's package (aiohttp,
    dnspython, dkimpy, aiosmtplib) added ~18 MB to each, ``cryptography`` ~6 MB."""
    probe = (
        "import importlib, sys; from consumer.processing.fork_server import preloaded_modules;"
        "[importlib.import_module(name) for name in preloaded_modules()];"
        "from rendering.security_handler import new_handler; new_handler('password', -4);"
        "print(sorted({m.split('.')[0] for m in sys.modules} & set(sys.argv[1:])))"
    )
    unwanted = ["aiohttp", "aiosmtplib", "cryptography", "dkim", "dns"]
    loaded = subprocess.run([sys.executable, "-c", probe, *unwanted], capture_output=True, text=True)
    assert (loaded.returncode, loaded.stdout.strip()) == (0, "[]"), loaded.stderr


def test_a_failing_key_derivation_fails_closed(plain: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*_args: object) -> bytes:
        raise RuntimeError("OpenSSL refused the key")

    monkeypatch.setattr(security_handler, "password_hash", broken)
    with pytest.raises(RenderError) as failed:
        encrypt_pdf(plain, "12345-6789")
    assert failed.value.reason == "encryption_failed"


def test_each_document_gets_its_own_key_and_salts() -> None:
    first, second = new_handler("12345-6789", -1324), new_handler("12345-6789", -1324)
    assert first.file_key != second.file_key
    assert first.u != second.u
    assert first.o != second.o


def test_no_memory_file_is_left_open(plain: bytes) -> None:
    before = len(list(Path("/proc/self/fd").iterdir()))
    for _ in range(5):
        encrypt_pdf(plain, "12345-6789")
    with pytest.raises(RenderError):
        encrypt_pdf(b"%PDF-1.7 this is not a pdf", "12345-6789")
    assert len(list(Path("/proc/self/fd").iterdir())) == before


def test_encrypt_pdf_fails_closed(plain: bytes) -> None:
    with pytest.raises(RenderError) as empty:
        encrypt_pdf(plain, "")
    assert empty.value.reason == "encryption_failed"
    with pytest.raises(RenderError) as garbage:
        encrypt_pdf(b"%PDF-1.7 this is not a pdf", "12345-6789")
    assert garbage.value.reason == "encryption_failed"


def test_a_pdf_qpdf_can_repair_is_encrypted_like_any_other(plain: bytes, tmp_path: Path) -> None:
    """A fetched PDF with a wrong cross-reference offset: repaired, as pikepdf.open would."""
    broken = re.sub(rb"startxref\n\d+", b"startxref\n123", plain)
    assert broken != plain
    path = tmp_path / "repaired.pdf"
    path.write_bytes(encrypt_pdf(broken, "12345-6789"))
    assert qpdf("--check", "--password=12345-6789", str(path)).returncode == 0
    assert qpdf("--check", str(path)).returncode != 0


def _pikepdf_output(plain: bytes, encryption: pikepdf.Encryption | None) -> bytes:
    with pikepdf.open(BytesIO(plain)) as document:
        output = BytesIO()
        document.save(output, encryption=encryption or False)
    return output.getvalue()


@pytest.mark.parametrize(
    ("encryption", "problem"),
    [
        (None, "no encryption dictionary"),
        (pikepdf.Encryption(owner="o", user="12345-6789", R=4, aes=True), "not security handler revision 6"),
        # The right algorithm and password, but not the key this document was given.
        (
            pikepdf.Encryption(owner="o", user="12345-6789", R=6, allow=PERMISSIONS),
            "/U is not the value derived",
        ),
        (pikepdf.Encryption(owner="o", user="12345-6789", R=6), "permissions are not the intended ones"),
    ],
)
def test_the_fail_closed_check_catches_other_output(
    plain: bytes, encryption: pikepdf.Encryption | None, problem: str
) -> None:
    handler = new_handler("12345-6789", permission_bits(PERMISSIONS))
    found = _check(_pikepdf_output(plain, encryption), handler)
    assert found is not None
    assert found.startswith(problem)


def test_the_fail_closed_check_passes_what_encrypt_pdf_wrote_and_nothing_tampered(plain: bytes) -> None:
    handler = new_handler("12345-6789", permission_bits(PERMISSIONS))
    from rendering.encrypt import _copy_encryption

    encrypted = _copy_encryption(plain, handler)
    assert _check(encrypted, handler) is None
    tampered = encrypted.replace(handler.ue.hex().encode(), bytes(32).hex().encode())
    assert tampered != encrypted
    assert _check(tampered, handler) == "/UE is not the value derived for this document"
