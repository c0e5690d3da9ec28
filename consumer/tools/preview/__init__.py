"""``ordermail preview``, for template authors: what a customer receives, rendered from sample data
(or an event file) exactly as the service would, written to a folder or shown on a local page.

* ``render`` — one preview: the mail, each PDF unencrypted, page images, the ``.eml``;
* ``command`` — the command line: writing the files, or serving the page;
* ``state`` — the page's choices and its renderings, redone when a template changes;
* ``server`` — the HTTP server of ``--serve``; the page itself is ``page.html`` (package data).
"""

__all__ = ["command", "render", "server", "state"]
