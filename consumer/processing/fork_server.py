"""The render workers' fork server, in a module of its own: the service starts it first thing, before
importing anything else, so that its import of the renderer overlaps all of the service's own.

Workers fork from a server process that imported the renderer (WeasyPrint, its libraries, fonts'
code) once: each worker, first or replacement, then starts without importing it again (~0.45 s of
CPU each). The server itself is a fresh process, like a spawned one: it never shares the parent's
librdkafka threads.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver

__all__ = ["start_fork_server", "worker_context"]


def worker_context() -> multiprocessing.context.ForkServerContext:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["consumer.processing.render_pool", "rendering.renderer"])
    return context


def start_fork_server() -> None:
    """Starts the fork server now rather than when the first worker is needed."""
    worker_context()
    multiprocessing.forkserver.ensure_running()
