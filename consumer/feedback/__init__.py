"""``ordermail feedback``, the second process: what became of e-mails after the relay.

Reports arrive by SMTP at the return-path domain (``smtp_receiver``) or as ESP webhooks
(``webhooks``); ``handling`` finds the order each names through the outcome ``index`` and
publishes ``DeliveryFeedback`` records (and suppressions); ``service`` runs the parts,
``settings`` configures them. The parsers themselves are in ``delivery/feedback``.
"""

__all__ = ["handling", "index", "service", "settings", "smtp_receiver", "webhooks"]
