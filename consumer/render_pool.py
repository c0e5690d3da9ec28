"""Rendering and encryption in a pool of warm worker processes.

PDF rendering is CPU work that holds the GIL, so it runs in processes (one per core by
default), each warmed once (fonts, templates, CSS) and recycled after a number of documents to
bound memory. Workers are spawned, not forked: the parent runs librdkafka threads.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rendering import TEMPLATE_DIR, PasswordPolicy, RenderedMail, Renderer, RenderError

if TYPE_CHECKING:
    from consumer.settings import Settings
    from schemas import OrderCompleted

__all__ = ["RenderConfig", "RenderPool"]


@dataclass(frozen=True)
class RenderConfig:
    template_dir: Path = TEMPLATE_DIR
    password_template: str | None = None
    password_min_length: int = 8
    password_hint: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderConfig:
        return cls(
            template_dir=settings.template_dir or TEMPLATE_DIR,
            password_template=settings.password_template,
            password_min_length=settings.password_min_length,
            password_hint=settings.password_hint,
        )

    def build(self) -> Renderer:
        policy = (
            PasswordPolicy(self.password_template, min_length=self.password_min_length)
            if self.password_template
            else PasswordPolicy(min_length=self.password_min_length)
        )
        return Renderer(self.template_dir, password_policy=policy, password_hint=self.password_hint)


_renderer: Renderer | None = None


def _warm(config: RenderConfig) -> None:
    global _renderer  # noqa: PLW0603 (one renderer per worker process, built once)
    _renderer = config.build()


def _render(order: OrderCompleted) -> RenderedMail:
    if _renderer is None:
        raise RuntimeError("render worker not initialised")
    return _renderer.render_mail(order)


class RenderPool:
    def __init__(self, config: RenderConfig, *, workers: int, max_documents_per_worker: int) -> None:
        self._config = config
        self._workers = workers
        self._max_documents = max_documents_per_worker
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_warm,
            initargs=(self._config,),
            max_tasks_per_child=self._max_documents,
        )

    async def render(self, order: OrderCompleted) -> RenderedMail:
        """Raises :class:`RenderError`; a crashed worker is replaced and the render tried once more."""
        loop = asyncio.get_running_loop()
        for last_try in (False, True):
            executor = self._executor
            try:
                return await loop.run_in_executor(executor, _render, order)
            except BrokenProcessPool:
                if executor is self._executor:
                    self._executor = self._start()
                    executor.shutdown(wait=False, cancel_futures=True)
                if last_try:
                    raise RenderError("render_crashed") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
