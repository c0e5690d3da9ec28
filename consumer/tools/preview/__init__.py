"""``ordermail preview``, for template authors: what a customer receives, rendered from sample data
(or an event file) exactly as the service would, written to a folder or shown on a local page.

* ``render`` — one preview: the mail, each PDF unencrypted, page images, the ``.eml``;
* ``command`` — the command line: writing the files, or serving the page;
* ``state`` — the page's choices and its renderings, redone when a template changes;
* ``server`` — the HTTP server of ``--serve``; the page itself is ``page.html`` (package data).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from consumer.tools.preview.command import preview_command as preview_command
    from consumer.tools.preview.render import PreviewError as PreviewError
    from consumer.tools.preview.render import load_event as load_event

__all__ = ["command", "render", "server", "state"]

# Until consumer/app/cli.py imports these from their modules: each loads its module on first use,
# so importing the package stays light.
_MOVED = {"PreviewError": "render", "load_event": "render", "preview_command": "command"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        return getattr(importlib.import_module(f"{__name__}.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
