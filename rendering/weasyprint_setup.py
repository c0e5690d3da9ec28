"""Importing this module sets WeasyPrint up for the process: the rendering shortcuts of
``weasyprint_overrides`` (on the checked release only; else one warning) and the redaction of its
loggers (``fetcher.install_log_redaction``). The render workers' fork server preloads it when a
template set uses WeasyPrint, so every worker starts with it done (~40 ms of CPU each otherwise);
the renderer imports it with its first WeasyPrint set. A folder of Typst sets never imports it.
"""

from __future__ import annotations

from rendering import weasyprint_overrides
from rendering.fetcher import install_log_redaction

__all__: list[str] = []

weasyprint_overrides.install()
install_log_redaction()
