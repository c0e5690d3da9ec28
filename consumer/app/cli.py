"""The ``ordermail`` command: ``run``, ``feedback``, ``produce-sample``, ``render``, ``preview``,
``smtp-sink``, ``schemas check``, ``templates check``, and the operator tools ``dlq list|redrive``,
``resend``, ``history``, ``suppression list|add|remove`` (``consumer/tools/operations.py``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from itertools import zip_longest
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from consumer.tools.operations import COMMANDS, add_commands, run_command
from schemas import ORDER_SCHEMA, OUTCOME_SCHEMA, SUPPRESSION_SCHEMA

if TYPE_CHECKING:
    from consumer.processing.render_pool import RenderConfig

__all__ = ["main"]

log = logging.getLogger("ordermail")
_Item = TypeVar("_Item")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ordermail", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="consume OrderCompleted events and e-mail receipts (config from env)")
    commands.add_parser(
        "feedback",
        help="receive bounces, complaints and ESP webhooks; publish DeliveryFeedback (config from env)",
    )
    produce = commands.add_parser("produce-sample", help="publish N realistic sample OrderCompleted events")
    produce.add_argument("--count", type=int, default=10)
    produce.add_argument("--seed", type=int, default=0, help="first sample seed (samples are deterministic)")
    render = commands.add_parser("render", help="render one event (JSON) to a PDF, offline")
    render.add_argument("event", type=Path)
    render.add_argument("--out", type=Path, required=True)
    render.add_argument("--no-encrypt", action="store_true")
    preview = commands.add_parser(
        "preview", help="template authors: render a sample order to files, or a live page (--serve)"
    )
    preview.add_argument(
        "--set", dest="template_set", metavar="NAME", help="template set (default: by the event's brand)"
    )
    preview.add_argument(
        "--locale", metavar="TAG", help="locale tag replacing the event's, e.g. es-MX, en-GB"
    )
    source = preview.add_mutually_exclusive_group()
    source.add_argument(
        "--sample",
        default="0",
        type=_sample_name,
        metavar="N",
        help="sample seed, 'long' (several pages), or a script (japanese, arabic, ...)",
    )
    source.add_argument(
        "--event", type=Path, metavar="FILE.json", help="an OrderCompleted event as JSON instead of a sample"
    )
    preview.add_argument(
        "--out", type=Path, default=Path(".local/preview"), metavar="DIR", help="default: .local/preview"
    )
    preview.add_argument(
        "--template-dir", type=Path, metavar="DIR", help="default: ORDERMAIL_TEMPLATE_DIR or the built-in"
    )
    preview.add_argument(
        "--serve", action="store_true", help="a local page that re-renders on template edits"
    )
    preview.add_argument(
        "--port", type=int, default=8040, metavar="P", help="with --serve (0: any free port)"
    )
    preview.add_argument("--host", default="127.0.0.1", help="with --serve")
    sink = commands.add_parser("smtp-sink", help="development SMTP server storing messages as .eml files")
    sink.add_argument("--port", type=int, default=2525)
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--outbox", type=Path, required=True)
    sink.add_argument("--tls-cert", type=Path, help="offer STARTTLS with this certificate (PEM)")
    sink.add_argument("--tls-key", type=Path)
    sink.add_argument(
        "--faults", type=Path, help="JSON fault rules (delays, 4xx/5xx replies), see delivery/sink.py"
    )
    schemas = commands.add_parser("schemas", help="schema tools")
    schemas.add_argument(
        "action", choices=["check"], help="validate, fingerprint, check BACKWARD compatibility"
    )
    templates = commands.add_parser("templates", help="template tools")
    templates.add_argument(
        "action", choices=["check"], help="render every set in every language with sample orders"
    )
    templates.add_argument("--template-dir", type=Path, metavar="DIR", help="default: ORDERMAIL_TEMPLATE_DIR")
    add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in COMMANDS:
        return run_command(args)
    handler = {
        "run": _run,
        "feedback": _feedback,
        "produce-sample": _produce_sample,
        "render": _render,
        "preview": _preview,
        "smtp-sink": _smtp_sink,
        "schemas": _schemas,
        "templates": _templates,
    }
    return handler[args.command](args)


def _run(_args: argparse.Namespace) -> int:
    from consumer.processing.fork_server import start_fork_server

    start_fork_server()  # first: the render workers' imports overlap the service's own
    from consumer.app.assembly import assemble
    from consumer.app.settings import Settings
    from consumer.app.startup import check_environment
    from consumer.kafka.service import Service
    from consumer.observability.logs import configure_logging
    from consumer.observability.telemetry import configure_tracing, shutdown_tracing

    configure_logging()
    configure_tracing()
    settings = Settings()
    check_environment(settings)
    service = Service(settings, assemble(settings))
    service.install_signal_handlers()
    try:
        return service.run()
    finally:
        shutdown_tracing()


def _feedback(_args: argparse.Namespace) -> int:
    import asyncio

    from consumer.feedback.service import FeedbackService
    from consumer.feedback.settings import FeedbackSettings
    from consumer.observability.logs import configure_logging
    from consumer.observability.telemetry import configure_tracing, shutdown_tracing

    configure_logging()
    configure_tracing()
    service = FeedbackService(FeedbackSettings())
    service.install_signal_handlers()
    try:
        return asyncio.run(service.run())
    finally:
        shutdown_tracing()


def _produce_sample(args: argparse.Namespace) -> int:
    from consumer.app.assembly import codec_for
    from consumer.app.settings import Settings
    from consumer.tools.producing import publish_orders
    from schemas.samples import sample_orders

    settings = Settings()
    orders = sample_orders(args.count, first_seed=args.seed)
    published = publish_orders(settings, codec_for(settings), orders)
    print(f"published {published} OrderCompleted events to {settings.input_topic}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from consumer.app.settings import Settings
    from consumer.processing.render_pool import RenderConfig
    from consumer.tools.preview.render import PreviewError, load_event
    from rendering import RenderError
    from schemas import InvalidEvent, validate_order

    try:
        order = load_event(args.event)
    except PreviewError as error:
        print(f"ordermail render: {error}", file=sys.stderr)
        return 2
    try:
        validate_order(order)
        renderer = RenderConfig.from_settings(Settings()).build()
        pdf = renderer.render_pdf(order) if args.no_encrypt else renderer.render_mail(order).pdf
    except (InvalidEvent, RenderError) as error:
        print(f"ordermail render: the event would be REJECTED: {error.reason}", file=sys.stderr)
        return 2
    args.out.write_bytes(pdf)
    print(f"wrote {args.out} ({len(pdf)} bytes, {'not ' if args.no_encrypt else ''}encrypted)")
    return 0


def _sample_name(value: str) -> str:
    from schemas.samples import SCRIPT_SAMPLES

    if value != "long" and not value.isdecimal() and value not in SCRIPT_SAMPLES:
        raise argparse.ArgumentTypeError(
            f"a sample seed number, 'long', or a script: {', '.join(SCRIPT_SAMPLES)}"
        )
    return value


def _preview(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from consumer.app.settings import Settings
    from consumer.processing.render_pool import RenderConfig
    from consumer.tools.preview.command import preview_command

    config = RenderConfig.from_settings(Settings())  # the service's password template, hint, default set
    return preview_command(
        build_renderer=lambda folder: replace(config, template_dir=folder).build(),
        template_dir=args.template_dir or config.template_dir,
        sample_name=args.sample,
        event=args.event,
        template_set=args.template_set,
        locale=args.locale,
        out=args.out,
        serve=args.serve,
        host=args.host,
        port=args.port,
    )


def _templates(args: argparse.Namespace) -> int:
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from consumer.app.settings import Settings
    from consumer.processing.fork_server import worker_context
    from consumer.processing.render_pool import RenderConfig
    from rendering.template_check import catalog_problems

    config = RenderConfig.from_settings(Settings())
    if args.template_dir:
        config = replace(config, template_dir=args.template_dir)
    # Every rendering is independent: one process per core, each a share (~2x faster on two).
    shares = max(1, min(os.cpu_count() or 1, 4))
    try:
        with ProcessPoolExecutor(shares, mp_context=worker_context(config.template_dir)) as pool:
            results = list(
                pool.map(_check_templates, [config] * shares, [(i, shares) for i in range(shares)])
            )
    except BrokenProcessPool:
        print("templates: broken: a checking process died (out of memory, or a crash)", file=sys.stderr)
        return 1
    if broken := [error for _, _, error in results if error]:  # each share's first broken rendering
        print("\n".join(f"templates: broken: {error}" for error in broken), file=sys.stderr)
        return 1
    report = _in_serial_order([lines for lines, _, _ in results])
    glyphs = _in_serial_order([found for _, found, _ in results])
    problems = catalog_problems(config.template_dir) + [problem for found in glyphs for problem in found]
    print("\n".join(report))
    if problems:
        print("\n".join(f"templates: {problem}" for problem in problems), file=sys.stderr)
        print(f"templates: broken: {len(problems)} problems in the catalogs or the glyphs", file=sys.stderr)
        return 1
    print(f"templates: ok ({len(report)} renderings; catalogs complete; no missing glyphs)")
    return 0


def _check_templates(
    config: RenderConfig, share: tuple[int, int]
) -> tuple[list[str], list[list[str]], str | None]:
    """One process's share of ``templates check``: its renderings, the glyph problems of each of
    its script samples, and what broke (the error's text) when a template could not be rendered."""
    from rendering import RenderError
    from rendering.template_check import glyph_problems

    try:
        renderer = config.build()
        return renderer.validate(share, every_language=True), glyph_problems(renderer, share), None
    except RenderError as error:
        return [], [], str(error)


def _in_serial_order(shares: list[list[_Item]]) -> list[_Item]:
    """Share i holds items i, i + n, i + 2n...: back in the order one process would give them."""
    return [item for row in zip_longest(*shares) for item in row if item is not None]


def _schemas(_args: argparse.Namespace) -> int:
    from consumer.app.assembly import codec_for
    from consumer.app.settings import Settings
    from schemas.check import check_schemas

    settings = Settings()
    subjects = {
        ORDER_SCHEMA.name: f"{settings.input_topic}-value",
        OUTCOME_SCHEMA.name: f"{settings.outcome_topic}-value",
        SUPPRESSION_SCHEMA.name: f"{settings.suppression_topic}-value",
    }
    registry = codec_for(settings).registry
    report = check_schemas(subjects=subjects, registry=registry)
    print("\n".join(report.lines))
    print("schemas: ok" if report.ok else f"schemas: {len(report.problems)} problem(s)")
    return 0 if report.ok else 1


def _smtp_sink(args: argparse.Namespace) -> int:
    from delivery.sink import serve

    serve(args.port, args.outbox, host=args.host, cert=args.tls_cert, key=args.tls_key, faults=args.faults)
    return 0


if __name__ == "__main__":
    sys.exit(main())
