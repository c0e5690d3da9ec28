"""Rendering and encryption in a pool of warm worker processes.

PDF rendering is CPU work that holds the GIL, so it runs in processes (one per core by
default). Each worker is forked from a fork server that has imported the renderer once (never
from the service, which runs librdkafka threads), warms up once (fonts, templates, CSS, one
sample receipt) and then renders one order at a time. With
``check_templates``, the first workers also share out the start-up template check
(:meth:`Renderer.validate`) while warming up, so the main process never loads WeasyPrint. A worker
is replaced when it has rendered ``max_documents``, when its resident memory passes
``max_rss_mb``, when it crashes, or when one render takes longer than ``timeout_s`` (it is
killed: a runaway render must not hang the service). A pool of our own instead of
``ProcessPoolExecutor``, because that one cannot kill a single stuck task.
"""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import gc
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumer.processing.fork_server import worker_context
from consumer.processing.ports import Fetched
from rendering import (
    DEFAULT_SET,
    TEMPLATE_DIR,
    PasswordPolicy,
    RenderedAttachment,
    RenderedMail,
    RenderError,
    encrypt_pdf,
)

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from consumer.app.settings import Settings
    from rendering import Renderer
    from schemas import OrderCompleted

__all__ = [
    "PoolStats",
    "RenderConfig",
    "RenderPool",
    "remove_stale_worker_folders",
    "settle_after_warm_up",
]

log = logging.getLogger("ordermail.render")
START_TIMEOUT_S = 60.0
_SCRATCH_PREFIX = "ordermail-worker-"
_LOCK = ".held"  # in each worker's folder, locked by its pool while the folder is in use
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class RenderConfig:
    template_dir: Path = TEMPLATE_DIR
    template_set: str = DEFAULT_SET
    password_template: str | None = None
    password_min_length: int = 8
    password_hint: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RenderConfig:
        return cls(
            template_dir=settings.template_dir or TEMPLATE_DIR,
            template_set=settings.template_set,
            password_template=settings.password_template,
            password_min_length=settings.password_min_length,
            password_hint=settings.password_hint,
        )

    def password_policy(self) -> PasswordPolicy:
        if self.password_template:
            return PasswordPolicy(self.password_template, min_length=self.password_min_length)
        return PasswordPolicy(min_length=self.password_min_length)

    def build(self) -> Renderer:
        from rendering import Renderer  # loads WeasyPrint: only where documents are rendered

        return Renderer(
            self.template_dir,
            password_policy=self.password_policy(),
            password_hint=self.password_hint,
            default_set=self.template_set,
        )


@dataclass
class PoolStats:
    documents: int = 0
    recycled: int = 0
    crashed: int = 0
    timed_out: int = 0
    max_rss_mb: float = 0.0


class _Timeout(Exception):
    pass


class _PoolClosed(Exception):
    pass


def _restart_delay_s(attempt: int) -> float:
    """How long a failed worker start waits before the next try: 2, 4, ... then every 30 s."""
    return min(30.0, 2.0 ** min(attempt, 5))


def remove_stale_worker_folders() -> int:
    """Removes the workers' folders that no running pool holds any more (their service was
    killed, or ended before closing its pool): a pod's /tmp outlives its container's restarts.
    A pool holds a lock on each of its workers' folders (``flock``, which works across processes,
    users' and containers' process ids alike); a folder without one is stale. Returns how many
    were removed."""
    removed = 0
    for folder in Path(tempfile.gettempdir()).glob(f"{_SCRATCH_PREFIX}*"):
        if _held(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += not folder.exists()
    return removed


def _held(folder: Path) -> bool:
    """Whether a running pool holds ``folder`` (or may be just making it: no lock file yet)."""
    try:
        fd = os.open(folder / _LOCK, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        try:
            return time.time() - folder.stat().st_mtime < START_TIMEOUT_S
        except OSError:
            return True  # gone meanwhile, or not ours to look into
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also lets go of the lock just taken
    return False


def _worker_main(
    connection: Connection, config: RenderConfig, share: tuple[int, int] | None, scratch: str
) -> None:
    """Runs in the worker process: warm up (and check its ``share`` of the templates), then
    render orders until told to stop (None). Its temporary files (WeasyPrint's copies of the
    ``@font-face`` fonts, ~1.5 MB) go to ``scratch``, which the pool removes once the worker has
    ended: a worker that is killed, or exits without collecting its objects, leaves nothing."""
    tempfile.tempdir = os.environ["TMPDIR"] = scratch  # Python's, and any library's in C or Rust
    _with_frame_room(_serve, connection, config, share)


def _with_frame_room(function: Callable[..., None], *args: Any) -> None:
    """Calls ``function`` where Python's frames have room to recurse without allocating.

    CPython 3.11+ keeps frames in 16 KB chunks and unmaps a chunk as soon as the frame at its base
    returns. WeasyPrint's layout recursion crosses such a boundary back and forth: a worker
    mapped and unmapped memory ~400 times per receipt, with ~500 page faults. This frame declares
    a value stack of 1 MB that it never touches, so CPython gives it a chunk of its own of twice
    that (virtual memory: only the pages used become resident), and everything called from it
    fits in the rest.
    """
    function(*args)


_with_frame_room.__code__ = _with_frame_room.__code__.replace(co_stacksize=1 << 17)


def _serve(connection: Connection, config: RenderConfig, share: tuple[int, int] | None) -> None:
    try:
        renderer = config.build()
        report = renderer.validate(share) if share else []
    except RenderError as error:
        connection.send(("broken", str(error), _rss_mb()))
        return
    if not report:  # the template check has already laid out and encrypted real documents
        # A first real layout and encryption load the remaining fonts, glyphs and crypto code. The
        # password policy is left out: a misconfigured one is reported per event, not here.
        encrypt_pdf(renderer.render_mail(renderer.warm_up_order(), encrypt=False).pdf, "warm-up-password")
    settle_after_warm_up()
    connection.send(("ready", report, _rss_mb()))
    while (request := connection.recv()) is not None:
        order, fetched = request
        try:
            reply: tuple[str, Any] = (
                "ok",
                _with_fetched(renderer, order, renderer.render_mail(order), fetched),
            )
        except RenderError as error:
            reply = ("error", error.reason)
        except _NotAPdf:
            reply = ("not_a_pdf", None)
        except Exception:  # noqa: BLE001 — reported as a classified failure, never as a crash
            reply = ("error", "render_error")
        connection.send((*reply, _rss_mb()))


class _NotAPdf(Exception):
    pass


def _with_fetched(
    renderer: Renderer, order: OrderCompleted, mail: RenderedMail, fetched: Fetched
) -> RenderedMail:
    """The fetched documents, opened (a PDF, or the event is rejected) and encrypted with the
    order's password like the rendered ones."""
    if not fetched:
        return mail
    import pikepdf

    password = renderer.password_policy.password_for(order)
    added = []
    for name, data in fetched:
        try:
            with pikepdf.open(BytesIO(data)) as document:
                pages = len(document.pages)
        except pikepdf.PdfError:
            raise _NotAPdf from None
        added.append(RenderedAttachment(name, encrypt_pdf(data, password), pages, encrypted=True))
    return replace(mail, attachments=(*mail.attachments, *added))


def settle_after_warm_up() -> None:
    """Moves everything built so far (fonts, templates, stylesheets, modules), which lives as
    long as the process, out of the garbage collector's reach: each render leaves cycles that
    trigger full collections, and those then no longer re-scan it (~5 % of render CPU). Then
    hands what the start-up freed back to the system, which glibc would otherwise keep (reading
    the fonts' character maps once, the template check: ~5 MB a Typst worker here)."""
    gc.collect()
    gc.freeze()
    _release_free_memory()


def _release_free_memory() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to release this way
        return
    libc.malloc_trim(0)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _rss_mb() -> float:
    """The worker's own resident memory: resident minus shared (file-backed) pages. A Noto CJK
    collection maps ~20 MB per face and weight; those pages are the page cache's, shared by every
    worker, and must not make a healthy worker look like a leaking one."""
    try:
        with Path("/proc/self/statm").open() as statm:
            _, resident, shared, *_ = statm.read().split()
            return (int(resident) - int(shared)) * _PAGE_SIZE / 2**20
    except OSError:  # not Linux: peak instead of current
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Worker:
    def __init__(self, config: RenderConfig, share: tuple[int, int] | None = None) -> None:
        context = worker_context(config.template_dir)
        scratch = parent = child = None
        self._hold = -1
        try:
            scratch = tempfile.mkdtemp(prefix=_SCRATCH_PREFIX)
            self._hold = os.open(Path(scratch) / _LOCK, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._hold, fcntl.LOCK_EX)  # see remove_stale_worker_folders
            parent, child = context.Pipe()
            process = context.Process(
                target=_worker_main, args=(child, config, share, scratch), name="render-worker", daemon=True
            )
            process.start()
        except Exception as exc:  # e.g. no file descriptor or disk left, the fork server gone
            if parent is not None:
                parent.close()
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            self._let_go()
            raise RuntimeError(f"render worker could not be started: {exc!r}") from exc
        finally:
            if child is not None:
                child.close()
        self.connection, self.process, self.scratch = parent, process, scratch
        self.documents = 0
        self.rss_mb = 0.0

    def wait_ready(self) -> list[str]:
        """The worker's template check report; raises RenderError when its templates are broken."""
        if not self.connection.poll(START_TIMEOUT_S):
            self.kill()
            raise RuntimeError("render worker did not start")
        try:
            status, payload, self.rss_mb = self.connection.recv()
        except (EOFError, OSError):  # readable because it died
            self.kill()
            raise RuntimeError("render worker died while starting") from None
        if status == "broken":
            self.kill()
            raise RenderError("template_error", payload)
        report: list[str] = payload
        return report

    async def call(self, order: OrderCompleted, fetched: Fetched, timeout_s: float) -> tuple[str, Any]:
        """Sends the order and waits, in the event loop, until the answer is readable (no thread
        hand-offs: they cost the service's main process more CPU than the call itself)."""
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        fd = self.connection.fileno()
        loop.add_reader(fd, _resolve, readable)
        try:
            if fetched:  # megabytes, perhaps: written from a thread while the worker reads them
                await loop.run_in_executor(None, self.connection.send, (order, fetched))
            else:
                self.connection.send((order, fetched))  # a few KB into an empty socket buffer: never blocks
            # wait_for, not asyncio.timeout: an answer already readable when the deadline fires
            # (the loop busy) is still taken, not counted as a timeout that kills the worker.
            await asyncio.wait_for(readable, timeout_s)
        except TimeoutError:
            raise _Timeout from None
        finally:
            loop.remove_reader(fd)
        # Readable means the answer (written in one go) or end of file (the worker died: EOFError).
        status, payload, self.rss_mb = self.connection.recv()
        self.documents += 1
        return status, payload

    def stop(self) -> None:
        try:
            self.connection.send(None)
            self.process.join(5)
        except OSError:
            pass
        self.kill()

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.connection.close()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self._let_go()

    def _let_go(self) -> None:
        if self._hold >= 0:
            os.close(self._hold)
            self._hold = -1


class RenderPool:
    def __init__(
        self,
        config: RenderConfig,
        *,
        workers: int,
        max_documents_per_worker: int = 500,
        max_rss_mb: float = 250.0,
        timeout_s: float = 30.0,
        check_templates: bool = False,
    ) -> None:
        self._config = config
        self._max_documents = max_documents_per_worker
        self._max_rss_mb = max_rss_mb
        self._timeout_s = timeout_s
        self.stats = PoolStats()
        self._threads = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render-replace")
        self._closing = threading.Lock()  # close() and a replacement being started, one at a time
        self._closed = False
        self._starting: set[_Worker] = set()  # replacements warming up
        self._failing_since: float | None = None  # the first of the failed starts in a row
        self._idle: asyncio.Queue[_Worker] | None = None
        self._replacing: set[asyncio.Task[None]] = set()
        self._workers: list[_Worker] = []
        self.template_report: list[str] = []
        try:  # started in parallel, then awaited: start-up takes one warm-up, not N
            for i in range(workers):
                self._workers.append(_Worker(config, (i, workers) if check_templates else None))
            for worker in self._workers:
                self.template_report += worker.wait_ready()
        except BaseException:  # those started are ended, whatever stopped the start
            self.close()
            raise

    @property
    def size(self) -> int:
        return len(self._workers)

    @property
    def failing_to_start_s(self) -> float:
        """How long worker starts have failed in a row (0: the last one succeeded). A slow
        warm-up does not count: only a start that failed."""
        since = self._failing_since
        return 0.0 if since is None else time.monotonic() - since

    def worker_pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process.pid is not None]

    async def render(self, order: OrderCompleted, fetched: Fetched = ()) -> RenderedMail:
        """Waits for a free worker and renders on it (see :meth:`reserved`)."""
        async with self.reserved() as render:
            return await render(order, fetched)

    @asynccontextmanager
    async def reserved(self) -> AsyncIterator[Callable[[OrderCompleted, Fetched], Awaitable[RenderedMail]]]:
        """Waits for a free worker, then yields what renders one order on it: callers can tell
        the wait (up to ``max_in_flight`` events share the workers) from the render itself. A
        reservation left unused gives its worker back."""
        worker = await self._idle_queue().get()
        used = False

        async def render(order: OrderCompleted, fetched: Fetched = ()) -> RenderedMail:
            nonlocal used
            if used:
                raise RuntimeError("one render per reservation")
            used = True
            return await self._render_on(worker, order, fetched)

        try:
            yield render
        finally:
            if not used:
                self._idle_queue().put_nowait(worker)

    async def _render_on(self, worker: _Worker, order: OrderCompleted, fetched: Fetched) -> RenderedMail:
        """Raises :class:`RenderError` (``render_timeout``, ``render_crashed`` or the renderer's),
        or :class:`FetchError` when a fetched document is not a PDF."""
        idle = self._idle_queue()
        answered = retire = False
        try:
            status, payload = await worker.call(order, fetched, self._timeout_s)
            answered = True
            retire = worker.documents >= self._max_documents or worker.rss_mb > self._max_rss_mb
        except _Timeout:
            self.stats.timed_out += 1
            raise RenderError("render_timeout") from None
        except (EOFError, OSError):
            self.stats.crashed += 1
            raise RenderError("render_crashed") from None
        finally:
            if answered and not retire:
                idle.put_nowait(worker)
            else:  # a stuck or dead worker is killed; one that is merely old stops cleanly
                self._replace_in_background(worker, graceful=answered)
        self.stats.documents += 1
        self.stats.max_rss_mb = max(self.stats.max_rss_mb, worker.rss_mb)
        if status == "error":
            raise RenderError(payload)
        if status == "not_a_pdf":
            # Imported here: the fork server imports this module for the workers, and delivery's
            # package (aiohttp, dnspython, dkimpy, aiosmtplib) would add ~18 MB to each of them.
            from delivery.remote import TYPE, FetchError

            raise FetchError(TYPE)
        result: RenderedMail = payload
        return result

    def _idle_queue(self) -> asyncio.Queue[_Worker]:
        if self._idle is None:  # created on first use, inside the event loop that uses it
            self._idle = asyncio.Queue()
            for worker in self._workers:
                self._idle.put_nowait(worker)
        return self._idle

    def _replace_in_background(self, worker: _Worker, *, graceful: bool) -> None:
        """The other workers keep rendering while this one is replaced (start-up takes ~1 s)."""

        async def replace() -> None:
            loop = asyncio.get_running_loop()
            attempt = 0
            while not self._closed:  # never given up: the pool would be one worker short for good
                attempt += 1
                try:
                    fresh = await loop.run_in_executor(self._threads, self._replace, worker, graceful)
                except Exception as error:  # noqa: BLE001 - whatever it was, the place is kept
                    if self._closed:
                        return
                    if self._failing_since is None:
                        self._failing_since = time.monotonic()
                    # The cause (an errno, a template check's finding) holds no order's data.
                    log.error("render worker failed to start (attempt %d): %s", attempt, error)
                    await asyncio.sleep(_restart_delay_s(attempt))
                    continue
                self._failing_since = None
                self.stats.recycled += 1
                self._idle_queue().put_nowait(fresh)
                return

        task = asyncio.get_running_loop().create_task(replace())
        self._replacing.add(task)
        task.add_done_callback(self._replacing.discard)

    def _replace(self, worker: _Worker, graceful: bool) -> _Worker:
        with self._closing:  # once closed, close() ends the workers, this one included
            if self._closed:
                raise _PoolClosed
            retiring = worker in self._workers
            if retiring:
                self._workers.remove(worker)
        if retiring:
            worker.stop() if graceful else worker.kill()
        with self._closing:  # a worker is started, or known to close(), never both missed
            if self._closed:
                raise _PoolClosed
            fresh = _Worker(self._config)
            self._starting.add(fresh)
        try:
            fresh.wait_ready()
        finally:
            with self._closing:
                self._starting.discard(fresh)
        with self._closing:
            if not self._closed:
                self._workers.append(fresh)
                return fresh
        fresh.stop()
        raise _PoolClosed

    def close(self) -> None:
        """Stops every worker; returns once they have ended, one still warming up included (it
        is killed: its warm-up would hold the shutdown for up to a minute)."""
        with self._closing:
            self._closed = True
            workers, starting = list(self._workers), list(self._starting)
        for warming in starting:
            if warming.process.is_alive():
                warming.process.kill()  # its starter sees it die, removes what it left and gives up
        for worker in workers:
            worker.stop()
        self._threads.shutdown(wait=True, cancel_futures=True)
