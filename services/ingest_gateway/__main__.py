"""python -m ingest_gateway"""

from __future__ import annotations

import uvicorn

from circadia.auth import CertificateSource, FirebaseTokenVerifier
from circadia.avro import SchemaSet
from circadia.logs import configure_logging
from circadia.tracing import configure_tracing
from ingest_gateway.app import create_app
from ingest_gateway.publisher import UploadPublisher
from ingest_gateway.settings import IngestSettings

UPLOAD_SCHEMA = "io.circadia.health.HealthUpload"


def main() -> None:
    settings = IngestSettings()
    configure_logging("ingest-gateway", settings.log_level)
    configure_tracing("ingest-gateway")
    app = create_app(
        settings,
        verifier=FirebaseTokenVerifier(
            settings.firebase_project_id, CertificateSource(settings.firebase_certs_url)
        ),
        publisher=UploadPublisher(
            settings.kafka_bootstrap_servers,
            produce_timeout=settings.ingest_produce_timeout_seconds,
        ),
        schema=SchemaSet.load()[UPLOAD_SCHEMA],
    )
    uvicorn.run(app, host=settings.ingest_host, port=settings.ingest_port,
                log_config=None, ws="none", lifespan="on", server_header=False)


if __name__ == "__main__":
    main()
