"""`python -m bench.encryption`: what encrypting one receipt costs, part by part, with the password
hash through the system's libcrypto and through the portable ``cryptography`` fallback,
alternating batches in one process (so the machine's drift hits both alike). No stack needed.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable

from bench.render import one_page_order
from rendering import Renderer, encrypt_pdf, security_handler
from rendering.encrypt import _P, _check, _copy_encryption
from rendering.security_handler import cryptography_cbc, hash_rounds


def _cpu_ms(function: Callable[[], object]) -> float:
    started = time.process_time()
    function()
    return (time.process_time() - started) * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--documents", type=int, default=20, help="distinct receipts")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    renderer = Renderer()
    pdfs = [renderer.render_pdf(one_page_order(seed)) for seed in range(args.documents)]
    fast = security_handler.password_hash

    def portable(password: bytes, salt: bytes, user_key: bytes = b"") -> bytes:
        return hash_rounds(password, salt, user_key, cryptography_cbc)

    paths = {"libcrypto": fast, "cryptography": portable}
    encrypt: dict[str, list[float]] = {name: [] for name in paths}
    key: dict[str, list[float]] = {name: [] for name in paths}
    try:
        for _ in range(args.rounds):
            for name, password_hash in paths.items():
                security_handler.password_hash = password_hash  # what new_handler calls
                for pdf in pdfs:
                    encrypt[name].append(_cpu_ms(functools.partial(encrypt_pdf, pdf, "12345-6789")))
                    key[name].append(
                        _cpu_ms(functools.partial(security_handler.new_handler, "12345-6789", _P))
                    )
    finally:
        security_handler.password_hash = fast
    handler = security_handler.new_handler("12345-6789", _P)
    copies = [_cpu_ms(functools.partial(_copy_encryption, pdf, handler)) for pdf in pdfs * 5]
    encrypted = [_copy_encryption(pdf, handler) for pdf in pdfs]
    checks = [_cpu_ms(functools.partial(_check, data, handler)) for data in encrypted * 5]
    sizes = sorted(len(pdf) for pdf in pdfs)
    print(f"{len(pdfs)} receipts, {sizes[0] // 1024}-{sizes[-1] // 1024} KB; CPU per document, mean:")
    for name in paths:
        print(
            f"  hash through {name:<12} encrypt_pdf {statistics.mean(encrypt[name]):.3f} ms, "
            f"of which the key (two hashes) {statistics.mean(key[name]):.3f} ms"
        )
    print(f"  qpdf's encrypted copy {statistics.mean(copies):.3f} ms")
    print(f"  the fail-closed check {statistics.mean(checks):.4f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
