"""python -m fanout_gateway"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from dataclasses import replace

import redis.asyncio as aioredis
import uvloop
from websockets.asyncio.server import serve

from circadia.audit import ConfigAudit
from circadia.auth import CertificateSource, FirebaseTokenVerifier
from circadia.avro import SchemaSet
from circadia.config import ServiceConfig, load
from circadia.erasure import ErasureFeed
from circadia.errors import dsn_rotation
from circadia.kafka import client_security
from circadia.logs import configure_logging
from circadia.redis_client import connection_pool, password_rotation
from circadia.secrets import SecretWatcher
from circadia.tracing import configure_tracing
from circadia.userkeys import from_config as user_keys_from_config
from circadia.userkeys import token_rotation
from fanout_gateway.feed import PredictionFeed
from fanout_gateway.history import UserHistory
from fanout_gateway.limits import Limits
from fanout_gateway.records import Renderer
from fanout_gateway.server import FanoutServer
from fanout_gateway.settings import FanoutSettings

PREDICTION_SCHEMA = "io.circadia.prediction.Prediction"
SERVICE = "fanout-gateway"


async def run(config: ServiceConfig) -> None:
    settings: FanoutSettings = config.settings
    schemas = SchemaSet.load()
    keys = user_keys_from_config(config)
    renderer = Renderer(schemas, schemas[PREDICTION_SCHEMA], keys)
    pool = connection_pool(settings, password=config.secret("redis_password"))
    redis = aioredis.Redis(connection_pool=pool)
    feed_ready = asyncio.Event()
    history = UserHistory(redis, size=settings.fanout_history_size, ttl_seconds=settings.fanout_history_ttl_seconds,
                          deployment=settings.fanout_group_id)
    fanout = FanoutServer(
        FirebaseTokenVerifier(settings.firebase_project_id, CertificateSource(settings.firebase_certs_url),
                              clock_skew=settings.auth_clock_skew_seconds),
        feed_ready,
        history,
        pool,
        renderer,
        Limits(auth_timeout=settings.fanout_auth_timeout_seconds, queue_size=settings.fanout_send_queue_size,
               per_user=settings.fanout_max_connections_per_user, per_process=settings.fanout_max_connections,
               refresh_lead=settings.fanout_refresh_lead_seconds, drain_seconds=settings.fanout_drain_seconds,
               reconnect_spread_ms=settings.fanout_reconnect_spread_ms,
               subscribe_timeout=settings.fanout_subscribe_timeout_seconds),
    )
    feed = PredictionFeed(settings.kafka_bootstrap_servers, renderer, history,
                          fanout.deliver_local, feed_ready, group_id=settings.fanout_group_id,
                          fetch_wait_ms=settings.fanout_fetch_wait_ms,
                          security=client_security(config))
    # rotated secrets are applied where they are used, without a restart
    watcher = SecretWatcher(config.resolver, config.secrets, settings.secret_refresh_seconds)
    watcher.on_change("redis_password", password_rotation(pool))
    watcher.on_change("kafka_sasl_password", lambda secret: feed.reconnect(
        client_security(replace(config, secrets={**config.secrets, "kafka_sasl_password": secret}))))
    watcher.on_change("sentry_dsn", dsn_rotation(SERVICE, settings.env))
    watcher.on_change("user_keys_token", token_rotation(keys))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    audit = ConfigAudit(config)
    erasures = ErasureFeed(settings.kafka_bootstrap_servers, schemas, fanout.erase, security=client_security(config))
    await fanout.live.start()
    await feed.start()
    await watcher.start()
    await audit.start()
    await erasures.start()
    try:
        async with serve(fanout.handler, settings.fanout_host, settings.fanout_port,
                         process_request=fanout.process_request, process_response=fanout.process_response,
                         server_header=None,
                         ping_interval=settings.fanout_ping_interval_seconds,
                         ping_timeout=settings.fanout_ping_interval_seconds,
                         max_size=64 * 1024):
            await stop.wait()
            await fanout.drain()  # reconnect hints, flushed queues, then 1001 for everyone
    finally:
        await erasures.stop()
        await audit.stop()
        await watcher.stop()
        await feed.stop()
        await fanout.live.stop()
        await redis.aclose()


def main() -> None:
    # Thousands of long-lived connection objects make full collections long pauses: freeze what
    # start-up allocated and collect the young generation less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 50)
    config = load(SERVICE, FanoutSettings)
    settings: FanoutSettings = config.settings
    configure_logging(SERVICE, settings.log_level)
    # one line per HTTP probe and handshake is noise; failures still log at WARNING
    logging.getLogger("websockets.server").setLevel(logging.WARNING)
    # the feed makes its own span per result ("predictions.v1 deliver", a child of the worker's
    # send); aiokafka's consumer span per record would be a second one beside it
    configure_tracing(SERVICE, instrument_kafka=False)
    settings.start_error_reporting(SERVICE, config.secrets)
    uvloop.run(run(config))


if __name__ == "__main__":
    if sys.argv[1:] == ["check-config"]:
        from circadia.ops import check_config

        sys.exit(check_config(SERVICE, FanoutSettings))
    main()
