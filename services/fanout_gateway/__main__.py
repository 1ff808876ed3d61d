"""python -m fanout_gateway"""

from __future__ import annotations

import asyncio
import logging
import signal

import redis.asyncio as aioredis
from circadia.auth import CertificateSource, FirebaseTokenVerifier
from circadia.avro import SchemaSet
from circadia.logs import configure_logging
from circadia.redis_client import connection_pool
from circadia.tracing import configure_tracing
from websockets.asyncio.server import serve

from fanout_gateway.feed import PredictionFeed
from fanout_gateway.history import UserHistory
from fanout_gateway.server import FanoutServer, Limits
from fanout_gateway.settings import FanoutSettings

PREDICTION_SCHEMA = "io.circadia.prediction.Prediction"


async def run(settings: FanoutSettings) -> None:
    schemas = SchemaSet.load()
    redis = aioredis.Redis(connection_pool=connection_pool(settings))
    feed_ready = asyncio.Event()
    fanout = FanoutServer(
        FirebaseTokenVerifier(settings.firebase_project_id, CertificateSource(settings.firebase_certs_url),
                              clock_skew=settings.auth_clock_skew_seconds),
        feed_ready,
        UserHistory(redis, size=settings.fanout_history_size, ttl_seconds=settings.fanout_history_ttl_seconds),
        Limits(auth_timeout=settings.fanout_auth_timeout_seconds, queue_size=settings.fanout_send_queue_size,
               per_user=settings.fanout_max_connections_per_user, per_process=settings.fanout_max_connections,
               refresh_lead=settings.fanout_refresh_lead_seconds, drain_seconds=settings.fanout_drain_seconds,
               reconnect_spread_ms=settings.fanout_reconnect_spread_ms),
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
            await fanout.drain()  # reconnect hints, flushed queues, then 1001 for everyone
    finally:
        await feed.stop()
        await redis.aclose()


def main() -> None:
    settings = FanoutSettings()
    configure_logging("fanout-gateway", settings.log_level)
    # one line per HTTP probe and handshake is noise; failures still log at WARNING
    logging.getLogger("websockets.server").setLevel(logging.WARNING)
    configure_tracing("fanout-gateway")
    settings.start_error_reporting("fanout-gateway")
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
