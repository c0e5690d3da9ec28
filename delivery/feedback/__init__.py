"""What became of an e-mail after the relay accepted it: parsers for delivery status
notifications (``dsn``), feedback-loop complaints (``arf``) and ESP webhooks (``ses``,
``sendgrid``), each giving :class:`~delivery.feedback.model.Report` values."""
