"""The render workers' fork server, in a module of its own: the service starts it first thing, before
importing anything else, so that its import of the renderer overlaps all of the service's own.

Workers fork from a server process that imported the renderer (its libraries, fonts' code) once:
each worker, first or replacement, then starts without importing it again (~0.45 s of CPU each
with WeasyPrint). WeasyPrint is preloaded only when a template set uses it: a folder of Typst
sets keeps it out of every worker (~35 MB each). The server itself is a fresh process, like a
spawned one: it never shares the parent's librdkafka threads.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import os
from pathlib import Path

__all__ = ["preloaded_modules", "start_fork_server", "worker_context"]


def preloaded_modules(template_dir: Path | None = None) -> list[str]:
    """What the fork server imports for the sets in ``template_dir`` (``ORDERMAIL_TEMPLATE_DIR``,
    else the shipped templates: the service starts the server before it reads its settings)."""
    from rendering.documents import TEMPLATE_DIR, set_engines

    folder = template_dir or Path(os.environ.get("ORDERMAIL_TEMPLATE_DIR") or TEMPLATE_DIR)
    modules = ["consumer.processing.render_pool", "rendering.renderer"]
    return [*modules, "rendering.weasyprint_overrides"] if "weasyprint" in set_engines(folder) else modules


def worker_context(template_dir: Path | None = None) -> multiprocessing.context.ForkServerContext:
    """The context workers start from; the preload list counts only until the server runs."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(preloaded_modules(template_dir))
    return context


def start_fork_server() -> None:
    """Starts the fork server now rather than when the first worker is needed."""
    worker_context()
    multiprocessing.forkserver.ensure_running()
