"""``ordermail feedback``'s configuration: the service's own (Kafka, topics, return path,
suppression) and the receivers'."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, model_validator

from consumer.app.settings import Settings

__all__ = ["FeedbackSettings"]


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


class FeedbackSettings(Settings):
    feedback_smtp_host: Annotated[str, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_SMTP_HOST"))] = (
        "127.0.0.1"
    )
    feedback_smtp_port: Annotated[int, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_SMTP_PORT"), ge=0)] = (
        2527
    )
    feedback_http_host: Annotated[str, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_HTTP_HOST"))] = (
        "127.0.0.1"
    )
    feedback_http_port: Annotated[int, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_HTTP_PORT"), ge=0)] = (
        8041
    )
    feedback_health_port: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_HEALTH_PORT"), ge=0)
    ] = 8042
    # We ask for headers only (RET=HDRS); relays that return more cap it (Postfix at 50 kB,
    # Exim at 100 kB by default): 1 MiB leaves room, and bounds what a session may hold.
    feedback_max_message_bytes: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_MAX_MESSAGE_BYTES"), ge=64 * 1024)
    ] = 1024 * 1024
    # The feedback-loop mailbox at the return-path domain (complaints arrive there, token inside).
    feedback_complaints_local_part: Annotated[
        str, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_COMPLAINTS_LOCAL_PART"), min_length=1)
    ] = "fbl"
    feedback_max_webhook_bytes: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_MAX_WEBHOOK_BYTES"), ge=16 * 1024)
    ] = 1024 * 1024
    # Reports about e-mails older than this find no order (counted as uncorrelated).
    feedback_window_days: Annotated[
        float, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_WINDOW_DAYS"), gt=0)
    ] = 7.0
    feedback_index_max_entries: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_INDEX_MAX_ENTRIES"), ge=1000)
    ] = 2_000_000
    # ESP webhooks: each endpoint is on only when its key is configured (docs/feedback.md).
    ses_cert_file: Annotated[
        Path | None, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_SES_CERT_FILE"))
    ] = None
    ses_topic_arns: Annotated[str, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_SES_TOPIC_ARNS"))] = ""
    ses_min_signature_version: Annotated[
        int, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_SES_MIN_SIGNATURE_VERSION"), ge=1, le=2)
    ] = 2
    ses_max_age_s: Annotated[
        float, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_SES_MAX_AGE_S"), gt=0)
    ] = 3900.0
    sendgrid_public_key: Annotated[
        str | None, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_SENDGRID_PUBLIC_KEY"))
    ] = None
    sendgrid_max_age_s: Annotated[
        float, Field(validation_alias=_env("ORDERMAIL_FEEDBACK_SENDGRID_MAX_AGE_S"), gt=0)
    ] = 86400.0
    soft_bounce_limit: Annotated[int, Field(validation_alias=_env("ORDERMAIL_SOFT_BOUNCE_LIMIT"), ge=0)] = 5
    soft_bounce_window_days: Annotated[
        float, Field(validation_alias=_env("ORDERMAIL_SOFT_BOUNCE_WINDOW_DAYS"), gt=0)
    ] = 7.0

    @model_validator(mode="after")
    def _feedback_needs_a_return_path(self) -> FeedbackSettings:
        if self.return_path() is None:
            raise ValueError(
                "ordermail feedback needs ORDERMAIL_RETURN_PATH_DOMAIN and ORDERMAIL_RETURN_PATH_SECRET:"
                " reports are believed only through the return path's token"
            )
        return self
