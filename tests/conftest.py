"""Real parts for integration and chaos tests: a Kafka broker, the SMTP sink and the service, each in its
own process as in production.

The broker is testcontainers' Kafka module where a Docker engine answers, else the local stack
(`deploy/local/stack up`, a real KRaft broker from Maven Central jars). Tests do not care which.
Tests of a replicated cluster (three brokers, replication factor 3, min.insync.replicas 2) ask for
``cluster_bootstrap``: the local stack's `up --brokers 3`, on ports of its own.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from confluent_kafka.admin import AdminClient, NewTopic

from tests.support import RelaySettings, free_port, read_env_file, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
STACK = str(ROOT / "deploy/local/stack")
ORDERMAIL = str(Path(sys.executable).with_name("ordermail"))
PARTITIONS = 6
CLUSTER_ENV = ROOT / ".local/cluster.env"
RELAY_ENV = ROOT / ".local/relay.env"


def _docker_engine_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return (
            subprocess.run(["docker", "info"], capture_output=True, timeout=10, check=False).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def _local_stack_bootstrap() -> str:
    subprocess.run([STACK, "up"], check=True, timeout=600)
    return read_env_file(ROOT / ".local/stack.env")["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    if os.environ.get("ORDERMAIL_TEST_BOOTSTRAP"):
        yield os.environ["ORDERMAIL_TEST_BOOTSTRAP"]
    elif _docker_engine_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        yield _local_stack_bootstrap()


@pytest.fixture(scope="session")
def registry_url(kafka_bootstrap: str) -> str:
    """A real Schema Registry: ``ORDERMAIL_TEST_REGISTRY_URL``, or the local stack's (``up --registry``)."""
    if os.environ.get("ORDERMAIL_TEST_REGISTRY_URL"):
        return os.environ["ORDERMAIL_TEST_REGISTRY_URL"]
    stack_env = ROOT / ".local/stack.env"
    if not stack_env.exists() or f"KAFKA_BOOTSTRAP_SERVERS={kafka_bootstrap}" not in stack_env.read_text():
        pytest.skip("the registry comes with the local stack (deploy/local/stack up --registry)")
    subprocess.run(
        [str(ROOT / "deploy/local/stack"), "up", "--registry"], check=True, capture_output=True, timeout=600
    )
    values = dict(line.split("=", 1) for line in stack_env.read_text().splitlines() if "=" in line)
    return values["SCHEMA_REGISTRY_URL"]


@pytest.fixture(scope="module")
def cluster_bootstrap() -> Iterator[str]:
    """A three-broker cluster: ``ORDERMAIL_TEST_CLUSTER_BOOTSTRAP``, else the local stack's, started
    here when none runs (and then stopped after the module's tests, so its four JVMs do not
    share the cores with the rest of the suite)."""
    if os.environ.get("ORDERMAIL_TEST_CLUSTER_BOOTSTRAP"):
        yield os.environ["ORDERMAIL_TEST_CLUSTER_BOOTSTRAP"]
        return
    started_here = not CLUSTER_ENV.exists()
    subprocess.run([STACK, "up", "--brokers", "3"], check=True, timeout=600, stdout=subprocess.DEVNULL)
    try:
        yield read_env_file(CLUSTER_ENV)["KAFKA_BOOTSTRAP_SERVERS"]
    finally:
        if started_here:
            subprocess.run([STACK, "down", "--cluster"], check=False, timeout=300, stdout=subprocess.DEVNULL)


def _running_relay() -> RelaySettings | None:
    try:
        settings = RelaySettings.from_env_file(RELAY_ENV)
        wait_for_port(settings.port, timeout_s=0.5, host=settings.host)
    except (OSError, TimeoutError, KeyError, ValueError):
        return None
    return settings


@pytest.fixture(scope="session")
def relay() -> RelaySettings:
    """The local stack's Postfix relay (``deploy/local/stack up --relay``; ``make test`` starts it as
    root), started here when it does not run. Postfix needs root: elsewhere its tests skip."""
    settings = _running_relay()
    if settings is None:
        if os.geteuid() != 0:
            pytest.skip(
                "the Postfix relay needs root: run as root (or `deploy/local/stack up --relay` as root)"
            )
        subprocess.run([STACK, "relay", "up"], check=True, timeout=120, stdout=subprocess.DEVNULL)
        settings = RelaySettings.from_env_file(RELAY_ENV)
    return settings


@dataclass(frozen=True)
class Topics:
    input: str
    outcome: str
    dlq: str
    retry: str
    group: str

    def env(self) -> dict[str, str]:
        return {
            "ORDERMAIL_INPUT_TOPIC": self.input,
            "ORDERMAIL_OUTCOME_TOPIC": self.outcome,
            "ORDERMAIL_DLQ_TOPIC": self.dlq,
            "ORDERMAIL_RETRY_TOPIC": self.retry,
            "ORDERMAIL_GROUP_ID": self.group,
        }


@pytest.fixture
def topics(kafka_bootstrap: str) -> Topics:
    """Fresh topics and group per test, so tests never see each other's records."""
    return create_topics(kafka_bootstrap, replicas=1)


def create_topics(bootstrap: str, *, replicas: int) -> Topics:
    """Fresh topics and group; replicated ones need two in-sync copies of every write."""
    run = uuid.uuid4().hex[:8]
    names = Topics(
        input=f"t{run}.order-completed",
        outcome=f"t{run}.delivery-outcome",
        dlq=f"t{run}.order-completed.dlq",
        retry=f"t{run}.order-completed.retry",
        group=f"ordermail-{run}",
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    config = {"min.insync.replicas": str(max(1, replicas - 1))}
    futures = admin.create_topics(
        [
            NewTopic(n, PARTITIONS, replicas, config=config)
            for n in (names.input, names.outcome, names.dlq, names.retry)
        ]
    )
    for future in futures.values():
        future.result(timeout=30)
    return names


class Sink:
    """The project's SMTP sink as its own process, offering STARTTLS with a test CA's certificate.

    ``stop()`` and ``start()`` take it away and bring it back on the same port and outbox, as a
    relay outage would; ``faults`` is the rules file it re-reads (delays, 4xx/5xx replies).
    """

    def __init__(self, workdir: Path) -> None:
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file, self._cert, self._key = workdir / "ca.pem", workdir / "cert.pem", workdir / "key.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert.cert_chain_pems[0].write_to_path(str(self._cert))
        cert.private_key_pem.write_to_path(str(self._key))
        self.port, self.outbox, self.faults = free_port(), workdir / "outbox", workdir / "faults.json"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        command = [ORDERMAIL, "smtp-sink", "--port", str(self.port), "--outbox", str(self.outbox)]
        command += ["--tls-cert", str(self._cert), "--tls-key", str(self._key), "--faults", str(self.faults)]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        wait_for_port(self.port, timeout_s=30)

    def stop(self) -> None:
        if self.process is not None:
            _terminate(self.process)
            self.process = None

    def env(self) -> dict[str, str]:
        return {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.port),
            "SMTP_TLS": "starttls",
            "SMTP_CA_FILE": str(self.ca_file),
        }

    def messages(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml"))


@pytest.fixture
def smtp_sink(tmp_path: Path) -> Iterator[Sink]:
    sink = Sink(tmp_path)
    try:
        yield sink
    finally:
        sink.stop()


ServiceFactory = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def start_service(
    kafka_bootstrap: str, topics: Topics, smtp_sink: Sink, tmp_path: Path
) -> Iterator[ServiceFactory]:
    """Starts ``ordermail run`` processes; all are stopped with SIGTERM at the end."""
    with service_starter(kafka_bootstrap, topics, smtp_sink, tmp_path) as start:
        yield start


@contextmanager
def service_starter(
    kafka_bootstrap: str, topics: Topics, smtp_sink: Sink, tmp_path: Path
) -> Iterator[ServiceFactory]:
    started: list[subprocess.Popen[bytes]] = []

    def start(**extra_env: str) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "ORDERMAIL_MAIL_FROM": "orders@shop.example",
            "ORDERMAIL_RENDER_WORKERS": "2",
            "ORDERMAIL_RETRY_BACKOFF_S": "0.05",
            "ORDERMAIL_HEALTH_PORT": str(free_port()),
            **topics.env(),
            **smtp_sink.env(),
            **extra_env,
        }
        with (tmp_path / f"service-{len(started)}.log").open("wb") as log:
            process = subprocess.Popen([ORDERMAIL, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            _terminate(process)


def _terminate(process: subprocess.Popen[bytes], timeout_s: float = 40) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture
def wait_until() -> Callable[[Callable[[], bool], float], None]:
    def wait(condition: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met within {timeout_s}s")
            time.sleep(0.1)

    return wait
