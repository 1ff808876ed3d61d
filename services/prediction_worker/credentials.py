"""The worker's Kafka credentials in faust's form (SASL/SCRAM and/or TLS, from the settings), and
the live clients a rotated password must reach."""

from __future__ import annotations

import asyncio

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


def live_kafka_clients(app: faust.App) -> list[tuple[object, asyncio.AbstractEventLoop | None]]:
    """The aiokafka clients of faust's producer and of its consumer, each with the loop of the
    thread it belongs to: None for the producer's (this thread's), the consumer thread's loop for
    the consumer's, so the password is written there and never from another thread."""
    clients: list[tuple[object, asyncio.AbstractEventLoop | None]] = []
    producer = getattr(app.producer, "_producer", None)
    if producer is not None:
        clients.append((producer.client, None))
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    if consumer is not None:
        clients.append((consumer._client, thread.thread_loop))  # type: ignore[union-attr]  # noqa: SLF001
    return clients


def set_client_password(client: object, password: str | None) -> None:
    """aiokafka keeps the SASL password on its client and uses it for each new connection."""
    if not hasattr(client, "_sasl_plain_password"):
        raise RuntimeError(f"{type(client).__name__} keeps no SASL password: is aiokafka newer than the lock?")
    client._sasl_plain_password = password  # noqa: SLF001
