"""``ordermail preview``: see what a customer receives, from realistic data, without Kafka or SMTP.

For template authors. One order (a built-in sample or an event file) is rendered with a template
set and a locale exactly as the service would, and everything the customer gets is written to a
folder (default ``.local/preview/``)::

    message.eml                   the whole e-mail (attachments encrypted, as sent)
    subject.txt body.txt body.html
    <attachment>.pdf              each attachment unencrypted ...
    <stem>.encrypted.pdf          ... and as sent (when the set encrypts it)
    page-<stem>-<n>.png           every page of every PDF (pdftoppm, 80 dpi)

``--serve`` instead runs the local web page (``server``) until Ctrl-C or SIGTERM.

Sample data only: the PDF password is shown (it is made up, like the customer), nothing else is
printed. Renderings of the live service never come through here.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from consumer.tools.preview.render import PreviewError, describe, load_event, render_preview, sample
from consumer.tools.preview.server import PreviewServer
from consumer.tools.preview.state import Choice, PreviewState
from rendering import Renderer, RenderError
from schemas import InvalidEvent, OrderCompleted
from schemas.samples import SCRIPT_SAMPLES

__all__ = ["preview_command"]


def preview_command(
    *,
    build_renderer: Callable[[Path], Renderer],
    template_dir: Path,
    sample_name: str,
    event: Path | None,
    template_set: str | None,
    locale: str | None,
    out: Path,
    serve: bool,
    host: str,
    port: int,
) -> int:
    """``ordermail preview``; ``build_renderer(template_dir)`` builds a renderer as the service would."""
    names = ("0", "long", *SCRIPT_SAMPLES)
    sources: dict[str, Callable[[], OrderCompleted]] = {name: _sampler(name) for name in names}
    if event is not None:
        sources = {"event": lambda: load_event(event), **sources}
    elif sample_name not in sources:
        sources = {sample_name: _sampler(sample_name), **sources}
    choice = Choice("event" if event is not None else sample_name, locale or "", template_set or "")
    if serve:
        state = PreviewState(template_dir, out, build_renderer, sources, choice, watch=event)
        server = PreviewServer((host, port), state)
        return _serve_until_stopped(server, out)
    try:
        renderer = build_renderer(template_dir)
        preview = render_preview(
            renderer, sources[choice.source](), template_set=template_set, locale=locale or None
        )
        preview.write(out)
    except (RenderError, PreviewError, InvalidEvent) as error:
        print(f"ordermail preview: {describe(error)}", file=sys.stderr)
        return 2
    pdfs = sum(1 for name in preview.files if name.endswith(".pdf") and not name.endswith(".encrypted.pdf"))
    print(
        f"preview written to {out}/ (set {preview.template_set}, language {preview.language}, "
        f"{pdfs} PDF(s), {len(preview.pages)} page(s))"
    )
    print(f"PDF password: {preview.password or '(not encrypted)'}")
    return 0


def _sampler(name: str) -> Callable[[], OrderCompleted]:
    return lambda: sample(name)


def _serve_until_stopped(server: PreviewServer, out: Path) -> int:
    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(
        f"preview on http://{host!s}:{port}/ (the last rendering is also in {out}/); Ctrl-C stops", flush=True
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        signal.signal(signal.SIGTERM, previous)
    return 0
