"""Checks at start-up that warn about a slow or insecure environment before any event is read."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from consumer.processing.fork_server import set_engines
from delivery import TlsMode
from rendering import cjk_faces
from rendering.documents import TEMPLATE_DIR
from rendering.fonts import harfbuzz_subset_available, missing_families
from rendering.libcrypto import libcrypto_available

if TYPE_CHECKING:
    from consumer.app.settings import Settings

__all__ = ["check_environment"]

log = logging.getLogger("ordermail.startup")


def check_environment(settings: Settings) -> None:
    if not harfbuzz_subset_available():
        log.warning(
            "libharfbuzz-subset is missing: WeasyPrint falls back to fontTools, about 5x slower "
            "(install Debian's libharfbuzz-subset0)"
        )
    if missing := missing_families():
        log.warning(
            "fonts missing: %s: receipts in those scripts would show boxes "
            "(install Debian's fonts-noto-core and fonts-noto-cjk)",
            ", ".join(missing),
        )
    if not libcrypto_available():
        log.warning(
            "libcrypto (OpenSSL 3) not found: the PDF password hash runs through the cryptography "
            "package, ~0.5 ms slower a document (install Debian's libssl3)"
        )
    if settings.smtp_tls is TlsMode.NONE:
        log.warning("SMTP_TLS=none: e-mails travel to the relay unencrypted")
    if "typst" in set_engines(settings.template_dir or TEMPLATE_DIR) and not cjk_faces.faces():
        log.warning(
            "the cut CJK faces are not built: a Typst worker reads the whole Noto CJK collection, "
            "~40 MB more memory (run python -m rendering.cjk_faces, as make setup and the image do)"
        )
