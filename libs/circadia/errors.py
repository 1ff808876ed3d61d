"""Error reports to Sentry, when a DSN is configured, scrubbed before they leave the process.

The scrubber removes what must never reach an error tracker: tokens (any JWT-shaped
string, authorization headers), health values (sample values, stages, embeddings, daily
totals), request bodies and cookies, and every user identifier beyond the pseudonymous
user id. Local variables are never attached, request bodies never read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from circadia import __version__
from circadia.secrets import Secret

if TYPE_CHECKING:  # sentry_sdk itself is imported only when a DSN is configured
    from sentry_sdk.types import Breadcrumb, BreadcrumbHint, Event, Hint

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}")
SENSITIVE_KEYS = frozenset({
    "authorization", "cookie", "set-cookie", "token", "id_token", "access_token", "password", "secret", "dsn",
    "api_key", "x-api-key",
    # health values ("value" alone is also Sentry's own field for exception messages; samples are
    # recognised by their shape instead, see scrub)
    "samples", "sample", "stage", "steps", "heart_rate", "heart_rate_mean",
    "activity_counts", "embedding", "daily_activity", "sleep_nights", "naps", "prediction", "record", "body",
    # identifiers beyond the pseudonymous user id
    "email", "ip_address", "username", "name", "phone",
})


def scrub(value: Any) -> Any:
    """A copy of ``value`` with sensitive keys, samples and JWT-shaped strings filtered, recursively."""
    if isinstance(value, Mapping):
        if {"type", "value", "unit"} <= set(value):  # a health sample, whatever it is nested in
            return FILTERED
        return {key: FILTERED if str(key).lower() in SENSITIVE_KEYS else scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return JWT.sub(FILTERED, value)
    return value


def scrub_event(event: Event, hint: Hint | None = None) -> Event:
    request = event.get("request")
    if isinstance(request, dict):
        for field in ("data", "cookies", "query_string", "env"):
            request.pop(field, None)
    user = event.get("user")
    if isinstance(user, dict):
        event["user"] = {"id": user["id"]} if "id" in user else {}
    return scrub(event)


def scrub_breadcrumb(crumb: Breadcrumb, hint: BreadcrumbHint | None = None) -> Breadcrumb:
    return scrub(crumb)


def dsn_rotation(service: str, environment: str) -> Callable[[Secret | None], Awaitable[None]]:
    """Apply a rotated Sentry DSN: the SDK is started again with it (or stopped without one)."""

    async def rotate(secret: Secret | None) -> None:
        if secret is None:
            import sentry_sdk

            sentry_sdk.init(dsn=None)
            return
        configure_error_reporting(service, secret.value, environment)

    return rotate


def configure_error_reporting(service: str, dsn: str | None, environment: str) -> bool:
    """Start the Sentry SDK when a DSN is configured; returns whether it did."""
    if not dsn:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=f"circadia@{__version__}",
        server_name=service,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,
        before_breadcrumb=scrub_breadcrumb,
        traces_sample_rate=0.0,  # traces go to OpenTelemetry, not to Sentry
    )
    # aiokafka logs every failed reconnect as an error; the services report the consequences
    # themselves (an upload not stored, a feed interrupted), so its records stay breadcrumbs
    from sentry_sdk.integrations.logging import ignore_logger

    ignore_logger("aiokafka")
    sentry_sdk.set_tag("service", service)
    log.info("error reporting enabled", extra={"environment": environment})
    return True
