"""The Typst engine, for template sets whose ``set.toml`` says ``engine = "typst"``.

A set's ``.typ`` documents are compiled by one warm ``typst.Compiler`` per set and process (it
memoises what did not change between orders: fonts, the parsed source, layout of unchanged parts).
The order reaches a document as data only: the file ``/order.json``, in memory, holds the variables
an HTML template gets (already formatted for the locale), which the document reads with
``json("/order.json")``. A value is then a string Typst prints, never markup it evaluates: ``#``,
``*`` or ``$`` in a customer's name print as typed. (A file rather than ``sys.inputs``: new inputs
rebuild Typst's standard library and everything memoised on it, ~1.3 ms a receipt.)

What a document can reach:

- **Files**: Typst reads files below its root only. Each set's root is a private folder holding
  symbolic links to the set's own entries and to ``shared/`` (see :class:`TypstWorkspace`): a
  document reads its set's files (``assets/logo.svg``) and ``/shared/...``, nothing else (no
  other set, no system file).
- **Packages**: none. Every ``.typ`` file of the set and of ``shared/`` is read when the set loads;
  an ``import`` or ``include`` must name a literal file path. A package (``"@preview/..."``) or a
  computed path is a template error, so Typst never goes to the network. The package folders the
  compiler is given are empty ones of our own.
- **Fonts**: the project's only (``shared/assets/fonts``, the cut CJK faces of ``cjk_faces`` and
  the installed Noto families of ``fonts.FALLBACK_FAMILIES``); Typst's embedded fonts and the
  system's are left out, so the output does not depend on the host.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pikepdf
import typst

from rendering import cjk_faces
from rendering.errors import RenderError
from rendering.fonts import FALLBACK_FAMILIES, family_files

__all__ = ["TypstDocument", "TypstWorkspace", "as_data"]

DATA_FILE = "order.json"  # at the root of every compilation, in memory: the order as data
_SYS_INPUTS = re.compile(r"\bsys\.inputs\b")
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc")
_QUOTED = re.compile(r'"[^"]*"|`[^`]*`')
_NAME = re.compile(r"[\w./-]{1,60}")
# `import`/`include` after `#` (markup) or at the start of a statement (code), and what follows.
# A guard against mistakes, not a parser: in code, `include x` (a variable) reads like prose and
# passes; `#include x`, a parenthesised path and any `"@...` package are refused.
_LOADS = re.compile(
    r'(?:(?P<hash>#)|^[ \t]*|[{;][ \t]*)(?:import|include)\b[ \t]*(?P<target>"@|"|\(|\S?)', re.MULTILINE
)


def as_data(context: Mapping[str, Any]) -> dict[str, Any]:
    """A template context as JSON-ready data: functions (``_``, ``gettext``) left out."""
    data = {key: value for key, value in context.items() if not callable(value)}
    return {key: dict(value) if isinstance(value, Mapping) else value for key, value in data.items()}


@dataclass(frozen=True)
class TypstDocument:
    """One attachment of a Typst set: its source per language, and the set's warm compiler."""

    compiler: typst.Compiler
    sources: Mapping[str, bytes]  # language -> the .typ source (a language's own file first)
    workspace: TypstWorkspace  # the fonts the compiler was given
    tagged: bool = False  # a tagged PDF (structure for screen readers): ~13 KB more to encrypt

    def render(self, language: str, data: Mapping[str, Any]) -> tuple[bytes, int]:
        """The PDF and its page count. Typst's message names the template's mistake (samples in
        ``templates check`` and ``preview``); the service reports only the reason."""
        files = {"main": self.sources[language], DATA_FILE: self.data_file(data)}
        try:
            # A dict of files ("main" compiled) is an input typst-py takes; its type stub omits it.
            pdf = self.compiler.compile(input=files, format="pdf", pdf_tags=self.tagged)  # type: ignore[type-var]
        except typst.TypstError as exc:
            raise RenderError("render_error", f"Typst failed: {_redacted(str(exc.message))}") from exc
        if not isinstance(pdf, bytes) or not pdf.startswith(b"%PDF-"):
            raise RenderError("render_error", "Typst returned no PDF")
        with pikepdf.open(io.BytesIO(pdf)) as document:  # ~0.2 ms; Typst's page tree is compressed
            return pdf, len(document.pages)

    @staticmethod
    def data_file(data: Mapping[str, Any]) -> bytes:
        """What the document reads as ``/order.json``: the data as JSON."""
        try:
            return json.dumps(data, ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise RenderError("template_error", f"context is not data ({type(exc).__name__})") from exc


class TypstWorkspace:
    """Where one process's Typst sets find their roots, fonts and (empty) package folder: folders
    of symbolic links under ``<tmp>/ordermail-typst-<uid>/`` (private to the user), named by a
    digest of what they link to, so that processes with the same templates and ``<tmp>`` share
    them. A render worker's ``<tmp>`` is its own, removed by the pool when the worker ends."""

    def __init__(self, template_dir: Path) -> None:
        self.path = _private_folder(Path(tempfile.gettempdir()) / f"ordermail-typst-{os.getuid()}")
        self._shipped_fonts = template_dir / "shared" / "assets" / "fonts"
        self._fonts: typst.Fonts | None = None

    def document(
        self, folder: Path, name: str, languages: list[str], compiler: typst.Compiler, *, tagged: bool
    ) -> TypstDocument:
        """The attachment ``name`` of the set in ``folder``: ``<language>/<name>`` before ``name``."""
        if not name.endswith(".typ"):
            raise RenderError("template_error", f"a Typst set's attachment must be a .typ file, not {name!r}")
        sources = {}
        for language in languages:
            own = folder / language / name
            sources[language] = (own if own.is_file() else folder / name).read_bytes()
        return TypstDocument(compiler, sources, self, tagged)

    def compiler(self, folder: Path, shared: Path) -> typst.Compiler:
        """The set's compiler, rooted in a folder that holds the set's entries and ``shared/``."""
        for source in [*folder.rglob("*.typ"), *shared.rglob("*.typ")]:
            check_source(source)
        for reserved in ("shared", DATA_FILE, "main"):  # the root's, and what each compilation adds
            if os.path.lexists(folder / reserved):
                raise RenderError("template_error", f"a Typst set cannot have an entry named {reserved!r}")
        links = {entry.name: entry.resolve() for entry in folder.iterdir()}
        root = self._links(f"root-{folder.name}", {**links, "shared": shared.resolve()})
        packages = self._links("packages", {})  # stays empty: nothing is ever downloaded
        return typst.Compiler(
            root=str(root),
            font_paths=self.fonts(),
            ignore_system_fonts=True,
            package_path=str(packages),
            package_cache_path=str(packages),
        )

    def fonts(self) -> typst.Fonts:
        """The project's fonts, read once per process and shared by every set's compiler."""
        if self._fonts is None:
            # Typst reads fonts from folders: one of links to exactly the files it may use.
            shipped = sorted(p for p in self._shipped_fonts.glob("*") if p.suffix.lower() in _FONT_SUFFIXES)
            fallbacks = (path for family in FALLBACK_FAMILIES for path in family_files(family))
            files = [*shipped, *cjk_faces.faces(), *fallbacks]
            links = {f"{i:02d}-{path.name}": path.resolve() for i, path in enumerate(dict.fromkeys(files))}
            folder = self._links("fonts", links)
            self._fonts = typst.Fonts(
                include_system_fonts=False, include_embedded_fonts=False, font_paths=[str(folder)]
            )
        return self._fonts

    def _links(self, label: str, links: Mapping[str, Path]) -> Path:
        """A folder holding exactly these symbolic links (name -> target), made once."""
        listing = "\n".join(f"{name}\0{target}" for name, target in sorted(links.items()))
        folder = self.path / f"{label}-{hashlib.sha256(listing.encode()).hexdigest()[:16]}"
        if folder.is_dir():
            return folder
        staging = Path(tempfile.mkdtemp(dir=self.path, prefix=".staging-"))
        for name, target in links.items():
            (staging / name).symlink_to(target)
        try:
            staging.rename(folder)  # atomic: another process may have made the same one first
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
        return folder


def _private_folder(path: Path) -> Path:
    """``path``, made if missing; refused unless it is a real folder of ours that only we can use
    (another user must not plant links to files we would then read)."""
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RenderError("template_error", f"{path} is not a private folder of this user")
    return path


def _redacted(message: str) -> str:
    """Typst's first line up to a colon (what follows may be a value: ``panicked with: <name>``),
    without quoted text that is not a name: render errors may be logged, values never."""

    def keep_names(quoted: re.Match[str]) -> str:
        text = quoted[0]
        return text if _NAME.fullmatch(text[1:-1]) else f"{text[0]}…{text[-1]}"

    first_line = (message.splitlines() or [""])[0]
    return _QUOTED.sub(keep_names, first_line.split(": ", 1)[0][:200])


def check_source(path: Path) -> None:
    """Refuses a package import or a computed import path (see the module docstring), and a
    document written for the engine's first release, which read the order from ``sys.inputs``."""
    text = path.read_text(encoding="utf-8")
    if old := _SYS_INPUTS.search(text):
        line = text.count("\n", 0, old.start()) + 1
        advice = 'sys.inputs is empty; read the order with json("/order.json")'
        raise RenderError("template_error", f"{path.name}, line {line}: {advice}")
    for match in _LOADS.finditer(text):
        target = match.group("target")
        if target == '"@':
            problem = "imports a package (packages are refused: nothing is downloaded)"
        elif target == "(" or (match.group("hash") and target != '"'):
            problem = "imports a computed path (only literal file paths may be imported)"
        else:
            continue
        line = text.count("\n", 0, match.start()) + 1
        raise RenderError("template_error", f"{path.name}, line {line}: {problem}")
