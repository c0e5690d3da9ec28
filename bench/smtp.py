"""`python -m bench.smtp`: CPU per message on the SMTP path, in the sending process and in the
sink (``ordermail smtp-sink`` as its own process, STARTTLS), pipelined and one command at a time,
alternating rounds. Needs only the stack's certificate (``ORDERMAIL_STACK_DIR`` as for the bench).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import time

from bench.measure import cpu_seconds
from bench.service import Stack
from delivery import SmtpConfig, SmtpPool, TlsMode
from tests.support import free_port, wait_for_port

# A receipt's e-mail: headers and a base64 PDF of ~20 KB, CRLF throughout.
BODY = base64.encodebytes(os.urandom(20_000)).replace(b"\n", b"\r\n")
MESSAGE = (
    b"From: orders@shop.example\r\nTo: ana@example.com\r\nSubject: Your order\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n" + BODY
)


async def _send(config: SmtpConfig, messages: int) -> None:
    pool = SmtpPool(config)
    in_flight = asyncio.Semaphore(8)  # as the service's pipeline keeps several sends going

    async def one() -> None:
        async with in_flight:
            await pool.send(MESSAGE, sender="orders@shop.example", recipient="ana@example.com")

    await asyncio.gather(*(one() for _ in range(messages)))
    await pool.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=400, help="per round and way")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tls = Stack.find().folder / "smtp"
    port, outbox = free_port(), tempfile.mkdtemp(prefix="ordermail-bench-smtp-")
    sink = subprocess.Popen(
        [
            *(sys.executable, "-m", "consumer.app.cli", "smtp-sink", "--port", str(port), "--outbox", outbox),
            *("--tls-cert", str(tls / "cert.pem"), "--tls-key", str(tls / "key.pem")),
        ],
        stdout=subprocess.DEVNULL,
    )
    ways = {"pipelined": True, "one command at a time": False}
    spent = {way: [0.0, 0.0, 0.0] for way in ways}  # this process, the sink, wall
    try:
        wait_for_port(port, timeout_s=30)
        for round_ in range(args.rounds + 1):
            for way, pipelining in ways.items():
                config = SmtpConfig(
                    port=port, tls=TlsMode.STARTTLS, ca_file=str(tls / "cert.pem"), pipelining=pipelining
                )
                sink_cpu, cpu, wall = cpu_seconds(sink.pid), time.process_time(), time.perf_counter()
                asyncio.run(_send(config, args.messages))
                if round_:  # the first round warms up
                    spent[way][0] += time.process_time() - cpu
                    spent[way][1] += cpu_seconds(sink.pid) - sink_cpu
                    spent[way][2] += time.perf_counter() - wall
    finally:
        sink.terminate()
        sink.wait(30)
        shutil.rmtree(outbox, ignore_errors=True)
    sent = args.messages * args.rounds
    print(f"{sent} messages of {len(MESSAGE) // 1024} KB each way, STARTTLS; CPU per message:")
    for way, (client, sink_s, wall) in spent.items():
        print(
            f"  {way:<22} sender {client / sent * 1000:.3f} ms, sink {sink_s / sent * 1000:.3f} ms "
            f"({sent / wall:.0f} messages/s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
