"""The PDF user password of each order, derived from the order by a Jinja2 template.

The template (``ORDERMAIL_PDF_PASSWORD_TEMPLATE``; default :data:`DEFAULT_PASSWORD_TEMPLATE`)
is rendered in a sandbox with the order's top-level fields as variables (``order_id``,
``customer.billing_address.postal_code``...), without autoescape, then stripped of surrounding
whitespace. The policy then requires:

- at least ``min_length`` characters (default 8) and at most 127 (PDF revision 6 silently
  truncates longer passwords);
- only these characters: ASCII letters ``A-Z a-z``, digits ``0-9``, the space, and ``-``,
  ``_``, ``.``. That keeps the password typeable on every keyboard and free of Unicode
  normalisation surprises (PDF R6 passwords are SASLprep'd UTF-8).

Anything else raises ``RenderError("weak_password")``; a template that does not compile, or
fails for an order (say it reads a field the order lacks), raises
``RenderError("template_error")``. Errors never include the password or the order's values.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from rendering.errors import RenderError

if TYPE_CHECKING:
    from schemas.model import OrderCompleted

__all__ = [
    "ALLOWED_PASSWORD_CHARACTERS",
    "DEFAULT_PASSWORD_TEMPLATE",
    "MAX_PASSWORD_LENGTH",
    "PasswordPolicy",
]

DEFAULT_PASSWORD_TEMPLATE = "{{ customer.billing_address.postal_code }}-{{ order_id[-4:] }}"  # noqa: S105
ALLOWED_PASSWORD_CHARACTERS = frozenset(string.ascii_letters + string.digits + " -_.")
MAX_PASSWORD_LENGTH = 127


class PasswordPolicy:
    """Derives and checks the user password of an order's PDF."""

    def __init__(self, template: str = DEFAULT_PASSWORD_TEMPLATE, min_length: int = 8) -> None:
        if not 1 <= min_length <= MAX_PASSWORD_LENGTH:
            raise ValueError(f"min_length must be between 1 and {MAX_PASSWORD_LENGTH}")
        environment = SandboxedEnvironment(autoescape=False, undefined=StrictUndefined)
        try:
            self._template = environment.from_string(template)
        except TemplateError:
            raise RenderError("template_error", "the password template does not compile") from None
        self.template = template
        self.min_length = min_length

    @property
    def is_default(self) -> bool:
        """Whether the template is the documented default (the mails then explain it in detail)."""
        return self.template == DEFAULT_PASSWORD_TEMPLATE

    def password_for(self, order: OrderCompleted) -> str:
        """The order's password; :class:`RenderError` when it cannot be formed or is too weak."""
        try:
            password = self._template.render(dict(order)).strip()
        except Exception:  # noqa: BLE001 - sandbox violations, undefined fields, bad types: all one answer
            raise RenderError("template_error", "the password template failed for this order") from None
        if not self.min_length <= len(password) <= MAX_PASSWORD_LENGTH:
            raise RenderError("weak_password", "the password is empty, too short or too long")
        if not ALLOWED_PASSWORD_CHARACTERS.issuperset(password):
            raise RenderError("weak_password", "the password has characters outside the allowed set")
        return password
