"""Delivery: builds the e-mail from finished bytes and sends it through an SMTP relay.

Imports nothing else of ordermail's: it takes bodies, PDF bytes and addresses.
"""

from delivery.dkim import DkimError, DkimSigner
from delivery.message import Attachment, compose, message_id_for
from delivery.smtp import SendError, SendResult, SmtpConfig, SmtpPool, TlsMode

__all__ = [
    "Attachment",
    "DkimError",
    "DkimSigner",
    "SendError",
    "SendResult",
    "SmtpConfig",
    "SmtpPool",
    "TlsMode",
    "compose",
    "message_id_for",
]
