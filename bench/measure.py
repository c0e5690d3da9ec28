"""What the bench reads from the processes it runs: CPU time and resident memory (from /proc),
and a progress bar on stderr."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

__all__ = ["RssSampler", "cpu_seconds", "progress"]


_shown: dict[str, int] = {}


def progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = width * done // max(total, 1)
    if done < total and _shown.get(label) == filled:
        return  # an update when the bar grows (outcomes arrive in batches: not every count is seen)
    _shown[label] = filled
    sys.stderr.write(f"\r{label:<18} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


class RssSampler(threading.Thread):
    """Largest resident set of the service's render workers (its descendants: the workers fork
    from a server process the service starts), and the largest private part of one (resident
    minus file-backed and shared pages: what the pool's recycle limit counts; pages inherited
    from the fork server and mapped font files are shared by every worker)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.max_mb, self.max_private_mb, self.running = pid, 0.0, 0.0, True

    def run(self) -> None:
        while self.running:
            for child in _descendants(self.pid):
                self.max_mb = max(self.max_mb, _rss_mb(child))
                self.max_private_mb = max(self.max_private_mb, _private_mb(child))
            time.sleep(0.5)


def cpu_seconds(pid: int, *, with_children: bool = False) -> float:
    """User + system CPU time of a process (and of its descendants, live and reaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if with_children:
        ticks += int(fields[13]) + int(fields[14])
    total = ticks / os.sysconf("SC_CLK_TCK")
    if with_children:
        total += sum(cpu_seconds(child, with_children=True) for child in _children(pid))
    return total


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _descendants(pid: int) -> list[int]:
    children = _children(pid)
    return children + [grandchild for child in children for grandchild in _descendants(child)]


def _private_mb(pid: int) -> float:
    try:
        _, resident, shared, *_ = Path(f"/proc/{pid}/statm").read_text().split()
    except (OSError, ValueError):
        return 0.0
    return (int(resident) - int(shared)) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0
