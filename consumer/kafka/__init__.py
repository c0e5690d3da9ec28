"""Everything that talks to Kafka on the service's behalf: the poll loop (``service``) and the
bridge through which finished events come back to it from the event loop (``bridge``), which
offsets may be committed and with what metadata (``offsets``), taking partitions over
(``handover``), recognising redelivered events (``ledger``), client configuration (``clients``),
the dead-letter breaker (``breaker``), the producer of outcomes, dead letters and deferred
records (``publisher``), which partition a key lands in (``partitioning``) and the suppression
list's follower and writer (``suppressions``)."""

__all__ = [
    "breaker",
    "bridge",
    "clients",
    "handover",
    "ledger",
    "offsets",
    "partitioning",
    "publisher",
    "service",
    "suppressions",
]
