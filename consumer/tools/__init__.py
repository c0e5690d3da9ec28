"""Tools around the service: the template preview for template authors (``preview``), publishing
sample events (``producing``), reading the topics back (``topic_reader``), and the operator
commands (``operations``): dead letters listed and redriven (``dlq``, ``redrive``), an order's
history and resend (``orders``), the suppression list (``suppression``), on what they share
(``scan``)."""

__all__ = [
    "dlq",
    "operations",
    "orders",
    "preview",
    "producing",
    "redrive",
    "scan",
    "suppression",
    "topic_reader",
]
