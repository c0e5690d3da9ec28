"""The render workers' fork server, in a module of its own: the service starts it first thing, before
importing anything else, so that its import of the renderer overlaps all of the service's own.

Workers fork from a server process that imported the renderer (its libraries, fonts' code) once:
each worker, first or replacement, then starts without importing it again (~0.45 s of CPU each
with WeasyPrint). WeasyPrint is preloaded (and set up) only when a template set uses it: a folder
of Typst sets keeps it out of every worker (~35 MB each). The server itself is a fresh process,
like a spawned one: it never shares the parent's librdkafka threads.
"""

from __future__ import annotations

import functools
import multiprocessing
import multiprocessing.forkserver
import os
import tomllib
from pathlib import Path

__all__ = [
    "SHIPPED_TEMPLATES",
    "preloaded_modules",
    "set_engine",
    "set_engines",
    "start_fork_server",
    "stop_fork_server",
    "worker_context",
]

# rendering.TEMPLATE_DIR, named without importing the rendering package (it loads pikepdf and
# more: the server must start before any of that).
SHIPPED_TEMPLATES = Path(__file__).resolve().parents[2] / "rendering" / "templates"


@functools.cache
def preloaded_modules(template_dir: Path | None = None) -> tuple[str, ...]:
    """What the fork server imports for the sets in ``template_dir`` (``ORDERMAIL_TEMPLATE_DIR``,
    else the shipped templates: the service starts the server before it reads its settings)."""
    folder = template_dir or Path(os.environ.get("ORDERMAIL_TEMPLATE_DIR") or SHIPPED_TEMPLATES)
    modules = ("consumer.processing.render_pool", "rendering.renderer")
    return (*modules, "rendering.weasyprint_setup") if "weasyprint" in set_engines(folder) else modules


def set_engine(set_folder: Path) -> str | None:
    """The engine a set's ``set.toml`` names (WeasyPrint where it names none); None when the file
    cannot be read: loading the set, in the workers, says what is wrong with it."""
    try:
        config = tomllib.loads((set_folder / "set.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
        return None
    return str(config.get("engine", "weasyprint"))


def set_engines(template_dir: Path) -> set[str | None]:
    """The engines the sets in ``template_dir`` name (None for a set.toml that cannot be read)."""
    return {set_engine(config.parent) for config in (template_dir / "sets").glob("*/set.toml")}


def worker_context(template_dir: Path | None = None) -> multiprocessing.context.ForkServerContext:
    """The context workers start from; the preload list counts only until the server runs."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preloaded_modules(template_dir)))
    return context


def start_fork_server() -> None:
    """Starts the fork server now rather than when the first worker is needed."""
    worker_context()
    multiprocessing.forkserver.ensure_running()


def stop_fork_server() -> None:
    """Stops this process's fork server: the next worker starts a new one, with the preload
    list of its own template folder (``make bench`` measures sets one after the other). CPython
    has no public way; its own tests use this one."""
    multiprocessing.forkserver._forkserver._stop()  # type: ignore[attr-defined]
