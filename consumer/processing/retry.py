"""Deferral through the retry topic: when an event's e-mail could not be sent after the quick
in-process retries, the event is re-published to the retry topic with a due time, and a
``DEFERRED`` outcome is reported. The consumer reads the retry topic too and holds each record
until it is due (without blocking anything else), then tries again; after the last delay, or
when the event is older than the maximum age, it is ``FAILED`` and dead-lettered.

The deferral's state travels in ``ordermail.retry.*`` headers, read by
:class:`consumer.processing.records.Inbound` (strictly, and only on the retry topic).

Ordering: a deferred event leaves its partition's order. For receipts that is harmless: an
order completes once, so no later event of the same order can be overtaken in a way a customer
would notice; a redelivered copy of the same event is recognised by the outcome ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

from consumer.processing.records import RetryState

__all__ = ["RetrySchedule", "RetryState", "epoch_ms"]


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as due times are kept (an outcome's ``occurred_at``)."""
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True)
class RetrySchedule:
    delays_s: tuple[float, ...] = (30, 120, 600, 1800, 3600)
    max_age_s: float = 86_400

    def next(
        self, previous: RetryState | None, attempts: int, now_ms: int | None = None
    ) -> RetryState | None:
        """The state for the next deferral, or None when the event has run out of time or tries.
        Due strictly after ``now_ms`` (the ``DEFERRED`` outcome's time): an outcome at or after a
        pass's due time is that pass's, or a later one's, never the one that queued it."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        first_ms = previous.first_ms if previous else now_ms
        deferrals = previous.deferrals if previous else 0
        if deferrals >= len(self.delays_s) or now_ms - first_ms > self.max_age_s * 1000:
            return None
        due_ms = now_ms + max(1, int(self.delays_s[deferrals] * 1000))
        return RetryState(deferrals + 1, attempts, due_ms, first_ms)
