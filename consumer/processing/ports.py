"""What the pipeline needs from the parts around it, as protocols: the render pool, the SMTP
pool and the publisher. The real ones live in ``processing.render_pool``, ``delivery`` and
``kafka.publisher``; tests pass in-memory fakes of the same shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from contextlib import AbstractAsyncContextManager

    from consumer.processing.records import Headers, Inbound
    from delivery import SendResult
    from rendering import RenderedMail
    from schemas import DeliveryOutcome, OrderCompleted

__all__ = ["Fetched", "Known", "PublishError", "Publisher", "Renderer", "Sender"]

# Documents fetched for an order (name, bytes as fetched): opened and encrypted in a render worker.
Fetched = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Known:
    """What the redelivery ledger knows of an event: its latest outcome's status (``SENT`` is
    never replaced), the input offset that outcome was for (None: an outcome without one), where
    the outcome lies in its partition (``at``: the later outcome wins, in whatever order reads
    and notes arrive), when it occurred (ms; a deferred pass settled at or after its due time
    is recognised by it) and the Message-ID it was for (a resend is recognised by its own)."""

    status: str
    offset: int | None
    at: int | None = None
    occurred_ms: int | None = None
    message_id: str | None = None


class PublishError(Exception):
    """The broker did not acknowledge a record; its offset must not be committed.

    ``record_level``: the broker (or the client) refused this record for what it is (its size,
    its partition), so trying it again cannot help; otherwise the broker is unreachable or
    refusing everything for now. The message names the topic and the error code, nothing else."""

    def __init__(self, message: str, *, record_level: bool) -> None:
        super().__init__(message)
        self.record_level = record_level


class Renderer(Protocol):
    def reserved(
        self,
    ) -> AbstractAsyncContextManager[Callable[[OrderCompleted, Fetched], Awaitable[RenderedMail]]]:
        """Waits for a free worker; yields what renders one order on it."""
        ...


class Sender(Protocol):
    async def send(self, message: bytes, *, sender: str, recipient: str) -> SendResult: ...

    async def cool_down(self) -> None: ...


class Publisher(Protocol):
    async def publish_outcome(self, outcome: DeliveryOutcome, partition: int) -> int: ...

    async def publish_dead_letter(
        self, inbound: Inbound, headers: Headers, *, omit_record: bool = False
    ) -> int: ...

    async def publish_retry(self, inbound: Inbound, headers: Headers) -> int: ...
