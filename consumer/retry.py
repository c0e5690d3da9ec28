"""Deferral through the retry topic: when an event's e-mail could not be sent after the quick
in-process retries, the event is re-published to the retry topic with a due time, and a
``DEFERRED`` outcome is reported. The consumer reads the retry topic too and holds each record
until it is due (without blocking anything else), then tries again; after the last delay, or
when the event is older than the maximum age, it is ``FAILED`` and dead-lettered.

Ordering: a deferred event leaves its partition's order. For receipts that is harmless: an
order completes once, so no later event of the same order can be overtaken in a way a customer
would notice; a redelivered copy of the same event is recognised by the outcome ledger.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from consumer.outcomes import Headers, Inbound

__all__ = ["RetrySchedule", "RetryState"]

_PREFIX = "ordermail.retry."


@dataclass(frozen=True)
class RetryState:
    deferrals: int  # how often the event was deferred so far
    attempts: int  # send attempts so far, over all passes
    due_ms: int
    first_ms: int  # when the event was first tried: its age counts from here

    @classmethod
    def of(cls, inbound: Inbound) -> RetryState | None:
        values = [inbound.header(f"{_PREFIX}{name}") for name in ("deferrals", "attempts", "due", "first")]
        if any(v is None or not v.isdigit() for v in values):
            return None
        deferrals, attempts, due, first = (int(v) for v in values if v is not None)
        return cls(deferrals, attempts, due, first)

    def headers(self) -> Headers:
        values = {
            "deferrals": self.deferrals,
            "attempts": self.attempts,
            "due": self.due_ms,
            "first": self.first_ms,
        }
        return [(f"{_PREFIX}{name}", str(value).encode()) for name, value in values.items()]


@dataclass(frozen=True)
class RetrySchedule:
    delays_s: tuple[float, ...] = (30, 120, 600, 1800, 3600)
    max_age_s: float = 86_400

    def next(self, previous: RetryState | None, attempts: int) -> RetryState | None:
        """The state for the next deferral, or None when the event has run out of time or tries."""
        now_ms = int(time.time() * 1000)
        first_ms = previous.first_ms if previous else now_ms
        deferrals = previous.deferrals if previous else 0
        if deferrals >= len(self.delays_s) or now_ms - first_ms > self.max_age_s * 1000:
            return None
        due_ms = now_ms + int(self.delays_s[deferrals] * 1000)
        return RetryState(deferrals + 1, attempts, due_ms, first_ms)
