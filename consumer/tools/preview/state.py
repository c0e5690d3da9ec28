"""What the ``--serve`` page shows: the reader's choice (sample, locale, set), checked, and the
renderings for it, made on request and kept until a watched file changes (``fingerprint``). Each
rendering is also written to the output folder. No HTTP here (that is ``server``).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from consumer.tools.preview.render import Preview, render_preview
from rendering import Renderer
from schemas import OrderCompleted

__all__ = ["Choice", "PreviewState", "fingerprint", "twin_set"]

_LOCALE = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*")
_SET = re.compile(r"[a-z0-9][a-z0-9_-]*")
_MAX_CACHED = 24
_TYPST_SUFFIX = "-typst"


@dataclass(frozen=True)
class Choice:
    source: str  # a key of the sources: a sample name, or "event"
    locale: str  # "" = the event's own
    template_set: str  # "" = chosen by the event's brand


def twin_set(name: str, names: tuple[str, ...]) -> str | None:
    """The same set laid out by the other engine, by name: ``default`` and ``default-typst``."""
    twin = name.removesuffix(_TYPST_SUFFIX) if name.endswith(_TYPST_SUFFIX) else name + _TYPST_SUFFIX
    return twin if twin in names and twin != name else None


def fingerprint(*paths: Path) -> str:
    """Changes when any file under these folders (or these files) is added, removed or modified."""
    digest = hashlib.sha256()
    for root in paths:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while we looked
            digest.update(f"{path}\0{stat.st_mtime_ns}\0{stat.st_size}\n".encode())
    return digest.hexdigest()[:16]


class PreviewState:
    """Renders on request, once per choice and template version; thread-safe (one lock)."""

    def __init__(
        self,
        template_dir: Path,
        out: Path,
        build_renderer: Callable[[Path], Renderer],
        sources: Mapping[str, Callable[[], OrderCompleted]],
        default: Choice,
        *,
        watch: Path | None = None,
    ) -> None:
        self.template_dir, self.out, self.sources, self.default = template_dir, out, sources, default
        self._watched = (template_dir, watch) if watch is not None else (template_dir,)
        self._build = build_renderer
        self._lock = threading.Lock()
        self._version = ""
        self._renderer: Renderer | Exception | None = None
        self._cache: dict[Choice, Preview | Exception] = {}

    def version(self) -> str:
        return fingerprint(*self._watched)

    def choice(self, query: Mapping[str, str]) -> Choice:
        """The page's choice; ValueError for values the pickers never send."""
        chosen = Choice(
            query.get("sample", self.default.source),
            query.get("locale", self.default.locale),
            query.get("set", self.default.template_set),
        )
        if chosen.source not in self.sources:
            raise ValueError("unknown sample")
        if chosen.locale and not _LOCALE.fullmatch(chosen.locale):
            raise ValueError("bad locale")
        if chosen.template_set and not _SET.fullmatch(chosen.template_set):
            raise ValueError("bad set name")
        return chosen

    def twin(self, chosen: Choice, shown: Preview) -> tuple[str, Preview | Exception] | None:
        """The same order and locale with the shown set's twin (see :func:`twin_set`), to show side
        by side; not written to the output folder, which keeps the chosen rendering."""
        with self._lock:
            renderer = self._renderer if isinstance(self._renderer, Renderer) else None
        name = twin_set(shown.template_set, renderer.set_names) if renderer is not None else None
        if name is None:
            return None
        return name, self.render(Choice(chosen.source, chosen.locale, name), write=False)[2]

    def render(
        self, chosen: Choice, *, write: bool = True
    ) -> tuple[str, Renderer | None, Preview | Exception]:
        """(template version, the renderer if it could be built, the preview or why it failed)."""
        with self._lock:
            version = self.version()  # before reading any template: a later edit changes it again
            if version != self._version:
                self._version, self._renderer, self._cache = version, None, {}
            if self._renderer is None:
                try:
                    self._renderer = self._build(self.template_dir)
                except Exception as exc:  # noqa: BLE001 — shown on the page, the server keeps going
                    self._renderer = exc
            renderer = self._renderer if isinstance(self._renderer, Renderer) else None
            if chosen not in self._cache:
                if len(self._cache) >= _MAX_CACHED:
                    self._cache.clear()
                self._cache[chosen] = self._render(renderer, chosen, write=write)
            return version, renderer, self._cache[chosen]

    def _render(self, renderer: Renderer | None, chosen: Choice, *, write: bool) -> Preview | Exception:
        if renderer is None:
            assert isinstance(self._renderer, Exception)  # noqa: S101 — set just before
            return self._renderer
        try:
            preview = render_preview(
                renderer,
                self.sources[chosen.source](),
                template_set=chosen.template_set or None,
                locale=chosen.locale or None,
            )
            if write:
                preview.write(self.out)
        except Exception as exc:  # noqa: BLE001 — shown on the page, the server keeps going
            return exc
        return preview
