"""Stops consuming when too much of the recent traffic is being dead-lettered.

A bad deploy (a broken template, a wrong password template) would otherwise dead-letter every
event in the topic. When more than ``max_share`` of the last ``window`` outcomes went to the
dead-letter topic (after at least ``min_events``), the breaker opens: the service pauses all
partitions, reports not-ready, and waits for an operator. It does not close by itself.
"""

from __future__ import annotations

from collections import deque

__all__ = ["DeadLetterBreaker"]


class DeadLetterBreaker:
    def __init__(self, *, max_share: float = 0.5, window: int = 100, min_events: int = 20) -> None:
        self._max_share = max_share
        self._min_events = min_events
        self._recent: deque[bool] = deque(maxlen=window)
        self.open = False

    def record(self, dead_lettered: bool) -> None:
        self._recent.append(dead_lettered)
        if len(self._recent) >= self._min_events and sum(self._recent) / len(self._recent) > self._max_share:
            self.open = True
