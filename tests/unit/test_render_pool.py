"""The render pool with real worker processes: timeouts, crashes and recycling."""

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from consumer.processing import render_pool
from consumer.processing.render_pool import RenderConfig, RenderPool, remove_stale_worker_folders
from rendering import TEMPLATE_DIR, RenderError
from schemas.samples import sample_order

# A template bug that never ends for one order: 10^10 sandboxed loop iterations.
RUNAWAY = (
    '{% if order_id == "ORD-HANG" %}{% for i in range(100000) %}{% for j in range(100000) %}'
    "{% endfor %}{% endfor %}{% endif %}"
)


def _runaway_templates(tmp_path: Path) -> Path:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATE_DIR, templates)
    receipt = templates / "sets/default/receipt.html"
    receipt.write_text(RUNAWAY + receipt.read_text())
    return templates


def test_runaway_render_is_killed_classified_and_the_pool_recovers(tmp_path: Path) -> None:
    pool = RenderPool(RenderConfig(template_dir=_runaway_templates(tmp_path)), workers=1, timeout_s=2)
    hang = sample_order(1)
    hang["order_id"] = "ORD-HANG"
    stuck_pid = pool.worker_pids()[0]

    async def scenario() -> bytes:
        with pytest.raises(RenderError) as caught:
            await pool.render(hang)
        assert caught.value.reason == "render_timeout"
        return (await pool.render(sample_order(2))).pdf  # served by the replacement worker

    try:
        assert asyncio.run(scenario()).startswith(b"%PDF")
        assert pool.stats.timed_out == 1
        assert pool.worker_pids() != [stuck_pid]
        with pytest.raises(ProcessLookupError):
            os.kill(stuck_pid, 0)  # the stuck worker is gone, not left spinning
    finally:
        pool.close()


def test_a_crashed_worker_is_replaced(tmp_path: Path) -> None:
    pool = RenderPool(RenderConfig(), workers=1)
    os.kill(pool.worker_pids()[0], signal.SIGKILL)

    async def scenario() -> bytes:
        with pytest.raises(RenderError) as caught:
            await pool.render(sample_order(3))
        assert caught.value.reason == "render_crashed"
        return (await pool.render(sample_order(3))).pdf

    try:
        assert asyncio.run(scenario()).startswith(b"%PDF")
        assert pool.stats.crashed == 1
    finally:
        pool.close()


def test_workers_are_recycled_after_max_documents() -> None:
    pool = RenderPool(RenderConfig(), workers=1, max_documents_per_worker=2)
    first = pool.worker_pids()

    async def scenario() -> list[int]:
        pages = [(await pool.render(sample_order(seed))).pages for seed in range(5)]
        await asyncio.sleep(0)
        return pages

    try:
        assert all(p >= 1 for p in asyncio.run(scenario()))
        assert pool.stats.documents == 5
        assert pool.stats.recycled == 2  # after documents 2 and 4
        assert pool.worker_pids() != first
        assert 0 < pool.stats.max_rss_mb < 500
    finally:
        pool.close()


def test_workers_leave_no_temporary_files_however_they_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WeasyPrint copies the ``@font-face`` fonts (~1.5 MB) to a temporary folder that it removes
    only when its configuration is collected, which a worker's exit never did: a pod's /tmp
    (256 MiB) filled after ~170 recycled workers. Now each worker has a folder of its own, which
    the pool removes once the worker has ended, retired or killed."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pool = RenderPool(RenderConfig(), workers=1, max_documents_per_worker=2)
    folders_seen: set[Path] = set()

    def worker_folders() -> list[Path]:
        fonts = list(tmp_path.glob("ordermail-worker-*/weasyprint-*/*"))
        folders_seen.update(path.parent.parent for path in fonts)
        return fonts

    async def scenario() -> None:
        for seed in range(3):  # the first worker retires after two documents
            await pool.render(sample_order(seed))
            assert worker_folders()
        os.kill(pool.worker_pids()[0], signal.SIGKILL)
        with pytest.raises(RenderError):
            await pool.render(sample_order(3))
        await pool.render(sample_order(4))  # on the crashed one's replacement
        assert worker_folders()

    try:
        asyncio.run(scenario())
    finally:
        pool.close()
    assert len(folders_seen) == 3
    assert list(tmp_path.iterdir()) == []


def test_a_worker_that_fails_to_start_is_tried_again_until_one_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replacement that failed with anything but our own errors (no file descriptor or disk
    left: an OSError) ended its retries silently: the pool was one worker short for good, and
    with none left every event waited forever."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(render_pool, "_restart_delay_s", lambda attempt: 0.01)
    pool = RenderPool(RenderConfig(), workers=1, max_documents_per_worker=1)
    failures: list[int] = []
    failing, go_on = threading.Event(), threading.Event()
    make_folder = tempfile.mkdtemp

    def full_disk_twice(**arguments: Any) -> str:
        if len(failures) < 2:
            failures.append(1)
            if len(failures) == 2:  # held here while the test looks at the pool
                failing.set()
                go_on.wait(30)
            raise OSError(28, "No space left on device")
        folder: str = make_folder(**arguments)
        return folder

    monkeypatch.setattr(tempfile, "mkdtemp", full_disk_twice)

    async def scenario() -> int:
        await pool.render(sample_order(1))  # the worker retires; its replacement fails twice
        assert await asyncio.get_running_loop().run_in_executor(None, failing.wait, 30)
        assert pool.size == 0
        assert pool.failing_to_start_s > 0  # what readiness reports after 30 s
        go_on.set()
        return (await asyncio.wait_for(pool.render(sample_order(2)), 60)).pages

    try:
        assert asyncio.run(scenario()) >= 1
        assert len(failures) == 2
        assert pool.size == 1
        assert pool.failing_to_start_s == 0
    finally:
        go_on.set()
        pool.close()
    assert list(tmp_path.iterdir()) == []


def test_closing_kills_a_replacement_still_warming_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replacement that finished warming up after close() was never stopped (nor its folder
    removed); then close() waited for the warm-up instead: up to a minute for a slow one, past a
    pod's grace period (the pod is then killed, and its folders stay)."""
    templates = _runaway_templates(tmp_path / "set")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    started: list[str] = []  # the workers' folders, one per worker started
    replacement_started = threading.Event()
    make_folder = tempfile.mkdtemp

    def noted_folder(**arguments: Any) -> str:
        started.append(str(make_folder(**arguments)))
        if len(started) == 2:
            replacement_started.set()
        return started[-1]

    monkeypatch.setattr(tempfile, "mkdtemp", noted_folder)
    pool = RenderPool(RenderConfig(template_dir=templates), workers=1, max_documents_per_worker=1)
    receipt = templates / "sets/default/receipt.html"
    never_ends = RUNAWAY.replace('{% if order_id == "ORD-HANG" %}', "{% if true %}")
    receipt.write_text(never_ends + receipt.read_text())  # for the next worker's warm-up

    async def scenario() -> float:
        await pool.render(sample_order(1))  # the worker retires: its replacement never warms up
        assert await asyncio.get_running_loop().run_in_executor(None, replacement_started.wait, 30)
        closing = time.monotonic()
        pool.close()
        return time.monotonic() - closing

    assert asyncio.run(scenario()) < render_pool.START_TIMEOUT_S / 2
    assert len(started) == 2
    assert list(scratch.iterdir()) == []


def test_folders_no_running_pool_holds_are_removed_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pool locks each of its workers' folders (flock: the same across processes, users and
    containers, where process ids are not); a killed service's folders are left unlocked."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    pool = RenderPool(RenderConfig(), workers=1)
    try:
        (live,) = tmp_path.glob("ordermail-worker-*")
        killed = tmp_path / "ordermail-worker-killed"
        (killed / "weasyprint-x").mkdir(parents=True)
        (killed / ".held").touch()  # its lock went with its process
        unlocked_long_ago = tmp_path / "ordermail-worker-old"
        unlocked_long_ago.mkdir()
        os.utime(unlocked_long_ago, (0, 0))
        being_made = tmp_path / "ordermail-worker-new"  # its lock file comes a moment later
        being_made.mkdir()
        assert remove_stale_worker_folders() == 2
        assert sorted(tmp_path.iterdir()) == sorted([live, being_made])
        assert asyncio.run(pool.render(sample_order(1))).pages >= 1  # its worker never noticed
    finally:
        pool.close()
    assert sorted(tmp_path.iterdir()) == [being_made]


def test_renderer_errors_pass_through_with_their_reason() -> None:
    pool = RenderPool(RenderConfig(password_template="{{ order_id[-2:] }}"), workers=1)  # too short

    async def scenario() -> None:
        with pytest.raises(RenderError) as caught:
            await pool.render(sample_order(4))
        assert caught.value.reason == "weak_password"

    try:
        asyncio.run(scenario())
        assert pool.stats.crashed == pool.stats.timed_out == 0
    finally:
        pool.close()


def test_a_reservation_renders_once_and_gives_an_unused_worker_back() -> None:
    pool = RenderPool(RenderConfig(), workers=1)

    async def scenario() -> int:
        async with pool.reserved():
            pass  # e.g. the event was cancelled before its turn
        async with pool.reserved() as render:  # the only worker: waits forever if it was lost
            pages = (await render(sample_order(1), ())).pages
            with pytest.raises(RuntimeError):
                await render(sample_order(2), ())
        return pages

    try:
        assert asyncio.run(asyncio.wait_for(scenario(), 60)) >= 1
        assert pool.stats.documents == 1
    finally:
        pool.close()


def test_settling_after_warm_up_freezes_what_was_built() -> None:
    probe = (
        "import gc; from consumer.processing.render_pool import settle_after_warm_up as settle;"
        "settle(); print(gc.get_freeze_count())"
    )
    frozen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert int(frozen.stdout) > 10_000  # the imported modules' objects, at least


def test_frames_called_with_room_stop_mapping_memory_on_each_deep_call() -> None:
    """A recursion 400 frames deep, 300 times: plain, CPython maps and unmaps frame chunks on
    each descent (page faults each time); under ``_with_frame_room`` it faults its pages once."""
    probe = (
        "import resource\n"
        "from consumer.processing.render_pool import _with_frame_room\n"
        "def down(n): return 0 if n == 0 else down(n - 1) + 1\n"
        "def oscillate():\n"
        "    for _ in range(300): down(400)\n"
        "def faults(call, *args):\n"
        "    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "    call(*args)\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before\n"
        "oscillate(); _with_frame_room(oscillate)\n"  # anything lazy happens before measuring
        "print(faults(oscillate), faults(_with_frame_room, oscillate))\n"
    )
    measured = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    plain, with_room = map(int, measured.stdout.split())
    if plain < 300:
        pytest.skip(f"this Python keeps its frame chunks ({plain} page faults): nothing to avoid")
    assert with_room < 30, (plain, with_room)
