"""The one thing the poll thread and the event loop share: finished events travel back through
it, so the offset tracker, the breaker, pauses and metrics are touched by the poll thread alone.

The event loop calls :meth:`Bridge.finished` for every record (with ``None`` when it was skipped,
``LET_GO`` when it was let go) and :meth:`Bridge.crashed_if_failed` when a record's processing
raised; the poll loop collects both with :meth:`Bridge.take`.
"""

from __future__ import annotations

import queue
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import Future

    from consumer.processing.pipeline import Done, LetGo
    from consumer.processing.records import Inbound

__all__ = ["Bridge", "Crashed"]


@dataclass(frozen=True)
class Crashed:
    """A record's processing raised past the pipeline (its type only: a message may quote it)."""

    error_type: str


Finished = tuple["Inbound", "Done | LetGo | None"] | Crashed


class Bridge:
    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Finished] = queue.SimpleQueue()

    def finished(self, inbound: Inbound, done: Done | LetGo | None) -> None:
        """Event loop side: one record is done (None: skipped; ``LET_GO``: let go), its outcome
        acknowledged."""
        self._queue.put((inbound, done))

    def crashed_if_failed(self, future: Future[None]) -> None:
        """Event loop side (a done callback): the record's processing raised."""
        error = None if future.cancelled() else future.exception()
        if error is not None:
            self._queue.put(Crashed(type(error).__name__))

    def take(self, wait_s: float = 0.0) -> list[Finished]:
        """Poll thread side: everything finished so far, waiting up to ``wait_s`` for a first one."""
        items: list[Finished] = []
        if wait_s <= 0 and self._queue.empty():  # the poll loop's usual turn: nothing finished
            return items
        try:
            items.append(self._queue.get(timeout=wait_s) if wait_s > 0 else self._queue.get_nowait())
            while True:
                items.append(self._queue.get_nowait())
        except queue.Empty:
            return items
