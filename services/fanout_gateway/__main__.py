"""python -m fanout_gateway"""

from __future__ import annotations

import asyncio
import logging
import signal

from circadia.auth import CertificateSource, FirebaseTokenVerifier
from circadia.avro import SchemaSet
from circadia.logs import configure_logging
from circadia.tracing import configure_tracing
from websockets.asyncio.server import serve

from fanout_gateway.feed import PredictionFeed
from fanout_gateway.server import FanoutServer
from fanout_gateway.settings import FanoutSettings

PREDICTION_SCHEMA = "io.circadia.prediction.Prediction"


async def run(settings: FanoutSettings) -> None:
    schemas = SchemaSet.load()
    feed_ready = asyncio.Event()
    fanout = FanoutServer(
        FirebaseTokenVerifier(settings.firebase_project_id, CertificateSource(settings.firebase_certs_url)),
        feed_ready,
        auth_timeout=settings.fanout_auth_timeout_seconds,
        queue_size=settings.fanout_send_queue_size,
    )
    feed = PredictionFeed(settings.kafka_bootstrap_servers, schemas, schemas[PREDICTION_SCHEMA],
                          fanout.deliver, feed_ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await feed.start()
    try:
        async with serve(fanout.handler, settings.fanout_host, settings.fanout_port,
                         process_request=fanout.process_request, server_header=None,
                         ping_interval=settings.fanout_ping_interval_seconds,
                         ping_timeout=settings.fanout_ping_interval_seconds,
                         max_size=64 * 1024):
            await stop.wait()
            # leaving the block closes every connection with 1001 (going away)
    finally:
        await feed.stop()


def main() -> None:
    settings = FanoutSettings()
    configure_logging("fanout-gateway", settings.log_level)
    # one line per HTTP probe and handshake is noise; failures still log at WARNING
    logging.getLogger("websockets.server").setLevel(logging.WARNING)
    configure_tracing("fanout-gateway")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
