"""One event's journey, free of Kafka: decode → validate → fetch → render + encrypt → compose →
send → outcome (``pipeline``), the error policy as data (``policy``), deferral through the retry
topic (``retry``), the receipt e-mail's bytes (``mail``), consumed records and what ordermail's
own headers on them say (``records``), what outcomes and dead letters say (``outcomes``), the
render worker processes (``render_pool``, forked from ``fork_server``) and the protocols of the
pipeline's collaborators (``ports``)."""

__all__ = [
    "fork_server",
    "mail",
    "outcomes",
    "pipeline",
    "policy",
    "ports",
    "records",
    "render_pool",
    "retry",
]
