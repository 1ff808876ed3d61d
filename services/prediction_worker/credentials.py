"""The worker's Kafka credentials in faust's form: SASL/SCRAM and/or TLS, from the settings."""

from __future__ import annotations

import faust

from prediction_worker.settings import WorkerSettings


def broker_credentials(settings: WorkerSettings, password: str | None) -> faust.types.auth.CredentialsT | None:
    """faust's form of the Kafka security settings (SASL/SCRAM and/or TLS)."""
    protocol = settings.kafka_security_protocol
    context = None
    if protocol in ("SSL", "SASL_SSL"):
        from aiokafka.helpers import create_ssl_context

        context = create_ssl_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if protocol.startswith("SASL"):
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=password,
                                     mechanism=settings.kafka_sasl_mechanism, ssl_context=context)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    return None
