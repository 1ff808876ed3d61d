"""python -m prediction_worker"""

from __future__ import annotations

import faust
import prometheus_client
from circadia.avro import SchemaSet
from circadia.logs import JsonFormatter
from circadia.tracing import configure_tracing

from prediction_worker.app import NoModel, build_app
from prediction_worker.settings import WorkerSettings

SERVICE = "prediction-worker"


def main() -> None:
    settings = WorkerSettings()
    configure_tracing(SERVICE)
    settings.start_error_reporting(SERVICE)
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    prometheus_client.start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)
    if settings.worker_pat_weights_path is not None:
        from prediction_worker.model import PatModel

        model = PatModel.from_settings(settings)
    else:
        model = NoModel()
    app = build_app(settings, SchemaSet.load(), model)
    worker = faust.Worker(
        app,
        loglevel=settings.log_level,
        logging_config={
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"json": {"()": JsonFormatter, "service": SERVICE}},
            "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
            "root": {"handlers": ["stderr"], "level": settings.log_level},
        },
        redirect_stdouts=False,
        quiet=True,
    )
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
