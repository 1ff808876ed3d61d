"""python -m ingest_gateway"""

from __future__ import annotations

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
    uvicorn.run(create_app(Gateway.from_config(config)), host=settings.ingest_host,
                port=settings.ingest_port, log_config=None, ws="none", lifespan="on", server_header=False,
                proxy_headers=bool(trusted), forwarded_allow_ips=trusted or None)


if __name__ == "__main__":
    main()
