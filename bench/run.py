"""`make bench`: each engine's throughput against the machine's render ceiling, latency at half
load, memory, side by side with the same events.

All figures come from one run, so they are comparable on a shared, noisy machine. First, an
unmeasured pass of the service over a few hundred events takes the just-started local broker past
its warm-up; then, for each template set measured (``--set``, repeatable; by default one set per
engine: ``default``, ``default-<engine>`` or the first set of that engine):
1. render: render + encrypt one-page receipts, no Kafka, half of them before the service runs
   and half after: in one render worker alone → p50/p99 of a call; in all the workers at once
   → their CPU time per order → ceiling = workers ÷ CPU seconds per order;
2. end to end: events published first, then the service started as its own process → rate
   from its start to the last acknowledged outcome; efficiency = that ÷ ceiling; beside it, the
   share of the run's CPU the SMTP sink and the broker took (stand-ins for a relay and a cluster
   that run elsewhere in production) and the efficiency against the cores they left, and the
   render workers' share of the cores during that same run (free of the machine's drift);
3. latency: events paced at half that rate → event published → SMTP accepted;
while the render workers' resident memory is sampled throughout. Every set gets the same orders,
and runs as a deployment of its own: a template folder holding that set alone (see
``deployed_alone``), so a Typst set's workers never load WeasyPrint.
Writes bench/results/latest.json. Needs the local stack (`make bench` starts it; another
checkout's running stack: ``ORDERMAIL_STACK_DIR=/path/to/.local``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import confluent_kafka

from bench.render import bench_render, render_figures
from bench.service import Stack, bench_service
from consumer.processing.fork_server import set_engine, stop_fork_server
from rendering import TEMPLATE_DIR

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results/latest.json"
ENGINE_PACKAGES = ("weasyprint", "typst", "pikepdf")


SETS = TEMPLATE_DIR / "sets"


def engine_of(template_set: str, sets: Path = SETS) -> str:
    """The engine a set's ``set.toml`` names (WeasyPrint when it names none)."""
    return set_engine(sets / template_set) or "unreadable set.toml"


def default_sets(sets: Path = SETS) -> list[str]:
    """One set per engine, so a new engine's set is measured as soon as it exists: for each,
    ``default`` if it is that engine's, else ``default-<engine>``, else its first set by name."""
    names = [p.parent.name for p in sets.glob("*/set.toml")]
    chosen: dict[str, str] = {}
    for name in sorted(names, key=lambda n: (n != "default", not n.startswith("default-"), n)):
        chosen.setdefault(engine_of(name, sets), name)
    return list(chosen.values())


@contextmanager
def deployed_alone(template_set: str) -> Iterator[Path]:
    """A template folder holding ``template_set`` and ``shared/`` only (links): the set measured
    as a deployment of its own, as a high-volume brand would run it. Its workers then load what
    that set's engine needs and nothing else (a Typst set's, no WeasyPrint), and the start-up
    check covers that set alone."""
    with tempfile.TemporaryDirectory(prefix="ordermail-bench-templates-") as folder:
        root = Path(folder)
        (root / "sets").mkdir()
        (root / "shared").symlink_to(TEMPLATE_DIR / "shared")
        (root / "sets" / template_set).symlink_to(SETS / template_set)
        yield root


def bench_set(stack: Stack, template_set: str, args: argparse.Namespace) -> dict[str, Any]:
    # Half of the render phase before the service runs, half after: this shared machine's speed
    # drifts by several per cent within minutes, and a ceiling measured only before would
    # compare the end-to-end rate with the machine as it was a minute earlier.
    half, rest = args.render_documents // 2, args.render_documents - args.render_documents // 2
    with deployed_alone(template_set) as templates:
        alone = [bench_render(template_set, half, template_dir=templates)]
        side_by_side = [bench_render(template_set, half, workers=args.workers, template_dir=templates)]
        figures = bench_service(
            stack,
            template_set,
            events=args.events,
            workers=args.workers,
            latency_seconds=args.latency_seconds,
            label=f"{template_set} e2e",
            template_dir=templates,
        )
        side_by_side.append(
            bench_render(template_set, rest, first_seed=half, workers=args.workers, template_dir=templates)
        )
        alone.append(bench_render(template_set, rest, first_seed=half, template_dir=templates))
    # This process's render workers fork from one server, which imported what the first set
    # measured needed: the next set's workers get a server of their own (a Typst set's, without
    # WeasyPrint).
    stop_fork_server()
    figures = {"engine": engine_of(template_set), **render_figures(alone, side_by_side), **figures}
    ceiling = args.workers / (figures["cpu_ms_per_document"] / 1000)
    before, after = figures["cpu_ms_per_document_before_after"]
    efficiency = figures["e2e_orders_per_s"] / ceiling
    # The SMTP sink and the broker stand in for a relay and a cluster that run elsewhere in
    # production, yet share this machine's cores with the service: the share of the run's CPU
    # they took, and the efficiency against a ceiling of the cores they left (a figure beside
    # the target's, which counts them against the service).
    run_s = args.events / figures["e2e_orders_per_s"]
    stand_ins_s = (
        (figures["cpu_ms_per_order"]["smtp_sink"] + figures["cpu_ms_per_order"]["broker"])
        * args.events
        / 1000
    )
    core_s = (os.cpu_count() or 1) * run_s
    stand_ins_share = stand_ins_s / core_s
    # Drift-free: the render workers' share of the cores during the end-to-end run itself (the
    # ceiling comes from other minutes, and this machine's speed moves by up to a third).
    render_share = figures["cpu_ms_per_order"]["render_workers"] * args.events / 1000 / core_s
    return {
        **figures,
        "ceiling_orders_per_s": round(ceiling, 2),
        "efficiency": round(efficiency, 3),
        "stand_ins_cpu_share": round(stand_ins_share, 3),
        "efficiency_without_stand_ins": round(efficiency / (1 - stand_ins_share), 3),
        "render_cpu_share": round(render_share, 3),
        "service_main_cpu_ms_per_order": figures["cpu_ms_per_order"]["service_main"],
        # The service ran on a machine that was not quite the one the ceiling measured.
        "render_drift": round(abs(after - before) / min(before, after), 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--set",
        action="append",
        dest="sets",
        metavar="NAME",
        help="template set to measure (repeatable; default: one set per engine)",
    )
    # 4,000: each of two workers renders 2,000+ documents, and its memory is read after them.
    parser.add_argument("--events", type=int, default=4000, help="events for each end-to-end run")
    parser.add_argument("--render-documents", type=int, default=200)
    parser.add_argument(
        "--warm-up-events",
        type=int,
        default=300,
        help="events through the service first, not measured (0: none)",
    )
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    sets = args.sets or default_sets()
    stack = Stack.find()

    if args.warm_up_events:
        # The local broker is a JVM started moments ago: its first minute of just-in-time
        # compilation and class loading cost ~0.6 ms of CPU per order more than later (1.8 vs
        # 1.2), which a long-running cluster never charges. One unmeasured pass gets it there;
        # each measured run still starts the service from nothing.
        bench_service(
            stack,
            sets[0],
            events=args.warm_up_events,
            workers=args.workers,
            latency_seconds=0,
            label="warm-up",
        )
    results = {name: bench_set(stack, name, args) for name in sets}
    report = {
        "sets": results,
        "events": args.events,
        "warm_up_events": args.warm_up_events,
        "workers": args.workers,
        **{package: _version(package) for package in ENGINE_PACKAGES},
        "librdkafka": confluent_kafka.libversion()[0],
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print()
    for name, figures in results.items():
        print(summary(name, figures))
    print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


def summary(name: str, f: dict[str, Any]) -> str:
    line = (
        f"{name} ({f['engine']}): render p50 {f['render_ms_p50']} ms · "
        f"ceiling {f['ceiling_orders_per_s']}/s · "
        f"end to end {f['e2e_orders_per_s']}/s = {f['efficiency']:.0%} of ceiling "
        f"({f['efficiency_without_stand_ins']:.0%} of the cores the sink and broker left; "
        f"render workers used {f['render_cpu_share']:.0%} of the cores meanwhile) · "
        f"latency p99 {f.get('latency_ms_p99', '-')} ms at half load · "
        f"worker RSS max {f['worker_rss_mb_max']} MB ({f['worker_private_mb_max']} MB private) · "
        f"main process {f['service_main_cpu_ms_per_order']} ms CPU an order"
    )
    if f["render_drift"] > 0.03:
        line += (
            f"\n  the machine's render speed moved by {f['render_drift']:.0%} while the service ran: "
            "efficiency is uncertain by about as much"
        )
    return line


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
