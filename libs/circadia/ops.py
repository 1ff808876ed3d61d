"""``circadia-ops``: operator commands that need only this library, so every image has them.

  circadia-ops dlq list|replay [--since T]   inspect the dead-letter topic, re-publish after a fix
  circadia-ops erase USER_ID                 erase a user: destroy the key, tell the services, audit it

They read the services' own settings: the broker is ``KAFKA_BOOTSTRAP_SERVERS`` with
``CIRCADIA_KAFKA_SECURITY_PROTOCOL``, ``CIRCADIA_KAFKA_SASL_USERNAME``, ``CIRCADIA_KAFKA_SSL_CAFILE``
and the ``kafka_sasl_password`` secret; the key service is ``CIRCADIA_USER_KEYS_ADDR`` with the
``user_keys_token`` secret (erasure needs a token allowed to delete keys: the ingest gateway's,
or an operator's). So ``kubectl exec`` into a service's pod runs them with that pod's
configuration. A service's own commands (``python -m prediction_worker rewind``, ``python -m
<service> check-config``) live in its entry point.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from datetime import datetime
from typing import TYPE_CHECKING

from circadia.config import S, ServiceConfig, ServiceSettings, resolve

if TYPE_CHECKING:
    from circadia.userkeys import UserKeys


def dead_letters(bootstrap_servers: str, action: str, since_text: str | None,
                 security: dict[str, object] | None = None) -> int:
    from circadia import deadletters

    since = datetime.fromisoformat(since_text) if since_text else None
    if since is not None and since.tzinfo is None:
        print("--since needs a time zone, e.g. 2026-11-25T10:00:00+00:00", file=sys.stderr)
        return 2
    if action == "list":
        letters = asyncio.run(deadletters.list_dead_letters(bootstrap_servers, since=since, security=security))
        for letter in letters:
            print(deadletters.describe(letter))
        print(f"{len(letters)} dead letter(s)")
    else:
        letters = asyncio.run(deadletters.replay(bootstrap_servers, since=since, security=security))
        for letter in letters:
            print("replayed " + deadletters.describe(letter))
        print(f"{len(letters)} dead letter(s) replayed")
    return 0


def erase_user(bootstrap_servers: str, keys: UserKeys, user_id: str, service: str = "circadia-ops",
               security: dict[str, object] | None = None) -> int:
    """circadia.erasure run by an operator, with a key layer allowed to delete keys."""
    from aiokafka import AIOKafkaProducer

    from circadia.avro import SchemaSet
    from circadia.erasure import erase
    from circadia.userkeys import KeysUnavailable

    async def run() -> tuple[str, bool]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", client_id=service,
                                    **(security or {}))
        await producer.start()
        try:
            async def send(topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]]) -> None:
                await producer.send_and_wait(topic, value, key=key, headers=headers)

            erasure, destroyed = await erase(keys, send, SchemaSet.load(), user_id,
                                             requested_by=f"operator:{getpass.getuser()}", service=service)
            return erasure.erasure_id, destroyed
        finally:
            await producer.stop()

    try:
        erasure_id, destroyed = asyncio.run(run())
    except KeysUnavailable as exc:
        print(f"nothing erased: {exc}", file=sys.stderr)
        return 1
    print(f"erasure {erasure_id}: {'key destroyed' if destroyed else 'no key (erased before, or never uploaded)'}; "
          "the services were told (user.erasures.v1) and it is audited (config.audit.v1)")
    return 0


def check_config(service: str, settings_class: type[S]) -> int:
    """A service's effective configuration from this environment, secrets redacted, and every
    problem; non-zero when the service would refuse to start or its settings are invalid. Each
    service's entry point runs it as ``python -m <service> check-config``."""
    from pydantic import ValidationError

    from circadia.secrets import SecretUnavailable

    print(f"{service}:")
    try:
        config = resolve(service, settings_class())
    except ValidationError as exc:
        for error in exc.errors():
            print(f"  invalid  {'.'.join(map(str, error['loc']))}: {error['msg']}")
        return 1
    except SecretUnavailable as exc:
        print(f"  secrets unavailable: {exc}")
        return 1
    for key, value in sorted(config.settings.effective(config.secrets).items()):
        print(f"  {key} = {value}")
    problems = config.settings.problems(config.secrets)
    for problem in problems:
        print(f"  PROBLEM  {problem}")
    print(f"  {'refuses to start' if problems else 'ok'} ({config.settings.env})")
    return 1 if problems else 0


def operator_config() -> ServiceConfig:
    """The services' Kafka and key-service settings and secrets from this environment."""
    if not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("CIRCADIA_KAFKA_BOOTSTRAP_SERVERS")):
        raise SystemExit("set KAFKA_BOOTSTRAP_SERVERS to the broker's address")
    return resolve("circadia-ops", ServiceSettings())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="circadia-ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    dlq = commands.add_parser("dlq", help="list or replay the dead-letter topic")
    dlq.add_argument("action", choices=["list", "replay"])
    dlq.add_argument("--since", help="only dead letters at or after this time (ISO 8601 with offset); "
                                     "replay then resends them even if replayed before")
    erase = commands.add_parser("erase", help="erase a user's data (destroy the user's key)")
    erase.add_argument("user_id")
    args = parser.parse_args(argv)
    from circadia.kafka import client_security

    config = operator_config()
    servers, security = config.settings.kafka_bootstrap_servers, client_security(config)
    if args.command == "dlq":
        return dead_letters(servers, args.action, args.since, security)
    from circadia.userkeys import from_config

    keys = from_config(config)
    if keys is None or config.secret("user_keys_token") is None:
        print("set CIRCADIA_USER_KEYS_ADDR and the user_keys_token secret (CIRCADIA_USER_KEYS_TOKEN)", file=sys.stderr)
        return 2
    return erase_user(servers, keys, args.user_id, security=security)


if __name__ == "__main__":
    sys.exit(main())
