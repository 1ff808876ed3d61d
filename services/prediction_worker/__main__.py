"""python -m prediction_worker"""

from __future__ import annotations

import sys

import faust
import prometheus_client

from circadia.audit import ConfigAudit
from circadia.avro import SchemaSet
from circadia.config import ServiceConfig, load
from circadia.errors import dsn_rotation
from circadia.logs import JsonFormatter, RepeatThrottle
from circadia.secrets import Secret, SecretWatcher
from circadia.tracing import configure_tracing
from circadia.userkeys import UserKeys, token_rotation
from circadia.userkeys import from_config as user_keys_from_config
from prediction_worker.app import build_app
from prediction_worker.credentials import broker_credentials, live_kafka_clients, set_client_password
from prediction_worker.processor import ModelStage, NoModel
from prediction_worker.settings import WorkerSettings

SERVICE = "prediction-worker"


def main() -> None:
    config = load(SERVICE, WorkerSettings)
    settings: WorkerSettings = config.settings
    configure_tracing(SERVICE)
    settings.start_error_reporting(SERVICE, config.secrets)
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    prometheus_client.start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    model: ModelStage = NoModel()
    if settings.worker_pat_weights_path is not None:
        from prediction_worker.model import PatModel

        model = PatModel.from_settings(settings)
    credentials = broker_credentials(settings, config.secret("kafka_sasl_password"))
    keys = user_keys_from_config(config)
    app = build_app(settings, SchemaSet.load(), model, credentials, keys=keys)
    watch_secrets(app, config, credentials, keys)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config={
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter, "service": SERVICE}},
            "filters": {"throttle": {"()": RepeatThrottle}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                    "filters": ["throttle"]}},
            "root": {"handlers": ["stderr"], "level": settings.log_level},
        },
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()


def watch_secrets(app: faust.App, config: ServiceConfig, credentials: object, keys: UserKeys | None = None) -> None:
    """Rotated secrets without a restart: the Sentry DSN is applied as is; a new Kafka password
    goes into faust's credentials (every client it creates from now on uses it) and into its live
    producer's and consumer's clients, so every connection they open from now on authenticates
    with it. Open connections stay: the broker does not ask them to authenticate again."""
    watcher = SecretWatcher(config.resolver, config.secrets, config.settings.secret_refresh_seconds)
    watcher.on_change("sentry_dsn", dsn_rotation(SERVICE, config.settings.env))
    watcher.on_change("user_keys_token", token_rotation(keys))

    async def rotate_kafka_password(secret: Secret | None) -> None:
        if isinstance(credentials, faust.SASLCredentials):
            credentials.password = secret.value if secret is not None else None
            for client, loop in live_kafka_clients(app):
                if loop is None:
                    set_client_password(client, credentials.password)
                else:  # the client belongs to another thread: its own loop writes it
                    loop.call_soon_threadsafe(set_client_password, client, credentials.password)

    watcher.on_change("kafka_sasl_password", rotate_kafka_password)

    audit = ConfigAudit(config)

    @app.task
    async def start_watching() -> None:
        await watcher.start()
        await audit.start()


if __name__ == "__main__":
    if sys.argv[1:] == ["check-config"]:
        from circadia.ops import check_config

        sys.exit(check_config(SERVICE, WorkerSettings))
    if sys.argv[1:2] == ["rewind"]:
        from prediction_worker.rewind import main as rewind

        sys.exit(rewind(sys.argv[2:]))
    main()
