"""python -m ingest_gateway"""

from __future__ import annotations

import os
import signal
import sys

import uvicorn

from circadia.config import load
from circadia.logs import configure_logging
from circadia.tracing import configure_tracing
from ingest_gateway.app import Gateway, create_app
from ingest_gateway.settings import IngestSettings

SERVICE = "ingest-gateway"


def main() -> None:
    config = load(SERVICE, IngestSettings)
    settings: IngestSettings = config.settings
    configure_logging(SERVICE, settings.log_level)
    configure_tracing(SERVICE)
    settings.start_error_reporting(SERVICE, config.secrets)
    trusted = settings.ingest_trusted_proxies
    # Kafka reached only after start-up, with a topic that cannot hold the uploads the limits
    # allow: stop as if the start had failed (the supervisor shows the one message)
    gateway = Gateway.from_config(config, on_fatal=lambda problem: os.kill(os.getpid(), signal.SIGTERM))
    uvicorn.run(create_app(gateway), host=settings.ingest_host,
                port=settings.ingest_port, log_config=None, ws="none", lifespan="on", server_header=False,
                proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None)
    if gateway.publisher.fatal is not None:
        sys.exit(f"ingest-gateway: refusing to run: {gateway.publisher.fatal}")


if __name__ == "__main__":
    if sys.argv[1:] == ["check-config"]:
        from circadia.ops import check_config

        sys.exit(check_config(SERVICE, IngestSettings))
    main()
