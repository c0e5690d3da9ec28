"""All configuration, read once from the environment into one frozen model.

Names follow the external contract (``KAFKA_BOOTSTRAP_SERVERS``, ``SMTP_*``, ``ORDERMAIL_*``);
``KAFKA_CONFIG_<NAME>`` passes any librdkafka property through (``_`` becomes ``.``).
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumer.processing.retry import RetrySchedule
from delivery import DkimSigner, SmtpConfig, TlsMode
from delivery.remote import FetchPolicy
from delivery.return_path import ReturnPath
from delivery.suppression import SuppressionKeys

__all__ = ["Settings", "kafka_passthrough"]

KAFKA_CONFIG_PREFIX = "KAFKA_CONFIG_"


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


def usable_cpus(cgroup_cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU limit (a container's
    ``limits.cpu``, rounded up), which ``os.cpu_count()`` does not see."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = cgroup_cpu_max.read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 limit visible: the affinity stands
    return cpus


class Settings(BaseSettings):
    # hide_input_in_errors: a failing validator would otherwise print every value it was given,
    # SMTP_PASSWORD and the secrets among them.
    model_config = SettingsConfigDict(
        frozen=True, extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    bootstrap_servers: Annotated[str, Field(validation_alias=_env("KAFKA_BOOTSTRAP_SERVERS"))] = (
        "127.0.0.1:9092"
    )
    group_id: Annotated[str, Field(validation_alias=_env("ORDERMAIL_GROUP_ID"))] = "ordermail"
    input_topic: Annotated[str, Field(validation_alias=_env("ORDERMAIL_INPUT_TOPIC"))] = (
        "orders.order-completed.v1"
    )
    outcome_topic: Annotated[str, Field(validation_alias=_env("ORDERMAIL_OUTCOME_TOPIC"))] = (
        "orders.delivery-outcome.v1"
    )
    dlq_topic: Annotated[str, Field(validation_alias=_env("ORDERMAIL_DLQ_TOPIC"))] = (
        "orders.order-completed.v1.dlq"
    )
    retry_topic: Annotated[str, Field(validation_alias=_env("ORDERMAIL_RETRY_TOPIC"))] = (
        "orders.order-completed.v1.retry"
    )
    # Written by ``ordermail feedback``; ``ordermail history`` reads it back.
    feedback_topic: Annotated[str, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_TOPIC"))] = (
        "orders.delivery-feedback.v1"
    )
    # The suppression list (compacted; delivery/suppression.py): off unless the secret is set.
    suppression_topic: Annotated[str, Field(validation_alias=_env("ORDERMAIL_SUPPRESSION_TOPIC"))] = (
        "orders.email-suppressions.v1"
    )
    suppression_secret: Annotated[
        SecretStr | None, Field(validation_alias=_env("ORDERMAIL_SUPPRESSION_SECRET"))
    ] = None
    # An entry stops suppressing this long after it was added (0: never); a mailbox that bounced
    # may be recycled or repaired within a year (providers recycle abandoned ones after 6-12 months).
    suppression_ttl_days: Annotated[
        float, Field(validation_alias=_env("ORDERMAIL_SUPPRESSION_TTL_DAYS"), ge=0)
    ] = 365.0
    schema_registry_url: Annotated[str | None, Field(validation_alias=_env("SCHEMA_REGISTRY_URL"))] = None

    smtp_host: Annotated[str, Field(validation_alias=_env("SMTP_HOST"))] = "127.0.0.1"
    smtp_port: Annotated[int, Field(validation_alias=_env("SMTP_PORT"))] = 2525
    smtp_tls: Annotated[TlsMode, Field(validation_alias=_env("SMTP_TLS"))] = TlsMode.STARTTLS
    smtp_username: Annotated[str | None, Field(validation_alias=_env("SMTP_USERNAME"))] = None
    smtp_password: Annotated[SecretStr | None, Field(validation_alias=_env("SMTP_PASSWORD"))] = None
    smtp_ca_file: Annotated[str | None, Field(validation_alias=_env("SMTP_CA_FILE"))] = None
    smtp_timeout_s: Annotated[float, Field(validation_alias=_env("SMTP_TIMEOUT_S"), gt=0)] = 30.0
    smtp_connections: Annotated[int, Field(validation_alias=_env("SMTP_CONNECTIONS"), ge=1)] = 4
    smtp_max_messages_per_connection: Annotated[
        int, Field(validation_alias=_env("SMTP_MAX_MESSAGES_PER_CONNECTION"), ge=1)
    ] = 100

    smtp_throttle_pause_s: Annotated[float, Field(validation_alias=_env("SMTP_THROTTLE_PAUSE_S"), ge=0)] = 5.0
    smtp_rate_limit_per_s: Annotated[float, Field(validation_alias=_env("SMTP_RATE_LIMIT_PER_S"), ge=0)] = 0.0
    smtp_pipelining: Annotated[bool, Field(validation_alias=_env("SMTP_PIPELINING"))] = True

    mail_from: Annotated[str, Field(validation_alias=_env("ORDERMAIL_MAIL_FROM"))] = "orders@shop.example"
    message_id_domain: Annotated[str | None, Field(validation_alias=_env("ORDERMAIL_MESSAGE_ID_DOMAIN"))] = (
        None
    )
    # VERP: with a domain, each e-mail's envelope sender names its event (delivery/return_path.py).
    return_path_domain: Annotated[
        str | None, Field(validation_alias=_env("ORDERMAIL_RETURN_PATH_DOMAIN"))
    ] = None
    return_path_secret: Annotated[
        SecretStr | None, Field(validation_alias=_env("ORDERMAIL_RETURN_PATH_SECRET"))
    ] = None
    dkim_key_file: Annotated[Path | None, Field(validation_alias=_env("ORDERMAIL_DKIM_KEY_FILE"))] = None
    dkim_selector: Annotated[str, Field(validation_alias=_env("ORDERMAIL_DKIM_SELECTOR"))] = "ordermail"
    dkim_domain: Annotated[str | None, Field(validation_alias=_env("ORDERMAIL_DKIM_DOMAIN"))] = None
    password_template: Annotated[
        str | None, Field(validation_alias=_env("ORDERMAIL_PDF_PASSWORD_TEMPLATE"))
    ] = None
    password_hint: Annotated[str | None, Field(validation_alias=_env("ORDERMAIL_PDF_PASSWORD_HINT"))] = None
    password_min_length: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_PDF_PASSWORD_MIN_LENGTH"), ge=4)
    ] = 8
    template_dir: Annotated[Path | None, Field(validation_alias=_env("ORDERMAIL_TEMPLATE_DIR"))] = None
    # More writer schemas (*.avsc) known by fingerprint beside the built-in ones: a producer's
    # evolved schema deployed without a new image (then `ordermail dlq redrive --reason unknown_schema`).
    writer_schema_dir: Annotated[Path | None, Field(validation_alias=_env("ORDERMAIL_WRITER_SCHEMA_DIR"))] = (
        None
    )
    # The set for events whose brand names no set of its own.
    template_set: Annotated[str, Field(validation_alias=_env("ORDERMAIL_TEMPLATE_SET"), min_length=1)] = (
        "default"
    )

    render_workers: Annotated[int, Field(validation_alias=_env("ORDERMAIL_RENDER_WORKERS"), ge=1)] = Field(
        default_factory=usable_cpus
    )
    worker_max_documents: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_WORKER_MAX_DOCUMENTS"), ge=1)
    ] = 5000
    worker_max_rss_mb: Annotated[float, Field(validation_alias=_env("ORDERMAIL_WORKER_MAX_RSS_MB"), gt=0)] = (
        200.0
    )
    render_timeout_s: Annotated[float, Field(validation_alias=_env("ORDERMAIL_RENDER_TIMEOUT_S"), gt=0)] = (
        30.0
    )
    max_in_flight: Annotated[int, Field(validation_alias=_env("ORDERMAIL_MAX_IN_FLIGHT"), ge=1)] = 64
    send_attempts: Annotated[int, Field(validation_alias=_env("ORDERMAIL_SEND_ATTEMPTS"), ge=1)] = 4
    retry_backoff_s: Annotated[float, Field(validation_alias=_env("ORDERMAIL_RETRY_BACKOFF_S"), ge=0)] = 0.5
    retry_delays_s: Annotated[str, Field(validation_alias=_env("ORDERMAIL_RETRY_DELAYS_S"))] = (
        "30,120,600,1800,3600"
    )
    max_event_age_s: Annotated[float, Field(validation_alias=_env("ORDERMAIL_MAX_EVENT_AGE_S"), gt=0)] = (
        86_400
    )
    max_retry_waiting: Annotated[int, Field(validation_alias=_env("ORDERMAIL_MAX_RETRY_WAITING"), ge=1)] = (
        1000
    )
    dlq_breaker_share: Annotated[
        float, Field(validation_alias=_env("ORDERMAIL_DLQ_BREAKER_SHARE"), gt=0, le=1)
    ] = 0.5
    dlq_breaker_window: Annotated[int, Field(validation_alias=_env("ORDERMAIL_DLQ_BREAKER_WINDOW"), ge=1)] = (
        100
    )
    dlq_breaker_min_events: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_DLQ_BREAKER_MIN_EVENTS"), ge=1)
    ] = 20
    health_port: Annotated[int, Field(validation_alias=_env("ORDERMAIL_HEALTH_PORT"), ge=0)] = 8080
    commit_interval_s: Annotated[float, Field(validation_alias=_env("ORDERMAIL_COMMIT_INTERVAL_S"), gt=0)] = (
        1.0
    )
    drain_timeout_s: Annotated[float, Field(validation_alias=_env("ORDERMAIL_DRAIN_TIMEOUT_S"), gt=0)] = 25.0
    max_attachment_bytes: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_MAX_ATTACHMENT_BYTES"), ge=1024)
    ] = 7 * 1024 * 1024
    # Attachments fetched from URLs in the event: none unless their hosts are listed here.
    attachment_hosts: Annotated[str, Field(validation_alias=_env("ORDERMAIL_ATTACHMENT_HOSTS"))] = ""
    attachment_timeout_s: Annotated[
        float, Field(validation_alias=_env("ORDERMAIL_ATTACHMENT_TIMEOUT_S"), gt=0)
    ] = 10.0
    max_remote_attachments: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_MAX_REMOTE_ATTACHMENTS"), ge=0)
    ] = 3
    attachment_deadline_s: Annotated[
        float, Field(validation_alias=_env("ORDERMAIL_ATTACHMENT_DEADLINE_S"), gt=0)
    ] = 20.0
    attachment_ca_file: Annotated[
        Path | None, Field(validation_alias=_env("ORDERMAIL_ATTACHMENT_CA_FILE"))
    ] = None
    attachment_allow_private_addresses: Annotated[
        bool, Field(validation_alias=_env("ORDERMAIL_ATTACHMENT_ALLOW_PRIVATE_ADDRESSES"))
    ] = False

    @model_validator(mode="after")
    def _return_path_is_complete(self) -> Settings:
        self.return_path()  # a domain without a secret, or a bad one, stops the start here
        self.suppression_keys()  # so does a suppression secret too short to be one
        return self

    def suppression_keys(self) -> SuppressionKeys | None:
        """Record keys of the suppression list, or None: suppression is off (no secret)."""
        if self.suppression_secret is None:
            return None
        return SuppressionKeys(self.suppression_secret.get_secret_value().encode())

    def suppression_ttl(self) -> timedelta | None:
        return timedelta(days=self.suppression_ttl_days) if self.suppression_ttl_days else None

    def return_path(self) -> ReturnPath | None:
        """The VERP return path, or None (then the envelope sender is ``ORDERMAIL_MAIL_FROM``)."""
        if not self.return_path_domain:
            return None
        if self.return_path_secret is None:
            raise ValueError("ORDERMAIL_RETURN_PATH_DOMAIN needs ORDERMAIL_RETURN_PATH_SECRET")
        return ReturnPath(
            local=self.mail_from.rpartition("@")[0],
            domain=self.return_path_domain,
            secret=self.return_path_secret.get_secret_value().encode(),
        )

    def fetch_policy(self) -> FetchPolicy | None:
        hosts = frozenset(h.strip().lower() for h in self.attachment_hosts.split(",") if h.strip())
        if not hosts:
            return None
        return FetchPolicy(
            allowed_hosts=hosts,
            max_bytes=self.max_attachment_bytes,
            timeout_s=self.attachment_timeout_s,
            max_attachments=self.max_remote_attachments,
            event_deadline_s=self.attachment_deadline_s,
            ca_file=self.attachment_ca_file,
            allow_private_addresses=self.attachment_allow_private_addresses,
        )

    def smtp_config(self) -> SmtpConfig:
        return SmtpConfig(
            host=self.smtp_host,
            port=self.smtp_port,
            tls=self.smtp_tls,
            username=self.smtp_username,
            password=self.smtp_password.get_secret_value() if self.smtp_password else None,
            ca_file=self.smtp_ca_file,
            timeout_s=self.smtp_timeout_s,
            connections=self.smtp_connections,
            max_messages_per_connection=self.smtp_max_messages_per_connection,
            rate_limit_per_s=self.smtp_rate_limit_per_s,
            throttle_pause_s=self.smtp_throttle_pause_s,
            pipelining=self.smtp_pipelining,
        )

    def retry_schedule(self) -> RetrySchedule:
        delays = tuple(float(d) for d in self.retry_delays_s.split(",") if d.strip())
        return RetrySchedule(delays_s=delays, max_age_s=self.max_event_age_s)

    def dkim_signer(self) -> DkimSigner | None:
        if self.dkim_key_file is None:
            return None
        domain = self.dkim_domain or self.mail_from.rpartition("@")[2]
        return DkimSigner.from_file(self.dkim_key_file, selector=self.dkim_selector, domain=domain)

    def message_domain(self) -> str:
        return self.message_id_domain or self.mail_from.rpartition("@")[2] or "ordermail.invalid"


def kafka_passthrough(environ: dict[str, str] | None = None) -> dict[str, str]:
    """``KAFKA_CONFIG_SECURITY_PROTOCOL=SASL_SSL`` → ``{"security.protocol": "SASL_SSL"}``."""
    environ = dict(os.environ) if environ is None else environ
    return {
        key.removeprefix(KAFKA_CONFIG_PREFIX).lower().replace("_", "."): value
        for key, value in environ.items()
        if key.startswith(KAFKA_CONFIG_PREFIX)
    }
