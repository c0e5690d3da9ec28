"""The one exception :mod:`rendering` raises.

::

    RenderError            .reason is machine-readable:
      "template_error"     a template (receipt, mail or password) failed to load or render
      "render_error"       WeasyPrint (or Typst) failed to lay out the document
      "weak_password"      the PDF password for this order breaks the password policy
      "encryption_failed"  qpdf failed, or the encrypted PDF did not pass its check

Messages never carry event values (names, addresses, the password): they may end up in logs.
"""

from __future__ import annotations

from typing import Literal

__all__ = ["RenderError", "RenderErrorReason"]

RenderErrorReason = Literal[
    "template_error", "render_error", "weak_password", "encryption_failed", "render_crashed", "render_timeout"
]


class RenderError(Exception):
    """Rendering, password derivation or encryption of one order failed; see :attr:`reason`."""

    def __init__(self, reason: RenderErrorReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RenderErrorReason = reason
        self.detail = detail
