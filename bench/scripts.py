"""`make bench` (second part): what each script costs a receipt, against a Latin one.

One renderer in this process renders and encrypts each script's sample receipt
(``schemas.samples.SCRIPT_SAMPLES``: customer, address and first product in that script, texts
in its language where one ships), in alternating rounds so that the machine's drift hits every
script alike; the first rendering of each (loading its fonts) is reported apart. Figures are
ratios to the Latin receipt of the same run. Writes bench/results/scripts.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rendering import Renderer
from schemas.samples import SCRIPT_SAMPLES, script_sample

RESULTS = Path(__file__).resolve().parent / "results/scripts.json"
BASELINE = "latin-vietnamese"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=30, help="renderings of each script")
    args = parser.parse_args()
    renderer = Renderer()
    first_ms: dict[str, float] = {}
    cpu_ms: dict[str, list[float]] = {script: [] for script in SCRIPT_SAMPLES}
    size: dict[str, int] = {}
    for round_number in range(args.rounds + 1):
        for script in SCRIPT_SAMPLES:
            order = script_sample(script, seed=round_number)
            started = time.process_time()
            mail = renderer.render_mail(order)
            elapsed = (time.process_time() - started) * 1000
            if round_number == 0:
                first_ms[script] = elapsed  # loads the script's fonts: start-up cost, not per order
            else:
                cpu_ms[script].append(elapsed)
                size[script] = len(mail.attachments[0].data)
    base_ms, base_size = statistics.median(cpu_ms[BASELINE]), size[BASELINE]
    figures = {
        script: {
            "cpu_ms_p50": round(statistics.median(cpu_ms[script]), 1),
            "cpu_ratio_to_latin": round(statistics.median(cpu_ms[script]) / base_ms, 2),
            "first_render_ms": round(first_ms[script], 1),
            "pdf_kb": round(size[script] / 1024, 1),
            "size_ratio_to_latin": round(size[script] / base_size, 1),
        }
        for script in SCRIPT_SAMPLES
    }
    RESULTS.write_text(json.dumps({"rounds": args.rounds, "scripts": figures}, indent=2) + "\n")
    print(f"{'script':22} {'CPU ms p50':>10} {'vs Latin':>8} {'first ms':>9} {'PDF KB':>7} {'vs Latin':>8}")
    for script, row in figures.items():
        print(
            f"{script:22} {row['cpu_ms_p50']:>10} {row['cpu_ratio_to_latin']:>8} "
            f"{row['first_render_ms']:>9} {row['pdf_kb']:>7} {row['size_ratio_to_latin']:>8}"
        )
    print(f"written to {RESULTS.relative_to(RESULTS.parents[2])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
