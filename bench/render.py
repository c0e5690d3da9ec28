"""The render phase: render workers as the service runs them, fed one order at a time, no Kafka."""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import cpu_seconds, progress
from consumer.processing.render_pool import RenderConfig, RenderPool
from rendering import TEMPLATE_DIR
from schemas import OrderCompleted
from schemas.samples import sample_order

__all__ = ["RenderSample", "bench_render", "one_page_order", "render_figures"]


def one_page_order(seed: int) -> OrderCompleted:
    return sample_order(seed, lines=1 + seed % 8)


@dataclass
class RenderSample:
    """Calls to render workers: each call's time (ms) and the workers' CPU time (s)."""

    wall_ms: list[float]
    cpu_s: float


def bench_render(
    template_set: str, count: int, first_seed: int = 0, *, workers: int = 1, template_dir: Path = TEMPLATE_DIR
) -> RenderSample:
    """Render workers as the service runs them (forked from the fork server, templates checked,
    warm), each fed one order at a time, all of them at once: the time of each call (render,
    encrypt and the hand over) and the workers' CPU time. Measured in the workers, not in this
    process, whose own state (its frames' depth, see ``consumer/processing/render_pool.py``)
    would change the figure."""
    config = RenderConfig(template_dir=template_dir, template_set=template_set)
    pool = RenderPool(config, workers=workers, check_templates=True)
    pids = pool.worker_pids()
    label = f"{template_set} render" + ("" if workers == 1 else f" {workers}w")

    def busy_cpu() -> float:
        return sum(cpu_seconds(pid) for pid in pids)

    async def feed(seeds: range, wall: list[float] | None = None) -> None:
        for seed in seeds:
            started = time.perf_counter()
            await pool.render(one_page_order(seed))
            if wall is not None:
                wall.append((time.perf_counter() - started) * 1000)
                progress(label, len(wall), count)

    async def calls() -> RenderSample:
        # Each new locale, currency and glyph costs once per worker: one stream of them per worker
        # first (a stream keeps the worker it had: the one it frees is the next one free).
        await asyncio.gather(*(feed(range(90_000, 90_016)) for _ in range(workers)))
        wall: list[float] = []
        cpu_started = busy_cpu()
        await asyncio.gather(
            *(feed(range(first_seed + i, first_seed + count, workers), wall) for i in range(workers))
        )
        return RenderSample(wall, busy_cpu() - cpu_started)

    try:
        return asyncio.run(calls())
    finally:
        pool.close()


def render_figures(alone: list[RenderSample], side_by_side: list[RenderSample]) -> dict[str, Any]:
    """Call times come from one worker alone; the ceiling's CPU time per order from all the
    workers rendering at once, as the cores are used when every one of them is busy (two
    workers side by side have used up to 2-4 % more CPU per receipt here than one alone: caches
    and memory shared by the cores)."""
    wall = sorted(ms for sample in alone for ms in sample.wall_ms)

    def cpu_ms(*samples: RenderSample) -> float:
        documents = sum(len(sample.wall_ms) for sample in samples)
        return round(sum(sample.cpu_s for sample in samples) / documents * 1000, 2)

    return {
        "render_ms_p50": round(statistics.median(wall), 2),
        "render_ms_p99": round(wall[int(len(wall) * 0.99) - 1], 2),
        "cpu_ms_per_document": cpu_ms(*side_by_side),
        # The machine's drift while the service ran: the same documents before it and after it.
        "cpu_ms_per_document_before_after": [cpu_ms(sample) for sample in side_by_side],
        "cpu_ms_per_document_one_worker": cpu_ms(*alone),
    }
